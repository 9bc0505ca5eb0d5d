"""A user's mistake is one line, a bug keeps its traceback (kdlightning.job.errors). The real
command line's exit statuses and output: tests/e2e/test_cli.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CONF_DIR
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException, InstantiationException

from kdlightning.job import errors
from kdlightning.job.cache import CacheError
from kdlightning.job.errors import ConfigError, describe, report, user_error


def test_user_error_names_real_classes() -> None:
    """Every name in USER_ERRORS is a class that exists (a rename must not silently turn a
    user's mistake into a 'bug' with a traceback)."""
    import importlib

    for name in errors.USER_ERRORS:
        module, _, cls = name.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), cls), type), name


@pytest.mark.parametrize(
    "err",
    [
        ConfigError("kd.temperature='abc' is not a number"),
        FileNotFoundError("MNIST idx files not found in data/MNIST/raw"),
        FileExistsError("logs/x already holds a run; pass resume=true"),
        CacheError("cache folder not writable"),
    ],
)
def test_a_users_mistake_is_recognized(err: Exception) -> None:
    assert user_error(err) is err


def test_the_packages_own_user_errors_are_recognized() -> None:
    from kdlightning.deploy.export import ExportError, ExportMismatch
    from kdlightning.job.rundir import RunDirError
    from kdlightning.models.weights import CheckpointError

    for cls in (ExportError, ExportMismatch, RunDirError, CheckpointError):
        assert user_error(cls("x")) is not None, cls


@pytest.mark.parametrize("err", [RuntimeError("x"), ValueError("x"), KeyError("x"), TypeError()])
def test_anything_else_is_a_bug(err: Exception) -> None:
    assert user_error(err) is None


def test_a_mistake_wrapped_by_instantiate_is_found_a_bug_is_not() -> None:
    wrapped = InstantiationException("Error in call to target 'x.DataModule'")
    wrapped.__cause__ = FileNotFoundError("no files in data/")
    assert user_error(wrapped) is wrapped.__cause__
    wrapped.__cause__ = ZeroDivisionError()
    assert user_error(wrapped) is None


def test_describe_is_one_line() -> None:
    assert describe(ConfigError("kd.x is bad.\n  set kd.x=1.\n")) == "kd.x is bad; set kd.x=1."
    err = FileNotFoundError(2, "No such file or directory", "/no/such.ckpt")
    assert describe(err) == "No such file or directory: /no/such.ckpt"  # not "[Errno 2] ..."


def test_hydras_could_not_override_becomes_the_nearest_key_without_a_plus() -> None:
    with (
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
        pytest.raises(ConfigCompositionException) as info,
    ):
        hydra_compose("train", overrides=["kd.temprature=4"])
    assert user_error(info.value) is info.value
    line = describe(info.value)
    assert line == (
        "kd.temprature is not a setting (did you mean kd.temperature?); fix the name or remove it"
    )
    assert "+kd" not in line  # Hydra's own advice would add a key nothing reads


def test_hydras_could_not_find_a_group_option_becomes_the_nearest_option() -> None:
    with (
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
        pytest.raises(ConfigCompositionException) as info,
    ):
        hydra_compose("train", overrides=["kd=dkdd"])
    assert user_error(info.value) is info.value
    line = describe(info.value)
    assert line.startswith("kd=dkdd is not an option (did you mean kd=dkd? kd is one of: at, ")
    assert "search path" not in line


def test_report_prints_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info:
        report(ConfigError("kd.temperature='abc' is not a number; set kd.temperature=<number>"))
    assert info.value.code == errors.USER_ERROR_STATUS == 2
    err = capsys.readouterr().err
    assert err == "error: kd.temperature='abc' is not a number; set kd.temperature=<number>\n"


def test_hydra_full_error_adds_the_traceback_unless_the_cli_forced_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def raised() -> ConfigError:
        try:
            raise ConfigError("bad value; fix it")
        except ConfigError as err:
            return err

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(SystemExit):
        report(raised())
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.endswith("error: bad value; fix it\n")
    monkeypatch.setenv(errors.FORCED_ENV, "1")  # set by kdlightning.job.cli, not by the user
    with pytest.raises(SystemExit):
        report(raised())
    assert capsys.readouterr().err == "error: bad value; fix it\n"


def test_failed_json_of_a_job_stopped_early_reads_like_the_jobs_own(tmp_path: Path) -> None:
    from kdlightning.job import results

    errors.mark_failed(tmp_path / "early", ConfigError("kd.x=1 is bad;\nset kd.x=2"))
    results.mark_failed(tmp_path / "late", ConfigError("kd.x=1 is bad"))
    early = json.loads((tmp_path / "early" / results.FAILED).read_text())
    late = json.loads((tmp_path / "late" / results.FAILED).read_text())
    assert set(early) == set(late)
    assert early["error"] == "ConfigError: kd.x=1 is bad; set kd.x=2" and early["signal"] is None


def test_a_read_only_folder_names_the_folder_and_the_setting() -> None:
    err = PermissionError(13, "Permission denied", "/ro/logs/distill/runs/x")
    assert user_error(err) is err
    line = describe(err)
    assert (
        line.startswith("Permission denied: /ro/logs/distill/runs/x") and "paths.log_dir=" in line
    )
