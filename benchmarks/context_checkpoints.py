"""llama-server's context checkpoints for a sliding-window model, as the plan holds them.

One uncapped start, weights loaded, one slot, --ctx-checkpoints 3, the prompt cache off:
distinct long prompts one after another; RssAnon after each, and every checkpoint the server
logs (created, with its size; erased). A checkpoint holds the slot's sliding-window KV at that
point; a prompt that shares no prefix with the slot's invalidates the earlier ones.

    python benchmarks/context_checkpoints.py MODEL CHECKPOINTS PROMPTS TOKENS CTX
    e.g. python benchmarks/context_checkpoints.py gemma2-2b-q4_k_m 3 5 1900 2048

Prints one JSON line a prompt, the logged buffers and the server's checkpoint lines (results of
the run in docs/fit.md: benchmarks/results/context_checkpoints.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes
from _llama import free_port, llama_prefix, stop
from fit_truth import parse_proc_status

from deployer.core.fit.llamalog import parse_buffers

name, ck, k, ntok, ctx = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
path = Path(shapes.build(name, Path("/var/tmp/deployer-fitbench")))
port = free_port()
cmd = [
    str(llama_prefix() / "bin" / "llama-server"),
    "-m",
    str(path),
    "--host",
    "127.0.0.1",
    "--port",
    str(port),
    "-c",
    ctx,
    "-np",
    "1",
    "-fa",
    "on",
    "--fit",
    "off",
    "-t",
    "2",
    "-tb",
    "2",
    "--load-mode",
    "none",
    "--cache-ram",
    "0",
    "-v",
] + (["--ctx-checkpoints", ck] if ck != "default" else [])
log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed when the process exits
p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
status = Path(f"/proc/{p.pid}/status")
try:
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    for i in range(k):
        prompt = [10 + (i * 7919 + j * 31) % 30000 for j in range(ntok)]
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/completion",
            data=json.dumps({"prompt": prompt, "n_predict": 2, "cache_prompt": True}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=3000) as r:
            r.read()
        anon = parse_proc_status(status.read_text()).anon
        print(json.dumps({"ck": ck, "prompt": i, "anon_mib": round(anon / 2**20, 1)}), flush=True)
finally:
    stop(p)
    log.seek(0)
    txt = log.read()
    b = parse_buffers(txt.split("loaded meta data")[-1])
    print(
        "buffers",
        {c: round(b.get("host", c) / 2**20, 1) for c in ("model", "KV", "compute", "output")},
    )
    print("\n".join(t for t in txt.splitlines() if "checkpoint" in t.lower())[-2500:])
