"""The repository's scripts run as a user runs them, in a subprocess from the repository root
(run_script; run_python for code that is not a script; run_finalize, stage 4 with a dataset's
flags, which several modules run), and the check that a run left its input folders untouched."""

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(script, *args, env=None, cwd=ROOT, timeout=None, check=False) -> subprocess.CompletedProcess:
    """Run SCRIPT (a path from the repository root, such as ``draw_bboxes.py`` or ``scripts/demo.sh``)
    with ARGS: ``python SCRIPT ARGS`` with the interpreter running the tests, ``bash SCRIPT ARGS``
    for a shell script; stdout and stderr are captured as text."""
    path = ROOT / script
    interpreter = "bash" if path.suffix == ".sh" else sys.executable
    return subprocess.run([interpreter, str(path), *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout, check=check)


def run_python(*args, env=None, cwd=ROOT, timeout=None, check=False) -> subprocess.CompletedProcess:
    """``python ARGS`` for what is not a script of the repository (``-c CODE``, ``-m torch.distributed.run ...``),
    run as run_script runs a script."""
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout, check=check)


def run_finalize(dataset: Path, generated: Path, picked: Path | None, final: Path, *flags, annotations=None):
    """Stage 4 on DATASET (its images/ and annotations.json, or ``annotations``), the stage-2 folder
    GENERATED and the folder of PICKED pictures, into FINAL; with ``picked`` None there is no -i (a
    --picks file among ``flags`` names the pictures)."""
    picked_args = [] if picked is None else ["-i", picked]
    return run_script("finalize_selected_images.py", "--original_annotation", annotations or dataset / "annotations.json",
                      "--original_data_root", dataset / "images", "-g", generated, *picked_args, "-o", final, *flags)


def tree_hashes(*folders) -> dict:
    """The SHA-256 of every file under the folders, by path: equal before and after a run that left them untouched."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(Path(f).rglob("*")) if p.is_file()}


def default_sigint():
    """``preexec_fn`` for a child that a test stops with Ctrl-C (SIGINT): a job that a non-interactive shell
    starts in the background (``make test &``) runs with SIGINT ignored, and its children inherit that,
    whereas Ctrl-C in a terminal reaches the script."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
