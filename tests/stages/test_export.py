"""Stage 4's output opens unchanged in the libraries people train detectors with (issue 13).

One user project, built once: the sample set stored elsewhere and reached through
``datasets/coco``, a relative symbolic link at another depth (as detectron2's docs recommend),
stage-2 pictures of every annotated sample image (the crowd one included, as a custom
``select_images`` could pick it), all of them picked, and stage 4 run with ``--merge --yolo``
into ``out/final`` (originals hard-linked, the default) and ``out/final_symlink``
(``--originals symlink``). Each test loads those files in the real library, and the recipes of
docs/training.md run on them.
"""

import ast
import json
import os
import re
import runpy
import shutil
from pathlib import Path

import pytest

from tests.helpers.scripts import ROOT, run_finalize, run_python, run_script

RECIPES = ROOT / "docs" / "recipes"
FINALS = ("final", "final_symlink")
COCO_FILES = ("annotations.json", "train_augmented.json")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def project(sample_dataset, tmp_path_factory) -> Path:
    from tests.helpers.stage_outputs import make_generated, make_records

    root = tmp_path_factory.mktemp("export")
    store = root / "store" / "data" / "sample"
    shutil.copytree(sample_dataset, store)
    project = root / "project"
    (project / "datasets").mkdir(parents=True)
    (project / "datasets" / "coco").symlink_to(Path("..", "..", "store", "data", "sample"))
    out = project / "out"
    records = make_records(store, max_records=20, crowd=True)
    assert any(record["image_id"] == 130 for record in records)  # the sample image with a crowd box
    out.mkdir()
    (out / "blip2_post.json").write_text(json.dumps(records))
    for name in make_generated(out, records, store / "images", variants=1):
        (out / "picked" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / name, out / "picked" / name)
    for final, flags in (("final", []), ("final_symlink", ["--originals", "symlink"])):
        result = run_script(
            "finalize_selected_images.py", "--original_annotation", "datasets/coco/annotations.json",
            "--original_data_root", "datasets/coco/images", "-g", "out", "-i", "out/picked", "-p", "out/blip2_post.json",
            "-o", f"out/{final}", "--merge", "--yolo", *flags, cwd=project)
        assert result.returncode == 0, result.stderr
        assert "YOLO dataset" in result.stdout and "crowd boxes left out 3" in result.stdout, result.stdout
    return project


def non_crowd(data: dict) -> list[dict]:
    return [a for a in data["annotations"] if not a["iscrowd"]]


@pytest.mark.parametrize("final", FINALS)
def test_every_file_name_lies_below_images_without_dotdot(project, final):
    images = project / "out" / final / "images"
    sample = project / "datasets" / "coco"
    original = load(sample / "annotations.json")
    for name in COCO_FILES:
        data = load(project / "out" / final / name)
        names = [image["file_name"] for image in data["images"]]
        assert all(".." not in n.split("/") and not n.startswith("/") for n in names)
        assert all((images / n).is_file() for n in names)
        assert all(n.startswith(("original/", "generated/generation/generation_", "generated/inpainting/inpainting_")) for n in names)
        stems = [Path(n).stem for n in names]  # converters that name label files by base name
        assert len(set(stems)) == len(stems), name
    merged = load(project / "out" / final / "train_augmented.json")
    assert [i["file_name"] for i in merged["images"][: len(original["images"])]] == \
           [f"original/{i['file_name']}" for i in original["images"]]
    for image in original["images"]:
        linked, source = images / "original" / image["file_name"], sample / "images" / image["file_name"]
        assert os.path.samefile(linked, source)
    if final == "final":  # hard links: a real folder, each file one more name of the original
        assert not (images / "original").is_symlink()
        assert all(p.stat().st_nlink >= 2 for p in (images / "original").rglob("*") if p.is_file())
    else:  # one absolute link, made with the path the user gave (not resolved through datasets/coco)
        assert os.readlink(images / "original") == str(project / "datasets" / "coco" / "images")


