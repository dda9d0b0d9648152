"""`deployer fleet` over 1 to 100 inventory hosts, with Ansible forks 1, 5 and 20.

Every host is on Ansible's local connection (`--profile detect` adds the facts play), so
`fleet plan` plans each host and `fleet deploy --check` runs the real preflight and the real
deploy playbook in check mode (nothing changes on the machine). Each run's time is split into
the plays (from ansible-runner's event times) and the rest (deployer's own Python: planning,
the run folder). With `--real N`, fleets of up to N local hosts are also deployed for real, then
taken down; with `--netns N`, N network-namespace hosts (each its own Docker engine and sshd,
no image, no registry: tests/integration/netnskit.py) are deployed for real, the image and the
weights shipped from this machine, then taken down. Prints a table, writes
benchmarks/results/fleet_scale.json and the results block of docs/fleet.md.
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


def inventory(folder: Path, n: int, root: Path, base_port: int, profile: str) -> Path:
    hosts = {
        f"h{i:03d}": {"deployer_port": base_port + i, "deployer_root": f"{root}/h{i:03d}"}
        for i in range(n)
    }
    inv = {"all": {"vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "deployer_model": "demo", "deployer_profile": profile, "deployer_image": IMAGE,
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


def play_seconds(run_dir: str | None) -> dict[str, float]:
    """Each play's wall time in a run folder (first to last event of artifacts/<ident>)."""
    from datetime import datetime

    out: dict[str, float] = {}
    if not run_dir:
        return out
    for ident in sorted(Path(run_dir).glob("artifacts/*")):
        times = []
        for f in ident.glob("job_events/*.json"):
            created = json.loads(f.read_text()).get("created")
            if created:
                times.append(datetime.fromisoformat(created))
        if times:
            out[ident.name] = round((max(times) - min(times)).total_seconds(), 2)
    return out


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


