"""Email against a real SMTP server (aiosmtpd on 127.0.0.1): the message as received, the SMTP
URL forms, logins, and how the server's refusals are classified for retrying."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from conveyor.notify.base import NotifyError
from conveyor.notify.email import EmailNotifier, SmtpServer, parse_smtp_url, send_email
from tests.notify.test_notify_webhook import make_notice
from tests.serverproc import free_port


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class Mailbox:
    """The handler: records what was accepted; `refuse` maps an address to an SMTP reply."""

    messages: list[Captured] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(Captured(str(envelope.mail_from), list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            self.logins.append((data.login.decode(), data.password.decode()))
            if (data.login, data.password) == (b"ci@example.com", b"p@ss:word"):
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@dataclass
class SmtpFixture:
    mailbox: Mailbox
    port: int

    def url(self, userinfo: str = "") -> str:
        return f"smtp://{userinfo}127.0.0.1:{self.port}"


@pytest.fixture
def smtp() -> Iterator[SmtpFixture]:
    """An SMTP server on 127.0.0.1; AUTH is offered over plain text here because there is no
    certificate for a local test server (production URLs use smtps:// or starttls=1)."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        auth_require_tls=False,
        ready_timeout=10,
    )
    controller.start()  # returns once the server answers (aiosmtpd checks it itself)
    try:
        yield SmtpFixture(mailbox, port)
    finally:
        controller.stop()


def test_an_email_is_delivered_with_the_right_headers_and_body(smtp: SmtpFixture) -> None:
    notifier = EmailNotifier.model_validate(
        {"to": ["oncall@example.com", "lead@example.com"], "from": "ci@example.com"}
    )
    asyncio.run(
        send_email(
            notifier, make_notice(), default_smtp=smtp.url(), default_from="ignored@example.com"
        )
    )
    [captured] = smtp.mailbox.messages
    assert captured.mail_from == "ci@example.com"
    assert captured.rcpt_tos == ["oncall@example.com", "lead@example.com"]
    msg = captured.message
    assert msg["Subject"] == "[conveyor] Deployment failed: shop-api production"
    assert msg["From"] == "ci@example.com"
    assert msg["To"] == "oncall@example.com, lead@example.com"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Conveyor-Event"] == "deployment.failed"
    assert msg["X-Conveyor-Delivery"] == "17"
    assert msg["Message-ID"].endswith("@example.com>")
    assert msg["Date"]
    assert msg.get_content_type() == "text/plain"
    body = msg.get_content().replace("\r\n", "\n")
    assert body.startswith(
        "shop-api r12-ab12cd3 failed its health check in production: GET /healthz → 503\n"
    )
    for line in [
        "Service: shop-api",
        "Environment: production",
        "Release: r12-ab12cd3",
        "Commit: ab12cd3ef4567890ab12cd3ef4567890ab12cd3e",
        "Check: GET /healthz",
        "At: 2026-11-26T10:15:00+00:00",
        "Open in Conveyor: https://conveyor.example.com/deployments/9",
    ]:
        assert line in body.splitlines()


def test_the_notifiers_own_server_and_the_default_sender(smtp: SmtpFixture) -> None:
    notifier = EmailNotifier.model_validate({"to": "a@example.com", "smtp": smtp.url()})
    notice = make_notice(environment=None, url=None, sha=None)
    asyncio.run(send_email(notifier, notice, default_smtp=None, default_from=None))
    [captured] = smtp.mailbox.messages
    assert captured.message["From"] == "conveyor@localhost"
    assert captured.message["Subject"] == "[conveyor] Deployment failed: shop-api"
    body = captured.message.get_content()
    assert "Open in Conveyor" not in body
    assert "Commit:" not in body


def test_default_from_is_used_when_the_notifier_has_none(smtp: SmtpFixture) -> None:
    notifier = EmailNotifier.model_validate({"to": "a@example.com"})
    asyncio.run(
        send_email(
            notifier, make_notice(), default_smtp=smtp.url(), default_from="deploys@example.com"
        )
    )
    assert smtp.mailbox.messages[0].mail_from == "deploys@example.com"


def test_login_with_percent_encoded_credentials(smtp: SmtpFixture) -> None:
    url = smtp.url("ci%40example.com:p%40ss%3Aword@")
    notifier = EmailNotifier.model_validate({"to": "a@example.com", "smtp": url})
    asyncio.run(send_email(notifier, make_notice(), default_smtp=None, default_from=None))
    assert smtp.mailbox.logins == [("ci@example.com", "p@ss:word")]
    assert len(smtp.mailbox.messages) == 1


def test_a_wrong_password_is_not_retried_nor_shown(smtp: SmtpFixture) -> None:
    notifier = EmailNotifier.model_validate(
        {"to": "a@example.com", "smtp": smtp.url("ci%40example.com:hunter2@")}
    )
    with pytest.raises(NotifyError) as caught:
        asyncio.run(send_email(notifier, make_notice(), default_smtp=None, default_from=None))
    assert caught.value.retry is False
    assert "refused the login: 535" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert smtp.mailbox.messages == []


