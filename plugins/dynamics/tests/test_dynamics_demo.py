"""``cxhub demo --crm dynamics --auto``: a whole hub against the Dataverse emulator, end to end."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hub.demo import DEMO_CONFIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_demo_resolves_a_case_and_shows_the_answer_in_dynamics(tmp_path: Path) -> None:
    port = _free_port()
    base = DEMO_CONFIG.read_text(encoding="utf-8")
    database = tmp_path / "var" / "cxhub.db"
    base = re.sub(r"(?m)^port = .*$", f"port = {port}", base)
    base = re.sub(r"(?m)^public_url = .*$", f'public_url = "http://127.0.0.1:{port}"', base)
    base = re.sub(r"(?m)^database_url = .*$", f'database_url = "sqlite+aiosqlite:///{database}"', base)
    config = tmp_path / "demo.toml"
    config.write_text(base, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "hub", "demo", "--crm", "dynamics", "--auto", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "service endpoint posted to the hub" in done.stdout
    assert "cxhub_lastscore" in done.stdout and "cxhub_feedbackscore" in done.stdout
    assert "survey responses (the contact's timeline)" in done.stdout
