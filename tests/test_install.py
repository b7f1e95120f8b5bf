"""A production install: the hub and its plugins run without test or demo dependencies.

An admin installs the wheels with pip and nothing of the dev group; the hub must then load every plugin,
check and serve. Each test runs a fresh interpreter in which the test and demo packages cannot be imported
(as if they were not installed), so an import at module level that needs one of them fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Never needed by a production hub: the dev group's tools, the test kit and every emulator.
TEST_AND_DEMO = [
    "pytest",
    "_pytest",
    "pytest_asyncio",
    "respx",
    "playwright",
    "trustme",
    "aiosmtpd",
    "hub.testing",
    "hub_email.catcher",
    "hub_email.emulator",
    "hub_sms.emulator",
    "hub_sms.twilio_api",
    "hub_superoffice.demo",
    "hub_superoffice.emulator",
    "hub_superoffice.emulation",
    "hub_salesforce.demo",
    "hub_salesforce.emulator",
    "hub_salesforce.emulation",
]

_BLOCKER = """
import importlib.abc, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def run_without(blocked: list[str], code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where the ``blocked`` packages cannot be imported."""
    script = f"BLOCKED = {blocked!r}\n{_BLOCKER}\n{textwrap.dedent(code)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXHUB_")}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_loads_every_plugin_without_test_or_demo_packages(tmp_path: Path) -> None:
    result = run_without(
        TEST_AND_DEMO,
        """
        import sys
        import hub.web, hub.scheduler  # what serve and worker import
        from hub.cli import app
        sys.argv = ["cxhub", "plugins", "-c", "absent.toml"]
        app()
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for plugin in ("superoffice", "salesforce", "email", "sms"):
        assert plugin in result.stdout


def test_emulators_are_still_offered_and_built_on_demand(tmp_path: Path) -> None:
    """Registering an emulator imports nothing of it; asking for one imports it then."""
    result = run_without(
        ["pytest", "_pytest", "respx", "playwright"],
        """
        import sys
        from hub.plugins import PluginManager
        manager = PluginManager()
        manager.load()
        assert not [m for m in sys.modules if m.endswith((".emulator", ".demo", ".catcher"))], sys.modules
        assert ("connector", "superoffice") in manager.emulator_types
        emulator = manager.emulator_types[("connector", "superoffice")].factory()
        print(type(emulator).__name__)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "SuperOfficeDemoEmulator"


def test_demo_names_the_extra_when_an_emulator_needs_a_missing_package(tmp_path: Path) -> None:
    result = run_without(
        ["aiosmtpd"],
        """
        from hub.demo import pick_emulators
        pick_emulators("superoffice")
        """,
        tmp_path,
    )
    assert result.returncode != 0
    assert "aiosmtpd" in result.stderr
    assert "pip install 'cxhub[demo]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("CI"), reason="builds and installs every wheel (about a minute): CI only"
)
def test_install_check_script() -> None:
    """The clean-install check: wheels into a fresh venv, then plugins, check, serve and worker."""
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "install-check")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert "install check passed" in result.stdout
