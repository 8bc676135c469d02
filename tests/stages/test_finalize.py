"""Stage 4 (finalize_selected_images.py): picked names become clean images and a COCO file that
pycocotools, torchvision and a torchvision detector take; ids never collide; errors are one line;
the inputs are never modified."""

import json
import shutil

import numpy as np
import pytest
import torch

from cocoaug.generated import parse_generated_name
from tests.helpers.scripts import ROOT, run_finalize, run_here, tree_hashes
from tests.helpers.stage_outputs import generated_names


@pytest.fixture
def picked(tmp_path, stage_outputs):
    """SELECTED_DIR with a boxed-looking copy in generation/, a clean one in inpainting/, and a bare unique name."""
    selected = tmp_path / "selected"
    generation, inpainting = generated_names(stage_outputs, "generation"), generated_names(stage_outputs, "inpainting")
    (selected / "generation").mkdir(parents=True)
    (selected / "inpainting").mkdir()
    (selected / "generation" / generation[0]).write_bytes(b"a boxed copy: only its name counts")
    shutil.copy(stage_outputs / "inpainting" / inpainting[-1], selected / "inpainting")
    (selected / ".DS_Store").write_bytes(b"")
    return selected, [("generation", generation[0]), ("inpainting", inpainting[-1])]


def test_picked_images_become_a_coco_dataset(tmp_path, stage_outputs, sample_dataset, picked):
    selected, chosen = picked
    final = tmp_path / "final"
    before = tree_hashes(stage_outputs, sample_dataset, selected)
    result = run_finalize(sample_dataset, stage_outputs, selected, final, "--merge")
    assert result.returncode == 0, result.stderr
    original = json.loads((sample_dataset / "annotations.json").read_text())
    data = json.loads((final / "annotations.json").read_text())
    assert data["categories"] == original["categories"]
    by_id = {image["id"]: image for image in original["images"]}
    max_image_id = max(by_id)
    max_ann_id = max(a["id"] for a in original["annotations"])
    new_images = [image for image in data["images"] if image["id"] > max_image_id]
    assert [image["file_name"] for image in new_images] == [f"generated/{m}/{m}_{n}" for m, n in chosen]
    sources = {parse_generated_name(n)[1] for _, n in chosen}
    assert sorted(i["id"] for i in data["images"] if i["id"] <= max_image_id) == sorted(sources)
    for image in data["images"]:  # every listed file is there, and generated ones are the clean files
        assert (final / "images" / image["file_name"]).is_file()
    for (mode, name), image in zip(chosen, new_images):
        assert (final / "images" / image["file_name"]).read_bytes() == (stage_outputs / mode / name).read_bytes()
        source = by_id[image["source_image_id"]]
        assert (image["width"], image["height"]) == (source["width"], source["height"])
        assert image["generation_mode"] == mode and image["variant"] == parse_generated_name(name)[2]
        assert isinstance(image["seed"], int) and image["prompt"]
        copies = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        originals = [a for a in original["annotations"] if a["image_id"] == source["id"]]
        assert [(a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in copies] == \
               [(a["category_id"], a["bbox"], a["bbox"][2] * a["bbox"][3], a.get("iscrowd", 0)) for a in originals]
        assert all(a["id"] > max_ann_id for a in copies)
    for original_image in (i for i in data["images"] if i["id"] <= max_image_id):
        source = by_id[original_image["id"]]
        assert original_image == {**source, "file_name": f"original/{source['file_name']}"}
        src = sample_dataset / "images" / source["file_name"]
        assert (final / "images" / original_image["file_name"]).read_bytes() == src.read_bytes()
    assert len({i["id"] for i in data["images"]}) == len(data["images"])
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])

    merged = json.loads((final / "train_augmented.json").read_text())
    assert merged["images"][: len(original["images"])] == \
           [{**image, "file_name": f"original/{image['file_name']}"} for image in original["images"]]
    assert merged["annotations"][: len(original["annotations"])] == original["annotations"]
    assert len(merged["images"]) == len(original["images"]) + len(chosen)
    for image in merged["images"]:  # one image root for both files, no '..'
        assert ".." not in image["file_name"].split("/") and (final / "images" / image["file_name"]).is_file()
    assert "category" in result.stdout and "selected 2 generated images (generation 1, inpainting 1)" in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.startswith("category")).split()
    assert header[2:] == ["boxes", "in", "original", "file", "boxes", "in", "annotations.json", "boxes", "in", "train_augmented.json"]
    assert "files: pictures copied 2 (of 2); originals hard-linked" in result.stdout
    assert tree_hashes(stage_outputs, sample_dataset, selected) == before


