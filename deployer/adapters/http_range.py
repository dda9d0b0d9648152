"""Range GETs whose body is read straight into the caller's buffer (stdlib http.client).

huggingface_hub's session (httpx) hands a body out as 64 KiB bytes objects that h11 has copied
twice; on a fast link that per-chunk work, not the network, bounds a pull (on loopback it cost
more CPU than the sha256). For the body bytes of a file we therefore open the connection
ourselves, with the library's URL and headers, and `recv_into` reused buffers. Only a plain
200/206 is read here: anything else (an error status, a proxy or a custom client configured for
the library) returns None, and the caller makes the same request through the library's session,
so errors, proxies and configuration stay the library's. Every HTTPS connection shares one
verifying TLS context.
"""

from __future__ import annotations

import functools
import http.client
import ssl
import urllib.request
from urllib.parse import urljoin, urlsplit

_REDIRECTS = 5
_REDIRECT_CODES = (301, 302, 303, 307, 308)


def range_total(content_range: str | None) -> int | None:
    """The complete length in a `Content-Range: bytes a-b/N` header; None if absent or '*'."""
    if not content_range:
        return None
    _, _, total = content_range.rpartition("/")
    return int(total) if total.strip().isdigit() and len(total) < 20 else None


class RangeCut(Exception):
    """The connection failed or closed before the requested bytes arrived (retryable)."""


def library_is_default() -> bool:
    """True when huggingface_hub still uses its own default HTTP client (no user factory)."""
    try:
        from huggingface_hub.utils import _http

        return bool(_http._GLOBAL_CLIENT_FACTORY is _http.default_client_factory)
    except (ImportError, AttributeError):  # another library version: stay on its session
        return False


def _proxied(url: str) -> bool:
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class RangeBody:
    """The open body of one 200/206 response."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self.conn, self.resp = conn, resp
        self.status = resp.status
        self.left = int(resp.getheader("Content-Length") or 0)
        # the whole file's length as the server states it: the caller compares it to the
        # listing's (a 200 states it in Content-Length, a 206 after the '/' of Content-Range)
        self.total = (
            self.left if resp.status == 200 else range_total(resp.getheader("Content-Range"))
        )

    def readinto(self, view: memoryview) -> int:
        """Bytes the socket has now, up to len(view), in one read (0: the body ended).

        One read, not a full buffer: what arrived is written before the next read, so a kill
        loses at most one socket read per connection.
        """
        view = view[: self.left]
        if not view:
            return 0
        try:
            n = self.resp.fp.readinto1(view)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise RangeCut(str(exc) or type(exc).__name__) from exc
        self.left -= n
        return n

    def close(self) -> None:
        """Close the connection (a partly read body cannot be reused)."""
        self.conn.close()

    def __enter__(self) -> RangeBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """One verifying context for every HTTPS connection (loading the CA bundle takes ~20 ms)."""
    return ssl.create_default_context()


def _open(
    url: str, headers: dict[str, str], timeout_s: float
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse] | None:
    """GET url, following redirects; None where the library's session must make the request."""
    if not library_is_default():
        return None
    for _ in range(_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or _proxied(url):
            return None
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout_s, context=_tls_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", path or "/", headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise RangeCut(str(exc) or type(exc).__name__) from exc
        if resp.status in _REDIRECT_CODES and resp.getheader("Location"):
            target = urljoin(url, resp.getheader("Location", ""))
            conn.close()
            if urlsplit(target).netloc != parts.netloc:  # as httpx does: no token elsewhere
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = target
            continue
        return conn, resp
    return None


def open_range(
    url: str, headers: dict[str, str], start: int, end: int, timeout_s: float
) -> RangeBody | None:
    """GET bytes start..end of url; None where the library's session must make the request."""
    headers = {**headers, "Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"}
    opened = _open(url, headers, timeout_s)
    if opened is None:
        return None
    conn, resp = opened
    encoding = (resp.getheader("Content-Encoding") or "identity").lower()
    plain = encoding == "identity" and not resp.chunked and resp.getheader("Content-Length")
    if resp.status not in (200, 206) or not plain:
        conn.close()
        return None
    return RangeBody(conn, resp)
