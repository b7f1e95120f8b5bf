"""Building the MIME message of a survey invitation or an alert: headers, plain-text part and HTML part.

Kept apart from sending so what a recipient gets can be read and tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError, NonASCIILocalPartDefect
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime, make_msgid
from urllib.parse import urlsplit

from hub import AlertMessage, Recipient, SkippableError, SurveyMessage
from hub_email.config import EmailSettings
from hub_email.render import Bodies, render_alert, render_survey


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, each header's class made once.

    The stock registry makes a new class for every header of every message it is asked for, which is about
    a quarter of the time it takes to compose a mail; the classes it makes are the same each time.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


#: ``email.policy.default`` (what ``EmailMessage()`` uses) with the header classes kept
POLICY = default.clone(header_factory=_HeaderClasses())


@dataclass(frozen=True)
class Outgoing:
    """A message ready to send, with its envelope recipient and its Message-ID (returned to the hub)."""

    message: EmailMessage
    recipient: str
    message_id: str


def recipient_address(recipient: Recipient) -> Address:
    """The recipient's address, or ``SkippableError`` so the hub tries the campaign's next channel."""
    email = (recipient.email or "").strip()
    if not email:
        raise SkippableError("no email address")
    local, _, domain = email.rpartition("@")
    try:
        # an internationalised domain (blåbær.no) travels as its ASCII form, which every server accepts
        ascii_domain = domain.encode("idna").decode("ascii")
        address = Address(display_name=one_line(recipient.name or ""), addr_spec=f"{local}@{ascii_domain}")
    except NonASCIILocalPartDefect:
        raise SkippableError(
            f"{email!r} has non-ASCII characters before the @, which this channel cannot send to"
        ) from None
    except (UnicodeError, ValueError, IndexError, HeaderParseError):
        raise SkippableError(f"{email!r} is not a valid email address") from None
    if not address.username or not address.domain or address.addr_spec != f"{local}@{ascii_domain}":
        raise SkippableError(f"{email!r} is not a valid email address")
    return address


def one_line(text: str) -> str:
    """Collapse line breaks and runs of spaces: a header may not contain a line break (header injection)."""
    return " ".join(text.split())


def _base(settings: EmailSettings, to: Address, subject: str, from_name: str) -> EmailMessage:
    msg = EmailMessage(policy=POLICY)
    msg["From"] = Address(display_name=one_line(from_name), addr_spec=settings.from_address)
    msg["To"] = to
    if settings.reply_to:
        msg["Reply-To"] = settings.reply_to
    msg["Subject"] = one_line(subject)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=settings.from_domain)
    # RFC 3834: machine-made mail; asks vacation responders not to answer it. The second header is the same
    # request in the form Exchange and Outlook understand.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    return msg


def _attach(msg: EmailMessage, to: Address, bodies: Bodies, language: str) -> Outgoing:
    # quoted-printable keeps every line short and 7-bit, so the message survives relays that lack 8BITMIME
    # and the line-length limit of RFC 5322, whatever the text and the HTML contain.
    msg.set_content(bodies.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(bodies.html, subtype="html", charset="utf-8", cte="quoted-printable")
    # set last: making the message multipart moves every Content-* header into its first part
    msg["Content-Language"] = language
    return Outgoing(message=msg, recipient=to.addr_spec, message_id=str(msg["Message-ID"]))


def survey_email(message: SurveyMessage, settings: EmailSettings) -> Outgoing:
    """The invitation (or reminder) as multipart/alternative, with one-click unsubscribe headers."""
    to = recipient_address(message.recipient)
    from_name = settings.from_name or message.branding.company_name
    msg = _base(settings, to, message.subject, from_name)
    msg["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
    # RFC 8058: the one-click signal is only valid next to an HTTPS URI; the hub answers the POST it triggers.
    if urlsplit(message.unsubscribe_url).scheme == "https":
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return _attach(msg, to, render_survey(message), message.language)


def alert_email(message: AlertMessage, settings: EmailSettings) -> Outgoing:
    """An alert to a colleague: plain text first, a simple HTML version as the alternative."""
    to = recipient_address(message.recipient)
    msg = _base(settings, to, message.subject, settings.from_name or "")
    return _attach(msg, to, render_alert(message), message.recipient.language)