def test_summary_counts_boxes_per_category_before_and_after(tmp_path, stage_outputs, sample_dataset, picked):
    selected, chosen = picked
    result = run_finalize(sample_dataset, stage_outputs, selected, tmp_path / "final", "--merge")
    original = json.loads((sample_dataset / "annotations.json").read_text())
    merged = json.loads((tmp_path / "final" / "train_augmented.json").read_text())
    final = json.loads((tmp_path / "final" / "annotations.json").read_text())
    for category in original["categories"]:
        count = lambda data: sum(a["category_id"] == category["id"] for a in data["annotations"])
        row = next(line for line in result.stdout.splitlines() if line.startswith(category["name"] + " "))
        assert row.split()[-3:] == [str(count(original)), str(count(final)), str(count(merged))]


@pytest.mark.slow  # trains a detector
def test_outputs_load_in_pycocotools_torchvision_and_train_a_detector(tmp_path, stage_outputs, sample_dataset, picked):
    from pycocotools.coco import COCO
    from torchvision.datasets import CocoDetection
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn
    from torchvision.transforms.functional import pil_to_tensor

    selected, chosen = picked
    final = tmp_path / "final"
    assert run_finalize(sample_dataset, stage_outputs, selected, final, "--merge").returncode == 0
    coco = COCO(str(final / "annotations.json"))
    new_ids = sorted(coco.getImgIds())[-len(chosen):]
    assert all(coco.getAnnIds(imgIds=[i]) for i in new_ids)
    merged = COCO(str(final / "train_augmented.json"))
    assert set(new_ids) <= set(merged.getImgIds())

    def to_target(annotations):
        boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        return {"boxes": boxes, "labels": torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64)}

    def to_image(picture):
        return pil_to_tensor(picture.convert("RGB")).float() / 255

    dataset = CocoDetection(str(final / "images"), str(final / "annotations.json"), transform=to_image, target_transform=to_target)
    merged_dataset = CocoDetection(str(final / "images"), str(final / "train_augmented.json"), transform=to_image,
                                   target_transform=to_target)
    index = {image_id: k for k, image_id in enumerate(dataset.ids)}
    images, targets = zip(dataset[index[new_ids[0]]], merged_dataset[merged_dataset.ids.index(new_ids[-1])])
    assert all(len(t["boxes"]) > 0 for t in targets)

    torch.manual_seed(0)
    num_classes = max(c["id"] for c in coco.dataset["categories"]) + 1
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=num_classes)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.roi_heads.parameters()]
    losses = model(list(images), list(targets))
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.roi_heads.parameters()))


def test_names_without_manifest_and_prompts_restrict_the_annotations(tmp_path, stage_outputs, sample_dataset):
    out = tmp_path / "out"
    shutil.copytree(stage_outputs, out)
    for mode in ("generation", "inpainting"):
        (out / mode / "manifest.jsonl").unlink()  # names only (the PNGs still carry their entries)
    shutil.rmtree(out / "generation")
    records = json.loads((out / "blip2_post.json").read_text())
    record = max(records, key=lambda r: len(r["bbox"]))
    name = f"{record['category_id']}_{record['image_id']:04d}_1.png"
    selected = tmp_path / "selected"
    selected.mkdir()
    shutil.copy(out / "inpainting" / name, selected / name)  # bare name: one mode folder only
    if len(record["bbox"]) > 1:
        for key in ("bbox", "annotation_ids", "category_ids", "labels"):
            record[key] = record[key][:1]
    (out / "blip2_post.json").write_text(json.dumps(records))
    result = run_finalize(sample_dataset, out, selected, tmp_path / "final", "-p", out / "blip2_post.json")
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "final" / "annotations.json").read_text())
    new = data["images"][-1]
    assert new["file_name"] == f"generated/inpainting/inpainting_{name}" and new["source_image_id"] == record["image_id"]
    copies = [a for a in data["annotations"] if a["image_id"] == new["id"]]
    assert [a["category_id"] for a in copies] == record["category_ids"]


