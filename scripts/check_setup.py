"""Check that torch, torchvision and transformers import together and that torchvision's compiled ops load.

`make setup` ends with this check. pip can pull a CPU-only torch beside a torchvision built for
CUDA (or for another torch): the set-up succeeds, and the first stage then dies with
``operator torchvision::nms does not exist``. On such a mismatch this prints one line saying
what mismatches and the command that fixes it, and exits with code 2. Example::

    .venv/bin/python scripts/check_setup.py
"""

import importlib.util
import re
import sys
from pathlib import Path

TORCH_INDEX = "https://download.pytorch.org/whl"


def torch_build(torch) -> str:
    """The wheel variant torch was built for, as the PyTorch index names it: cpu, cu130, ..."""
    cuda = torch.version.cuda
    return "cpu" if cuda is None else "cu" + cuda.replace(".", "")


def torchvision_version() -> str:
    """torchvision's version, read from its version.py without importing it (the import is what may fail)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return "(not installed)"
    text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8", errors="replace")
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return found.group(1) if found else "(unknown version)"


def matching_torchvision(torch_version: str) -> str:
    """The torchvision release made for a torch release: torch 2.M.p goes with torchvision 0.(M+15).p."""
    major, minor, patch = (int(part) for part in re.findall(r"\d+", torch_version.split("+")[0])[:3])
    return f"0.{minor + 15}.{patch}" if major == 2 else "(see https://github.com/pytorch/vision#installation)"


def fix_command(torch) -> str:
    version = matching_torchvision(torch.__version__)
    return (f"{sys.executable} -m pip install --force-reinstall --no-deps torchvision=={version} "
            f"--index-url {TORCH_INDEX}/{torch_build(torch)}")


def mismatch() -> str | None:
    """One line saying what mismatches and how to fix it, or None when everything loads."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any failure to import is what this check reports
        return f"torch does not import ({type(exc).__name__}: {exc}); fix: {sys.executable} -m pip install --force-reinstall torch"
    vision = torchvision_version()
    described = f"torchvision {vision} does not match torch {torch.__version__} (built for {torch_build(torch)})"
    try:
        import torchvision  # noqa: F401 - importing it registers its compiled ops
    except Exception as exc:  # noqa: BLE001
        return f"{described}: torchvision does not import ({type(exc).__name__}: {str(exc).splitlines()[0]}); fix: {fix_command(torch)}"
    try:
        torch.ops.torchvision.nms
    except (AttributeError, RuntimeError):
        return f"{described}: its compiled ops do not load (torch.ops.torchvision.nms is missing); fix: {fix_command(torch)}"
    try:
        from transformers import Blip2ForConditionalGeneration  # noqa: F401 - the first model stage 1 loads
    except Exception as exc:  # noqa: BLE001
        return (f"transformers does not import with torch {torch.__version__} and torchvision {vision} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0]}); fix: {sys.executable} -m pip install -r requirements.txt")
    return None


def main():
    problem = mismatch()
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    import torch
    import transformers

    print(f"set-up check: torch {torch.__version__}, torchvision {torchvision_version()}, transformers "
          f"{transformers.__version__} import together; torchvision's compiled ops load")


if __name__ == "__main__":
    main()
