"""The load generator over real sockets against a loopback server that answers as told: a
good llama-server-like stream, an HTTP error, garbage, a stream cut short, a hang, a huge line.
Every case ends as a sample with its error kind; nothing raises."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deployer.adapters.loadgen import HttpLoadRunner, server_info
from deployer.core.bench.shapes import RequestShape

SHAPE = RequestShape(8, 3)


def _event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


GOOD = b"".join([
    _event({"choices": [{"delta": {"role": "assistant", "content": None}}]}),
    *(_event({"choices": [{"delta": {"content": f"t{i}"}}]}) for i in range(3)),
    _event({"choices": [], "usage": {"completion_tokens": 3, "prompt_tokens": 9},
            "timings": {"prompt_n": 9, "prompt_ms": 2.0, "prompt_per_second": 4500.0,
                        "predicted_per_second": 80.0}}),
    b"data: [DONE]\n\n",
])  # fmt: skip


class Server(ThreadingHTTPServer):
    mode = "good"
    bodies: list[dict[str, object]]
    headers_seen: list[str]


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args: object) -> None:
        return

    def do_GET(self) -> None:
        if self.path == "/props":
            body = json.dumps({"total_slots": 4 if self.server.mode == "good" else "4",
                               "default_generation_settings": {"n_ctx": 2048}}).encode()  # fmt: skip
        elif self.path == "/v1/models":
            body = json.dumps({"data": [{"id": "demo-model"}]}).encode()
        else:
            body = b""
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.bodies.append(json.loads(self.rfile.read(length)))
        self.server.headers_seen.append(self.headers.get("Authorization", ""))
        mode = self.server.mode
        if mode == "401":
            self.send_response(401)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if mode == "good":
            for part in GOOD.split(b"\n\n"):
                self.wfile.write(part + b"\n\n")
                self.wfile.flush()
        elif mode == "garbage":
            self.wfile.write(b"data: {not json\n\n")
        elif mode == "cut":
            self.wfile.write(GOOD[:200])  # no [DONE]: the connection just closes
        elif mode == "slow":
            time.sleep(1.5)
        elif mode == "huge":
            self.wfile.write(b"data: " + b"x" * (2 << 20))


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(("127.0.0.1", 0), Handler)
    srv.bodies, srv.headers_seen = [], []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _runner(srv: Server, timeout_s: float = 5.0, key: str | None = None) -> HttpLoadRunner:
    host, port = srv.server_address[:2]
    return HttpLoadRunner(f"http://{host!s}:{port}", model="m", api_key=key, timeout_s=timeout_s)


def test_a_good_stream_is_timed_and_counted(server: Server) -> None:
    run = _runner(server, key="sekrit").run_level(2, 4, SHAPE)
    assert len(run.samples) == 4 and not run.interrupted
    for s in run.samples:
        assert s.ok and s.output_tokens == 3 and s.prompt_tokens == 9
        assert len(s.token_times_s) == 3 and s.ttft_s is not None and s.ttft_s > 0
        assert s.start_s <= (s.first_token_s or 0) <= s.end_s
        assert s.timings is not None and s.timings.predicted_per_second == 80.0
    assert server.headers_seen == ["Bearer sekrit"] * 4
    body = server.bodies[0]
    assert body["stream"] is True and body["max_tokens"] == 3 and body["model"] == "m"
    # each request its own prompt: no prefix cache can skip a prefill
    assert len({json.dumps(b["messages"]) for b in server.bodies}) == 4


@pytest.mark.parametrize(
    ("mode", "kind"),
    [("401", "http_401"), ("garbage", "malformed"), ("cut", "malformed"), ("huge", "malformed")],
)
def test_broken_answers_are_counted_by_kind(server: Server, mode: str, kind: str) -> None:
    server.mode = mode
    run = _runner(server).run_level(2, 3, SHAPE)
    assert [s.error for s in run.samples] == [kind] * 3


def test_a_hang_is_a_timeout(server: Server) -> None:
    server.mode = "slow"
    started = time.monotonic()
    run = _runner(server, timeout_s=0.3).run_level(1, 1, SHAPE)
    assert [s.error for s in run.samples] == ["timeout"]
    assert time.monotonic() - started < 1.4


def test_nobody_listening_is_a_connection_error(server: Server) -> None:
    host, port = server.server_address[:2]
    server.shutdown()
    server.server_close()
    run = HttpLoadRunner(f"http://{host!s}:{port}", model="m", api_key=None,
                         timeout_s=2).run_level(1, 2, SHAPE)  # fmt: skip
    assert [s.error for s in run.samples] == ["connection"] * 2


def test_server_info_believes_only_well_formed_answers(server: Server) -> None:
    host, port = server.server_address[:2]
    info = server_info(f"http://{host!s}:{port}", None)
    assert (info.total_slots, info.ctx, info.model) == (4, 2048, "demo-model")
    server.mode = "bad"
    assert server_info(f"http://{host!s}:{port}", None).total_slots is None
