"""Language modelling (``experiment=lm_pydocs``, ``data=text_files``): causal LMs distilled
token by token.

Teacher and baseline train as :class:`~kdlightning.lm.module.LMModule` (next-token
cross-entropy); the distilled student as an :class:`~kdlightning.lm.module.LMDistillationModule`
with ``kd=forward_kl|reverse_kl|jsd``. Models are built for the data's vocabulary and block size;
callbacks that monitor ``val/acc`` monitor ``val/loss`` instead. Teacher logits: ``online`` (and
``auto``) run the teacher on every batch; ``cached`` runs it once and keeps its top
``kd.teacher_topk`` logits per token (``kdlightning.lm.cached``; forward KL only, unless
``teacher_topk`` covers the vocabulary). The table shows bits per byte (lower is better).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from kdlightning.deploy.compare import ROLES
from kdlightning.distill.teacher import check_logit_rows
from kdlightning.job import results as results_io
from kdlightning.job.build import build_method, method_class, optimizer_factories
from kdlightning.job.cache import logits_key_inputs
from kdlightning.job.tasks.base import Distiller, Job, Task
from kdlightning.lm.cached import compute_topk
from kdlightning.lm.compare import lm_costs, lm_table, lm_title
from kdlightning.lm.data import TextDataModule
from kdlightning.lm.hf import check_dtype
from kdlightning.lm.module import LMDistillationModule, LMModule

log = logging.getLogger(__name__)


def check_lm_config(cfg: DictConfig) -> None:
    """Start-up checks of a language-model job: an LM method, cached logits it can use, sane
    values."""
    if cfg.get("export"):
        raise ValueError(
            f"export={cfg.export} exports image students; a language model's student.pt is the "
            "export for now: set export=null"
        )
    for role in ("teacher", "student"):
        model = cfg.get(role, {}).get("model") or {}
        if str(model.get("_target_", "")).endswith("hf_causal_lm") and "dtype" in model:
            check_dtype(model.dtype, f"{role}.model.dtype")
    if cfg.get("task", "distill") != "distill":
        return
    method = cfg.kd.get("method", "kd")
    cls = method_class(cfg.kd)  # its hyperparameters: checked by its constructor (check_kd)
    if not getattr(cls, "token_level", False):
        raise ValueError(
            f"kd.method={method!r} is an image-classification method; with text data use "
            f"kd=forward_kl, kd=reverse_kl or kd=jsd (e.g. experiment=lm_pydocs)"
        )
    if cfg.kd.get("teacher_logits", "auto") == "cached":
        k = cfg.kd.get("teacher_topk")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(
                f"kd.teacher_logits=cached keeps the teacher's top kd.teacher_topk logits per "
                f"token; set kd.teacher_topk to a positive integer (e.g. 32), got {k!r}"
            )
        vocab = _data_vocab(cfg)
        if not cls.allows_truncated_teacher and (vocab is None or k < vocab):
            raise ValueError(
                f"kd={method} with kd.teacher_logits=cached and kd.teacher_topk={k}: a teacher "
                "truncated to its top k tokens gives the student's other tokens infinite cost "
                f"under {method}; use kd=forward_kl, kd.teacher_topk >= the vocabulary "
                f"({vocab if vocab is not None else 'its size'}), or kd.teacher_logits=online"
            )
        if cfg.kd.get("on_policy", 0.0):
            raise ValueError(
                "kd.on_policy > 0 needs the teacher online (it scores the student's own "
                "samples); set kd.teacher_logits=online or kd.on_policy=0"
            )


def _data_vocab(cfg: DictConfig) -> int | None:
    # Byte-level data (no data.tokenizer) has 256 tokens; a tokenizer's size needs loading it.
    return 256 if cfg.get("data", {}).get("tokenizer") in (None, "", "bytes") else None


def check_vocabularies(teacher: nn.Module, student: nn.Module, dm: TextDataModule) -> None:
    """Teacher and student must score the same vocabulary, one that covers the tokenizer's
    (Hugging Face models often pad their output layer beyond the tokenizer's size)."""
    sizes = {name: _vocab_size(m) for name, m in (("teacher", teacher), ("student", student))}
    if sizes["teacher"] != sizes["student"] or sizes["student"] < dm.vocab_size:
        raise ValueError(
            f"teacher vocabulary {sizes['teacher']}, student vocabulary {sizes['student']}, "
            f"data tokenizer {dm.vocab_size}: token-level distillation compares the two models' "
            "distributions token by token, so all three must be the same vocabulary. Use a "
            "teacher and a student from the same model family (one tokenizer) and set "
            "data.tokenizer to it."
        )


def _vocab_size(model: nn.Module) -> int:
    size = getattr(model, "vocab_size", None)
    return int(size) if size is not None else int(model.get_output_embeddings().out_features)


def build_lm(model_cfg: DictConfig, dm: TextDataModule, role: str) -> nn.Module:
    """Instantiate ``model_cfg`` for the data's vocabulary and block size."""
    if "_target_" not in model_cfg:
        raise ValueError(f"the {role} config has no model._target_; see conf/model/gpt.yaml")
    try:
        model = instantiate(
            model_cfg, vocab_size=dm.vocab_size, block_size=dm.block_size, _convert_="all"
        )
    except InstantiationException as err:
        raise ValueError(
            f"cannot build the {role} language model {model_cfg._target_} for vocabulary "
            f"{dm.vocab_size} and block size {dm.block_size}: {err.__cause__ or err}"
        ) from err
    check_lm_output(model, dm, role)
    return model


@torch.no_grad()
def check_lm_output(model: nn.Module, dm: TextDataModule, role: str) -> None:
    """One dummy block through ``model``: it must take ``block_size`` tokens and return
    ``(batch, block_size, vocab)`` logits, else a message naming the role and the fix."""
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(2, dm.block_size, dtype=torch.long))
    except Exception as err:  # e.g. a context window shorter than data.block_size
        raise ValueError(
            f"the {role} language model cannot take a block of {dm.block_size} tokens: "
            f"{type(err).__name__}: {err}. Lower data.block_size or pick a longer context."
        ) from err
    finally:
        model.train(was_training)
    if out.ndim != 3 or tuple(out.shape[:2]) != (2, dm.block_size) or out.shape[2] < dm.vocab_size:
        raise ValueError(
            f"the {role} language model returns shape {tuple(out.shape)} for 2 blocks of "
            f"{dm.block_size} tokens; expected (2, {dm.block_size}, vocabulary >= "
            f"{dm.vocab_size}) next-token logits"
        )


