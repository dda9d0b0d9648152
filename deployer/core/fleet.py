"""Fleet: one plan per inventory host, the per-host data the playbooks need, and the summary.

Pure: the inventory arrives as `ansible-inventory --list` JSON (Ansible resolved group and host
variables), host facts as the raw outputs of the same tools `deployer detect` runs, and a run's
outcome as ansible-runner events. deployer/adapters/ansible.py does the running.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.core.detect import ProbeResult
from deployer.core.errors import DeployerError, InvalidRequest

# Variables an inventory may set per host or group (the first four are the contract).
HOST_VARS = {
    "deployer_profile": "a profile id, or 'detect' (from the host's facts and nvidia-smi)",
    "deployer_model": "anything 'deployer deploy' accepts: catalog id, demo, .gguf path, hf://",
    "deployer_backend": "llamacpp (default) or ollama",
    "deployer_port": "host port on 127.0.0.1 (default 8080)",
    "deployer_name": "deployment name (default: the model's name and the inventory host)",
    "deployer_quant": "force a quantization",
    "deployer_ctx": "context length",
    "deployer_image": "runtime image (default: the pinned official image)",
    "deployer_root": "folder on the host for artifacts and weights (default /var/lib/deployer)",
    "deployer_expose": "publish on 0.0.0.0 with an API key generated on the host",
}
DEFAULT_ROOT = "/var/lib/deployer"
DEFAULT_PORT = 8080
DETECT = "detect"
# Report tasks in the playbooks emit `{"deployer": {...}}` as their debug message.
REPORT_KEY = "deployer"


@dataclass(frozen=True)
class FleetHost:
    """One inventory host and the deployer variables Ansible resolved for it."""

    host: str
    profile: str
    model: str
    backend: str = "llamacpp"
    port: int = DEFAULT_PORT
    name: str | None = None
    quant: str | None = None
    ctx: int | None = None
    image: str | None = None
    root: str = DEFAULT_ROOT
    expose: bool = False


def _as_int(host: str, key: str, value: Any) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise InvalidRequest(
            f"inventory host '{host}': {key} must be a whole number, got {value!r}",
            "Fix the inventory, then run 'deployer fleet plan --inventory FILE'.",
        ) from None
    return number


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def hosts_from_inventory(listing: Mapping[str, Any]) -> list[FleetHost]:
    """Every host of an `ansible-inventory --list` answer, with its deployer variables.

    A host without `deployer_model` is not part of the fleet's deployments and is left out;
    an inventory with no such host is an error that says which variables are expected.
    """
    hostvars: Mapping[str, Mapping[str, Any]] = listing.get("_meta", {}).get("hostvars", {})
    names = set(hostvars)
    for group, body in listing.items():
        if group != "_meta" and isinstance(body, Mapping):
            names.update(body.get("hosts", []))
    hosts: list[FleetHost] = []
    for host in sorted(names):
        hv = hostvars.get(host, {})
        model = hv.get("deployer_model")
        if model is None:
            continue
        unknown = sorted(k for k in hv if k.startswith("deployer_") and k not in HOST_VARS)
        if unknown:
            raise InvalidRequest(
                f"inventory host '{host}': unknown variable {unknown[0]}",
                "Known: " + ", ".join(HOST_VARS) + " (see docs/fleet.md).",
            )
        root = str(hv.get("deployer_root", DEFAULT_ROOT))
        if not root.startswith("/"):
            raise InvalidRequest(
                f"inventory host '{host}': deployer_root must be an absolute path, got {root!r}",
                "Use a path like /var/lib/deployer.",
            )
        port = _as_int(host, "deployer_port", hv.get("deployer_port", DEFAULT_PORT))
        if not 1 <= port <= 65535:
            raise InvalidRequest(f"inventory host '{host}': deployer_port {port} is not a port")
        ctx = hv.get("deployer_ctx")
        hosts.append(
            FleetHost(
                host=host,
                profile=str(hv.get("deployer_profile", DETECT)),
                model=str(model),
                backend=str(hv.get("deployer_backend", "llamacpp")),
                port=port,
                name=str(hv["deployer_name"]) if "deployer_name" in hv else None,
                quant=str(hv["deployer_quant"]) if "deployer_quant" in hv else None,
                ctx=_as_int(host, "deployer_ctx", ctx) if ctx is not None else None,
                image=str(hv["deployer_image"]) if "deployer_image" in hv else None,
                root=root.rstrip("/") or "/",
                expose=_as_bool(hv.get("deployer_expose", False)),
            )
        )
    if not hosts:
        raise InvalidRequest(
            "the inventory has no host with deployer_model set",
            "Set deployer_model (and deployer_profile) per host or group; see docs/fleet.md.",
        )
    return hosts


def deployment_name(base: str, host: str) -> str:
    """The default deployment name on a host: the model's name and the inventory host, so
    several inventory entries on one machine never collide."""
    slug = re.sub(r"[^a-z0-9_.-]+", "-", host.lower()).strip("-.") or "host"
    return f"{base}-{slug}"[:63].rstrip("-.")


def _count(value: Any) -> int | None:
    """A positive whole number from a fact (Ansible may hand it over as text), else None."""
    try:
        n = int(str(value))
    except ValueError:
        return None
    return n if n > 0 else None


def probe_from_facts(facts: Mapping[str, Any], tools: Mapping[str, str | None]) -> ProbeResult:
    """What `deployer detect` would have probed, from Ansible facts and the tools' outputs."""
    mem_mb = _count(facts.get("ansible_memtotal_mb"))
    cores = _count(facts.get("ansible_processor_cores"))
    count = _count(facts.get("ansible_processor_count"))
    threads = _count(facts.get("ansible_processor_vcpus"))
    phys = cores * count if cores and count else None
    return ProbeResult(
        os_name=str(facts.get("ansible_system", "Linux")),
        arch=str(facts.get("ansible_architecture", "x86_64")).lower(),
        nvidia_csv=tools.get("nvidia") or None,
        nvidia_source="nvidia-smi" if tools.get("nvidia") else "",
        rocm_json=tools.get("rocm") or None,
        sysctl=tools.get("sysctl") or None,
        system_profiler_json=tools.get("system_profiler") or None,
        cpuinfo=tools.get("cpuinfo") or None,
        cpu_cores=phys,
        cpu_threads=threads,
        ram_bytes=mem_mb * 1024 * 1024 if mem_mb else None,
    )


