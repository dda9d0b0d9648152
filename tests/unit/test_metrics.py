"""`deployer top`'s metrics: recorded llama-server output, hostile answers, rates and resets.

The real server's output is in fixtures/metrics/ (llama-server b11434 with --metrics, read while
it generated). Hostile answers come from a stand-in HTTP server on loopback that sends what a
broken or malicious server could; the real server is exercised in tests/integration.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from deployer.adapters.metrics_client import (
    MAX_METRICS_BYTES,
    HttpMetricsSource,
    parse_metrics,
    parse_slots,
)
from deployer.adapters.state_store import save_record
from deployer.cli.app import app
from deployer.core.errors import InvalidRequest, MetricsInvalid, MetricsUnavailable
from deployer.core.serve.metrics import (
    NO_REQUEST_COUNTER,
    PROMPT_TOKENS,
    REQUESTS_DEFERRED,
    REQUESTS_PROCESSING,
    REQUIRED,
    TOKENS_MAX,
    TOKENS_PREDICTED,
    KvUse,
    MetricsSample,
    TopFrame,
    check_interval,
    frame,
    increase,
    watch,
)
from deployer.core.state.records import DeploymentRecord
from tests.unit.in_memory import MemoryClock

FIXTURES = Path(__file__).parent / "fixtures" / "metrics"
METRICS = (FIXTURES / "llama-server-b11434.metrics.txt").read_bytes()
SLOTS = (FIXTURES / "llama-server-b11434.slots.json").read_bytes()


def test_recorded_metrics_parse_to_the_series_top_uses() -> None:
    values = parse_metrics("d", "http://x", METRICS)
    assert set(REQUIRED) <= set(values)
    assert values[TOKENS_PREDICTED] == 200
    assert values[PROMPT_TOKENS] == 23
    assert values[REQUESTS_PROCESSING] == 1
    assert values[TOKENS_MAX] == 64  # exported as `n_tokens_max`, a counter without _total


def test_recorded_slots_give_kv_cells_held_and_available() -> None:
    kv = parse_slots("d", "http://x", SLOTS)
    raw = json.loads(SLOTS)
    assert kv.total_cells == sum(s["n_ctx"] for s in raw) == 2048
    assert kv.used_cells == sum(s.get("n_prompt_tokens", 0) for s in raw) == 97
    assert kv.ratio == pytest.approx(97 / 2048)
    # the one slot in flight has generated 27 tokens the counter does not hold yet
    assert kv.in_flight_generated == 27


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\xff\xfe not utf-8", "not Prometheus text"),
        (b"llamacpp:tokens_predicted_total {{{\n", "not Prometheus text"),
        (METRICS.replace(b"tokens_predicted_total 200", b"tokens_predicted_total NaN"), "nan"),
        (METRICS.replace(b"requests_deferred 0", b"requests_deferred -3"), "-3"),
        (METRICS.replace(b"prompt_tokens_total 23", b"prompt_tokens_total +Inf"), "inf"),
        (METRICS.replace(b"llamacpp:requests_processing 1", b""), "requests_processing"),
        (b"<html>502 Bad Gateway</html>", "not Prometheus text"),
        (b"", "no llamacpp:"),
    ],
)
def test_hostile_metrics_are_refused_in_one_line(body: bytes, problem: str) -> None:
    with pytest.raises(MetricsInvalid) as exc:
        parse_metrics("d", "http://x", body)
    message = exc.value.message()
    assert problem in message
    assert "\n" not in message


def test_labelled_and_foreign_samples_do_not_count() -> None:
    body = METRICS + b'llamacpp:requests_deferred{slot="0"} 99\nother_metric 5\n'
    values = parse_metrics("d", "http://x", body)
    assert values[REQUESTS_DEFERRED] == 0
    assert "other_metric" not in values


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_fail_as_metrics_invalid(body: bytes) -> None:
    try:
        parse_metrics("d", "http://x", body)
    except MetricsInvalid as exc:
        assert "\n" not in exc.message()


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"[]",
        b"not json",
        b'[{"n_ctx": "1024"}]',
        b'[{"n_ctx": true}]',
        b'[{"n_ctx": 1024, "n_prompt_tokens": -1}]',
        b'[{"n_ctx": 1e3}]',
        b"[1, 2]",
        b"[" * 100_000,
        b'[{"n_ctx": 10, "next_token": {"n_decoded": 3}}]',
        b'[{"n_ctx": 10, "next_token": [{"n_decoded": 3}, {"n_decoded": 3}]}]',
        b'[{"n_ctx": 10, "next_token": [{"n_decoded": -3}]}]',
        b'[{"n_ctx": 10, "next_token": [{"n_decoded": 2.5}]}]',
    ],
)
def test_hostile_slots_are_refused(body: bytes) -> None:
    with pytest.raises(MetricsInvalid):
        parse_slots("d", "http://x", body)


def test_a_slot_cannot_hold_more_than_its_context() -> None:
    kv = parse_slots("d", "http://x", b'[{"n_ctx": 100, "n_prompt_tokens": 5000}]')
    assert kv == KvUse(used_cells=100, total_cells=100)


# --- rates ---------------------------------------------------------------------------------


def _sample(
    t: float, predicted: float, prompt: float = 0.0, in_flight: int = 0, **gauges: float
) -> MetricsSample:
    values = dict.fromkeys(REQUIRED, 0.0)
    values[TOKENS_PREDICTED] = predicted
    values[PROMPT_TOKENS] = prompt
    for k, v in gauges.items():
        values[f"llamacpp:{k}"] = v
    return MetricsSample(t, values, KvUse(10, 40, in_flight))


def test_rates_are_counter_deltas_over_the_interval() -> None:
    f = frame("d", "http://x", _sample(10, 100, 50), _sample(12, 180, 70, requests_deferred=3))
    assert f.tokens_per_s == 40.0
    assert f.prompt_tokens_per_s == 10.0
    assert f.requests_deferred == 3
    assert f.kv_use_pct == 25.0
    assert not f.counter_reset
    assert f.requests_per_s is None and f.requests_per_s_note == NO_REQUEST_COUNTER


def test_a_counter_that_goes_down_is_a_restart_and_counts_from_zero() -> None:
    f = frame("d", "http://x", _sample(10, 5000), _sample(14, 80))
    assert f.counter_reset
    assert f.tokens_per_s == 20.0  # 80 new tokens since the restart, never negative
    assert increase(5000, 80) == (80, True)
    assert increase(5, 80) == (75, False)


def test_tokens_of_requests_in_flight_make_the_rate_live() -> None:
    # no request ended in the interval (counter still 100), but the slots generated 30 tokens
    f = frame("d", "http://x", _sample(0, 100, in_flight=10), _sample(2, 100, in_flight=40))
    assert f.tokens_per_s == 15.0
    # a request of 50 tokens ended: they moved from its slot to the counter, counted once
    f = frame("d", "http://x", _sample(0, 100, in_flight=40), _sample(2, 150, in_flight=6))
    assert f.tokens_per_s == 8.0
    # a request ended between the /metrics and /slots reads: a dip, never a negative rate
    f = frame("d", "http://x", _sample(0, 100, in_flight=40), _sample(2, 100, in_flight=0))
    assert f.tokens_per_s == 0.0 and not f.counter_reset


def test_a_new_process_start_time_is_a_restart_even_when_counters_grew() -> None:
    before = MetricsSample(0, _sample(0, 10).values, None, started_at="100")
    after = MetricsSample(2, _sample(2, 30).values, None, started_at="200")
    f = frame("d", "http://x", before, after)
    assert f.counter_reset and f.tokens_per_s == 15.0  # all 30 are new
    assert f.kv_use_pct is None


class ScriptedServer:
    """A MetricsSource replaying counter values (the HTTP edge, scripted)."""

    def __init__(self, predicted: list[float]) -> None:
        self.predicted = predicted
        self.taken: list[float] = []

    def sample(self, taken_at_s: float) -> MetricsSample:
        self.taken.append(taken_at_s)
        return _sample(taken_at_s, self.predicted[len(self.taken) - 1])


def test_watch_samples_every_interval_and_yields_one_frame_per_pair() -> None:
    clock = MemoryClock()
    server = ScriptedServer([0, 10, 30, 30])
    frames = list(watch("d", "http://x", server, clock, interval_s=2.0, frames=3))
    assert [f.tokens_per_s for f in frames] == [5.0, 10.0, 0.0]
    assert clock.slept == [2.0, 2.0, 2.0]
    assert server.taken == [1000.0, 1002.0, 1004.0, 1006.0]


@pytest.mark.parametrize("bad", [0.0, -1.0, 0.1, float("nan"), float("inf"), 1e9])
def test_an_interval_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(InvalidRequest):
        check_interval(bad)


# --- the HTTP edge, with a stand-in server -------------------------------------------------


class HostileServer:
    """A loopback HTTP server answering /metrics and /slots with whatever a test sets."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {
            "/metrics": (200, METRICS),
            "/slots": (200, SLOTS),
        }
        self.key = "k3y"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {outer.key}":
                    status, body = 401, b'{"error":"Invalid API Key"}'
                else:
                    status, body = outer.routes.get(self.path, (404, b""))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Process-Start-Time-Unix", "1700000000")
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    s = HostileServer()
    yield s
    s.server.shutdown()
    s.server.server_close()