@pytest.mark.parametrize("name", COCO_FILES)
def test_pycocotools_scores_the_ground_truth_as_detections_ap_1(project, name):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = load(project / "out" / "final" / name)
    assert len({i["id"] for i in data["images"]}) == len(data["images"])
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(project / "out" / "final" / name))
        detections = gt.loadRes([{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                                 for a in non_crowd(data)])
        evaluation = COCOeval(gt, detections, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0) and evaluation.stats[8] == pytest.approx(1.0)


def test_generated_boxes_have_the_box_area_and_crowd_boxes_stay_crowd(project):
    data = load(project / "out" / "final" / "train_augmented.json")
    original = load(project / "datasets" / "coco" / "annotations.json")
    generated_ids = {i["id"] for i in data["images"] if "source_image_id" in i}
    copies = [a for a in data["annotations"] if a["image_id"] in generated_ids]
    source_of = {i["id"]: i["source_image_id"] for i in data["images"] if "source_image_id" in i}
    for copy in copies:
        x, y, w, h = copy["bbox"]
        assert copy["area"] == w * h
        assert copy["segmentation"] == [[x, y, x + w, y, x + w, y + h, x, y + h]]
    source_key = {(a["image_id"], tuple(a["bbox"])): a for a in original["annotations"]}
    sources = [source_key[(source_of[c["image_id"]], tuple(c["bbox"]))] for c in copies]
    assert [c["iscrowd"] for c in copies] == [s.get("iscrowd", 0) for s in sources]
    assert sum(c["iscrowd"] for c in copies) == 2  # the crowd box of image 130, in both modes
    assert any(s["area"] != c["area"] for s, c in zip(sources, copies))  # mask areas were not copied


@pytest.mark.slow  # trains a detector
def test_torchvision_recipe_trains_without_crowd_boxes(project, monkeypatch):
    import torch  # here, not at collection
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    def my_detector():
        # 64-pixel inputs and fewer proposals: the recipe trains on every image, and a 320-pixel
        # step takes ~20 s on a busy 2-core machine.
        return fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=21, min_size=64,
                                                     max_size=64, rpn_pre_nms_top_n_train=100,
                                                     rpn_post_nms_top_n_train=50, box_batch_size_per_image=32)

    monkeypatch.chdir(project)
    torch.manual_seed(0)
    saved = my_detector().state_dict()
    torch.save(saved, "my_detector.pth")
    recipe = runpy.run_path(str(RECIPES / "torchvision_finetune.py"), init_globals={"my_detector": my_detector})
    trained = recipe["model"].state_dict()
    assert any(not torch.equal(saved[k], trained[k]) for k in saved if saved[k].is_floating_point())

    data = load(Path("out/final/train_augmented.json"))
    crowd_images = {a["image_id"] for a in data["annotations"] if a["iscrowd"]}
    boxes_per_image = {}
    for a in non_crowd(data):
        boxes_per_image[a["image_id"]] = boxes_per_image.get(a["image_id"], 0) + 1
    base = recipe["base"]
    seen_crowd_images = 0
    images, targets = next(iter(recipe["loader"]))
    assert all(image.dtype == torch.float32 for image in images) and all(set(t) == {"boxes", "labels"} for t in targets)
    for i in recipe["with_boxes"]:  # each kept image brings exactly its non-crowd boxes
        image, target = recipe["without_crowd_boxes"]([recipe["dataset"].dataset[i]])
        image_id = base.ids[i]
        assert len(target[0]["boxes"]) == boxes_per_image[image_id]
        seen_crowd_images += image_id in crowd_images
    assert seen_crowd_images == len(crowd_images) == 3  # image 130 and its two generated pictures
    assert len(recipe["with_boxes"]) == len(boxes_per_image)


