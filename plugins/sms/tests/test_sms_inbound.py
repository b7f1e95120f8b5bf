"""Replies and delivery reports the provider posts to ``/inbound/<instance>``: verified, then read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

import pytest
from hub_sms.channel import SmsChannel
from hub_sms.emulator import SmsEmulator
from hub_sms.twilio_api import signed_form
from sms_support import MOBILE, Receiver, survey

from hub import BadInput, WebhookRequest

MakeChannel = Callable[..., SmsChannel]


def _form(request: WebhookRequest) -> dict[str, str]:
    return dict(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))


async def test_a_reply_is_an_answer_from_the_senders_number(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    channel = make_channel()
    request = emulator.inbound_request(MOBILE, " 9/10 great service!", url=channel.inbound_url)
    reply = await channel.parse_inbound(request)
    [answer] = reply.answers
    assert (answer.sender, answer.text, answer.message_id) == (
        MOBILE,
        " 9/10 great service!",
        _form(request)["MessageSid"],
    )
    assert reply.statuses == []
    assert (reply.status_code, reply.media_type) == (200, "text/xml")
    assert reply.body.endswith("<Response/>")


@pytest.mark.parametrize("change", ["body", "signature", "missing", "url", "token"])
async def test_anything_not_signed_by_the_provider_is_a_403(
    make_channel: MakeChannel, emulator: SmsEmulator, change: str
) -> None:
    channel = make_channel()
    request = emulator.inbound_request(MOBILE, "9", url=channel.inbound_url)
    headers = dict(request.headers)
    if change == "body":
        request = request.model_copy(update={"body": urlencode({**_form(request), "Body": "0"}).encode()})
    elif change == "signature":
        headers["x-twilio-signature"] = headers["x-twilio-signature"][::-1]
    elif change == "missing":
        del headers["x-twilio-signature"]
    elif change == "url":  # signed for another hub
        request = emulator.inbound_request(MOBILE, "9", url="https://other.example/inbound/sms")
        request = request.model_copy(update={"url": channel.inbound_url})
    elif change == "token":
        emulator.state.auth_token = "another-accounts-token"
        request = emulator.inbound_request(MOBILE, "9", url=channel.inbound_url)
    request = request.model_copy(update={"headers": headers} if change in ("signature", "missing") else {})
    with pytest.raises(BadInput) as refused:
        await channel.parse_inbound(request)
    assert refused.value.status_code == 403


async def test_behind_a_proxy_the_public_url_is_what_counts(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    """The provider signs the public URL; the hub hands over ``public_url`` + path, not its own address."""
    channel = make_channel()
    public = "https://feedback.example.com/inbound/sms"
    request = emulator.inbound_request(MOBILE, "8", url=public)
    assert (await channel.parse_inbound(request)).answers[0].text == "8"
    internal = request.model_copy(update={"url": "http://10.0.0.5:8000/inbound/sms"})
    with pytest.raises(BadInput):
        await channel.parse_inbound(internal)


async def test_a_request_for_another_account_is_refused(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    channel = make_channel()
    request = emulator.inbound_request(MOBILE, "9", url=channel.inbound_url)
    emulator.state.account_sid = "AC" + "0" * 32
    other = emulator.inbound_request(MOBILE, "9", url=channel.inbound_url)
    assert (await channel.parse_inbound(request)).answers
    with pytest.raises(BadInput) as refused:
        await channel.parse_inbound(other)
    assert refused.value.status_code == 400


@pytest.mark.parametrize(
    ("status", "code", "outcome", "rejected", "opted_out"),
    [
        ("queued", None, "pending", False, False),
        ("sent", None, "pending", False, False),
        ("delivered", None, "delivered", False, False),
        ("undelivered", "30003", "failed", False, False),  # the handset is off: not the number's fault
        ("undelivered", "30005", "failed", True, False),
        ("undelivered", "30006", "failed", True, False),
        ("failed", "21211", "failed", True, False),
        ("failed", "21614", "failed", True, False),
        ("failed", "21610", "failed", False, True),
        ("undelivered", "30007", "failed", False, False),
    ],
)
async def test_status_callbacks_become_delivery_statuses(
    make_channel: MakeChannel,
    emulator: SmsEmulator,
    status: str,
    code: str | None,
    outcome: str,
    rejected: bool,
    opted_out: bool,
) -> None:
    channel = make_channel()
    delivery = await channel.send(survey())
    assert delivery.message_id is not None
    request = emulator.status_request(delivery.message_id, status, code, url=channel.inbound_url)
    reply = await channel.parse_inbound(request)
    [report] = reply.statuses
    assert reply.answers == [] and reply.status_code == 204 and reply.body == ""
    assert (report.message_id, report.status, report.outcome) == (delivery.message_id, status, outcome)
    assert (report.error_code, report.address_rejected, report.opted_out) == (code, rejected, opted_out)
    assert (report.error is not None) == (outcome == "failed")


async def test_callbacks_arrive_signed_at_least_once_and_out_of_order(
    make_channel: MakeChannel, emulator: SmsEmulator, receiver: Receiver
) -> None:
    channel = make_channel()
    delivery = await channel.send(survey())
    assert await asyncio.to_thread(emulator.settle)
    assert [s["MessageStatus"] for s in receiver.statuses()] == ["queued", "delivered", "sent", "delivered"]
    reports = [r for request in receiver.requests for r in (await channel.parse_inbound(request)).statuses]
    assert {r.message_id for r in reports} == {delivery.message_id}
    assert [r.outcome for r in reports] == ["pending", "delivered", "pending", "delivered"]


async def test_a_failing_number_is_reported_with_its_error_code(
    make_channel: MakeChannel, emulator: SmsEmulator, receiver: Receiver
) -> None:
    emulator.undeliverable(MOBILE, "undelivered", 30006)
    channel = make_channel()
    await channel.send(survey())
    assert await asyncio.to_thread(emulator.settle)
    final = (await channel.parse_inbound(receiver.requests[-1])).statuses[0]
    assert (final.outcome, final.error_code, final.address_rejected) == ("failed", "30006", True)
    assert emulator.messages(MOBILE) == []  # it never reached the phone


async def test_callbacks_may_come_before_the_send_call_returns(
    make_channel: MakeChannel, emulator: SmsEmulator, receiver: Receiver
) -> None:
    emulator.state.callbacks_first = True
    delivery = await make_channel().send(survey())
    assert {s["MessageSid"] for s in receiver.statuses()} == {delivery.message_id}
    assert receiver.statuses()[-1]["MessageStatus"] == "delivered"


async def test_a_body_that_is_neither_is_a_400(make_channel: MakeChannel, emulator: SmsEmulator) -> None:
    channel = make_channel()
    request = emulator.inbound_request(MOBILE, "9", url=channel.inbound_url)
    form = {k: v for k, v in _form(request).items() if k not in ("Body", "SmsStatus")}
    body, headers = signed_form(emulator.state.auth_token, channel.inbound_url, form)
    odd = WebhookRequest(
        method="POST", url=channel.inbound_url, headers={k.lower(): v for k, v in headers.items()}, body=body
    )
    with pytest.raises(BadInput) as refused:
        await channel.parse_inbound(odd)
    assert refused.value.status_code == 400
