"""Benchmarks run at a tiny size: they work, and both sides of each comparison agree."""

import json
import re

import pytest

from tests.helpers.scripts import ROOT, run_script, script_module


def test_bench_select_smoke(tmp_path):
    result = run_script("benchmarks/bench_select.py", "--images", "200", "--repeat", "1", "--workdir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "same selection: yes" in result.stdout and "speed-up" in result.stdout
    coco = json.loads((tmp_path / "synthetic_200_0.json").read_text())
    assert len(coco["images"]) == 200 and len({c["id"] for c in coco["categories"]}) == 80
    project = [r["image_id"] for r in json.loads((tmp_path / "project/selection.json").read_text())]
    seed = [r["image_id"] for r in json.loads((tmp_path / "seed.json").read_text())]
    crowd = {a["image_id"] for a in coco["annotations"] if a["iscrowd"]}
    assert project == sorted(project) and len(project) > 20
    assert set(project) <= set(seed) and set(seed) - set(project) <= crowd
    # The seed's normalised boxes equal the project's where both keep an image (no box reaches past the edge there).
    seed_boxes = {r["image_id"]: r["bbox"] for r in json.loads((tmp_path / "seed.json").read_text())}
    project_records = json.loads((tmp_path / "project/selection.json").read_text())
    inside = [r for r in project_records if all(0 < v < 1 for box in r["bbox"] for v in box)]
    assert inside and all(seed_boxes[r["image_id"]] == r["bbox"] for r in inside)


def run_bench(script, workdir, *flags):
    result = run_script(f"benchmarks/{script}", "--workdir", workdir, "--repeat", "1", "--device", "cpu", "--threads", "1", *flags)
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_bench_here(script, workdir, *flags, capsys):
    """run_bench's command, its ``main`` in this process (no child redoes the imports of torch and
    transformers); the torch thread count and grad mode that the benchmark sets are restored after it."""
    import torch

    bench = script_module(f"benchmarks/{script}")
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    capsys.readouterr()
    try:
        bench.main([str(a) for a in ["--workdir", workdir, "--repeat", "1", "--device", "cpu", "--threads", "1", *flags]])
    finally:
        torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)
    return capsys.readouterr().out


def shared_inputs(workdir, sample_dataset=None, tiny_models=None):
    """Point the benchmark's workdir at the session's sample set and tiny models, which its scripts then reuse."""
    workdir.mkdir()
    if sample_dataset:
        (workdir / "sample").symlink_to(sample_dataset, target_is_directory=True)
    if tiny_models:
        (workdir / "models").symlink_to(tiny_models, target_is_directory=True)
    return workdir


def test_bench_caption_smoke(tmp_path, sample_dataset, tiny_models, capsys):
    workdir = shared_inputs(tmp_path / "work", sample_dataset, tiny_models)
    # 6 images in batches of 4: the last batch is short; the sample set's every image mode is among them.
    out = run_bench_here("bench_caption.py", workdir, "--images", 6, "--batch-size", 4, "--max-new-tokens", 6, "--num-workers", 1,
                         capsys=capsys)
    assert "same captions: yes (6/6 identical)" in out and "speed-up" in out
    captions = json.loads((workdir / "captions.json").read_text())
    assert len(captions["images"]) == 6 and captions["seed"] == captions["project"]
    assert all(text.strip() for text in captions["seed"]) and len(set(captions["seed"])) > 1


