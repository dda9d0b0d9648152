"""Router preset folders: a deploy in progress keeps its preset while `down` prunes presets
without a record, and a second deploy of the same name cannot overwrite it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployer.adapters import router_files
from deployer.adapters.router_files import FilePresetStore, prune_presets, router_dir
from deployer.core.errors import InvalidRequest

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(30)
"""


def _hold(path: Path) -> subprocess.Popen[str]:
    """Another process (a deploy elsewhere) holding the preset's lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_preset_whose_deploy_is_in_progress_is_not_pruned() -> None:
    folder = router_dir("busy")
    folder.mkdir(parents=True)
    (folder / "models.ini").write_text("[m]\n")
    (router_dir("stale")).mkdir()
    proc = _hold(folder / ".deploying")
    try:
        assert prune_presets(lambda name: False) == ["stale"]
        assert (folder / "models.ini").exists()
    finally:
        proc.kill()
        proc.wait()
    assert prune_presets(lambda name: False) == ["busy"]
    assert not folder.exists()


def test_a_second_deploy_of_the_same_name_cannot_overwrite_the_preset() -> None:
    folder = router_dir("twice")
    folder.mkdir(parents=True)
    proc = _hold(folder / ".deploying")
    try:
        with pytest.raises(InvalidRequest, match="in progress"):
            FilePresetStore().write_preset("twice", "[m]\n")
        assert not (folder / "models.ini").exists()
    finally:
        proc.kill()
        proc.wait()


def test_this_process_keeps_its_own_preset_until_it_discards_it() -> None:
    store = FilePresetStore()
    path = store.write_preset("mine", "[m]\n")
    try:
        assert prune_presets(lambda name: False) == [] and path.exists()
        assert store.write_preset("mine", "[n]\n") == path  # the same deploy writes again
    finally:
        store.discard("mine")
    assert "mine" not in router_files._HELD and not path.parent.exists()
    # a deploy that is recorded lets go: its preset is an ordinary one from then on
    store.write_preset("done", "[m]\n")
    store.release("done")
    assert prune_presets(lambda name: False) == ["done"]
    t0 = time.monotonic()
    assert prune_presets(lambda name: False) == []
    assert time.monotonic() - t0 < 5
