"""``cxhub new-plugin``: a ready connector or channel package, rendered from the templates beside this file.

The package works from the moment it is written: its example service (an emulator on the public
``BackgroundServer``) passes the shared suite, and the partner replaces it piece by piece. Templates are
Jinja2 with ``[[ ]]`` and ``[% %]`` delimiters, so Python's and GitHub Actions' braces stay as they are;
a path part ``PACKAGE`` or ``NAME`` becomes the package or plugin name, and ``.j2`` is dropped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from jinja2 import Environment, StrictUndefined

Kind = Literal["connector", "channel"]
KINDS: tuple[Kind, ...] = ("connector", "channel")
TEMPLATES = Path(__file__).parent
_NAME = re.compile(r"[a-z][a-z0-9_]{1,30}")


class ScaffoldError(ValueError):
    """The name or the target folder cannot be used; the message says why and what to do."""


def template_values(kind: Kind, name: str) -> dict[str, str]:
    """What the templates see: the plugin name and every name derived from it."""
    from hub import __version__

    major, minor, *_ = (int(part) for part in __version__.split("."))
    # the plugin API changes incompatibly only with a new major version (a new minor one while 0.x)
    next_breaking = f"{major}.{minor + 1}" if major == 0 else f"{major + 1}"
    section = "connectors" if kind == "connector" else "channels"
    return {
        "kind": kind,
        "name": name,
        "package": f"hub_{name}",
        "dist": f"cxhub-{name.replace('_', '-')}",
        "title": "".join(part.capitalize() for part in name.split("_")),
        "env": name.upper(),
        "module": kind,
        "section": f"[{section}.{name}]",
        "hub_version": __version__,
        "hub_next_major": next_breaking,
    }


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ScaffoldError(
            f'"{name}" cannot be a plugin name: use 2 to 31 lower-case letters, digits and underscores, '
            'starting with a letter (e.g. "acme_crm"); admins write it as plugin = "<name>"'
        )


def new_plugin(kind: Kind, name: str, parent: Path) -> Path:
    """Write the package ``cxhub-<name>`` into ``parent``; returns its folder. Never overwrites a file."""
    if kind not in KINDS:
        raise ScaffoldError(f'unknown kind "{kind}": use one of {", ".join(KINDS)}')
    check_name(name)
    values = template_values(kind, name)
    target = parent / values["dist"]
    if target.exists() and any(target.iterdir()):
        raise ScaffoldError(f"{target} exists and is not empty: choose another folder with --dir")
    env = Environment(
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        keep_trailing_newline=True,
        undefined=StrictUndefined,
        autoescape=False,  # noqa: S701 - renders Python, TOML and Markdown, never HTML
    )
    source = TEMPLATES / kind
    for template in sorted(p for p in source.rglob("*.j2") if p.is_file()):
        relative = template.relative_to(source).as_posix().removesuffix(".j2")
        relative = relative.replace("PACKAGE", values["package"]).replace("NAME", name)
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        text = env.from_string(template.read_text(encoding="utf-8")).render(values)
        out.write_text(text, encoding="utf-8")
    return target
