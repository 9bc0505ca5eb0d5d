"""Lightning modules for causal LMs: ``LMModule`` (teacher, student alone) and
``LMDistillationModule`` (frozen teacher -> student, token-level KD).

    from kdlightning.lm.module import LMDistillationModule
    module = LMDistillationModule(teacher, student, method="reverse_kl", temperature=1.0,
                                  alpha=0.5, chunk_size=64)
    L.Trainer(max_epochs=3).fit(module, datamodule=PyDocsDataModule())

Batches are ``(inputs, targets, mask, index)`` (``kdlightning.lm.data``); the math is in
``kdlightning.lm.losses``. ``loss = alpha * divergence + (1 - alpha) * CE(next token)``, both per
scored token. Metrics: ``{train,val,test}/loss`` (the model's next-token cross-entropy in nats
per token), ``{val,test}/bpb`` (bits per byte), ``{val,test}/bpt`` (bits per token) and
``{val,test}/ppl`` (per-token perplexity);
the distillation module adds ``train/kd_loss``, ``train/ce_loss`` and ``{val,test}/kd_loss``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from kdlightning.distill.modules import (
    FrozenTeacher,
    OptimizerFactory,
    SchedulerFactory,
    SupervisedModule,
)
from kdlightning.lm.cached import dense_from_topk
from kdlightning.lm.data import bits_per_byte
from kdlightning.lm.losses import next_token_ce, topk_forward_kl
from kdlightning.lm.methods import ForwardKL, TokenMethod, token_method
from kdlightning.lm.on_policy import (
    is_on_policy_step,
    step_generator,
    student_batch,
)

Batch = tuple[Tensor, ...]  # (inputs, targets, mask, index)


class _LMBase(SupervisedModule):
    """Optimizer wiring, divergence check and RNG state from the image modules' base; per-token
    evaluation losses turned into bits per byte and perplexity at the end of each epoch."""

    logs_kd = False  # whether {val,test}/kd_loss exist: decided per class, the same on every rank

    def __init__(
        self,
        vocab_size: int,
        optimizer: OptimizerFactory | None,
        scheduler: SchedulerFactory | None,
        chunk_size: int | None,
        bytes_per_token: float,
    ) -> None:
        super().__init__(vocab_size, optimizer, scheduler)
        self.chunk_size = None if chunk_size in (None, 0) else int(chunk_size)
        self.bytes_per_token = float(bytes_per_token)
        # Token-weighted means: exact whatever the number of scored tokens per batch or rank.
        self.eval_loss = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.eval_kd = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})

    def epoch_metrics(self, split: str) -> Mapping[str, Metric]:
        return {}  # training terms are logged per step (on_epoch=True averages them)

    def _log_eval(self, split: str) -> None:
        loss = self.eval_loss[split].compute()
        self.log(f"{split}/loss", loss, prog_bar=True)
        self.log(f"{split}/bpb", bits_per_byte(loss, self.bytes_per_token), prog_bar=True)
        self.log(f"{split}/bpt", loss / math.log(2))  # bits per token: the tokenizer's own unit
        self.log(f"{split}/ppl", torch.exp(loss))
        self.eval_loss[split].reset()
        if self.logs_kd:  # not update_called: a DDP rank without batches must sync all the same
            self.log(f"{split}/kd_loss", self.eval_kd[split].compute())
        self.eval_kd[split].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def _record(self, split: str, ce: Tensor, mask: Tensor, kd: Tensor | None = None) -> None:
        n = mask.sum()
        self.eval_loss[split].update(ce, weight=n)
        if kd is not None:
            self.eval_kd[split].update(kd, weight=n)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_step(self, batch: Batch, split: str) -> None:
        raise NotImplementedError


class LMModule(_LMBase):
    """Trains one causal LM on next-token cross-entropy: the teacher or the student alone."""

    def __init__(
        self,
        model: nn.Module,
        vocab_size: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        chunk_size: int | None = None,
        bytes_per_token: float = 1.0,
    ) -> None:
        super().__init__(vocab_size, optimizer, scheduler, chunk_size, bytes_per_token)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model

    def trainable_module(self) -> nn.Module:
        return self.model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y, mask = batch[0], batch[1], batch[2]
        loss = next_token_ce(self.model(x), y, mask, self.chunk_size)
        self.log_train({"loss": loss}, x.shape[0])
        return loss

    def _eval_step(self, batch: Batch, split: str) -> None:
        x, y, mask = batch[0], batch[1], batch[2]
        self._record(split, next_token_ce(self.model(x), y, mask, self.chunk_size), mask)


class LMDistillationModule(FrozenTeacher, _LMBase):
    """Distills a frozen causal-LM ``teacher`` into ``student``, token by token.

    ``method``: a :class:`kdlightning.lm.methods.TokenMethod` (what the job builds from
    ``conf/kd/<name>.yaml``; its ``temperature``, ``alpha``, ``beta``, ``chunk_size``,
    ``on_policy`` and ``prompt_tokens`` are used and those arguments here are ignored), or its
    name, ``forward_kl``, ``reverse_kl`` or ``jsd`` (with ``beta``), built from the arguments.
    The teacher is frozen as in ``kdlightning.distill.modules``'s
    ``DistillationModule``: no gradients, eval mode even after ``module.train()``, run under
    ``torch.no_grad()``, outside the optimizer and outside checkpoints.

    ``on_policy`` (GKD's lambda, ``kdlightning.lm.on_policy``): the share of training steps
    that use sequences the student samples after ``prompt_tokens`` real tokens.

    ``teacher_topk`` (optional, ``kdlightning.lm.cached``): the teacher's top-k logits and token
    ids per split, ``{"train_values": (N, L, k), "train_indices": ..., "val_values": ...}``,
    looked up by the block index batches carry instead of running the teacher.
    """

    logs_kd = True

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        vocab_size: int,
        method: TokenMethod | str = "forward_kl",
        temperature: float = 1.0,
        alpha: float = 0.5,
        beta: float = 0.5,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        chunk_size: int | None = 64,  # the defaults: conf/kd/forward_kl.yaml's (tested)
        bytes_per_token: float = 1.0,
        teacher_topk: Mapping[str, Tensor] | None = None,
        on_policy: float = 0.0,
        prompt_tokens: int = 16,
        seed: int = 0,
    ) -> None:
        super().__init__(vocab_size, optimizer, scheduler, chunk_size, bytes_per_token)
        if teacher is student:
            raise ValueError("teacher and student must be two different modules")
        if isinstance(method, str):  # the Python API: a name and the arguments here
            method = token_method(method, temperature=temperature, alpha=alpha, beta=beta,
                                  chunk_size=chunk_size or None, on_policy=on_policy,
                                  prompt_tokens=prompt_tokens)  # fmt: skip
        self.method = method
        self.chunk_size = method.chunk_size
        self.on_policy, self.prompt_tokens = method.on_policy, method.prompt_tokens
        self.seed = int(seed)
        # forward KL against stored top-k logits is computed on the k ids alone (no dense teacher)
        self.sparse_topk = isinstance(method, ForwardKL)
        if self.on_policy and teacher_topk:
            raise ValueError(
                "kd.on_policy > 0 scores sequences the student writes during training: stored "
                "teacher logits cannot cover them; use kd.teacher_logits=online"
            )
        self.temperature, self.alpha = method.temperature, method.alpha
        self.save_hyperparameters(
            ignore=["teacher", "student", "optimizer", "scheduler", "teacher_topk", "method"]
        )
        self.hparams["method"] = method.name
        self.teacher, self.student = teacher, student
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.cached_splits = sorted({k.rsplit("_", 1)[0] for k in (teacher_topk or {})})
        for name, tensor in (teacher_topk or {}).items():
            # Buffers follow the module to its device; not persistent: never in a checkpoint.
            self.register_buffer(f"topk_{name}", tensor, persistent=False)

    def trainable_module(self) -> nn.Module:
        return self.student

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    @torch.no_grad()  # not inference_mode: its tensors cannot be saved for backward
    def teacher_logits(self, x: Tensor) -> Tensor:
        return self.teacher(x)

    def _teacher_for(self, batch: Batch, split: str) -> Tensor:
        """The teacher's logits: from the stored top k when cached, else computed."""
        if split not in self.cached_splits:
            return self.teacher_logits(batch[0])
        rows = batch[3]
        values = getattr(self, f"topk_{split}_values")[rows]
        indices = getattr(self, f"topk_{split}_indices")[rows]
        return dense_from_topk(values, indices, self.num_classes)

    def _terms(self, batch: Batch, split: str) -> tuple[Tensor, Tensor, Tensor]:
        x, y, mask = batch[0], batch[1], batch[2]
        s_logits = self.student(x)
        if self.sparse_topk and split in self.cached_splits:
            values = getattr(self, f"topk_{split}_values")[batch[3]]
            indices = getattr(self, f"topk_{split}_indices")[batch[3]]
            kd = topk_forward_kl(s_logits, values, indices, mask, self.temperature,
                                 self.chunk_size)  # fmt: skip
        else:
            kd = self.method.divergence(s_logits, self._teacher_for(batch, split), mask)
        ce = next_token_ce(s_logits, y, mask, self.chunk_size)
        return kd, ce, mask

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        # the generator only when some steps are on-policy: nothing added to an off-policy step
        g = step_generator(self.seed, self.global_step, batch[0].device) if self.on_policy else None
        if g is not None and is_on_policy_step(g, self.on_policy, batch[0].device):
            # GKD: the student's own sequences, scored by the divergence alone
            x, _, mask = student_batch(self.student, batch, self.prompt_tokens, g)
            s_logits = self.student(x)
            kd = self.method.divergence(s_logits, self.teacher_logits(x), mask)
            self.log_train({"loss": kd, "on_policy_kd_loss": kd}, x.shape[0])
            return kd
        kd, ce, _ = self._terms(batch, "train")
        loss = self.alpha * kd + (1.0 - self.alpha) * ce
        self.log_train({"loss": loss, "kd_loss": kd, "ce_loss": ce}, batch[0].shape[0])
        return loss

    def _eval_step(self, batch: Batch, split: str) -> None:
        kd, ce, mask = self._terms(batch, split)
        self._record(split, ce, mask, kd)
