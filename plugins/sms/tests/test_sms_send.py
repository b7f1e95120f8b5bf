"""Sending over real HTTP to the Twilio emulator: what arrives, and what each refusal becomes in the hub."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable

import httpx
import pytest
import respx
from hub_sms.channel import SmsChannel
from hub_sms.emulator import SmsEmulator
from sms_support import MOBILE, Receiver, reply_message, survey

from hub import (
    AddressRejected,
    AuthError,
    ConfigError,
    Recipient,
    RecipientOptedOut,
    SkippableError,
    TransientError,
)

MakeChannel = Callable[..., SmsChannel]
REPLY = "Reply with a number from 0 to 10."


async def test_a_survey_reaches_the_phone_with_its_segments_reported(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    delivery = await make_channel().send(survey(reply_instructions=REPLY))
    [text] = emulator.messages(MOBILE)
    assert delivery.message_id == text.sid and text.sid.startswith("SM")
    assert text.body.endswith(REPLY) and text.from_ == emulator.state.number
    assert "1 segment (GSM-7" in delivery.detail


async def test_the_status_callback_is_the_hubs_inbound_url(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    channel = make_channel()
    await channel.send(survey())
    [text] = emulator.messages(MOBILE)
    assert text.status_callback == f"{channel.ctx.public_url}/inbound/sms"


async def test_an_api_key_sends_for_the_account(make_channel: MakeChannel, emulator: SmsEmulator) -> None:
    channel = make_channel(api_key_sid=emulator.state.api_key_sid, api_key_secret="env:SMS_TEST_KEY_SECRET")
    emulator.forward_to(channel.ctx.public_url, "sms")
    await channel.send(reply_message("What is the main reason for your score?"))
    assert [t.body for t in emulator.messages(MOBILE)] == ["What is the main reason for your score?"]
    assert all(r.ok for r in await channel.check())


@pytest.fixture(autouse=True)
def _key_secret(emulator: SmsEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_TEST_KEY_SECRET", emulator.state.api_key_secret)


async def test_a_messaging_service_picks_the_sender(make_channel: MakeChannel, emulator: SmsEmulator) -> None:
    channel = make_channel(from_number=None, messaging_service_sid=emulator.state.messaging_service_sid)
    await channel.send(survey())
    [text] = emulator.messages(MOBILE)
    assert text.messaging_service_sid == emulator.state.messaging_service_sid and text.from_ is None


async def test_a_landline_is_refused_before_any_api_call(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    landline = "+441212345678"
    with pytest.raises(AddressRejected) as refused:
        await make_channel().send(survey(recipient=Recipient(phone=landline)))
    assert refused.value.address == landline
    assert emulator.state.texts == {}


async def test_a_landline_only_the_provider_knows_is_rejected_with_21614(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    emulator.state.landlines.add("+4533123456")
    with pytest.raises(AddressRejected, match="21614") as refused:
        await make_channel().send(survey(recipient=Recipient(phone="+45 33 12 34 56")))
    assert refused.value.address == "+4533123456"


async def test_a_local_number_is_read_with_the_default_region(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    await make_channel(default_region="DK").send(survey(recipient=Recipient(phone="20 30 40 50")))
    assert len(emulator.messages(MOBILE)) == 1


async def test_a_campaign_may_read_local_numbers_in_its_own_country(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    channel = make_channel(default_region="DK", campaign_regions={"support_se": "se"})
    await channel.send(survey(campaign="support_se", recipient=Recipient(phone="070-123 45 67")))
    await channel.send(survey(recipient=Recipient(phone="20 30 40 50")))
    assert [t.number for t in emulator.messages()] == ["+46701234567", MOBILE]


async def test_no_phone_number_moves_on_to_the_next_channel(make_channel: MakeChannel) -> None:
    with pytest.raises(SkippableError, match="no phone"):
        await make_channel().send(survey(recipient=Recipient(email="ann@example.com")))


async def test_a_person_who_texted_stop_is_an_opt_out(
    make_channel: MakeChannel, emulator: SmsEmulator, receiver: Receiver
) -> None:
    emulator.forward_to(receiver.server.url, "sms")
    await asyncio.to_thread(emulator.reply, MOBILE, "stop")
    with pytest.raises(RecipientOptedOut, match="21610") as refused:
        await make_channel().send(survey())
    assert refused.value.address == MOBILE
    await asyncio.to_thread(emulator.reply, MOBILE, "START")
    await make_channel().send(survey())


async def test_refused_credentials_are_an_auth_error(
    make_channel: MakeChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMS_WRONG_TOKEN", "wrong")
    channel = make_channel(auth_token="env:SMS_WRONG_TOKEN")
    with pytest.raises(AuthError, match="20003"):
        await channel.send(survey())
    results = await channel.check()
    assert not results[0].ok and "20003" in results[0].detail


async def test_a_429_is_retried_later_honouring_retry_after(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    emulator.fail_sends(1, 429, retry_after=120)
    with pytest.raises(TransientError, match="20429") as refused:
        await make_channel().send(survey())
    assert refused.value.retry_after == 120
    assert emulator.state.texts == {}


async def test_an_outage_is_transient_and_a_huge_retry_after_is_capped(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    emulator.fail_sends(1, 503, retry_after=10**7)
    with pytest.raises(TransientError) as refused:
        await make_channel().send(survey())
    assert refused.value.retry_after == 3600


async def test_an_unreachable_provider_is_transient_and_nothing_was_sent(make_channel: MakeChannel) -> None:
    channel = make_channel(api_url="http://127.0.0.1:9")
    with pytest.raises(TransientError) as refused:
        await channel.send(survey())
    assert refused.value.sent is False


def _arrives_then_times_out(request: httpx.Request) -> httpx.Response:
    """The provider takes the text, but its answer never comes back (urllib: not intercepted by respx)."""
    forwarded = urllib.request.Request(str(request.url), data=request.content, headers=dict(request.headers))
    with urllib.request.urlopen(forwarded, timeout=5):
        pass
    raise httpx.ReadTimeout("no answer", request=request)


async def test_a_text_that_went_out_before_the_connection_failed_is_not_sent_twice(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    channel = make_channel()
    with respx.mock(base_url=emulator.url) as mock:
        mock.post(url__regex=r".*/Messages\.json").mock(side_effect=_arrives_then_times_out)
        with pytest.raises(TransientError, match="may have been sent") as refused:
            await channel.send(survey())
    assert refused.value.sent is True
    [text] = emulator.messages(MOBILE)
    delivery = await channel.send(survey())  # the hub's retry
    assert delivery.message_id == text.sid and "not sent again" in delivery.detail
    assert len(emulator.messages(MOBILE)) == 1


async def test_a_text_lost_on_the_way_is_sent_on_the_retry(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    channel = make_channel()
    with respx.mock(base_url=emulator.url) as mock:
        mock.post(url__regex=r".*/Messages\.json").mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(TransientError, match="may have been sent"):
            await channel.send(survey())
    assert emulator.messages(MOBILE) == []
    delivery = await channel.send(survey())
    assert [t.sid for t in emulator.messages(MOBILE)] == [delivery.message_id]
    assert "not sent again" not in delivery.detail


async def test_a_sender_that_is_not_the_accounts_is_a_config_error(make_channel: MakeChannel) -> None:
    with pytest.raises(ConfigError, match="21606"):
        await make_channel(from_number="+4540123456").send(survey())


async def test_any_other_refusal_skips_this_channel_with_the_reason(make_channel: MakeChannel) -> None:
    with pytest.raises(SkippableError, match="1600 character limit"):
        await make_channel().send(reply_message("x" * 1601))


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"code": 21211, "message": "The 'To' number is not a valid phone number."}, AddressRejected),
        (400, {"code": 21614, "message": "'To' number is not a valid mobile number"}, AddressRejected),
        (400, {"code": 21635, "message": "'To' number cannot be a landline"}, AddressRejected),
        (400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient"}, RecipientOptedOut),
        (401, {"code": 20003, "message": "Authenticate"}, AuthError),
        (403, {"code": 20003, "message": "Authenticate"}, AuthError),
        (429, {"code": 20429, "message": "Too Many Requests"}, TransientError),
        (500, {"code": 20500, "message": "Internal Server Error"}, TransientError),
        (502, "<html>Bad gateway</html>", TransientError),
        (400, {"code": 21606, "message": "not a valid, SMS-capable inbound phone number"}, ConfigError),
        (400, {"code": 21408, "message": "Permission to send an SMS has not been enabled"}, SkippableError),
    ],
)
async def test_every_error_code_maps_to_what_the_hub_does(
    make_channel: MakeChannel,
    emulator: SmsEmulator,
    status: int,
    body: dict[str, object] | str,
    error: type[Exception],
) -> None:
    """What Twilio's documented error replies become (fault injection: the emulator refuses these itself)."""
    channel = make_channel()
    reply = (
        httpx.Response(status, json={**body, "status": status})
        if isinstance(body, dict)
        else httpx.Response(status, text=body)
    )
    with respx.mock(base_url=emulator.url) as mock:
        mock.post(url__regex=r".*/Messages\.json").mock(return_value=reply)
        with pytest.raises(error) as raised:
            await channel.send(survey())
    assert type(raised.value) is error


async def test_concurrent_sends_share_the_rate_and_a_long_queue_is_handed_back(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    """At one text a second and at most 1.5 s of waiting, of three sends at once two go and one is
    rescheduled by the hub (nothing reached the provider for it)."""
    channel = make_channel(messages_per_second=1, max_queue_seconds=1.5)
    results = await asyncio.gather(*(channel.send(survey()) for _ in range(3)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, TransientError)]
    assert len(refused) == 1 and refused[0].sent is False and refused[0].retry_after is not None
    assert len(emulator.messages(MOBILE)) == 2
