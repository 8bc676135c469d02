"""requirements.txt's lower bounds hold in this environment, and each raised floor says why.

The floors are the oldest releases with every API the code calls (the comments above them in
requirements.txt cite the change); an environment below one would fail at run time in ways the
tiny-model tests may not show (e.g. Grounding DINO in float16 only fails on a GPU).
"""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# The floors raised for an API (issue 20); each must keep its reason in a comment right above it.
EXPLAINED = {"torch", "torchvision", "diffusers", "transformers", "accelerate"}


def floors(path: Path) -> dict[str, Version]:
    """Each requirement's name and its ``>=`` lower bound, from a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        bounds = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
        assert bounds, f"{path.name}: {line!r} has no >= lower bound"
        found[requirement.name.lower()] = max(bounds)
    return found


def below_floor(required: dict[str, Version], installed: dict[str, str | None]) -> list[str]:
    """One line per requirement that is missing or installed below its floor."""
    problems = []
    for name, floor in required.items():
        have = installed.get(name)
        if have is None:
            problems.append(f"{name}: not installed (needs >= {floor})")
        elif Version(have).release < floor.release:  # compare releases: 2.14.1+cu130 satisfies 2.5.0
            problems.append(f"{name}: {have} installed, below the floor {floor}")
    return problems


def installed_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def test_installed_versions_reach_the_floors():
    required = {**floors(ROOT / "requirements.txt"), **floors(ROOT / "requirements-test.txt")}
    assert {"torch", "transformers", "diffusers"} <= set(required)
    assert below_floor(required, {name: installed_version(name) for name in required}) == []


def test_a_version_below_its_floor_is_reported():
    required = {"transformers": Version("5.17.0"), "torch": Version("2.5.0"), "diffusers": Version("0.37.0")}
    installed = {"transformers": "5.16.0", "torch": "2.14.1+cu130", "diffusers": None}
    assert below_floor(required, installed) == [
        "transformers: 5.16.0 installed, below the floor 5.17.0",
        "diffusers: not installed (needs >= 0.37.0)",
    ]


def test_the_floors_are_the_ones_the_code_needs():
    """The APIs named in the comments: transformers 5.17 (Grounding DINO half precision), diffusers 0.37 (the GLIGEN
    pipeline the sampler reproduces), torch 2.5 (transformers' own floor)."""
    required = floors(ROOT / "requirements.txt")
    assert required["transformers"] >= Version("5.17.0")
    assert required["diffusers"] >= Version("0.37.0")
    assert required["torch"] >= Version("2.5.0")


def test_each_raised_floor_has_its_reason_above_it():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#") and Requirement(line).name.lower() in EXPLAINED:
            above = [text for text in lines[max(0, i - 4):i] if text.startswith("#")]
            assert above, f"requirements.txt: {line} has no comment saying why"
