"""HTTP transport of the ``openai`` backend: one POST under a wall-clock deadline.

A socket timeout bounds each *read*, so a server that drips one byte a second never trips it.
:func:`post_json` therefore arms a watchdog timer per attempt that shuts the connection's socket
down when ``timeout_s`` has passed (connect, TLS, send, headers and body together); the blocked
read then returns and the attempt fails as a timeout. Redirects are not followed (the
``Authorization`` header must not travel to another host), bodies above ``max_bytes`` are
refused, and environment proxies still apply (stdlib ``urllib`` handlers).

:func:`split_base_url` keeps credentials out of the URL that is shown anywhere: userinfo becomes a
``Basic`` header, secret-looking query parameters stay on the wire but are redacted for display.
"""

from __future__ import annotations

import base64
import http.client
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from mixweave.errors import ConfigError
from mixweave.utility.secrets import redact_url, url_secrets

MAX_ERROR_BYTES = 64 * 1024
"""At most this much of an HTTP error body is read (it only feeds a short error message)."""


class RequestFailed(Exception):
    """One HTTP attempt failed; ``kind`` names the failure, ``retryable`` says whether to retry."""

    def __init__(self, kind: str, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.retryable, self.retry_after = kind, retryable, retry_after


# -- the base URL ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where requests go: ``root`` (scheme://host[:port]/path, no credentials), the query string
    sent with every request, an optional ``Basic`` auth value from userinfo, and ``shown`` (the URL
    with every credential replaced by ``***``, the only form that may be logged or stored)."""

    root: str
    query: str
    shown: str
    basic_auth: str | None = field(default=None, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def url(self, path: str) -> str:
        return self.root + path + (f"?{self.query}" if self.query else "")


def split_base_url(base_url: Any) -> Target:
    """Parse ``base_url`` (``http(s)://[user:pass@]host[:port]/path[?query]``) into a :class:`Target`;
    ConfigError naming the fix when it is not such a URL (the message never repeats credentials)."""
    text = str(base_url or "")
    hint = "give base_url as http(s)://host:port/v1, e.g. http://127.0.0.1:8000/v1 (--base-url)"
    try:
        parts = urllib.parse.urlsplit(text)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        shown = redact_url(text) if text else "nothing"
        raise ConfigError(f"backend 'openai' needs a valid base_url (got {shown!r}); {hint}")
    host = parts.netloc.rpartition("@")[2]
    basic = None
    if parts.username is not None or parts.password is not None:
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    root = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    secrets = tuple(url_secrets(text)) + ((basic,) if basic else ())
    return Target(root, parts.query, redact_url(text.rstrip("/")), basic, secrets)


# -- one attempt under a deadline -------------------------------------------------------------
class Watchdog:
    """Shuts down every socket of one attempt once :meth:`expire` runs (from a timer thread)."""

    def __init__(self) -> None:
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def register(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._socks.append(sock)
            late = self.expired
        if late:
            _shutdown(sock)
        return sock

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _tracked(cls: type, watchdog: Watchdog) -> Any:
    """A connection factory for ``do_open`` whose raw sockets the watchdog can shut down (set
    before any byte moves, so a dripped TLS handshake is bounded too)."""

    def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = cls(host, **kwargs)
        create = conn._create_connection  # stdlib hook: socket.create_connection by default
        conn._create_connection = lambda *a, **kw: watchdog.register(create(*a, **kw))
        return conn

    return make


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_tracked(http.client.HTTPConnection, self._watchdog), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_tracked(http.client.HTTPSConnection, self._watchdog), req, context=self._context)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx becomes an HTTPError (not retried)


def post_json(url: str, data: bytes, headers: dict[str, str], *, timeout_s: float, max_bytes: int) -> bytes:
    """POST ``data`` and return the raw 200 body, or raise :class:`RequestFailed`. The whole
    attempt (connect to last byte) takes at most about ``timeout_s`` seconds."""
    watchdog = Watchdog()
    opener = urllib.request.build_opener(_HTTPHandler(watchdog), _HTTPSHandler(watchdog), _NoRedirect())
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    timer = threading.Timer(timeout_s, watchdog.expire)
    timer.daemon = True
    timer.start()
    try:
        with opener.open(req, timeout=timeout_s) as resp:
            raw = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise _http_error(exc, watchdog) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _transport_error(exc, watchdog, timeout_s) from None
    finally:
        timer.cancel()
    if watchdog.expired:
        raise _deadline(timeout_s)
    if len(raw) > max_bytes:
        raise RequestFailed("too_large", f"response body larger than {max_bytes} bytes; raise max_response_bytes "
                            "if the server really sends that much", retryable=False)
    return raw


def _deadline(timeout_s: float) -> RequestFailed:
    return RequestFailed("timeout", f"no complete answer within {timeout_s:g}s (the whole attempt's deadline)",
                         retryable=True)


def _http_error(exc: urllib.error.HTTPError, watchdog: Watchdog) -> RequestFailed:
    status = exc.code
    retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
    try:
        detail = exc.read(MAX_ERROR_BYTES) if not watchdog.expired else b""
    except (OSError, http.client.HTTPException, ValueError):
        detail = b""
    finally:
        exc.close()
    retryable = status in (408, 409, 429) or status >= 500
    kind = f"http_{status}" if status in (429, 500, 502, 503, 504) else f"http_{status // 100}xx"
    return RequestFailed(kind, f"HTTP {status}: {short(detail)}", retryable=retryable, retry_after=retry_after)


def _transport_error(exc: BaseException, watchdog: Watchdog, timeout_s: float) -> RequestFailed:
    if watchdog.expired:
        return _deadline(timeout_s)
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return RequestFailed("timeout", f"no answer within {timeout_s:g}s", retryable=True)
    return RequestFailed("connection", f"connection: {type(reason).__name__}: {reason}", retryable=True)


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds == seconds else None


def short(raw: bytes | str, limit: int = 200) -> str:
    """One line of at most ``limit`` characters of a body, for error messages."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")
