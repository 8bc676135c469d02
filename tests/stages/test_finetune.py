"""Step 5 (finetune_detector.py) on CPU with a small torchvision detector built without weights: the
loop learns, a killed run resumes to the same weights, checkpoints are checked before training,
two processes share an epoch under torchrun, the sampling plan needs no model, the report and its
plot are written, and bad inputs are one error line."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from tests.helpers.scripts import ROOT, run_here, run_python, run_script

MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"
# Few proposals and sampled boxes: the box head's cost falls with them (512 boxes a picture by default).
FEW_BOXES = ["--model-option", "box_batch_size_per_image=64", "--model-option", "rpn_pre_nms_top_n_train=300",
             "--model-option", "rpn_post_nms_top_n_train=300"]
# A small detector at 64 to 96 pixels with few proposals: seconds per iteration on a loaded 2-core machine.
TINY = ["--model", MODEL, "--min-size", "64", "--max-size", "96", *FEW_BOXES, "--num-workers", "0", "--warmup-iters", "1"]
# One thread per process: two threads fighting over busy cores cost four times the CPU time.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SUMMARY_LINE = re.compile(r"^augmented vs control: AP [+-]\d+\.\d \(rare third: [+-]\d+\.\d\)$")
LEARN_IDS = {101, 102, 105, 106}  # one category each: ball x3, box x2, kite x2, star x4


def finetune(*args, timeout=900) -> subprocess.CompletedProcess:
    """The script in a child process, for what is about the process itself (a kill, torchrun)."""
    return run_script("finetune_detector.py", *args, env=ENV, timeout=timeout)


def finetune_here(*args) -> subprocess.CompletedProcess:
    """The script's main in this process (run_here): the same exit codes and lines, without a child's imports."""
    return run_here("finetune_detector.py", *args)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The in-process runs on one thread, as ENV gives the children (OMP_NUM_THREADS is read once, at torch's import)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def error_line(result) -> str:
    """The run's one error line (exit code 2, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[-1].startswith("error: "), result.stderr[-2000:]
    return lines[-1]


def state_of(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def small_set(sample_dataset, tmp_path_factory):
    """A dataset root of four sample pictures (images/ and annotations.json), also used as its own validation set."""
    root = tmp_path_factory.mktemp("finetune_small") / "small"
    data = json.loads((sample_dataset / "annotations.json").read_text())
    data["images"] = [image for image in data["images"] if image["id"] in LEARN_IDS]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in LEARN_IDS]
    (root / "images").mkdir(parents=True)
    for image in data["images"]:
        shutil.copy(sample_dataset / "images" / image["file_name"], root / "images" / image["file_name"])
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def val_flags(root):
    return ["--val-annotations", root / "annotations.json", "--val-images", root / "images"]


