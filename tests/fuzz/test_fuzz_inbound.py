"""Replies through a channel (``POST /inbound/<channel>``) with random and hostile bodies and senders.

The text channel's person has an open survey sent by text, so a reply from their number reaches the hub's
answer recording with whatever the text holds. No request may get a 5xx; a refused one must be kept in
rejected_webhooks with its reason.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import TEXT_PERSON_PHONE, FuzzHub, examples
from tests.fuzz.strategies import hostile_text, json_body, json_values, raw_bodies

pytestmark = pytest.mark.fuzz

SENDERS = [
    TEXT_PERSON_PHONE,
    "+4520304050",
    "004520304050",
    "20304050",
    "ada@example.com",
    "+",
    "+999999999999999999",
]
TEXTS = ["9", "10 great", "3 slow\x00", "0", "11 too high", "99", "٣ good", "9" * 100, "thanks!", " ", ""]

replies = st.fixed_dictionaries(
    {},
    optional={
        "from": st.one_of(st.sampled_from(SENDERS), hostile_text, json_values),
        "text": st.one_of(
            st.sampled_from(TEXTS), hostile_text, st.sampled_from(TEXTS).map(lambda t: t + "\x00")
        ),
    },
)


@given(
    channel=st.one_of(st.just("text"), st.just("text"), st.just("mail"), st.text(max_size=20)),
    body=st.one_of(json_body(replies), json_body(replies), json_body(json_values), raw_bodies),
)
@examples(100)
def test_inbound_replies_with_hostile_bodies(fuzz_hub: FuzzHub, channel: str, body: bytes) -> None:
    probe = fuzz_hub.probe
    if channel == "mail":  # the fake mail channel trusts its input; only well-formed replies go to it
        body = b'{"from": "ada@example.com", "text": "9 fine"}'
    path = "/inbound/" + quote(channel, safe="")
    reply = probe.send("POST", path, content=body, headers={"content-type": "application/json"})
    assert reply.status_code < 500
    if channel == "text" and reply.status_code >= 400:
        # kept with its reason and (the first KEPT_BODY_BYTES of) its body
        probe.assert_kept("text", reply, body)