def test_supervision_loads_both_coco_files_and_the_yolo_set(project, tmp_path):
    import supervision as sv

    final = project / "out" / "final"
    for name in COCO_FILES:
        data = load(final / name)
        dataset = sv.DetectionDataset.from_coco(str(final / "images"), str(final / name))
        assert len(dataset) == len(data["images"])
        assert sum(len(detections) for _, _, detections in dataset) == len(data["annotations"])
    # The refusal of issue 13: two modes' pictures on one label file. Base names now differ.
    sv.DetectionDataset.from_coco(str(final / "images"), str(final / "annotations.json")).as_yolo(
        images_directory_path=str(tmp_path / "images"), annotations_directory_path=str(tmp_path / "labels"))
    assert len(list((tmp_path / "labels").glob("*.txt"))) == len(load(final / "annotations.json")["images"])

    # supervision's from_yolo reads one flat folder: read each folder of images/ with its labels/ twin.
    folders = sorted({p.parent for p in (final / "images").rglob("*.*") if p.suffix in {".png", ".jpg"}})
    boxes = 0
    for folder in folders:
        labels = final / "labels" / folder.relative_to(final / "images")
        dataset = sv.DetectionDataset.from_yolo(str(folder), str(labels), str(final / "data.yaml"))
        boxes += sum(len(detections) for _, _, detections in dataset)
        assert dataset.classes == ["ball", "box", "kite", "star"]
    assert boxes == len(non_crowd(load(final / "train_augmented.json")))


def test_supervision_refuses_symlinked_originals_as_docs_say(project):
    import supervision as sv

    final = project / "out" / "final_symlink"
    with pytest.raises(ValueError, match="outside the images directory"):
        sv.DetectionDataset.from_coco(str(final / "images"), str(final / "annotations.json"))
    assert "supervision" in (ROOT / "docs" / "training.md").read_text()


@pytest.mark.parametrize("final", FINALS)
def test_moving_the_dataset_keeps_every_image(project, final, tmp_path):
    moved = tmp_path / "elsewhere" / "deeper" / "final"
    shutil.copytree(project / "out" / final, moved, symlinks=True)
    data = load(moved / "train_augmented.json")
    assert all((moved / "images" / image["file_name"]).is_file() for image in data["images"])


def test_yolo_labels_follow_the_documented_class_mapping(project):
    import yaml

    final = project / "out" / "final"
    data = load(final / "train_augmented.json")
    config = yaml.safe_load((final / "data.yaml").read_text())
    categories = sorted(data["categories"], key=lambda c: c["id"])
    assert config["names"] == {k: c["name"] for k, c in enumerate(categories)}
    assert config["train"] == config["val"] == "train_augmented.txt"
    assert (final / "train_augmented.txt").read_text().splitlines() == [f"./images/{i['file_name']}" for i in data["images"]]
    assert len((final / "annotations.txt").read_text().splitlines()) == len(load(final / "annotations.json")["images"])
    class_of = {c["id"]: k for k, c in enumerate(categories)}
    for image in data["images"]:
        label = final / "labels" / Path(image["file_name"]).with_suffix(".txt")
        rows = [line.split() for line in label.read_text().splitlines()]
        W, H = image["width"], image["height"]
        expected = []
        for a in non_crowd({"annotations": [a for a in data["annotations"] if a["image_id"] == image["id"]]}):
            x, y, w, h = a["bbox"]
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
            expected.append([class_of[a["category_id"]], (x0 + x1) / 2 / W, (y0 + y1) / 2 / H, (x1 - x0) / W, (y1 - y0) / H])
        assert [int(r[0]) for r in rows] == [e[0] for e in expected]
        assert all(abs(float(v) - e) < 1e-6 for r, ex in zip(rows, expected) for v, e in zip(r[1:], ex[1:]))


ULTRALYTICS_CHECK = """
import json
from pathlib import Path

from ultralytics.data import YOLODataset
from ultralytics.data.utils import check_det_dataset

data = check_det_dataset("out/final/data.yaml")
dataset = YOLODataset(img_path=data["train"], data=data, task="detect", imgsz=64, augment=False)
cache = dataset.cache_labels(Path(dataset.label_files[0]).with_suffix(".check.cache"))
print(json.dumps({"names": data["names"], "images": len(dataset.im_files), "labels": len(dataset.labels),
                  "boxes": sum(len(label["bboxes"]) for label in dataset.labels), "found": cache["results"][0],
                  "missing": cache["results"][1], "empty": cache["results"][2], "corrupt": cache["results"][3]}))
"""


