"""Hugging Face ``transformers`` causal LMs as teacher or student (``pip install
'kdlightning[lm]'``), from a local folder or from a config; never downloads.

    python -m kdlightning.train experiment=lm_pydocs data=text_files data.paths=[my_docs/] \\
        data.tokenizer=/models/llama-1b \\
        ~teacher.model '+teacher.model={_target_: kdlightning.lm.hf.hf_causal_lm, path: /m/8b}' \\
        +teacher.pretrained=true \\
        ~student.model '+student.model={_target_: kdlightning.lm.hf.hf_causal_lm, path: /m/1b}'

(``~`` drops the GPT's arguments that ``teacher=gpt`` put there; ``teacher.pretrained=true``
(a new key, hence +) uses the loaded teacher as it is instead of training it.)

    from kdlightning.lm.hf import hf_causal_lm
    tiny = hf_causal_lm(vocab_size=256, block_size=64,
                        config={"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2})

The wrapper returns plain logits ``(batch, seq, vocab)`` so the LM stages treat it like the
embedded GPT. Teacher and student must share a vocabulary (one tokenizer): a mismatch stops the
job at start-up (``kdlightning.job.tasks.text.check_vocabularies``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn


class HFCausalLM(nn.Module):
    """A ``transformers`` causal LM whose ``forward(ids)`` returns the logits tensor."""

    def __init__(self, model: nn.Module, block_size: int) -> None:
        super().__init__()
        self.model = model
        self.block_size = int(block_size)
        self.vocab_size = int(model.get_output_embeddings().out_features)

    def forward(self, idx: Tensor) -> Tensor:
        return self.model(input_ids=idx, use_cache=False).logits


def hf_causal_lm(
    vocab_size: int,
    block_size: int,
    path: str | None = None,
    config: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
) -> HFCausalLM:
    """Load ``AutoModelForCausalLM`` from the local folder ``path`` (``local_files_only``), or
    build one untrained from ``config`` (``model_type`` plus its arguments; the vocabulary
    defaults to the data's)."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as err:
        raise ImportError(
            "Hugging Face models need the transformers package: pip install 'kdlightning[lm]'"
        ) from err
    if (path is None) == (config is None):
        raise ValueError("give the Hugging Face model exactly one of model.path or model.config")
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"model.path={path!r} is not a folder; give a local folder saved with "
                "save_pretrained (models are never downloaded)"
            )
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust_remote_code
        )
    else:
        settings = dict(config or {})
        if "model_type" not in settings:
            raise ValueError("model.config needs a model_type (e.g. gpt2, llama, qwen2)")
        model_type = settings.pop("model_type")
        settings.setdefault("vocab_size", int(vocab_size))
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings))
    return HFCausalLM(model, block_size)
