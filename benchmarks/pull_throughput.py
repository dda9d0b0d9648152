"""`deployer pull` throughput against curl, and bytes fetched twice after a kill, on loopback.

One run: a loopback Hub (tests/integration/hubserver.py) in its own process serves the demo
GGUF (253 MB); deployer pulls it (verification included) and `curl -o` fetches the same URL,
alternating, best of N each. Then a throttled pull is SIGKILLed at about half and rerun; the
bytes served twice are reported. Prints a table, writes benchmarks/results/pull_throughput.json
and the results block of docs/pull.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployer.adapters.local_models import demo_model_path  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pull_throughput.json"
DOC = ROOT / "docs" / "pull.md"
BEGIN, END = "<!-- pull-benchmark:begin -->", "<!-- pull-benchmark:end -->"
FILE = "gemma-3-270m-it-Q4_K_M.gguf"
SLOW_BPS = 100 * 1024 * 1024
CLI = "import sys; from deployer.cli.app import main; sys.argv[0] = 'deployer'; main()"
SERVER = """
import sys, time
sys.path.insert(0, {root!r})
from tests.integration.hubserver import LoopbackHub
from pathlib import Path
hub = LoopbackHub().start()
for repo in ("bench/fast", "bench/slow"):
    hub.add_repo(repo, {{{file!r}: Path({path!r})}}).sha256({file!r})
hub.throttle_bps["bench/slow/" + {file!r}] = {bps}
print(hub.url, flush=True)
time.sleep(3600)
"""


def served(url: str, key: str) -> int:
    """Bytes the server sent for repo/file so far."""
    with urllib.request.urlopen(f"{url}/_stats") as resp:
        return int(json.loads(resp.read()).get(key, 0))


def env_for(url: str, home: Path) -> dict[str, str]:
    env = dict(os.environ, HF_ENDPOINT=url, HF_HOME=str(home / "hf"))
    env.update(DEPLOYER_STATE_DIR=str(home / "state"), HF_HUB_DISABLE_TELEMETRY="1")
    return env


def time_curl(url: str, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(out), url], check=True)
    seconds = time.perf_counter() - start
    out.unlink()
    return seconds


def time_deployer(url: str, work: Path) -> tuple[float, dict[str, object]]:
    """Seconds for the library call (resolve, download, verify, link): no interpreter start."""
    home = work / "pull"
    shutil.rmtree(home, ignore_errors=True)
    code = (
        "import json, sys, time\n"
        "from deployer.adapters.clock import SystemClock\n"
        "from deployer.adapters.download import HfCacheStore\n"
        "from deployer.adapters.local_files import LocalDisk\n"
        "from deployer.core.pull.files import pull_model\n"
        "t = time.perf_counter()\n"
        "r = pull_model('hf://bench/fast', store=HfCacheStore(), files=LocalDisk(),\n"
        "               clock=SystemClock())\n"
        "print(json.dumps({'s': time.perf_counter() - t, 'r': r.as_dict()}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env_for(url, home),
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(proc.stdout)
    shutil.rmtree(home, ignore_errors=True)
    return float(data["s"]), dict(data["r"])


def kill_and_resume(url: str, work: Path, size: int) -> dict[str, float]:
    home = work / "resume"
    env = env_for(url, home)
    key = f"bench/slow/{FILE}"
    args = [sys.executable, "-c", CLI, "pull", "hf://bench/slow", "--json"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while served(url, key) < size // 2:
        if proc.poll() is not None:
            raise SystemExit(f"pull ended before the kill: {proc.communicate()}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = served(url, key)
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    total = served(url, key)
    shutil.rmtree(home, ignore_errors=True)
    twice = total - size
    return {
        "killed_at_fraction": round(before / size, 3),
        "bytes_fetched_twice": twice,
        "fraction_fetched_twice": round(twice / size, 5),
        "rerun_bytes_reused": int(result["bytes_reused"]),
        "rerun_verified": bool(result["files"][0]["verified"]),
    }


def write_doc(table: str) -> None:
    if not DOC.exists():
        return
    text = DOC.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        DOC.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool (best is kept)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args()
    if shutil.which("curl") is None:
        print("curl is not installed: cannot compare; install curl and rerun", file=sys.stderr)
        return 2
    demo = demo_model_path()
    size = demo.stat().st_size
    script = SERVER.format(root=str(ROOT), file=FILE, path=str(demo), bps=SLOW_BPS)
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        file_url = f"{url}/bench/fast/resolve/main/{FILE}"
        with tempfile.TemporaryDirectory(prefix="pull-bench-") as tmp:
            work = Path(tmp)
            curl_s, ours_s = [], []
            for _ in range(opts.runs):
                curl_s.append(time_curl(file_url, work / "curl.bin"))
                seconds, result = time_deployer(url, work)
                assert result["files"][0]["verified"] is True  # type: ignore[index]
                ours_s.append(seconds)
            resume = kill_and_resume(url, work, size)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
    curl_mbs = size / min(curl_s) / 1e6
    ours_mbs = size / min(ours_s) / 1e6
    ratio = ours_mbs / curl_mbs
    data = {
        "file_bytes": size,
        "runs": opts.runs,
        "curl_mb_s": round(curl_mbs, 1),
        "deployer_mb_s": round(ours_mbs, 1),
        "ratio": round(ratio, 3),
        "ratio_target": 0.9,
        "curl_seconds": [round(s, 3) for s in curl_s],
        "deployer_seconds": [round(s, 3) for s in ours_s],
        "resume": resume,
        "twice_target_fraction": 0.02,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    table = "\n".join(
        [
            "| measure | value | target |",
            "|---|---|---|",
            f"| curl -o (best of {opts.runs}) | {curl_mbs:.0f} MB/s | |",
            f"| deployer pull, sha256 verified (best of {opts.runs}) | {ours_mbs:.0f} MB/s | |",
            f"| ratio deployer / curl | {ratio:.2f} | >= 0.90 |",
            f"| killed at | {resume['killed_at_fraction']:.0%} of {size / 1e6:.0f} MB | ~50% |",
            f"| fetched twice after the rerun | {resume['bytes_fetched_twice'] / 1e6:.2f} MB"
            f" ({resume['fraction_fetched_twice']:.2%}) | <= 2% |",
        ]
    )
    print(table)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(data, indent=2) + "\n")
    write_doc(f"Measured on {data['machine']}, loopback Hub in its own process.\n\n{table}")
    ok = ratio >= 0.9 and resume["fraction_fetched_twice"] <= 0.02
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
