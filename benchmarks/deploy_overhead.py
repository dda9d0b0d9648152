"""Deploy overhead, CLI start time and decode speed of the rendered settings.

Image and model already present, in one run:
1. `deployer deploy demo` to healthy + smoke test, vs a plain `docker run` + health-poll loop +
   the same completion, on the same image and model (targets: ratio <= 1.15, overhead <= 0.5 s);
2. CLI start: median of `deployer --help` and `deployer profiles list` (target <= 150 ms),
   interleaved with a bare `python -c pass` as the floor measured in the same run;
3. decode tokens/s with the rendered llama.cpp arguments vs llama-server's defaults on the same
   model and machine (target: >= 1.0x).

    python benchmarks/deploy_overhead.py [--runs N]

Prints a table and writes benchmarks/results/deploy_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _llama import free_port, llama_prefix

from deployer.adapters.local_models import demo_model_path
from deployer.core.serve.image import image_for_build
from deployer.core.serve.llama_flags import PINNED_BUILD
from deployer.core.serve.proof import COMPLETION_PROMPT

DEPLOYER = [sys.executable, "-c", "from deployer.cli.app import main; main()"]
# The demo has no chat template: deploy proves it with this plain completion, and so does this.
PROMPT = {"prompt": COMPLETION_PROMPT, "max_tokens": 8, "temperature": 0}


def _complete(port: int) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions",
        data=json.dumps(PROMPT).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        json.loads(r.read())


def _healthy(port: int, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("not healthy")


def deployer_run() -> float:
    """Wall seconds of `deployer deploy demo` (healthy + smoke), then tear down."""
    port = free_port()
    t0 = time.monotonic()
    subprocess.run(
        [
            *DEPLOYER,
            "deploy",
            "demo",
            "--profile",
            "cpu-x86-2c-8gb",
            "--name",
            "bench-deploy",
            "--port",
            str(port),
            "--json",
        ],
        check=True,
        capture_output=True,
    )
    seconds = time.monotonic() - t0
    subprocess.run([*DEPLOYER, "down", "bench-deploy"], check=True, capture_output=True)
    return seconds


def docker_run(image: str, model: Path) -> float:
    """Wall seconds of a plain `docker run` + health poll + the same completion."""
    port = free_port()
    name = "bench-plain"
    t0 = time.monotonic()
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "-p",
            f"127.0.0.1:{port}:8080",
            "-v",
            f"{model}:/models/{model.name}:ro",
            image,
            "-m",
            f"/models/{model.name}",
            "-c",
            "8192",
            "-np",
            "1",
            "--host",
            "0.0.0.0",
            "--port",
            "8080",
        ],
        check=True,
        capture_output=True,
    )
    _healthy(port)
    _complete(port)
    seconds = time.monotonic() - t0
    subprocess.run(["docker", "rm", "-f", name], check=True, capture_output=True)
    return seconds


def _ms(cmd: list[str]) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    return (time.monotonic() - t0) * 1000


def cli_ms(runs: int = 15) -> dict[str, float]:
    """Median wall milliseconds of the console script, interleaved with a bare `python -c pass`
    (the interpreter's own start on this machine, the floor under any Python CLI)."""
    # The console script pip wrote beside this interpreter: a version manager's shim in front
    # of it (pyenv's is a bash script, ~50 ms) is not deployer's start-up.
    beside = Path(sys.executable).parent / "deployer"
    exe = str(beside) if beside.is_file() else (shutil.which("deployer") or "deployer")
    cases = {
        "python_start": [sys.executable, "-c", "pass"],
        "help": [exe, "--help"],
        "profiles_list": [exe, "profiles", "list"],
    }
    # Bytecode as `pip install` leaves it: a source checkout run with PYTHONDONTWRITEBYTECODE
    # would otherwise compile every module it imports on every start.
    import compileall

    import deployer

    compileall.compile_dir(str(Path(deployer.__file__).parent), quiet=1)
    for cmd in cases.values():
        _ms(cmd)  # warm the page cache and the profile memo
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(runs):
        for key, cmd in cases.items():
            times[key].append(_ms(cmd))
    return {k: statistics.median(v) for k, v in times.items()}


def decode_tps(model: Path, args: list[str]) -> float:
    """Tokens/s of a 64-token completion from a native llama-server started with `args`."""
    port = free_port()
    proc = subprocess.Popen(
        [
            str(llama_prefix() / "bin" / "llama-server"),
            "-m",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _healthy(port)
        best = 0.0
        for _ in range(3):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/completion",
                data=json.dumps(
                    {"prompt": "Once upon a time", "n_predict": 64, "cache_prompt": False}
                ).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=120) as r:
                best = max(best, float(json.loads(r.read())["timings"]["predicted_per_second"]))
        return best
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> int:
    """Run everything and print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "deploy_overhead.json"
    )
    ns = ap.parse_args()
    model = demo_model_path()
    image = image_for_build(PINNED_BUILD)
    deployer_run()  # warm-up: builds the image when missing, fills caches
    d: list[float] = []
    p: list[float] = []
    for _ in range(ns.runs):  # interleaved, so drift in machine load hits both alike
        d.append(deployer_run())
        p.append(docker_run(image, model))
    dm, pm = statistics.median(d), statistics.median(p)
    cli = cli_ms()
    rendered = json.loads(
        subprocess.run(
            [*DEPLOYER, "deploy", "demo", "--profile", "cpu-x86-2c-8gb", "--dry-run", "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )["container"]["command"]
    flags = [a for a in rendered if a not in ("--host", "0.0.0.0", "--port", "8080")]
    flags = flags[2:] if flags[:1] == ["-m"] else flags
    tps_rendered = decode_tps(model, flags)
    tps_default = decode_tps(model, [])
    out = {
        "deploy_seconds_median": round(dm, 3),
        "docker_run_seconds_median": round(pm, 3),
        "ratio": round(dm / pm, 3),
        "overhead_s": round(dm - pm, 3),
        "deploy_seconds": [round(x, 3) for x in d],
        "docker_run_seconds": [round(x, 3) for x in p],
        "cli_help_ms": round(cli["help"], 1),
        "cli_profiles_list_ms": round(cli["profiles_list"], 1),
        "python_start_ms": round(cli["python_start"], 1),
        "decode_tps_rendered": round(tps_rendered, 1),
        "decode_tps_default": round(tps_default, 1),
        "decode_ratio": round(tps_rendered / tps_default, 3),
        "rendered_flags": flags,
        "runs": ns.runs,
    }
    rows = [
        ("deploy to healthy + smoke (s)", out["deploy_seconds_median"], "-"),
        ("docker run + poll + smoke (s)", out["docker_run_seconds_median"], "-"),
        ("ratio", out["ratio"], "<= 1.15"),
        ("overhead (s)", out["overhead_s"], "<= 0.5"),
        ("deployer --help (ms)", out["cli_help_ms"], "<= 150"),
        ("deployer profiles list (ms)", out["cli_profiles_list_ms"], "<= 150"),
        ("python -c pass (ms, the floor)", out["python_start_ms"], "-"),
        ("decode tok/s rendered / default", f"{tps_rendered:.1f} / {tps_default:.1f}", ">= 1.0x"),
    ]
    for name, value, target in rows:
        print(f"{name:36} {value!s:>16}   target {target}")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
