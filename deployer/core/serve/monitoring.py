"""What render writes so a team can watch a llama.cpp deployment: a Prometheus scrape config, a
Grafana dashboard and (k8s) the pod's scrape annotations.

Both files are built as data and written by their format's own serializer (yaml.safe_dump,
json.dumps), so every value is escaped for its syntax by construction; PromQL string literals
inside the dashboard are quoted as JSON strings, which PromQL reads the same way (its strings
take Go's escapes). The bearer key is never written: the scrape config names the key's file.
The series used are the ones llama-server of the pinned build exports (core/serve/metrics.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from deployer import __version__
from deployer.core.serve.metrics import (
    DECODE_CALLS,
    METRICS_PATH,
    PREDICTED_SECONDS,
    PROMPT_SECONDS,
    PROMPT_TOKENS,
    REQUESTS_DEFERRED,
    REQUESTS_PROCESSING,
    TOKENS_MAX,
    TOKENS_PREDICTED,
)

PROMETHEUS_FILE = "prometheus.yml"
DASHBOARD_FILE = "grafana-dashboard.json"
SCRAPE_INTERVAL_S = 15
RATE_WINDOW = "1m"
# Where a Prometheus pod in the cluster is expected to mount the deployment's key Secret (the
# prometheus-operator's convention for `spec.secrets`); docs/metrics.md says how.
K8S_SECRET_MOUNT = "/etc/prometheus/secrets"


@dataclass(frozen=True)
class ScrapeTarget:
    """How Prometheus reaches one deployment's /metrics."""

    name: str  # the deployment (a DNS-safe name)
    address: str  # host:port, for a static target
    key_file: str | None  # the file holding the bearer key, or None (no key: loopback only)
    k8s: bool = False
    k8s_secret: str | None = None  # the Secret holding the key (k8s)
    k8s_port: int = 0


def job_name(name: str) -> str:
    """The Prometheus job of a deployment."""
    return f"deployer-{name}"


def k8s_annotations(port: int) -> dict[str, str]:
    """The pod annotations the common `kubernetes_sd_configs` relabelling keeps and follows."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": METRICS_PATH,
    }


def scrape_config(t: ScrapeTarget) -> str:
    """A prometheus.yml with one job for the deployment; the key read from its file."""
    job: dict[str, Any] = {
        "job_name": job_name(t.name),
        "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
        "metrics_path": METRICS_PATH,
    }
    key_file = t.key_file
    if t.k8s:
        key_file = f"{K8S_SECRET_MOUNT}/{t.k8s_secret}/api_key" if t.k8s_secret else None
        job["kubernetes_sd_configs"] = [{"role": "pod"}]
        job["relabel_configs"] = [
            {
                "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
                "regex": _regex_literal(t.name),
                "action": "keep",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                "regex": "true",
                "action": "keep",
            },
            {
                "source_labels": [
                    "__address__",
                    "__meta_kubernetes_pod_annotation_prometheus_io_port",
                ],
                "regex": r"([^:]+)(?::\d+)?;(\d+)",
                "replacement": "$1:$2",
                "target_label": "__address__",
            },
            {"target_label": "deployment", "replacement": t.name},
        ]
    else:
        job["static_configs"] = [{"targets": [t.address], "labels": {"deployment": t.name}}]
    if key_file is not None:
        job["authorization"] = {"type": "Bearer", "credentials_file": key_file}
    doc = {"global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s"}, "scrape_configs": [job]}
    # The mark lets a later render replace this file (adapters/output_folder.py); the name in
    # it is a checked deployment name (no line break can reach a comment).
    head = f"# Rendered by deployer {__version__}: Prometheus scrape job for {t.name}.\n"
    return head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=False, width=1000)


def _regex_literal(text: str) -> str:
    """`text` as an RE2 regex that matches only itself."""
    return "".join(c if c.isalnum() else f"\\{c}" for c in text)


def _promql_str(text: str) -> str:
    """A PromQL string literal (JSON's quoting is a subset PromQL reads alike)."""
    return json.dumps(text)


def _panel(
    pid: int, title: str, unit: str, targets: list[tuple[str, str]], x: int, y: int
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(name: str, slot_ctx: int) -> str:
    """A Grafana dashboard (JSON model) for one deployment: throughput, latency, queue, KV."""
    sel = "{job=" + _promql_str(job_name(name)) + "}"
    w = RATE_WINDOW

    def rate(series: str) -> str:
        return f"rate({series}{sel}[{w}])"

    panels = [
        _panel(1, "Throughput (tokens/s)", "short", [
            (rate(TOKENS_PREDICTED), "generated"),
            (rate(PROMPT_TOKENS), "prompt"),
        ], 0, 0),
        _panel(2, "Latency per token", "s", [
            (f"{rate(PREDICTED_SECONDS)} / {rate(TOKENS_PREDICTED)}", "per generated token"),
            (f"{rate(PROMPT_SECONDS)} / {rate(PROMPT_TOKENS)}", "per prompt token"),
        ], 12, 0),
        _panel(3, "Queue (requests)", "short", [
            (f"{REQUESTS_PROCESSING}{sel}", "processing"),
            (f"{REQUESTS_DEFERRED}{sel}", "deferred"),
        ], 0, 8),
        _panel(4, f"KV: longest sequence / slot context ({slot_ctx} tokens)", "percentunit", [
            (f"{TOKENS_MAX}{sel} / {slot_ctx}", "longest sequence"),
        ], 12, 8),
        _panel(5, "Decode calls/s", "short", [(rate(DECODE_CALLS), "llama_decode")], 0, 16),
    ]  # fmt: skip
    model = {
        # also the mark that lets a later render replace this file (adapters/output_folder.py)
        "description": f"Rendered by deployer {__version__} for {name}",
        "title": f"deployer: {name}",
        "uid": f"deployer-{name}"[:40],
        "tags": ["deployer", "llama.cpp"],
        "schemaVersion": 39,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                }
            ]
        },
        "panels": panels,
    }
    return json.dumps(model, indent=2, ensure_ascii=True) + "\n"
