"""The command line as a user meets it (kdlightning.job.cli): a mistake is one line and status 2,
a bug keeps its traceback and status 1, the checks answer before torch loads, a sweep counts its
jobs, routine noise stays out. Run from the root of a copy of the working tree with the default
folders, as in tests/e2e/test_user_commands.py; HYDRA_FULL_ERROR is unset (the suite's cli_env
sets it for everything else)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_module
from test_user_commands import only_child, user_checkout, user_env

ROLES = ("teacher", "baseline", "distilled")  # the job's stages: results.json keys, bar names

pytestmark = pytest.mark.slow

TYPO_LINE = (
    "error: kd.temprature is not a setting (did you mean kd.temperature?); "
    "fix the name or remove it"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return user_checkout(tmp_path_factory.mktemp("cli"))


def env(root: Path, **extra: str) -> dict[str, str]:
    out = user_env(root)
    out.pop("HYDRA_FULL_ERROR", None)
    out.update(extra)
    return out


def train(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return run_module(
        "kdlightning.train", *args, cwd=root, env=env(root, **extra), check=False, timeout=300
    )


def imported(stderr: str) -> set[str]:
    """Module names from ``PYTHONPROFILEIMPORTTIME=1`` lines ('import time: x | y | name')."""
    return {
        line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }  # fmt: skip


@pytest.mark.parametrize("typo", ["kd.temprature=4", "+kd.temprature=4"])
def test_a_typo_is_one_line_with_the_nearest_key_and_status_2(root: Path, typo: str) -> None:
    """Without the +, Hydra refused it and suggested the +; with it, the job trained with T=2
    and exited 0."""
    proc = train(root, typo)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == TYPO_LINE + "\n"
    assert "Training" not in proc.stdout


def test_a_bad_value_is_one_line_before_torch_is_imported(root: Path) -> None:
    proc = train(root, "kd.temperature=abc")
    assert proc.returncode == 2
    line = "error: kd.temperature='abc' is not a number (its default is 2.0); set kd.temperature=<number>"  # noqa: E501
    assert proc.stderr == line + "\n"
    profiled = train(root, "kd.temperature=abc", PYTHONPROFILEIMPORTTIME="1")
    assert profiled.returncode == 2 and profiled.stderr.endswith(line + "\n")
    names = imported(profiled.stderr)
    assert "hydra" in names and "omegaconf" in names  # the profile is read
    assert not {"torch", "lightning"} & names


def test_hydra_full_error_shows_the_traceback_status_stays_2(root: Path) -> None:
    proc = train(root, "kd.temperature=abc", HYDRA_FULL_ERROR="1")
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: kd.temperature='abc' is not a number")


def test_a_bug_keeps_its_traceback_and_status_1(root: Path) -> None:
    code = (
        "import sys\n"
        "import kdlightning.job.cli as cli\n"
        "def broken(cfg, overrides):\n"
        "    raise RuntimeError('a bug in the checks')\n"
        "cli.precheck = broken\n"
        "sys.argv = ['kdl-train']\n"
        "cli.main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env(root), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr
    assert "RuntimeError: a bug in the checks" in proc.stderr
    assert "\nerror: " not in proc.stderr


def test_missing_data_files_stop_the_job_before_the_teacher_trains(tmp_path: Path) -> None:
    root = user_checkout(tmp_path)  # its own logs/: one run folder to read
    proc = train(root, "data=mnist", f"data.data_dir={tmp_path / 'empty'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("error: MNIST idx files not found in ") and "data.download=true" in last
    assert "Traceback" not in proc.stderr
    assert "Training the teacher" not in proc.stdout + proc.stderr
    run = only_child(root / "logs" / "distill" / "runs")  # failed.json for the report
    assert "MNIST idx files not found" in (run / "failed.json").read_text()


def test_tab_completion_imports_neither_torch_nor_lightning(root: Path) -> None:
    """Shell completion runs the command for every TAB (12 s each before)."""
    proc = train(root, "-sc", "query=bash", COMP_LINE="kdl-train kd.temp",
                 PYTHONPROFILEIMPORTTIME="1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["kd.temperature="]
    assert not {"torch", "lightning"} & imported(proc.stderr)


def test_a_sweep_counts_its_jobs_goes_on_after_a_mistake_and_ends_in_one_line(
    tmp_path: Path,
) -> None:
    root = user_checkout(tmp_path)  # its own logs/ and cache: the teacher trains here
    proc = train(root, "-m", "kd.temperature=abc,4", "debug=fast", "figures=false")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    # each job's own settings, as Hydra passes them on (figures=False)
    assert "job 1/2: kd.temperature=abc debug=fast figures=" in proc.stdout
    assert "job 2/2: kd.temperature=4 debug=fast figures=" in proc.stdout
    assert proc.stderr.splitlines()[-1] == (
        "error: kd.temperature='abc' is not a number (its default is 2.0); "
        "set kd.temperature=<number>"
    )
    assert "Traceback" not in proc.stderr
    sweep = only_child(root / "logs" / "distill" / "multiruns")
    # job 0: a trace for the sweep report, and no results
    failed = json.loads((sweep / "0" / "failed.json").read_text())
    assert "kd.temperature='abc' is not a number" in failed["error"], failed
    assert not (sweep / "0" / "results.json").exists()
    # job 1: the table on stdout, results.json and Hydra's record of the job
    assert set(ROLES) <= set(json.loads((sweep / "1" / "results.json").read_text()))
    for label in ("teacher", "student alone", "distilled student", "compression", "speed-up"):
        assert label in proc.stdout
    said = [line.removeprefix("results: ") for line in proc.stdout.splitlines()
            if line.startswith("results: ")]  # fmt: skip
    assert [(root / p).resolve() for p in said] == [(sweep / "1" / "results.json").resolve()]
    assert (sweep / "1" / ".hydra" / "config.yaml").is_file()
    assert not (sweep / "1" / "failed.json").exists()
    # last.ckpt is saved every epoch as a full checkpoint, said explicitly: no Lightning line
    # "`weights_only` was not set, defaulting to `False`." after each epoch
    assert "was not set, defaulting" not in out
    # the progress bar names whole stages; the routine noise is gone
    for stage in ROLES:
        assert f"v_num={stage}" in proc.stdout, proc.stdout[-3000:]
    assert "litlogger" not in out
    assert "No CUDA runtime is found" not in out
    assert "INFO: " not in proc.stderr  # Lightning's lines once, in its own format
