"""Email over SMTP: one plain-text message per notice.

smtplib is blocking, so a send runs in a worker thread with a socket timeout; every failure
is classified by what the server said (4xx: try again later, 5xx: it will not work) so the
sender does not hammer a server that has refused an address for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Annotated
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field

from conveyor.extensions import Options
from conveyor.notify.base import Notice, NotifyContext, NotifyError, notifier
from conveyor.spec.fields import SmtpUrl, StrList, at_least_one

__all__ = [
    "DEFAULT_FROM",
    "EXTENSION",
    "EmailNotifier",
    "SmtpServer",
    "email_for",
    "parse_smtp_url",
    "send_email",
]


class EmailNotifier(Options):
    """Send an email."""

    to: Annotated[
        StrList, at_least_one("no_recipients", "email needs at least one recipient in 'to'")
    ] = Field(description="Recipients.")
    from_: str | None = Field(None, alias="from", description="Sender address.")
    smtp: SmtpUrl | None = Field(None, description="SMTP URL; default: the server's.")

    def explain(self) -> str:
        return f"to {', '.join(self.to)}"


DEFAULT_FROM = "conveyor@localhost"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class SmtpServer:
    """Where to send, from an SMTP URL. `str()` never shows the password."""

    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpServer:
    """`smtp://[user:pass@]host[:port][?starttls=1]` (port 25) or `smtps://...` (TLS from the
    first byte, port 465). User and password are percent-decoded, so `@` or `:` in a password
    are written `%40`, `%3A`. Errors never echo the URL: it may hold the password."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise NotifyError("the SMTP URL is malformed (bad port?)", retry=False) from None
    if parts.scheme not in ("smtp", "smtps"):
        raise NotifyError(
            "the SMTP URL must start with smtp:// or smtps:// "
            f"(got {parts.scheme + '://' if parts.scheme else 'no scheme'})",
            retry=False,
        )
    if not parts.hostname:
        raise NotifyError("the SMTP URL has no host", retry=False)
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - {"starttls"})
    if unknown:
        raise NotifyError(f"unknown SMTP URL option {unknown[0]!r} (known: starttls)", retry=False)
    starttls = any(v.lower() in _TRUE for v in options.get("starttls", []))
    implicit_tls = parts.scheme == "smtps"
    if implicit_tls and starttls:
        raise NotifyError(
            "starttls=1 is for smtp:// URLs; smtps:// is TLS from the start", retry=False
        )
    return SmtpServer(
        host=parts.hostname,
        port=port or (465 if implicit_tls else 25),
        implicit_tls=implicit_tls,
        starttls=starttls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _one_line(text: str) -> str:
    # A CR or LF in a header value would start a new header (or be refused by `email`).
    return " ".join(text.split())


def _domain(address: str) -> str:
    domain = address.rpartition("@")[2].strip(" >")
    return domain or "localhost"


def email_for(notifier: EmailNotifier, notice: Notice, *, sender: str) -> EmailMessage:
    """The message: a subject that sorts and filters well, and a plain-text body that reads
    the same in every client."""
    subject = f"[conveyor] {notice.title}: {notice.service}"
    if notice.environment:
        subject += f" {notice.environment}"
    msg = EmailMessage()
    msg["Subject"] = _one_line(subject)
    msg["From"] = _one_line(sender)
    msg["To"] = ", ".join(_one_line(to) for to in notifier.to)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(idstring=f"notice.{notice.id}", domain=_domain(sender))
    # RFC 3834: out-of-office responders must not answer a machine.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Conveyor-Event"] = _one_line(notice.event)
    msg["X-Conveyor-Delivery"] = str(notice.id)

    lines = [notice.summary, ""]
    facts = [
        ("Service", notice.service),
        ("Environment", notice.environment),
        ("Release", notice.release),
        ("Commit", notice.sha),
        *notice.fields.items(),
        ("At", notice.at),
    ]
    lines += [f"{label}: {value}" for label, value in facts if value]
    if notice.url:
        lines += ["", f"Open in Conveyor: {notice.url}"]
    lines += ["", "-- ", f"Sent by Conveyor for the event {notice.event}."]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    return f"{code} {_one_line(text)}"[:300]


# The failures _classify words from a template, most specific class first: (the class, what it
# says, whether later could be better). {words}: the exception's most telling detail.
_FAILURES: tuple[tuple[type[Exception], str, bool], ...] = (
    (smtplib.SMTPNotSupportedError, "{where}: {exc}", False),
    (smtplib.SMTPServerDisconnected, "{where} closed the connection: {exc}", True),
    (smtplib.SMTPException, "{where}: {exc}", True),
    (ssl.SSLCertVerificationError, "{where}: its TLS certificate is not trusted: {words}", False),
    (ssl.SSLEOFError, "{where}: the TLS connection broke off: {exc}", True),
    (ssl.SSLError, "{where}: TLS failed ({words}); is the port right for {tls}?", False),
    (TimeoutError, "{where} did not answer in time", True),
    (OSError, "could not reach {where}: {words}", True),
)


def _classify(exc: Exception, server: SmtpServer) -> NotifyError | None:
    """What went wrong, and whether later could be better: 4xx SMTP replies and network
    trouble are temporary; 5xx replies, failed logins and TLS misconfiguration are not."""
    where = f"SMTP server {server}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        refused = "; ".join(f"{to}: {_reply(c, m)}" for to, (c, m) in exc.recipients.items())
        return NotifyError(
            f"{where} refused every recipient: {refused}",
            retry=all(400 <= c < 500 for c in codes),
        )
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return NotifyError(
            f"{where} refused the login: {_reply(exc.smtp_code, exc.smtp_error)}", retry=False
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        permanent = 500 <= exc.smtp_code < 600
        return NotifyError(
            f"{where} answered {_reply(exc.smtp_code, exc.smtp_error)}", retry=not permanent
        )
    for kind, message, retry in _FAILURES:
        if isinstance(exc, kind):
            words = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
            return NotifyError(
                message.format(
                    where=where,
                    exc=exc,
                    words=words or getattr(exc, "strerror", None) or exc,
                    tls="smtps" if server.implicit_tls else "STARTTLS",
                ),
                retry=retry,
            )
    return None


def _send(server: SmtpServer, msg: EmailMessage, timeout: float) -> dict[str, tuple[int, bytes]]:
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if server.implicit_tls:
        smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(server.host, server.port, timeout=timeout)
    try:
        if server.starttls:
            smtp.starttls(context=context)
        if server.username:
            smtp.login(server.username, server.password or "")
        refused = smtp.send_message(msg)
        # The message was accepted; a bad goodbye must not make the sender send it again.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
        return refused
    finally:
        smtp.close()


async def send_email(
    notifier: EmailNotifier,
    notice: Notice,
    *,
    default_smtp: str | None,
    default_from: str | None,
    timeout: float = 10,
) -> None:
    """One delivery attempt: the notifier's own SMTP URL, else the server's default."""
    url = notifier.smtp or default_smtp
    if not url:
        raise NotifyError(
            "no SMTP server configured: set `smtp:` on the email notifier "
            "(smtp://host:port or smtps://...) or give the server a default SMTP URL",
            retry=False,
        )
    server = parse_smtp_url(url)
    msg = email_for(notifier, notice, sender=notifier.from_ or default_from or DEFAULT_FROM)
    try:
        refused = await asyncio.to_thread(_send, server, msg, timeout)
    except Exception as exc:
        error = _classify(exc, server)
        if error is None:
            raise
        raise error from None
    if refused:
        details = "; ".join(f"{to}: {_reply(c, m)}" for to, (c, m) in refused.items())
        # The others have their copy; sending again would duplicate it for them.
        raise NotifyError(f"sent, but SMTP server {server} refused {details}", retry=False)


async def _deliver(options: EmailNotifier, notice: Notice, context: NotifyContext) -> None:
    await send_email(
        options, notice, default_smtp=context.default_smtp, default_from=context.default_from
    )


EXTENSION = notifier("email", EmailNotifier, _deliver, order=30)
