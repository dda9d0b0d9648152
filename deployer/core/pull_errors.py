"""Errors of `deployer pull` (kept apart from errors.py, which other commands own)."""

from __future__ import annotations

from dataclasses import dataclass, field

from deployer.core.errors import DeployerError
from deployer.core.units import fmt_bytes


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
