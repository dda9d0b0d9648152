"""`deployer fleet` over 1, 5, 10 and 20 inventory hosts, with Ansible forks 1 and 5.

Every host is on Ansible's local connection with `deployer_profile: detect`, so `fleet plan`
runs the real facts play, and `fleet deploy --check` runs the real deploy playbook in check mode
(nothing changes on the machine). With `--real N`, fleets of up to N hosts are also deployed for
real (demo-model containers, health check and smoke test), then taken down. Prints a table,
writes benchmarks/results/fleet_scale.json and the results block of docs/fleet.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fleet_scale.json"
DOC = ROOT / "docs" / "fleet.md"
BEGIN, END = "<!-- fleet-benchmark:begin -->", "<!-- fleet-benchmark:end -->"
CLI = [sys.executable, "-c", "from deployer.cli.app import main; main()", "fleet"]
IMAGE = "deployer/llama-server:11434.0.0-cpu"


def inventory(folder: Path, n: int, root: Path, base_port: int) -> Path:
    hosts = {
        f"h{i:02d}": {"deployer_port": base_port + i, "deployer_root": f"{root}/h{i:02d}"}
        for i in range(n)
    }
    inv = {"all": {"vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "deployer_model": "demo", "deployer_profile": "detect", "deployer_image": IMAGE,
    }, "hosts": hosts}}  # fmt: skip
    path = folder / f"fleet-{n}.yml"
    path.write_text(yaml.safe_dump(inv))
    return path


def timed(args: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    proc = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    try:
        out = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"fleet {args[0]} failed:\n{proc.stderr[-2000:]}") from None
    return took, out


def results_of(out: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for h in out["hosts"]:
        counts[h["result"]] = counts.get(h["result"], 0) + 1
    return counts


def write_doc(table: str) -> None:
    text = DOC.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        DOC.write_text(f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", default="1,5,10,20", help="host counts")
    parser.add_argument("--forks", default="1,5", help="Ansible forks")
    parser.add_argument("--real", type=int, default=0, help="also deploy for real up to N hosts")
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args()
    counts = [int(x) for x in opts.hosts.split(",")]
    forks_list = [int(x) for x in opts.forks.split(",")]
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-", dir="/tmp"))
    work.chmod(0o755)
    env = dict(os.environ, DEPLOYER_STATE_DIR=str(work / "state"))
    rows: list[dict[str, Any]] = []
    try:
        for forks in forks_list:
            for n in counts:
                inv = inventory(work, n, work / "hosts", 19000)
                plan_s, _plan = timed(["plan", "-i", str(inv), "--forks", str(forks)], env)
                check_s, check = timed(
                    ["deploy", "-i", str(inv), "--check", "--forks", str(forks)], env
                )
                row: dict[str, Any] = {
                    "hosts": n, "forks": forks, "plan_s": round(plan_s, 2),
                    "check_deploy_s": round(check_s, 2),
                    "check_per_host_s": round(check_s / n, 2),
                    "check_results": results_of(check),
                }  # fmt: skip
                if n <= opts.real:
                    real_s, real = timed(["deploy", "-i", str(inv), "--forks", str(forks)], env)
                    row["real_deploy_s"] = round(real_s, 2)
                    row["real_results"] = results_of(real)
                    timed(["down", "-i", str(inv), "--forks", str(forks)], env)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        "| hosts | forks | fleet plan (detect) s | deploy --check s | per host s | real deploy s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        real = f"{r['real_deploy_s']:.1f}" if "real_deploy_s" in r else "-"
        lines.append(
            f"| {r['hosts']} | {r['forks']} | {r['plan_s']:.1f} | {r['check_deploy_s']:.1f} "
            f"| {r['check_per_host_s']:.2f} | {real} |"
        )
    growth = {}
    for forks in forks_list:
        mine = {r["hosts"]: r for r in rows if r["forks"] == forks}
        lo, hi = min(mine), max(mine)
        growth[forks] = round(mine[hi]["check_deploy_s"] / mine[lo]["check_deploy_s"], 2)
        lines.append("")
        lines.append(
            f"forks {forks}: deploy --check over {hi} hosts took {growth[forks]}x the time of "
            f"{lo} ({hi // lo}x the hosts)."
        )
    table = "\n".join(lines)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    table += f"\n\nMeasured on {machine}; rerun with `python benchmarks/fleet_scale.py`."
    print(table)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(
        json.dumps({"machine": machine, "rows": rows, "growth": growth}, indent=2) + "\n"
    )
    write_doc(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
