"""Files generated from the code: JSON Schemas (schemas/) and the hook reference (docs/hooks.md).

``cxhub generate`` writes them; a test fails when the committed copies are stale, so the docs a partner
reads are always the code's own docstrings.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hub import hookspecs, models
from hub.config import HubConfig

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "config": HubConfig,
    "case-event": models.CaseEvent,
    "person-record": models.PersonRecord,
    "write-back-item": models.WriteBackItem,
    "write-back-result": models.WriteBackResult,
    "response": models.ResponseRecord,
    "invitation": models.InvitationRecord,
    "survey-message": models.SurveyMessage,
    "alert-message": models.AlertMessage,
    "inbound-answer": models.InboundAnswer,
}


def schema_of(model: type[BaseModel]) -> str:
    schema: dict[str, Any] = model.model_json_schema(mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def hook_functions() -> list[Any]:
    return [
        obj for name, obj in vars(hookspecs).items() if name.startswith("hub_") and inspect.isfunction(obj)
    ]


def hooks_markdown() -> str:
    lines = [
        "# Hook reference",
        "",
        "Generated from `hub/hookspecs.py` by `cxhub generate`; do not edit by hand.",
        "",
        inspect.cleandoc(hookspecs.__doc__ or ""),
        "",
        "A plugin implements hooks with `@hub.hookimpl` in the module named by its `cxhub` entry point:",
        "",
        "```python",
        "from hub import hookimpl",
        "",
        "",
        "@hookimpl",
        "async def hub_on_response_received(response, invitation):",
        "    await notify_the_team(response)",
        "```",
        "",
    ]
    for func in hook_functions():
        signature = inspect.signature(func)
        params = ", ".join(
            f"{p.name}: {p.annotation}" if p.annotation is not inspect.Parameter.empty else p.name
            for p in signature.parameters.values()
        )
        lines += [f"## `{func.__name__}({params})`", "", inspect.cleandoc(func.__doc__ or "").strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def generated_files() -> dict[str, str]:
    files = {f"schemas/{name}.schema.json": schema_of(model) for name, model in SCHEMA_MODELS.items()}
    files["docs/hooks.md"] = hooks_markdown()
    files["config/cxhub.example.toml"] = (Path(__file__).parent / "starter.toml").read_text(encoding="utf-8")
    return files