def test_a_sample_sends_the_key_and_reads_both_endpoints(hostile: HostileServer) -> None:
    got = HttpMetricsSource("d", hostile.url, "k3y").sample(7.0)
    assert got.values[TOKENS_PREDICTED] == 200
    assert got.kv == KvUse(97, 2048, 27)
    assert got.started_at == "1700000000"
    assert got.taken_at_s == 7.0


def test_a_refused_key_is_one_line_naming_it(hostile: HostileServer) -> None:
    with pytest.raises(MetricsUnavailable) as exc:
        HttpMetricsSource("d", hostile.url, "wrong").sample(0)
    assert "refused the API key (401)" in exc.value.message()
    assert "wrong" not in exc.value.message() and "k3y" not in exc.value.message()


def test_metrics_off_is_named(hostile: HostileServer) -> None:
    hostile.routes["/metrics"] = (501, b'{"error": "Start it with --metrics"}')
    with pytest.raises(MetricsUnavailable, match="turned off"):
        HttpMetricsSource("d", hostile.url, "k3y").sample(0)


def test_an_endless_answer_is_cut_at_the_bound(hostile: HostileServer) -> None:
    hostile.routes["/metrics"] = (200, b"#" * (MAX_METRICS_BYTES + 10))
    with pytest.raises(MetricsUnavailable, match="larger than"):
        HttpMetricsSource("d", hostile.url, "k3y").sample(0)