def _lm_callbacks(cfg: DictConfig) -> DictConfig:
    """``cfg`` with callbacks that monitor ``val/acc`` switched to ``val/loss`` (mode min):
    there is no accuracy for a language model, and lower loss is better."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for entry in (cfg.get("callbacks") or {}).values():
        if entry is not None and entry.get("monitor") == "val/acc":
            entry.monitor, entry.mode = "val/loss", "min"
    return cfg


def log_lm_comparison(results: Mapping[str, Any]) -> None:
    """The comparison as a ``wandb.Table`` in the open W&B run; no-op without W&B."""
    wandb = sys.modules.get("wandb")  # not imported: no run can be open
    if wandb is None or wandb.run is None:
        return
    columns = ["model", "test/bpb", "val/bpb", "test/ppl", "params", "size_bytes", "tokens_per_s"]
    table = wandb.Table(columns=columns)
    for key, label in ROLES:
        if key in results:
            r = results[key]
            table.add_data(label, *(r.get(c) for c in columns[1:]))
    wandb.run.log({"comparison": table})
    extra = {f"{key}/test/bpb": results[key].get("test/bpb") for key, _ in ROLES if key in results}
    wandb.run.summary.update({**extra, **{k: v for k, v in results.get("summary", {}).items()}})


class TextTask(Task):
    """Causal language modelling on a :class:`~kdlightning.lm.data.TextDataModule`."""

    model_noun = " language model"
    objective_key = "val/bpb"
    higher_is_better = False

    def check(self, cfg: DictConfig, dm: Any) -> None:
        check_lm_config(cfg)

    def prepare(self, job: Job) -> None:
        job.dm.setup("fit")  # missing files or an empty split: said now, not after the teacher
        if job.cfg.get("task", "distill") == "distill":
            check_vocabularies(job.build("teacher"), job.build("student"), job.dm)

    def build(self, model_cfg: DictConfig, dm: Any, role: str) -> nn.Module:
        return build_lm(model_cfg, dm, role)

    def trainer_config(self, cfg: DictConfig) -> DictConfig:
        return _lm_callbacks(cfg)

    def _module_kwargs(self, job: Job) -> dict[str, Any]:
        return {
            "vocab_size": job.dm.vocab_size,
            "chunk_size": job.cfg.kd.get("chunk_size"),
            "bytes_per_token": job.dm.bytes_per_token,  # measured by the setup in prepare()
            **optimizer_factories(job.cfg),
        }

    def supervised_module(self, model: nn.Module, job: Job) -> L.LightningModule:
        return LMModule(model, **self._module_kwargs(job))

    def after_teacher(self, metrics: dict[str, Any], trainer: L.Trainer, dm: Any) -> None:
        metrics["teacher/val_bpb"] = float(metrics["val/bpb"])
        log.info("Teacher validation bits per byte: %.4f", metrics["val/bpb"])

    def distiller(self, job: Job) -> Distiller:
        cfg = job.cfg
        kd = cfg.kd  # checked at start-up (check_kd, check_lm_config)
        method = build_method(kd)
        topk, logits_info = None, {"mode": "online"}
        if kd.get("teacher_logits", "auto") == "cached":
            topk, logits_info = self._cached_topk(job, int(kd.teacher_topk))
        log.info("Distilling the student LM (%s, T=%g, alpha=%g, %s teacher logits)",
                 method.name, method.temperature, method.alpha, logits_info["mode"])  # fmt: skip
        L.seed_everything(cfg.seed, workers=True)
        student = job.build("student")
        check_vocabularies(job.teacher, student, job.dm)
        module = LMDistillationModule(
            job.teacher, student, method=method, teacher_topk=topk, seed=int(cfg.seed),
            **self._module_kwargs(job),
        )  # fmt: skip
        return Distiller(student, module, {"teacher_logits": logits_info, "method": method.name})

    def _cached_topk(self, job: Job, k: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The teacher's top-k logits from the cache (computed on a miss), and what to record."""
        key = {**logits_key_inputs(job.cfg, job.teacher, job.cache.data_files), "topk": k}
        start = time.perf_counter()
        teacher, dm = job.teacher, job.dm
        # Memory-mapped from a safetensors entry: the DDP processes of a node share its pages
        # instead of each loading its own copy (on a GPU the buffers still move to the device).
        topk, info = job.cache.tensors(
            "lm_topk", key, lambda: compute_topk(teacher, dm, k), mmap=True
        )
        sizes = {split: len(dm.sets[split]) for split in dm.sets}
        check_logit_rows(topk, sizes, info.get("entry", "the teacher top-k cache"))
        seconds = time.perf_counter() - start
        return topk, {"mode": "cached", "topk": k, "seconds": seconds, "cache": info}

    def costs(self, cfg: DictConfig, model: nn.Module, dm: Any) -> dict[str, Any]:
        return lm_costs(model, dm)

    def write(self, out: Path, results: dict[str, Any], weights: Mapping[str, nn.Module]) -> str:
        return results_io.write_job(out, results, weights, title=lm_title, table=lm_table)

    def log_comparison(self, results: Mapping[str, Any]) -> None:
        log_lm_comparison(results)
