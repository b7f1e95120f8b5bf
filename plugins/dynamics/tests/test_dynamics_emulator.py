"""The emulator is as strict as Dataverse: what the real service refuses, it refuses, in Dataverse's error
shape. (A connector that passes against a lenient emulator proves nothing.)"""

from __future__ import annotations

import asyncio

import pytest
from dynamics_support import seed_case
from hub_dynamics import batch
from hub_dynamics.client import DataverseError
from hub_dynamics.connector import DynamicsConnector
from hub_dynamics.emulator import ERR_OPTION_RANGE, DataverseEmulator

from hub import TransientError


async def _refused(connector: DynamicsConnector, method: str, path: str, **kwargs: object) -> DataverseError:
    with pytest.raises(DataverseError) as refused:
        await connector.client.request(method, path, **kwargs)  # type: ignore[arg-type]
    return refused.value


@pytest.mark.asyncio
async def test_filter_operators_beyond_the_connectors_are_400(connector: DynamicsConnector) -> None:
    error = await _refused(connector, "GET", "contacts", params={"$filter": "contains(fullname,'a')"})
    assert (error.status, error.code) == (400, "0x80060888")
    error = await _refused(connector, "GET", "contacts", params={"$filter": "nosuchcolumn eq 1"})
    assert error.status == 400


@pytest.mark.asyncio
async def test_change_tracking_refuses_filter(connector: DynamicsConnector) -> None:
    error = await _refused(
        connector,
        "GET",
        "incidents",
        params={"$select": "incidentid", "$filter": "statecode eq 1"},
        headers={"Prefer": "odata.track-changes"},
    )
    assert error.status == 400


