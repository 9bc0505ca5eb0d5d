"""Documented commands are tests: every shell command of README.md and docs/*.md that runs the
train, report, export or figures entry points runs here as written, in a copy of the working
tree with the default output folders, or is at least composed.

The commands are read from the pages' code blocks (``docs_commands.py``), so a command added to
the docs is covered without touching this file. Each one either

- **runs**, as written plus only what shortens it: ``debug=fast`` (with ``figures=true`` back
  for the first job of each page, whose figures are then checked: debug=fast turns the figures
  off, a documented command draws them) and, in a sweep, one seed
  and at most two jobs (the first two values of the first other swept key, the first value of
  the rest; a ``+sweep=`` grid likewise, by the command-line list that replaces it);
  placeholders (``<dir>``, ``<date>_<time>_<id>``, ``DIR``, ``RUN_DIR``) become the folder an
  earlier command made; a command repeated on another page runs once;
- or is **composed** (``--cfg job``, the first value of each sweep), when its comment in the
  docs says it cannot run here (:data:`docs_commands.COMPOSE_MARKERS`: GPU, needs the files,
  ...) or when :data:`RUN_ELSEWHERE` names the test that runs it;
- or is a **template** listed in :data:`TEMPLATES` (a part to fill in by hand).

The pages run in two checkouts side by side (one process each, each page's commands in order,
so that a sweep and its report share a checkout). The accounting test needs no process: a
stale entry in the lists below, or a torchrun command neither marked nor listed, fails it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import REPO_ROOT, read_json
from docs_commands import DocCommand, Step, documented_commands
from test_user_commands import DDP_ON_CPU, user_checkout, user_env

#: Runnable on a CPU, but run (with their own shortening) by a test elsewhere in the suite,
#: where their second processes are checked; composed here.
RUN_ELSEWHERE = {
    DDP_ON_CPU: "test_user_commands.py::test_ddp_with_the_progress_bar_on_runs_to_the_end runs "
    "it (debug=fast), the default progress bar on",
    "torchrun --standalone --nproc-per-node 2 -m kdlightning.train trainer=ddp trainer.devices=2 "
    "trainer.accelerator=cpu trainer.precision=32-true hydra.run.dir=logs/distill/runs/torchrun":
    "test_ddp.py::test_torchrun_two_processes_share_the_given_run_dir runs its overrides (with "
    "debug=fast baseline=false, its own log folder, and kd.teacher_logits=cached "
    "kd.verify_cached_logits=true data.num_labeled=60: the cached logits checked under DDP)",
    "python -m kdlightning.train -m hydra/launcher=local kd.temperature=2,4 trainer=ddp "
    "trainer.devices=2 trainer.accelerator=cpu trainer.precision=32-true":
    "test_ddp.py::test_submitit_local_multirun_job_of_two_tasks runs its overrides (one job, "
    "debug=fast baseline=false, its own log folder)",
    "python -m kdlightning.train -m hparams_search=kd_optuna":
    "test_optuna_sweep.py::test_documented_optuna_search_then_its_report runs it (two trials, "
    "debug=fast) and kdl-report on its folder",
}  # fmt: skip
#: Patterns, not commands: a part is to be filled in by hand.
TEMPLATES = {
    "python -m kdlightning.train <the same overrides> resume=true "
    "hydra.run.dir=logs/distill/runs/<date>_<time>_<id>": "the killed job's own overrides; "
    "docs/sweeps_and_wandb.md's concrete resume command runs",
    "python -m kdlightning.train -m <the same sweep> resume=true "
    "hydra.sweep.dir=<the multirun folder>": "the same; docs/sweeps_and_wandb.md's runs",
}  # fmt: skip
#: Pages run in a checkout of their own (the others share one), side by side.
CHECKOUTS = {"docs/sweeps_and_wandb.md": "sweeps"}
TIMEOUT = 540  # under pytest-timeout's 600 s: a hung command is reported with its output


def _sweep_values(arg: str) -> tuple[str, list[str]] | None:
    """``(key, values)`` of a sweep override (``kd.alpha=0.1,0.5``), else None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if "=" not in arg or arg.startswith("-") or "<" in arg:
        return None
    try:
        (override,) = OverridesParser.create().parse_overrides([arg])
    except Exception:  # not an override Hydra parses: left as it is
        return None
    if not override.is_sweep_override() or not override.is_discrete_sweep():
        return None
    return override.get_key_element(), list(override.sweep_string_iterator())


