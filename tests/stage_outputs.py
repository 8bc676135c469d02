"""Stand-ins for stages 1 and 2 in the tests of stages 3 and 4: stage-1 records made from a COCO
set with cocoaug.boxes, and "generated" images that are noisy copies of the originals, named and
described in a manifest.jsonl exactly as stage 2 writes them."""
from pathlib import Path

import numpy as np
import orjson
from PIL import Image, PngImagePlugin

from cocoaug.boxes import xywh_pixels_to_xyxy_norm
from cocoaug.coco import load_coco
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
    """Noisy copies of the originals named and described as stage 2 writes them; returns '<mode>/<name>'."""
    rng = np.random.default_rng(0)
    written = []
    for mode in modes:
        folder = out_dir / mode
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for record in records:
            original = np.asarray(open_rgb(images_dir / record["file_name"]), dtype=np.int16)
            for k in range(variants):
                stem = f"{record['category_id']}_{record['image_id']:04d}"
                name = f"{stem}_{k}.png" if variants > 1 else f"{stem}.png"
                noisy = np.clip(original + rng.integers(-40, 40, original.shape), 0, 255).astype(np.uint8)
                entry = {
                    "file_name": name, "source_image_id": record["image_id"], "source_file_name": record["file_name"],
                    "prompt": record["generated_text"], "phrases": record["labels"], "boxes": record["bbox"],
                    "seed": 1000 * record["image_id"] + k, "variant": k, "mode": mode, "model": "tiny",
                    "scheduler": "DDIMScheduler", "steps": 2, "guidance_scale": 7.5, "grounding_beta": 1.0,
                    "working_size": [64, 64], "width": record["width"], "height": record["height"],
                }
                Image.fromarray(noisy).save(folder / name)
                lines.append(orjson.dumps(entry) + b"\n")
                written.append(f"{mode}/{name}")
        if manifest:
            (folder / "manifest.jsonl").write_bytes(b"".join(lines))
    return written


def make_stage_outputs(dataset_dir: Path, out_dir: Path, variants: int = 2, manifest: bool = True) -> Path:
    """OUT_DIR as stages 1 and 2 leave it: blip2_post.json, generation/ and inpainting/."""
    records = make_records(dataset_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "blip2_post.json").write_bytes(orjson.dumps(records))
    make_generated(out_dir, records, dataset_dir / "images", variants=variants, manifest=manifest)
    return out_dir
