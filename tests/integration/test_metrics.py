"""Metrics a team can watch, on the real image serving the demo: /metrics behind the API key,
the real Prometheus (Debian's) scraping with the config `render` writes and the series read back
through its HTTP API, the dashboard's queries accepted by it, and `deployer top` during load."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deployer.cli.app import app
from tests.integration.benchkit import PROFILE, BenchDeployment
from tests.integration.promkit import query, running_prometheus, targets, wait_for_value

pytestmark = [pytest.mark.docker, pytest.mark.llama_server]

MAX_TOKENS = 8


def _get(port: int, path: str, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _complete(port: int, key: str) -> dict[str, Any]:
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": MAX_TOKENS, "temperature": 0})
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions",
        data=body.encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        data: dict[str, Any] = json.loads(r.read())
    return data


@contextmanager
def _load(port: int, key: str, streams: int = 2) -> Iterator[list[int]]:
    """Completions sent back to back on `streams` threads until the block ends; yields the
    count of answers."""
    done: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            _complete(port, key)
            done.append(1)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(streams)]
    for t in threads:
        t.start()
    try:
        yield done
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)


def _render(dep: BenchDeployment, out: Path) -> None:
    r = CliRunner().invoke(app, ["render", "demo", "--name", dep.name, "--port", str(dep.port),
                                 "--expose", "--profile", PROFILE, "--parallel", "4",
                                 "--ctx", "8192", "--target", "compose", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.stderr


def test_metrics_need_the_key(bench_deployment: BenchDeployment) -> None:
    key = bench_deployment.key_path.read_text().strip()
    assert _get(bench_deployment.port, "/metrics", None) == 401
    assert _get(bench_deployment.port, "/metrics", "wrong-key") == 401
    assert _get(bench_deployment.port, "/metrics", key) == 200
    assert _get(bench_deployment.port, "/health", None) == 200  # the health check stays open


def test_prometheus_scrapes_the_rendered_config_and_serves_the_series(
    bench_deployment: BenchDeployment,
    prometheus_bin: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    dep = bench_deployment
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(dep.state))
    out = tmp_path / "render"
    _render(dep, out)
    key = dep.key_path.read_text().strip()
    config = out / "prometheus.yml"
    assert key not in config.read_text()  # the key is named by its file, never inline
    # The operator's step (docs/metrics.md): the deployment's key where the config says.
    secrets = out / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    (secrets / "api_key").write_text(key)
    (secrets / "api_key").chmod(0o600)
    promtool = Path(prometheus_bin).with_name("promtool")
    check = subprocess.run([str(promtool), "check", "config", str(config)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr

    answers = [_complete(dep.port, key) for _ in range(3)]
    generated = sum(a["usage"]["completion_tokens"] for a in answers)
    assert generated > 0
    job = f'job="deployer-{dep.name}"'
    with running_prometheus(prometheus_bin, config, tmp_path / "tsdb") as url:
        value = wait_for_value(url, f"llamacpp:tokens_predicted_total{{{job}}}")
        assert value is not None, targets(url)
        assert value >= generated
        (up,) = query(url, f"up{{{job}}}")
        assert up["value"][1] == "1" and up["metric"]["deployment"] == dep.name
        (target,) = targets(url)
        assert target["health"] == "up" and target["lastError"] == ""
        for series in ("llamacpp:requests_processing", "llamacpp:requests_deferred",
                       "llamacpp:n_tokens_max", "llamacpp:prompt_tokens_total"):  # fmt: skip
            assert query(url, f"{series}{{{job}}}"), series
        # Every query of the rendered dashboard is PromQL this Prometheus accepts.
        dashboard = json.loads((out / "grafana-dashboard.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        assert len(exprs) >= 5
        for expr in exprs:
            query(url, expr)  # asserts status success


def test_top_once_json_reports_tokens_per_second_under_load(
    bench_deployment: BenchDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = bench_deployment
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(dep.state))
    key = dep.key_path.read_text().strip()
    _complete(dep.port, key)  # warm
    frames: list[dict[str, Any]] = []
    with _load(dep.port, key, streams=3) as done:
        # llama-server adds a request's tokens to its counters when the request ends: on a busy
        # 2-core machine an interval can pass with none ending, so up to three frames are taken.
        while len(frames) < 3 and not any(f["tokens_per_s"] > 0 for f in frames):
            r = CliRunner().invoke(app, ["top", dep.name, "--once", "--json", "--interval", "8"])
            assert r.exit_code == 0, r.stderr
            assert key not in r.stdout
            frames.append(json.loads(r.stdout))
    assert done, "no completion finished during the load"
    frame = frames[-1]
    assert frame["tokens_per_s"] > 0, frames
    assert frame["kv_total_cells"] == 8192  # 4 slots x 2048
    assert frame["kv_used_cells"] > 0
    assert frame["requests_per_s"] is None  # this build exports no request counter
