"""Statistics over the jobs of a sweep: mean ± std over seeds, the best setting, seed tables.

    from kdlightning.report import aggregate, best_setting, by_role, collect_jobs
    jobs = collect_jobs("logs/distill/multiruns/<date>_<time>_<id>")
    best = best_setting(aggregate(jobs))        # chosen on validation accuracy only
    tables = by_role(jobs)                      # teacher / student alone / distilled per group

Only jobs with status ``ok`` enter any statistic; the others are listed by the report.
Image jobs are ranked by validation accuracy (higher is better), language-model jobs
(``kdlightning.lm``) by validation bits per byte (lower is better); a sweep that holds both
kinds is never ranked as one: :func:`best_by_kind` gives the best of each.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from kdlightning.deploy.compare import ROLES
from kdlightning.report.collect import KINDS, SweepJob, kind_of

# aggregate() column -> (role, results.json key) of the distilled student it averages
STUDENT_COLUMNS = {
    "val_acc": ("distilled", "val/acc"),
    "test_acc": ("distilled", "test/acc"),
    "test_agreement": ("distilled", "test/agreement"),
    # language models (kdlightning.lm): bits per byte, lower is better
    "val_bpb": ("distilled", "val/bpb"),
    "test_bpb": ("distilled", "test/bpb"),
}
# per kind: the aggregate column the best setting is chosen on, and whether higher is better
SELECTION = {"image": ("val_acc", True), "lm": ("val_bpb", False)}


def sweep_kinds(items: Iterable[SweepJob] | Iterable[dict[str, Any]]) -> list[str]:
    """The kinds (``image``, ``lm``) present among jobs or aggregate rows, in KINDS order;
    more than one: a mixed sweep, never ranked as one."""
    found = {kind_of(x) if isinstance(x, SweepJob) else x.get("kind", "image") for x in items}
    return [k for k in KINDS if k in found]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of ``values``."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def status_counts(jobs: Sequence[SweepJob]) -> dict[str, int]:
    """How many jobs have each status, in the order the statuses first appear."""
    statuses = [j.status for j in jobs]
    return {s: statuses.count(s) for s in dict.fromkeys(statuses)}


def _stats(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std, count); NaNs for no value at all."""
    return (*mean_std(values), len(values)) if values else (math.nan, math.nan, 0)


def _axis_key(value: float | None) -> tuple[bool, float]:
    # Sorts None (a job without that axis, e.g. task=classify) after every number.
    return (value is None, 0.0 if value is None else value)


