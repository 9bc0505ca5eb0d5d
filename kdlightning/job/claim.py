"""One job per run folder: claimed before anything is written into it, never overwritten, and a
resumed run keeps the settings it started with.

    claim_run_dir(out, resume)     # RunRefused: in use by another job, or holds a finished run
    check_resume_config(out, cfg)  # RunRefused naming the keys that differ from its config.yaml
    release_run_dir(out)

Light on purpose (no torch): the command line claims a ``hydra.run.dir=`` folder before Hydra
writes its ``.hydra/`` files there (:mod:`kdlightning.job.cli`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from kdlightning.job.runfiles import CONFIG, RESULTS, read_yaml


def earlier_work(output_dir: Path) -> list[str]:
    """Files of an earlier run in ``output_dir`` that a new run would overwrite."""
    found = [RESULTS] if (output_dir / RESULTS).is_file() else []
    found += sorted(
        str(p.relative_to(output_dir))
        for pattern in ("*/result", "*/checkpoints/*.ckpt")
        for p in output_dir.glob(pattern)
    )
    return found


LOCK_FILE = ".kdl-run.lock"
# The run folders this process holds, with their locks (a second lock on the same file from this
# process would wait for the first: fcntl locks belong to open file descriptions).
_HELD: dict[str, FileLock] = {}


class RunRefused(FileExistsError):
    """A job refused before it wrote anything into a run folder: the folder is in use by another
    job, or holds a run that this one would overwrite. Nothing of that folder was changed (no
    failed.json either)."""


def claim_run_dir(output_dir: Path, resume: bool) -> None:
    """Claim ``output_dir`` for this process until :func:`release_run_dir`: refused (with
    :class:`RunRefused`) while another job holds it, and when it already holds a run and
    ``resume`` is false. The claim is a lock file that the operating system releases when the
    process dies, so a killed job never leaves its folder locked."""
    key = str(output_dir.resolve())
    if key in _HELD:
        return
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(output_dir / LOCK_FILE), timeout=0)
        lock.acquire()
    except PermissionError as err:
        raise PermissionError(
            f"cannot write into {output_dir} ({err.strerror}): choose a folder this user may "
            "write, e.g. paths.log_dir=<folder> (or hydra.run.dir=<folder>)"
        ) from None
    except Timeout:
        raise RunRefused(
            f"{output_dir} is in use by another job right now; wait for it to end, or choose "
            "another hydra.run.dir (nothing was written there)"
        ) from None
    earlier = earlier_work(output_dir)
    if earlier and not resume:
        lock.release()
        raise RunRefused(
            f"{output_dir} already holds a run ({', '.join(earlier[:4])}); pass resume=true to "
            "continue it, or choose another hydra.run.dir (nothing was overwritten)"
        )
    _HELD[key] = lock


def release_run_dir(output_dir: Path) -> None:
    """Give up the claim of :func:`claim_run_dir` (no-op when this process holds none)."""
    lock = _HELD.pop(str(output_dir.resolve()), None)
    if lock is not None:
        lock.release()


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): tree}


#: Keys a resumed job may change: the switch itself, and how the job shows its progress.
# eval.*: read by task=eval only (and absent from the config.yaml of runs before it)
RESUME_MAY_CHANGE = (
    "resume", "trainer.enable_progress_bar", "callbacks.progress_bar", "eval.",
)  # fmt: skip


def check_resume_config(output_dir: Path, cfg: Any) -> None:
    """A resumed job must run with the config the run started with (its ``config.yaml``), else
    its results would mix two settings (epochs 1-16 at T=2, the rest at T=8, reported as T=8).
    Raises :class:`RunRefused` naming the keys that differ."""
    path = output_dir / CONFIG
    if not path.is_file():
        return  # interrupted before it wrote its config: nothing ran yet
    before = _flat(OmegaConf.to_container(read_yaml(path), resolve=True))
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    differ = sorted(
        k for k in set(before) | set(now)
        if before.get(k) != now.get(k) and not k.startswith(RESUME_MAY_CHANGE)
    )  # fmt: skip
    if differ:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in differ[:5])
        raise RunRefused(
            f"resume=true with a config that differs from the run's in {output_dir} ({shown}"
            f"{', ...' if len(differ) > 5 else ''}); resume with the run's own settings (its "
            "config.yaml), or start a new run in another folder"
        )


def explicit_run_dir(argv: Sequence[str]) -> tuple[Path | None, bool]:
    """``(hydra.run.dir, resume)`` as given on a single run's command line; ``(None, ...)`` for a
    multirun or when no folder is named (Hydra's default folder is new: nothing to guard)."""
    if any(a in ("-m", "--multirun") for a in argv):
        return None, False
    run_dir, resume = None, False
    for arg in argv:
        key, _, value = arg.partition("=")
        key, value = key.lstrip("+~"), value.strip().strip("'\"")
        if key == "hydra.run.dir" and value and "${" not in value:
            run_dir = Path(value).expanduser()
        elif key == "resume":
            resume = value.lower() in ("true", "1", "yes")
    return run_dir, resume


def claim_explicit_run_dir(entry: Callable[..., Any]) -> Callable[..., Any]:
    """Claim a ``hydra.run.dir=`` folder before Hydra writes its ``.hydra/`` files into it.

    Hydra saves the job's config and overrides into the run folder before the job starts: a
    re-run refused there would already have replaced a finished run's ``.hydra/`` files (which
    kdl-report and resume read). The claim (:func:`claim_run_dir`) is
    taken here, from the command line, and held for the job; a refusal is one line, exit 2.
    """

    @functools.wraps(entry)
    def main(cfg: DictConfig | None = None) -> Any:
        if cfg is None and "LOCAL_RANK" not in os.environ and os.environ.get("RANK", "0") == "0":
            run_dir, resume = explicit_run_dir(sys.argv[1:])
            if run_dir is not None:
                try:
                    claim_run_dir(run_dir, resume)
                except (RunRefused, PermissionError) as err:
                    print(f"error: {err}", file=sys.stderr)
                    raise SystemExit(2) from None
        return entry(cfg)

    return main
