"""Run the hardware tools (nvidia-smi, rocm-smi, sysctl, system_profiler) and keep raw output.

The only module that runs them. A missing tool, a non-zero exit or a timeout means "not
present": detection must never fail because a machine lacks a GPU.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import psutil

from deployer.core.hardware.detect import NOT_DISKS, ProbeResult

_TIMEOUT_S = 5.0
_NVIDIA_QUERY = [
    "nvidia-smi",
    "--query-gpu=name,memory.total,compute_cap",
    "--format=csv,noheader,nounits",
]
_ROCM_QUERY = ["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"]
_SYSFS_DRM = Path("/sys/class/drm")
_CPUINFO = Path("/proc/cpuinfo")


def _run(argv: list[str], errors: list[str]) -> str | None:
    """stdout of `argv`, or None (and a note in `errors`) if it is missing or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        errors.append(f"{argv[0]}: {exc}")
        return None
    if done.returncode != 0:
        errors.append(f"{argv[0]}: exit {done.returncode}: {done.stderr.strip()[:200]}")
        return None
    return done.stdout


def _nvml_csv() -> str | None:
    """Same CSV as nvidia-smi, read through NVML when pynvml is importable."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml raises its own NVMLError family; no driver means no GPU
        return None
    try:
        lines = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            total_mib = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // (1 << 20)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            lines.append(f"{name}, {total_mib}, {major}.{minor}")
        return "\n".join(lines) + "\n" if lines else None
    except Exception:
        return None
    finally:
        pynvml.nvmlShutdown()


def _nvidia(errors: list[str]) -> tuple[str | None, str]:
    if (csv := _nvml_csv()) is not None:
        return csv, "nvml"
    if (csv := _run(_NVIDIA_QUERY, errors)) is not None:
        return csv, "nvidia-smi"
    # Drivers before R510 do not know compute_cap.
    old = [_NVIDIA_QUERY[0], "--query-gpu=name,memory.total", _NVIDIA_QUERY[2]]
    if (csv := _run(old, errors)) is not None:
        return csv, "nvidia-smi"
    return None, ""


def _amd_sysfs() -> tuple[str, ...]:
    if not _SYSFS_DRM.is_dir():
        return ()
    values = []
    for path in sorted(_SYSFS_DRM.glob("card[0-9]*/device/mem_info_vram_total")):
        try:
            values.append(path.read_text(encoding="ascii"))
        except OSError:
            continue
    return tuple(values)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


_SYS_BLOCK = Path("/sys/block")


def disk_read_ahead() -> tuple[str, ...]:
    """read_ahead_kb of each real disk (not loop, RAM or device-mapper devices)."""
    out: list[str] = []
    try:
        names = sorted(p.name for p in _SYS_BLOCK.iterdir())[:256]
    except OSError:
        return ()
    for name in names:
        if name.startswith(NOT_DISKS):
            continue
        text = _read(_SYS_BLOCK / name / "queue" / "read_ahead_kb")
        if text is not None:
            out.append(text[:32])
    return tuple(out)


def probe_system() -> ProbeResult:
    """Run every probe that applies to this OS and return the raw outputs."""
    errors: list[str] = []
    os_name = platform.system()
    nvidia_csv, nvidia_source = _nvidia(errors) if os_name != "Darwin" else (None, "")
    rocm = _run(_ROCM_QUERY, errors) if os_name == "Linux" and nvidia_csv is None else None
    sysctl = profiler = None
    if os_name == "Darwin":
        sysctl = _run(["sysctl", "-n", "machdep.cpu.brand_string", "hw.memsize"], errors)
        profiler = _run(["system_profiler", "SPDisplaysDataType", "-json"], errors)
    return ProbeResult(
        os_name=os_name,
        arch=platform.machine().lower(),
        nvidia_csv=nvidia_csv,
        nvidia_source=nvidia_source,
        rocm_json=rocm,
        amd_sysfs_vram=_amd_sysfs() if os_name == "Linux" and nvidia_csv is None else (),
        sysctl=sysctl,
        system_profiler_json=profiler,
        cpuinfo=_read(_CPUINFO) if os_name == "Linux" else None,
        cpu_cores=psutil.cpu_count(logical=False),
        cpu_threads=os.cpu_count(),
        ram_bytes=int(psutil.virtual_memory().total),
        read_ahead_kb=disk_read_ahead() if os_name == "Linux" else (),
        errors=tuple(errors),
    )
