"""Shared helpers: compose the config and run the job in-process; the real CLI in a subprocess.

``run_job`` is the default for end-to-end checks: the job runs in pytest's own process, where
torch, Lightning and Hydra are already imported (a subprocess pays 5-8 s for that alone).
``run_module`` is for what only a separate process can show: DDP re-launches, torchrun,
submitit, real Hydra multiruns, W&B's offline files, and the command line itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this checkout first on the path, no W&B network access."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("HYDRA_FULL_ERROR", "1")
    env.update(extra)
    return env


def run_module(
    module: str,
    *args: str,
    cwd: Path | None = None,
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m module args...`` in a subprocess; on failure the output is in the message.

    The command runs in a session of its own, and on a time-out the whole session is killed:
    DDP children, torchrun workers and submitit tasks must not outlive a hung test.
    """
    cmd = [sys.executable, "-m", module, *args]
    with subprocess.Popen(
        cmd, cwd=cwd or REPO_ROOT, env=env or cli_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    ) as popen:  # fmt: skip
        try:
            stdout, stderr = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            stdout, stderr = popen.communicate()
            raise AssertionError(
                f"python -m {module} {' '.join(args)} timed out after {timeout} s\n"
                f"--- stdout ---\n{stdout[-6000:]}\n--- stderr ---\n{stderr[-6000:]}"
            ) from None
        finally:
            with contextlib.suppress(ProcessLookupError):  # leave nothing behind in the session
                os.killpg(popen.pid, signal.SIGKILL)
    proc = subprocess.CompletedProcess(cmd, popen.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"python -m {module} {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def start_train(*args: str) -> subprocess.Popen[str]:
    """``python -m kdlightning.train args...`` started in a session of its own (the signal tests
    send to it, or to its process group), output merged into ``stdout``."""
    return subprocess.Popen(
        [sys.executable, "-m", "kdlightning.train", *args], cwd=REPO_ROOT, env=cli_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def wait_for_path(path: Path, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    """Wait until ``path`` exists; fail (killing the job's session) if ``proc`` ends first or
    ``timeout`` seconds pass."""
    start = time.monotonic()
    while not path.exists():
        if proc.poll() is not None or time.monotonic() - start > timeout:
            out = proc.communicate()[0] if proc.poll() is not None else ""
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{path} never appeared (exit {proc.poll()}):\n{out[-3000:]}")
        time.sleep(0.2)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


# A few batches per stage: what every end-to-end test runs on top of its own overrides.
FAST = ["debug=fast"]


CONF_DIR = REPO_ROOT / "conf"


#: Composed configs (hydra node included, nothing resolved yet) by their overrides: composing
#: reads every YAML file of the defaults list (0.15-0.3 s), and many tests compose the same
#: overrides. Each call gets a deep copy; a composition that fails is not kept (it fails again).
_COMPOSED: dict[tuple[str, ...], Any] = {}


def compose(overrides: list[str] | None = None, output_dir: Path | None = None):
    """Compose ``conf/train.yaml`` like ``python -m kdlightning.train`` would, in-process.

    Sets Hydra's runtime config so that ``${hydra:runtime.output_dir}`` resolves. The same
    overrides are composed by Hydra once per process; the caller gets a copy of its own
    (``conf/`` does not change while the tests run).
    """
    import copy

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from kdlightning.job.resolvers import register_resolvers

    register_resolvers()  # conf/hydra uses ${kdl.run_id:}; the CLI registers it at import
    key = tuple(overrides or [])
    if key not in _COMPOSED:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            _COMPOSED[key] = hydra_compose("train", overrides=list(key), return_hydra_config=True)
    cfg = copy.deepcopy(_COMPOSED[key])  # unresolved: ${now:} and the run id are the copy's own
    out = str(output_dir or REPO_ROOT / "logs" / "compose-test")
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = out
        cfg.hydra.runtime.cwd = str(REPO_ROOT)
        cfg.hydra.job.num = 0
        cfg.hydra.mode = RunMode.RUN  # a single run, as without -m
    HydraConfig.instance().set_config(cfg)
    # The job itself gets the config without the hydra node, as under @hydra.main.
    OmegaConf.set_readonly(cfg, False)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def config_options(group: str) -> list[str]:
    """Names of the options in a config group folder, e.g. ``config_options('data')``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def run_job(
    tmp_path: Path, *overrides: str, name: str = "job", log_dir: Path | None = None
) -> tuple[dict[str, Any], Path]:
    """Run the main job in this process on ``debug=fast``; returns (results, run directory).

    The run directory is ``tmp_path / name``. ``paths.log_dir`` (hence the teacher/baseline
    cache, ``<log_dir>/cache``) is ``tmp_path`` unless ``log_dir`` names another one: tests
    share a cache only when they ask for it. ``overrides`` come last and win.
    """
    from kdlightning.job import tracking
    from kdlightning.job.run import run

    out = Path(tmp_path) / name
    cfg = compose([*FAST, f"paths.log_dir={log_dir or tmp_path}", *overrides], out)
    with kept_environ():
        try:
            return run(cfg, out), out
        finally:
            tracking.finish()  # as the CLI does: no W&B run may stay open into the next job


def benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as a module, so a test runs its ``main()`` in this
    process (one interpreter start less than ``python benchmarks/<name>.py``)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def kept_environ() -> Iterator[None]:
    """Undo what the code inside does to ``os.environ``.

    Lightning's seed_everything exports PL_GLOBAL_SEED (and W&B may set WANDB_MODE): keep such
    variables from leaking into later tests and into the subprocesses those start.
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def exception_chain(err: BaseException) -> list[BaseException]:
    """``err`` and every exception it was raised from or during (Hydra wraps builder errors)."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Run the slow tests (subprocesses, DDP, notebooks) first, in their files' order.

    Under pytest-xdist (``make test`` runs ``-n auto --dist worksteal``) a long test that starts
    last keeps one core busy while the other has nothing left to do; started first, the short
    ones fill the gaps around it.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept
