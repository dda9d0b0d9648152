"""The wheel ships profiles, catalog and templates, and loads them without the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_carries_data_and_loads_it(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("deployer-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("profiles", "catalog"):
        shipped = {p.name for p in (REPO / folder).glob("*.yaml")}
        packed = {Path(n).name for n in names if n.startswith(f"deployer/_data/{folder}/")}
        assert shipped and shipped == packed
    assert any(n.startswith("deployer/_data/templates/") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import deployer, pathlib; "
        "from deployer.core.resources import data_dir; "
        "from deployer.core.profiles import load_profiles; "
        "from deployer.core.catalog import load_catalog; "
        "assert 'site-packages' in deployer.__file__, deployer.__file__; "
        "assert 'site-packages' in str(data_dir('profiles')); "
        "print(len(load_profiles()), len(load_catalog()))"
    )
    out = subprocess.run(
        [str(py), "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    n_profiles, n_models = map(int, out.stdout.split())
    assert n_profiles == len(list((REPO / "profiles").glob("*.yaml")))
    assert n_models == len(list((REPO / "catalog").glob("*.yaml")))
