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
        folder = "kdlightning/"
        for path in re.findall(r"`([^`]+)`", cell):
            # `kdlightning/job/run.py`, `config.py`: later names share the first one's folder
            # hydra_plugins/: the Hydra plugins, outside the package (Hydra's namespace)
            full = path if path.startswith(("kdlightning/", "hydra_plugins/")) else folder + path
            folder = full.rstrip("/").rsplit("/", 1)[0] + "/"
            named.add(full)
    for path in named:
        assert (REPO_ROOT / path).exists(), f"the code map names {path}, which does not exist"
    package = REPO_ROOT / "kdlightning"
    subpackages = [p for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    for sub in subpackages:
        rel = f"kdlightning/{sub.name}/"
        if rel in named:
            continue  # the folder as a whole (data/, models/, ...)
        for py in sub.rglob("*.py"):
            rel_py = py.relative_to(REPO_ROOT).as_posix()
            if py.name not in ("__init__.py", "__main__.py") and rel_py not in named:
                covered = any(rel_py.startswith(n) for n in named if n.endswith("/"))
                assert covered, f"the code map does not mention {rel_py}"
    for py in package.glob("*.py"):
        rel = f"kdlightning/{py.name}"
        if py.name != "__init__.py" and rel not in named:
            pytest.fail(f"the code map does not mention {rel}")
    for plugin in (REPO_ROOT / "hydra_plugins").iterdir():
        if plugin.is_dir() and plugin.name != "__pycache__":
            rel = f"hydra_plugins/{plugin.name}/"
            assert rel in named, f"the code map does not mention {rel}"


def test_the_config_tree_lists_every_option_and_only_existing_ones() -> None:
    """README's config tree: each ``group/`` line names exactly the YAML files of that folder
    (``prefix_*`` stands for several); ``model/`` is no command-line choice, said so."""
    block = README.split("## The config tree", 1)[1].split("```\n", 1)[1].split("```", 1)[0]
    conf = REPO_ROOT / "conf"
    listed_groups = set()
    for line in block.splitlines()[2:]:
        group, _, rest = line.strip().partition(" ")
        assert group.endswith("/"), line
        folder = conf / group.rstrip("/")
        listed_groups.add(group.rstrip("/"))
        stems = {p.stem for p in folder.glob("*.yaml")}
        if rest.strip().startswith("("):
            continue  # conf/local/: the user's own files
        words = re.findall(r"[\w*]+", rest.split("(")[0])
        named = set()
        for word in words:
            matched = {s for s in stems if re.fullmatch(word.replace("*", ".*"), s)}
            assert matched, f"README's config tree names {group}{word}, which does not exist"
            named |= matched
        assert named == stems, f"{group}: the README does not list {sorted(stems - named)}"
    on_disk = {p.relative_to(conf).as_posix() for p in conf.rglob("*") if p.is_dir()}
    assert on_disk <= listed_groups, f"folders the tree leaves out: {on_disk - listed_groups}"
    assert "there is no `model=` choice" in README
