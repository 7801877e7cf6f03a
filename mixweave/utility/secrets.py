"""Keeping credentials out of every artifact and log line of utility estimation.

Three kinds of secret are scrubbed (replaced with :data:`REDACTED`):

- known values: the API key read from the environment, and the credentials found in a base URL;
- credentials inside URLs: userinfo (``https://user:pass@host``) and query parameters whose name
  looks secret (``?api_key=``, ``?key=``, ``?token=``, ``sig``, ``password`` ...);
- ``Authorization``-style values in text (``Bearer <token>``, ``Basic <token>``, ``api_key=...``) and mapping
  entries whose key names a secret (``api_key``, ``token``, ``password`` ...).

Call :func:`scrub` on anything about to be written or logged; it leaves other data untouched.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***"
MIN_SECRET_LEN = 4
"""Known secret values shorter than this are not replaced inside text (too many false hits)."""

_SECRET_PARAM = re.compile(r"key|token|secret|pass|pwd|sig|auth|credential|session|cookie", re.I)
_SECRET_FIELD = re.compile(r"^(api[_-]?key|x-api-key|key|token|access[_-]?token|secret|client[_-]?secret|"
                           r"password|passwd|pwd|authorization|auth|cookie)$", re.I)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_AUTH_VALUE = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.I)
_HEADER_VALUE = re.compile(r"((?:x-)?api[_-]?key|authorization)(\"?\s*[:=]\s*\"?)[^\s'\",}&]+", re.I)


def is_secret_param(name: str) -> bool:
    """True when a query parameter or field of this name probably holds a credential."""
    return bool(_SECRET_PARAM.search(name))


def url_secrets(url: str) -> list[str]:
    """The credential values inside ``url``: userinfo user and password, secret query values."""
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        userinfo = [parts.password or "", parts.username or ""] if "@" in parts.netloc else []
    except ValueError:
        return []
    found = [urllib.parse.unquote(v) for v in userinfo] + [v for k, v in query if is_secret_param(k)]
    return [v for v in found if v]


def redact_url(url: str) -> str:
    """``url`` with userinfo and secret query values replaced by ``***`` (the rest unchanged)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rpartition("@")[2]
    pairs = []
    for piece in parts.query.split("&") if parts.query else []:
        name, eq, _ = piece.partition("=")
        pairs.append(f"{name}={REDACTED}" if eq and is_secret_param(urllib.parse.unquote_plus(name)) else piece)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "&".join(pairs), parts.fragment))


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with known secret values, URL credentials and auth header values replaced."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
        quoted = urllib.parse.quote(secret, safe="")
        if quoted != secret:
            text = text.replace(quoted, REDACTED)
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _HEADER_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def scrub(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of ``value`` (nested dicts, lists, tuples, strings) with every secret replaced;
    string entries of mappings named like a credential (``api_key``, ``token`` ...) lose their value."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, Mapping):
        return {k: (REDACTED if isinstance(v, str) and v and _SECRET_FIELD.match(str(k)) else scrub(v, secrets))
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, tuple):
        return tuple(scrub(v, secrets) for v in value)
    return value
