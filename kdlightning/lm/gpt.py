"""A small GPT in the spirit of nanoGPT (Karpathy, 2022; Radford et al. 2019): the embedded
teacher and student of ``experiment=lm_pydocs``.

    from kdlightning.lm.gpt import GPT
    model = GPT(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=128)
    logits = model(torch.randint(0, 256, (2, 128)))      # (2, 128, 256)
    text = model.generate(prompt_ids, max_new_tokens=64)  # (1, prompt + 64)

Token and position embeddings, pre-LayerNorm blocks of causal self-attention (PyTorch's
``scaled_dot_product_attention``) and a GELU MLP, a final LayerNorm and a head tied to the token
embedding. ``forward`` returns next-token logits for every position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only transformer; ``vocab_size`` and ``block_size`` come from the data module."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd)):
            if int(value) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {value!r}")
        if n_embd % n_head:
            raise ValueError(
                f"model.n_embd={n_embd} must be a multiple of model.n_head={n_head} (each head "
                f"gets n_embd / n_head dimensions); try n_embd={n_head * max(1, n_embd // n_head)}"
            )
        self.vocab_size, self.block_size = int(vocab_size), int(block_size)
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied: fewer parameters, a known small-LM gain
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence of {t} tokens is longer than block_size={self.block_size}")
        x = self.drop(self.tok(idx) + self.pos(torch.arange(t, device=idx.device)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (``(batch, t)``); ``temperature``
        0 is greedy. The context is cropped to the last ``block_size`` tokens."""
        return sample(self, idx, max_new_tokens, self.block_size, temperature, top_k, generator)


@torch.no_grad()
def sample(
    model: nn.Module,
    idx: Tensor,
    max_new_tokens: int,
    block_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Autoregressive sampling from any ``model(ids) -> (batch, t, vocab)`` logits."""
    for _ in range(int(max_new_tokens)):
        logits = model(idx[:, -block_size:])[:, -1, :].float()
        if temperature <= 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -math.inf)
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)
    return idx


def fsdp_strategy(**kwargs: object) -> object:
    """Lightning's FSDP with each GPT :class:`Block` its own shard unit (GPUs only).

        python -m kdlightning.train experiment=lm_pydocs trainer=fsdp \\
            trainer.strategy='{_target_: kdlightning.lm.gpt.fsdp_strategy}'

    The frozen teacher is a submodule of the LightningModule, so its blocks are sharded like the
    student's. ``use_orig_params=True``: the root unit holds both models' embeddings, frozen and
    trainable parameters side by side, which FSDP's flat parameters otherwise refuse.
    """
    from lightning.pytorch.strategies import FSDPStrategy

    options = {"auto_wrap_policy": {Block}, "use_orig_params": True, **kwargs}
    return FSDPStrategy(**options)