def netns_run(n: int, forks: int, env: dict[str, str], work: Path) -> dict[str, Any]:
    """Deploy `n` namespace hosts for real (nothing on them, no registry), then take them down."""
    sys.path.insert(0, str(ROOT))
    from deployer.adapters.docker_engine import DockerEngine
    from tests.integration.netnskit import netns_fleet

    fleet = netns_fleet(DockerEngine(), IMAGE, n, load_image=False)
    hosts = next(fleet)
    try:
        inv = {"all": {"vars": {"ansible_python_interpreter": sys.executable,
                                "deployer_model": "demo", "deployer_profile": "cpu-x86-2c-8gb"},
                       "hosts": {h.name: {**h.inventory_vars(), "deployer_port": 8080,
                                          "deployer_root": f"{work}/netns/{h.name}"}
                                 for h in hosts}}}  # fmt: skip
        path = work / f"netns-{n}.yml"
        path.write_text(yaml.safe_dump(inv))
        deploy_s, out = timed(["deploy", "-i", str(path), "--forks", str(forks)], env)
        rerun_s, again = timed(["deploy", "-i", str(path), "--forks", str(forks)], env)
        down_s, _ = timed(["down", "-i", str(path), "--forks", str(forks), "--purge"], env)
        sent = sum(h.get("transfers", {}).get("bytes_sent", 0) for h in out["hosts"])
        resent = sum(h.get("transfers", {}).get("bytes_sent", 0) for h in again["hosts"])
        return {"netns_hosts": n, "forks": forks, "deploy_s": round(deploy_s, 2),
                "per_host_s": round(deploy_s / n, 2), "plays": play_seconds(out.get("run_dir")),
                "results": results_of(out), "bytes_sent": sent, "rerun_s": round(rerun_s, 2),
                "rerun_results": results_of(again), "rerun_bytes_sent": resent,
                "down_s": round(down_s, 2)}  # fmt: skip
    finally:
        fleet.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", default="1,10,100", help="host counts")
    parser.add_argument("--forks", default="1,5,20", help="Ansible forks")
    parser.add_argument("--profile", default="cpu-x86-2c-8gb", help="a profile id, or detect")
    parser.add_argument("--skip", default="", help="FORKSxHOSTS pairs not to run, e.g. 1x100")
    parser.add_argument("--real", type=int, default=0, help="also deploy for real up to N hosts")
    parser.add_argument("--netns", default="", help="namespace fleets to deploy, e.g. 5,10")
    parser.add_argument("--netns-forks", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args()
    counts = [int(x) for x in opts.hosts.split(",") if x]
    forks_list = [int(x) for x in opts.forks.split(",") if x]
    skip = set(opts.skip.split(",")) if opts.skip else set()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-", dir="/tmp"))
    work.chmod(0o755)
    env = dict(os.environ, DEPLOYER_STATE_DIR=str(work / "state"))
    rows: list[dict[str, Any]] = []
    netns: list[dict[str, Any]] = []
    try:
        for forks in forks_list:
            for n in counts:
                if f"{forks}x{n}" in skip:
                    continue
                inv = inventory(work, n, work / "hosts", 19000, opts.profile)
                plan_s, _plan = timed(["plan", "-i", str(inv), "--forks", str(forks)], env)
                check_s, check = timed(
                    ["deploy", "-i", str(inv), "--check", "--forks", str(forks)], env
                )
                plays = play_seconds(check.get("run_dir"))
                row: dict[str, Any] = {
                    "hosts": n, "forks": forks, "profile": opts.profile,
                    "plan_s": round(plan_s, 2), "check_deploy_s": round(check_s, 2),
                    "check_per_host_s": round(check_s / n, 3), "plays_s": plays,
                    "ours_s": round(check_s - sum(plays.values()), 2),
                    "check_results": results_of(check),
                }  # fmt: skip
                if n <= opts.real:
                    real_s, real = timed(["deploy", "-i", str(inv), "--forks", str(forks)], env)
                    row["real_deploy_s"] = round(real_s, 2)
                    row["real_results"] = results_of(real)
                    timed(["down", "-i", str(inv), "--forks", str(forks)], env)
                rows.append(row)
                print(json.dumps(row), flush=True)
        for n in [int(x) for x in opts.netns.split(",") if x]:
            netns.append(netns_run(n, opts.netns_forks, env, work))
            print(json.dumps(netns[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        "| hosts | forks | fleet plan s | deploy --check s | per host s | preflight play s "
        "| deploy play s | deployer's own s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p = r["plays_s"]
        lines.append(
            f"| {r['hosts']} | {r['forks']} | {r['plan_s']:.1f} | {r['check_deploy_s']:.1f} "
            f"| {r['check_per_host_s']:.2f} | {p.get('preflight', 0):.1f} | {p.get('run', 0):.1f} "
            f"| {r['ours_s']:.1f} |"
        )
    for forks in forks_list:
        mine = {r["hosts"]: r for r in rows if r["forks"] == forks}
        if len(mine) < 2:
            continue
        lo, hi = min(mine), max(mine)
        lines.append("")
        lines.append(
            f"forks {forks}: per-host cost of deploy --check {mine[lo]['check_per_host_s']:.2f} s "
            f"at {lo} host(s), {mine[hi]['check_per_host_s']:.2f} s at {hi}."
        )
    if netns:
        lines += ["", "| namespace hosts | forks | deploy s | per host s | preflight play s "
                  "| deploy play s | MB sent | rerun s | MB sent on rerun | down --purge s |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in netns:
            lines.append(
                f"| {r['netns_hosts']} | {r['forks']} | {r['deploy_s']:.1f} | {r['per_host_s']:.2f} "
                f"| {r['plays'].get('preflight', 0):.1f} | {r['plays'].get('run', 0):.1f} "
                f"| {r['bytes_sent'] / 1e6:.0f} | {r['rerun_s']:.1f} "
                f"| {r['rerun_bytes_sent'] / 1e6:.0f} | {r['down_s']:.1f} |"
            )
    table = "\n".join(lines)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    table += f"\n\nMeasured on {machine}; rerun with `python benchmarks/fleet_scale.py`."
    print(table)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(
        json.dumps({"machine": machine, "rows": rows, "netns": netns}, indent=2) + "\n"
    )
    write_doc(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
