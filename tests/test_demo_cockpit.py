"""``make demo`` (``cxhub demo --auto``) leaves the hub and its cockpit up after the story, prints the cockpit's
link and its two logins, and the dashboard shows the demo's earlier weeks beside the story's answer."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from pathlib import Path

import httpx
from rich.console import Console

from hub import demo
from tests.helpers import csrf_of

LINK = re.compile(
    r"The cockpit: (http://127\.0\.0\.1:\d+)/admin \(sign in as admin / (\S+), or as viewer / (\S+)\)"
)


async def test_the_demo_stays_up_with_its_cockpit_and_prints_how_to_sign_in(tmp_path: Path) -> None:
    config = tmp_path / "demo.toml"
    config.write_text(demo.DEMO_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    out = io.StringIO()
    running = asyncio.create_task(
        demo.run_demo(config, "superoffice", True, Console(file=out, width=300), stay=True)
    )
    try:
        for _ in range(600):
            if "Ctrl-C stops the demo" in out.getvalue() or running.done():
                break
            await asyncio.sleep(0.1)
        printed = out.getvalue()
        assert not running.done(), printed  # still serving after the story
        assert "Written back" in printed, printed
        found = LINK.search(printed.split("5.")[-1])
        assert found is not None, printed
        url, admin_password, viewer_password = found.groups()
        async with httpx.AsyncClient(base_url=url) as client:
            form = await client.get("/admin/login")
            signed = await client.post(
                "/admin/login",
                data={"csrf": csrf_of(form.text), "username": "viewer", "password": viewer_password},
            )
            assert signed.status_code == 303
            page = await client.get("/admin?period=365")
        assert page.status_code == 200
        answers = int(re.search(r'data-figure="answers">([0-9]+)<', page.text).group(1))  # type: ignore[union-attr]
        assert answers > 50  # twelve weeks of earlier answers and the story's
        assert "Quick and friendly help, thank you!" in page.text  # the story's comment among the newest
        assert admin_password != viewer_password
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
