"""Session fixtures shared by the test modules."""

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


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """The sample set of scripts/make_sample_dataset.py, built once: DIR with images/ and annotations.json."""
    folder = tmp_path_factory.mktemp("sample") / "sample"
    run_script("scripts/make_sample_dataset.py", folder, check=True)
    return folder


@pytest.fixture(scope="session")
def stage_outputs(sample_dataset, tmp_path_factory) -> Path:
    """Stage 2's OUT_DIR made without models from the sample set (tests/helpers/stage_outputs.py): blip2_post.json,
    generation/ and inpainting/ with 2 variants each and manifest.jsonl. Shared: copy it to change it."""
    from tests.helpers.stage_outputs import make_stage_outputs

    return make_stage_outputs(sample_dataset, tmp_path_factory.mktemp("stage_outputs") / "out")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """The tiny random-weight models of scripts/make_tiny_models.py, built once: DIR with blip2/, clip/, owlv2/, grounding-dino/,
    gligen-generation/ and gligen-inpainting/."""
    folder = tmp_path_factory.mktemp("tiny_models") / "models"
    run_script("scripts/make_tiny_models.py", folder, check=True)
    return folder


@pytest.fixture(scope="session")
def fid_weights(tmp_path_factory) -> Path:
    """A state dict of pytorch-fid's FID Inception architecture with seeded random weights
    (scripts/make_random_fid_weights.py, as the demo makes it)."""
    path = tmp_path_factory.mktemp("fid") / "random_fid_inception.pth"
    run_script("scripts/make_random_fid_weights.py", path, check=True)
    return path


@pytest.fixture(scope="session")
def finetune_dataset(sample_dataset, stage_outputs, tmp_path_factory) -> Path:
    """Step 4's dataset root for step 5 (finetune_detector.py): the sample set's 12 images plus every
    generation-mode picture of the stage outputs (8), merged into FINAL_DIR/train_augmented.json."""
    import shutil

    from tests.helpers.scripts import run_finalize

    root = tmp_path_factory.mktemp("finetune_dataset")
    picked = root / "picked" / "generation"
    picked.mkdir(parents=True)
    for picture in sorted((stage_outputs / "generation").glob("*.png")):
        shutil.copy(picture, picked)
    result = run_finalize(sample_dataset, stage_outputs, root / "picked", root / "final", "--merge")
    assert result.returncode == 0, result.stderr
    return root / "final"
