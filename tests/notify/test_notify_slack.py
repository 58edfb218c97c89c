"""Slack: the Block Kit a notice becomes (checked the way Slack would, by a local receiver that
parses every block back with slack_sdk's models), sending to an incoming webhook, request
signatures (Slack's own worked example included) and approve/reject clicks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, HeaderBlock, SectionBlock
from slack_sdk.signature import SignatureVerifier

from conveyor.notify.base import NotifyError
from conveyor.notify.slack import (
    SlackAction,
    SlackNotifier,
    SlackPayloadError,
    SlackSignatureError,
    blocks_for,
    message_for,
    parse_action,
    send_slack,
    verify_slack_signature,
)
from tests.notify.test_notify_webhook import (
    Received,
    Receiver,
    make_notice,
    scripted,
    unreachable_url,
)

KNOWN_BLOCK_TYPES = {"header", "section", "context", "actions"}


def block_kit_problem(message: Any) -> str | None:
    """What Slack would refuse in a message, or None. Every block must parse back with
    slack_sdk's models into exactly the same JSON and pass their validators (the limits)."""
    if not isinstance(message, dict) or not isinstance(message.get("text"), str):
        return "no fallback text"
    blocks = message.get("blocks")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return "blocks must be a list of 1 to 50 blocks"
    for raw in blocks:
        if not isinstance(raw, dict) or raw.get("type") not in KNOWN_BLOCK_TYPES:
            return f"unexpected block {raw!r:.80}"
        parsed = Block.parse(raw)
        if parsed is None:
            return f"unparseable block {raw!r:.80}"
        try:
            again = parsed.to_dict()  # runs every validator: lengths, counts
        except SlackObjectFormationError as exc:
            return f"invalid block: {exc}"
        if again != raw:
            return f"block does not round-trip: {raw!r:.80}"
    return None


def slack_like(request: Received) -> tuple[int, str]:
    """Answers like an incoming webhook: "ok", or 400 with Slack's error string."""
    try:
        message = json.loads(request.body)
    except ValueError:
        return 400, "invalid_payload"
    if block_kit_problem(message) is not None:
        return 400, "invalid_blocks"
    return 200, "ok"


@pytest.fixture
def slack() -> Iterator[Receiver]:
    r = Receiver(slack_like)
    try:
        yield r
    finally:
        r.close()


def parsed(blocks: list[dict[str, Any]]) -> list[Block]:
    out = [Block.parse(b) for b in blocks]
    assert all(b is not None for b in out)
    return [b for b in out if b is not None]


# --- the message --------------------------------------------------------------------------


def test_deployment_failed_message() -> None:
    notice = make_notice()
    message = message_for(notice, channel=None, base_url=None)
    assert block_kit_problem(message) is None
    assert "channel" not in message
    assert message["text"].startswith("Deployment failed: shop-api r12-ab12cd3 failed")

    header, section, context = message["blocks"]
    assert [header["type"], section["type"], context["type"]] == ["header", "section", "context"]
    assert header["text"] == {"type": "plain_text", "text": "Deployment failed"}
    assert section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"] == notice.summary
    fields = [f["text"] for f in section["fields"]]
    assert fields == [
        "*Service*\nshop-api",
        "*Environment*\nproduction",
        "*Release*\nr12-ab12cd3",
        "*Commit*\n`ab12cd3`",
        "*Check*\nGET /healthz",
    ]
    [when] = context["elements"]
    assert when["type"] == "mrkdwn"
    # Slack's date token (shown in the reader's time zone) with the recorded time as fallback.
    assert when["text"].startswith("<!date^1795688100^")
    assert "|2026-11-26T10:15:00+00:00>" in when["text"]
    assert "<https://conveyor.example.com/deployments/9|Open in Conveyor>" in when["text"]
    assert not any(b["type"] == "actions" for b in message["blocks"])


