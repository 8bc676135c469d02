"""benchmarks/gpu_suite.sh --dry-run: the GPU suite's code runs end to end at tiny size on the CPU and writes its table."""

import re

from tests.helpers.scripts import run_script


def test_gpu_suite_dry_run_writes_every_comparison(tmp_path, tiny_models):
    result = run_script("benchmarks/gpu_suite.sh", "--dry-run", "--models", tiny_models, "--results", tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = tmp_path.glob("gpu-*.md")
    assert re.fullmatch(r"gpu-\d{4}-\d{2}-\d{2}\.md", path.name)
    text = path.read_text()
    assert "Command: `bash benchmarks/gpu_suite.sh --dry-run`" in text
    # Captioning: both sides, 3 images each, and their ratio.
    assert re.search(r"\| seed loop \(1 image per call\) \| 3 \|", text) and re.search(r"\| stage 1 batched \(2 per call\) \| 3 \|", text)
    assert re.search(r"Batched captioning: \d+\.\d\dx the seed loop's speed", text)
    # Generation: the pipeline and the sampler at batch 1, 4, 8, each against the pipeline.
    assert "| diffusers pipeline (1 layout per call) | 2 |" in text and "| 1.00x |" in text
    for batch in (1, 4, 8):
        assert re.search(rf"\| own sampler, batch {batch} \(SDPA\) \| 2 \| [\d.]+ \| [\d.]+ \| \d+\.\d\dx \| n/a \|", text)
    assert "(64x64, 2 steps" in text
    # Scoring, as a share of generation time; memory is n/a off CUDA.
    assert re.search(r"Scoring takes \d+\.\d% of the time generating a picture takes", text)
    assert text in result.stdout


def test_gpu_suite_refuses_a_missing_models_folder(tmp_path):
    result = run_script("benchmarks/gpu_suite.sh", "--models", tmp_path / "absent", timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --models folder not found: {tmp_path / 'absent'}"
    result = run_script("benchmarks/gpu_suite.sh", "--fast", timeout=60)
    assert result.returncode == 2 and "error: unknown argument --fast" in result.stderr
