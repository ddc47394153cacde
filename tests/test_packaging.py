"""`pip wheel .` builds the package a cluster job installs: `helpers/` alone, importable from anywhere."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Not part of the source tree that pip sees in a fresh clone.
UNTRACKED = (".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache")


def _setuptools_ok() -> bool:
    """Whether this environment's setuptools can build the project without downloading one."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    return int(setuptools.__version__.split(".")[0]) >= 64


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the working tree (so the build leaves nothing in the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*UNTRACKED, "*.txt", "*.dat", "*.pt"))
    command = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(tmp / "out")]
    if _setuptools_ok():
        command.append("--no-build-isolation")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (found,) = (tmp / "out").glob("*.whl")
    return found


def test_the_wheel_holds_helpers_alone(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"helpers", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    shipped = {name for name in names if name.startswith("helpers/")}
    expected = {path.relative_to(ROOT).as_posix() for path in (ROOT / "helpers").rglob("*.py")}
    assert shipped == expected


def test_the_wheel_declares_its_dependencies(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    requires = {line.split(":", 1)[1].strip().split(";")[0].split(">")[0].strip()
                for line in archive.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")}
    assert {"torch", "numpy", "pandas", "tqdm"} <= requires


def test_the_installed_package_imports_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """Installed into a bare folder and imported from elsewhere: the core loads, and datasets would go to
    the user's cache, not into site-packages."""
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    probe = ("import helpers.train, helpers.fetch as f; "
             "print(helpers.train.__file__); print(f.DEFAULT_DATA_DIR)")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    module, data_dir = out.stdout.split()
    assert Path(module).is_relative_to(target)
    assert Path(data_dir) == tmp_path / "home" / ".cache" / "ssept-pytorch" / "data"
