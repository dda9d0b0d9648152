"""`down --purge`: deleting a deployment's model files from the Hugging Face cache."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from deployer.core.state.records import DeploymentRecord, PurgeResult


def purge_weights(
    records_remaining: Iterable[DeploymentRecord], record: DeploymentRecord, *, hub_cache: Path
) -> PurgeResult:
    """Delete `record`'s model files that live in the Hugging Face cache and no other record
    uses: the snapshot link and the blob it points to. Files elsewhere are the user's: kept."""
    in_use: set[str] = set()
    for other in records_remaining:
        if other.name != record.name:
            for f in other.files:
                in_use.add(os.path.realpath(f))
                in_use.add(os.path.abspath(f))
    cache = os.path.realpath(hub_cache)
    deleted: list[str] = []
    kept: list[tuple[str, str]] = []
    for f in record.files:
        real = os.path.realpath(f)
        if not real.startswith(cache + os.sep):
            kept.append((f, "not in the Hugging Face cache"))
        elif real in in_use or os.path.abspath(f) in in_use:
            kept.append((f, "used by another deployment"))
        elif not os.path.lexists(f):
            kept.append((f, "already gone"))
        else:
            if real != os.path.abspath(f):
                Path(real).unlink(missing_ok=True)
            Path(f).unlink(missing_ok=True)
            deleted.append(f)
    return PurgeResult(deleted, kept)
