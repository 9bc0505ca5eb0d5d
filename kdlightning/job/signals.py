"""SIGTERM and SIGINT end a job with a non-zero status and a ``failed.json`` that names them.

A cluster scheduler pre-empting a job sends SIGTERM. Left to Lightning, it becomes a
``SIGTERMException``, which subclasses ``SystemExit`` with no code: the process would exit
with status **0**, as if it had succeeded. Inside :func:`on_signals` both signals raise
:class:`Interrupted` (exit status 128 + the signal's number, as a shell reports it) wherever
the job is; the checkpoints written so far stay (``resume=true`` continues from them).

    with on_signals(on_stuck=write_failed_json_and_kill_children):
        run(cfg, output_dir)

A Python signal handler runs only between bytecodes of the main thread: while a DDP rank waits
inside a gloo/NCCL collective (a peer died, or hangs), SIGTERM would wait for the collective's
timeout. So the signal is also written to a wakeup file descriptor, which a watchdog thread
reads: if the main thread has not ended ``grace_s`` seconds after the signal, the watchdog calls
``on_stuck`` (write failed.json, kill the children) and ends the process with 128 + signum.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from lightning.pytorch.utilities.exceptions import SIGTERMException

SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: How long the watchdog lets the main thread end by itself after a signal.
GRACE_S = 20.0

log = logging.getLogger(__name__)


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


def _watchdog(
    reader: socket.socket, grace_s: float, on_stuck: Callable[[int], None] | None
) -> None:
    while True:
        try:
            data = reader.recv(16)
        except OSError:
            return
        if not data:  # the block ended: the socket was closed
            return
        hits = [b for b in data if b in {int(s) for s in SIGNALS}]
        if not hits:
            continue
        signum = hits[0]
        # the main thread's handler raises Interrupted if it can; give it time to end cleanly
        reader.settimeout(grace_s)
        try:
            while reader.recv(16):
                pass  # more signals: keep waiting for the same deadline
            return  # closed: the block ended by itself
        except TimeoutError:
            pass
        except OSError:
            return
        log.error(
            "%s received %.0f s ago and the job has not stopped (blocked in a collective?): "
            "ending the process", signal.Signals(signum).name, grace_s,
        )  # fmt: skip
        try:
            if on_stuck is not None:
                on_stuck(signum)
        finally:
            os._exit(128 + signum)


@contextmanager
def on_signals(
    on_stuck: Callable[[int], None] | None = None, grace_s: float = GRACE_S
) -> Iterator[None]:
    """Turn SIGTERM / SIGINT into :class:`Interrupted` while the block runs (main thread); if
    the main thread cannot act on it within ``grace_s`` seconds, ``on_stuck(signum)`` runs in a
    watchdog thread and the process exits with 128 + signum."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        for s in SIGNALS:
            signal.signal(s, handler)
    except ValueError:  # not the main thread (e.g. a notebook's worker): leave signals alone
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    watchdog = threading.Thread(
        target=_watchdog, args=(reader, grace_s, on_stuck), name="kdl-signal-watchdog",
        daemon=True,
    )  # fmt: skip
    watchdog.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        writer.close()  # the watchdog sees the end and returns
        watchdog.join(timeout=1)
        reader.close()
        for s, h in previous.items():
            signal.signal(s, h)
