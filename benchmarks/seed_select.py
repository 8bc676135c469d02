"""The seed's image selection, re-implemented as the baseline of bench_select.py.

The seed script selected images this way: the standard library's ``json.load``, a pandas
DataFrame of the annotations, ``groupby('image_id').filter`` with a Python lambda per image
(one category, then fewer than 7 boxes), and a row-wise ``apply`` that normalises each box by
its image's width and height. It then wrote one record per image. Kept faithful on purpose,
slow parts included; it is not used by the pipeline.

    python benchmarks/seed_select.py ANNOTATIONS.json OUT.json
"""

import json
import sys

import pandas as pd


def seed_select(annotation_path):
    with open(annotation_path) as f:
        coco = json.load(f)
    images = pd.DataFrame(coco["images"]).set_index("id")
    names = {c["id"]: c["name"] for c in coco["categories"]}
    df = pd.DataFrame(coco["annotations"])
    df = df.groupby("image_id").filter(lambda g: g["category_id"].nunique() == 1)
    df = df.groupby("image_id").filter(lambda g: len(g) < 7)
    df = df.join(images[["width", "height", "file_name"]], on="image_id")

    def normalise(row):
        x, y, w, h = row["bbox"]
        return [x / row["width"], y / row["height"], (x + w) / row["width"], (y + h) / row["height"]]

    df["bbox_norm"] = df.apply(normalise, axis=1)
    records = []
    for image_id, group in df.groupby("image_id"):
        first = group.iloc[0]
        records.append({
            "image_id": int(image_id), "file_name": first["file_name"],
            "width": int(first["width"]), "height": int(first["height"]),
            "category_id": int(first["category_id"]), "label": names[first["category_id"]],
            "bbox": list(group["bbox_norm"]),
        })
    return records


def main():
    annotation_path, output_path = sys.argv[1:3]
    records = seed_select(annotation_path)
    with open(output_path, "w") as f:
        json.dump(records, f)
    print(f"selected {len(records)} images")


if __name__ == "__main__":
    main()
