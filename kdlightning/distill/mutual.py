"""Deep mutual learning (``kd=dml``): a cohort of students that teach each other, no teacher.

Zhang, Xiang, Hospedales & Lu (2018), "Deep Mutual Learning", CVPR, arXiv 1706.00384. Student
``i`` of a cohort of ``K`` minimizes its cross-entropy plus the mean KL divergence from each
peer's (detached) prediction to its own (the paper's eq. 10)::

    L_i = CE(s_i, y) + 1/(K-1) * sum_{j != i} T^2 * KL(softmax(s_j / T) || softmax(s_i / T))

From Python::

    import lightning as L
    from kdlightning.distill.mutual import MutualLearningModule
    module = MutualLearningModule([student_a, student_b], temperature=1.0)
    L.Trainer(max_epochs=10).fit(module, datamodule)
    module.students[0]  # the student the job reports and ships

From the command line: ``python -m kdlightning.train kd=dml`` (``conf/kd/dml.yaml`` names
:class:`DML`, which checks ``kd.temperature`` and ``kd.num_students`` and builds the module for the
cohort the job gives it, so the job needs no DML-specific code beyond building the students);
the job's distilled entry is student 0, which starts from the baseline's initial weights. Samples
without a label (target ``UNLABELED``, the transfer set) get the mutual term only: that is how DML
uses unlabeled data. Logged keys: ``train/{loss,ce_loss,dml_loss,acc}``, ``train/loss_<i>``,
``{val,test}/acc`` (student 0), ``{val,test}/acc_<i>`` (the peers), ``{val,test}/agreement``
(student 0's top-1 against student 1's) and ``{val,test}/loss`` (student 0's cross-entropy).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from kdlightning.distill.functional import check_temperature, kd_loss, labeled_ce
from kdlightning.distill.methods.base import ArgumentError, check_temp
from kdlightning.distill.modules import (
    Batch,
    OptimizerFactory,
    SchedulerFactory,
    SupervisedModule,
    infer_num_classes,
)

__all__ = [
    "DML",
    "MutualLearningModule",
    "MutualTerms",
    "check_num_students",
    "mutual_terms",
]

log = logging.getLogger(__name__)


class MutualTerms(NamedTuple):
    """One student's objective and the two terms it is made of (each a scalar tensor)."""

    loss: Tensor
    ce: Tensor
    dml: Tensor


def check_num_students(value: object, key: str = "kd.num_students") -> int:
    """Return ``value`` as an int, or raise ``ValueError`` (naming ``key``) unless it is an
    integer >= 2."""
    try:
        k = int(value)  # type: ignore[call-overload]
        ok = k == float(value) and k >= 2 and not isinstance(value, bool)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ArgumentError(
            key, value,
            "{key}={value}: deep mutual learning needs a cohort of at least 2 students; set "
            "{key}=2 (the paper's setting)",
        )  # fmt: skip
    return k


