"""Ask a router deployment which of its models are loaded (GET /models), bounded and quietly:
a server that does not answer, or answers nonsense, is 'unknown', never an error."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from deployer.adapters.key_files import KeyFileProblem, read_key_file
from deployer.adapters.keyed_http import open_direct
from deployer.core.serve.router import ModelState, parse_models_status

MAX_ANSWER_BYTES = 1024 * 1024


def _key(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return read_key_file(Path(path))
    except KeyFileProblem:
        return None  # asked without a key: the router answers 401 and the state is 'unknown'


def router_models(
    endpoint: str, api_key_path: str | None, *, timeout_s: float = 2.0
) -> list[ModelState] | None:
    """Each model's state as the router reports it; None when it could not be asked."""
    headers = {}
    key = _key(api_key_path)
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"{endpoint}/models", headers=headers)
    try:
        with open_direct(req, timeout_s) as resp:
            raw = resp.read(MAX_ANSWER_BYTES + 1)
        if len(raw) > MAX_ANSWER_BYTES:
            return None
        return parse_models_status(json.loads(raw))
    except (urllib.error.URLError, OSError, ValueError):
        return None
