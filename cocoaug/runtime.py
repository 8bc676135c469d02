"""What every stage script does at run time: the CLI entry point that turns UserError into
``error: ...`` and exit code 2, device and dtype choice, and clear errors for model folders."""

import argparse
import errno
import logging
import os
import re
import socket
import sys
import threading
from urllib.parse import urlparse
from contextlib import contextmanager
from pathlib import Path

from cocoaug.atomic import NO_SPACE_MESSAGE
from cocoaug.errors import UserError
from cocoaug.progress import on_terminal

log = logging.getLogger("cocoaug")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PROJECT_LOGGERS = ("cocoaug", "__main__")  # and the running script's own logger (its file name)
HUB_TIMEOUT_S = 5.0  # to open a connection to the hub before a hub id is loaded


def run_cli(main, parser: argparse.ArgumentParser, argv=None):
    """Parse arguments, run ``main(args)``, and print user errors as one line with exit code 2.

    Besides UserError, the failures a user fixes (a read-only or full disk, a file where a folder
    is needed, an image too large to open, out of GPU memory: see ``user_error_line``) end so too;
    --debug keeps their traceback.
    """
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    if not on_terminal():  # in a log, no library's bar either (transformers' "Loading weights" reads this at import)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if debug:  # this project's debug lines, not those of PIL (its PNG chunks) or the other libraries
        for name in PROJECT_LOGGERS + (Path(sys.argv[0]).stem,):
            logging.getLogger(name).setLevel(logging.DEBUG)
    # huggingface_hub prints its warnings with its own handler; passing them to ours too printed each twice.
    logging.getLogger("huggingface_hub").propagate = False
    try:
        main(args)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        line = user_error_line(exc, args)
        if line is None or debug:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)
IN_THE_WAY = (errno.ENOTDIR, errno.EEXIST, errno.EISDIR)


def user_error_line(exc: Exception, args) -> str | None:
    """The ``error:`` line (without the prefix) of a failure the user fixes, or None for a bug.

    OSErrors name their path (``exc.filename``; cocoaug.atomic names the target, not its temp file).
    """
    if isinstance(exc, OSError) and exc.errno in NO_SPACE + NO_WRITE + IN_THE_WAY:
        path = exc.filename if exc.filename is not None else "path unknown: run with --debug to see it"
        if exc.errno in NO_SPACE:
            return f"{NO_SPACE_MESSAGE} ({path})"
        if exc.errno == errno.EROFS:
            return f"read-only file system: choose an output folder on a writable disk ({path})"
        if exc.errno in NO_WRITE:
            return f"permission denied: give this user access to it, or choose another output folder ({path})"
        if exc.errno == errno.EISDIR:
            return f"a folder stands where a file is to be written: move it away or choose another output folder ({path})"
        blocking = _file_in_the_way(path)
        return (f"a file stands where a folder is needed: move it away or choose another output folder "
                f"({blocking if blocking is not None else path})")
    pil_image = sys.modules.get("PIL.Image")
    if pil_image is not None and isinstance(exc, pil_image.DecompressionBombError):
        return f"image too large to open: {exc}"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        # Running out of GPU memory is fixed by the user (a smaller batch), not a bug: one line.
        culprit = f"--batch-size {args.batch_size}" if getattr(args, "batch_size", None) else "the device"
        return ("out of GPU memory; finished outputs are kept: lower --batch-size and run the same command "
                f"again to resume ({culprit})")
    return None


def _file_in_the_way(path) -> Path | None:
    """The first of ``path`` and its parents that exists and is not a folder."""
    for candidate in [Path(path), *Path(path).parents]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


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
    check_hub_reachable(model)
    return model


def _is_true(value) -> bool:
    return str(value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _can_connect(host: str, port: int, timeout_s: float) -> str | None:
    """None if a TCP connection to ``host:port`` opens within ``timeout_s``, else why not.

    Name resolution has no timeout of its own, so the attempt runs in a thread we stop waiting for.
    """
    outcome = ["no answer within %g s" % timeout_s]

    def attempt():
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome[0] = None
        except OSError as exc:
            outcome[0] = exc.strerror or str(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome[0]


def check_hub_reachable(model: str, timeout_s: float = HUB_TIMEOUT_S):
    """Fail fast, with one clear line, when a hub id must be downloaded and the hub cannot be reached.

    Without this, huggingface_hub retries for about 30 s before the load fails. A model already
    in the local cache is used offline (as with HF_HUB_OFFLINE=1).
    """
    if _is_true(os.environ.get("HF_HUB_OFFLINE")) or _is_true(os.environ.get("TRANSFORMERS_OFFLINE")):
        return
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    problem = _can_connect(endpoint.hostname or "", endpoint.port or (443 if endpoint.scheme == "https" else 80), timeout_s)
    if problem is None:
        return
    if _in_local_cache(model):
        log.warning("the hub (%s) cannot be reached (%s): using %s from the local cache", endpoint.geturl(), problem, model)
        os.environ["HF_HUB_OFFLINE"] = "1"
        if "huggingface_hub.constants" in sys.modules:  # read at import: set the imported value too
            sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = True
        return
    raise UserError(f"cannot reach the hub ({endpoint.geturl()}: {problem}) and the model is not in the local cache; "
                    "connect to the internet, or pass --model with a local folder", model)


def _in_local_cache(model: str) -> bool:
    """True if huggingface_hub's cache holds a snapshot of the hub repository ``model``."""
    hub_cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"), "hub")
    snapshots = Path(hub_cache) / ("models--" + model.replace("/", "--")) / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


@contextmanager
def model_load_errors(model: str):
    """Turn the errors of ``from_pretrained`` (missing files, wrong kind of model, offline hub) into UserError."""
    try:
        yield
    except (OSError, ValueError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load the model: {first_line}", model) from exc


def texts_over_token_limit(model: str, texts: list[str], subfolder: str = "") -> tuple[list[str], int]:
    """The texts longer than the tokenizer of ``model`` (in ``subfolder``: a diffusers pipeline's "tokenizer")
    takes with its start and end tokens (CLIP: 77, OWLv2: 16), which are truncated, and that limit; reads only
    the tokenizer."""
    from transformers import AutoTokenizer

    with model_load_errors(model):
        tokenizer = AutoTokenizer.from_pretrained(model, subfolder=subfolder)
    unique = list(dict.fromkeys(texts))
    lengths = [len(ids) for ids in tokenizer(unique)["input_ids"]] if unique else []
    return [text for text, length in zip(unique, lengths) if length > tokenizer.model_max_length], tokenizer.model_max_length


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) as set by torchrun and accelerate launch; (0, 1) in a plain run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def barrier(world_size: int):
    """Wait for every process of a torchrun / accelerate launch; the process group stays up for a later wait."""
    if world_size == 1:
        return
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    dist.barrier()


def wait_for_all_processes(world_size: int):
    """The last barrier of a torchrun / accelerate launch, so rank 0 writes the manifest last; then the group ends."""
    if world_size == 1:
        return
    import torch.distributed as dist

    barrier(world_size)
    dist.destroy_process_group()