def test_approval_requested_carries_the_approval_id_in_both_buttons() -> None:
    notice = make_notice(event="approval.requested", approval_id=314, url="/approvals/314")
    blocks = blocks_for(notice, base_url="https://ci.example.com/")
    assert block_kit_problem({"text": "", "blocks": blocks}) is None

    assert isinstance(header := parsed(blocks)[0], HeaderBlock)
    assert header.text is not None
    assert header.text.text == "Approval requested"
    [actions] = [b for b in parsed(blocks) if isinstance(b, ActionsBlock)]
    buttons = actions.elements
    assert all(isinstance(b, ButtonElement) for b in buttons)
    got = [(b.action_id, b.value, b.style) for b in buttons if isinstance(b, ButtonElement)]
    assert got == [("conveyor_approve", "314", "primary"), ("conveyor_reject", "314", "danger")]
    # A relative link is made absolute with the server's base URL.
    assert "<https://ci.example.com/approvals/314|Open in Conveyor>" in json.dumps(blocks)


def test_no_buttons_without_an_approval_id() -> None:
    blocks = blocks_for(make_notice(event="approval.requested"), base_url=None)
    assert [b["type"] for b in blocks] == ["header", "section", "context"]
    # Nor for other events that happen to carry one.
    blocks = blocks_for(make_notice(approval_id=5), base_url=None)
    assert "actions" not in [b["type"] for b in blocks]


def test_user_text_is_escaped_for_mrkdwn() -> None:
    notice = make_notice(
        summary="deploy <!channel> & see <https://evil.example|the docs>",
        release="r1<b>",
        fields={"A&B": "x > y"},
        url="https://ci.example.com/d?a=1&b=2|x",
    )
    message = message_for(notice, channel="#deploys", base_url=None)
    section = message["blocks"][1]
    assert section["text"]["text"] == (
        "deploy &lt;!channel&gt; &amp; see &lt;https://evil.example|the docs&gt;"
    )
    texts = [f["text"] for f in section["fields"]]
    assert "*Release*\nr1&lt;b&gt;" in texts
    assert "*A&amp;B*\nx &gt; y" in texts
    assert "<!channel>" not in json.dumps(message)
    link = message["blocks"][2]["elements"][0]["text"]
    assert "<https://ci.example.com/d?a=1&amp;b=2%7Cx|Open in Conveyor>" in link
    assert message["channel"] == "#deploys"


def test_long_texts_are_cut_to_block_kit_limits() -> None:
    notice = make_notice(
        event="x" * 400,  # an unknown event's title is the event name itself
        summary="&" * 5000,  # escaping makes it 25000 characters
        fields={f"field {i}": "v" * 5000 for i in range(20)},
        release="r" * 3000,
    )
    message = message_for(notice, channel=None, base_url=None)
    assert block_kit_problem(message) is None
    header, section, _context = message["blocks"]
    assert len(header["text"]["text"]) == 150
    assert header["text"]["text"].endswith("…")
    text = section["text"]["text"]
    assert len(text) <= 3000
    # Never cut through an entity: the text is whole `&amp;`s, then the ellipsis.
    assert text.endswith("&amp;…")
    assert text[:-1].replace("&amp;", "") == ""
    assert len(section["fields"]) == 10
    assert all(len(f["text"]) <= 2000 for f in section["fields"])
    assert len(message["text"]) <= 3000
    # slack_sdk itself agrees with the limits.
    parsed_section = Block.parse(section)
    assert isinstance(parsed_section, SectionBlock)
    parsed_section.validate_json()


def test_the_receiver_refuses_what_slack_would() -> None:
    """The check used by the receiver below does catch broken Block Kit."""
    good = message_for(make_notice(), channel=None, base_url=None)
    too_long = {
        **good,
        "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
    }
    assert block_kit_problem(too_long) is not None
    assert block_kit_problem({**good, "blocks": good["blocks"] * 17}) is not None  # 51 blocks
    assert block_kit_problem({**good, "blocks": [{"type": "nonsense"}]}) is not None


# --- sending ------------------------------------------------------------------------------


