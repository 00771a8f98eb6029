"""Sending one email over SMTP (STARTTLS and login as configured), and what the answer means.

``send`` returns DELIVERED (the server accepted it) or BOUNCED (a permanent 5xx refusal of the
recipient or of the message's data). Anything that may pass on a retry (4xx, connection,
timeout) and a configuration problem (wrong credentials, STARTTLS required or not offered)
raise :class:`TemporaryFailure`: the sender then waits and retries. It never turns its own
misconfiguration into bounces (a bounce stops a customer's marketing).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

from streams.sender.render import Email

# 5xx replies that are about our session (TLS or authentication required, credentials), never
# about the customer's address: they must not become bounces, which stop a customer's marketing.
_OURS = frozenset({530, 534, 535, 538})


class TemporaryFailure(Exception):
    pass


class SmtpTransport:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender_address: str,
        starttls: bool = True,
        username: str | None = None,
        password: str | None = None,
        cafile: Path | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.host, self.port = host, port
        self.sender_address = sender_address
        self.starttls = starttls
        self.username, self.password = username, password
        self.cafile = cafile
        self.timeout_s = timeout_s

    def message(self, email: Email) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender_address
        message["To"] = email.recipient
        message["Subject"] = email.subject
        message["Date"] = formatdate(localtime=False)
        # Derived from the trigger id: a resend after a crash carries the same Message-ID.
        message["Message-ID"] = f"<{email.trigger_id}@journey>"
        message["Content-Language"] = email.locale
        message["X-Journey-Trigger-Id"] = email.trigger_id
        message["X-Journey-Trigger-Type"] = email.trigger_type
        # What an email service echoes back with its open/click reports (and what the demo's
        # simulated recipients, streams/sender/recipients.py, read): whose message it is.
        message["X-Journey-Customer-Id"] = email.customer_id
        message.set_content(email.body)
        return message

    def send(self, email: Email) -> tuple[str, str]:
        """(status, detail). Blocking: run it in a thread."""
        message = self.message(email)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    context = ssl.create_default_context(
                        cafile=str(self.cafile) if self.cafile else None
                    )
                    smtp.starttls(context=context)
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            if 500 <= code < 600 and code not in _OURS:
                return "BOUNCED", f"{code} {_text(text)}"
            raise TemporaryFailure(f"recipient refused: {code} {_text(text)}") from exc
        except smtplib.SMTPDataError as exc:  # the message itself, for this recipient
            if 500 <= exc.smtp_code < 600 and exc.smtp_code not in _OURS:
                return "BOUNCED", f"{exc.smtp_code} {_text(exc.smtp_error)}"
            raise TemporaryFailure(f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}") from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise TemporaryFailure(
                f"SMTP login refused ({exc.smtp_code}): check JOURNEY_SENDER_SMTP_USERNAME and "
                "_PASSWORD"
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise TemporaryFailure(
                f"SMTP server {self.host}:{self.port}: {exc} (JOURNEY_SENDER_SMTP_STARTTLS?)"
            ) from exc
        except smtplib.SMTPResponseException as exc:  # sender refused, TLS/auth required, ...
            raise TemporaryFailure(
                f"SMTP server {self.host}:{self.port} answered {exc.smtp_code} "
                f"{_text(exc.smtp_error)} (a setting of ours, not the customer's address)"
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise TemporaryFailure(
                f"SMTP server {self.host}:{self.port}: {type(exc).__name__}: {exc}"
            ) from exc
        return "DELIVERED", "accepted"


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply
