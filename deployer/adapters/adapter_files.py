"""LoRA adapter files for the plan (deployer.core.model.adapter.AdapterSource): a local file
found, a Hub adapter pulled and verified through the same path as model weights, and the
header read with the same bounded reader as a model's."""

from __future__ import annotations

from pathlib import Path

from deployer.core.errors import GGUFReadError, InvalidRequest, NotFoundError, QuantNotFound
from deployer.core.model.adapter import AdapterFacts, HubAdapterRef, adapter_facts
from deployer.core.model.gguf_header import HeaderError
from deployer.core.model.gguf_meta import GGUFPart, check_part


class AdapterFiles:
    """This machine's adapter files and the Hub cache."""

    def local_file(self, path: Path) -> Path:
        """`path` resolved, or NotFoundError naming it."""
        if not path.is_file():
            what = "not a regular file" if path.exists() else "no such file"
            raise NotFoundError(
                "LoRA adapter", str(path), [], f"There is {what} at {path.resolve()}."
            )
        return path.resolve()

    def pull(self, ref: HubAdapterRef) -> Path:
        """The adapter in the Hub cache, pulled and sha256-verified (deployer pull's path)."""
        from deployer.adapters.clock import SystemClock
        from deployer.adapters.download import HfCacheStore
        from deployer.adapters.local_files import LocalDisk
        from deployer.core.pull.files import pull_hub_file

        try:
            pulled = pull_hub_file(
                ref.repo_id, ref.filename, ref.revision,
                store=HfCacheStore(), files=LocalDisk(), clock=SystemClock(),
            )  # fmt: skip
        except QuantNotFound as exc:  # no file named and not exactly one .gguf there
            raise InvalidRequest(
                f"{ref.text} holds {len(exc.close_matches) or 'no'} .gguf adapter files, "
                "and --lora names none",
                f"Name one: {ref.text}/FILE.gguf.",
            ) from None
        return Path(pulled.path)

    def facts(self, path: Path, label: str) -> AdapterFacts:
        """The adapter's header facts, the file checked to hold every tensor it lists."""
        from deployer.adapters.gguf_files import read_header

        try:
            header = read_header(path)
            size = path.stat().st_size
        except HeaderError as exc:
            raise GGUFReadError(label, str(exc)) from None
        except OSError as exc:
            raise GGUFReadError(label, exc.strerror or str(exc)) from None
        check_part(GGUFPart(header, size, label))
        return adapter_facts(header, label)
