"""How many connections a pull opens when the user does not say."""

from __future__ import annotations

import pytest

from deployer.adapters.download import BLOCK_BYTES, HfCacheStore, choose_connections

GB = 10**9


@pytest.mark.parametrize(
    ("size", "cpus", "want"),
    [
        (5 * GB, 1, 1),  # the hasher needs the only core
        (5 * GB, 2, 1),  # a second stream would compete with the hasher for 2 cores
        (5 * GB, 4, 4),
        (5 * GB, 64, 4),  # capped: more streams rarely help and cost the Hub
        (3 * BLOCK_BYTES, 8, 1),  # small file: one stream
        (4 * BLOCK_BYTES, 8, 4),
    ],
)
def test_choose_connections(size: int, cpus: int, want: int) -> None:
    assert choose_connections(size, cpus) == want


def test_explicit_connections_are_kept() -> None:
    assert HfCacheStore(connections=3).connections == 3
    assert HfCacheStore(connections=0).connections == 1
    assert HfCacheStore().connections is None  # chosen per file
