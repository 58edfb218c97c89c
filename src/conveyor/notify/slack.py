"""Slack: Block Kit messages sent to an incoming webhook, and the way back for approvals.

An `approval.requested` message carries Approve/Reject buttons. Slack posts a click to the
server's interactivity URL; `verify_slack_signature` proves the request came from Slack (the
body is signed with the app's signing secret) and `parse_action` turns it into a decision.
Everything a user or a commit wrote is escaped, so a summary cannot ping `@channel` or
fake a link, and truncated to Block Kit's limits, so a long message degrades instead of
being refused with `invalid_blocks`.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qs

from pydantic import Field
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from conveyor import jsonio
from conveyor.errors import ConveyorError
from conveyor.events import NoticeEvent
from conveyor.extensions import Options
from conveyor.notify.base import Notice, NotifyContext, notifier
from conveyor.notify.webhook import USER_AGENT, post
from conveyor.spec.fields import HttpUrl

__all__ = [
    "APPROVE_ACTION",
    "EXTENSION",
    "REJECT_ACTION",
    "SlackAction",
    "SlackNotifier",
    "SlackPayloadError",
    "SlackSignatureError",
    "absolute_url",
    "blocks_for",
    "escape",
    "message_for",
    "parse_action",
    "send_slack",
    "verify_slack_signature",
]


class SlackNotifier(Options):
    """Post to a Slack incoming webhook."""

    webhook: HttpUrl = Field(description="Incoming-webhook URL, usually ${{ secrets.NAME }}.")
    channel: str | None = Field(None, description="Channel override.")

    def explain(self) -> str:
        # The webhook URL is a credential: never shown.
        return self.channel or ""


APPROVE_ACTION = "conveyor_approve"
REJECT_ACTION = "conveyor_reject"
_DECISIONS: dict[str, Literal["approve", "reject"]] = {
    APPROVE_ACTION: "approve",
    REJECT_ACTION: "reject",
}

# Block Kit limits (docs.slack.dev/reference/block-kit): a message holds at most 50 blocks; a
# header's plain text 150 characters; a section's text 3000, each of its ≤10 fields 2000.
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
FIELDS_MAX = 10
BLOCKS_MAX = 50
_CONTEXT_TEXT_MAX = 2000
_FALLBACK_MAX = 3000
_FIELD_VALUE_MAX = 500  # a field is a glance at a value, not a log excerpt
_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")


def escape(text: str) -> str:
    """mrkdwn's three control characters. Without this, `<!channel>` in a commit message
    would notify a whole channel and `<https://evil|docs>` would render as a trusted link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    """Cut to `limit` characters with an ellipsis, never through an `&amp;`-style entity (half
    an entity would show as literal garbage)."""
    if len(text) <= limit:
        return text
    cut = _ENTITY_TAIL.sub("", text[: limit - 1])
    return cut + "…"


def absolute_url(url: str | None, base_url: str | None) -> str | None:
    """Links in chat and mail need a scheme and host; the controller may record a path."""
    if url and url.startswith("/") and base_url:
        return base_url.rstrip("/") + url
    return url


def _link_target(url: str) -> str:
    # `|` ends the target of `<url|label>`; the rest is mrkdwn escaping.
    return escape(url).replace("|", "%7C")


def _when(at: str) -> str:
    """The time as Slack's date token, shown in each reader's own time zone; the recorded
    string is the fallback for clients that cannot render it."""
    fallback = escape(at)
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return fallback
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def _fields(notice: Notice) -> list[MarkdownTextObject]:
    pairs: list[tuple[str, str]] = [("Service", escape(notice.service))]
    if notice.environment:
        pairs.append(("Environment", escape(notice.environment)))
    if notice.release:
        pairs.append(("Release", escape(notice.release)))
    if notice.sha:
        pairs.append(("Commit", f"`{escape(notice.sha[:7])}`"))
    pairs += [(escape(k), escape(v)) for k, v in notice.fields.items()]
    return [
        MarkdownTextObject(
            text=_truncate(
                f"*{_truncate(label, 100)}*\n{_truncate(value, _FIELD_VALUE_MAX)}", FIELD_TEXT_MAX
            )
        )
        for label, value in pairs[:FIELDS_MAX]
    ]


