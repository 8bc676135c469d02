"""The repository's scripts run as a user runs them, in a subprocess from the repository root
(run_script; run_python for code that is not a script; run_finalize, stage 4 with a dataset's
flags, which several modules run), or in the test's own process where the command line is not
the point (run_here: no child redoes the imports of torch and transformers), and the check that a
run left its input folders untouched."""

import contextlib
import hashlib
import importlib
import io
import logging
import os
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


def run_here(script, *args, env=None) -> subprocess.CompletedProcess:
    """Run SCRIPT's ``main`` (a stage script at the repository root, or a script under scripts/) with ARGS in this process, as
    ``python SCRIPT ARGS`` runs it (``run_cli``: the same error lines and exit codes), and return what
    run_script returns: the exit code, and stdout and stderr as text, log lines included. ENV's
    variables are set for the run only. Faster than a child by the imports the child would redo;
    a test about the command line itself (signals, torchrun, the environment a child sees) uses
    run_script."""
    from cocoaug.runtime import PROJECT_LOGGERS, run_cli

    module = script_module(script)
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root, loggers = logging.getLogger(), [logging.getLogger(n) for n in PROJECT_LOGGERS + (module.__name__,)]
    saved = root.level, [lg.level for lg in loggers], dict(os.environ), sys.argv
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for logger in loggers:  # as in a new process: not the DEBUG an earlier --debug run in this process left
        logger.setLevel(logging.NOTSET)
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    sys.argv = [str(ROOT / script), *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run_cli(module.main, module.build_parser(), argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            err.write(f"{exc.code}\n")
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for logger, level in zip(loggers, saved[1]):
            logger.setLevel(level)
        os.environ.clear()
        os.environ.update(saved[2])
        sys.argv = saved[3]
    return subprocess.CompletedProcess([script, *argv], code, out.getvalue(), err.getvalue())


def script_module(script):
    """The module of SCRIPT: a stage script at the root by its name; a file under scripts/ or benchmarks/
    (not packages) loaded once from its path, under its file name."""
    import importlib.util

    path = ROOT / script
    if path.parent == ROOT:
        return importlib.import_module(path.stem)
    module = sys.modules.get(path.stem)
    if module is None or getattr(module, "__file__", None) != str(path):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    return module


def run_finalize(dataset: Path, generated: Path, picked: Path | None, final: Path, *flags, annotations=None):
    """Stage 4 on DATASET (its images/ and annotations.json, or ``annotations``), the stage-2 folder
    GENERATED and the folder of PICKED pictures, into FINAL; with ``picked`` None there is no -i (a
    --picks file among ``flags`` names the pictures)."""
    picked_args = [] if picked is None else ["-i", picked]
    return run_here("finalize_selected_images.py", "--original_annotation", annotations or dataset / "annotations.json",
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
