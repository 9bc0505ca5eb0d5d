"""Lightning modules: ``DistillationModule`` (frozen teacher -> student) and ``ClassifierModule``.

The math lives in ``kdlightning.distill.functional``; this file only wires it to Lightning::

    import lightning as L
    from kdlightning import DistillationModule
    module = DistillationModule(teacher, student, temperature=4.0, alpha=0.9)
    L.Trainer(max_epochs=10).fit(module, datamodule)
    module.student  # the plain nn.Module to deploy

    # another method (kdlightning.distill.methods): DKD, DIST, FitNets, attention transfer, ...
    from kdlightning.distill.methods import AttentionTransfer
    method = AttentionTransfer(temperature=2.0, alpha=0.0, beta=1000.0, p=2.0,
                               student_layers=["features.3"], teacher_layers=["features.3"],
                               teacher=teacher, student=student, input_shape=(1, 8, 8))
    module = DistillationModule(teacher, student, method=method)

Metric keys are ``split/name``: ``train/loss``, ``val/acc``, ``test/teacher_acc``, ...
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from kdlightning.data.base import UNLABELED
from kdlightning.distill.functional import check_alpha, kd_loss
from kdlightning.distill.hooks import capture
from kdlightning.distill.logit_store import LogitTable
from kdlightning.distill.logit_store import tables as logit_tables
from kdlightning.distill.methods import KD, Method, no_gather
from kdlightning.distill.metrics import Accuracy
from kdlightning.distill.mixing import check_mix, mix_batch

__all__ = [
    "ClassifierModule",
    "DistillationModule",
    "DivergenceError",
    "FrozenTeacher",
    "SupervisedModule",
    "default_optimizer",
]

Batch = tuple[Tensor, ...]  # (inputs, targets) or (inputs, targets, index); see kdlightning.data

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]

#: The optimizer used when none is given: AdamW, lr 1e-3, weight decay 1e-4.
default_optimizer: OptimizerFactory = functools.partial(
    torch.optim.AdamW, lr=1e-3, weight_decay=1e-4
)


def infer_num_classes(model: nn.Module) -> int:
    """The output size of ``model``'s last ``nn.Linear`` layer: its number of classes."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            "cannot infer the number of classes (the model has no nn.Linear layer); "
            "pass num_classes=..."
        )
    return linears[-1].out_features


# The epoch values logged below are already reduced over the ranks (torchmetrics' compute, or
# SupervisedModule._log_train_epoch): Lightning's advice to add sync_dist=True is noise here.
warnings.filterwarnings(
    "ignore", message=r"It is recommended to use `self.log\(.*sync_dist=True\)` when logging"
)


def _logs_this_step(trainer: L.Trainer) -> bool:
    """Whether Lightning writes this training step's logged values to the loggers (its own test,
    read in on_train_batch_end, as it reads it right after)."""
    connector = getattr(trainer, "_logger_connector", None)
    if connector is None:  # another Lightning version: log every step, as before
        return True
    return bool(connector.should_update_logs or trainer.fast_dev_run)


class DivergenceError(FloatingPointError):
    """The training loss became NaN or infinite."""


