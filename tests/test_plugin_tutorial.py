"""The tutorial of docs/plugin-authors.md, followed to the end: a wrong code block in the guide fails here.

Each step of the tutorial is a fenced block after a marker comment that says what the block does:

* ``<!-- tutorial: run -->``: shell commands, run in order (``cxhub``, ``pip install -e``, ``pytest``, ``cd``);
* ``<!-- tutorial: write PATH -->``: the whole file PATH;
* ``<!-- tutorial: edit PATH -->``: definitions that replace the ones of the same name in PATH (a class
  shows only the methods it changes), new ones appended, imports added.

The commands run in a fresh venv that sees the development venv's packages (so ``cxhub``, ``pytest`` and
the built-in plugins are the ones under development), with the generated package installed editable by
``uv pip install --no-deps -e`` (its entry point is what ``cxhub demo`` finds it by).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugin-authors.md"
STEP = re.compile(r"<!-- tutorial: (run|write|edit)(?: (\S+))? -->\n```[a-z]*\n(.*?)\n```", re.DOTALL)


@dataclass(frozen=True)
class Step:
    action: str
    path: str
    code: str


def tutorial_steps(markdown: str) -> list[Step]:
    return [Step(action, path or "", code + "\n") for action, path, code in STEP.findall(markdown)]


def _span(node: ast.stmt) -> tuple[int, int]:
    """A definition's lines (0-based, end exclusive), decorators included."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    assert node.end_lineno is not None
    return first - 1, node.end_lineno


def _name(node: ast.stmt) -> str | None:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return node.name
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    return None


def _replace(lines: list[str], body: list[ast.stmt], name: str, new: list[str]) -> bool:
    """Put ``new`` in place of the definition ``name`` among ``body``; False when there is none."""
    for node in body:
        if _name(node) == name:
            start, end = _span(node)
            lines[start:end] = new
            return True
    return False


def apply_edit(source: str, edit: str) -> str:
    """``source`` with the definitions of ``edit`` in place of its own (see the module docstring)."""
    block = edit.splitlines()
    for node in ast.parse(edit).body:
        lines = source.splitlines()
        tree = ast.parse(source)
        start, end = _span(node)
        new = block[start:end]
        if isinstance(node, ast.Import | ast.ImportFrom):
            if ast.unparse(node) not in {ast.unparse(n) for n in tree.body}:
                last = max(_span(n)[1] for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom))
                lines[last:last] = new
        elif isinstance(node, ast.ClassDef):
            for member in node.body:  # one at a time, the file parsed again after each
                name = _name(member)
                assert name is not None, f"class {node.name}: only methods and attributes can be edited"
                target = next(
                    (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == node.name), None
                )
                assert target is not None, (
                    f"the tutorial edits class {node.name}, which the file does not have"
                )
                m_start, m_end = _span(member)
                if not _replace(lines, target.body, name, block[m_start:m_end]):
                    at = _span(target)[1]
                    lines[at:at] = ["", *block[m_start:m_end]]
                tree = ast.parse("\n".join(lines))
        else:
            name = _name(node)
            assert name is not None, f"cannot edit with {ast.unparse(node)[:80]!r}: not a definition"
            if not _replace(lines, tree.body, name, new):
                lines += ["", "", *new]
        source = "\n".join(lines) + "\n"
    return source


def test_an_edit_replaces_definitions_by_name_and_adds_new_ones() -> None:
    method = "    def {}(self) -> int:\n        return {}\n\n"
    source = "import json\n\nLIMIT = 1\n\n\nclass C:\n" + method.format("a", 1) + method.format("b", 2)
    # methods in another order than the file's, a longer one, and a new one
    longer = "    def b(self) -> int:\n        x = 3\n        return x\n\n"
    edit = "import time\n\nLIMIT = 2\n\n\nclass C:\n" + longer + method.format("a", 5) + method.format("c", 4)
    edited = apply_edit(source, edit)
    namespace: dict[str, object] = {}
    exec(compile(edited, "edited", "exec"), namespace)
    obj = namespace["C"]()  # type: ignore[operator]
    assert (namespace["LIMIT"], obj.a(), obj.b(), obj.c()) == (2, 5, 3, 4)
    assert "import time" in edited and edited.count("import json") == 1
    with pytest.raises(AssertionError, match="does not have"):
        apply_edit(source, "class D:\n    x = 1\n")


