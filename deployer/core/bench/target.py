"""What `deployer bench` was pointed at: a deployment's name, or the URL of any
OpenAI-compatible server."""

from __future__ import annotations

import re

from deployer.core.errors import InvalidRequest
from deployer.core.untrusted import shown

# scheme, host (name, IPv4 or [IPv6]), optional port, optional path; no user, query or fragment
_URL_RE = re.compile(
    r"^(https?)://([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$"
)


def is_url(text: str) -> bool:
    """Whether `text` is meant as a URL rather than a deployment name."""
    return "://" in text


def endpoint_of(text: str) -> str:
    """The server's base URL: http(s)://HOST[:PORT][/PATH], without a trailing `/v1`."""
    m = _URL_RE.fullmatch(text)
    port = m.group(3) if m else None
    if m is None or (port is not None and not 1 <= int(port[1:]) <= 65535):
        raise InvalidRequest(
            f"{shown(text)} is not a server URL",
            "Use http://HOST:PORT (no user, query or fragment), or a deployment name.",
        )
    base = text.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base
