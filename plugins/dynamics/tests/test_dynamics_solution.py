"""The unmanaged solution an admin imports defines what the connector writes, and ``check`` agrees."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from hub_dynamics.emulator import CUSTOM_CONTACT, CUSTOM_INCIDENT
from hub_dynamics.solution import default_columns


def test_the_solution_zip_defines_every_default_column(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hub_dynamics.solution", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(tmp_path / "cxhub_solution.zip") as archive:
        assert sorted(archive.namelist()) == ["[Content_Types].xml", "customizations.xml", "solution.xml"]
        manifest = ElementTree.fromstring(archive.read("solution.xml"))
        customizations = ElementTree.fromstring(archive.read("customizations.xml"))
    assert manifest.findtext("SolutionManifest/Managed") == "0"  # unmanaged: an admin can change it
    assert manifest.findtext("SolutionManifest/Publisher/CustomizationPrefix") == "cxhub"
    defined = {e.text for e in customizations.iter("LogicalName")}
    assert default_columns() <= defined
    # the emulator's org "with the solution imported" has exactly these columns
    assert set(CUSTOM_CONTACT) | set(CUSTOM_INCIDENT) <= defined
    activity = next(e for e in customizations.iter("entity") if e.get("Name") == "cxhub_surveyresponse")
    assert activity.findtext("IsActivity") == "1"
    assert [r.get("name") for r in customizations.iter("Role")] == ["CX Hub Integration"]