def test_the_guide_marks_a_whole_tutorial() -> None:
    steps = tutorial_steps(GUIDE.read_text(encoding="utf-8"))
    actions = [s.action for s in steps]
    assert actions[0] == "run" and "cxhub new-plugin connector" in steps[0].code
    assert {"write", "edit"} <= set(actions)
    assert steps[-1].action == "run" and "cxhub demo --crm" in steps[-1].code
    # every marked block is a fenced block right after its marker: none is silently left out
    assert len(steps) == GUIDE.read_text(encoding="utf-8").count("<!-- tutorial:")


class Tutorial:
    """Runs the guide's steps in ``root`` with ``python`` (a venv that sees the development packages)."""

    def __init__(self, root: Path, python: Path) -> None:
        self.root = root
        self.cwd = root
        self.python = python
        self.uv = os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".venv-boot" / "bin" / "uv")
        self.outputs: list[str] = []

    def do(self, step: Step) -> None:
        if step.action == "write":
            target = self.root / step.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.code, encoding="utf-8")
        elif step.action == "edit":
            target = self.root / step.path
            target.write_text(apply_edit(target.read_text(encoding="utf-8"), step.code), encoding="utf-8")
        else:
            for line in step.code.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    self.run(shlex.split(line, comments=True))

    def run(self, words: list[str]) -> None:
        command, args = words[0], words[1:]
        if command == "cd":
            self.cwd = (self.cwd / args[0]).resolve()
            return
        if command == "cxhub":
            argv = [str(self.python), "-m", "hub", *args]
        elif command == "pytest":
            argv = [str(self.python), "-m", "pytest", *args, "-p", "no:cacheprovider"]
        elif words[:3] == ["pip", "install", "-e"]:
            # the packages the extra names are the development venv's already
            argv = [self.uv, "pip", "install", "--python", str(self.python), "--no-deps", "-e", "."]
            assert args[2].startswith("."), f"the tutorial installs {args[2]}, not the package it is in"
        else:
            raise AssertionError(f"the tutorial runs {command!r}, which this test does not know how to run")
        done = subprocess.run(argv, cwd=self.cwd, capture_output=True, text=True, timeout=600)
        output = done.stdout + done.stderr
        self.outputs.append(output)
        assert done.returncode == 0, f"{shlex.join(words)} failed:\n{output[-6000:]}"


def dev_venv(tmp_path: Path) -> Path:
    """A venv of its own (so an install leaves the development venv alone) that sees its packages."""
    uv = os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".venv-boot" / "bin" / "uv")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # addsitedir, not a plain path: the development venv's own .pth files (editable hub, plugins) count too
    development = sysconfig.get_paths()["purelib"]
    (site / "zz_development.pth").write_text(f"import site; site.addsitedir({development!r})\n")
    return venv / "bin" / "python"


@pytest.mark.slow
def test_the_tutorial_builds_a_connector_that_passes_the_suite_and_the_demo(tmp_path: Path) -> None:
    steps = tutorial_steps(GUIDE.read_text(encoding="utf-8"))
    work = tmp_path / "work"
    work.mkdir()
    tutorial = Tutorial(work, dev_venv(tmp_path))
    for number, step in enumerate(steps, 1):
        try:
            tutorial.do(step)
        except (AssertionError, SyntaxError) as exc:
            raise AssertionError(f"step {number} ({step.action} {step.path}): {exc}") from exc
    assert any(re.search(r"^\d+ passed", o, re.MULTILINE) for o in tutorial.outputs), "no test run"
    assert "Written back" in tutorial.outputs[-1], tutorial.outputs[-1][-3000:]
    # the guide's code is held to what a partner's CI checks of the generated package: lint, strict typing
    package = work / "cxhub-acme-helpdesk"
    bin_dir = Path(sys.executable).parent
    ruff = [str(bin_dir / "ruff"), "check", "--no-cache", "--isolated", "--line-length", "110"]
    # where an edit put its imports is this test's doing, not the guide's: sorted first
    subprocess.run([*ruff, "--select", "I", "--fix", "."], cwd=package, capture_output=True, timeout=120)
    for check in (
        [*ruff, "."],
        [str(bin_dir / "mypy"), "--strict", "--no-incremental", "hub_acme_helpdesk", "tests"],
    ):
        done = subprocess.run(check, cwd=package, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-4000:]