class DML:
    """Deep mutual learning as a method (``conf/kd/dml.yaml``: ``_target_`` names this class).

    Not a loss on teacher logits like :class:`kdlightning.distill.methods.Method`: a cohort of
    ``num_students`` students teach each other, so the method says how many students it needs
    (``cohort``) and builds the training module for them (:meth:`module`). The constructor checks
    both hyperparameters once (``temperature=0: ...``; the job's builder names them ``kd.*``)::

        method = DML(temperature=1.0, num_students=2, alpha=None)
        module = method.module([student_a, student_b], num_classes=10)
    """

    name = "dml"
    needs_features = False
    #: the job builds ``num_students`` students and no distillation against the teacher
    cohort = True

    def __init__(self, temperature: float, num_students: int, alpha: float | None) -> None:
        self.temperature = check_temp("temperature", temperature)
        self.num_students = check_num_students(num_students, "num_students")
        # alpha exists only to be null: a recipe that sets the KD mix for every method
        # (experiment=cifar100_base) unsets it for DML, and Hydra cannot delete a key in YAML.
        if alpha is not None:
            raise ArgumentError(
                "alpha", alpha,
                "{key}={value}: deep mutual learning has no alpha (the cross-entropy and the "
                "mutual KL weigh the same, conf/kd/dml.yaml says why); remove it or set {key}=null",
            )  # fmt: skip

    def module(
        self,
        students: Sequence[nn.Module],
        num_classes: int | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> MutualLearningModule:
        """The Lightning module that trains ``students`` (``num_students`` of them) together."""
        if len(students) != self.num_students:
            raise ValueError(
                f"DML(num_students={self.num_students}) was given {len(students)} students"
            )
        return MutualLearningModule(students, self.temperature, optimizer, scheduler, num_classes)

    def __repr__(self) -> str:
        return f"DML(temperature={self.temperature:g}, num_students={self.num_students})"


def mutual_terms(
    logits: Sequence[Tensor], targets: Tensor, temperature: float = 1.0
) -> list[MutualTerms]:
    """Each student's DML objective from the cohort's logits on one batch (math only).

    Peers' predictions enter as constants (detached), as in the paper, where each network is
    updated with the others' current predictions as targets. Targets < 0 carry no label: the
    cross-entropy averages over the labeled samples
    (:func:`kdlightning.distill.functional.labeled_ce`), the mutual KL over all of them. The KL
    term is :func:`kdlightning.distill.functional.kd_loss` (T^2-scaled, float32).
    """
    k = len(logits)
    if k < 2:
        raise ValueError(f"mutual learning needs at least 2 students' logits, got {k}")
    t = check_temperature(temperature)
    out = []
    for i, s in enumerate(logits):
        ce = labeled_ce(s, targets)
        dml = sum(kd_loss(s, p.detach(), t) for j, p in enumerate(logits) if j != i) / (k - 1)
        out.append(MutualTerms(loss=ce + dml, ce=ce, dml=dml))  # type: ignore[arg-type]
    return out


class MutualLearningModule(SupervisedModule):
    """Two or more ``students`` trained together by deep mutual learning (no frozen teacher).

    ``students[0]`` is the one the job reports; every student is trained and checkpointed
    (reload with ``MutualLearningModule.load_from_checkpoint(path, students=[...])``).
    ``optimizer`` / ``scheduler`` are factories as for :class:`kdlightning.DistillationModule`.

    One optimizer holds every student's parameters and steps them together. Each student's
    loss sees its peers only through detached predictions, so the gradient of the summed loss
    with respect to student i's weights is exactly the gradient of L_i: for per-parameter
    optimizers (SGD, Adam, AdamW, with weight decay) one step on the sum equals K separate
    optimizers each stepping on its own loss. It differs from the paper's Algorithm 1 in one
    respect only: there, student 2's step uses student 1's prediction *after* student 1's update
    of that same iteration (an alternating, Gauss-Seidel order that costs one more forward of
    student 1 per step); here every student uses the peers' predictions from before the step
    (a simultaneous, Jacobi order, as most re-implementations do). The order matters to
    first order in the learning rate only; the simultaneous step is cheaper, symmetric in the
    students and runs as one DDP all-reduce. (Global-norm gradient clipping would couple the
    students: it clips the cohort's norm, not each student's.)
    """

    def __init__(
        self,
        students: Sequence[nn.Module],
        temperature: float = 1.0,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        num_classes: int | None = None,
    ) -> None:
        students = list(students)
        if len(students) < 2:
            raise ValueError(
                f"MutualLearningModule needs at least 2 students, got {len(students)}; "
                "set kd.num_students=2 or more"
            )
        if len({id(s) for s in students}) != len(students):
            raise ValueError(
                "the students must be distinct modules (the same one was passed twice)"
            )
        super().__init__(num_classes or infer_num_classes(students[0]), optimizer, scheduler)
        self.temperature = check_temperature(temperature)
        self.save_hyperparameters(ignore=["students", "optimizer", "scheduler"])
        self.students = nn.ModuleList(students)
        self.train_acc = self._accuracy()
        self.eval_metrics = nn.ModuleDict({s: self._eval_metrics() for s in ("val", "test")})

    def _eval_metrics(self) -> nn.ModuleDict:
        peers = {f"acc_{i}": self._accuracy() for i in range(1, len(self.students))}
        # agreement: student 0's predictions scored against student 1's
        return nn.ModuleDict(
            {"acc": self._accuracy(), **peers, "agreement": self._accuracy(), "loss": MeanMetric()}
        )

    def trainable_module(self) -> nn.Module:
        return self.students  # every student: one optimizer (see the class docstring)

    def forward(self, x: Tensor) -> Tensor:
        return self.students[0](x)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        logits = [student(x) for student in self.students]
        terms = mutual_terms(logits, y, self.temperature)
        # The cohort's objective is the sum of the students' losses (each student's gradient is
        # its own loss's); the logged terms are sums too, so train/loss = ce_loss + dml_loss.
        loss = sum(t.loss for t in terms)
        logged = {
            "loss": loss,
            "ce_loss": sum(t.ce for t in terms),
            "dml_loss": sum(t.dml for t in terms),
            **{f"loss_{i}": t.loss for i, t in enumerate(terms)},
        }
        self.log_train(logged, y.shape[0])
        self.train_acc.update(logits[0], y)
        return loss  # type: ignore[return-value]

    def epoch_metrics(self, split: str) -> Mapping[str, Metric]:
        return {"acc": self.train_acc} if split == "train" else dict(self.eval_metrics[split])

    def _eval_step(self, batch: Batch, split: str) -> None:
        x, y = batch[0], batch[1]
        logits = [student(x) for student in self.students]
        m = self.eval_metrics[split]
        m["acc"].update(logits[0], y)
        for i in range(1, len(logits)):
            m[f"acc_{i}"].update(logits[i], y)
        m["agreement"].update(logits[0], logits[1].argmax(dim=-1))
        m["loss"].update(F.cross_entropy(logits[0].float(), y), weight=y.shape[0])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")
