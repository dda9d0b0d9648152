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
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from deployer.core.errors import DeployerError
from deployer.core.fleet.inventory import DEFAULT_PORT as DEFAULT_PORT
from deployer.core.fleet.inventory import DEFAULT_ROOT as DEFAULT_ROOT
from deployer.core.fleet.inventory import DETECT as DETECT
from deployer.core.fleet.inventory import HOST_VARS as HOST_VARS
from deployer.core.fleet.inventory import MODELS_DIR
from deployer.core.fleet.inventory import FleetHost as FleetHost
from deployer.core.fleet.inventory import deployment_name as deployment_name
from deployer.core.fleet.inventory import hosts_from_inventory as hosts_from_inventory
from deployer.core.fleet.reasons import explain, explain_unreachable, raw_line
from deployer.core.fleet.shipping import IMAGES_DIR, MARK_SUFFIX, FleetImage, parts_dir
from deployer.core.hardware.detect import ProbeResult, read_ahead_listing
from deployer.core.pull.hub_checks import check_repo_id, repo_path_problem
from deployer.core.serve.conventions import (
    HEALTH_PATH,
    MODELFILE_IN_CONTAINER,
    NOBODY,
    SMOKE_MAX_TOKENS,
    SMOKE_PROMPT,
)
from deployer.core.untrusted import UntrustedValue, check_commit, check_line, check_sha256, shown

# Report tasks in the playbooks emit `{"deployer": {...}}` as their debug message.
REPORT_KEY = "deployer"


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
        read_ahead_kb=read_ahead_listing(tools.get("read_ahead") or ""),
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


def _file_path(name: str, source: str, *, one_segment: bool = False) -> str:
    """A relative path (or with one_segment, a plain file name) that can neither traverse nor
    be templated: pull's one rule for Hub file names."""
    problem = repo_path_problem(name)
    if not problem and one_segment and "/" in name:
        problem = "is not a plain file name"
    if problem:
        raise UntrustedValue(source, "file name", name, problem)
    return name


def local_weight(models_dir: str, src: str, size: int, sha256: str | None = None) -> Weight:
    """A weights file the host gets from this machine (a local .gguf, the demo)."""
    check_line(src, "model file", "path")
    name = _file_path(PurePosixPath(src).name, f"model file {shown(src)}", one_segment=True)
    sha = check_sha256(sha256, f"model file {shown(src)}") if sha256 else None
    return Weight(dest=f"{models_dir}/{name}", size=size, src=src, sha256=sha)


def hub_weight(
    models_dir: str, endpoint: str, repo_id: str, commit: str, name: str, size: int, sha256: str
) -> Weight:
    """A weights file the host downloads itself, pinned to a commit, its sha256 checked."""
    source = f"Hub listing of {shown(repo_id)}"
    check_repo_id(repo_id, source)
    if not re.match(r"^https?://[^\s/]+", check_line(endpoint, "HF_ENDPOINT", "URL")):
        raise UntrustedValue("HF_ENDPOINT", "URL", endpoint, "is not an http(s) URL")
    _file_path(name, source)
    return Weight(
        dest=f"{models_dir}/{repo_id.replace('/', '--')}/{name}",
        size=size,
        url=f"{endpoint}/{quote(repo_id)}/resolve/{check_commit(commit, source)}/{quote(name)}",
        sha256=check_sha256(sha256, source),
    )


def run_file(rel: str) -> PurePosixPath:
    """A rendered artifact's relative path: plain segments only, so it stays in its folder."""
    path = PurePosixPath(rel)
    if path.is_absolute() or any(p in ("", ".", "..") for p in rel.split("/")):
        raise ValueError(f"rendered file {rel!r} is not a relative path")  # a renderer bug
    return path