def _config_sweeps(args: list[str], root: Path) -> dict[str, list[str]]:
    """The lists a ``+sweep=NAME`` (conf/sweep/NAME.yaml) sweeps."""
    from omegaconf import OmegaConf

    found: dict[str, list[str]] = {}
    for arg in args:
        if arg.lstrip("+").startswith("sweep="):
            cfg = OmegaConf.load(root / "conf" / "sweep" / f"{arg.split('=', 1)[1]}.yaml")
            for key, value in cfg.hydra.sweeper.params.items():
                parsed = _sweep_values(f"{key}={value}")
                found[key] = parsed[1] if parsed else [str(value)]
    return found


def shortened(cmd: DocCommand, root: Path = REPO_ROOT, figures: bool = True) -> list[str]:
    """The arguments the suite runs ``cmd`` with: as written, plus only what shortens it.

    A sweep keeps one seed, the first two values of the first other key it sweeps and the first
    value of the rest (at most two jobs); a ``+sweep=`` grid is cut the same way, by the
    command-line list that replaces the config's (as docs/sweeps_and_wandb.md says); an Optuna
    search (``hparams_search=``, ``hydra/sweeper=``) runs at most two trials. ``debug=fast``
    turns the figures off; ``figures`` puts them back (``figures=true``), as the command as
    written draws them.
    """
    args = list(cmd.args)
    if cmd.module != "kdlightning.train":
        return args
    if "-m" in args or "--multirun" in args:
        kept_two = False

        def keep(key: str, values: list[str]) -> list[str]:
            nonlocal kept_two
            if key == "seed" or kept_two:
                return values[:1]
            kept_two = True
            return values[:2]

        given = set()
        for i, arg in enumerate(args):
            parsed = _sweep_values(arg)
            if parsed:
                key, values = parsed
                given.add(key)
                if len(kept := keep(key, values)) < len(values):
                    args[i] = f"{arg.split('=', 1)[0]}={','.join(kept)}"
        for key, values in _config_sweeps(args, root).items():
            if key not in given and len(kept := keep(key, values)) < len(values):
                args.append(f"{key}={','.join(kept)}")  # replaces the config's list
        if any(a.startswith(("hparams_search=", "hydra/sweeper=")) for a in args):
            # an Optuna search (conf/hparams_search/): two trials, the second from the cache
            trials = [a for a in args if a.startswith("hydra.sweeper.n_trials=")]
            given = min((int(a.split("=", 1)[1]) for a in trials), default=2)
            args = [a for a in args if a not in trials]
            args.append(f"hydra.sweeper.n_trials={min(given, 2)}")
    if not any(a.startswith("debug=") for a in args):
        args.append("debug=fast")
        if figures and not any(a.lstrip("+").startswith("figures=") for a in args):
            args.append("figures=true")  # debug=fast skips the figures; the command draws them
    return args


def composed(cmd: DocCommand) -> list[str]:
    """The arguments that compose ``cmd``'s (first) job: no ``-m``, each sweep's first value."""
    args = []
    for arg in cmd.args:
        if arg in ("-m", "--multirun"):
            continue
        parsed = _sweep_values(arg)
        args.append(f"{arg.split('=', 1)[0]}={parsed[1][0]}" if parsed else arg)
    return args


