"""Read rendered files back and check they say exactly what render meant, before any is written.

YAML (compose, k8s) and plists are parsed with the library their consumers use and compared,
key set and values, with the bundle; systemd units are read line by line against the keys
the templates write. A mismatch is a deployer bug: nothing is written.
"""

from __future__ import annotations

import json
import plistlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from deployer.core.errors import DeployerError
from deployer.core.serve.conventions import ADAPTER_DIR, MODEL_DIR
from deployer.core.serve.monitoring import DASHBOARD_FILE, PROMETHEUS_FILE, job_name

if TYPE_CHECKING:
    from deployer.core.serve.render import RenderedBundle

COMPOSE_SERVICE_KEYS = frozenset({
    "image", "container_name", "command", "entrypoint", "labels", "user", "environment",
    "read_only", "cap_drop", "cap_add", "security_opt", "tmpfs", "restart", "depends_on",
    "network_mode", "ports", "volumes", "secrets", "healthcheck", "deploy", "mem_limit",
    "pids_limit",
})  # fmt: skip
K8S_TOP_KEYS = frozenset({"apiVersion", "kind", "metadata", "spec"})
PLIST_KEYS = frozenset({
    "Label", "ProgramArguments", "EnvironmentVariables", "RunAtLoad", "KeepAlive",
    "ThrottleInterval", "ProcessType", "StandardOutPath", "StandardErrorPath", "StartInterval",
})  # fmt: skip
SYSTEMD_KEYS = {
    "Unit": frozenset({"Description", "Wants", "After", "Requisite"}),
    "Service": frozenset({
        "Type", "ExecStart", "ExecStartPost", "TimeoutStartSec", "TimeoutStopSec", "Restart",
        "RestartSec", "DynamicUser", "LoadCredential", "ReadOnlyPaths", "ProtectSystem",
        "ProtectHome", "PrivateTmp", "PrivateDevices", "NoNewPrivileges",
        "CapabilityBoundingSet", "AmbientCapabilities", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
        "ProtectHostname", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID",
        "LockPersonality", "RestrictAddressFamilies", "SystemCallArchitectures", "UMask",
        "MemoryMax", "TasksMax",
    }),
    "Timer": frozenset({"OnActiveSec", "OnUnitActiveSec", "AccuracySec"}),
    "Install": frozenset({"WantedBy"}),
}  # fmt: skip
# libyaml when PyYAML was built with it: the same YAML 1.1 reading, ten times faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SECTION_RE = re.compile(r"^\[([A-Za-z]+)\]$")
_SETTING_RE = re.compile(r"^([A-Za-z]+)=")


@dataclass
class RenderMismatch(DeployerError):
    """A rendered file does not read back as what render meant (a deployer bug)."""

    file: str
    detail: str
    exit_code: int = 1

    def message(self) -> str:
        return (
            f"rendered {self.file} does not read back as intended ({self.detail}); nothing "
            "was written. This is a deployer bug: please report it with the command you ran"
        )


def load_yaml(text: str) -> Any:
    """One YAML document, read safely (libyaml when available)."""
    return yaml.load(text, Loader=_LOADER)


def undollar(value: Any) -> Any:
    """A compose or k8s-args value as its consumer reads it ('$$' is one '$')."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [undollar(v) for v in value]
    if isinstance(value, dict):
        return {k: undollar(v) for k, v in value.items()}
    return value


def check_rendered(rel: str, text: str, b: RenderedBundle) -> None:
    """Parse one rendered file back; RenderMismatch unless it is exactly what was meant."""
    try:
        if rel in (PROMETHEUS_FILE, DASHBOARD_FILE):
            _check_monitoring(rel, text, b)
        elif rel.endswith((".yml", ".yaml")):
            docs = [d for d in yaml.load_all(text, Loader=_LOADER) if d is not None]
            if len(docs) != 1 or not isinstance(docs[0], dict):
                raise RenderMismatch(rel, "not one YAML mapping")
            if rel == "docker-compose.yml":
                _check_compose(rel, docs[0], b)
            else:
                _check_k8s(rel, docs[0], b)
        elif rel.endswith(".plist"):
            _check_plist(rel, plistlib.loads(text.encode("utf-8")), b)
        elif rel.endswith((".service", ".timer")):
            _check_unit(rel, text)
    except (yaml.YAMLError, plistlib.InvalidFileException, ValueError) as exc:
        if isinstance(exc, RenderMismatch):
            raise
        raise RenderMismatch(rel, f"does not parse: {type(exc).__name__}") from exc


def _check_monitoring(rel: str, text: str, b: RenderedBundle) -> None:
    """The scrape config has the deployment's one job; the dashboard is one JSON object."""
    if rel == DASHBOARD_FILE:
        doc = json.loads(text)
        if not isinstance(doc, dict) or not doc.get("panels"):
            raise RenderMismatch(rel, "not a dashboard with panels")
        return
    doc = load_yaml(text)
    jobs = doc.get("scrape_configs") if isinstance(doc, dict) else None
    if not isinstance(jobs, list) or len(jobs) != 1:
        raise RenderMismatch(rel, "not one scrape job")
    _expect(rel, "job name", jobs[0].get("job_name"), job_name(b.name))