class SupervisedModule(L.LightningModule):
    """Optimizer/scheduler wiring and per-split metrics shared by the package's modules
    (classifier, distillation, mutual learning, language models)."""

    def __init__(
        self,
        num_classes: int,
        optimizer: OptimizerFactory | None,
        scheduler: SchedulerFactory | None,
    ) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.optimizer_factory = optimizer or default_optimizer
        self.scheduler_factory = scheduler

    def _accuracy(self) -> Accuracy:
        # ignore_index: transfer-set samples without a label (kdlightning.data.base.UNLABELED).
        # Not torchmetrics' MulticlassAccuracy (same value): its update cost more than a small
        # student's step and synced with the GPU (kdlightning.distill.metrics).
        return Accuracy(ignore_index=UNLABELED)

    # The global random state (dropout masks, ...) travels with the checkpoint, so that a run
    # resumed from last.ckpt continues exactly as the uninterrupted run would have.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["kdl_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "kdl_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["kdl_rng_state"])

    # --- training terms: per step on this rank, per epoch over every rank ---------------------
    # Why not self.log(..., on_epoch=True, sync_dist=True): Lightning reduces such a value
    # lazily, when something reads it, and under DDP the progress bar reads it on rank 0 only -
    # rank 0 then waits in that all_reduce while the other ranks wait in the next epoch metric's
    # all_gather, and the job hangs for ever (issue 19). Here every rank reduces the epoch's sums
    # itself, in one collective, at the same place (on_train_epoch_end), before anything reads
    # them. The step values are this rank's own (no collective per step either).
    def on_train_epoch_start(self) -> None:
        # per tuple of names logged together: some terms skip some steps (GKD)
        self._train_sums: dict[tuple[str, ...], Tensor] = {}
        self._train_counts: dict[tuple[str, ...], int] = {}

    def log_train(self, values: Mapping[str, Tensor], batch_size: int) -> None:
        """Log ``train/<name>_step`` for each of ``values`` (``loss`` first, on the progress bar)
        and add them, weighted by ``batch_size``, to the epoch's ``train/<name>_epoch``.

        Every rank must log the same names each epoch (they are reduced together). The sums also
        watch for divergence: a non-finite loss makes its sum non-finite, checked without a
        device-to-host sync per step (:meth:`_check_finite`).

        Under a Trainer the step values reach ``self.log`` in ``on_train_batch_end``, and only on
        the steps whose logs Lightning writes (every ``log_every_n_steps``): the loggers get the
        same values, the progress bar shows the loss of the last logged step. A ``self.log``
        call costs more than a small student's whole step (issue 20's profile)."""
        sums = getattr(self, "_train_sums", None)
        if sums is None:  # a step outside fit's epoch hooks (a test calling training_step)
            self.on_train_epoch_start()
            sums = self._train_sums
        detached = {name: value.detach() for name, value in values.items()}
        if self._trainer is None:
            self._log_train_step(detached, batch_size)
        else:
            self._pending_step = (detached, batch_size)
        # The names of a step, summed as one stacked tensor: one add per step, not one per name.
        names = tuple(detached)
        stacked = torch.stack([v.float() for v in detached.values()]) * batch_size
        sums[names] = stacked if names not in sums else sums[names] + stacked
        self._train_counts[names] = self._train_counts.get(names, 0) + batch_size
        # One process: look every log interval (a host sync each `log_every_n_steps`, not every
        # step). Under DDP only at the epoch's end, after the reduce, so that every rank stops at
        # the same point instead of one rank raising while the others wait in a collective.
        if self._trainer is not None and self.trainer.world_size == 1:
            every = max(1, int(self.trainer.log_every_n_steps or 1))
            if (self.global_step + 1) % every == 0:
                losses = [sum_[group.index("loss")] for group, sum_ in sums.items()
                          if "loss" in group]  # fmt: skip
                self._check_finite(sum(losses) if losses else None)  # type: ignore[arg-type]

    def _log_train_step(self, values: Mapping[str, Tensor], batch_size: int) -> None:
        for name, value in values.items():
            self.log(f"train/{name}_step", value, on_step=True, on_epoch=False,
                     prog_bar=name == "loss", batch_size=batch_size)  # fmt: skip

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        pending, self._pending_step = getattr(self, "_pending_step", None), None
        if pending is not None and _logs_this_step(self.trainer):
            self._log_train_step(*pending)

    def _check_finite(self, loss_sum: Tensor | None) -> None:
        # Stop at a non-finite loss: every later step would only train on garbage, and the job
        # would report chance accuracy as a result.
        if loss_sum is not None and not bool(torch.isfinite(loss_sum)):
            where = Path(self.trainer.default_root_dir).name if self._trainer else "training"
            raise DivergenceError(
                f"the {where} loss became {loss_sum.item()} at step {self.global_step} or "
                "earlier: training diverged. Lower optim.optimizer.lr, or use "
                "trainer.precision=32-true if a mixed precision is on."
            )

    def _log_train_epoch(self) -> None:
        sums = getattr(self, "_train_sums", {})
        # Per name over the epoch's name groups (some terms skip some steps: GKD).
        by_name: dict[str, Tensor] = {}
        counts: dict[str, float] = {}
        for group, stacked in sums.items():
            for i, name in enumerate(group):
                by_name[name] = stacked[i] if name not in by_name else by_name[name] + stacked[i]
                counts[name] = counts.get(name, 0.0) + float(self._train_counts[group])
        names = sorted(by_name)
        if not names:
            return
        total = torch.cat(
            [torch.stack([by_name[n] for n in names]), by_name[names[0]].new_tensor(
                [counts[n] for n in names])]
        )  # fmt: skip
        if self._trainer is not None and self.trainer.world_size > 1:
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
        self._check_finite(total[names.index("loss")] if "loss" in names else None)
        means = total[: len(names)] / total[len(names) :]
        for name, value in zip(names, means, strict=True):
            self.log(f"train/{name}_epoch", value, on_step=False, on_epoch=True)
        self.on_train_epoch_start()

    def trainable_module(self) -> nn.Module:  # the part the optimizer updates
        raise NotImplementedError

    def epoch_metrics(self, split: str) -> Mapping[str, Metric]:
        """The metric objects of ``split``, updated every step, logged once per epoch."""
        raise NotImplementedError

    # Metric objects are updated in the steps and computed, logged and reset here, once per
    # epoch: logging a Metric object on every step makes Lightning move it to the device again
    # each time, which cost more than a small student's whole training step.
    def _log_epoch(self, split: str) -> None:
        for name, metric in self.epoch_metrics(split).items():
            self.log(f"{split}/{name}", metric.compute(), prog_bar=name == "acc")
            metric.reset()

    def on_train_epoch_end(self) -> None:
        self._log_train_epoch()  # first: it raises DivergenceError on every rank alike
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.trainable_module().parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        # "monitor" is only read by ReduceLROnPlateau-style schedulers.
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"},
        }


