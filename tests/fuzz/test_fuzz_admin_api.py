"""Schemathesis against the hub's own OpenAPI document: every operation it lists (the admin API under
/api/v1, the webhook and inbound receivers, health), with the admin token, on a hub with data in it.

Each generated request must get no 5xx, and the reply must conform to the document (status code, content
type, response schema, headers) as schemathesis's standard checks define it.
"""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis import Case

from hub.web import create_app
from tests.fuzz.conftest import AUTH, FuzzHub, examples

pytestmark = pytest.mark.fuzz


#: The document the app serves at /api/v1/openapi.json (a test below checks the live one is the same). It is
#: built here, at import, because schemathesis makes one test per operation while pytest collects, before
#: any fixture (the live hub) exists; the requests then go to the live hub's URL.
DOCUMENT = create_app().openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_fuzzed_document_is_the_served_one(fuzz_hub: FuzzHub) -> None:
    assert fuzz_hub.probe.send("GET", "/api/v1/openapi.json", headers=AUTH).json() == DOCUMENT


def test_the_seeded_hub_has_data_to_show(fuzz_hub: FuzzHub) -> None:
    """The operations are fuzzed against rows, not empty tables."""
    probe = fuzz_hub.probe
    for path in ("responses", "people", "invitations", "sync-runs", "dead-letters", "rejected-webhooks"):
        listed = probe.send("GET", f"/api/v1/{path}", headers=AUTH)
        assert listed.status_code == 200 and listed.json(), f"{path} is empty"


@schema.parametrize()
@examples(30)
def test_every_documented_operation(case: Case, fuzz_hub: FuzzHub) -> None:
    probe = fuzz_hub.probe
    probe.errors.records.clear()
    response = case.call(base_url=probe.url, headers=AUTH)
    if response.status_code >= 500:
        raise AssertionError(
            f"{response.status_code} from the hub for\n{case.as_curl_command(headers=AUTH)}\n"
            f"reply: {response.text[:500]!r}\nserver traceback:\n{probe.errors.wait()}"
        )
    case.validate_response(response, headers=AUTH)
