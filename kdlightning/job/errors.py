"""A user's mistake is one line; a bug keeps its traceback.

    $ python -m kdlightning.train kd.temperature=abc
    error: kd.temperature='abc' is not a number (its default is 2.0); set kd.temperature=<number>
    $ echo $?
    2

Errors a user causes (a config value, a missing data file, a bad checkpoint, the cache folder,
an export that does not match) print ``error: <what>; <fix>`` on stderr and end the command with
status :data:`USER_ERROR_STATUS` (2, the status of a command-line usage error), without a
traceback. ``HYDRA_FULL_ERROR=1`` (Hydra's own switch) prints the traceback as well; the status
stays 2. Any other exception is a bug: Python prints its whole traceback and the status is 1.

Which exceptions are the user's is listed by name in :data:`USER_ERRORS` (module and class), so
that this module imports nothing heavy: the command answers before torch and Lightning load.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

from kdlightning.files import atomic_write
from kdlightning.job.runfiles import FAILED

#: Exit status of a command that stopped on a user's mistake (a bug exits with 1).
USER_ERROR_STATUS = 2

#: The exception classes a user's input causes, as ``module.QualName`` (subclasses count too).
USER_ERRORS = frozenset(
    {
        "kdlightning.job.errors.ConfigError",  # a config value (kdlightning.job.config)
        "kdlightning.job.cache.CacheError",  # the cache folder: not writable, lock held
        "kdlightning.job.runfiles.RunDirError",  # a folder that is not a finished run
        "kdlightning.models.weights.CheckpointError",  # teacher.checkpoint= that does not fit
        "kdlightning.deploy.export.ExportError",  # an export argument
        "kdlightning.deploy.export.ExportMismatch",  # an exported file that does not match
        "kdlightning.distill.connectors.ShapeMismatch",  # kd.*_layers no connector bridges
        "kdlightning.distill.modules.DivergenceError",  # the loss diverged: the learning rate
        "builtins.FileNotFoundError",  # data files, a checkpoint path
        "builtins.FileExistsError",  # a run directory that holds a run (resume=true)
        "builtins.PermissionError",  # a folder this user may not write (paths.log_dir)
        # the command line itself: an override Hydra cannot parse or apply, an unknown group option
        "hydra.errors.ConfigCompositionException",
        "hydra.errors.MissingConfigException",
        "hydra.errors.OverrideParseException",
    }
)

# Set by kdlightning.job.cli while it forces HYDRA_FULL_ERROR=1 on Hydra (so that exceptions
# reach it): the processes Lightning starts inherit both and know the user did not ask for it.
FORCED_ENV = "KDL_FORCED_FULL_ERROR"


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and the fix."""


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest to ``word`` (difflib), if any is near enough to be a typo of it."""
    found = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=0.6)
    return found[0] if found else None


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def user_error(err: BaseException) -> BaseException | None:
    """The user's mistake that ``err`` is, or wraps (Hydra's ``InstantiationException`` wraps
    what a constructor raised); ``None`` for a bug."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if any(_name(cls) in USER_ERRORS for cls in type(err).__mro__):
            return err
        if _name(type(err)) != "hydra.errors.InstantiationException":
            return None
        err = err.__cause__
    return None


def verbose() -> bool:
    """Whether the user asked for tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(FORCED_ENV) != "1"


def describe(err: BaseException) -> str:
    """``err``'s message on one line (what went wrong and what to do)."""
    cause = err.__cause__
    if _name(type(err)) == "hydra.errors.ConfigCompositionException" and cause is not None:
        unknown = _unknown_key(cause)
        if unknown:
            return unknown
    options = getattr(err, "options", None)
    if _name(type(err)) == "hydra.errors.MissingConfigException" and options:
        return _not_an_option(str(err.missing_cfg_file), [str(o) for o in options])
    text = str(err).strip() or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.strerror}: {err.filename}"  # not "[Errno 2] ..."
        if isinstance(err, PermissionError):  # e.g. a read-only logs/ folder
            text += "; choose a folder this user may write: paths.log_dir=<folder>"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # inner lines lose their closing ";" or "." (the joint is "; "), the last keeps it
    return "; ".join([*(line.rstrip(".;") for line in lines[:-1]), lines[-1]])


def _not_an_option(path: str, options: list[str]) -> str:
    """Hydra's "Could not find 'kd/kdd' ... Available options in 'kd': ... Config search
    path: ..." as the choice, the nearest option and the others."""
    group, _, choice = path.rpartition("/")
    near = closest(choice, options)
    hint = f"did you mean {group}={near}? " if near else ""
    return f"{group}={choice} is not an option ({hint}{group} is one of: {', '.join(options)})"


def _unknown_key(cause: BaseException) -> str | None:
    """Hydra's "Could not override 'kd.temprature'. To append to your config use +kd..." as
    the key that does not exist and the nearest one that does (a ``+`` would add a key that
    nothing reads)."""
    full_key = getattr(cause, "full_key", None)
    parent = getattr(cause, "parent_node", None)
    if not full_key or parent is None or "not in struct" not in str(cause):
        return None
    try:
        keys = [str(k) for k in parent]
    except Exception:
        return None
    where, _, leaf = str(full_key).rpartition(".")
    near = closest(leaf, keys)
    hint = (
        f"did you mean {where + '.' if where else ''}{near}?"
        if near
        else (f"{where or 'the config'} has: {', '.join(sorted(keys))}")
    )
    return f"{full_key} is not a setting ({hint}); fix the name or remove it"


def report(err: BaseException) -> None:
    """Print ``err`` as one ``error:`` line (its traceback first with ``HYDRA_FULL_ERROR=1``)
    and end the process with :data:`USER_ERROR_STATUS`."""
    if verbose():
        traceback.print_exception(err)
    sys.stderr.write(f"error: {describe(err)}\n")
    sys.stderr.flush()
    raise SystemExit(USER_ERROR_STATUS)


def mark_failed(output_dir: Path, err: BaseException, signal_name: str | None = None) -> None:
    """Record why a job stopped (``failed.json``: the error on one line, the signal that ended
    it if any, the traceback), for the sweep report. Light (no torch): the command line writes
    it for a job stopped before it started, the job for one that failed while running."""
    output_dir.mkdir(parents=True, exist_ok=True)
    what = type(err).__name__ + (f": {describe(err)}" if str(err).strip() else "")
    payload = {
        "error": what,
        "signal": signal_name,
        "traceback": "".join(traceback.format_exception(err)),
    }
    atomic_write(output_dir / FAILED, json.dumps(payload, indent=2) + "\n")
