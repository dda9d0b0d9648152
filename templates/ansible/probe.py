# Shipped by deployer: the fleet preflight, run on each host by `ansible.builtin.script`.
# Reads what to check from the DEPLOYER_PROBE environment variable (JSON), changes nothing,
# prints one JSON object. Standard library only; runs on the host's Python 3.
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading

REACH_TIMEOUT_S = 5.0
READ_BYTES = 1 << 20


def run(args, timeout=30):
    try:
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def one_line(text):
    return " ".join(str(text).split())[:300]


def docker_state():
    rc, out, err = run(["docker", "version", "--format", "{{.Server.Version}}"])
    if rc == 0:
        return {"ok": True, "version": out.strip()[:40]}
    return {"ok": False, "error": one_line(err or out or "docker not found")}


def compose_tool():
    if run(["docker", "compose", "version"])[0] == 0:
        return "docker compose"
    if run(["docker-compose", "version"])[0] == 0:
        return "docker-compose"
    return None


def image_id(tag):
    rc, out, _ = run(["docker", "image", "inspect", "--format", "{{.Id}}", tag])
    return out.strip()[:80] if rc == 0 and out.strip() else None


def own_running(name):
    rc, out, _ = run(["docker", "inspect", "--format", "{{.State.Running}}", name])
    return rc == 0 and out.strip() == "true"


def disk(root):
    path = root
    while path != "/" and not os.path.isdir(path):
        path = os.path.dirname(path)
    st = os.statvfs(path)
    return {"path": path, "free": st.f_bavail * st.f_frsize}


def port_busy(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        return s.connect_ex(("127.0.0.1", int(port))) == 0
    finally:
        s.close()


def reach(url, out, key):
    import urllib.error
    import urllib.request

    try:
        req = urllib.request.Request(url, method="GET")
        urllib.request.urlopen(req, timeout=REACH_TIMEOUT_S).close()
        out[key] = {"ok": True}
    except urllib.error.HTTPError:
        out[key] = {"ok": True}  # it answered: reachable (401 is a registry's normal answer)
    except Exception as exc:
        out[key] = {"ok": False, "error": one_line(getattr(exc, "reason", exc))}


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(READ_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def parts(folder):
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    return {n: os.path.getsize(os.path.join(folder, n)) for n in names[:100000]
            if n.isdigit() and os.path.isfile(os.path.join(folder, n))}


def file_state(spec):
    dest, size, want = spec["dest"], int(spec["size"]), spec.get("sha256")
    out = {"parts": parts(spec["parts_dir"]), "state": "absent"}
    try:
        st = os.stat(dest)
    except OSError:
        return out
    if st.st_size != size:
        out["state"] = "differs"
        return out
    try:
        mark = os.stat(spec["mark"])
        with open(spec["mark"]) as f:
            if f.read(200).split() == [str(want), str(size)] and mark.st_mtime >= st.st_mtime:
                out["state"] = "verified"
                return out
    except OSError:
        pass
    if not want:
        out["state"] = "differs"
        return out
    out["state"] = "hashed" if sha256_of(dest) == want else "differs"
    return out


def running_plan(want):
    """The fingerprint of what runs now, and /health's status when it is today's plan."""
    try:
        with open(want["fingerprint_file"]) as f:
            fingerprint = f.read(200).strip()
    except (OSError, KeyError):
        return None, None
    if fingerprint != want.get("fingerprint"):
        return fingerprint, None
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(want["health_url"], timeout=5) as r:
            return fingerprint, r.status
    except urllib.error.HTTPError as exc:
        return fingerprint, exc.code
    except Exception:
        return fingerprint, 0


def main():
    want = json.loads(os.environ["DEPLOYER_PROBE"])
    out = {"python": sys.version.split()[0], "uid": os.getuid() if hasattr(os, "getuid") else -1}
    reach_threads = []
    for key in ("registry", "hub"):
        if want.get(key):
            out[key] = {"ok": False, "error": "no answer within %d s" % REACH_TIMEOUT_S}
            t = threading.Thread(target=reach, args=(want[key], out, key), daemon=True)
            t.start()
            reach_threads.append(t)
    out["docker"] = docker_state()
    out["compose"] = compose_tool() if out["docker"]["ok"] else None
    out["image_id"] = image_id(want["image"]) if out["docker"]["ok"] else None
    out["own_running"] = own_running(want["name"]) if out["docker"]["ok"] else False
    out["disk"] = disk(want["root"])
    out["port_busy"] = port_busy(want["port"])
    out["files"] = {f["dest"]: file_state(f) for f in want.get("files", [])}
    out["fingerprint"], out["health"] = running_plan(want)
    out["image_parts"] = parts(want["image_parts_dir"]) if want.get("image_parts_dir") else {}
    for t in reach_threads:
        t.join(REACH_TIMEOUT_S + 1)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