def _approval_buttons(approval_id: int) -> ActionsBlock:
    value = str(approval_id)
    return ActionsBlock(
        block_id=f"conveyor_approval_{value}",
        elements=[
            ButtonElement(
                text=PlainTextObject(text="Approve"),
                action_id=APPROVE_ACTION,
                value=value,
                style="primary",
            ),
            ButtonElement(
                text=PlainTextObject(text="Reject"),
                action_id=REJECT_ACTION,
                value=value,
                style="danger",
                # Rejecting ends the deployment: one more click is cheap insurance.
                confirm=ConfirmObject(
                    title="Reject this deployment?",
                    text=PlainTextObject(text="The release will not be deployed."),
                    confirm="Reject",
                    deny="Cancel",
                ),
            ),
        ],
    )


def blocks_for(notice: Notice, *, base_url: str | None) -> list[dict[str, Any]]:
    """The message as Block Kit JSON, built with slack_sdk's models so its validators check
    every limit before Slack does."""
    summary = escape(notice.summary) or escape(notice.title)
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=_truncate(notice.title, HEADER_MAX))),
        SectionBlock(
            text=MarkdownTextObject(text=_truncate(summary, SECTION_TEXT_MAX)),
            fields=_fields(notice),
        ),
    ]
    context = _when(notice.at)
    link = absolute_url(notice.url, base_url)
    if link and link.startswith(("https://", "http://")):
        context += f" · <{_link_target(link)}|Open in Conveyor>"
    blocks.append(
        ContextBlock(elements=[MarkdownTextObject(text=_truncate(context, _CONTEXT_TEXT_MAX))])
    )
    if notice.event == NoticeEvent.APPROVAL_REQUESTED and notice.approval_id is not None:
        blocks.append(_approval_buttons(notice.approval_id))
    return [block.to_dict() for block in blocks[:BLOCKS_MAX]]


def message_for(notice: Notice, *, channel: str | None, base_url: str | None) -> dict[str, Any]:
    """The webhook payload. `text` is what notifications and screen readers show."""
    fallback = _truncate(escape(f"{notice.title}: {notice.summary}"), _FALLBACK_MAX)
    message: dict[str, Any] = {"text": fallback, "blocks": blocks_for(notice, base_url=base_url)}
    if channel:
        message["channel"] = channel
    return message


async def send_slack(
    notifier: SlackNotifier,
    notice: Notice,
    *,
    base_url: str | None = None,
    timeout: float = 10,
) -> None:
    """One delivery attempt to an incoming webhook; raises NotifyError unless Slack said ok.
    Slack explains a refusal in the body (`invalid_blocks`, `channel_not_found`...), which
    ends up in the error; the webhook URL, which is a credential, does not."""
    message = message_for(notice, channel=notifier.channel, base_url=base_url)
    body = json.dumps(message, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT}
    await post(notifier.webhook, body, headers, what="Slack webhook", timeout=timeout)


# --- requests from Slack ---------------------------------------------------------------------


