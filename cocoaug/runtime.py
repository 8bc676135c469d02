"""What every stage script does at run time: the CLI entry point that turns UserError into
``error: ...`` and exit code 2, device and dtype choice, and clear errors for model folders."""

import argparse
import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from cocoaug.errors import UserError

log = logging.getLogger("cocoaug")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def add_debug_flag(parser: argparse.ArgumentParser):
    """Add ``--debug``: show tracebacks of user errors and debug logging."""
    parser.add_argument("--debug", action="store_true", help="show the full traceback of errors and debug logs")


def run_cli(main, parser: argparse.ArgumentParser, argv=None):
    """Parse arguments, run ``main(args)``, and print user errors as one line with exit code 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "debug", False) else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        main(args)
    except UserError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        # Running out of GPU memory is fixed by the user (a smaller batch), not a bug: one line.
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(exc, torch.cuda.OutOfMemoryError) or getattr(args, "debug", False):
            raise
        culprit = f"--batch-size {args.batch_size}" if getattr(args, "batch_size", None) else "the device"
        print(f"error: out of GPU memory; finished outputs are kept: lower --batch-size and run the same command "
              f"again to resume ({culprit})", file=sys.stderr)
        sys.exit(2)


def resolve_device(name: str):
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is a UserError."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _local_rank() if torch.cuda.device_count() > 1 else 0)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("CUDA is not available on this machine", f"--device {name}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("MPS is not available on this machine", "--device mps")
    return torch.device(name)


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_dtype(name: str, device):
    """``auto`` is float16 on CUDA and float32 elsewhere."""
    import torch

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def check_model_source(model: str) -> str:
    """Refuse a local model path that does not exist before anything is loaded.

    A string of the form ``org/name`` that is not a folder here is taken as a hub id.
    """
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError("model path is not a folder", model)
        return str(path)
    if not HUB_ID.match(model):
        raise UserError("model folder does not exist", model)
    return model


@contextmanager
def model_load_errors(model: str):
    """Turn the errors of ``from_pretrained`` (missing files, wrong kind of model, offline hub) into UserError."""
    try:
        yield
    except (OSError, ValueError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load the model: {first_line}", model) from exc
