"""The compatibility promise, checked: the public plugin API is snapshotted, and a change to it fails CI
until it is recorded in CHANGELOG.md under the hub's version.

The plugin API is ``hub.__all__`` (with each name's signature, fields or methods), the hook specs and the
test kit (``hub.testing.__all__``). After recording a change in CHANGELOG.md (a ``## <version>`` section
with a ``### Plugin API`` part), refresh the snapshot with:

    python -m tests.test_partner_kit_api --update
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "plugin-api.txt"
CHANGELOG = ROOT / "CHANGELOG.md"


def _describe(name: str, value: Any) -> list[str]:
    if inspect.isclass(value):
        lines = [f"class {name}({', '.join(b.__name__ for b in value.__bases__)})"]
        fields = getattr(value, "model_fields", None)
        if fields is not None:
            lines += [
                f"  {f}: {info.annotation!r} = {'required' if info.is_required() else 'default'}"
                for f, info in fields.items()
            ]
        elif dataclasses.is_dataclass(value):
            lines += [f"  {f.name}: {f.type}" for f in dataclasses.fields(value)]
        for attr, member in sorted(vars(value).items()):
            if attr.startswith("_") and attr != "__init__":
                continue
            if inspect.isfunction(member) or isinstance(member, classmethod | staticmethod):
                function = member.__func__ if isinstance(member, classmethod | staticmethod) else member
                lines.append(f"  def {attr}{inspect.signature(function)}")
        for attr, annotation in getattr(value, "__annotations__", {}).items():
            if fields is None and not dataclasses.is_dataclass(value):
                lines.append(f"  {attr}: {annotation}")
        return lines
    if callable(value) and not hasattr(value, "project_name"):
        try:
            return [f"def {name}{inspect.signature(value)}"]
        except (TypeError, ValueError):
            return [f"{name}: {value!r}"]
    return [f"{name}: {type(value).__name__}"]


def plugin_api() -> str:
    """The plugin API as text: one block per public name, the hook specs, the test kit."""
    import hub
    import hub.hookspecs
    import hub.testing

    lines = ["# hub.__all__"]
    for name in sorted(hub.__all__):
        lines += (
            ["hookimpl: pluggy.HookimplMarker('cxhub')"]
            if name == "hookimpl"
            else (["__version__: str"] if name == "__version__" else _describe(name, getattr(hub, name)))
        )
    lines.append("# hooks")
    for name, value in sorted(vars(hub.hookspecs).items()):
        if name.startswith("hub_") and inspect.isfunction(value):
            lines.append(f"def {name}{inspect.signature(value)}")
    lines.append("# hub.testing.__all__")
    for name in sorted(hub.testing.__all__):
        lines += _describe(name, getattr(hub.testing, name))
    return "\n".join(lines) + "\n"


def _recorded_version() -> str:
    match = re.match(r"# plugin API of cxhub (\S+)\n", SNAPSHOT.read_text(encoding="utf-8"))
    assert match, f"{SNAPSHOT} lacks its version line"
    return match.group(1)


def _changelog_records(version: str) -> bool:
    text = CHANGELOG.read_text(encoding="utf-8")
    section = re.search(rf"^## {re.escape(version)}\b.*?(?=^## |\Z)", text, re.M | re.S)
    return section is not None and "### Plugin API" in section.group(0)


def test_plugin_api_matches_its_snapshot() -> None:
    recorded = SNAPSHOT.read_text(encoding="utf-8").split("\n", 1)[1]
    current = plugin_api()
    diff = "".join(
        difflib.unified_diff(recorded.splitlines(True), current.splitlines(True), "snapshot", "now")
    )
    assert not diff, (
        "the public plugin API changed. Record the change in CHANGELOG.md (## <version>, ### Plugin API), "
        "then run: python -m tests.test_partner_kit_api --update\n" + diff
    )


def test_snapshot_version_is_recorded_in_the_changelog() -> None:
    version = _recorded_version()
    assert _changelog_records(version), f"CHANGELOG.md has no '## {version}' section with '### Plugin API'"


def update() -> None:
    import hub

    if not _changelog_records(hub.__version__):
        raise SystemExit(
            f"record the change first: CHANGELOG.md needs a '## {hub.__version__}' section with '### Plugin API'"
        )
    SNAPSHOT.write_text(f"# plugin API of cxhub {hub.__version__}\n" + plugin_api(), encoding="utf-8")
    print(f"wrote {SNAPSHOT}")


if __name__ == "__main__" and "--update" in sys.argv:
    update()
