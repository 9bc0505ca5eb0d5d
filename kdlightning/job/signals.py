"""SIGTERM and SIGINT end a job with a non-zero status and a ``failed.json`` that names them.

A cluster scheduler pre-empting a job sends SIGTERM. Left to Lightning, it becomes a
``SIGTERMException``, which subclasses ``SystemExit`` with no code: the process would exit
with status **0**, as if it had succeeded. Inside :func:`on_signals` both signals raise
:class:`Interrupted` (exit status 128 + the signal's number, as a shell reports it) wherever
the job is; the checkpoints written so far stay (``resume=true`` continues from them).

    with on_signals():
        run(cfg, output_dir)
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from lightning.pytorch.utilities.exceptions import SIGTERMException

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(SystemExit):
    """The job received ``signal_name``; exits with status ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(128 + signum)

    def __str__(self) -> str:
        return f"received {self.signal_name}: the job was stopped before it finished"


def signal_of(err: BaseException) -> str | None:
    """The signal that ended the job, if ``err`` says one did."""
    if isinstance(err, Interrupted):
        return err.signal_name
    if isinstance(err, SIGTERMException):  # raised by Lightning's own handler
        return "SIGTERM"
    if isinstance(err, KeyboardInterrupt):
        return "SIGINT"
    return None


@contextmanager
def on_signals() -> Iterator[None]:
    """Turn SIGTERM / SIGINT into :class:`Interrupted` while the block runs (main thread)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        for s in SIGNALS:
            signal.signal(s, handler)
    except ValueError:  # not the main thread (e.g. a notebook's worker): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
