"""Requests to a deployment's own server that carry its API key (`top`, `ps`, the smoke test).

The key goes only where the request was addressed: no proxy from the environment (http_proxy
would see the Bearer key in clear) and no redirect followed (urllib would copy the header to
wherever a Location points). A redirect answers as its HTTP status instead.
"""

from __future__ import annotations

import http.client
import urllib.request
from typing import Any, cast


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def open_direct(req: urllib.request.Request, timeout_s: float) -> http.client.HTTPResponse:
    """`req` sent straight to its host, redirects not followed (HTTPError for a 3xx)."""
    return cast(http.client.HTTPResponse, _OPENER.open(req, timeout=timeout_s))
