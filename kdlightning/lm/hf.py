"""Hugging Face ``transformers`` causal LMs as teacher or student (``pip install
'kdlightning[lm]'``): by hub id or local folder, or built from a config.

    python -m kdlightning.train experiment=lm_pydocs data=hf_text data.path=my_dataset/ \\
        teacher=hf teacher.model.name_or_path=Qwen/Qwen2.5-1.5B \\
        student=hf student.model.name_or_path=Qwen/Qwen2.5-0.5B

``teacher=hf`` / ``student=hf`` (``conf/model/hf.yaml``): ``model.name_or_path`` is a local folder
written by ``save_pretrained`` (read with ``local_files_only``) or a hub id (``org/name``,
downloaded once into the Hugging Face cache; ``HF_HUB_OFFLINE=1`` forbids it). With
``model.config`` as well, the model is built untrained from that checkpoint's config with these
values changed (a from-scratch student: ``student.model.config={num_hidden_layers: 4}``); with
``model.config`` alone, from ``model_type`` and its arguments. ``model.dtype``: ``auto`` (the
checkpoint's own), ``float32``, ``bfloat16`` or ``float16``. ``model.trust_remote_code`` stays
false unless set: a model whose code lives in its repository runs that code only when asked.
The tokenizer is the teacher's (``data.tokenizer`` defaults to ``teacher.model.name_or_path``).

    from kdlightning.lm.hf import hf_causal_lm
    tiny = hf_causal_lm(vocab_size=256, block_size=64,
                        config={"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2})

On GPUs, ``trainer=fsdp trainer.strategy='{_target_: kdlightning.lm.hf.fsdp_strategy}'`` shards
each decoder layer of both models (:func:`fsdp_strategy`).

The wrapper returns plain logits ``(batch, seq, vocab)`` so the LM stages treat it like the
embedded GPT. Teacher and student must share a vocabulary (one tokenizer): a mismatch stops the
job at start-up (``kdlightning.job.tasks.text.check_vocabularies``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: ``model.dtype`` values: the checkpoint's own dtype, or one torch dtype
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
          "float16": torch.float16}  # fmt: skip


class HFCausalLM(nn.Module):
    """A ``transformers`` causal LM whose ``forward(ids)`` returns the logits tensor."""

    def __init__(self, model: nn.Module, block_size: int) -> None:
        super().__init__()
        self.model = model
        self.block_size = int(block_size)
        self.vocab_size = int(model.get_output_embeddings().out_features)

    def forward(self, idx: Tensor) -> Tensor:
        return self.model(input_ids=idx, use_cache=False).logits


def check_dtype(dtype: Any, key: str = "model.dtype") -> torch.dtype | None:
    """The torch dtype a ``model.dtype`` value names (``None`` for ``auto``); ``ValueError``
    naming the value and the choices otherwise."""
    if dtype not in DTYPES:
        raise ValueError(
            f"{key}={dtype!r} is not a dtype for a Hugging Face model; use one of "
            f"{', '.join(DTYPES)} (auto: the checkpoint's own)"
        )
    return DTYPES[dtype]


def resolve_source(name_or_path: str, key: str = "model.name_or_path") -> tuple[str, bool]:
    """``(what from_pretrained gets, whether it is a local folder)``. A folder that exists is
    local; ``org/name`` is a hub id; anything else that looks like a path is an error."""
    folder = Path(str(name_or_path)).expanduser()
    if folder.is_dir():
        return str(folder), True
    text = str(name_or_path)
    if text.startswith(("/", ".", "~")) or text.count("/") > 1 or folder.exists():
        raise FileNotFoundError(
            f"{key}={text!r} is not a folder; give a local folder written by save_pretrained, "
            "or a hub id such as Qwen/Qwen2.5-0.5B"
        )
    return text, False


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            "Hugging Face models need the transformers package: pip install 'kdlightning[lm]'"
        ) from err
    return transformers


def _pretrained(cls: Any, source: str, local: bool, key: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained``, its failure said with the key and the fix."""
    try:
        return cls.from_pretrained(source, local_files_only=local, **kwargs)
    except OSError as err:
        where = "the folder" if local else "the Hugging Face Hub (or its local cache)"
        raise OSError(
            f"{key}={source!r} cannot be loaded from {where}: {str(err).splitlines()[0]}. Check "
            "the id, the network (HF_HUB_OFFLINE=1 allows only cached models), or give a local "
            "folder written by save_pretrained"
        ) from err