def plan(commands: list[DocCommand]) -> tuple[dict[str, list[Step]], dict[str, str]]:
    """The steps of each checkout, and what is not run (where -> why)."""
    checkouts: dict[str, list[Step]] = {}
    not_run: dict[str, str] = {}
    ran: dict[tuple[str, ...], str] = {}
    drawn: set[str] = set()  # pages whose first job draws the figures
    for cmd in commands:
        program = cmd.words[0] if cmd.words[0].startswith("kdl-") else "python -m"
        group = CHECKOUTS.get(cmd.page, "main")
        if cmd.text in TEMPLATES:
            not_run[cmd.where] = f"template: {TEMPLATES[cmd.text]}"
            continue
        if cmd.marker or cmd.text in RUN_ELSEWHERE:
            why = RUN_ELSEWHERE.get(cmd.text) or f"marked '{cmd.marker}' in the docs"
            assert cmd.module == "kdlightning.train", f"{cmd.where}: only kdl-train composes"
            checkouts.setdefault(group, []).append(
                Step(cmd.where, cmd.text, cmd.module, "python -m", composed(cmd), "compose")
            )
            not_run[cmd.where] = f"composed only: {why}"
            continue
        # torchrun's processes are not this runner's: a test of its own runs such a command
        assert cmd.words[0] != "torchrun", f"{cmd.where}: list it in RUN_ELSEWHERE or mark it"
        # Figures for the first job each page runs (checked in _check): drawing them took 2.5 s
        # of a 6 s debug=fast job, for each of ~40 commands, and the same code draws them
        # whatever the command (each figure is tested in tests/unit/report/test_figures.py).
        key = (group, cmd.module, *shortened(cmd, figures=False))
        if cmd.module == "kdlightning.train" and key in ran:
            not_run[cmd.where] = f"the same command as {ran[key]}, which runs"
            continue
        ran[key] = cmd.where
        first = cmd.module == "kdlightning.train" and cmd.page not in drawn
        args = shortened(cmd, figures=first)
        if first:
            drawn.add(cmd.page)
        checkouts.setdefault(group, []).append(
            Step(cmd.where, cmd.text, cmd.module, program, args, "run")
        )
    return checkouts, not_run


def test_every_documented_command_is_accounted_for() -> None:
    """The extraction finds the commands, and the explicit lists name only documented ones."""
    commands = documented_commands(REPO_ROOT)
    texts = {c.text for c in commands}
    assert len(commands) > 40 and {c.page for c in commands} >= {
        "README.md", "docs/sweeps_and_wandb.md", "docs/scaling_out.md", "docs/deploy.md"
    }  # fmt: skip
    for listed in (*RUN_ELSEWHERE, *TEMPLATES):
        assert listed in texts, f"listed in this file but no longer documented: {listed}"
    for cmd in commands:
        unresolved = [a for a in cmd.args if "<" in a and cmd.text not in TEMPLATES]
        for arg in unresolved:  # a placeholder the runner fills needs no space inside
            assert " " not in arg, f"{cmd.where}: {arg}"
    checkouts, not_run = plan(commands)
    planned = {s.where for steps in checkouts.values() for s in steps} | set(not_run)
    assert planned == {c.where for c in commands}
    # a command that can run here must run: what is composed only says why, in the docs or here
    for cmd in commands:
        why = not_run.get(cmd.where, "")
        assert not why.startswith("composed only") or cmd.marker or cmd.text in RUN_ELSEWHERE


def test_shortening_adds_only_what_shortens() -> None:
    cmd = DocCommand("x.md", 1, "", "", ["python", "-m", "kdlightning.train", "-m",
                                          "+sweep=temperature_alpha", "seed=0,1,2",
                                          "teacher.model.channels=[16,32,64]"])  # fmt: skip
    assert shortened(cmd) == [
        "-m", "+sweep=temperature_alpha", "seed=0", "teacher.model.channels=[16,32,64]",
        "kd.temperature=1,2", "kd.alpha=0.1", "debug=fast", "figures=true",
    ]  # fmt: skip
    optuna = DocCommand("x.md", 1, "", "", ["python", "-m", "kdlightning.train", "-m",
                                             "hparams_search=kd_optuna",
                                             "hydra.sweeper.n_trials=30"])  # fmt: skip
    assert shortened(optuna) == [
        "-m", "hparams_search=kd_optuna", "hydra.sweeper.n_trials=2", "debug=fast", "figures=true",
    ]  # fmt: skip
    report = DocCommand("x.md", 1, "", "", ["kdl-report", "DIR", "--by-role"])
    assert shortened(report) == ["DIR", "--by-role"]
    assert composed(
        DocCommand(
            "x.md", 1, "", "", ["torchrun", "-m", "kdlightning.train", "-m", "kd.temperature=2,4"]
        )
    ) == ["kd.temperature=2"]


