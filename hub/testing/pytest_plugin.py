"""The ``cxhub`` pytest plugin (entry point ``pytest11``), loaded wherever ``cxhub[testing]`` is installed.

pytest loads it in every project of the environment, so it imports nothing of the hub. It lists, at the
end of a run, the shared-suite tests that did not apply to a harness's capabilities and why (pytest alone
only counts skips): a poll-only CRM's report says its webhook tests were left out on purpose. The suites
need no asyncio plugin and no mode (see ``hub.testing.runner``).
"""

from __future__ import annotations

from typing import Any

import pytest

#: the same prefix as ``hub.testing.runner.NOT_APPLICABLE`` (not imported: that would load the hub)
_NOT_APPLICABLE = "not applicable: "


class NotApplicableReport:
    """Collects the suite tests skipped as not applicable and prints them after the run."""

    def __init__(self) -> None:
        self.tests: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
            if reason.startswith(_NOT_APPLICABLE):
                self.tests.append((report.nodeid, reason.removeprefix(_NOT_APPLICABLE)))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.tests:
            return
        terminalreporter.section("cxhub suites: tests not applicable to this plugin")
        for nodeid, reason in self.tests:
            terminalreporter.write_line(f"{nodeid}: {reason}")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(NotApplicableReport(), "cxhub-not-applicable")
