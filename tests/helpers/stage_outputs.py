"""Stand-ins for stages 1 and 2 in the tests of stages 3 and 4: stage-1 records made from a COCO
set with cocoaug.boxes, and "generated" images that are noisy copies of the originals, named and
described in a manifest.jsonl by stage 2's own writers (cocoaug.generated)."""
from pathlib import Path

import numpy as np
import orjson
from PIL import Image

from cocoaug.boxes import xywh_pixels_to_xyxy_norm
from cocoaug.coco import load_coco
from cocoaug.generated import image_seed, manifest_entry, output_name, rebuild_manifest, save_generated_png
from cocoaug.images import open_rgb


def make_records(dataset_dir: Path, max_records: int = 4, crowd: bool = False) -> list[dict]:
    """Stage-1 records for the first images (by id) whose boxes are all usable; crowd boxes too with ``crowd``
    (as a custom ``select_images`` that keeps crowd images would make them)."""
    coco = load_coco(dataset_dir / "annotations.json")
    records = []
    for image in sorted(coco.images, key=lambda i: i["id"]):
        anns = [a for a in coco.annotations if a["image_id"] == image["id"] and (crowd or not a.get("iscrowd", 0))]
        if not anns:
            continue
        boxes = xywh_pixels_to_xyxy_norm([a["bbox"] for a in anns], image["width"], image["height"])
        if (boxes[:, 2:] <= boxes[:, :2]).any():
            continue
        labels = [coco.category_by_id[a["category_id"]]["name"] for a in anns]
        records.append({
            "image_id": image["id"], "file_name": image["file_name"], "width": image["width"], "height": image["height"],
            "category_id": anns[0]["category_id"], "label": labels[0], "bbox": boxes.tolist(),
            "annotation_ids": [a["id"] for a in anns], "category_ids": [a["category_id"] for a in anns],
            "labels": labels, "generated_text": f"a photo of a {labels[0]}",
        })
        if len(records) == max_records:
            break
    return records


def make_generated(out_dir: Path, records: list[dict], images_dir: Path, modes=("generation", "inpainting"),
                   variants: int = 2, manifest: bool = True) -> list[str]:
    """Noisy copies of the originals, named, described and written with cocoaug.generated as stage 2
    writes them (each PNG with its entry, then manifest.jsonl); returns '<mode>/<name>'."""
    rng = np.random.default_rng(0)
    written = []
    for mode in modes:
        folder = out_dir / mode
        settings = {"mode": mode, "model": "tiny", "scheduler": "DDIMScheduler", "steps": 2, "guidance_scale": 7.5,
                    "grounding_beta": 1.0, "negative_prompt": "", "phrase_template": "{label}", "resolution": 64, "run_seed": 0}
        for record in records:
            original = np.asarray(open_rgb(images_dir / record["file_name"]), dtype=np.int16)
            for k in range(variants):
                name = output_name(record["category_id"], record["image_id"], k, variants)
                noisy = np.clip(original + rng.integers(-40, 40, original.shape), 0, 255).astype(np.uint8)
                entry = manifest_entry(name, record, k, image_seed(0, record["image_id"], k), record["generated_text"],
                                       record["labels"], (64, 64), (record["width"], record["height"]), settings)
                save_generated_png(folder / name, Image.fromarray(noisy), entry)
                written.append(f"{mode}/{name}")
        if manifest:
            rebuild_manifest(folder)
    return written


def make_stage_outputs(dataset_dir: Path, out_dir: Path, variants: int = 2, manifest: bool = True) -> Path:
    """OUT_DIR as stages 1 and 2 leave it: blip2_post.json, generation/ and inpainting/."""
    records = make_records(dataset_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "blip2_post.json").write_bytes(orjson.dumps(records))
    make_generated(out_dir, records, dataset_dir / "images", variants=variants, manifest=manifest)
    return out_dir


def generated_names(out_dir: Path, mode: str) -> list[str]:
    """The names of the pictures in OUT_DIR/MODE, sorted."""
    return sorted(p.name for p in (out_dir / mode).glob("*.png"))


def make_scores(out_dir: Path, failing_every: int = 3) -> list[tuple[str, str]]:
    """scores.jsonl in each mode folder as score_images.py writes it (cocoaug.scores), by hand: every
    ``failing_every``-th picture of a folder fails with its first box not found; returns the passing
    (mode, file_name) pairs, which are also written to OUT_DIR/picks_passed.json."""
    from cocoaug.generated import list_generated, mode_folders
    from cocoaug.picks import PASSED_PICKS_FILE, write_picks
    from cocoaug.scores import write_scores

    records = {r["image_id"]: r for r in orjson.loads((out_dir / "blip2_post.json").read_bytes())}
    passed = []
    for mode, folder in mode_folders(out_dir).items():
        entries = []
        for k, image in enumerate(list_generated(folder, mode)[0]):
            record = records[image.source_image_id]
            ok = k % failing_every != failing_every - 1
            clip = round(0.15 + 0.01 * k, 3)
            boxes = [{"label": label, "category_id": category_id, "box": box, "found": ok or b > 0, "best_iou": 0.7 if ok or b else 0.1,
                      "detector_score": 0.4, "region_clip": clip, "region_clip_percentile": 0.5}
                     for b, (label, category_id, box) in enumerate(zip(record["labels"], record["category_ids"], record["bbox"]))]
            found = sum(box["found"] for box in boxes)
            entries.append({"file_name": image.file_name, "mode": mode, "source_image_id": image.source_image_id,
                            "category_id": record["category_id"], "label": record["label"], "sha256": "0" * 64,
                            "detections": [], "detections_min_score": 0.05, "boxes": boxes, "box_recall": found / len(boxes), "min_region_clip": clip, "caption_clip": 0.3,
                            "extra_objects": 0, "region_clip_percentile": 0.5, "passed": ok,
                            "reasons": [] if ok else [f"box 0 ({record['labels'][0]}) not found"],
                            "detector": "tiny", "clip_model": "tiny"})
            if ok:
                passed.append((mode, image.file_name))
        write_scores(folder, entries)
    write_picks(out_dir / PASSED_PICKS_FILE, passed, out_dir, source="score_images.py")
    return passed