@dataclass(frozen=True)
class Weight:
    """One weights file as the host gets it: copied from here, or downloaded and checked."""

    dest: str
    size: int
    src: str | None = None  # a controller path (local .gguf, demo)
    url: str | None = None  # a Hub resolve URL pinned to a commit
    sha256: str | None = None

    def as_var(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dest": self.dest, "size": self.size}
        if self.src:
            out["src"] = self.src
        if self.url:
            out["url"] = self.url
            out["sha256"] = self.sha256
        return out


@dataclass
class HostPlan:
    """What one host will run, or why it cannot."""

    host: FleetHost
    profile_id: str = ""
    model: str = ""
    quant: str = ""
    fits: bool = False
    reason: str = ""  # why it does not fit or could not be planned
    name: str = ""
    files: dict[str, str] = field(default_factory=dict)  # rendered artifacts, relative paths
    weights: list[Weight] = field(default_factory=list)
    image: str = ""
    health_retries: int = 120
    detected: str | None = None  # how the profile was found, for 'detect' hosts
    plan: dict[str, Any] | None = None  # the full single-host plan JSON
    model_alias: str = ""  # the model name the server answers to (smoke test)

    @property
    def ok(self) -> bool:
        return self.fits and not self.reason

    @property
    def dir(self) -> str:
        return f"{self.host.root}/{self.name}"

    @property
    def endpoint(self) -> str:
        where = "0.0.0.0" if self.host.expose else "127.0.0.1"
        return f"http://{where}:{self.host.port}"

    def fingerprint(self) -> str:
        """Changes whenever anything the host runs would change: files, weights, image, port."""
        body = {
            "files": self.files,
            "weights": [w.as_var() | {"src": None} for w in self.weights],
            "image": self.image,
            "port": self.host.port,
            "name": self.name,
            "expose": self.host.expose,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def as_var(self, files_src: str) -> dict[str, Any]:
        """The per-host variables the deploy, status and down playbooks read."""
        return {
            "name": self.name,
            "dir": self.dir,
            "models_dir": f"{self.host.root}/models",
            "files_src": files_src,
            "weights": [w.as_var() for w in self.weights],
            "port": self.host.port,
            "backend": self.host.backend,
            "expose": self.host.expose,
            "fingerprint": self.fingerprint(),
            "health_retries": self.health_retries,
            "smoke_model": self.model_alias,
            # Ollama answers /api/version once up (it has no /health); llama-server /health
            # only once the model is loaded.
            "health_path": "/api/version" if self.host.backend == "ollama" else "/health",
            "service": "ollama" if self.host.backend == "ollama" else "llama-server",
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host.host,
            "profile": self.profile_id or self.host.profile,
            "detected": self.detected,
            "model": self.model or self.host.model,
            "quant": self.quant or None,
            "backend": self.host.backend,
            "name": self.name or None,
            "port": self.host.port,
            "endpoint": self.endpoint if self.ok else None,
            "fits": self.fits,
            "reason": self.reason or None,
            "image": self.image or None,
            "fingerprint": self.fingerprint() if self.ok else None,
            "plan": self.plan,
        }


def plan_hosts(
    hosts: Iterable[FleetHost], plan_one: Callable[[FleetHost], HostPlan]
) -> list[HostPlan]:
    """Plan every host; a host whose plan fails is reported with its reason, never fatal."""
    out: list[HostPlan] = []
    for h in hosts:
        try:
            out.append(plan_one(h))
        except DeployerError as exc:
            out.append(HostPlan(host=h, reason=exc.message()))
    return out


@dataclass
class HostOutcome:
    """How one host ended in one run."""

    host: str
    result: str  # deployed | unchanged | would-deploy | failed | unreachable | not-run | ...
    reason: str = ""
    step: str = ""  # the last step it reached
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "result": self.result,
            "reason": self.reason or None,
            "step": self.step or None,
            **self.details,
        }


def _failure_text(res: Mapping[str, Any]) -> str:
    if res.get("censored"):
        return "a task with secrets failed (its output is hidden by no_log)"
    msg = str(res.get("msg") or "").strip()
    err = str(res.get("stderr") or "").strip()
    text = msg if msg and msg != "non-zero return code" else (err or msg)
    return " ".join(text.split())[:600] or "failed"


def outcomes_from_events(
    events: Iterable[Mapping[str, Any]], hosts: Iterable[str], *, default: str
) -> dict[str, HostOutcome]:
    """Per host: its last step, its report (from the playbook's report tasks) or its failure.

    `default` is the result of a host that finished without a report and without failing.
    """
    out = {h: HostOutcome(h, "not-run") for h in hosts}
    seen: set[str] = set()
    reported: set[str] = set()  # a report's reason is the best one: later failures keep it
    for ev in events:
        data = ev.get("event_data") or {}
        host = data.get("host") or data.get("remote_addr")
        if host not in out:
            continue
        kind = ev.get("event", "")
        task = str(data.get("task") or "")
        res = data.get("res") or {}
        o = out[host]
        if kind == "runner_on_start":
            seen.add(host)
            o.step = task
        elif kind == "runner_on_ok":
            seen.add(host)
            msg = res.get("msg") if isinstance(res, Mapping) else None
            if isinstance(msg, Mapping) and REPORT_KEY in msg:
                report = dict(msg[REPORT_KEY])
                o.result = str(report.pop("result", o.result))
                o.reason = " ".join(str(report.pop("reason", "") or "").split())[:600]
                o.details.update(report)
                reported.add(host)
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            seen.add(host)
            o.result = "failed"
            if host not in reported:
                o.step, o.reason = task, _failure_text(res)
        elif kind == "runner_on_unreachable":
            seen.add(host)
            o.result, o.step, o.reason = "unreachable", task, _failure_text(res)
    for host, o in out.items():
        if host in seen and o.result == "not-run":
            o.result = default
    return out


def failures_after_rescue(events: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Hosts whose block failed and was rescued: the original failed step and its message.

    The rescue's own `fail` task repeats it, but the first failure carries the real output.
    """
    first: dict[str, str] = {}
    for ev in events:
        data = ev.get("event_data") or {}
        if ev.get("event") == "runner_on_failed" and data.get("host") not in first:
            first[str(data.get("host"))] = (
                f"{data.get('task')}: {_failure_text(data.get('res') or {})}"
            )
    return first


PLAYBOOKS = ("facts", "deploy", "status", "down")


def render_playbook(kind: str, **ctx: Any) -> str:
    """A playbook from templates/ansible/. Our own placeholders are [[ ]] and [% %], so the
    `{{ }}` expressions stay for Ansible to evaluate on each host."""
    import jinja2
    import yaml

    from deployer import __version__
    from deployer.core.resources import data_dir

    if kind not in PLAYBOOKS:
        raise ValueError(f"unknown playbook {kind}")
    text = (data_dir("templates") / "ansible" / f"{kind}.yml.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        comment_start_string="[#",
        comment_end_string="#]",
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    out = env.from_string(text).render(
        version=__version__,
        **{"serial": None, "max_fail_percentage": None, "purge": False, **ctx},
    )
    yaml.safe_load(out)  # a template bug fails here, not inside Ansible
    return out