def test_bench_caption_full_size_path_smoke(tmp_path, sample_dataset, capsys):
    """--full-size's path (random weights from a config, synthetic tokenizer, forced length) with a small config."""
    config = {
        "model_type": "blip-2", "num_query_tokens": 8, "image_token_index": 1000,
        "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                          "image_size": 56, "patch_size": 14},
        "qformer_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "encoder_hidden_size": 64},
        "text_config": {"model_type": "opt", "vocab_size": 1008, "hidden_size": 64, "word_embed_proj_dim": 64, "ffn_dim": 128,
                        "num_hidden_layers": 2, "num_attention_heads": 4, "bos_token_id": 2, "eos_token_id": 50, "pad_token_id": 1},
    }
    (tmp_path / "small.json").write_text(json.dumps(config))
    workdir = shared_inputs(tmp_path / "work", sample_dataset)
    out = run_bench_here("bench_caption.py", workdir, "--full-size", "--config", tmp_path / "small.json", "--images", 5,
                         "--batch-size", 4, "--max-new-tokens", 7, capsys=capsys)
    assert "7 new tokens (forced)" in out and "same captions: yes (5/5 identical)" in out
    captions = json.loads((workdir / "captions.json").read_text())
    assert captions["seed"] == captions["project"] and all(text.strip() for text in captions["seed"])


def test_bench_generate_smoke(tmp_path, tiny_models, capsys, monkeypatch):
    """Every row's run (a child process each, for its own peak memory) runs in this process here: the children
    are the full-size test's below."""
    import numpy as np

    bench = script_module("benchmarks/bench_generate.py")
    rows = []

    def run_here_measured(command):
        rows.append(command[command.index("--run-variant") + 1])
        bench.main(command[2:])
        return 0.0  # peak RSS: not measured in this process

    monkeypatch.setattr(bench, "run_measured", run_here_measured)
    workdir = shared_inputs(tmp_path / "work", tiny_models=tiny_models)
    # 3 images in batches of 2: a short last batch, three different layouts.
    out = run_bench_here("bench_generate.py", workdir, "--images", 3, "--batch-size", 2, "--steps", 3, "--fast-steps", 2,
                         "--variants", "project-b1,project,project-dpm", capsys=capsys)
    assert rows == ["seed", "project-b1", "project", "project-dpm"]
    assert "same images as the seed (rows with its scheduler and steps): yes" in out
    results = {name: json.loads((workdir / f"results/{name}.json").read_text()) for name in ["seed", "project-b1", "project", "project-dpm"]}
    assert [r["batch_size"] for r in results.values()] == [1, 1, 2, 2]
    assert [r["steps"] for r in results.values()] == [3, 3, 3, 2]
    assert results["project-dpm"]["scheduler"] == "DPMSolverMultistepScheduler" and results["seed"]["scheduler"] == "PNDMScheduler"
    images = {name: np.load(workdir / f"results/{name}.npy").astype(np.int16) for name in results}
    assert images["seed"].shape == (3, 64, 64, 3) and images["seed"].std() > 5  # real pictures, not a constant
    assert np.abs(images["project"] - images["seed"]).max() <= 2 and np.abs(images["project-b1"] - images["seed"]).max() <= 2
    assert np.abs(images["seed"][0] - images["seed"][1]).mean() > 5  # different layouts and seeds give different pictures
    assert np.abs(images["project-dpm"] - images["seed"]).mean() > 1  # another sampler: compared with nothing


def test_bench_generate_full_size_path_smoke(tmp_path, tiny_models):
    """--full-size's path (random weights from a folder of configs) with the tiny model's configs."""
    workdir = shared_inputs(tmp_path / "work", tiny_models=tiny_models)
    out = run_bench("bench_generate.py", workdir, "--full-size", "--configs", tiny_models / "gligen-generation", "--images", 2,
                    "--batch-size", 2, "--steps", 2, "--variants", "project")
    assert "GLIGEN from gligen-generation, random weights" in out and "same images as the seed (rows with its scheduler and steps): yes" in out


def test_bench_score_smoke(tmp_path, sample_dataset, tiny_models, capsys):
    workdir = shared_inputs(tmp_path / "work", sample_dataset, tiny_models)
    # 3 pictures (640x480, 320x240, 240x320; 7 boxes) in batches of 2: a short last batch, pictures of several sizes.
    out = run_bench_here("bench_score.py", workdir, "--images", 3, "--batch-size", 2, capsys=capsys)
    assert "same scores: yes (3 pictures" in out and "3 pictures, 7 boxes" in out and "speed-up" in out and "tiny OWLv2" in out