def test_recipient_refusals_permanent_and_temporary(smtp: SmtpFixture) -> None:
    smtp.mailbox.refuse = {
        "gone@example.com": "550 5.1.1 No such user",
        "full@example.com": "452 4.2.2 Mailbox full",
    }
    notifier = EmailNotifier.model_validate({"to": "gone@example.com"})
    with pytest.raises(NotifyError) as caught:
        asyncio.run(send_email(notifier, make_notice(), default_smtp=smtp.url(), default_from=None))
    assert caught.value.retry is False
    assert "gone@example.com: 550 5.1.1 No such user" in str(caught.value)

    notifier = EmailNotifier.model_validate({"to": "full@example.com"})
    with pytest.raises(NotifyError) as caught:
        asyncio.run(send_email(notifier, make_notice(), default_smtp=smtp.url(), default_from=None))
    assert caught.value.retry is True
    assert "452" in str(caught.value)
    assert smtp.mailbox.messages == []


def test_some_recipients_refused_is_reported_and_not_resent(smtp: SmtpFixture) -> None:
    smtp.mailbox.refuse = {"gone@example.com": "550 5.1.1 No such user"}
    notifier = EmailNotifier.model_validate({"to": ["ok@example.com", "gone@example.com"]})
    with pytest.raises(NotifyError) as caught:
        asyncio.run(send_email(notifier, make_notice(), default_smtp=smtp.url(), default_from=None))
    assert caught.value.retry is False
    assert "gone@example.com" in str(caught.value)
    [captured] = smtp.mailbox.messages
    assert captured.rcpt_tos == ["ok@example.com"]


def test_no_smtp_server_anywhere() -> None:
    notifier = EmailNotifier.model_validate({"to": "a@example.com"})
    with pytest.raises(NotifyError, match="no SMTP server configured") as caught:
        asyncio.run(send_email(notifier, make_notice(), default_smtp=None, default_from=None))
    assert caught.value.retry is False


def test_unreachable_smtp_server_is_retryable() -> None:
    notifier = EmailNotifier.model_validate({"to": "a@example.com"})
    url = f"smtp://127.0.0.1:{free_port()}"
    with pytest.raises(NotifyError) as caught:
        asyncio.run(send_email(notifier, make_notice(), default_smtp=url, default_from=None))
    assert caught.value.retry is True
    assert "could not reach SMTP server smtp://127.0.0.1:" in str(caught.value)


def test_starttls_to_a_server_without_it_is_not_retried(smtp: SmtpFixture) -> None:
    notifier = EmailNotifier.model_validate({"to": "a@example.com"})
    with pytest.raises(NotifyError) as caught:
        asyncio.run(
            send_email(
                notifier,
                make_notice(),
                default_smtp=smtp.url() + "?starttls=1",
                default_from=None,
            )
        )
    assert caught.value.retry is False
    assert "STARTTLS" in str(caught.value)
    assert smtp.mailbox.messages == []


def test_smtps_to_a_plain_server_is_not_retried(smtp: SmtpFixture) -> None:
    """Implicit TLS against a plain-text port: a configuration mistake, said as such."""
    notifier = EmailNotifier.model_validate({"to": "a@example.com"})
    url = f"smtps://127.0.0.1:{smtp.port}"
    with pytest.raises(NotifyError) as caught:
        asyncio.run(send_email(notifier, make_notice(), default_smtp=url, default_from=None))
    assert caught.value.retry is False
    assert "TLS" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", SmtpServer("mail.example.com", 25)),
        (
            "smtp://mail.example.com:587?starttls=1",
            SmtpServer("mail.example.com", 587, starttls=True),
        ),
        ("smtps://mail.example.com", SmtpServer("mail.example.com", 465, implicit_tls=True)),
        (
            "smtps://u%40x:p%2Fw@mail.example.com:2465",
            SmtpServer("mail.example.com", 2465, True, False, "u@x", "p/w"),
        ),
        ("smtp://[::1]:2525", SmtpServer("::1", 2525)),
    ],
)
def test_smtp_url_forms(url: str, expected: SmtpServer) -> None:
    server = parse_smtp_url(url)
    assert server == expected
    assert "p/w" not in str(server)


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example.com",
        "mail.example.com:25",
        "smtp://",
        "smtp://mail.example.com:notaport",
        "smtp://mail.example.com?tls=1",
        "smtps://mail.example.com?starttls=1",
    ],
)
def test_bad_smtp_urls(url: str) -> None:
    with pytest.raises(NotifyError) as caught:
        parse_smtp_url(url)
    assert caught.value.retry is False


def test_bad_smtp_url_errors_never_show_the_password() -> None:
    with pytest.raises(NotifyError) as caught:
        parse_smtp_url("smtp://user:topsecret@mail.example.com:99999999")
    assert "topsecret" not in str(caught.value)