def test_slots_missing_leaves_kv_unknown(hostile: HostileServer) -> None:
    hostile.routes["/slots"] = (501, b"")
    assert HttpMetricsSource("d", hostile.url, "k3y").sample(0).kv is None


# --- the command -------------------------------------------------------------------------


def _record(name: str, port: int, backend: str = "llamacpp", key: Path | None = None) -> None:
    save_record(
        DeploymentRecord(
            name=name,
            model="demo",
            quant="Q4_K_M",
            backend=backend,
            runtime="container",
            endpoint=f"http://127.0.0.1:{port}",
            port=port,
            created_at="2025-01-01T00:00:00+00:00",
            api_key_path=str(key) if key else None,
        )
    )


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_top_of_a_deployment_not_answering_is_one_line_exit_3() -> None:
    _record("gone", _closed_port())
    r = CliRunner().invoke(app, ["top", "gone", "--once", "--interval", "0.2"])
    assert r.exit_code == 3
    assert r.stderr.count("\n") == 1
    assert "no metrics from 'gone'" in r.stderr and "not answering" in r.stderr


def test_top_of_an_unknown_or_ollama_deployment_is_refused() -> None:
    _record("web", 18080)
    _record("olla", 18081, backend="ollama")
    r = CliRunner().invoke(app, ["top", "wbe", "--once"])
    assert r.exit_code == 1 and "did you mean 'web'" in r.stderr
    r = CliRunner().invoke(app, ["top", "olla", "--once"])
    assert r.exit_code == 2 and "no Prometheus metrics" in r.stderr


