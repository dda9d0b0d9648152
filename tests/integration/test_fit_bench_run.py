"""benchmarks/fit_accuracy.py end to end against a real llama-server: a setting whose server
cannot start is recorded and skipped, and the run goes on to the next one."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.llama_server, pytest.mark.usefixtures("llama_server_prefix")]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def _unloadable_copy(demo: Path, to: Path) -> Path:
    """The demo with a tokenizer kind llama.cpp does not know (same length, edited in place):
    deployer reads the file, llama-server refuses to load it."""
    shutil.copyfile(demo, to)
    data = bytearray(to.read_bytes()[: 1 << 20])
    key = b"tokenizer.ggml.model"
    at = data.index(key) + len(key) + 4 + 8  # the value: type (u32), length (u64), bytes
    assert data[at : at + 5] == b"llama"
    with to.open("r+b") as f:
        f.seek(at)
        f.write(b"zzzzz")
    return to


def test_a_setting_whose_server_fails_is_recorded_and_the_run_goes_on(
    tmp_path: Path, demo_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import fit_accuracy

    bad = _unloadable_copy(demo_model, tmp_path / "bad.gguf")
    out = tmp_path / "r.json"
    argv = ["fit_accuracy.py", "--model", str(bad), "--settings", "0,7", "--out", str(out)]
    handler = signal.getsignal(signal.SIGTERM)  # main() installs its own
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "argv", argv)
            assert fit_accuracy.main() == 1
    finally:
        signal.signal(signal.SIGTERM, handler)
    err = capsys.readouterr().err
    assert err.count("not judged: bad ") == 2  # both settings tried, neither ended the run
    assert "Traceback" not in err
    doc = json.loads(out.read_text())
    assert doc["rows"] == []
    assert [(n["model"], n["ctx"]) for n in doc["not_judged"]] == [("bad", 4096), ("bad", 2048)]
    assert all("failed uncapped" in n["reason"] for n in doc["not_judged"])
    assert doc["summary"]["settings_not_judged"] == 2
    assert doc["summary"]["targets_met"] is False