def _start(root: Path, steps: list[Step], work: Path) -> subprocess.Popen:
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps([asdict(s) for s in steps]))
    script = root / "tests" / "docs_commands.py"
    return subprocess.Popen(
        [sys.executable, str(script), str(plan_file), str(work / "results.json")],
        cwd=root, env=user_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


@pytest.mark.slow
def test_every_documented_command_runs_as_written(tmp_path: Path) -> None:
    checkouts, not_run = plan(documented_commands(REPO_ROOT))
    started = time.perf_counter()
    procs = {}
    for name, steps in checkouts.items():
        root = user_checkout(tmp_path / name)
        work = tmp_path / f"{name}-work"
        work.mkdir()
        procs[name] = (root, work, _start(root, steps, work))
    outputs = {}
    try:
        for name, (_, work, proc) in procs.items():
            left = TIMEOUT - (time.perf_counter() - started)
            try:
                outputs[name] = proc.communicate(timeout=max(left, 1))[0]
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                done = proc.communicate()[0]
                logs = sorted((work / "results-logs").glob("*.log"))
                last = logs[-1].read_text()[-4000:] if logs else ""
                raise AssertionError(
                    f"the {name} runner took over {TIMEOUT} s; done so far:\n{done[-3000:]}\n"
                    f"--- the command it was running ---\n{last}"
                ) from None
    finally:
        for _, _, proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
            else:  # W&B's service and the like: nothing outlives the test
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
    failures = []
    summary = []
    for name, (root, work, proc) in procs.items():
        assert proc.returncode == 0, f"the {name} runner failed:\n{outputs[name][-5000:]}"
        for step in read_json(work / "results.json"):
            log = Path(step["log"]).read_text()
            summary.append(f"{step['rc']} {step['seconds']:5.1f}s {step['mode']:7} "
                           f"{step['where']}: {step['text']}")  # fmt: skip
            if step["rc"] != 0:
                failures.append(f"{step['where']} ({step['mode']}): {step['text']}\n"
                                f"{log[-4000:]}")  # fmt: skip
                continue
            failures.extend(_check(step, root, log))
    print("\n".join(summary), "\n\nnot run:", json.dumps(not_run, indent=1), sep="\n")
    assert not failures, "\n\n".join(failures)


def _check(step: dict, root: Path, log: str) -> list[str]:
    """What a command that exited 0 must also have done."""
    where = f"{step['where']}: {step['text']}"
    if step["mode"] == "compose":
        return [] if "kd:" in log and "data:" in log else [f"{where}: no config printed\n{log}"]
    if step["module"] == "kdlightning.export":
        ok = "written to" in log and "same top-1" in log
        return [] if ok else [f"{where}: no check figures or files printed\n{log[-3000:]}"]
    if step["module"] == "kdlightning.eval":
        ok = "test acc" in log and "results.json test acc" in log
        return [] if ok else [f"{where}: no evaluation row printed\n{log[-3000:]}"]
    if step["module"] != "kdlightning.train":
        return []
    if "export=onnx" in step["argv"] and not ("same top-1" in log and "written to" in log):
        return [f"{where}: export=onnx printed no check figures or files\n{log[-3000:]}"]
    given = [
        a.split("=", 1)[1]
        for a in step["argv"]
        if a.startswith(("hydra.run.dir=", "hydra.sweep.dir="))
    ]
    folders = step["made"] or given  # a resumed run or sweep writes into the folder it names
    if not folders:
        return [f"{where}: made no run folder under logs/\n{log[-3000:]}"]
    problems = []
    for folder in map(root.joinpath, folders):
        jobs = [folder] if (folder / ".hydra").is_dir() else [
            p for p in folder.iterdir() if (p / ".hydra").is_dir()
        ]  # fmt: skip
        for job in jobs:
            if not (job / "results.json").is_file():
                problems.append(f"{where}: {job} has no results.json\n{log[-3000:]}")
                continue
            # a figure that fails is skipped with a warning, never failing the job: look (image
            # classification draws figures, a language model none)
            images = "test/acc" in read_json(job / "results.json").get("teacher", {})
            drew = list((job / "figures").glob("*.png"))
            if "figures=true" in step["argv"] and images and not drew:
                problems.append(f"{where}: {job} drew no figure\n{log[-3000:]}")
    return problems
