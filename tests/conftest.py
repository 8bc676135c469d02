"""Session fixtures shared by the test modules."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """The sample set of scripts/make_sample_dataset.py, built once: DIR with images/ and annotations.json."""
    folder = tmp_path_factory.mktemp("sample") / "sample"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_sample_dataset.py"), str(folder)],
                   check=True, capture_output=True)
    return folder


@pytest.fixture(scope="session")
def stage_outputs(sample_dataset, tmp_path_factory) -> Path:
    """Stage 2's OUT_DIR made without models from the sample set (tests/stage_outputs.py): blip2_post.json,
    generation/ and inpainting/ with 2 variants each and manifest.jsonl. Shared: copy it to change it."""
    from stage_outputs import make_stage_outputs

    return make_stage_outputs(sample_dataset, tmp_path_factory.mktemp("stage_outputs") / "out")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """The tiny random-weight models of scripts/make_tiny_models.py, built once: DIR with blip2/, clip/, owlv2/, grounding-dino/,
    gligen-generation/ and gligen-inpainting/."""
    folder = tmp_path_factory.mktemp("tiny_models") / "models"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_models.py"), str(folder)],
                   check=True, capture_output=True)
    return folder
