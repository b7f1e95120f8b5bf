"""The Twilio emulator is strict: it refuses what Twilio refuses, with Twilio's status, code and shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hub_sms import signature
from hub_sms.emulator import SmsEmulator
from sms_support import MOBILE, Receiver


def _post(
    emulator: SmsEmulator, http: httpx.Client, auth: tuple[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    state = emulator.state
    return http.post(
        f"{emulator.url}/2010-04-01/Accounts/{state.account_sid}/Messages.json",
        auth=auth or (state.account_sid, state.auth_token),
        **kwargs,
    )


def _error(response: httpx.Response) -> tuple[int, int]:
    body = response.json()
    assert set(body) == {"code", "message", "more_info", "status"}
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}"
    assert body["status"] == response.status_code
    return response.status_code, body["code"]


def _form(emulator: SmsEmulator, **changes: str | None) -> dict[str, str]:
    form = {"To": MOBILE, "From": emulator.state.number, "Body": "Hello"}
    form.update({k: v for k, v in changes.items() if v is not None})
    return {k: v for k, v in form.items() if changes.get(k, "") is not None}


def test_a_text_is_queued_with_its_segments(emulator: SmsEmulator, http: httpx.Client) -> None:
    response = _post(emulator, http, data=_form(emulator, Body="ж" * 71))
    assert response.status_code == 201
    message = response.json()
    assert (message["status"], message["num_segments"], message["to"]) == ("queued", "2", MOBILE)
    assert message["sid"].startswith("SM") and message["direction"] == "outbound-api"
    fetched = http.get(
        f"{emulator.url}{message['uri']}", auth=(emulator.state.account_sid, emulator.state.auth_token)
    )
    assert fetched.json()["sid"] == message["sid"]


@pytest.mark.parametrize(
    "auth",
    [None, ("ACwrong", "token"), ("account", "wrong-token"), ("key", "wrong-secret")],
)
def test_wrong_credentials_are_401_with_20003(
    emulator: SmsEmulator, http: httpx.Client, auth: tuple[str, str] | None
) -> None:
    state = emulator.state
    url = f"{emulator.url}/2010-04-01/Accounts/{state.account_sid}/Messages.json"
    if auth is None:
        response = http.post(url, data=_form(emulator))
    else:
        user = {"account": state.account_sid, "key": state.api_key_sid}.get(auth[0], auth[0])
        response = http.post(url, data=_form(emulator), auth=(user, auth[1]))
    assert _error(response) == (401, 20003)
    assert response.headers["www-authenticate"].startswith("Basic")


def test_another_accounts_path_is_refused(emulator: SmsEmulator, http: httpx.Client) -> None:
    state = emulator.state
    url = f"{emulator.url}/2010-04-01/Accounts/AC{'1' * 32}/Messages.json"
    assert _error(http.post(url, data=_form(emulator), auth=(state.account_sid, state.auth_token))) == (
        401,
        20003,
    )


def test_an_api_key_sends_but_may_not_read_the_account(emulator: SmsEmulator, http: httpx.Client) -> None:
    state = emulator.state
    key = (state.api_key_sid, state.api_key_secret)
    assert _post(emulator, http, auth=key, data=_form(emulator)).status_code == 201
    account = http.get(f"{emulator.url}/2010-04-01/Accounts/{state.account_sid}.json", auth=key)
    assert _error(account) == (401, 20003)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"To": None}, 21604),
        ({"From": None}, 21603),
        ({"Body": None}, 21602),
        ({"Body": "x" * 1601}, 21617),
        ({"To": "20304050"}, 21211),
        ({"To": "+45 1234"}, 21211),
        ({"To": "+441212345678"}, 21614),
        ({"From": "+4540123456"}, 21606),
    ],
)
def test_bad_messages_are_refused_with_twilios_code(
    emulator: SmsEmulator, http: httpx.Client, changes: dict[str, str | None], code: int
) -> None:
    assert _error(_post(emulator, http, data=_form(emulator, **changes))) == (400, code)
    assert emulator.state.texts == {}


def test_a_body_of_exactly_1600_characters_is_taken(emulator: SmsEmulator, http: httpx.Client) -> None:
    assert _post(emulator, http, data=_form(emulator, Body="x" * 1600)).status_code == 201


def test_json_is_not_read_so_to_is_missing(emulator: SmsEmulator, http: httpx.Client) -> None:
    assert _error(_post(emulator, http, json=_form(emulator))) == (400, 21604)


def test_a_configured_landline_and_an_opted_out_number(emulator: SmsEmulator, http: httpx.Client) -> None:
    emulator.state.landlines.add(MOBILE)
    assert _error(_post(emulator, http, data=_form(emulator))) == (400, 21614)
    emulator.state.landlines.clear()
    emulator.state.opted_out.add(MOBILE)
    assert _error(_post(emulator, http, data=_form(emulator))) == (400, 21610)


def test_fault_injection_answers_with_retry_after(emulator: SmsEmulator, http: httpx.Client) -> None:
    emulator.fail_sends(2, 429, retry_after=30)
    for _ in range(2):
        response = _post(emulator, http, data=_form(emulator))
        assert _error(response) == (429, 20429) and response.headers["retry-after"] == "30"
    assert _post(emulator, http, data=_form(emulator)).status_code == 201


def test_the_phone_replies_signed_and_stop_is_handled_by_the_provider(
    emulator: SmsEmulator, receiver: Receiver, http: httpx.Client
) -> None:
    emulator.forward_to(receiver.server.url, "sms")
    _post(emulator, http, data=_form(emulator, Body="How did we do? Reply 0-10."))
    emulator.reply(MOBILE, "STOP")
    [request] = receiver.requests
    form = dict(httpx.QueryParams(request.body.decode()))
    assert (form["From"], form["To"], form["Body"]) == (MOBILE, emulator.state.number, "STOP")
    assert request.url == f"{receiver.server.url}/inbound/sms"
    assert signature.valid(
        emulator.state.auth_token, request.url, list(form.items()), request.header("x-twilio-signature")
    )
    [conversation] = emulator.conversations()
    assert conversation["number"] == MOBILE
    assert [(m["sender"], m["text"][:9]) for m in conversation["messages"]] == [
        ("hub", "How did w"),
        ("phone", "STOP"),
        ("hub", "You have "),
    ]
    assert conversation["messages"][0]["status"] in ("queued", "delivered")
    assert MOBILE in emulator.state.opted_out


def test_a_reply_the_hub_refuses_raises(emulator: SmsEmulator, receiver: Receiver) -> None:
    emulator.forward_to(receiver.server.url, "no-such-route/x")
    with pytest.raises(RuntimeError, match="404"):
        emulator.reply(MOBILE, "9")