class ClassifierModule(SupervisedModule):
    """Trains one classifier on hard labels: the teacher, or the student-alone baseline.

    Logs ``{train,val,test}/loss`` and ``{train,val,test}/acc``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(num_classes or infer_num_classes(model), optimizer, scheduler)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        # One metric object per split (a ModuleDict cannot use "train": nn.Module.train exists).
        self.train_acc, self.val_acc, self.test_acc = (self._accuracy() for _ in range(3))
        # Evaluation losses as metric objects too: weighted by batch size and summed across DDP
        # ranks, they stay exact when the ranks' shards differ in size (a logged tensor would be
        # a mean of per-rank means).
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def trainable_module(self) -> nn.Module:
        return self.model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, batch: Batch, split: str) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=UNLABELED)
        getattr(self, f"{split}_acc").update(logits, y)
        if split == "train":
            self.log_train({"loss": loss}, y.shape[0])
        else:
            getattr(self, f"{split}_loss").update(loss, weight=y.shape[0])
        return loss

    def epoch_metrics(self, split: str) -> Mapping[str, Metric]:
        metrics = {"acc": getattr(self, f"{split}_acc")}
        if split != "train":
            metrics["loss"] = getattr(self, f"{split}_loss")
        return metrics

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")


class FrozenTeacher(L.LightningModule):
    """What keeps ``self.teacher`` frozen in a LightningModule: eval mode whatever ``train()``
    is asked, and out of checkpoints. Mixed in before the module's base class
    (``class M(FrozenTeacher, SupervisedModule)``); the module sets ``self.teacher``."""

    teacher: nn.Module

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Switch the module's mode; the teacher stays in eval mode whatever ``mode`` is."""
        super().train(mode)
        self.teacher.eval()  # BatchNorm statistics and dropout of the teacher must never move
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("teacher.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # Lightning calls this before load_state_dict: put the live teacher's tensors back so
        # strict loading still checks every other key.
        state = checkpoint["state_dict"]
        for key, value in self.teacher.state_dict().items():
            state[f"teacher.{key}"] = value


class DistillationModule(FrozenTeacher, SupervisedModule):
    """Distills a frozen ``teacher`` into a trainable ``student``.

    ``loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``
    (see ``kdlightning.distill.functional``) unless ``method`` (a
    :class:`kdlightning.distill.methods.Method`; the job builds it from ``conf/kd/<name>.yaml``)
    says otherwise: ``temperature`` and ``alpha`` are then unused and
    ``val/kd_loss`` is the KD loss at the method's temperature. A method's own parameters
    (FitNets' connectors) are trained with the student and saved in its checkpoints
    (``method.*``); a feature method's layers are captured by forward hooks on the training
    steps only. ``optimizer`` is a callable taking parameters, e.g.
    ``functools.partial(torch.optim.SGD, lr=0.05)`` or a Hydra ``_partial_: true`` config;
    default :data:`default_optimizer` (AdamW, lr 1e-3). ``scheduler`` optionally maps the
    optimizer to an LR scheduler stepped every epoch.

    ``teacher_logits`` (optional): the teacher's outputs computed once, ``{"train": (N, C),
    "val": ..., "test": ...}`` or :class:`~kdlightning.distill.logit_store.LogitTable` s (a
    memory-mapped, float16 or top-k store), indexed by the sample positions batches carry
    (``(x, y, index)``, see ``kdlightning.data``). Steps then look them up instead of running
    the teacher, so distilling costs about what training the student alone costs
    (``verify_cached=True`` also runs the teacher and stops at the first row that differs: a
    check, not a mode). Targets equal to ``UNLABELED`` (the transfer set) get the distillation
    term only.

    The teacher is frozen: ``requires_grad=False``, eval mode even after ``module.train()``,
    run under ``torch.no_grad()``, outside the optimizer and outside checkpoints. Reload with
    ``DistillationModule.load_from_checkpoint(path, teacher=teacher, student=student)``.

    ``mix`` (``none``, ``mixup`` or ``cutmix``; :mod:`kdlightning.distill.mixing`): each training
    batch is mixed (``lam ~ Beta(mix_alpha, mix_alpha)`` per image), the teacher and the student
    run on the mixed images, and the loss is the method's distillation term alone, since a mixed
    image has no label (function matching, Beyer et al. 2022); ``train/acc`` is then the
    agreement with the teacher. It needs the teacher online: refused with ``teacher_logits``.

    Logs ``train/{loss,acc}``, ``train/<term>`` for each of the method's terms (for KD
    ``kd_loss`` and ``ce_loss``; ``dkd_loss``, ``hint_loss``, ... for others) and, on val and
    test, ``{split}/acc`` (student),
    ``{split}/teacher_acc``, ``{split}/agreement`` (top-1 agreement with the teacher),
    ``{split}/kd_loss`` and ``{split}/loss`` (student cross-entropy).
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        temperature: float = 2.0,  # the defaults: conf/kd/kd.yaml's (a test holds them equal)
        alpha: float = 0.5,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        num_classes: int | None = None,
        teacher_logits: Mapping[str, Tensor | LogitTable] | None = None,
        verify_cached: bool = False,
        method: Method | None = None,
        mix: str = "none",
        mix_alpha: float = 1.0,
    ) -> None:
        super().__init__(num_classes or infer_num_classes(student), optimizer, scheduler)
        if teacher is student:
            raise ValueError("teacher and student must be two different modules")
        self.mix, self.mix_alpha = check_mix(mix, mix_alpha)
        if self.mix != "none" and teacher_logits:
            raise ValueError(
                f"kd.mix={self.mix} needs the teacher's outputs on the mixed images, which cached "
                "teacher logits (computed once on the unmixed images) do not hold: use "
                "kd.teacher_logits=online, or kd.mix=none"
            )
        self.alpha = check_alpha(alpha)
        if method is None:
            # KD checks its own temperature (once, in its constructor)
            method = KD(temperature=temperature, alpha=self.alpha, standardize=False)
        if method.needs_features and teacher_logits:
            raise ValueError(
                f"kd.method={method.name} reads the teacher's intermediate features, which cached "
                "teacher logits do not hold: use kd.teacher_logits=online (or auto)"
            )
        self.temperature = float(method.temperature)  # checked by the method's constructor
        self.save_hyperparameters(
            ignore=[
                "teacher",
                "student",
                "optimizer",
                "scheduler",
                "teacher_logits",
                "verify_cached",
                "method",
            ]
        )
        # Mixing draws from its own generator, seeded from the global state when training
        # starts (on_fit_start): dropout and the data order stay the student-alone run's.
        self.mix_generator = torch.Generator()
        self.teacher = teacher
        self.student = student
        self.method = method
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        # Not buffers, never in a checkpoint: a large table stays on the CPU (memory-mapped when
        # it came from the cache) and a lookup moves the batch's rows only; a small one moves to
        # the batches' device at its first lookup there (LogitTable.lookup says why).
        self.logit_tables = logit_tables(teacher_logits or {}, self.num_classes)
        self.cached_splits: tuple[str, ...] = tuple(self.logit_tables)
        self.verify_cached = bool(verify_cached)
        self.train_acc = self._accuracy()
        self.eval_metrics = nn.ModuleDict({s: self._eval_metrics() for s in ("val", "test")})

    def _eval_metrics(self) -> nn.ModuleDict:
        # A plain ModuleDict, not a MetricCollection: its compute groups could merge the three
        # accuracies' states, which here are updated with different inputs.
        return nn.ModuleDict(
            {
                "acc": self._accuracy(),
                "teacher_acc": self._accuracy(),
                "agreement": self._accuracy(),  # student predictions scored against the teacher's
                "kd_loss": MeanMetric(),
                "loss": MeanMetric(),
            }
        )

    # --- the frozen teacher -------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # Batch-relational terms (DIST, RKD, PKT) relate the global batch under DDP: gather the
        # ranks' tensors with their gradients (see kdlightning.distill.methods.Method.gather).
        if self.trainer.world_size > 1:
            self.method.gather = lambda t: self.all_gather(t, sync_grads=True).flatten(0, 1)
        self.mix_generator.manual_seed(torch.initial_seed() + self.global_rank)

    def on_fit_end(self) -> None:
        self.method.gather = no_gather

    def trainable_module(self) -> nn.Module:
        # The method's parameters (connectors) train with the student; KD's list is empty.
        return nn.ModuleList([self.student, self.method])

    @torch.no_grad()  # not inference_mode: its tensors cannot be saved for backward
    def teacher_logits(self, x: Tensor) -> Tensor:
        return self.teacher(x)

    def _teacher_for(self, batch: Batch, split: str) -> Tensor:
        """The teacher's logits for ``batch``: looked up when cached, else computed."""
        if split in self.cached_splits:
            if len(batch) < 3:
                raise ValueError(
                    "cached teacher logits need batches of (inputs, targets, index); serve the "
                    "data through a kdlightning data module"
                )
            looked_up = self.logit_tables[split].lookup(batch[2])
            if self.verify_cached:
                self._verify(looked_up, self.teacher_logits(batch[0]), split)
            return looked_up
        return self.teacher_logits(batch[0])

    def _verify(self, looked_up: Tensor, computed: Tensor, split: str) -> None:
        # The plumbing check behind kd.verify_cached_logits: a misaligned index (shuffling,
        # drop_last, DDP sharding) would pair inputs with another sample's soft targets. Only the
        # stored classes are compared (a top-k table drops the others), within the stored
        # dtype's rounding (float16 keeps 11 significant bits).
        kept = torch.isfinite(looked_up)
        diff = torch.where(kept, looked_up - computed.float(), 0.0).abs().max().item()
        rtol = self.logit_tables[split].rtol
        if diff > rtol * max(1.0, computed.abs().max().item()):
            raise RuntimeError(
                f"cached teacher logits do not match the teacher on this {split} batch (max "
                f"difference {diff:.3g}): the sample index and the stored rows are misaligned"
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    # --- steps ---------------------------------------------------------------------------------
    def _forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor, list, list]:
        # Hooks live for these two forwards only: validation, test and export see plain models.
        m = self.method
        with capture(self.student, m.student_layers) as s_found:
            s_logits = self.student(x)
        with capture(self.teacher, m.teacher_layers) as t_found:
            t_logits = self.teacher_logits(x)
        s_feats = [s_found[p] for p in m.student_layers]
        return s_logits, t_logits, s_feats, [t_found[p] for p in m.teacher_layers]

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        if self.mix != "none":
            return self._mixed_step(x, y)
        if self.method.needs_features:  # never with cached logits (refused in __init__)
            s_logits, t_logits, s_feats, t_feats = self._forward_with_features(x)
        else:
            t_logits = self._teacher_for(batch, "train")
            s_logits, s_feats, t_feats = self.student(x), [], []
        index = batch[2] if len(batch) > 2 else None  # for methods that key state by sample
        out = self.method(s_logits, t_logits, y, s_feats, t_feats, epoch=self.current_epoch,
                          index=index)  # fmt: skip
        self.log_train({"loss": out.loss, **out.terms}, y.shape[0])
        self.train_acc.update(s_logits, y)
        return out.loss

    def _mixed_step(self, x: Tensor, y: Tensor) -> Tensor:
        """Function matching (``mix``): the student and the teacher see the same mixed images;
        the targets are all ``UNLABELED``, so the method's loss is its distillation term alone
        (for KD ``alpha * T^2 KL``; DKD decouples around the teacher's top-1 class)."""
        mixed = mix_batch(x, self.mix, self.mix_alpha, self.mix_generator)
        unlabeled = torch.full_like(y, UNLABELED)
        if self.method.needs_features:
            s_logits, t_logits, s_feats, t_feats = self._forward_with_features(mixed)
        else:
            t_logits = self.teacher_logits(mixed)
            s_logits, s_feats, t_feats = self.student(mixed), [], []
        out = self.method(s_logits, t_logits, unlabeled, s_feats, t_feats,
                          epoch=self.current_epoch, index=None)  # fmt: skip
        self.log_train({"loss": out.loss, **out.terms}, y.shape[0])
        # A mixed image has no label: train/acc is the student's agreement with the teacher.
        self.train_acc.update(s_logits, t_logits.argmax(dim=-1))
        return out.loss

    def epoch_metrics(self, split: str) -> Mapping[str, Metric]:
        return {"acc": self.train_acc} if split == "train" else dict(self.eval_metrics[split])

    def _eval_step(self, batch: Batch, split: str) -> None:
        x, y = batch[0], batch[1]
        t_logits = self._teacher_for(batch, split)
        s_logits = self.student(x)
        m = self.eval_metrics[split]
        m["acc"].update(s_logits, y)
        m["teacher_acc"].update(t_logits, y)
        m["agreement"].update(s_logits, t_logits.argmax(dim=-1))
        n = y.shape[0]
        m["kd_loss"].update(kd_loss(s_logits, t_logits, self.temperature), weight=n)
        m["loss"].update(F.cross_entropy(s_logits.float(), y), weight=n)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")
