"""The project's set-up: pyproject.toml holds the metadata and the pytest configuration, plain
`pytest` works as `python -m pytest` does, and the dependencies have one list."""

import os
import re
import shutil
import subprocess
import sys
from email.parser import Parser
from pathlib import Path

from tests.helpers.scripts import ROOT, run_python

PYTEST = Path(sys.executable).parent / "pytest"  # the virtualenv's console script, not `python -m pytest`


def run_plain_pytest(*args: str) -> subprocess.CompletedProcess:
    """`pytest ARGS` from the repository root, with no PYTHONPATH to lean on."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([str(PYTEST), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def requirement_lines(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_plain_pytest_collects_without_pythonpath():
    """A test file that imports cocoaug is collected by the pytest executable, without PYTHONPATH."""
    test_file = next(ROOT.glob("tests/**/test_boxes.py")).relative_to(ROOT)
    assert "from cocoaug" in (ROOT / test_file).read_text()
    result = run_plain_pytest("--collect-only", "-q", str(test_file))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "No module named" not in output and "error" not in output.lower(), output
    assert re.search(r"^\d+ tests? collected", output, re.MULTILINE), output


def test_pytest_reads_its_configuration_from_pyproject():
    """The `slow` marker is registered there (a label only: `make test` runs every test)."""
    assert not (ROOT / "pytest.ini").exists()  # a pytest.ini would take precedence over pyproject.toml
    result = run_plain_pytest("--markers")
    assert result.returncode == 0, result.stderr
    assert "@pytest.mark.slow: end-to-end tests" in result.stdout


def test_the_project_metadata_reads_the_requirements_files(tmp_path):
    """The metadata that setuptools builds from pyproject.toml (PEP 517's hook, as pip calls it):
    its dependencies are requirements.txt's, the "test" extra requirements-test.txt's, the two
    files `make setup` installs."""
    for name in ("pyproject.toml", "README.md", "requirements.txt", "requirements-test.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "cocoaug", tmp_path / "cocoaug", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "metadata").mkdir()
    hook = "import sys; from setuptools import build_meta; print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))"
    result = run_python("-c", hook, "metadata", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    metadata = Parser().parsestr((tmp_path / "metadata" / result.stdout.split()[-1] / "METADATA").read_text())
    assert metadata["Name"] == "cocoaug" and metadata["Version"] and metadata["Summary"]
    assert metadata["Requires-Python"] == ">=3.10"
    requires = metadata.get_all("Requires-Dist")
    assert [r for r in requires if "extra ==" not in r] == requirement_lines("requirements.txt")
    assert [r.split(";")[0].strip() for r in requires if 'extra == "test"' in r] == requirement_lines("requirements-test.txt")
    assert "torch>=2.5.0" in requires
