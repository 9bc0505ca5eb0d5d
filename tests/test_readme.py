"""The README stays true: its Python example runs as written, its code map names real files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_the_python_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = README.split("**From Python**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)  # Lightning writes its default checkpoints into the cwd
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    dm, student = scope["dm"], scope["student"]
    assert dm.train_mode == "transfer" and len(dm.labeled_positions()) == 100
    assert not any(p.requires_grad for p in scope["teacher"].parameters())
    assert student is scope["module"].student


def test_the_code_map_names_every_module_and_only_existing_ones() -> None:
    section = README.split("## Code map", 1)[1].split("\n## ", 1)[0]
    named = set()
    for cell in re.findall(r"^\| (.+?) \|", section, flags=re.M):
        for path in re.findall(r"`([^`]+)`", cell):
            folder = "kdlightning/" if not path.startswith("kdlightning/") else ""
            named.add(folder + path)
    for path in named:
        assert (REPO_ROOT / path).exists(), f"the code map names {path}, which does not exist"
    package = REPO_ROOT / "kdlightning"
    for py in package.glob("*.py"):
        rel = f"kdlightning/{py.name}"
        if py.name not in ("__init__.py",) and rel not in named:
            pytest.fail(f"the code map does not mention {rel}")
    for sub in (p for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        assert f"kdlightning/{sub.name}/" in named, f"the code map lacks kdlightning/{sub.name}/"
