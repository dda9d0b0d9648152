"""A partial download's progress sidecar is ours to read and write, never a planted link."""

from __future__ import annotations

import os
from pathlib import Path

from deployer.adapters.download import _Blocks, _read_sidecar


def test_a_sidecar_linked_to_another_file_is_neither_read_nor_written(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    part = tmp_path / ("a" * 64 + ".incomplete")
    part.write_bytes(b"x" * 10)
    os.symlink(victim, part.with_name(part.name + ".progress"))
    blocks = _Blocks(part, size=100, block=16)
    try:
        assert victim.read_text() == "precious"
        assert not part.with_name(part.name + ".progress").is_symlink()
        assert sum(blocks.done) == 10  # the plain prefix, not what a link claimed
    finally:
        os.close(blocks.fd)


def test_a_sidecar_that_never_ends_is_not_read(tmp_path: Path) -> None:
    link = tmp_path / "p.progress"
    os.symlink("/dev/zero", link)
    assert _read_sidecar(link, 1 << 20) == b""
    fifo = tmp_path / "f.progress"
    os.mkfifo(fifo)
    assert _read_sidecar(fifo, 1 << 20) == b""
    big = tmp_path / "big.progress"
    big.write_bytes(b"\0" * 100)
    assert _read_sidecar(big, 99) == b""
    assert _read_sidecar(big, 100) == b"\0" * 100