@pytest.fixture(scope="module")
def trained(finetune_dataset, small_set, tmp_path_factory):
    """One DCL run with --control on step 4's dataset of the sample set (2 iterations), shared by the tests below."""
    out = tmp_path_factory.mktemp("finetune_run") / "out"
    result = finetune_here("-d", finetune_dataset, *val_flags(small_set), "-o", out, *TINY, "--sampling", "dcl", "--control",
                           "--epochs", "2", "--epoch-size", "2", "--batch-size", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.slow  # trains a model
def test_a_run_writes_every_run_the_report_and_the_plot(trained, finetune_dataset):
    out, result = trained
    assert SUMMARY_LINE.match(result.stdout.strip().splitlines()[-1]), result.stdout
    for run in ("augmented-seed0", "control-seed0"):
        with open(out / "runs" / run / "train_log.csv") as f:
            rows = list(csv.DictReader(f))
        assert [int(row["iteration"]) for row in rows] == [0, 1] and [int(row["epoch"]) for row in rows] == [0, 1]
        assert all(float(row["loss"]) > 0 for row in rows)
        checkpoint = state_of(out / "runs" / run / "checkpoint.pt")
        assert checkpoint["categories"] == {"category_ids": [3, 7, 12, 20], "names": ["ball", "box", "kite", "star"]}
        assert checkpoint["iteration"] == 2 and checkpoint["settings"]["sampling"] == "dcl"
        metrics = json.loads((out / "runs" / run / "metrics.json").read_text())
        assert set(metrics["per_class"]) == {"3", "7", "12", "20"} and "AP50" in metrics["summary"]
    augmented = state_of(out / "runs" / "augmented-seed0" / "checkpoint.pt")["model"]
    control = state_of(out / "runs" / "control-seed0" / "checkpoint.pt")["model"]
    assert any(not torch.equal(augmented[k], control[k]) for k in augmented)  # trained on other images
    with open(out / "per_class_ap.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["category"] for row in rows) == ["ball", "box", "kite", "star"]
    merged = json.loads((finetune_dataset / "train_augmented.json").read_text())
    generated_ids = {image["id"] for image in merged["images"] if "source_image_id" in image}
    for row in rows:
        category_id = {"ball": 3, "box": 7, "kite": 12, "star": 20}[row["category"]]
        boxes = [a for a in merged["annotations"] if a["category_id"] == category_id and not a["iscrowd"]]
        assert int(row["generated_boxes"]) == sum(a["image_id"] in generated_ids for a in boxes)
        assert int(row["real_boxes"]) == sum(a["image_id"] not in generated_ids for a in boxes)
    report = json.loads((out / "report.json").read_text())
    assert report and (out / "per_class_ap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out / "per_class_ap.png") as plot:
        plot.verify()
        assert plot.format == "PNG" and plot.size[0] > 200 and plot.size[1] > 100


@pytest.mark.slow  # trains a model
def test_a_finished_run_is_kept_and_reported_again_with_resume(trained, finetune_dataset, small_set):
    out, _ = trained
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    common = ["-d", finetune_dataset, *val_flags(small_set), "-o", out, *TINY, "--sampling", "dcl", "--control",
              "--epochs", "2", "--epoch-size", "2", "--batch-size", "2"]
    assert "--resume" in error_line(finetune_here(*common))
    again = finetune_here(*common, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished earlier" in again.stderr and SUMMARY_LINE.match(again.stdout.strip().splitlines()[-1])
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()} == before


@pytest.mark.slow  # trains a model
def test_eval_only_gives_the_metrics_of_the_run(trained, finetune_dataset, small_set, tmp_path):
    out, _ = trained
    checkpoint = out / "runs" / "augmented-seed0" / "checkpoint.pt"
    result = finetune_here("-d", finetune_dataset, *val_flags(small_set), "-o", tmp_path / "eval", *TINY,
                           "--checkpoint", checkpoint, "--eval-only", "--batch-size", "2")  # the run's evaluation batches
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == \
           json.loads((out / "runs" / "augmented-seed0" / "metrics.json").read_text())
    assert re.search(r"^AP \S+  AP50 ", result.stdout, re.MULTILINE) and "kite" in result.stdout
    assert "--overwrite" in error_line(finetune_here("-d", finetune_dataset, *val_flags(small_set), "-o", tmp_path / "eval",
                                                     *TINY, "--checkpoint", checkpoint, "--eval-only"))


@pytest.mark.slow  # trains a model
def test_a_checkpoint_with_another_class_count_is_refused_unless_reset_head(small_set, tmp_path):
    from torchvision.models import get_model_builder

    other = get_model_builder(MODEL)(weights=None, weights_backbone=None, num_classes=3)  # 2 categories + background
    torch.save(other.state_dict(), tmp_path / "mine.pth")
    common = ["-d", small_set, *val_flags(small_set), *TINY, "--checkpoint", tmp_path / "mine.pth", "--eval-only"]
    line = error_line(finetune_here(*common, "-o", tmp_path / "refused"))
    assert "predicts 2 categories but the dataset has 4" in line and "--reset-head" in line and "mine.pth" in line
    assert not (tmp_path / "refused").exists()
    result = finetune_here(*common, "-o", tmp_path / "reset", "--reset-head")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the class head (roi_heads.box_predictor.) starts afresh" in result.stderr
    assert (tmp_path / "reset" / "metrics.json").is_file()


def test_bad_inputs_are_one_error_line_before_any_training(small_set, tmp_path):
    common = [*val_flags(small_set), "-o", tmp_path / "out", *TINY]
    assert str(tmp_path / "nowhere") in error_line(finetune_here("-d", tmp_path / "nowhere", *common))
    assert "--model nosuchnet" in error_line(finetune_here("-d", small_set, *common, "--model", "nosuchnet"))
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    line = error_line(finetune_here("-d", small_set, *common, "--checkpoint", tmp_path / "corrupt.pt"))
    assert "cannot read the checkpoint" in line and "corrupt.pt" in line
    partial = tmp_path / "val_images"
    partial.mkdir()
    shutil.copy(small_set / "images" / "shape_101.jpg", partial)
    line = error_line(finetune_here("-d", small_set, "--val-annotations", small_set / "annotations.json", "--val-images", partial,
                                    "-o", tmp_path / "out", *TINY[:2]))
    assert "3 validation image(s) not found" in line and "shape_102.png" in line
    bad_float = finetune_here("-d", small_set, *common, "--lr", "nan")  # refused by argparse, as by every script
    assert bad_float.returncode == 2 and "argument --lr: 'nan' is not a finite number" in bad_float.stderr
    assert not (tmp_path / "out").exists()


def test_the_sampling_plan_needs_no_model_and_no_image(finetune_dataset, tmp_path):
    root = tmp_path / "final"
    root.mkdir()
    shutil.copy(finetune_dataset / "train_augmented.json", root)  # no images/: none is opened
    result = finetune("-d", root, "-o", tmp_path / "plan", "--model", "not-even-a-model", "--sampling", "dcl", "--epochs", "3",
                      "--epoch-size", "100", "--sampling-plan-only")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "plan" / "sampling_plan.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["epoch"]), int(r["category_id"])) for r in rows] == [(e, c) for e in range(3) for c in (3, 7, 12, 20)]
    merged = json.loads((root / "train_augmented.json").read_text())
    boxes = {c: sum(a["category_id"] == c and not a["iscrowd"] for a in merged["annotations"]) for c in (3, 7, 12, 20)}
    for row in rows[:4]:  # the first epoch of DCL draws the natural distribution
        assert float(row["box_share"]) == pytest.approx(boxes[int(row["category_id"])] / sum(boxes.values()), abs=1e-6)
    last = [float(row["box_share"]) for row in rows[8:]]
    assert max(last) - min(last) < max(boxes.values()) / sum(boxes.values()) - min(boxes.values()) / sum(boxes.values())
    assert "box share per epoch" in result.stdout and "kite" in result.stdout


@pytest.mark.slow  # trains a model
def test_a_killed_run_resumes_to_the_same_weights(small_set, tmp_path):
    common = ["-d", small_set, *val_flags(small_set), *TINY, "--epochs", "3", "--epoch-size", "2", "--batch-size", "1",
              "--sampling", "repeat-factor"]
    whole = finetune_here(*common, "-o", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(ROOT / "finetune_detector.py"), *map(str, common), "-o", str(killed)],
                               cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "runs" / "augmented-seed0" / "checkpoint.pt"
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state_of(checkpoint)["epoch"] < 2 and not (killed / "runs" / "augmented-seed0" / "metrics.json").exists()
    assert "--lr" in error_line(finetune_here(*common, "-o", killed, "--resume", "--lr", "0.001"))
    resumed = finetune_here(*common, "-o", killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at iteration" in resumed.stderr
    expected, got = state_of(tmp_path / "whole/runs/augmented-seed0/checkpoint.pt"), state_of(checkpoint)
    assert got["iteration"] == expected["iteration"] == 6
    assert expected["model"].keys() == got["model"].keys()
    assert all(torch.equal(expected["model"][k], got["model"][k]) for k in expected["model"])


@pytest.mark.slow  # trains a model
def test_two_processes_under_torchrun_share_each_epoch(small_set, tmp_path):
    result = run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        ROOT / "finetune_detector.py", "-d", small_set, *val_flags(small_set), "-o", tmp_path / "out", *TINY,
                        "--max-iters", "2", "--epoch-size", "4", "--batch-size", "1", "--device", "cpu", env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = state_of(tmp_path / "out" / "runs" / "augmented-seed0" / "checkpoint.pt")
    # 4 images an epoch, 1 per process and iteration: 2 iterations are one epoch.
    assert checkpoint["settings"]["world_size"] == 2 and checkpoint["iteration"] == 2 and checkpoint["epoch"] == 0
    assert (tmp_path / "out" / "per_class_ap.png").is_file()
    assert result.stdout.count("augmented vs") == 1  # rank 0 alone reports


@pytest.mark.slow
def test_the_loop_learns(sample_dataset, tmp_path):
    """From random weights, the detector learns the picture it trains on: its AP there rises well above the start's.

    One picture (four stars): a detector built without weights has plain BatchNorm, which evaluates
    with running statistics; after a few dozen iterations these fit one picture, not several (on
    the four pictures of ``small_set``, 100 iterations left the AP near 0 though the loss fell).
    With 64 sampled boxes a picture, 50 iterations raised the AP50 by 0.63, 0.46 and 0.40 and the
    AP by 0.10, 0.08 and 0.10 with seeds 0, 1 and 2 (40 iterations: +0.28 and +0.05, at the bounds).
    """
    root = tmp_path / "one"
    data = json.loads((sample_dataset / "annotations.json").read_text())
    data["images"] = [image for image in data["images"] if image["id"] == 106]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == 106]
    (root / "images").mkdir(parents=True)
    shutil.copy(sample_dataset / "images" / "shape_106.png", root / "images")
    (root / "annotations.json").write_text(json.dumps(data))
    result = finetune_here("-d", root, *val_flags(root), "-o", tmp_path / "out", "--model", MODEL, "--min-size", "128",
                           "--max-size", "160", *FEW_BOXES, "--max-iters", "50", "--batch-size", "1", "--warmup-iters", "5",
                           "--lr", "0.02", "--num-workers", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    before = json.loads((tmp_path / "out/runs/before/metrics.json").read_text())["summary"]
    after = json.loads((tmp_path / "out/runs/augmented-seed0/metrics.json").read_text())["summary"]
    assert after["AP50"] > before["AP50"] + 0.25 and after["AP"] > before["AP"] + 0.05, (before, after)


@pytest.mark.slow  # trains a model
@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v3_large_fpn", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn"])
def test_the_issues_builders_train_and_take_a_new_head(name, small_set):
    """Each family the issue names trains on the dataset's targets, refuses another class count and resets its head."""
    from cocoaug.detection_data import DetectionDataset, collate, load_training_set
    from cocoaug.detection_models import build_model, load_weights
    from cocoaug.errors import UserError

    torch.manual_seed(0)
    train_set = load_training_set(small_set)
    model = build_model(name, train_set.categories.num_classes, {}, 64, 96)
    images, targets = collate([DetectionDataset(train_set, flip=True)[k] for k in range(2)])
    losses = model.train()(list(images), list(targets))
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    other = build_model(name, 3, {}, 64, 96).state_dict()
    with pytest.raises(UserError, match="predicts 2 categories but the dataset has 4"):
        load_weights(model, name, {"model": other, "categories": None}, "mine.pth", train_set.categories, reset_head=False)
    load_weights(model, name, {"model": other, "categories": None}, "mine.pth", train_set.categories, reset_head=True)
    own = model.state_dict()
    head = [k for k in own if k.startswith(("roi_heads.box_predictor.", "head.classification_head.cls_logits."))]
    assert head and all(own[k].shape != other[k].shape for k in head if k.endswith("weight"))
    assert all(torch.equal(own[k], other[k]) for k in own if k not in head)


@pytest.mark.slow  # trains a model
def test_a_checkpoint_trains_with_the_trunks_batchnorm_frozen_as_torchvision_builds_trained_detectors(small_set):
    """torchvision's trained detectors keep their trunk's BatchNorm frozen (no step counter in their state_dict):
    such a state_dict loads, and fine-tuning from it leaves the trunk's statistics as they were."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    from cocoaug.detection_data import DetectionDataset, collate, load_training_set
    from cocoaug.detection_models import build_model, freeze_batchnorm, load_weights

    torch.manual_seed(0)
    train_set = load_training_set(small_set)
    classes = train_set.categories.num_classes
    trained = build_model(MODEL, classes, {}, 64, 96)
    freeze_batchnorm(trained.backbone.body)  # the layout of torchvision's own trained weights
    state = trained.state_dict()
    assert not any(key.startswith("backbone.body.") and key.endswith("num_batches_tracked") for key in state)

    model = build_model(MODEL, classes, {}, 64, 96, frozen_batchnorm=True)
    load_weights(model, MODEL, {"model": state, "categories": None}, "theirs.pth", train_set.categories, reset_head=False)
    trunk = [m for m in model.backbone.body.modules() if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert trunk and all(isinstance(m, FrozenBatchNorm2d) for m in trunk)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.body.") and "running_" in k}
    images, targets = collate([DetectionDataset(train_set, flip=True)[k] for k in range(2)])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    sum(model.train()(list(images), list(targets)).values()).backward()
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())

    # From random weights (no checkpoint) the trunk keeps plain BatchNorm, whose statistics train.
    plain = build_model(MODEL, classes, {}, 64, 96)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.backbone.body.modules())
