"""Check a composed config before any work: every bad value named, with its fix.

    from kdlightning.job.config import check_config
    check_config(cfg)   # raises ConfigError("kd.temperature='abc' is not a number; ...")

Hydra checks that keys exist; this module checks what their values mean (types, ranges, model
arguments), so that a typo stops the job in its first second with one line, not minutes later
with a traceback from inside torch, and so that an ignored value is never recorded as used.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from kdlightning.data.fast import check_on_device
from kdlightning.distill.logit_store import check_dtype, check_topk
from kdlightning.distill.mixing import check_mix
from kdlightning.distill.teacher import cached_feature_message, check_teacher_logits
from kdlightning.job.build import build_method, method_class, method_needs
from kdlightning.job.errors import ConfigError  # defined there: the command line needs no torch
from kdlightning.job.precheck import check_missing

# Arguments every model builder receives from the data module, never from the config.
FROM_DATA = ("num_classes", "input_shape")


def _number(cfg: DictConfig, key: str, kind: type, low: float | None = None) -> Any:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        return None
    try:
        number = kind(value)
        if kind is int and number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key}={value!r} is not {'an integer' if kind is int else 'a number'}; "
            f"set {key}=<{'integer' if kind is int else 'number'}>"
        ) from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(f"{key}={value!r} is not a finite number")
    if low is not None and number < low:
        raise ConfigError(f"{key}={value!r} must be >= {low}")
    return number


def check_model_keys(cfg: DictConfig, role: str) -> None:
    """Refuse model arguments the builder does not take, and those the data set decides."""
    model_cfg = cfg.get(role, {}).get("model")
    if model_cfg is None or "_target_" not in model_cfg:
        return
    for key in FROM_DATA:
        if key in model_cfg:
            raise ConfigError(
                f"{role}.model.{key} is set from the data set (data={cfg.data._target_}); remove "
                f"{role}.model.{key} from the config or command line"
            )
    try:
        params = inspect.signature(get_method(str(model_cfg._target_))).parameters
    except Exception:  # not importable: build_model reports it with the role and the data
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(k for k in params if k not in FROM_DATA)
    unknown = sorted(k for k in model_cfg if not str(k).startswith("_") and k not in params)
    if unknown:
        raise ConfigError(
            f"{role}.model has no argument {', '.join(unknown)} ({model_cfg._target_} takes: "
            f"{', '.join(valid)}); fix the name or remove it"
        )


def known_methods() -> tuple[str, ...]:
    """Every ``kd.method`` a job can run: the options of the ``kd`` config group
    (``conf/kd/<name>.yaml``; ``kd=<name>`` picks one)."""
    package = Path(__file__).resolve().parents[1]
    conf = package / "conf" if (package / "conf").is_dir() else package.parent / "conf"
    return tuple(sorted(p.stem for p in (conf / "kd").glob("*.yaml")))


def _unknown_method(method: Any, known: tuple[str, ...]) -> str:
    return (
        f"kd.method={method!r} is not a known distillation method; choose one of "
        f"{', '.join(known)} (kd=<name> picks conf/kd/<name>.yaml)"
    )


#: A placeholder training-split size for the start-up build of a method keyed by sample index
#: (the data is not read at start-up; the stage builds the method again with the real size).
PROBE_NUM_TRAIN = 2


def check_kd(cfg: DictConfig) -> None:
    """``kd.method`` is known and names ``kd._target_``'s class, a method that reads features is
    not given cached teacher logits, and a method that needs no models is built once (its
    constructor checks its hyperparameters; :func:`check_feature_layers` builds the others)."""
    kd = cfg.kd
    method = kd.get("method", "kd")
    known = known_methods()
    if "_target_" not in kd and method not in known:
        raise ConfigError(_unknown_method(method, known))
    try:
        cls = method_class(kd)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    own = getattr(cls, "name", "")
    if own and own != method:
        if method not in known:
            raise ConfigError(_unknown_method(method, known))
        raise ConfigError(
            f"kd.method={method} with kd._target_={kd._target_} (the method {own}): pick the "
            f"method with kd={method}, which sets both"
        )
    if getattr(cls, "needs_features", False) and kd.get("teacher_logits") == "cached":
        raise ConfigError(cached_feature_message(method))
    try:
        if not {"teacher", "student", "input_shape"} & set(method_needs(kd)):
            build_method(kd, num_train=PROBE_NUM_TRAIN)
        if "teacher_logits" in kd:
            check_teacher_logits(kd.teacher_logits)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    check_logit_store(kd)
    check_kd_mix(kd)


def check_logit_store(kd: DictConfig) -> None:
    """``kd.logits_dtype`` names a stored type; ``kd.logits_topk`` is a positive integer (its
    bound, the class count, is checked once the data is read), with cached logits, for the KD
    loss: a top-k teacher drops its other classes (probability 0), which the forward KL of
    ``kd=kd`` is defined for; the others read what was dropped (z-scores, DKD's non-target
    split, DIST's correlations over every class)."""
    if kd.get("logits_dtype") is not None:
        try:
            check_dtype(kd.logits_dtype)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    k = kd.get("logits_topk")
    if k is None:
        return
    try:
        check_topk(k)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    method = kd.get("method", "kd")
    if method != "kd" or kd.get("standardize"):
        raise ConfigError(
            f"kd.logits_topk={k} with kd={method}"
            f"{' and kd.standardize=true' if kd.get('standardize') else ''}: the top-k teacher "
            "gives its other classes probability 0, which only the KD loss (forward KL, kd=kd "
            "with standardize=false) is defined for; use kd=kd, or kd.logits_topk=null"
        )
    if kd.get("teacher_logits") == "online":
        raise ConfigError(
            f"kd.logits_topk={k} keeps the teacher's top {k} stored logits per sample, but "
            "kd.teacher_logits=online runs the teacher on every batch; set "
            "kd.teacher_logits=cached (or auto), or kd.logits_topk=null"
        )


def check_kd_mix(kd: DictConfig) -> None:
    """``kd.mix`` / ``kd.mix_alpha`` (function matching on mixed images): a known mode, a Beta
    parameter > 0, and never with cached teacher logits, which hold no output for a mixed image."""
    try:
        mode, _ = check_mix(kd.get("mix", "none"), kd.get("mix_alpha", 1.0))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if mode != "none" and kd.get("teacher_logits") == "cached":
        raise ConfigError(
            f"kd.mix={mode} with kd.teacher_logits=cached: the teacher has to see the mixed "
            "images, and logits stored once belong to the unmixed ones. Use "
            "kd.teacher_logits=online (or auto), or kd.mix=none"
        )
    if mode != "none" and kd.get("logits_topk") is not None:
        raise ConfigError(
            f"kd.mix={mode} with kd.logits_topk={kd.logits_topk}: the top-k teacher is stored "
            "once, for the unmixed images, and mixing needs the teacher online; set "
            "kd.logits_topk=null, or kd.mix=none"
        )


def check_feature_layers(cfg: DictConfig) -> None:
    """For a method that reads features: build the teacher and the student (untrained, CPU) for
    the data and build the method with them, which probes ``kd.student_layers`` /
    ``kd.teacher_layers`` with one dummy forward, so that a wrong module path or shapes no
    connector bridges stop the job before the teacher trains.

    Only the method's own errors are raised here: a model or data config that cannot be built
    is left to the stages, which report it with their own messages.
    """
    if "_target_" not in cfg.kd or not {"teacher", "student"} & set(method_needs(cfg.kd)):
        return
    try:
        dm = instantiate(cfg.data)  # constructors read no data: shapes are class facts
        shape, classes = tuple(dm.input_shape), int(dm.num_classes)
        models = {}
        for role in ("teacher", "student"):
            model_cfg = cfg[role].model
            if model_cfg.get("pretrained"):  # weights would be loaded (or fetched) for nothing
                model_cfg = OmegaConf.merge(model_cfg, {"pretrained": False})
            models[role] = instantiate(
                model_cfg, num_classes=classes, input_shape=list(shape), _convert_="all"
            )
    except Exception:
        return
    try:
        build_method(cfg.kd, models["teacher"], models["student"], shape, PROBE_NUM_TRAIN)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_benchmark_and_export(cfg: DictConfig) -> None:
    """``benchmark.*`` numbers and device; ``export`` one of null, onnx, all, for a classifier's
    distillation (the file it would export is the distilled student)."""
    for key, kind, low in (("batch_size", int, 1), ("threads", int, 1), ("warmup", int, 0),
                           ("repeats", int, 1), ("min_run_time_s", float, 0)):  # fmt: skip
        _number(cfg, f"benchmark.{key}", kind, low=low)
    device = OmegaConf.select(cfg, "benchmark.device", default="auto")
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"benchmark.device={device!r} is not one of auto, cpu, cuda")
    export = cfg.get("export")
    if export is None:
        return
    if export not in ("onnx", "all"):
        raise ConfigError(
            f"export={export!r} is not one of null, onnx (student.onnx), all (student.onnx and "
            "student.pt2); e.g. export=onnx"
        )
    if cfg.get("task", "distill") != "distill":
        raise ConfigError(f"export={export} exports the distilled student: it needs task=distill")
    if str(OmegaConf.select(cfg, "data._target_", default="")).startswith("kdlightning.lm."):
        raise ConfigError(f"export={export} is for classifiers; leave it null for text data")


def check_on_device_key(cfg: DictConfig) -> None:
    """``data.on_device`` (where a data config has it) must be auto, true or false."""
    value = OmegaConf.select(cfg, "data.on_device", default=None)
    if value is None:
        return
    try:
        check_on_device(value)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value that cannot work."""
    check_missing(cfg)
    _number(cfg, "seed", int)
    if cfg.get("task", "distill") == "distill":
        check_kd(cfg)
    epochs = _number(cfg, "trainer.max_epochs", int)
    if epochs is not None and epochs < 1:
        raise ConfigError(
            f"trainer.max_epochs={epochs} must be >= 1 (-1 would train forever); "
            "set trainer.max_epochs=30, say"
        )
    _number(cfg, "data.batch_size", int, low=1)
    _number(cfg, "data.num_labeled", int, low=1)
    check_on_device_key(cfg)
    _number(cfg, "cache.lock_timeout_s", float, low=0)
    check_benchmark_and_export(cfg)
    for role in ("teacher", "student"):
        check_model_keys(cfg, role)
    if cfg.get("task", "distill") == "distill":
        check_feature_layers(cfg)