def test_top_once_json_and_table(hostile: HostileServer, tmp_path: Path) -> None:
    key = tmp_path / "api_key"
    key.write_text("k3y\n")
    _record("live", int(hostile.url.rsplit(":", 1)[1]), key=key)
    r = CliRunner().invoke(app, ["top", "live", "--once", "--json", "--interval", "0.2"])
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["name"] == "live" and got["kv_total_cells"] == 2048
    assert got["requests_processing"] == 1 and got["tokens_per_s"] == 0.0
    assert "k3y" not in r.stdout
    r = CliRunner().invoke(app, ["top", "live", "--once", "--interval", "0.2"])
    assert r.exit_code == 0, r.stderr
    assert "KV cache use" in r.stdout and "4.7% (97 of 2048 cells)" in r.stdout


# --- what render writes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key_file",
    ["secrets/api_key", "/srv/we ird: #dir/'q\"/api_key", "/tmp/ünï\tcode/{{x}}/api_key", "- [a]"],
)
def test_scrape_config_reads_back_with_the_key_file_exactly(key_file: str) -> None:
    import yaml

    from deployer.core.serve.monitoring import ScrapeTarget, scrape_config

    text = scrape_config(ScrapeTarget("web", "127.0.0.1:8080", key_file))
    (job,) = yaml.safe_load(text)["scrape_configs"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": key_file}
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8080"]
    assert text.startswith("# Rendered by deployer")


def test_no_key_no_authorization_and_k8s_follows_annotations() -> None:
    import yaml

    from deployer.core.serve.monitoring import ScrapeTarget, k8s_annotations, scrape_config

    (job,) = yaml.safe_load(scrape_config(ScrapeTarget("web", "127.0.0.1:1", None)))[
        "scrape_configs"
    ]
    assert "authorization" not in job
    k8s = ScrapeTarget("web", "", "x", k8s=True, k8s_secret="web-api-key", k8s_port=8080)
    (job,) = yaml.safe_load(scrape_config(k8s))["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    assert job["authorization"]["credentials_file"].endswith("/web-api-key/api_key")
    assert k8s_annotations(8080)["prometheus.io/port"] == "8080"


def test_dashboard_has_the_four_views_on_the_deployments_job() -> None:
    from deployer.core.serve.monitoring import dashboard

    doc = json.loads(dashboard("web", 2048))
    titles = " ".join(p["title"] for p in doc["panels"]).lower()
    for view in ("throughput", "latency", "queue", "kv"):
        assert view in titles
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    assert all('{job="deployer-web"}' in e for e in exprs)
    assert any(TOKENS_MAX in e and "/ 2048" in e for e in exprs)


def test_render_twice_into_one_folder_replaces_the_monitoring_files(tmp_path: Path) -> None:
    args = ["render", "demo", "--profile", "cpu-x86-2c-8gb", "--target", "compose",
            "--name", "web", "--expose", "--out", str(tmp_path)]  # fmt: skip
    for _ in range(2):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.stderr
    assert (tmp_path / "prometheus.yml").exists() and (tmp_path / "grafana-dashboard.json").exists()
    import yaml

    (job,) = yaml.safe_load((tmp_path / "prometheus.yml").read_text())["scrape_configs"]
    assert job["authorization"]["credentials_file"] == str(
        tmp_path.resolve() / "secrets" / "api_key"
    )


GOLDEN_CONFIGS = sorted((Path(__file__).parents[1] / "golden" / "render").glob("*/prometheus.yml"))


@pytest.mark.parametrize("config", GOLDEN_CONFIGS, ids=lambda p: p.parent.name)
def test_promtool_accepts_every_rendered_scrape_config(config: Path, tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("DEPLOYER_CI"):
            pytest.fail("promtool is missing, but .ci/run installs prometheus")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    import yaml

    doc = yaml.safe_load(config.read_text())
    (job,) = doc["scrape_configs"]
    if "kubernetes_sd_configs" in job:
        # Debian's build has no Kubernetes discovery ("field kubernetes_sd_configs not found"):
        # the rest of the job (relabelling regexes, authorization) is checked with a static
        # target in its place.
        del job["kubernetes_sd_configs"]
        job["static_configs"] = [{"targets": ["10.0.0.1:8080"]}]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(doc))
    # --syntax-only: the key files named are on the machine the files are for, not here
    got = subprocess.run([promtool, "check", "config", "--syntax-only", str(checked)],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr


def test_every_llamacpp_variant_has_a_scrape_config() -> None:
    variants = {p.parent.name for p in GOLDEN_CONFIGS}
    assert len(variants) == 12 and all(v.startswith("llamacpp-") for v in variants)


def test_ctrl_c_ends_a_live_top_with_exit_0(
    hostile: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployer.cli import top_view

    key = tmp_path / "api_key"
    key.write_text("k3y\n")
    _record("live", int(hostile.url.rsplit(":", 1)[1]), key=key)
    shown: list[float] = []

    def interrupted(name: str, interval_s: float, frames: Iterator[TopFrame]) -> None:
        for f in frames:
            shown.append(f.interval_s)
            raise KeyboardInterrupt

    monkeypatch.setattr(top_view, "show_live", interrupted)
    r = CliRunner().invoke(app, ["top", "live", "--interval", "0.2"])
    assert r.exit_code == 0, r.stderr
    assert shown and "interrupted" not in r.stderr


class _Catcher:
    """A second loopback server that records every request it gets (as a proxy or a redirect
    target would): it must never see the deployment's key."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:
                outer.seen.append(self.headers.get("Authorization"))
                self.send_response(200)
                self.send_header("Content-Length", str(len(METRICS)))
                self.end_headers()
                self.wfile.write(METRICS)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def catcher() -> Iterator[_Catcher]:
    c = _Catcher()
    yield c
    c.server.shutdown()
    c.server.server_close()


class _Redirecting:
    """A loopback server that answers every GET with a redirect to `location`."""

    def __init__(self, location: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", f"{location}{self.path}")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


def test_a_redirect_is_not_followed_with_the_key(catcher: _Catcher, tmp_path: Path) -> None:
    from deployer.adapters.router_status import router_models

    key = tmp_path / "api_key"
    key.write_text("k3y\n")
    server = _Redirecting(catcher.url)
    try:
        with pytest.raises(MetricsUnavailable, match="HTTP 302"):
            HttpMetricsSource("d", server.url, "k3y").sample(0)
        assert router_models(server.url, str(key)) is None
    finally:
        server.server.shutdown()
        server.server.server_close()
    assert catcher.seen == []


def test_an_environment_proxy_never_sees_the_key(
    hostile: HostileServer, catcher: _Catcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.request

    monkeypatch.setenv("http_proxy", catcher.url)
    monkeypatch.setenv("HTTP_PROXY", catcher.url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen's opener reads the env anew
    assert HttpMetricsSource("d", hostile.url, "k3y").sample(0).values[TOKENS_PREDICTED] == 200
    assert catcher.seen == []


def test_a_metrics_source_never_shows_its_key() -> None:
    source = HttpMetricsSource("d", "http://127.0.0.1:9", "s3cret-key")
    assert "s3cret-key" not in repr(source) and "s3cret-key" not in str(source)


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"two\nlines", b"", None])
def test_top_with_a_broken_key_file_is_one_line(content: bytes | None, tmp_path: Path) -> None:
    key = tmp_path / "api_key"
    if content is not None:
        key.write_bytes(content)
    _record("bad", _closed_port(), key=key)
    r = CliRunner().invoke(app, ["top", "bad", "--once", "--interval", "0.2"])
    assert r.exit_code == 3, r.output
    assert r.stderr.count("\n") == 1 and "API key file" in r.stderr
