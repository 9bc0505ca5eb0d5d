"""What each distillation method costs to train, relative to vanilla KD, per step and per epoch.

    OMP_NUM_THREADS=1 python benchmarks/methods_cost.py                   # 100 steps x 5 rounds
    OMP_NUM_THREADS=1 python benchmarks/methods_cost.py --steps 300 --rounds 5
    OMP_NUM_THREADS=1 python benchmarks/methods_cost.py --methods kd dkd fitnet

The setting is the default job's, composed from ``conf/`` as ``python -m kdlightning.train
kd=<name> student=cnn`` would: teacher=cnn and student=cnn (``SmallCNN``), digits in the job's
transfer mode (batch 64), the job's optimizer and each ``conf/kd/<name>.yaml``. Every method whose
file names a class of ``kdlightning.distill.methods`` (built by ``kdlightning.job.build.
build_method``) trains through ``DistillationModule``; ``dml`` through
``kdlightning.distill.mutual.MutualLearningModule`` (its cohort of ``kd.num_students`` students, no
teacher). The teacher keeps its initial weights: training it would change no step's cost.

``kd.teacher_logits`` is resolved as the job resolves it (``auto``: cached unless the data set
augments; feature methods always online). Logit methods get a second row with the other mode,
so that each method can be set against KD both ways: ``cached`` looks the teacher's logits up
by sample index, ``online`` runs the teacher on every batch.

Timing follows ``benchmarks/overhead.py``: one process, the same threads for every variant,
interleaved rounds (every variant once per round), the fastest round kept to filter out a shared
machine's noise; every variant first trains ``--warmup`` untimed steps. Only the training loop
is timed (a callback from ``on_train_start`` to ``on_train_end``: the batches, the epoch ends,
the optimizer), not the Trainer's set-up, so that a step's time times the steps of an epoch is
the cost of an epoch of the digits training split.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader

from kdlightning.data.base import ClassificationDataModule
from kdlightning.deploy.compare import markdown_table
from kdlightning.distill.modules import DistillationModule
from kdlightning.distill.mutual import MutualLearningModule, check_num_students
from kdlightning.distill.teacher import compute_teacher_logits
from kdlightning.job.build import build_method, build_model, method_class, optimizer_factories
from kdlightning.job.tasks.image import teacher_logits_mode

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
#: The table's row order; a method not listed (a new conf/kd file) comes after these.
ORDER = ("kd", "dkd", "dist", "ls_kd", "fitnet", "at", "rkd", "pkt", "dml")
#: conf/kd's image-classification methods (their class in kdlightning.distill.methods) and dml
ALL_METHODS = tuple(sorted(
    {p.stem for p in (CONF_DIR / "kd").glob("*.yaml")
     if str(OmegaConf.load(p).get("_target_", "")).startswith("kdlightning.distill.methods.")}
    | {"dml"},
    key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m),
))  # fmt: skip
SEED = 0


class LoopTimer(L.Callback):
    """Seconds from the start to the end of the training loop (Trainer set-up excluded)."""

    seconds = float("nan")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self._start


def timed_fit(module: L.LightningModule, dl: DataLoader, steps: int) -> float:
    """Train ``module`` for ``steps`` steps with overhead.py's Trainer; the loop's seconds."""
    timer = LoopTimer()
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=dl)
    if trainer.global_step != steps:  # a short run would make its per-step time meaningless
        raise RuntimeError(f"trained {trainer.global_step} steps instead of {steps}")
    return timer.seconds


def job_config() -> DictConfig:
    """The default job's config with ``student=cnn`` (``conf/train.yaml``), ``kd=kd``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["kd=kd", "teacher=cnn", "student=cnn"])


def with_method(base: DictConfig, method: str) -> DictConfig:
    """``base`` with ``kd=<method>``: ``conf/kd/<method>.yaml`` in place of ``cfg.kd``."""
    kd = OmegaConf.load(CONF_DIR / "kd" / f"{method}.yaml")
    # What Hydra's kd=<method> does for a group file without a defaults list, without a second
    # composition (0.4 s each, most of a smoke run); a file that gets one is composed for real.
    if "defaults" in kd:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=[f"kd={method}", "teacher=cnn", "student=cnn"])
    cfg = base.copy()
    cfg.kd = kd
    return cfg


