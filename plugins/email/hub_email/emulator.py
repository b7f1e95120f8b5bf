"""The email channel's emulator for ``cxhub demo``: the local mail catcher, seen as a ``hub.ChannelEmulator``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hub_email.catcher import MailCatcher

_SURVEY_LINK = re.compile(r"https?://[^\s\"'<>]+/s/[A-Za-z0-9_-]+")


class MailCatcherEmulator:
    """Catches the demo's mail on a free loopback port and keeps it as a Maildir under the demo's folder."""

    def __init__(self) -> None:
        self.catcher: MailCatcher | None = None

    def start(self, workdir: Path, hub_url: str, instance: str) -> None:
        self.catcher = MailCatcher(directory=workdir / "mail").start()

    def stop(self) -> None:
        if self.catcher is not None:
            self.catcher.stop()

    @property
    def mailbox_dir(self) -> Path | None:
        return self.catcher.directory if self.catcher is not None else None

    def instance_settings(self) -> dict[str, Any]:
        assert self.catcher is not None, "start the emulator first"
        return {
            **self.catcher.channel_settings(),
            "from_address": "feedback@demo.example.com",
            "max_per_second": None,
        }

    def environment(self) -> dict[str, str]:
        return {}

    def links(self) -> dict[str, str]:
        return {"mailbox": "/admin/mailbox"}

    def survey_link(self, recipient: str | None = None) -> str | None:
        """The survey link (without a pre-selected score) of the newest invitation."""
        if self.catcher is None:
            return None
        for mail in reversed(self.catcher.messages):
            if recipient and recipient.lower() not in (r.lower() for r in mail.rcpt_tos):
                continue
            match = _SURVEY_LINK.search(mail.text or mail.html or "")
            if match:
                return match.group(0)
        return None