def test_bench_score_full_size_path_smoke(tmp_path, sample_dataset, tiny_models, capsys):
    """--full-size's path (random weights from configs, the tiny tokenizers) with small configs in place of the real ones."""
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}
    configs = tmp_path / "configs"
    configs.mkdir()
    for name, text_length, image_size in [("owlv2-base-patch16-ensemble.json", 16, 32), ("clip-vit-large-patch14.json", 77, 28)]:
        real = json.loads((ROOT / "benchmarks/configs" / name).read_text())
        assert real["text_config"]["max_position_embeddings"] == text_length  # the sizes the benchmark's tokenizers expect
        real["text_config"].update(small)
        real["vision_config"].update(small, image_size=image_size, patch_size=real["vision_config"]["patch_size"] // 2)
        real["projection_dim"] = 32
        (configs / name).write_text(json.dumps(real))
    workdir = shared_inputs(tmp_path / "work", sample_dataset, tiny_models)
    out = run_bench_here("bench_score.py", workdir, "--full-size", "--configs", configs, "--images", 2, "--batch-size", 2, capsys=capsys)
    assert "OWLv2 base patch16 + CLIP ViT-L/14" in out and "same scores: yes (2 pictures" in out  # batching: the smoke test above


@pytest.mark.browser  # part 2 opens the page in Chromium
def test_bench_review_smoke(tmp_path):
    result = run_script("benchmarks/bench_review.py", "--pictures", 8, "--workers", "1,2", "--page-sizes", 300, "--repeat", 1,
                        "--workdir", tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    drawn = [line.split() for line in lines if line.strip().startswith(("1 ", "2 ")) and len(line.split()) == 4]
    assert [row[0] for row in drawn] == ["1", "2"] and all(float(row[2]) > 0 and float(row[3]) > 0 for row in drawn)
    assert len(list((tmp_path / "boxes_8_2" / "generation").glob("*.png"))) == 8
    page = next(line.split() for line in lines if line.strip().startswith("300 "))
    assert float(page[2]) > 0 and float(page[3]) > 0 and 0 < float(page[4]) < 60
    assert len(list((tmp_path / "page_300" / "boxes" / "review_data").glob("cards-*.js"))) == 1


def test_bench_coco_eval_smoke():
    result = run_script("benchmarks/bench_coco_eval.py", "--images", "30", "--detections-per-image", "20", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    assert "30 images" in result.stdout and "600 detections" in result.stdout and "speed-up" in result.stdout
    assert "same results: yes (6 summary values and 80 per-category APs" in result.stdout


def test_bench_sampler_smoke():
    result = run_script("benchmarks/bench_sampler.py", "--images", "3000", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["natural"], ["repeat-factor"], ["dcl"])]
    assert [row[0] for row in rows] == ["natural", "repeat-factor", "dcl"] and all(len(row) == 5 for row in rows)
    assert "same category shares: yes" in result.stdout and "12 epochs (960 rows)" in result.stdout


def test_bench_finetune_smoke(tmp_path):
    result = run_script("benchmarks/bench_finetune.py", "--workdir", tmp_path, "--iters", "2", "--batch-sizes", "1,2",
                        "--min-size", "64", "--max-size", "96", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert re.search(r"--batch-size +1: +\d+\.\d+ training images/s", result.stdout)
    assert re.search(r"batch 2 vs 1: x\d+\.\d+ images/s", result.stdout)


def test_bench_resume_smoke(tmp_path):
    result = run_script("benchmarks/bench_resume.py", "--pictures", "20,60", "--labels", 50, "--repeat", 1, "--workdir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "same label files: yes" in result.stdout and "speed-up" in result.stdout
    assert [line.split()[0] for line in result.stdout.splitlines() if line.strip()[:1].isdigit()][:3] == ["1", "20", "60"]
    assert len(list((tmp_path / "resume_60" / "out" / "generation").glob("*.png"))) == 60
    assert len((tmp_path / "resume_60" / "out" / "generation" / "manifest.jsonl").read_text().splitlines()) == 60
    assert len(list((tmp_path / "labels_1" / "labels").rglob("*.txt"))) == 50