def test_send_slack_posts_valid_block_kit(slack: Receiver) -> None:
    notice = make_notice(event="approval.requested", approval_id=7)
    notifier = SlackNotifier(webhook=slack.url("/services/T0/B0/xyz"), channel="#deploys")
    asyncio.run(send_slack(notifier, notice, base_url="https://ci.example.com"))

    [request] = slack.requests
    assert request.path == "/services/T0/B0/xyz"
    assert request.headers["content-type"].startswith("application/json")
    message = json.loads(request.body)
    assert slack_like(request) == (200, "ok")
    assert message["channel"] == "#deploys"
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    assert [e["value"] for e in actions["elements"]] == ["7", "7"]


def test_slack_refusal_is_permanent_and_says_why() -> None:
    r = Receiver(scripted((400, "invalid_blocks")))
    try:
        with pytest.raises(NotifyError) as caught:
            asyncio.run(
                send_slack(SlackNotifier(webhook=r.url("/services/T/B/SECRET")), make_notice())
            )
    finally:
        r.close()
    assert caught.value.retry is False
    assert "400" in str(caught.value)
    assert "invalid_blocks" in str(caught.value)
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize(("status", "text"), [(500, "rollup_error"), (429, "rate_limited")])
def test_slack_outage_and_rate_limit_are_retryable(status: int, text: str) -> None:
    r = Receiver(scripted((status, text)))
    try:
        with pytest.raises(NotifyError) as caught:
            asyncio.run(send_slack(SlackNotifier(webhook=r.url()), make_notice()))
    finally:
        r.close()
    assert caught.value.retry is True
    assert text in str(caught.value)


def test_slack_unreachable_is_retryable() -> None:
    with pytest.raises(NotifyError) as caught:
        asyncio.run(send_slack(SlackNotifier(webhook=unreachable_url()), make_notice()))
    assert caught.value.retry is True


# --- request signatures --------------------------------------------------------------------

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def slack_sign(secret: str, timestamp: str, body: bytes) -> str:
    """Signed as Slack signs, computed here independently of the code under test."""
    mac = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
    return "v0=" + mac.hexdigest()


def test_slacks_own_worked_example_verifies() -> None:
    """The example in Slack's "Verifying requests from Slack" guide."""
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
        b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
        b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    signature = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    verify_slack_signature(
        signing_secret=SECRET,
        timestamp="1531420618",
        signature=signature,
        body=body,
        now=1531420618 + 10,
    )
    # And slack_sdk's reference verifier agrees on a fresh request.
    verifier = SignatureVerifier(SECRET)
    ts = "1700000000"
    assert verifier.generate_signature(timestamp=ts, body=body) == slack_sign(SECRET, ts, body)


BODY = b"payload=%7B%22type%22%3A%22block_actions%22%7D"
NOW = 1_700_000_000.0
TS = str(int(NOW))


def verify(**overrides: Any) -> None:
    args: dict[str, Any] = {
        "signing_secret": SECRET,
        "timestamp": TS,
        "signature": slack_sign(SECRET, TS, BODY),
        "body": BODY,
        "now": NOW,
    }
    args.update(overrides)
    verify_slack_signature(**args)


def test_a_valid_signature_passes() -> None:
    verify()
    verify(now=NOW + 299)  # within five minutes either way
    verify(now=NOW - 299)


@pytest.mark.parametrize(
    ("overrides", "reason", "words"),
    [
        (
            {"signature": slack_sign("another-secret", TS, BODY)},
            "signature_mismatch",
            "signature mismatch",
        ),
        ({"body": BODY + b"&x=1"}, "signature_mismatch", "signature mismatch"),
        ({"signature": "v0=" + "0" * 64}, "signature_mismatch", "signature mismatch"),
        ({"signature": "v1=abc"}, "signature_mismatch", "signature mismatch"),
        ({"now": NOW + 301}, "stale_timestamp", "stale timestamp"),
        ({"now": NOW - 301}, "stale_timestamp", "stale timestamp"),
        ({"signature": None}, "missing_signature", "missing X-Slack-Signature"),
        ({"signature": ""}, "missing_signature", "missing X-Slack-Signature"),
        ({"timestamp": None}, "missing_timestamp", "missing X-Slack-Request-Timestamp"),
        ({"timestamp": "yesterday"}, "bad_timestamp", "not a Unix time"),
        ({"timestamp": "1_700_000_000"}, "bad_timestamp", "not a Unix time"),
        ({"signing_secret": ""}, "no_secret", "no Slack signing secret"),
    ],
)
def test_each_failed_check_says_which(overrides: dict[str, Any], reason: str, words: str) -> None:
    with pytest.raises(SlackSignatureError) as caught:
        verify(**overrides)
    assert caught.value.reason == reason
    assert words in str(caught.value)