def test_existing_result_needs_overwrite(tmp_path, stage_outputs, sample_dataset, picked):
    selected, _ = picked
    final = tmp_path / "final"
    assert run_finalize(sample_dataset, stage_outputs, selected, final).returncode == 0
    first = (final / "annotations.json").read_bytes()
    result = run_finalize(sample_dataset, stage_outputs, selected, final, "--merge")
    assert result.returncode == 2 and "--overwrite" in result.stderr and not (final / "train_augmented.json").exists()
    result = run_finalize(sample_dataset, stage_outputs, selected, final, "--overwrite")
    assert result.returncode == 0 and (final / "annotations.json").read_bytes() == first
    assert "pictures copied 2 (of 2); originals hard-linked 0 (of 2)" in result.stdout  # --overwrite recopies the pictures


def test_help_and_docs_name_every_flag():
    help_text = run_here("finalize_selected_images.py", "--help").stdout
    docs = (ROOT / "docs" / "steps.md").read_text()
    for flag in ["--original_annotation", "--original_data_root", "--generated", "--selected", "--output",
                 "--prompts", "--merge", "--overwrite", "--debug"]:
        assert flag in help_text and flag in docs, flag
    training = (ROOT / "docs" / "training.md").read_text()
    for flag in ["--originals", "--yolo", "--merge"]:
        assert flag in help_text and flag in training, flag


@pytest.mark.parametrize("case, message", [
    ("unknown name", "are not images stage 2 made"),
    ("ambiguous bare name", "exist in several mode folders"),
    ("empty selection", "no selected images"),
    ("empty annotation file", "annotation file is empty"),
    ("truncated annotation file", "annotation file is not valid JSON"),
    ("not coco", "not a COCO annotation file"),
    ("prompts not records", "must be a JSON list of stage-1 records"),
    ("prompts id unknown", "of the prompts file is not in"),
    ("output is input", "/selected is the folder of picked images"),
    ("missing original", "original image of image_id"),
    ("wrong size", "its boxes would not fit"),
    ("source not in annotations", "which is not in the annotation file"),
])
def test_bad_inputs_end_with_one_error_line(tmp_path, stage_outputs, sample_dataset, case, message):
    dataset, out = tmp_path / "dataset", tmp_path / "out"
    shutil.copytree(sample_dataset, dataset)
    shutil.copytree(stage_outputs, out)
    selected, final, flags = tmp_path / "selected", tmp_path / "final", []
    (selected / "inpainting").mkdir(parents=True)
    name = generated_names(out, "inpainting")[0]
    (selected / "inpainting" / name).write_bytes(b"")
    annotations = dataset / "annotations.json"
    coco = json.loads(annotations.read_text())
    image_id = parse_generated_name(name)[1]
    if case == "unknown name":
        (selected / "holiday.jpg").write_bytes(b"")
        (selected / "overview").mkdir()
        (selected / "overview" / f"{image_id}.png").write_bytes(b"")
    elif case == "ambiguous bare name":
        (selected / name).write_bytes(b"")
    elif case == "empty selection":
        (selected / "inpainting" / name).unlink()
    elif case == "empty annotation file":
        annotations.write_text("")
    elif case == "truncated annotation file":
        annotations.write_text(annotations.read_text()[:40])
    elif case == "not coco":
        annotations.write_text('{"images": []}')
    elif case == "prompts not records":
        (out / "blip2_post.json").write_text('{"a": 1}')
        flags = ["-p", out / "blip2_post.json"]
    elif case == "prompts id unknown":
        records = json.loads((out / "blip2_post.json").read_text())
        records[0]["image_id"] = 987654
        (out / "blip2_post.json").write_text(json.dumps(records))
        flags = ["-p", out / "blip2_post.json"]
    elif case == "output is input":
        final = selected
    elif case == "missing original":
        (dataset / "images" / next(i for i in coco["images"] if i["id"] == image_id)["file_name"]).unlink()
    elif case == "wrong size":
        from PIL import Image

        Image.new("RGB", (7, 5)).save(out / "inpainting" / name)
        (out / "inpainting" / "manifest.jsonl").unlink()
    elif case == "source not in annotations":
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != image_id]
        coco["images"] = [i for i in coco["images"] if i["id"] != image_id]
        annotations.write_text(json.dumps(coco))
    before = tree_hashes(dataset, out, selected)
    result = run_finalize(dataset, out, selected, final, *flags, annotations=annotations)
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if case == "unknown name":
        assert "holiday.jpg" in result.stderr and f"overview/{image_id}.png" in result.stderr
    assert tree_hashes(dataset, out, selected) == before
    assert not (final / "annotations.json").exists()


