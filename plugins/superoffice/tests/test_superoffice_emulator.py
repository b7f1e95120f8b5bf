"""The emulator refuses what SuperOffice refuses: a connector that passes here must not be relying on leniency."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hub_superoffice.client import TICKET_CLAIM, jwt_claims
from hub_superoffice.emulator import BackgroundServer, DemoSeed, SuperOfficeEmulator
from superoffice_support import APP_TOKEN, BASIC_USER, LOGIN_PATH, login_body, present


@pytest.fixture
def api(server: BackgroundServer, seed: DemoSeed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/Cust12345/api/v1/", auth=BASIC_USER) as client:
        yield client


def test_an_unknown_field_in_a_patch_is_refused_with_a_json_error_and_nothing_is_stored(
    api: httpx.Client, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    karen = seed.persons["karen"]
    response = api.patch(
        f"Person/{karen}",
        json=[
            {"op": "replace", "path": "/ExtraFields/x_cxhub_count", "value": "4"},
            {"op": "replace", "path": "/ExtraFields/x_not_a_field", "value": "1"},
        ],
    )
    assert response.status_code == 400
    assert "x_not_a_field" in response.json()["Error"]
    assert present(emulator.person(karen))["ExtraFields"]["x_cxhub_count"] == ""


def test_values_must_fit_the_field_type(api: httpx.Client, seed: DemoSeed) -> None:
    response = api.patch(f"Person/{seed.persons['karen']}", json={"ExtraFields": {"x_cxhub_count": "many"}})
    assert response.status_code == 400
    assert "x_cxhub_count (int)" in response.json()["Error"]


def test_an_extra_field_cannot_be_written_as_a_user_defined_field(api: httpx.Client, seed: DemoSeed) -> None:
    response = api.patch(
        f"Person/{seed.persons['karen']}",
        json=[{"op": "replace", "path": "/UserDefinedFields/x_cxhub_count", "value": "4"}],
    )
    assert response.status_code == 400


def test_merge_patch_and_json_patch_both_work(
    api: httpx.Client, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    karen = seed.persons["karen"]
    assert api.patch(f"Person/{karen}", json={"ExtraFields": {"x_cxhub_count": 4}}).status_code == 200
    assert (
        api.patch(
            f"Person/{karen}",
            json=[{"op": "replace", "path": "extrafields/X_CXHUB_AVG_RATING", "value": 7.5}],
        ).status_code
        == 200
    )
    fields = present(emulator.person(karen))["ExtraFields"]
    assert (fields["x_cxhub_count"], fields["x_cxhub_avg_rating"]) == ("4", "7.5")


def test_expired_unknown_and_incomplete_credentials_get_401(
    server: BackgroundServer, emulator: SuperOfficeEmulator, seed: DemoSeed, partner_keys: tuple[str, str]
) -> None:
    login = httpx.post(f"{server.url}{LOGIN_PATH}", json=login_body(partner_keys[0])).json()
    ticket = jwt_claims(login["Token"])[TICKET_CLAIM]
    url = f"{server.url}/Cust12345/api/v1/Person/{seed.persons['karen']}"
    good = {"Authorization": f"SOTicket {ticket}", "SO-AppToken": APP_TOKEN}

    assert httpx.get(url, headers=good).status_code == 200
    assert httpx.get(url, headers={"Authorization": f"SOTicket {ticket}"}).status_code == 401
    assert httpx.get(url, headers={**good, "Authorization": "SOTicket 7T:made-up"}).status_code == 401
    assert httpx.get(url).status_code == 401
    emulator.expire_credentials()
    expired = httpx.get(url, headers=good)
    assert expired.status_code == 401
    assert "expired" in expired.json()["Error"]


def test_archive_refuses_unknown_columns_and_compares_dates_by_day(
    api: httpx.Client, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    assert api.get("Ticket", params={"$select": "ticketId,notAColumn"}).status_code == 400
    emulator.close_ticket(seed.tickets["login"])
    closed_at = emulator.store.clock.local(emulator.store.data.tickets[seed.tickets["login"]]["ClosedAt"])
    same_day = api.get(
        "Ticket", params={"$select": "ticketId,closedAt", "$filter": f"closedAt after '{closed_at.date()}'"}
    )
    assert same_day.json()["value"] == []
    row = api.get(
        "Ticket", params={"$select": "ticketId,closedAt", "$filter": "closedAt after '2000-01-01'"}
    ).json()["value"][0]
    assert row["ticketId"] == seed.tickets["login"]
    assert "+" not in row["closedAt"] and not row["closedAt"].endswith("Z")


def test_webhook_target_must_be_https(api: httpx.Client, emulator: SuperOfficeEmulator) -> None:
    response = api.post(
        "Webhook",
        json={
            "Name": "x",
            "Events": ["ticket.changed"],
            "TargetUrl": "http://hub.example/hooks/so",
            "Secret": "s",
            "Type": "webhook",
        },
    )
    assert response.status_code == 400
    assert emulator.webhooks() == []


def test_injected_faults_and_rate_limit_carry_retry_after(
    api: httpx.Client, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    emulator.fail_next(1, status=503, retry_after=9)
    unavailable = api.get(f"Person/{seed.persons['karen']}")
    assert (unavailable.status_code, unavailable.headers["Retry-After"]) == (503, "9")
    emulator.set_rate_limit(2)
    statuses = [api.get(f"Person/{seed.persons['karen']}").status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]
    assert emulator.count_calls("GET", "/Person/", status=429) == 2


def test_html_views_show_what_was_written_back(
    server: BackgroundServer, api: httpx.Client, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    karen, login = seed.persons["karen"], seed.tickets["login"]
    api.patch(f"Person/{karen}", json={"ExtraFields": {"x_cxhub_last_comment": "Meget <hurtig> hjælp"}})
    api.post(
        "TicketMessage", json={"Ticket": {"TicketId": login}, "Slevel": "Internal", "Body": "Kunden gav 9"}
    )
    person_page = httpx.get(f"{server.url}/emulator/person/{karen}")
    ticket_page = httpx.get(f"{server.url}/emulator/ticket/{login}")
    assert person_page.status_code == ticket_page.status_code == 200
    assert "Meget &lt;hurtig&gt; hjælp" in person_page.text and "Karen Jensen" in person_page.text
    assert "Kunden gav 9" in ticket_page.text and "Internal" in ticket_page.text
    assert httpx.get(f"{server.url}/emulator/person/99999").status_code == 404
