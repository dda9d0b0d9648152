"""Errors of the container runtime, the runtime image and deployment state."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from deployer.core.errors import DeployerError, ExternalUnavailable, NotFoundError

START_DOCKERD = (
    "Start the Docker daemon ('sudo systemctl start docker', or "
    "'dockerd >/var/log/dockerd.log 2>&1 &'), or point DOCKER_HOST at a running one."
)


class EngineUnavailable(ExternalUnavailable):
    """The container engine does not answer."""

    def __init__(self, problem: str, hint: str = START_DOCKERD) -> None:
        super().__init__("Docker", problem, hint)


def _log_block(lines: list[str]) -> str:
    if not lines:
        return " (the container logged nothing)"
    return "; last log lines:\n" + "\n".join(f"  | {line}" for line in lines)


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
            f"state file {_printable(self.path)}: {self.problem}. deployer acts on nothing in "
            f"it; remove it ({_rm_hint(self.path)}), or upgrade deployer if a newer one wrote it"
        )


def _printable(path: str) -> str:
    """A path as one printable line: repr-quoted when it holds control characters."""
    return path if path.isprintable() else repr(path)


def _rm_hint(path: str) -> str:
    if _printable(path) != path:
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