def aggregate(jobs: Iterable[SweepJob]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds of each setting's finished jobs, sorted by setting.

    Each row: ``setting``, ``temperature``, ``alpha``, ``n``, ``seeds``, mean and std of every
    :data:`STUDENT_COLUMNS` (NaN where the kind has no such metric: accuracy for a language
    model, bits per byte for an image job) and ``kind``. Jobs of different kinds never share a
    row.
    """
    groups: dict[tuple[str, str, float, float], list[SweepJob]] = {}
    for job in jobs:
        if job.status == "ok" and job.temperature is not None and job.alpha is not None:
            key = (job.setting, kind_of(job) or "image", job.temperature, job.alpha)
            groups.setdefault(key, []).append(job)
    rows = []
    for (setting, kind, t, a), members in sorted(groups.items()):
        row: dict[str, Any] = {"setting": setting, "temperature": t, "alpha": a}
        row["n"] = len(members)
        row["seeds"] = sorted(j.seed for j in members if j.seed is not None)
        for name, (role, key) in STUDENT_COLUMNS.items():
            values = [v for j in members if (v := j.metric(role, key)) is not None]
            row[f"{name}_mean"], row[f"{name}_std"], _ = _stats(values)
        row["kind"] = kind
        rows.append(row)
    return rows


def best_setting(rows: Sequence[dict[str, Any]], kind: str | None = None) -> dict[str, Any] | None:
    """The aggregate row chosen on **validation**: the highest mean accuracy for image jobs,
    the lowest mean bits per byte for language models.

    ``kind`` (``image`` or ``lm``) chooses among that kind's rows only; by default the rows'
    own kind, and None when they mix kinds (an accuracy and a bits per byte are not ranked
    against each other: see :func:`best_by_kind`). Ties go to the smaller spread over seeds,
    then to the earlier row (lower temperature, then lower alpha). Test metrics never take
    part in the choice.
    """
    if kind is None:
        kinds = sweep_kinds(rows)
        if len(kinds) > 1:
            return None
        kind = kinds[0] if kinds else "image"
    column, higher = SELECTION[kind]
    candidates = [
        r for r in rows if r.get("kind", "image") == kind and not math.isnan(r[f"{column}_mean"])
    ]
    if not candidates:
        return None
    sign = 1.0 if higher else -1.0
    # Rounded: means of the same values summed in another order must still tie.
    return max(
        candidates,
        key=lambda r: (
            round(sign * r[f"{column}_mean"], 9),
            -round(r[f"{column}_std"], 9),
            -rows.index(r),
        ),
    )


def best_by_kind(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """The best setting of each kind present in ``rows`` (:func:`best_setting` per kind)."""
    return {kind: best_setting(rows, kind) for kind in sweep_kinds(rows)}


def reference_accuracy(
    jobs: Iterable[SweepJob], role: str, key: str = "test/acc"
) -> tuple[float, float, int] | None:
    """Mean, std and count over seeds of the teacher's or baseline's (``role``) test accuracy,
    or another metric ``key`` of theirs (``test/bpb`` for language models).

    Jobs of one seed share one cached teacher/baseline, so each seed counts once.
    """
    per_seed: dict[Any, float] = {}
    for job in jobs:
        value = job.metric(role, key)
        if job.status == "ok" and value is not None:
            per_seed.setdefault((job.setting, job.seed), value)
    if not per_seed:
        return None
    mean, std = mean_std(list(per_seed.values()))
    return mean, std, len(per_seed)


def _role_rows(members: Sequence[SweepJob]) -> list[dict[str, Any]]:
    rows = []
    for role, label in ROLES:
        present = [j.metrics[role] for j in members if role in j.metrics]
        if present:
            rows.append(
                {
                    "role": role,
                    "label": label,
                    "test_acc": _stats([m["test/acc"] for m in present if "test/acc" in m]),
                    "val_acc": _stats([m["val/acc"] for m in present if "val/acc" in m]),
                    # language models (kdlightning.lm): bits per byte, lower is better
                    "test_bpb": _stats([m["test/bpb"] for m in present if "test/bpb" in m]),
                    "val_bpb": _stats([m["val/bpb"] for m in present if "val/bpb" in m]),
                    "params": sorted({int(m["params"]) for m in present if "params" in m}),
                }
            )
    return rows


def _paired_gain(members: Sequence[SweepJob]) -> dict[str, float] | None:
    # Both students of one job share its seed (init and data order): a paired difference.
    # Language models: the gain is in test bits per byte, alone − distilled (positive: KD better).
    lm = any(kind_of(job) == "lm" for job in members)
    key, sign, scale = ("test/bpb", -1.0, 1.0) if lm else ("test/acc", 1.0, 100.0)
    gains = []
    for job in members:
        kd, alone = job.metric("distilled", key), job.metric("baseline", key)
        if kd is not None and alone is not None:
            gains.append(sign * scale * (kd - alone))
    if not gains:
        return None
    mean, std, n = _stats(gains)
    return {"mean": mean, "std": std, "n": n, "wins": sum(g > 0 for g in gains), "metric": key}


def by_role(jobs: Iterable[SweepJob]) -> list[dict[str, Any]]:
    """Seed tables: per (setting, temperature, alpha), each role's test and val accuracy
    (mean, std, count over seeds) and parameter counts, and the paired distilled − alone gain.

    ``gain`` is the distilled minus the alone student's test accuracy of each job, in points
    (mean, std, n) with ``wins``, the number of jobs where distillation did better.
    """
    groups: dict[tuple[str, str, float | None, float | None], list[SweepJob]] = {}
    for job in jobs:
        if job.status == "ok":
            key = (job.setting, kind_of(job) or "image", job.temperature, job.alpha)
            groups.setdefault(key, []).append(job)
    tables = []
    order = sorted(groups, key=lambda k: (k[0], k[1], _axis_key(k[2]), _axis_key(k[3])))
    for setting, kind, t, a in order:
        members = sorted(groups[(setting, kind, t, a)], key=lambda j: _axis_key(j.seed))
        tables.append(
            {
                "setting": setting,
                "temperature": t,
                "alpha": a,
                "seeds": [j.seed for j in members],
                "n": len(members),
                "roles": _role_rows(members),
                "gain": _paired_gain(members),
                "kind": kind,
            }
        )
    return tables
