"""kdlightning.job.nvml: torch's NVML probe skipped where the NVIDIA driver is absent."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest
import torch
from conftest import compose

from kdlightning.job import nvml
from kdlightning.job import run as job_run


def _cdll(loads: bool, calls: list[str]):  # type: ignore[no-untyped-def]
    def cdll(name: str) -> object:
        calls.append(name)
        if not loads:
            raise OSError(f"{name}: cannot open shared object file")
        return object()

    return cdll


@pytest.mark.parametrize(("loads", "removed"), [(False, True), (True, False)])
def test_the_variable_goes_only_where_nvml_cannot_load(
    monkeypatch: pytest.MonkeyPatch, loads: bool, removed: bool
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(ctypes, "CDLL", _cdll(loads, calls))
    monkeypatch.setenv(nvml.NVML_ENV, "1")
    assert nvml.skip_nvml_probe_without_driver() is removed
    assert calls == ["libnvidia-ml.so.1"]
    assert (nvml.NVML_ENV in os.environ) is not removed


@pytest.mark.parametrize("value", [None, "0"])
def test_nothing_to_do_when_the_variable_is_not_set(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(ctypes, "CDLL", _cdll(False, calls))
    if value is None:
        monkeypatch.delenv(nvml.NVML_ENV, raising=False)
    else:
        monkeypatch.setenv(nvml.NVML_ENV, value)
    assert nvml.skip_nvml_probe_without_driver() is False
    assert calls == [] and os.environ.get(nvml.NVML_ENV) == value


def test_torch_gives_the_same_answer_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(nvml.NVML_ENV, "1")
    with_probe = (torch.cuda.is_available(), torch.cuda.device_count())
    nvml.skip_nvml_probe_without_driver()
    assert (torch.cuda.is_available(), torch.cuda.device_count()) == with_probe


def test_the_job_skips_the_probe_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(job_run, "skip_nvml_probe_without_driver", lambda: calls.append(1))
    cfg = compose(["task=eval", f"eval.run_dir={tmp_path / 'no-such-run'}"])
    with pytest.raises(Exception, match="no-such-run"):
        job_run.run(cfg, tmp_path / "out")
    assert calls == [1]