@pytest.mark.asyncio
async def test_columns_are_typed_and_lengths_enforced(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    contact = seed_case(emulator)[1]
    too_long = await _refused(connector, "PATCH", f"contacts({contact})", json={"firstname": "x" * 51})
    assert (too_long.status, too_long.code) == (400, "0x80044331")
    wrong_type = await _refused(connector, "PATCH", f"contacts({contact})", json={"cxhub_lastscore": "nine"})
    assert wrong_type.status == 400
    not_an_option = await _refused(connector, "PATCH", f"contacts({contact})", json={"cxhub_lastcategory": 7})
    assert not_an_option.status == 400
    unknown = await _refused(connector, "PATCH", f"contacts({contact})", json={"cxhub_nosuch": 1})
    assert unknown.status == 400


@pytest.mark.asyncio
async def test_if_match_and_if_none_match(connector: DynamicsConnector, emulator: DataverseEmulator) -> None:
    contact = seed_case(emulator)[1]
    missing = "5b0c2f5e-8a73-4f0e-9d7e-0c1d2e3f4a5b"
    reply = await connector.client.request(
        "PATCH", f"contacts({missing})", json={"firstname": "A"}, headers={"If-Match": "*"}
    )
    assert reply.status_code == 404 and emulator.row("contact", missing) is None
    exists = await _refused(
        connector, "PATCH", f"contacts({contact})", json={"firstname": "A"}, headers={"If-None-Match": "*"}
    )
    assert exists.status == 412


def _raw_batch(parts: str) -> tuple[dict[str, str], bytes]:
    return {
        "Content-Type": "multipart/mixed; boundary=batch_x"
    }, f"--batch_x\r\n{parts}--batch_x--\r\n".encode()


@pytest.mark.asyncio
async def test_batch_is_parsed_strictly(connector: DynamicsConnector, emulator: DataverseEmulator) -> None:
    contact = seed_case(emulator)[1]
    no_encoding = f"Content-Type: application/http\r\n\r\nPATCH contacts({contact}) HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
    headers, body = _raw_batch(no_encoding)
    assert (await _refused(connector, "POST", "$batch", content=body, headers=headers)).status == 400
    no_content_id = (
        "Content-Type: multipart/mixed; boundary=changeset_y\r\n\r\n--changeset_y\r\n"
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        f"PATCH contacts({contact}) HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--changeset_y--\r\n"
    )
    headers, body = _raw_batch(no_content_id)
    assert (await _refused(connector, "POST", "$batch", content=body, headers=headers)).status == 400
    headers = {"Content-Type": "multipart/mixed; boundary=whatever"}
    assert (
        await _refused(connector, "POST", "$batch", content=b"--whatever--", headers=headers)
    ).status == 400


@pytest.mark.asyncio
async def test_batch_of_more_than_1000_requests_is_refused(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    contact = seed_case(emulator)[1]
    groups = [[batch.Operation("PATCH", f"contacts({contact})", {"firstname": "A"})]] * 1001
    content_type, body = batch.encode(groups, connector.settings.api_url)
    error = await _refused(connector, "POST", "$batch", content=body, headers={"Content-Type": content_type})
    assert error.status == 400
    assert emulator.row("contact", contact)["firstname"] == "Emma"


@pytest.mark.asyncio
async def test_without_continue_on_error_the_first_failure_stops_the_batch(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    first, second = seed_case(emulator, "a@example.com")[1], seed_case(emulator, "b@example.com")[1]
    groups = [
        [batch.Operation("PATCH", f"contacts({first})", {"firstname": "x" * 60})],
        [batch.Operation("PATCH", f"contacts({second})", {"firstname": "Changed"})],
    ]
    content_type, body = batch.encode(groups, connector.settings.api_url)
    await _refused(connector, "POST", "$batch", content=body, headers={"Content-Type": content_type})
    assert emulator.row("contact", second)["firstname"] == "Emma"


@pytest.mark.asyncio
async def test_service_protection_window(emulator: DataverseEmulator, connector: DynamicsConnector) -> None:
    emulator.window_requests = 2
    contact = seed_case(emulator)[1]
    await connector.get_person(contact)
    await connector.get_person(contact)
    with pytest.raises(TransientError) as throttled:
        await connector.get_person(contact)
    assert throttled.value.sent is False and (throttled.value.retry_after or 0) > 0
    assert [c.status for c in emulator.calls_of("api")][-1] == 429


@pytest.mark.asyncio
async def test_concurrent_requests_beyond_the_limit_are_429(
    emulator: DataverseEmulator, connector: DynamicsConnector
) -> None:
    contact = seed_case(emulator)[1]
    await connector.get_person(contact)  # the token first
    emulator.concurrency_limit, emulator.latency = 1, 0.3
    outcomes = await asyncio.gather(
        *(connector.get_person(contact) for _ in range(3)), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, TransientError)]
    assert refused and all(o.sent is False for o in refused)
    assert "0x80072326" in str(refused[0])
    assert any(o is not None and not isinstance(o, BaseException) for o in outcomes)


def _activity(contact: str, *parties: dict[str, object]) -> dict[str, object]:
    return {
        "subject": "Customer feedback",
        "regardingobjectid_contact_cxhub_surveyresponse@odata.bind": f"/contacts({contact})",
        "cxhub_surveyresponse_activity_parties": list(parties),
    }


@pytest.mark.asyncio
async def test_activity_parties_are_checked_as_dataverse_checks_them(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    """A refused party refuses the whole activity: nothing of it is written."""
    contact = seed_case(emulator)[1]
    activity = "5b0c2f5e-8a73-4f0e-9d7e-0c1d2e3f4a5c"
    path = f"cxhub_surveyresponses({activity})"
    customer = {"partyid_contact@odata.bind": f"/contacts({contact})", "participationtypemask": 11}
    not_a_type = await _refused(
        connector, "PATCH", path, json=_activity(contact, {**customer, "participationtypemask": 99})
    )
    assert (not_a_type.status, not_a_type.code) == (400, ERR_OPTION_RANGE)
    assert "participationtypemask" in str(not_a_type)
    no_type = {"partyid_contact@odata.bind": f"/contacts({contact})"}
    assert (await _refused(connector, "PATCH", path, json=_activity(contact, no_type))).status == 400
    missing = {**customer, "partyid_contact@odata.bind": "/contacts(5b0c2f5e-8a73-4f0e-9d7e-0c1d2e3f4a5d)"}
    reply = await connector.client.request("PATCH", path, json=_activity(contact, missing))
    assert (reply.status_code, reply.json()["error"]["code"]) == (404, "0x80040217")
    wrong_set = {**customer, "partyid_contact@odata.bind": f"/accounts({contact})"}
    assert (await _refused(connector, "PATCH", path, json=_activity(contact, wrong_set))).status == 400
    unknown = {**customer, "nosuchcolumn": 1}
    assert (await _refused(connector, "PATCH", path, json=_activity(contact, unknown))).status == 400
    body = _activity(contact, customer)
    body["activity_parties"] = body.pop("cxhub_surveyresponse_activity_parties")  # not the property's name
    assert (await _refused(connector, "PATCH", path, json=body)).status == 400
    assert emulator.row("cxhub_surveyresponse", activity) is None and emulator.rows("activityparty") == []
    # on a table that is not an activity there are no parties
    parties_of_a_contact = {"contact_activity_parties": [customer]}
    refused = await _refused(connector, "PATCH", f"contacts({contact})", json=parties_of_a_contact)
    assert refused.status == 400


@pytest.mark.asyncio
async def test_parties_are_written_with_their_activity_and_read_back(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    """An update names a party list as a whole: a type it repeats is replaced, the other types are kept;
    ``activityparties`` answers queries and refuses writes."""
    contact = seed_case(emulator)[1]
    activity = "5b0c2f5e-8a73-4f0e-9d7e-0c1d2e3f4a5c"
    path = f"cxhub_surveyresponses({activity})"
    customer = {"partyid_contact@odata.bind": f"/contacts({contact})", "participationtypemask": 11}
    recipient = {**customer, "participationtypemask": 2}
    for parties in ([customer], [customer], [recipient]):
        reply = await connector.client.request("PATCH", path, json=_activity(contact, *parties))
        assert reply.status_code == 204
    assert sorted(p["participationtypemask"] for p in emulator.parties(activity)) == [2, 11]
    found = await connector.client.request(
        "GET",
        "activityparties",
        params={
            "$select": "participationtypemask,_activityid_value",
            "$filter": f"_partyid_value eq {contact} and participationtypemask eq 11",
        },
    )
    assert [(p["_activityid_value"], p["participationtypemask"]) for p in found.json()["value"]] == [
        (activity, 11)
    ]
    assert [a["activityid"] for a in emulator.timeline(contact)] == [activity]
    refused = await _refused(connector, "POST", "activityparties", json=customer)
    assert refused.status == 405
    emulator.delete("cxhub_surveyresponse", activity)
    assert emulator.rows("activityparty") == [] and emulator.timeline(contact) == []


@pytest.mark.asyncio
async def test_resolutions_are_activities_read_with_the_in_function(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    """CloseIncident leaves a case resolution per resolution; ``Microsoft.Dynamics.CRM.In`` names the lookup
    by its logical name and needs at least one value of the column's type."""
    incident = seed_case(emulator)[2]
    resolution = emulator.close_incident(incident)
    assert emulator.row("incident", incident)["statecode"] == 1  # type: ignore[index]
    wanted = f"Microsoft.Dynamics.CRM.In(PropertyName='incidentid',PropertyValues=['{incident.upper()}'])"
    data = await connector.client.get_json(
        "incidentresolutions", {"$select": "activityid,_incidentid_value,createdon", "$filter": wanted}
    )
    assert [(r["activityid"], r["_incidentid_value"]) for r in data["value"]] == [(resolution, incident)]
    for refused in (
        f"Microsoft.Dynamics.CRM.In(PropertyName='_incidentid_value',PropertyValues=['{incident}'])",
        "Microsoft.Dynamics.CRM.In(PropertyName='incidentid',PropertyValues=[])",
        "Microsoft.Dynamics.CRM.In(PropertyName='incidentid',PropertyValues=['not-a-guid'])",
        f"Microsoft.Dynamics.CRM.In(PropertyName='incidentid',PropertyValues=['{incident}'",
    ):
        error = await _refused(connector, "GET", "incidentresolutions", params={"$filter": refused})
        assert (error.status, error.code) == (400, "0x80060888"), refused
