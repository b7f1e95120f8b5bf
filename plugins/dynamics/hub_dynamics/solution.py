"""Build the unmanaged solution an admin imports: ``python -m hub_dynamics.solution DIR``.

The solution's source is the XML in ``solution_src/`` (publisher ``cxhub``, the summary and opt-out columns on contact,
the feedback columns on incident, the ``cxhub_surveyresponse`` activity table, the category choice and the
"CX Hub Integration" security role). Building checks every file is well-formed XML and that every column
the connector writes by default is defined, then zips them as Dataverse expects (files at the zip's root).
"""

from __future__ import annotations

import sys
import zipfile
from importlib import resources
from pathlib import Path
from xml.etree import ElementTree

from hub_dynamics.config import CaseSettings, ContactColumns, OptOutColumns, TimelineSettings

FILES = ("[Content_Types].xml", "solution.xml", "customizations.xml")
ZIP_NAME = "cxhub_solution.zip"


def default_columns() -> set[str]:
    """Every column the connector writes with its default settings."""
    timeline, case = TimelineSettings(), CaseSettings()
    columns: set[str | None] = set(ContactColumns().mapped().values())
    columns |= set(OptOutColumns().mapped().values())
    columns |= {timeline.score_column, timeline.category_column, timeline.comment_column}
    columns |= {timeline.response_id_column, case.score_column, case.comment_column, case.date_column}
    return {column for column in columns if column is not None}


def build(directory: Path) -> Path:
    """Write ``cxhub_solution.zip`` into ``directory``; raise ValueError naming what is wrong."""
    source = resources.files("hub_dynamics") / "solution_src"
    contents = {name: (source / name).read_bytes() for name in FILES}
    for name, data in contents.items():
        try:
            ElementTree.fromstring(data)  # noqa: S314 - the plugin's own files, not input
        except ElementTree.ParseError as exc:
            raise ValueError(f"{name} is not well-formed XML: {exc}") from None
    customizations = ElementTree.fromstring(contents["customizations.xml"])  # noqa: S314 - as above
    defined = {element.text for element in customizations.iter("LogicalName")}
    missing = default_columns() - defined
    if missing:
        raise ValueError(f"customizations.xml defines no column {', '.join(sorted(missing))}")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / ZIP_NAME
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m hub_dynamics.solution DIR", file=sys.stderr)
        return 2
    target = build(Path(argv[0]))
    print(
        f"wrote {target}: import it in Power Apps (Solutions > Import solution), then publish all customizations"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