def test_generated_ids_follow_the_largest_original_ids(tmp_path, stage_outputs, sample_dataset):
    selected = tmp_path / "selected"
    shutil.copytree(stage_outputs / "generation", selected / "generation", ignore=shutil.ignore_patterns("*.jsonl"))
    result = run_finalize(sample_dataset, stage_outputs, selected, tmp_path / "final")
    assert result.returncode == 0, result.stderr
    original = json.loads((sample_dataset / "annotations.json").read_text())
    data = json.loads((tmp_path / "final" / "annotations.json").read_text())
    new_ids = [i["id"] for i in data["images"] if "source_image_id" in i]
    first = max(i["id"] for i in original["images"]) + 1
    assert new_ids == list(range(first, first + len(generated_names(stage_outputs, "generation"))))
    new_ann = np.array([a["id"] for a in data["annotations"] if a["image_id"] in set(new_ids)])
    first_ann = max(a["id"] for a in original["annotations"]) + 1
    assert (new_ann == np.arange(first_ann, first_ann + len(new_ann))).all()


def test_a_killed_runs_temp_files_are_removed_by_the_rerun_images_original_included(tmp_path, stage_outputs, sample_dataset, picked):
    """A kill leaves hidden temp files beside the copies (annotations.json, written last, is absent): the rerun,
    without --overwrite, finishes and leaves none, in images/original/ (and its subfolders) as elsewhere."""
    selected, _ = picked
    final = tmp_path / "final"
    assert run_finalize(sample_dataset, stage_outputs, selected, final, "--merge").returncode == 0
    (final / "annotations.json").unlink()
    dead_pid = 4194305  # above any pid Linux gives
    originals = sorted(p for p in (final / "images" / "original").rglob("*") if p.is_file())
    stale = [path.with_name(f".{path.name}.abcd1234.{dead_pid}.tmp") for path in originals[:2]]
    stale += [final / "images" / "original" / ".gone.jpg.k3j2h1g9.tmp", final / f".annotations.json.zz_9y8x7.{dead_pid}.tmp"]
    stale.append(next((final / "images" / "generated").rglob("*.png")).with_name(f".x.png.abcd1234.{dead_pid}.tmp"))
    for path in stale:
        path.write_bytes(b"half a file")
    result = run_finalize(sample_dataset, stage_outputs, selected, final, "--merge")
    assert result.returncode == 0, result.stderr
    assert (final / "annotations.json").is_file()
    assert [p for p in final.rglob("*") if p.name.endswith(".tmp")] == []
    assert sorted(p for p in (final / "images" / "original").rglob("*") if p.is_file()) == originals
