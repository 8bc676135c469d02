"""`make setup` ends with scripts/check_setup.py: torch, torchvision and transformers import together
and torchvision's compiled ops load; a mismatch is one line with the fixing command, and setup fails.

The mismatch is made real: a copy of the installed torchvision (its files linked) whose compiled
library is an empty file, first on PYTHONPATH. Importing it fails exactly as a torchvision built for
another torch does (``operator torchvision::nms does not exist``)."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.scripts import ROOT, run_script

SPEC = importlib.util.spec_from_file_location("check_setup", ROOT / "scripts/check_setup.py")
check_setup = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(check_setup)


@pytest.fixture(scope="module")
def broken_torchvision(tmp_path_factory) -> Path:
    """A folder for PYTHONPATH holding torchvision whose compiled ops cannot load."""
    installed = Path(importlib.util.find_spec("torchvision").origin).parent
    folder = tmp_path_factory.mktemp("broken") / "site"
    shutil.copytree(installed, folder / "torchvision", symlinks=True, copy_function=os.symlink,
                    ignore=shutil.ignore_patterns("__pycache__"))
    compiled = [path for path in (folder / "torchvision").glob("_C*.so")]
    assert compiled, "torchvision's compiled ops library not found"
    for path in compiled:
        path.unlink()
        path.write_bytes(b"")  # not a shared library: loading it fails as a mismatched build's does
    return folder


def with_pythonpath(folder: Path) -> dict:
    return {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}"}


def test_the_check_passes_on_this_environment():
    result = run_script("scripts/check_setup.py", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "import together; torchvision's compiled ops load" in result.stdout and result.stderr == ""


def test_a_torchvision_whose_ops_do_not_load_is_one_line_with_the_fix(broken_torchvision):
    result = run_script("scripts/check_setup.py", env=with_pythonpath(broken_torchvision), timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: torchvision "), result.stderr
    assert "torchvision::nms does not exist" in lines[0] and "Traceback" not in result.stderr
    assert f"{sys.executable} -m pip install --force-reinstall --no-deps torchvision==" in lines[0]
    assert "--index-url https://download.pytorch.org/whl/" in lines[0]


def test_make_setup_fails_on_the_mismatch_and_installs_again_next_time(tmp_path, broken_torchvision):
    """The Makefile's install recipe in a copy whose .venv/bin/python is this interpreter with the broken torchvision
    first on its path; `python -m pip` there does nothing (installing is not the point, and there is no network)."""
    shutil.copy(ROOT / "Makefile", tmp_path)
    for name in ("requirements.txt", "requirements-test.txt"):
        shutil.copy(ROOT / name, tmp_path)
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts/check_setup.py", tmp_path / "scripts")
    python = tmp_path / ".venv/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nif [ "$1" = "-m" ] && [ "$2" = "pip" ]; then exit 0; fi\n'
                      f'PYTHONPATH="{broken_torchvision}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    result = subprocess.run(["make", "setup"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "error: torchvision " in result.stderr and "torchvision::nms does not exist" in result.stderr
    assert not (tmp_path / ".venv/.installed").exists()  # so the next `make setup` installs and checks again


@pytest.mark.parametrize("torch_version, torchvision_version", [("2.14.1+cu130", "0.29.1"), ("2.5.0", "0.20.0"), ("2.1.2+cpu", "0.16.2")])
def test_the_matching_torchvision_release(torch_version, torchvision_version):
    assert check_setup.matching_torchvision(torch_version) == torchvision_version
