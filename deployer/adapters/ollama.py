"""Ollama's HTTP API for the create step: version, blob upload, model create, readiness.

Ollama cannot run on this project's machines; the flow is tested against a contract server
(tests/integration/ollama_contract.py) that checks each request the way Ollama's API does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from deployer.core.errors import DeployerError, ExternalUnavailable

CHUNK = 1 << 20


@dataclass
class OllamaError(DeployerError):
    """Ollama answered a request with an error."""

    step: str
    status: int
    detail: str

    def message(self) -> str:
        return f"Ollama refused {self.step} (HTTP {self.status}): {self.detail}"


def sha256_digest(path: Path) -> str:
    """`sha256:<hex>` of a file, as Ollama names blobs."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


class OllamaClient:
    """A thin client for the few endpoints deployer needs."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | IO[bytes] | None = None,
        step: str,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(
            f"{self.base_url}{path}", data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            if method == "HEAD" and exc.code == 404:
                return 404, b""
            detail = exc.read().decode(errors="replace")[:300]
            with contextlib.suppress(ValueError):
                detail = str(json.loads(detail).get("error", detail))
            raise OllamaError(step, exc.code, detail) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ExternalUnavailable("Ollama", f"{self.base_url}: {exc}") from None

    def version(self) -> str:
        """The server's version (GET /api/version)."""
        _, raw = self._request("GET", "/api/version", step="version")
        return str(json.loads(raw)["version"])

    def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.2) -> str:
        """Poll /api/version until the server answers; returns its version."""
        end = time.monotonic() + timeout_s
        while True:
            try:
                return self.version()
            except ExternalUnavailable:
                if time.monotonic() > end:
                    raise
                time.sleep(poll_s)

    def has_blob(self, digest: str) -> bool:
        """Whether the server holds the blob already (HEAD /api/blobs/<digest>)."""
        status, _ = self._request("HEAD", f"/api/blobs/{digest}", step="blob check")
        return status == 200

    def push_blob(self, path: Path, digest: str | None = None) -> tuple[str, bool]:
        """Upload a file as a blob unless present; returns (digest, uploaded)."""
        digest = digest or sha256_digest(path)
        if self.has_blob(digest):
            return digest, False
        size = path.stat().st_size
        with path.open("rb") as fh:  # streamed: a GGUF can be larger than free memory
            self._request(
                "POST", f"/api/blobs/{digest}", body=fh, step="blob upload",
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(size)},
            )  # fmt: skip
        return digest, True

    def create(
        self,
        name: str,
        *,
        files: dict[str, str],
        parameters: dict[str, Any] | None = None,
        template: str | None = None,
    ) -> list[dict[str, Any]]:
        """Create model `name` from uploaded blobs (POST /api/create); returns the statuses.

        `template` (a Go template) only for a GGUF without its own chat template."""
        body: dict[str, Any] = {"model": name, "files": files, "stream": False}
        if parameters:
            body["parameters"] = parameters
        if template:
            body["template"] = template
        _, raw = self._request(
            "POST", "/api/create", body=json.dumps(body).encode(), step="create",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        if not lines or lines[-1].get("status") != "success":
            raise OllamaError("create", 200, f"no success status in {lines[-1:]}")
        return lines


def create_from_gguf(
    client: OllamaClient, name: str, model_path: Path, *, num_ctx: int, num_gpu: int | None = None
) -> dict[str, Any]:
    """The create step: upload the GGUF once, create the model with its parameters."""
    params: dict[str, Any] = {"num_ctx": num_ctx}
    if num_gpu is not None:
        params["num_gpu"] = num_gpu
    return create_model(client, name, model_path, params)


def create_model(
    client: OllamaClient,
    name: str,
    model_path: Path,
    parameters: dict[str, Any],
    template: str | None = None,
) -> dict[str, Any]:
    """Wait for the server, upload the GGUF unless held, create `name` with `parameters`."""
    version = client.wait_ready()
    digest, uploaded = client.push_blob(model_path)
    client.create(name, files={model_path.name: digest}, parameters=parameters, template=template)
    return {"version": version, "digest": digest, "uploaded": uploaded}


def create_in_server(
    endpoint: str,
    *,
    name: str,
    model_path: Path,
    parameters: dict[str, Any],
    timeout_s: float,
    template: str | None = None,
) -> dict[str, Any]:
    """deploy's create step (deployer.core.serve.servers.ModelCreator) over the HTTP API."""
    client = OllamaClient(endpoint, timeout_s=timeout_s)
    return create_model(client, name, model_path, parameters, template)
