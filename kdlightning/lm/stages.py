"""The language-model job's stages, run by ``kdlightning.job.run`` when the data is text.

    teacher_stage    train the teacher GPT (or load teacher.checkpoint / a local HF model)
    baseline_stage   the student alone on next-token cross-entropy
    distill_stage    the student learning from the frozen teacher (kd=forward_kl|reverse_kl|jsd)

Same signature as ``kdlightning.job.stages``: ``stage(job) -> (model, metrics)``, with an
:class:`LMJob` (models are built for the data's vocabulary and block size). Every stage seeds
the same way, so the baseline and the distilled student start from the same weights and see
the same batches. Teacher logits: ``online`` (and ``auto``) run the teacher on every batch;
``cached`` runs it once and keeps its top ``kd.teacher_topk`` logits per token
(``kdlightning.lm.cached``; forward KL only, unless ``teacher_topk`` covers the vocabulary).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from kdlightning.distill.functional import check_alpha, check_temperature
from kdlightning.job.build import make_trainer, optimizer_factories
from kdlightning.job.cache import logits_key_inputs
from kdlightning.job.stages import Job, StageResult, evaluate, fit_and_test
from kdlightning.lm.cached import compute_topk
from kdlightning.lm.data import TextDataModule
from kdlightning.lm.losses import LM_METHODS, check_beta
from kdlightning.lm.module import LMDistillationModule, LMModule
from kdlightning.lm.on_policy import check_fraction
from kdlightning.models.weights import load_weights

log = logging.getLogger(__name__)


def is_text_data(dm: object) -> bool:
    """True for the text data modules (``data=pydocs``, ``data=text_files``)."""
    return isinstance(dm, TextDataModule)


def check_data_and_method(cfg: DictConfig, dm: object) -> None:
    """Image data takes an image method, else a start-up error (text data takes an LM method:
    :class:`LMJob` checks it with :func:`check_lm_config` when created)."""
    method = cfg.get("kd", {}).get("method", "kd")
    if not is_text_data(dm) and cfg.get("task", "distill") == "distill" and method in LM_METHODS:
        raise ValueError(
            f"kd={method} is a token-level method for language models, but data="
            f"{type(dm).__name__} is not text; use data=pydocs or data=text_files (e.g. "
            "experiment=lm_pydocs), or an image method such as kd=kd"
        )


def check_lm_config(cfg: DictConfig) -> None:
    """Start-up checks of a language-model job: an LM method, cached logits it can use, sane
    values."""
    if cfg.get("export"):
        raise ValueError(
            f"export={cfg.export} exports image students; a language model's student.pt is the "
            "export for now: set export=null"
        )
    if cfg.get("task", "distill") != "distill":
        return
    method = cfg.kd.get("method", "kd")
    if method not in LM_METHODS:
        raise ValueError(
            f"kd.method={method!r} is an image-classification method; with text data use "
            f"kd=forward_kl, kd=reverse_kl or kd=jsd (e.g. experiment=lm_pydocs)"
        )
    if cfg.kd.get("teacher_logits", "auto") == "cached":
        k = cfg.kd.get("teacher_topk")
        if k is None or int(k) < 1:
            raise ValueError(
                f"kd.teacher_logits=cached keeps the teacher's top kd.teacher_topk logits per "
                f"token; set kd.teacher_topk to a positive integer (e.g. 32), got {k!r}"
            )
        vocab = _data_vocab(cfg)
        if method != "forward_kl" and (vocab is None or int(k) < vocab):
            raise ValueError(
                f"kd={method} with kd.teacher_logits=cached and kd.teacher_topk={k}: a teacher "
                "truncated to its top k tokens gives the student's other tokens infinite cost "
                f"under {method}; use kd=forward_kl, kd.teacher_topk >= the vocabulary "
                f"({vocab if vocab is not None else 'its size'}), or kd.teacher_logits=online"
            )
    check_beta(cfg.kd.get("beta", 0.5))
    if check_fraction(cfg.kd.get("on_policy", 0.0)) and cfg.kd.get("teacher_logits") == "cached":
        raise ValueError(
            "kd.on_policy > 0 needs the teacher online (it scores the student's own samples); "
            "set kd.teacher_logits=online or kd.on_policy=0"
        )
    chunk = cfg.kd.get("chunk_size")
    if chunk is not None and int(chunk) < 1:
        raise ValueError(f"kd.chunk_size={chunk!r} must be a positive integer or null")


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


@dataclass  # a generated __init__ that calls __post_init__ (Job's own does not look for one)
class LMJob(Job):
    """A :class:`kdlightning.job.stages.Job` for text: LM builders and loss-monitoring callbacks.

    Creating one checks the config and builds teacher and student once, so that a wrong method
    or a vocabulary mismatch stops the job before anything trains.
    """

    def __post_init__(self) -> None:
        check_lm_config(self.cfg)
        self.dm.setup("fit")  # missing files or an empty split: said now, not after the teacher
        if self.cfg.get("task", "distill") == "distill":
            check_vocabularies(self.build("teacher"), self.build("student"), self.dm)

    def build(self, role: str) -> nn.Module:
        return build_lm(self.cfg[role].model, self.dm, role)

    def trainer(self, stage: str) -> L.Trainer:
        trainer = make_trainer(_lm_callbacks(self.cfg), stage, self.out)
        self.trainers.append(trainer)
        return trainer

    def module_kwargs(self) -> dict[str, Any]:
        return {
            "vocab_size": self.dm.vocab_size,
            "chunk_size": self.cfg.kd.get("chunk_size"),
            "bytes_per_token": self.dm.bytes_per_token,  # measured by the setup at creation
            **optimizer_factories(self.cfg),
        }


def teacher_stage(job: LMJob) -> StageResult:
    """Train the teacher LM on the training split, or load ``teacher.checkpoint``."""
    cfg = job.cfg
    L.seed_everything(cfg.seed, workers=True)
    teacher = job.build("teacher")
    module = LMModule(teacher, **job.module_kwargs())
    trainer = job.trainer("teacher")
    ckpt = cfg.teacher.get("checkpoint")
    if ckpt:
        log.info("Loading the teacher from %s", ckpt)
        load_weights(teacher, ckpt, role="teacher")
        metrics = {**evaluate(trainer, module, job.dm), "checkpoint": str(Path(ckpt).expanduser())}
    elif cfg.teacher.get("pretrained", False):
        log.info("Using the pretrained teacher as built (teacher.pretrained=true), not training")
        metrics = evaluate(trainer, module, job.dm)
    else:
        log.info("Training the teacher language model")
        metrics = fit_and_test(trainer, module, job.dm, job.last_checkpoint("teacher"))
    metrics["teacher/val_bpb"] = float(metrics["val/bpb"])
    log.info("Teacher validation bits per byte: %.4f", metrics["val/bpb"])
    return teacher.eval(), metrics


def baseline_stage(job: LMJob) -> StageResult:
    """The student alone on next-token cross-entropy: what distillation has to beat."""
    log.info("Training the student language model alone (baseline)")
    L.seed_everything(job.cfg.seed, workers=True)
    student = job.build("student")
    module = LMModule(student, **job.module_kwargs())
    metrics = fit_and_test(job.trainer("baseline"), module, job.dm, job.last_checkpoint("baseline"))
    return student, metrics


def distill_stage(job: LMJob) -> StageResult:
    """Distill ``job.teacher`` into a fresh student with the token-level ``kd.method``."""
    cfg = job.cfg
    if job.teacher is None:
        raise RuntimeError("distill_stage needs job.teacher: run teacher_stage first")
    kd = cfg.kd  # checked when the LMJob was created (check_lm_config)
    method, temperature, alpha = kd.method, check_temperature(kd.temperature), check_alpha(kd.alpha)
    topk, logits_info = None, {"mode": "online"}
    if kd.get("teacher_logits", "auto") == "cached":
        topk, logits_info = _cached_topk(job, int(kd.teacher_topk))
    log.info("Distilling the student LM (%s, T=%g, alpha=%g, %s teacher logits)",
             method, temperature, alpha, logits_info["mode"])  # fmt: skip
    L.seed_everything(cfg.seed, workers=True)
    student = job.build("student")
    check_vocabularies(job.teacher, student, job.dm)
    module = LMDistillationModule(
        job.teacher, student, method=str(method), temperature=temperature, alpha=alpha,
        beta=float(kd.get("beta", 0.5)), teacher_topk=topk,
        on_policy=float(kd.get("on_policy", 0.0)), prompt_tokens=int(kd.get("prompt_tokens", 16)),
        seed=int(cfg.seed), **job.module_kwargs(),
    )  # fmt: skip
    metrics = fit_and_test(
        job.trainer("distilled"), module, job.dm, job.last_checkpoint("distilled")
    )
    return student, {**metrics, "teacher_logits": logits_info, "method": str(method)}


def _cached_topk(job: LMJob, k: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The teacher's top-k logits from the cache (computed on a miss), and what to record."""
    assert job.teacher is not None
    key = {**logits_key_inputs(job.cfg, job.teacher), "topk": k}
    start = time.perf_counter()
    teacher, dm = job.teacher, job.dm
    topk, info = job.cache.tensors("lm_topk", key, lambda: compute_topk(teacher, dm, k))
    seconds = time.perf_counter() - start
    return topk, {"mode": "cached", "topk": k, "seconds": seconds, "cache": info}