def ultralytics_env(tmp_path: Path) -> dict:
    """Offline, and settings (runs/, datasets/) kept in tmp_path instead of the user's home and the git root.

    Without PYTEST_CURRENT_TEST: Ultralytics, seeing it, writes runs into its own package folder."""
    settings = tmp_path / "config" / "Ultralytics" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"settings_version": "0.0.8", "runs_dir": str(tmp_path / "runs"), "sync": False,
                                    "datasets_dir": str(tmp_path / "datasets"), "weights_dir": str(tmp_path / "weights")}))
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_CURRENT_TEST"}
    return {**env, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp_path / "config")}


@pytest.mark.parametrize("final", FINALS)
def test_ultralytics_checks_the_dataset_every_image_found_no_corrupt_label(project, final, tmp_path):
    check = ULTRALYTICS_CHECK.replace("out/final/", f"out/{final}/")
    result = run_python("-c", check, cwd=project, env=ultralytics_env(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    data = load(project / "out" / final / "train_augmented.json")
    assert report["names"] == {"0": "ball", "1": "box", "2": "kite", "3": "star"} or \
           report["names"] == {0: "ball", 1: "box", 2: "kite", 3: "star"}
    images_without_boxes = len(data["images"]) - len({a["image_id"] for a in non_crowd(data)})
    assert report["images"] == report["labels"] == len(data["images"])
    assert report["found"] == len(data["images"]) and report["missing"] == 0  # empty label files count as found
    assert report["empty"] == images_without_boxes and report["corrupt"] == 0
    assert report["boxes"] == len(non_crowd(data))


@pytest.mark.slow  # trains a detector
def test_ultralytics_recipe_trains_with_its_learning_rate(project, tmp_path):
    """The recipe runs as written, but for one epoch of 64-pixel images on CPU instead of 20 epochs."""
    recipe = (RECIPES / "ultralytics_finetune.py").read_text()
    assert recipe.count("epochs=20") == 1
    script = tmp_path / "recipe.py"
    script.write_text(recipe.replace("epochs=20", "epochs=1, imgsz=64, batch=8, device='cpu', workers=0, plots=False"))
    start = "from ultralytics import YOLO; YOLO('yolov8n.yaml').save('runs/detect/train/weights/best.pt'); "
    work = tmp_path / "work"  # holds out/final and an untrained checkpoint where the recipe expects the user's
    (work / "runs" / "detect" / "train" / "weights").mkdir(parents=True)
    (work / "out").mkdir()
    (work / "out" / "final").symlink_to(project / "out" / "final")
    result = run_python("-c", start + f"import runpy; runpy.run_path({str(script)!r})", cwd=work, env=ultralytics_env(tmp_path),
                        timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "SGD(lr=0.001" in log and "ignoring 'lr0'" not in log
    assert list((tmp_path / "runs" / "detect").glob("train*/weights/last.pt"))


def test_docs_include_the_recipes_verbatim():
    """docs/training.md shows each file of docs/recipes/ in the code block after its <!-- recipe: NAME --> line."""
    docs = (ROOT / "docs" / "training.md").read_text()
    included = re.findall(r"<!-- recipe: (\S+) -->\n```\w+\n(.*?)```\n", docs, flags=re.S)
    assert sorted(name for name, _ in included) == sorted(p.name for p in RECIPES.glob("*.py"))
    for name, block in included:
        assert block == (RECIPES / name).read_text(), name


def test_two_images_on_one_label_file_is_an_error(tmp_path):
    from cocoaug.errors import UserError
    from cocoaug.yolo import yolo_labels

    data = {"images": [{"id": 1, "file_name": "original/a.jpg", "width": 10, "height": 10},
                       {"id": 2, "file_name": "original/a.png", "width": 10, "height": 10}],
            "annotations": [], "categories": [{"id": 1, "name": "ball"}]}
    with pytest.raises(UserError, match="share the label file labels/original/a.txt"):
        yolo_labels({"annotations.json": data})
    data["images"][1]["file_name"] = "original/images/b.png"
    with pytest.raises(UserError, match="hides the label files from Ultralytics"):
        yolo_labels({"annotations.json": data})


def test_the_labels_folder_is_written_whole_and_kept_when_it_is_right(tmp_path):
    from cocoaug.yolo import write_yolo_dataset, yolo_labels

    data = {"images": [{"id": 1, "file_name": "original/a.jpg", "width": 10, "height": 10},
                       {"id": 2, "file_name": "generated/inpainting/b.png", "width": 10, "height": 20}],
            "annotations": [{"id": 1, "image_id": 2, "category_id": 7, "bbox": [0, 0, 5, 10]}],
            "categories": [{"id": 7, "name": "ball"}]}
    outputs = {"annotations.json": data}
    labels, counts = yolo_labels(outputs)
    assert counts == {"label files": 2, "boxes": 1}
    assert write_yolo_dataset(tmp_path, outputs, labels, "annotations.json") == 2
    files = {p.relative_to(tmp_path / "labels").as_posix(): p.read_text() for p in (tmp_path / "labels").rglob("*.txt")}
    assert files == {"original/a.txt": "", "generated/inpainting/b.txt": "0 0.250000 0.250000 0.500000 0.500000\n"}
    stamp = (tmp_path / "labels" / "original" / "a.txt").stat().st_ino
    assert write_yolo_dataset(tmp_path, outputs, labels, "annotations.json") == 0  # right already: kept
    assert (tmp_path / "labels" / "original" / "a.txt").stat().st_ino == stamp
    data["images"].pop(0)  # a smaller selection: its labels/ holds no label of the earlier one
    labels, _ = yolo_labels(outputs)
    assert write_yolo_dataset(tmp_path, outputs, labels, "annotations.json") == 1
    assert [p.relative_to(tmp_path).as_posix() for p in sorted((tmp_path / "labels").rglob("*.txt"))] == ["labels/generated/inpainting/b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.txt", "data.yaml", "labels"]


def test_originals_copy_link_and_switching_between_them(tmp_path, sample_dataset, stage_outputs):
    selected = tmp_path / "selected"
    shutil.copytree(stage_outputs / "inpainting", selected / "inpainting", ignore=shutil.ignore_patterns("*.jsonl"))
    final = tmp_path / "final"
    sources = {image["source_image_id"] for image in [json.loads(line) for line in
               (stage_outputs / "inpainting" / "manifest.jsonl").read_text().splitlines()]}
    original = {i["id"]: i for i in load(sample_dataset / "annotations.json")["images"]}
    nlinks = {p: p.stat().st_nlink for p in (sample_dataset / "images").rglob("*") if p.is_file()}

    result = run_finalize(sample_dataset, stage_outputs, selected, final, "--originals", "copy")
    assert result.returncode == 0, result.stderr
    copies = sorted(p.relative_to(final / "images" / "original").as_posix() for p in (final / "images" / "original").rglob("*.*"))
    assert copies == sorted(original[i]["file_name"] for i in sources)  # without --merge: the sources only
    for name in copies:
        copy, source = final / "images" / "original" / name, sample_dataset / "images" / name
        assert copy.read_bytes() == source.read_bytes() and not os.path.samefile(copy, source)

    result = run_finalize(sample_dataset, stage_outputs, selected, final, "--originals", "symlink", "--overwrite")
    assert result.returncode == 2 and "remove it to link the original image folder" in result.stderr

    shutil.rmtree(final / "images" / "original")
    result = run_finalize(sample_dataset, stage_outputs, selected, final, "--originals", "symlink", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert os.readlink(final / "images" / "original") == str(sample_dataset / "images")

    result = run_finalize(sample_dataset, stage_outputs, selected, final, "--overwrite", "--merge")  # back to hard links
    assert result.returncode == 0, result.stderr
    assert not (final / "images" / "original").is_symlink()
    for image in load(final / "train_augmented.json")["images"][: len(original)]:
        assert os.path.samefile(final / "images" / image["file_name"], sample_dataset / "images" / image["file_name"][len("original/"):])
    assert {p: p.stat().st_nlink for p in nlinks} == {p: n + 1 for p, n in nlinks.items()}  # one more name each, no change
    result = run_finalize(sample_dataset, stage_outputs, selected, final, "--overwrite", "--merge")
    assert result.returncode == 0 and f"pictures copied {len(selected_files := list(selected.rglob('*.png')))}" in result.stdout
    assert len(selected_files) == len(sources) * 2  # a rerun links no original again; the picked ones are recopied
