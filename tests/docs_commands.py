"""The shell commands of README.md and docs/*.md, read from their code blocks, and a runner that
executes them in a copy of the working tree (see test_docs_commands.py).

A documented command is a line of a ``bash``/``sh``/unlabelled code block (``\\`` continuations
joined) that runs ``python -m kdlightning.{train,report,export,figures,eval}``,
``kdl-train``, ``kdl-report``, ``kdl-export``, ``kdl-eval``, or ``torchrun ... -m
kdlightning.train``. Its trailing comment may say why it cannot run here
(:data:`COMPOSE_MARKERS`: ``# ... GPU``, ``# needs the files``, ...): such a command is only
composed (``--cfg job``).

Run as a script (``python tests/docs_commands.py PLAN.json RESULTS.json``, in the checkout's
root), it executes the plan's commands one after the other in this one process, each through
the entry point its console script or ``python -m`` would call, with ``sys.argv`` as the
command gives it; output goes to one log file per command. Placeholders (``<dir>``,
``<date>_<time>_<id>``, ``DIR``, ``RUN_DIR``, ...) become the folder an earlier command made:
the newest under the path written before the placeholder, else the newest multirun folder (for
``kdl-report``) or run folder (for the others).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

PAGES_GLOB = ("README.md", "docs/*.md")
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
MODULES = (
    "kdlightning.train", "kdlightning.report", "kdlightning.export", "kdlightning.figures",
    "kdlightning.eval",
)  # fmt: skip
#: console scripts (pyproject.toml's [project.scripts]) and the module whose main() they call
CONSOLE_SCRIPTS = {
    "kdl-train": "kdlightning.train",
    "kdl-report": "kdlightning.report",
    "kdl-export": "kdlightning.export",
    "kdl-eval": "kdlightning.eval",
}
#: Words in a command's trailing comment that say it cannot run on this machine: the suite
#: composes it (``--cfg job``) instead of running it.
COMPOSE_MARKERS = ("GPU", "needs the files", "needs the network", "SLURM", "several nodes")
#: Placeholders a reader replaces by a folder an earlier command made.
PLACEHOLDER = re.compile(r"<[^<>]+>")
BARE_PLACEHOLDERS = {"DIR", "RUN_DIR", "DIR1", "DIR2"}


@dataclass
class DocCommand:
    """One documented command: where it is, its text as written and its words."""

    page: str  # relative to the repository root
    line: int  # 1-based line of its first line
    text: str  # as written, continuations joined, without the comment
    comment: str  # the trailing comment, "" if none
    words: list[str] = field(default_factory=list)  # shlex-split text

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def module(self) -> str:
        """The kdlightning module that runs it (``kdlightning.train``, ...)."""
        w = self.words
        if w[0] in CONSOLE_SCRIPTS:
            return CONSOLE_SCRIPTS[w[0]]
        return w[w.index("-m") + 1]

    @property
    def args(self) -> list[str]:
        """The words after the program (``kdl-x`` or ``python -m kdlightning.x``)."""
        w = self.words
        if w[0] in CONSOLE_SCRIPTS:
            return w[1:]
        return w[w.index("-m") + 2 :]

    @property
    def marker(self) -> str:
        """What the comment says keeps the command from running here ("" if nothing)."""
        return ", ".join(m for m in COMPOSE_MARKERS if m in self.comment)

    @property
    def is_template(self) -> bool:
        """A pattern with a part to fill in by hand (``<the same overrides>``)."""
        return any(" " in p for p in PLACEHOLDER.findall(self.text))


def _is_command(words: list[str]) -> bool:
    if not words:
        return False
    if words[0] in CONSOLE_SCRIPTS:
        return True
    if words[0] in ("python", "python3", "torchrun") and "-m" in words:
        i = words.index("-m")
        return i + 1 < len(words) and words[i + 1] in MODULES
    return False


def _split_comment(line: str) -> tuple[str, str]:
    # a `#` that starts a word begins the comment (no documented command quotes a `#`)
    match = re.search(r"(^|\s)#\s?(.*)$", line)
    if not match:
        return line.rstrip(), ""
    return line[: match.start()].rstrip(), match.group(2).strip()


def documented_commands(root: Path) -> list[DocCommand]:
    """Every documented command of README.md and docs/*.md, in page order."""
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    found: list[DocCommand] = []
    for page in pages:
        lines = page.read_text().splitlines()
        in_block, lang, i = False, "", 0
        while i < len(lines):
            line = lines[i]
            fence = re.match(r"^\s*```(\S*)", line)
            if fence:
                in_block, lang = (not in_block), fence.group(1).lower()
                i += 1
                continue
            if not in_block or lang not in SHELL_LANGS:
                i += 1
                continue
            start, text = i, line
            while text.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text.rstrip()[:-1].rstrip() + " " + lines[i].strip()
            i += 1
            body, comment = _split_comment(text.strip())
            if not body:
                continue
            words = shlex.split(body)
            if _is_command(words):
                rel = page.relative_to(root).as_posix()
                found.append(DocCommand(rel, start + 1, body, comment, words))
    return found


# --- the runner (in the checkout's own process) --------------------------------------------------
def _folders(root: Path) -> dict[str, tuple[str, float]]:
    """Run folders (``.hydra/`` inside, not a multirun's job) and multirun folders
    (``multirun.yaml``) under ``logs/``: path relative to root -> (kind, creation time)."""
    out: dict[str, tuple[str, float]] = {}
    logs = root / "logs"
    if not logs.is_dir():
        return out
    sweeps = {p.parent for p in logs.rglob("multirun.yaml")}
    for sweep in sweeps:
        out[sweep.relative_to(root).as_posix()] = ("multirun", sweep.stat().st_mtime)
    for hydra_dir in logs.rglob(".hydra"):
        run = hydra_dir.parent
        if run.parent in sweeps or (run.parent.parent in sweeps):
            continue  # a multirun's job
        out[run.relative_to(root).as_posix()] = ("run", hydra_dir.stat().st_mtime)
    return out


def resolve(
    args: list[str], module: str, made: list[tuple[str, str]], default: str | None = None
) -> list[str]:
    """``args`` with each placeholder replaced by a folder an earlier command made (``made``:
    (path, kind) in creation order); by ``default`` where none was made (else LookupError)."""
    kind = "multirun" if module == "kdlightning.report" else "run"
    of_kind = [p for p, k in made if k == kind]
    out = []
    for arg in args:
        if arg in BARE_PLACEHOLDERS:
            if arg in ("DIR1", "DIR2"):
                pair = [p for p, k in made if k == "multirun"][-2:]
                if len(pair) < 2:
                    raise LookupError(f"{arg}: fewer than two multirun folders were made before")
                out.append(pair[0] if arg == "DIR1" else pair[1])
            else:
                if not of_kind:
                    raise LookupError(f"{arg}: no {kind} folder was made before")
                out.append(of_kind[-1])
            continue
        match = PLACEHOLDER.search(arg)
        if not match:
            out.append(arg)
            continue
        key, _, value = arg.partition("=") if "=" in arg.split("/")[0] else ("", "", arg)
        start = PLACEHOLDER.search(value)
        assert start is not None
        prefix = value[: start.start()]
        tail = PLACEHOLDER.sub("\0", value[start.start() :])  # the text after the last one
        suffix = tail[tail.rfind("\0") + 1 :]
        candidates = [p for p, _ in made if p.startswith(prefix)] if prefix else of_kind
        if not candidates and default is not None:
            candidates = [prefix + default]
        if not candidates:
            raise LookupError(f"{arg}: no folder under {prefix or '.'!r} was made before")
        folder = candidates[-1]
        out.append(f"{key}={folder}{suffix}" if key else f"{folder}{suffix}")
    return out


@dataclass
class Step:
    """What the runner does with one documented command."""

    where: str
    text: str
    module: str
    program: str  # "python -m" or the console script's name
    args: list[str]  # as the runner passes them (shortened, placeholders still in)
    mode: str  # "run" or "compose"
    # filled in by the runner
    argv: list[str] = field(default_factory=list)
    rc: int | None = None
    seconds: float = 0.0
    made: list[str] = field(default_factory=list)
    log: str = ""
    error: str = ""


def console_script(name: str, root: Path) -> tuple[str, str]:
    """``(module, function)`` that pyproject.toml's ``[project.scripts]`` names for ``name``."""
    import tomllib

    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts[name].partition(":")
    return module, function


def _invoke(step: Step) -> int:
    import runpy
    from importlib import import_module

    if step.program == "python -m":
        sys.argv = [step.module, *step.argv]
        runpy.run_module(step.module, run_name="__main__", alter_sys=True)
        return 0
    # as the installed console script does: sys.exit(<module>.<function>())
    module, function = console_script(step.program, Path.cwd())
    sys.argv = [step.program, *step.argv]
    return getattr(import_module(module), function)()


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def run_steps(steps: list[Step], root: Path, logs: Path) -> list[Step]:
    """Run the steps in order in this process (cwd: ``root``), one log file each."""
    import logging

    os.chdir(root)
    environ = dict(os.environ)
    made: list[tuple[str, str]] = []
    for n, step in enumerate(steps):
        before = _folders(root)
        log_path = logs / f"{n:02d}.log"
        step.log = str(log_path)
        t0 = time.perf_counter()
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        with open(log_path, "w") as log_file:
            os.dup2(log_file.fileno(), 1)
            os.dup2(log_file.fileno(), 2)
            try:
                if step.mode == "compose":  # a folder no command here made: any name composes
                    step.argv = [*resolve(step.args, step.module, made, "PLACEHOLDER"), "--cfg",
                                 "job"]  # fmt: skip
                else:
                    step.argv = resolve(step.args, step.module, made)
                print(f"$ {step.program} {step.module} {shlex.join(step.argv)}", flush=True)
                step.rc = _exit_code(_invoke(step))
            except SystemExit as err:
                step.rc = _exit_code(err.code)
            except BaseException as err:  # a bug: its traceback goes to the log
                traceback.print_exc()
                step.rc, step.error = 1, f"{type(err).__name__}: {err}"
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
        step.seconds = time.perf_counter() - t0
        after = _folders(root)
        new = sorted((p for p in after if p not in before), key=lambda p: after[p][1])
        step.made = new
        made.extend((p, after[p][0]) for p in new)
        # what one command leaves behind must not reach the next: Hydra's global state, the
        # handlers its logging set up, the environment (seeds, W&B), the working directory
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        root_logger = logging.getLogger()
        for handler in list(root_logger.handlers):
            root_logger.removeHandler(handler)
            handler.close()
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(root)
        print(f"{step.where}: rc={step.rc} {step.seconds:.1f}s {step.text}", flush=True)
    return steps


def main(argv: list[str]) -> int:
    plan_path, results_path = Path(argv[0]), Path(argv[1])
    steps = [Step(**s) for s in json.loads(plan_path.read_text())]
    logs = results_path.parent / (results_path.stem + "-logs")
    logs.mkdir(parents=True, exist_ok=True)
    done = run_steps(steps, Path.cwd(), logs)
    results_path.write_text(json.dumps([asdict(s) for s in done], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