def _expect(rel: str, what: str, got: object, want: object) -> None:
    if got != want:
        raise RenderMismatch(rel, f"{what} differs")


def _check_compose(rel: str, doc: dict[str, Any], b: RenderedBundle) -> None:
    llama = b.backend == "llamacpp"
    top = {"services", "secrets"} if llama else {"services", "volumes"}
    if not set(doc) <= top or "services" not in doc:
        raise RenderMismatch(rel, f"unexpected top-level keys {sorted(set(doc) - top)}")
    names = {"llama-server"} if llama else {"volume-init", "ollama"}
    _expect(rel, "service names", set(doc["services"]), names)
    for svc in doc["services"].values():
        if not set(svc) <= COMPOSE_SERVICE_KEYS:
            extra = sorted(set(svc) - COMPOSE_SERVICE_KEYS)
            raise RenderMismatch(rel, f"unexpected service keys {extra}")
    svc = undollar(doc["services"]["llama-server" if llama else "ollama"])
    _expect(rel, "image", svc["image"], b.image)
    _expect(rel, "command", svc["command"], b.command)
    _expect(rel, "labels", svc["labels"], b.labels)
    _expect(rel, "environment", svc.get("environment", {}), b.env)
    dirs = (f"{MODEL_DIR}/", f"{ADAPTER_DIR}/")  # the model's files, then LoRA adapters
    weights = [v["source"] for v in svc["volumes"] if v["target"].startswith(dirs)]
    _expect(rel, "weights", weights, [m.source for m in b.mounts if m.read_only])
    _expect(rel, "memory limit", svc["mem_limit"], f"{(b.memory_limit_bytes or 0) // 2**20}m")
    _expect(rel, "pids limit", svc["pids_limit"], b.pids_limit)


def _check_k8s(rel: str, doc: dict[str, Any], b: RenderedBundle) -> None:
    if set(doc) != K8S_TOP_KEYS:
        raise RenderMismatch(rel, f"top-level keys {sorted(doc)}")
    if doc["kind"] != "Deployment":
        return
    _expect(rel, "annotations", doc["metadata"]["annotations"], b.labels)
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    _expect(rel, "image", container["image"], b.image)
    _expect(rel, "args", undollar(container["args"]), b.command)


def _check_plist(rel: str, doc: Any, b: RenderedBundle) -> None:
    if not isinstance(doc, dict) or not set(doc) <= PLIST_KEYS:
        raise RenderMismatch(rel, "unexpected plist keys")
    if not rel.endswith(".health.plist"):
        _expect(rel, "ProgramArguments", doc["ProgramArguments"], b.native)
        _expect(rel, "EnvironmentVariables", doc.get("EnvironmentVariables", {}), b.env)


def _check_unit(rel: str, text: str) -> None:
    section = ""
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            raise RenderMismatch(rel, f"line {n} ends in a continuation backslash")
        if m := _SECTION_RE.match(line):
            section = m.group(1)
            if section not in SYSTEMD_KEYS:
                raise RenderMismatch(rel, f"unexpected section [{section}]")
        elif (m := _SETTING_RE.match(line)) and m.group(1) in SYSTEMD_KEYS.get(section, ()):
            continue
        else:
            raise RenderMismatch(rel, f"line {n} is not a known setting of [{section}]")
