"""Benchmarks run at a tiny size: they work, and both sides of each comparison agree."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_select_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_select.py"), "--images", "200", "--repeat", "1", "--workdir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT,
    )
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