def variants_of(
    method: str, cfg: DictConfig, teacher: nn.Module, dm: ClassificationDataModule,
    cached: dict[str, Tensor],
) -> dict[tuple[str, str], Callable[[], L.LightningModule]]:  # fmt: skip
    """``{(method, teacher logits): builder of a fresh module}``: the job's mode first."""
    factories = optimizer_factories(cfg)

    def student() -> nn.Module:
        torch.manual_seed(SEED)  # every variant starts from the same student weights
        return build_model(cfg.student.model, dm, "student")

    if method == "dml":
        k = check_num_students(cfg.kd.get("num_students", 2))

        def cohort() -> L.LightningModule:
            students = [student()]
            for i in range(1, k):  # the peers: other initial weights, as the job builds them
                torch.manual_seed(SEED + i)
                students.append(build_model(cfg.student.model, dm, "student"))
            return MutualLearningModule(students, cfg.kd.temperature, **factories)

        return {(method, f"none ({k} students)"): cohort}

    def module(mode: str) -> Callable[[], L.LightningModule]:
        def build() -> L.LightningModule:
            s = student()
            with torch.random.fork_rng(devices=[]):  # as distill_stage: connectors' init aside
                m = build_method(cfg.kd, teacher, s, dm.input_shape, len(dm.train_set))
            logits = cached if mode == "cached" else None
            return DistillationModule(teacher, s, method=m, teacher_logits=logits, **factories)

        return build

    if method_class(cfg.kd).needs_features:  # feature methods read the teacher's layers: online
        return {(method, "online"): module("online")}
    job_mode = teacher_logits_mode(cfg, dm)
    other = "online" if job_mode == "cached" else "cached"
    return {(method, job_mode): module(job_mode), (method, other): module(other)}


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info lines and advice off, restored after (main() also runs inside pytest)."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # Its advice (more loader workers, a log interval above the epoch's 19 steps) is
            # about the job's settings, not this measurement.
            warnings.filterwarnings("ignore", module="lightning")
            yield
    finally:
        logger.setLevel(level)


def measure(
    methods: list[str], steps: int, rounds: int, warmup: int
) -> tuple[dict[tuple[str, str], float], set[tuple[str, str]], ClassificationDataModule]:
    """``({(method, teacher logits): fastest seconds}, the job's own choices, the data)``."""
    cfg = job_config()
    dm: ClassificationDataModule = instantiate(cfg.data)
    dm.setup("fit")
    dm.set_train_mode("transfer")  # what distill_stage serves: every sample, few labels
    torch.manual_seed(SEED)
    teacher = build_model(cfg.teacher.model, dm, "teacher").eval()
    cached = compute_teacher_logits(teacher, dm)

    variants: dict[tuple[str, str], Callable[[], L.LightningModule]] = {}
    for method in methods:
        variants.update(variants_of(method, with_method(cfg, method), teacher, dm, cached))
    # the first entry of each teacher-distilling method is the mode its job would run
    chosen = {next(key for key in variants if key[0] == m) for m in methods if m != "dml"}
    # One short untimed run of each variant first: a variant's first steps pay one-off costs
    # (allocations, lazy initialization) that would otherwise land in round 1.
    for build in variants.values() if warmup else ():
        timed_fit(build(), dm.train_dataloader(), warmup)
    best = {key: float("inf") for key in variants}
    for _ in range(rounds):
        for key, build in variants.items():
            # a fresh loader each run: the same shuffled order from epoch 0 for every variant
            best[key] = min(best[key], timed_fit(build(), dm.train_dataloader(), steps))
    return best, chosen, dm


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; fastest kept")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed steps of every variant first (0: none)")  # fmt: skip
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(ALL_METHODS))
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error(f"--steps and --rounds must be >= 1 and --warmup >= 0, got {args.steps}, "
                     f"{args.rounds} and {args.warmup}")  # fmt: skip
    methods = ["kd", *(m for m in args.methods if m != "kd")]  # the reference always runs
    with quiet_lightning():
        best, chosen, dm = measure(methods, args.steps, args.rounds, args.warmup)

    per_epoch = len(dm.train_dataloader())
    ms = {key: 1000 * seconds / args.steps for key, seconds in best.items()}
    kd_cached, kd_online = ms[("kd", "cached")], ms[("kd", "online")]
    rows = [
        [method, f"{mode} (auto)" if (method, mode) in chosen else mode, f"{v:.2f}",
         f"{v * per_epoch:.0f}", f"{v / kd_cached:.2f}x", f"{v / kd_online:.2f}x"]
        for (method, mode), v in ms.items()
    ]  # fmt: skip
    print(
        f"threads: {torch.get_num_threads()}, steps: {args.steps}, rounds: {args.rounds} "
        f"(fastest kept), warm-up: {args.warmup} steps; teacher=cnn student=cnn, digits "
        f"transfer split: {len(dm.indexed('train', 'transfer'))} samples = {per_epoch} steps of "
        f"{dm.batch_size} per epoch"
    )
    print()
    header = ["method", "teacher logits", "ms/step", "ms/epoch", "vs kd cached", "vs kd online"]
    print(markdown_table(header, rows))
    print()
    print("(auto): the mode the job's kd.teacher_logits=auto picks; dml runs no teacher")


if __name__ == "__main__":
    main()