def test_a_replayed_request_is_stale_even_with_a_genuine_signature() -> None:
    old = str(int(NOW) - 3600)
    with pytest.raises(SlackSignatureError, match="stale timestamp"):
        verify(timestamp=old, signature=slack_sign(SECRET, old, BODY))


# --- interactivity payloads ----------------------------------------------------------------


def block_actions(action_id: str = "conveyor_approve", value: str = "314") -> dict[str, Any]:
    """A block_actions payload shaped as in Slack's reference for it (a button click in a
    message posted by an app's incoming webhook)."""
    return {
        "type": "block_actions",
        "user": {
            "id": "U0CA5",
            "username": "amy.mcgee",
            "name": "amy.mcgee",
            "team_id": "T3MDE",
        },
        "api_app_id": "A0CA5",
        "token": "Shh_its_a_seekrit",
        "container": {
            "type": "message",
            "message_ts": "1548261231.000200",
            "channel_id": "C0CA5",
            "is_ephemeral": False,
        },
        "trigger_id": "12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3",
        "team": {"id": "T3MDE", "domain": "acme-creamery"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": "C0CA5", "name": "deploys"},
        "message": {"type": "message", "ts": "1548261231.000200", "text": "Approval requested"},
        "state": {"values": {}},
        "response_url": "https://hooks.slack.com/actions/AABA1ABCD/1232321423432/D09sSasdasdAS9091209",
        "actions": [
            {
                "action_id": action_id,
                "block_id": f"conveyor_approval_{value}",
                "text": {"type": "plain_text", "text": "Approve", "emoji": True},
                "value": value,
                "style": "primary",
                "type": "button",
                "action_ts": "1548426417.840180",
            }
        ],
    }


def form(payload: Any) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return urlencode({"payload": text}).encode()


def test_parse_an_approve_click() -> None:
    action = parse_action(form(block_actions()))
    assert action == SlackAction(
        approval_id=314,
        decision="approve",
        slack_user_id="U0CA5",
        slack_user_name="amy.mcgee",
        response_url="https://hooks.slack.com/actions/AABA1ABCD/1232321423432/D09sSasdasdAS9091209",
    )


def test_parse_a_reject_click_from_the_blocks_we_send() -> None:
    """Round trip: the button Conveyor sends is the button Slack reports back."""
    blocks = blocks_for(make_notice(event="approval.requested", approval_id=99), base_url=None)
    reject = blocks[-1]["elements"][1]
    payload = block_actions(action_id=reject["action_id"], value=reject["value"])
    del payload["user"]["username"]  # older payloads only have `name`
    payload.pop("response_url")
    action = parse_action(form(payload))
    assert (action.approval_id, action.decision) == (99, "reject")
    assert action.slack_user_name == "amy.mcgee"
    assert action.response_url is None


def _without(key: str) -> dict[str, Any]:
    payload = block_actions()
    del payload[key]
    return payload


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"payload=",
        b"\xff\xfe",
        b"payload=%7Bnot json",
        b"payload=[1,2]",
        b"payload=1&payload=2",
        b"token=abc&team_id=T1",
        form({**block_actions(), "type": "view_submission"}),
        form({**block_actions(), "actions": []}),
        form({**block_actions(), "actions": ["button"]}),
        form(block_actions(action_id="some_other_app_button")),
        form(block_actions(value="abc")),
        form(block_actions(value="-1")),
        form(block_actions(value="9" * 40)),
        form(_without("user")),
        form({**block_actions(), "user": {"name": "no id"}}),
        form({**block_actions(), "response_url": 42}),
        json.dumps(block_actions()).encode(),  # JSON instead of a form
    ],
)
def test_garbage_is_a_payload_error(body: bytes) -> None:
    with pytest.raises(SlackPayloadError):
        parse_action(body)
