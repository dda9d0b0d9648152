"""A contract server for Ollama's API (no Ollama binary or image can run here).

It checks requests the way Ollama's server does: a blob's digest must match the bytes uploaded
to it, `create` must name blobs that exist, and the request shapes must be the documented ones.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class OllamaContract:
    """State the tests inspect: blobs received, models created, request log."""

    blobs: dict[str, int] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    version: str = "0.12.6"


def serve(contract: OllamaContract) -> tuple[ThreadingHTTPServer, str]:
    """Start the contract server on 127.0.0.1; returns (server, base URL)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any = None) -> None:
            raw = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

        def do_GET(self) -> None:
            contract.requests.append(("GET", self.path))
            if self.path == "/api/version":
                self._reply(200, {"version": contract.version})
            else:
                self._reply(404, {"error": "not found"})

        def do_HEAD(self) -> None:
            contract.requests.append(("HEAD", self.path))
            digest = self.path.removeprefix("/api/blobs/")
            self._reply(200 if digest in contract.blobs else 404)

        def do_POST(self) -> None:
            contract.requests.append(("POST", self.path))
            size = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(size)
            if self.path.startswith("/api/blobs/"):
                digest = self.path.removeprefix("/api/blobs/")
                if not digest.startswith("sha256:"):
                    return self._reply(400, {"error": "invalid digest format"})
                if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                    return self._reply(400, {"error": "digest mismatch"})
                contract.blobs[digest] = len(body)
                return self._reply(201)
            if self.path == "/api/create":
                req = json.loads(body)
                if not isinstance(req.get("model"), str) or not req["model"]:
                    return self._reply(400, {"error": "model is required"})
                files = req.get("files") or {}
                missing = [d for d in files.values() if d not in contract.blobs]
                if not files or missing:
                    return self._reply(400, {"error": f"blobs missing: {missing}"})
                contract.models[req["model"]] = req
                lines = [{"status": "parsing GGUF"}, {"status": "writing manifest"},
                         {"status": "success"}]  # fmt: skip
                raw = "\n".join(json.dumps(x) for x in lines).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                return None
            return self._reply(404, {"error": "not found"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
