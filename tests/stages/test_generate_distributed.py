"""Stage 2 under torchrun: two processes split the records and together make what one makes."""

import numpy as np
from PIL import Image

from cocoaug.generated import read_manifest
from tests.helpers.scripts import ROOT, run_here, run_python
from tests.helpers.stage_inputs import STAGE2_FAST, write_inputs

SCRIPT = "generate_image_gligen.py"
PICTURES = {i: (f"p{i}.png", 48 + 8 * i, 40) for i in range(1, 6)}


def test_two_processes_make_the_same_files_and_manifest_as_one(tmp_path, tiny_models):
    images, prompts = write_inputs(tmp_path, PICTURES)
    common = ["--mode", "generation", "-i", images, "-p", prompts, "--model", tiny_models / "gligen-generation",
              *STAGE2_FAST, "--batch-size", "2", "--variants", "2", "--device", "cpu"]
    one = run_here(SCRIPT, *common, "-o", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", ROOT / SCRIPT, *common, "-o", tmp_path / "two")
    assert two.returncode == 0, two.stderr
    assert "rank 0: generated 5" in two.stdout and "rank 1: generated 5" in two.stdout

    one_dir, two_dir = tmp_path / "one" / "generation", tmp_path / "two" / "generation"
    names = sorted(p.name for p in one_dir.iterdir())
    assert len(names) == 11 and names == sorted(p.name for p in two_dir.iterdir())
    assert (one_dir / "manifest.jsonl").read_bytes() == (two_dir / "manifest.jsonl").read_bytes()
    assert len(read_manifest(two_dir)) == 10
    for name in names[:-1]:
        a, b = (np.asarray(Image.open(d / name), dtype=np.int16) for d in (one_dir, two_dir))
        assert np.abs(a - b).max() <= 1, name
