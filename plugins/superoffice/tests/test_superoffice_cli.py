"""`cxhub register-webhook` against the emulator, with a real `cxhub serve` answering SuperOffice's test POST."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from hub_superoffice.emulator import BackgroundServer, SuperOfficeEmulator
from superoffice_support import APP_TOKEN, SYSTEM_USER_TOKEN, WEBHOOK_SECRET
from typer.testing import CliRunner

from hub.cli import app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_register_webhook_through_a_running_hub(
    emulator: SuperOfficeEmulator,
    server: BackgroundServer,
    partner_keys: tuple[str, str],
    tmp_path: Path,
    monkeypatch,
) -> None:
    key_file = tmp_path / "partner.pem"
    key_file.write_text(partner_keys[0])
    port = _free_port()
    config = tmp_path / "cxhub.toml"
    config.write_text(
        f"""
[hub]
public_url = "http://127.0.0.1:{port}"
port = {port}
database_url = "sqlite+aiosqlite:///{tmp_path / "hub.db"}"
plugins = ["superoffice"]

[connectors.so]
plugin = "superoffice"
poll_interval_seconds = 0
base_url = "{server.url}/Cust12345"
webhook_secret = "env:SO_WEBHOOK_SECRET"
auth = {{ type = "system_user", application_token = "env:SO_APP_TOKEN", system_user_token = "env:SO_SYSTEM_USER_TOKEN", private_key = "file:{key_file}", context_identifier = "Cust12345" }}
"""
    )
    env = {
        "SO_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SO_APP_TOKEN": APP_TOKEN,
        "SO_SYSTEM_USER_TOKEN": SYSTEM_USER_TOKEN,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    hub = subprocess.Popen(
        [sys.executable, "-m", "hub", "serve", "--no-scheduler", "-c", str(config)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the hub did not start"
            time.sleep(0.1)
        runner = CliRunner()
        first = runner.invoke(app, ["register-webhook", "so", "-c", str(config)])
        assert first.exit_code == 0, first.output
        assert f"http://127.0.0.1:{port}/hooks/so" in first.output
        again = runner.invoke(app, ["register-webhook", "so", "-c", str(config)])
        assert again.exit_code == 0, again.output
        hooks = emulator.webhooks()
        assert [h["TargetUrl"] for h in hooks] == [f"http://127.0.0.1:{port}/hooks/so"]
        assert hooks[0]["State"] == "Active"
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=20)
