"""``cxhub new-plugin``: a generated connector and channel pass their own tests (the shared suites) at once.

The packages are generated into a temporary folder and their tests run in a new pytest process with the
package on the path (installed or not, the harness finds the plugin). The fresh-venv pip install of the
generated packages beside the built cxhub wheel is .ci/new-plugin-check (run here under CI=true).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub.scaffold import ScaffoldError, new_plugin

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "name", "tests"), [("connector", "acme_crm", 9), ("channel", "textit", 10)])
def test_generated_plugin_passes_its_tests(kind: str, name: str, tests: int, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "cxhub"), "new-plugin", kind, name, "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / f"cxhub-{name.replace('_', '-')}"
    assert f"created {folder}" in result.stdout
    package = f"hub_{name}"
    expected = {
        "pyproject.toml",
        "README.md",
        ".github/workflows/ci.yml",
        f"{package}/__init__.py",
        f"{package}/config.py",
        f"{package}/{kind}.py",
        f"{package}/emulator.py",
        f"tests/test_{name}_suite.py",
    }
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == expected
    pyproject = (folder / "pyproject.toml").read_text()
    assert f'{name} = "{package}"' in pyproject and '"cxhub>=' in pyproject

    tested = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], folder)
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-2000:]
    assert f"{tests} passed" in tested.stdout.splitlines()[-1]
    # what a partner's CI checks too: lint and strict typing of the generated code
    lint = run([str(BIN / "ruff"), "check", "--no-cache", "--isolated", "--line-length", "110", "."], folder)
    assert lint.returncode == 0, lint.stdout
    typed = run([str(BIN / "mypy"), "--strict", "--no-incremental", package, "tests"], folder)
    assert typed.returncode == 0, typed.stdout


def test_generated_connector_offers_its_emulator_to_the_demo(tmp_path: Path) -> None:
    folder = new_plugin("connector", "acme", tmp_path)
    script = """
from hub.plugins import PluginManager
from hub import ConnectorEmulator
manager = PluginManager()
manager.load(modules=["hub_acme"])
emulator = manager.emulator_types[("connector", "acme")].factory()
assert isinstance(emulator, ConnectorEmulator), emulator
print(sorted(manager.connector_types))
"""
    result = run([sys.executable, "-c", script], folder)
    assert result.returncode == 0, result.stderr
    assert "'acme'" in result.stdout


@pytest.mark.parametrize("name", ["Acme", "1crm", "a", "acme-crm", "acme crm", "x" * 40])
def test_a_name_that_cannot_be_a_plugin_name_is_refused_with_the_rule(name: str, tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="lower-case letters, digits and underscores"):
        new_plugin("connector", name, tmp_path)
    assert not any(tmp_path.iterdir())


def test_an_existing_package_is_never_overwritten(tmp_path: Path) -> None:
    folder = new_plugin("channel", "textit", tmp_path)
    (folder / "README.md").write_text("mine")
    with pytest.raises(ScaffoldError, match="not empty"):
        new_plugin("channel", "textit", tmp_path)
    assert (folder / "README.md").read_text() == "mine"


def test_cli_names_the_problem_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "cxhub"), "new-plugin", "crm", "acme", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert 'unknown kind "crm": use one of connector, channel' in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("CI"),
    reason="builds wheels and installs them into fresh venvs (about 2 minutes): CI only",
)
def test_new_plugin_check_script() -> None:
    """Generated packages installed with plain pip next to the built cxhub wheel pass their tests there."""
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "new-plugin-check")], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert "new-plugin check passed" in result.stdout
