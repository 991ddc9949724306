"""What a fresh install prints and needs: the project builds without warnings of its own making."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_builds_without_deprecation_warnings(tmp_path: Path):
    """A new user's first `make run` must not open with thirty lines of setuptools warnings."""
    source = tmp_path / "src"  # a copy: setuptools builds in ./build, which must not litter the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "esignbox.py"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("firmware", "hsm", "provisioning", "webui"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    output = built.stdout + built.stderr
    assert "Deprecat" not in output and "BuildBackendWarning" not in output, output
    assert list(tmp_path.glob("esignbox-*.whl"))


def test_system_deps_waits_for_the_package_lock():
    """`make system-deps` on a box where unattended-upgrades holds the dpkg lock waits, not fails."""
    dry = subprocess.run(["make", "-n", "-B", "system-deps", "APT_PACKAGES=no-such-package-esignbox"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    apt_lines = [line for line in dry.stdout.splitlines() if "apt-get" in line]
    assert apt_lines and all("DPkg::Lock::Timeout=" in line for line in apt_lines), dry.stdout
