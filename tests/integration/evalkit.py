"""Helpers for the eval tests: a native llama-server started with given flags, a proxy that
counts the requests reaching it, and a stand-in for a closed API (an in-process server that
checks the Bearer key, can rate-limit once, and answers chats from a table)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2

from tests.integration.loopback import free_port, wait_http_200


def llama_server_binary() -> str | None:
    """The llama-server scripts/build-llama.sh built, or one on PATH."""
    from deployer.adapters.image_build import default_prefix

    env = os.environ.get("DEPLOYER_LLAMA_PREFIX")
    prefix = Path(env) if env else default_prefix()
    if (prefix / "bin" / "llama-server").is_file():
        return str(prefix / "bin" / "llama-server")
    return shutil.which("llama-server")


def start_llama(
    binary: str, model: Path, extra: list[str], log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """A llama-server on a free port (1 slot, 1 thread, small context); (process, base URL)."""
    port = free_port()
    cmd = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
           "-c", "1024", "-np", "1", "-t", "1", *extra]  # fmt: skip
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if not wait_http_200(f"{url}/health", timeout_s=120):
        proc.kill()
        raise RuntimeError(f"llama-server did not start: {log.read_text()[-2000:]}")
    return proc, url


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _Server:
    """A threaded HTTP server on 127.0.0.1 whose POSTs go to `handle(path, headers, body)`."""

    def __init__(
        self,
        handle: Callable[[str, dict[str, str], dict[str, Any]], tuple[int, dict[str, str], bytes]],
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size) or b"{}")
                status, headers, payload = handle(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        del outer

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class CountingProxy(_Server):
    """Forwards every POST to `upstream` and counts the requests per prompt, server-side."""

    def __init__(self, upstream: str) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        client = httpx2.Client(timeout=120, trust_env=False)

        def handle(
            path: str, headers: dict[str, str], body: dict[str, Any]
        ) -> tuple[int, dict[str, str], bytes]:
            with self._lock:
                self.counts[str(body.get("prompt"))] += 1
            resp = client.post(upstream + path, json=body)
            return resp.status_code, {}, resp.content

        super().__init__(handle)


class StandInApi(_Server):
    """A closed API's stand-in: requires `Authorization: Bearer <key>`, answers 429 with
    Retry-After to the first request, then chat answers from `replies` (by the last user
    message; the judge's prompt gets PASS when the answer holds `judge_pass`)."""

    def __init__(self, key: str, replies: dict[str, str], judge_pass: str) -> None:
        self.auth_headers: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self._limited = False
        self._lock = threading.Lock()

        def handle(
            path: str, headers: dict[str, str], body: dict[str, Any]
        ) -> tuple[int, dict[str, str], bytes]:
            auth = headers.get("Authorization", "")
            with self._lock:
                self.auth_headers.append(auth)
                self.requests.append(body)
                first = not self._limited
                self._limited = True
            if auth != f"Bearer {key}":
                # Echo what came: a careless API does; the client must not write it anywhere.
                return 401, {}, json.dumps({"error": f"bad key {auth}"}).encode()
            if first:
                return 429, {"Retry-After": "1"}, b'{"error": "slow down"}'
            if path != "/v1/chat/completions":
                return 404, {}, b"{}"
            last = body["messages"][-1]["content"]
            if body["messages"][0]["role"] == "system" and "Verdict" in last:
                text = "PASS" if judge_pass in last else "FAIL"
            else:
                text = replies.get(last, "I do not know")
            usage = {"prompt_tokens": 10 + len(last) // 4, "completion_tokens": 1 + len(text) // 4}
            reply = {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                "usage": usage,
            }
            return 200, {}, json.dumps(reply).encode()

        super().__init__(handle)