def check_playbook_vars(value: Any, source: str) -> Any:
    """Every text in the playbook variables is one line without template syntax (they are also
    passed as unsafe, so Ansible never templates them: two guards, each enough alone)."""
    if isinstance(value, str):
        check_line(value, source, "variable")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            check_line(k, source, "variable name")
            check_playbook_vars(v, source)
    elif isinstance(value, list | tuple):
        for v in value:
            check_playbook_vars(v, source)
    return value


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
    fleet_image: FleetImage | None = None  # where the host gets its image (ship, pull)

    @property
    def ok(self) -> bool:
        return self.fits and not self.reason

    @property
    def dir(self) -> str:
        """The deployment folder: a validated name under a validated root, never elsewhere."""
        return f"{self.host.root}/{self.name}"

    @property
    def models_dir(self) -> str:
        return f"{self.host.root}/{MODELS_DIR}"

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
            "models_dir": self.models_dir,
            "files_src": files_src,
            "weights": [w.as_var() for w in self.weights],
            "port": self.host.port,
            "backend": self.host.backend,
            "expose": self.host.expose,
            "fingerprint": self.fingerprint(),
            "health_retries": self.health_retries,
            "smoke_model": self.model_alias,
            "health_path": HEALTH_PATH.get(self.host.backend, HEALTH_PATH["llamacpp"]),
            "service": "ollama" if self.host.backend == "ollama" else "llama-server",
            # What `down --purge` removes: each weights file, its mark, its parts, half-joined
            # copy; and the parts of images being sent.
            "purge_paths": [
                p
                for w in self.weights
                for p in (w.dest, w.dest + MARK_SUFFIX, parts_dir(w.dest), w.dest + ".partial")
            ]
            + [f"{self.host.root}/{IMAGES_DIR}"],
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
            "image_why": self.fleet_image.why if self.fleet_image else None,
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
    """The raw text of a failed task: its message, or its stderr for a bare 'non-zero
    return code'."""
    if res.get("censored"):
        return "a task with secrets failed (its output is hidden by no_log)"
    msg = str(res.get("msg") or "").strip()
    err = str(res.get("stderr") or "").strip()
    text = msg if msg and msg != "non-zero return code" else (err or msg)
    if msg == "non-zero return code" and res.get("rc") is not None:
        text = f"{text} (exit {res.get('rc')})"
    return " ".join(text.split())[:2000] or "failed"


def outcomes_from_events(
    events: Iterable[Mapping[str, Any]], hosts: Iterable[str], *, default: str
) -> dict[str, HostOutcome]:
    """Per host: its last step, its report (from the playbook's report tasks) or its failure,
    the failure as one line that names the cause and the next step (core/fleet/reasons.py).

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
                if o.result == "failed" and "step" in report:
                    o.step = " ".join(str(report.pop("step") or "").split())[:200]
                    raw = str(report.get("detail") or "")
                    o.reason = explain(o.step, raw)
                    report["detail"] = raw_line(raw)
                o.details.update(report)
                reported.add(host)
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            seen.add(host)
            o.result = "failed"
            if host not in reported:
                raw = _failure_text(res)
                o.step, o.reason = task, explain(task, raw)
                o.details["detail"] = raw_line(raw)
        elif kind == "runner_on_unreachable":
            seen.add(host)
            raw = _failure_text(res)
            o.result, o.step, o.reason = "unreachable", task, explain_unreachable(raw)
            o.details["detail"] = raw_line(raw)
    for host, o in out.items():
        if host in seen and o.result == "not-run":
            o.result = default
    return out


def failures_after_rescue(events: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Hosts whose block failed and was rescued: the original failed step and its reason.

    The rescue's own `fail` task repeats it, but the first failure carries the real output.
    """
    first: dict[str, str] = {}
    for ev in events:
        data = ev.get("event_data") or {}
        if ev.get("event") == "runner_on_failed" and data.get("host") not in first:
            task = str(data.get("task") or "")
            first[str(data.get("host"))] = explain(task, _failure_text(data.get("res") or {}))
    return first


PLAYBOOKS = ("facts", "preflight", "deploy", "status", "down")


def render_playbook(kind: str, **ctx: Any) -> str:
    """A playbook from templates/ansible/. Our own placeholders are [[ ]] and [% %], so the
    `{{ }}` expressions stay for Ansible to evaluate on each host."""
    import jinja2
    import yaml

    from deployer import __version__
    from deployer.core.data_source import data_source
    from deployer.core.serve.quoting import Quoted, comment, sh, yaml_str

    if kind not in PLAYBOOKS:
        raise ValueError(f"unknown playbook {kind}")

    def only_quoted(value: object) -> object:
        # As in render's strict templates: a value our placeholders print went through a
        # filter for where it lands (or is an int).
        if isinstance(value, Quoted) or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise ValueError(f"{kind}.yml.j2 prints {value!r} without a quoting filter")

    text = data_source().template_text(f"ansible/{kind}.yml.j2")
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
        finalize=only_quoted,
    )
    env.filters.update(comment=comment, sh=sh, yaml=yaml_str)
    serial = ctx.pop("serial", None)
    if isinstance(serial, str):
        # `--serial` is N or N% (checked by the CLI): a number, or a percentage as text.
        serial = int(serial) if serial.isdigit() else yaml_str(serial)
    # Every value our placeholders print comes from here (the templates only branch on it).
    fixed = {
        "version": __version__,
        "container_user": NOBODY,
        "modelfile_in_container": MODELFILE_IN_CONTAINER,
        "smoke_prompt": SMOKE_PROMPT,
        "smoke_max_tokens": SMOKE_MAX_TOKENS,
    }
    out = env.from_string(text).render(
        **fixed, serial=serial, **{"max_fail_percentage": None, "purge": False, **ctx}
    )
    yaml.safe_load(out)  # a template bug fails here, not inside Ansible
    return out