class SlackSignatureError(ConveyorError):
    """A request claiming to come from Slack failed verification; `reason` names the check
    (missing_timestamp, missing_signature, bad_timestamp, stale_timestamp, signature_mismatch,
    no_secret) so the server can log it while answering every failure alike."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class SlackPayloadError(ConveyorError):
    """A signed interactivity request that is not a Conveyor approve/reject click."""


def verify_slack_signature(
    *,
    signing_secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float | None = None,
    tolerance: int = 300,
) -> None:
    """Slack's v0 scheme: `v0=` + hex HMAC-SHA256(secret, `v0:{timestamp}:{raw body}`).
    `body` must be the raw bytes as received (before any form parsing). The timestamp is
    checked first, so an old request captured off the wire cannot be replayed even though
    its signature is genuine."""
    if not signing_secret:
        raise SlackSignatureError("no Slack signing secret is configured", reason="no_secret")
    if not timestamp:
        raise SlackSignatureError("missing X-Slack-Request-Timestamp", reason="missing_timestamp")
    if not signature:
        raise SlackSignatureError("missing X-Slack-Signature", reason="missing_signature")
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise SlackSignatureError(
            "X-Slack-Request-Timestamp is not a Unix time", reason="bad_timestamp"
        )
    sent = int(timestamp)
    skew = (time.time() if now is None else now) - sent
    if abs(skew) > tolerance:
        direction = "old" if skew > 0 else "in the future"
        raise SlackSignatureError(
            f"stale timestamp: the request is {abs(skew):.0f}s {direction} "
            f"(more than {tolerance}s); a replay, or this server's clock is wrong",
            reason="stale_timestamp",
        )
    mac = hmac.new(signing_secret.encode(), b"v0:" + timestamp.encode() + b":" + body, "sha256")
    expected = f"v0={mac.hexdigest()}".encode()
    if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        raise SlackSignatureError(
            "signature mismatch: the body was not signed with this signing secret",
            reason="signature_mismatch",
        )


@dataclass(frozen=True)
class SlackAction:
    """A click on Approve or Reject. The Slack user is who decided; mapping them to a
    Conveyor identity (and checking they may approve) is the server's job."""

    approval_id: int
    decision: Literal["approve", "reject"]
    slack_user_id: str
    slack_user_name: str
    response_url: str | None


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise SlackPayloadError(f"Slack payload: {what} is missing or not a string")
    return value


def parse_action(body: bytes) -> SlackAction:
    """The form-encoded body Slack posts (`payload=<JSON>`, type `block_actions`). Only
    Conveyor's own buttons are accepted; anything else is a SlackPayloadError."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise SlackPayloadError("Slack payload: the body is not form-encoded") from None
    payloads = form.get("payload", [])
    if len(payloads) != 1:
        raise SlackPayloadError("Slack payload: expected exactly one 'payload' field")
    try:
        payload = jsonio.loads(payloads[0])
    except jsonio.TooDeep as exc:
        raise SlackPayloadError(f"Slack payload: 'payload' is refused: {exc}") from None
    except ValueError:
        raise SlackPayloadError("Slack payload: 'payload' is not JSON") from None
    if not isinstance(payload, dict):
        raise SlackPayloadError("Slack payload: 'payload' is not a JSON object")
    if payload.get("type") != "block_actions":
        raise SlackPayloadError(
            f"Slack payload: type {str(payload.get('type'))[:40]!r} is not block_actions"
        )
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise SlackPayloadError("Slack payload: no action")
    action: dict[str, Any] = actions[0]
    action_id = action.get("action_id")
    decision = _DECISIONS.get(action_id) if isinstance(action_id, str) else None
    if decision is None:
        raise SlackPayloadError(f"Slack payload: unknown action_id {str(action_id)[:60]!r}")
    value = action.get("value")
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,18}", value):
        raise SlackPayloadError("Slack payload: the button's value is not an approval id")
    user = payload.get("user")
    if not isinstance(user, dict):
        raise SlackPayloadError("Slack payload: user is missing")
    user_id = _text(user.get("id"), "user.id")
    name = user.get("username") or user.get("name") or user_id
    response_url = payload.get("response_url")
    if response_url is not None and not isinstance(response_url, str):
        raise SlackPayloadError("Slack payload: response_url is not a string")
    return SlackAction(
        approval_id=int(value),
        decision=decision,
        slack_user_id=user_id,
        slack_user_name=_text(name, "user.username"),
        response_url=response_url or None,
    )


async def _send(options: SlackNotifier, notice: Notice, context: NotifyContext) -> None:
    await send_slack(options, notice, base_url=context.base_url)


EXTENSION = notifier("slack", SlackNotifier, _send, order=10)