def hf_causal_lm(
    vocab_size: int,
    block_size: int,
    name_or_path: str | None = None,
    config: dict[str, Any] | None = None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    path: str | None = None,
) -> HFCausalLM:
    """A causal LM from ``name_or_path`` (pretrained weights), from ``name_or_path``'s config
    changed by ``config`` (untrained), or from ``config`` alone (``model_type`` and its
    arguments; the vocabulary defaults to the data's). ``path``: the older name of a local
    ``name_or_path``."""
    transformers = _transformers()
    source = name_or_path if name_or_path is not None else path
    if source is None and config is None:
        raise ValueError("give the Hugging Face model model.name_or_path, model.config or both")
    torch_dtype = check_dtype(dtype)
    settings = dict(config or {})
    auto_model = transformers.AutoModelForCausalLM
    if source is not None:
        source, local = resolve_source(source)
        kwargs = {"trust_remote_code": bool(trust_remote_code)}
        if not settings:
            model = _pretrained(auto_model, source, local, "model.name_or_path",
                                dtype=torch_dtype or "auto", **kwargs)  # fmt: skip
            return HFCausalLM(model, block_size)
        # a from-scratch model of that family: its config, with these values changed
        base = _pretrained(transformers.AutoConfig, source, local, "model.name_or_path", **kwargs)
        unknown = [k for k in settings if not hasattr(base, k)]
        if unknown:
            raise ValueError(
                f"model.config: {', '.join(unknown)} is not a setting of {source}'s "
                f"{type(base).__name__}; check the spelling (e.g. num_hidden_layers)"
            )
        for key, value in settings.items():
            setattr(base, key, value)
        model = auto_model.from_config(base, dtype=torch_dtype, **kwargs)
        return HFCausalLM(model, block_size)
    if "model_type" not in settings:
        raise ValueError("model.config needs a model_type (e.g. gpt2, llama, qwen2)")
    model_type = settings.pop("model_type")
    settings.setdefault("vocab_size", int(vocab_size))
    built = transformers.AutoConfig.for_model(model_type, **settings)
    model = auto_model.from_config(built, dtype=torch_dtype)
    return HFCausalLM(model, block_size)


#: Class-name endings of the transformer layers FSDP shards one by one: Llama, Qwen2, Mistral,
#: Gemma (``...DecoderLayer``), GPT-2 and this package's GPT (``...Block``).
LAYER_SUFFIXES = ("DecoderLayer", "Block")


def is_layer(module: nn.Module, suffixes: tuple[str, ...] = LAYER_SUFFIXES) -> bool:
    """Whether ``module`` is one transformer layer (its class name ends with a suffix)."""
    return type(module).__name__.endswith(tuple(suffixes))


def fsdp_strategy(layer_suffixes: tuple[str, ...] = LAYER_SUFFIXES, **kwargs: Any) -> Any:
    """Lightning's FSDP with each transformer layer of teacher and student its own shard unit
    (GPUs only; ``layer_suffixes`` names the layer classes by their endings).
    ``use_orig_params=True``: the root unit holds the frozen teacher's and the trainable
    student's embeddings side by side, which FSDP's flat parameters otherwise refuse."""
    import functools

    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

    is_unit = functools.partial(is_layer, suffixes=tuple(layer_suffixes))
    policy = functools.partial(lambda_auto_wrap_policy, lambda_fn=is_unit)
    return FSDPStrategy(**{"auto_wrap_policy": policy, "use_orig_params": True, **kwargs})
