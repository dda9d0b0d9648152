"""A contract server for Ollama's API (no Ollama binary or image can run here).

It checks requests the way Ollama's server does: a blob's digest must match the bytes uploaded
to it, `create` must name blobs that exist, a chat must name a created model (`name` and
`name:latest` are the same model), and the request shapes must be the documented ones.
`ContractEngine` plays the container engine for deploy tests: "running" the Ollama container
starts this server on the spec's published port, so deploy's real HTTP clients talk to it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from deployer.core.errors import HealthTimeout, NameInUse, PortInUse
from deployer.core.serve.containers import (
    ContainerInfo,
    EngineInfo,
    ImageInfo,
    MemoryUse,
    ProgressFn,
)
from deployer.core.serve.specs import ContainerSpec, VolumeSpec
from tests.integration.loopback import wait_http_200


@dataclass
class OllamaContract:
    """State the tests inspect: blobs received, models created, request log."""

    blobs: dict[str, int] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    version: str = "0.12.6"
    # Injected failures: path -> (HTTP status, error text), answered instead of the real thing.
    fail: dict[str, tuple[int, str]] = field(default_factory=dict)
    chats: list[dict[str, Any]] = field(default_factory=list)
    generates: list[dict[str, Any]] = field(default_factory=list)
    # What the "model" answers a raw generate, one string per token (a count continued).
    continuation: list[str] = field(
        default_factory=lambda: [" 8", ",", " 9", ",", " 1", "0", ",", " 1", "1"]
    )


def _tagged(model: str) -> str:
    """Ollama's model names get `:latest` when they carry no tag."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def serve(
    contract: OllamaContract, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[ThreadingHTTPServer, str]:
    """Start the contract server (any free port by default); returns (server, base URL)."""

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
            if self.path in contract.fail:
                status, text = contract.fail[self.path]
                return self._reply(status, {"error": text})
            if self.path == "/v1/chat/completions":
                return self._chat(json.loads(body))
            if self.path == "/api/generate":
                return self._generate(json.loads(body))
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
                contract.models[_tagged(req["model"])] = req
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

        def _chat(self, req: dict[str, Any]) -> None:
            # Ollama's OpenAI-compatible API: errors are {"error": {"message", "type"}}.
            model = req.get("model")
            messages = req.get("messages")
            if not isinstance(model, str) or not model:
                return self._reply(400, {"error": {"message": "model is required",
                                                   "type": "invalid_request_error"}})  # fmt: skip
            if not isinstance(messages, list) or not messages:
                return self._reply(400, {"error": {"message": "messages is required",
                                                   "type": "invalid_request_error"}})  # fmt: skip
            if _tagged(model) not in contract.models:
                text = f'model "{model}" not found, try pulling it first'
                return self._reply(404, {"error": {"message": text, "type": "api_error"}})
            contract.chats.append(req)
            words = ["Hello", " there", ",", " how", " are", " you", " today", "?", " I"]
            limit = int(req.get("max_tokens") or len(words))
            content = "".join(words[:limit])
            return self._reply(200, {
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                "model": model, "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "length" if limit < len(words) else "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": min(limit, len(words)),
                          "total_tokens": 12 + min(limit, len(words))},
            })  # fmt: skip

        def _generate(self, req: dict[str, Any]) -> None:
            # Ollama's native API: errors are {"error": "..."}; durations in nanoseconds.
            model, prompt = req.get("model"), req.get("prompt")
            if not isinstance(model, str) or not model:
                return self._reply(400, {"error": "model is required"})
            if _tagged(model) not in contract.models:
                return self._reply(404, {"error": f"model '{model}' not found"})
            if not isinstance(prompt, str) or not isinstance(req.get("raw", False), bool):
                return self._reply(400, {"error": "invalid request: prompt and raw"})
            if req.get("stream", True) is not False:
                # Ollama would stream NDJSON; deployer always asks for one answer.
                return self._reply(400, {"error": "contract: only stream=false is modelled"})
            contract.generates.append(req)
            options = req.get("options") or {}
            limit = int(options.get("num_predict") or len(contract.continuation))
            tokens = contract.continuation[:limit]
            return self._reply(200, {
                "model": model, "created_at": "2026-11-29T00:00:00Z",
                "response": "".join(tokens), "done": True,
                "done_reason": "length" if limit < len(contract.continuation) else "stop",
                "prompt_eval_count": 12, "prompt_eval_duration": 40_000_000,
                "eval_count": len(tokens), "eval_duration": 200_000_000,
                "total_duration": 250_000_000, "load_duration": 10_000_000,
            })  # fmt: skip

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class ContractEngine:
    """The container engine for Ollama deploy tests (deployer.core.serve.containers.ContainerEngine).

    The official Ollama image cannot run on this machine, so `run_container` records the spec
    and starts the contract server on the spec's published address instead; everything deploy
    does over HTTP (health, create, smoke test) reaches that server for real.
    """

    def __init__(self, contract: OllamaContract, image: str = "") -> None:
        self.contract = contract
        self.image = image
        self.specs: list[ContainerSpec] = []
        self.volumes: dict[str, VolumeSpec] = {}
        self.running: dict[str, tuple[ContainerSpec, ThreadingHTTPServer]] = {}
        self.removed: list[str] = []
        self.removed_volumes: list[str] = []

    def engine_available(self) -> EngineInfo:
        return EngineInfo("contract", "1.41", "linux", "x86_64", "contract://")

    def create_volume(self, *, spec: VolumeSpec) -> bool:
        if spec.name in self.volumes:
            return False
        self.volumes[spec.name] = spec
        return True

    def remove_volume(self, *, name: str) -> bool:
        self.removed_volumes.append(name)
        return self.volumes.pop(name, None) is not None

    def remove_network(self, *, name: str) -> bool:
        return False

    def list_deployer_volumes(self) -> dict[str, str]:
        return {n: v.labels.get("io.deployer.name", "") for n, v in self.volumes.items()}

    def run_container(self, *, spec: ContainerSpec) -> str:
        if any(s.name == spec.name for s, _ in self.running.values()):
            raise NameInUse(spec.name)
        for m in spec.mounts:
            if not m.read_only and m.source not in self.volumes:
                raise AssertionError(f"volume {m.source} used before it was created")
        self.specs.append(spec)
        try:
            server, _ = serve(self.contract, host=spec.host_ip, port=spec.host_port)
        except OSError:
            raise PortInUse(spec.host_ip, spec.host_port) from None
        cid = f"c{len(self.specs):063d}"
        self.running[cid] = (spec, server)
        return cid

    def wait_healthy(
        self,
        *,
        container_id: str,
        timeout_s: float,
        on_progress: ProgressFn | None = None,
        ready_url: str | None = None,
        poll_s: float = 0.5,
    ) -> None:
        assert ready_url is not None, "the Ollama image has no curl: deploy must poll itself"
        spec, _ = self.running[container_id]
        if not wait_http_200(ready_url, timeout_s, poll_s):
            raise HealthTimeout(spec.name, timeout_s, "starting", [])

    def memory_use(self, *, container_id: str) -> MemoryUse:
        """No cgroup here: nothing known."""
        return MemoryUse()

    def container_logs(self, *, container_id: str, tail: int, follow: bool) -> Iterator[str]:
        yield from (f"{m} {p}" for m, p in self.contract.requests[-tail:])

    def stop_and_remove(self, *, name_or_id: str, timeout_s: float = 10.0) -> bool:
        for cid, (spec, server) in list(self.running.items()):
            if name_or_id in (cid, spec.name):
                server.shutdown()
                server.server_close()
                del self.running[cid]
                self.removed.append(cid)
                return True
        return False

    def list_deployer_containers(self) -> list[ContainerInfo]:
        return [
            ContainerInfo(
                id=cid,
                name=spec.name,
                image=spec.image,
                labels=dict(spec.labels),
                status="running",
                health="healthy",
                started_at="2026-11-28T00:00:00Z",
                ports={f"{spec.container_port}/tcp": f"{spec.host_ip}:{spec.host_port}"},
            )
            for cid, (spec, _) in self.running.items()
        ]

    def image_info(self, *, tag: str) -> ImageInfo | None:
        return ImageInfo(tag, "sha256:" + "0" * 64, 1, {}) if tag == self.image else None

    def try_pull(self, *, tag: str) -> bool:
        return False
