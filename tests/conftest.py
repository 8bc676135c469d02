"""Session fixtures shared by the test modules.

``make test`` runs the suite on two processes (pytest-xdist, ``-n 2``): each session fixture that
builds files is built once for the whole run, by the first process that needs it, under a file
lock (``built_once``); the other process waits for it and reads the same folder. Without xdist it
is an ordinary session fixture. Every fixture's files are shared: copy them to change them.
"""

import os
from pathlib import Path

import pytest

from tests.helpers.scripts import run_script

# Tests that need a session fixture built by running a model builder: marked `models`, so that
# `make test-fast` (-m "not models ...") leaves them out without a list to keep up to date.
MODEL_FIXTURES = {"tiny_models", "fid_weights"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.models)


@pytest.fixture(autouse=True)
def as_in_a_new_process():
    """Every test starts with torch's gradients on and the project's loggers at their default level,
    as a new process has them: a run in this process (run_here or run_cli, also in a module fixture)
    may have switched gradients off (stage 1 does for its run) or left --debug's DEBUG level."""
    import logging
    import sys

    from cocoaug.runtime import PROJECT_LOGGERS

    if "torch" in sys.modules:
        sys.modules["torch"].set_grad_enabled(True)
    for name in PROJECT_LOGGERS + (Path(sys.argv[0]).stem,):
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The path that ``build(folder)`` returns for a new empty FOLDER, built once per test run.

    Under pytest-xdist the processes share the parent of their temporary folders: the first to
    take NAME's lock builds it there and records the path it returned; the others read that record.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent
    folder, record = shared / name, shared / f"{name}.built"
    with FileLock(str(shared / f"{name}.lock")):
        if not record.exists():
            folder.mkdir()  # a leftover of a failed build makes this fail loudly, in every process
            record.write_text(str(build(folder)))
        return Path(record.read_text())


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """The sample set of scripts/make_sample_dataset.py, built once: DIR with images/ and annotations.json."""
    def build(base):
        run_script("scripts/make_sample_dataset.py", base / "sample", check=True)
        return base / "sample"

    return built_once(tmp_path_factory, "sample", build)


@pytest.fixture(scope="session")
def stage_outputs(sample_dataset, tmp_path_factory) -> Path:
    """Stage 2's OUT_DIR made without models from the sample set (tests/helpers/stage_outputs.py): blip2_post.json,
    generation/ and inpainting/ with 2 variants each and manifest.jsonl. Shared: copy it to change it."""
    from tests.helpers.stage_outputs import make_stage_outputs

    return built_once(tmp_path_factory, "stage_outputs", lambda base: make_stage_outputs(sample_dataset, base / "out"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """The tiny random-weight models of scripts/make_tiny_models.py, built once: DIR with blip2/, clip/, owlv2/, grounding-dino/,
    gligen-generation/ and gligen-inpainting/."""
    def build(base):
        run_script("scripts/make_tiny_models.py", base / "models", check=True)
        return base / "models"

    return built_once(tmp_path_factory, "tiny_models", build)


@pytest.fixture(scope="session")
def fid_weights(tmp_path_factory) -> Path:
    """A state dict of pytorch-fid's FID Inception architecture with seeded random weights
    (scripts/make_random_fid_weights.py, as the demo makes it)."""
    def build(base):
        run_script("scripts/make_random_fid_weights.py", base / "random_fid_inception.pth", check=True)
        return base / "random_fid_inception.pth"

    return built_once(tmp_path_factory, "fid", build)


@pytest.fixture(scope="session")
def finetune_dataset(sample_dataset, stage_outputs, tmp_path_factory) -> Path:
    """Step 4's dataset root for step 5 (finetune_detector.py): the sample set's 12 images plus every
    generation-mode picture of the stage outputs (8), merged into FINAL_DIR/train_augmented.json."""
    import shutil

    from tests.helpers.scripts import run_finalize

    def build(root):
        picked = root / "picked" / "generation"
        picked.mkdir(parents=True)
        for picture in sorted((stage_outputs / "generation").glob("*.png")):
            shutil.copy(picture, picked)
        result = run_finalize(sample_dataset, stage_outputs, root / "picked", root / "final", "--merge")
        assert result.returncode == 0, result.stderr
        return root / "final"

    return built_once(tmp_path_factory, "finetune_dataset", build)
