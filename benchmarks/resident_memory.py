"""Resident memory of a real llama-server vs the buffers it logs, per model and load mode.

Starts llama-server (scripts/build-llama.sh's build) on the demo model and on real-shaped sparse
GGUF headers (tests/unit/gguf_edit.py), waits for /health, decodes a few tokens, then reads
/proc/PID/status (VmHWM, RssAnon, RssFile) and the logged buffers. What the process holds beyond
its buffers is the host overhead the fit budgets (docs/fit.md, "host overhead").

    python benchmarks/resident_memory.py [--ctx 8192] [--modes mmap,none] [--models demo,llama7b]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._llama import free_port, llama_prefix, server_log
from deployer.adapters.local_models import demo_model_path
from deployer.core.fit.llamalog import parse_buffers
from deployer.core.units import MIB


def _model(name: str, tmp: Path) -> Path:
    from tests.unit import gguf_edit

    if name == "demo":
        return demo_model_path()
    if name.endswith(".gguf"):  # any GGUF on disk, e.g. one benchmarks/shapes.py wrote
        return Path(name)
    path = tmp / f"{name}.gguf"
    make = {"llama7b": gguf_edit.llama_header, "qwen3moe": gguf_edit.qwen3moe_header}[name]
    h = make(path)
    return gguf_edit.write_sparse(path, h.core, h.data_bytes)


def _status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def measure(model: Path, mode: str, ctx: int, threads: int) -> dict[str, float | str]:
    """One start: logged buffers and resident memory after a short decode, in MiB."""
    port = free_port()
    cmd = [
        str(llama_prefix() / "bin" / "llama-server"),
        *("-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-v"),
        *("-c", str(ctx), "-np", "1", "-t", str(threads), "--fit", "off", "--load-mode", mode),
    ]
    logf = server_log()
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.3)
        if proc.poll() is not None:
            logf.seek(0)
            raise RuntimeError(f"llama-server exited {proc.returncode}: {logf.read()[-2000:]}")
        # Token ids: the sparse headers carry placeholder vocabularies that cannot spell text.
        body = json.dumps({"prompt": [1, 450, 7483, 310], "n_predict": 16}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=body)
        t0 = time.monotonic()
        with urllib.request.urlopen(req, timeout=300) as r:
            timings = json.loads(r.read())["timings"]
        st = _status(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        logf.seek(0)
        log = logf.read()
        logf.close()
    b = parse_buffers(log)
    buffers = b.total("host")
    mapped = [
        float(line.split("=")[1].split()[0]) * MIB
        for line in log.splitlines()
        if "CPU_Mapped model buffer size" in line
    ]
    anon_buffers = buffers - int(sum(mapped))
    return {
        "model": model.name,
        "mode": mode,
        "ctx": ctx,
        "logged_buffers_mib": round(buffers / MIB, 1),
        "mapped_mib": round(sum(mapped) / MIB, 1),
        "anon_buffers_mib": round(anon_buffers / MIB, 1),
        "vm_hwm_mib": round(st["VmHWM"] / MIB, 1),
        "rss_anon_mib": round(st["RssAnon"] / MIB, 1),
        "rss_file_mib": round(st["RssFile"] / MIB, 1),
        "anon_beyond_buffers_mib": round((st["RssAnon"] - anon_buffers) / MIB, 1),
        "decode_tps": round(timings.get("predicted_per_second", 0.0), 1),
        "seconds": round(time.monotonic() - t0, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default="mmap,none")
    ap.add_argument("--models", default="demo,llama7b")
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in ns.models.split(","):
            model = _model(name, Path(tmp))
            for mode in ns.modes.split(","):
                print(json.dumps(measure(model, mode, ns.ctx, ns.threads)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
