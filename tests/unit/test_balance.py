"""Class balance (cocoaug/balance.py, stage 1 --balance, stage 2 per-record variants, stage 4's plan
columns): the formulas on hand-made counts, the plan file, a skewed set through stages 1-4 with the
tiny models, determinism and bad values."""

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cocoaug import balance
from cocoaug.balance import BalanceSettings, FileCounts
from cocoaug.errors import UserError
from cocoaug.records import load_records
from cocoaug.scores import SUMMARY_COLUMNS, write_summary

ROOT = Path(__file__).resolve().parents[1]
COMMON, RARE, OTHER = 1, 2, 3
CATEGORIES = [{"id": COMMON, "name": "cat"}, {"id": RARE, "name": "zebra"}, {"id": OTHER, "name": "kite"}]


def run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def write_skewed_set(folder: Path, common: int = 20, rare: int = 2, kites: int = 0) -> Path:
    """A COCO set whose "cat" images are 10x as many as its "zebra" images (one box each); noise pictures."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": CATEGORIES}
    rng = np.random.default_rng(0)
    # The rare category's images come first, so that --limit keeps them.
    layout = [RARE] * rare + [COMMON] * common + [OTHER] * kites
    for image_id, category_id in enumerate(layout, start=1):
        name = f"{image_id:03d}.png"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(images / name)
        coco["images"].append({"id": image_id, "file_name": name, "width": 64, "height": 48})
        coco["annotations"].append({"id": 100 + image_id, "image_id": image_id, "category_id": category_id,
                                    "bbox": [8, 8, 32, 24], "area": 768, "iscrowd": 0})
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def select_only(folder: Path, annotations: Path, out: Path, *flags) -> subprocess.CompletedProcess:
    return run("generate_prompt_blip2.py", "-i", folder / "images", "-a", annotations, "-o", out,
               "--select-only", "--overwrite", *flags)


def plan_rows(out: Path) -> dict[str, balance.CategoryPlan]:
    return {row.category: row for row in balance.read_plan(out / balance.PLAN_FILE)}


# ---------------------------------------------------------------- the formulas on hand-made counts


def test_repeat_factor_is_lvis_formula():
    # f_c = 1/1000 with t = 0.001 -> 1; f_c = 1/100000 -> sqrt(100) = 10; frequent categories stay at 1.
    assert balance.repeat_factor(1, 1000, 0.001) == 1.0
    assert balance.repeat_factor(1, 100_000, 0.001) == pytest.approx(10.0)
    assert balance.repeat_factor(4, 100_000, 0.001) == pytest.approx(5.0)
    assert balance.repeat_factor(500, 1000, 0.001) == 1.0


def test_file_counts_count_boxes_and_images_per_category():
    counts = balance.file_counts([1, 1, 2, 3, 3, 3], [5, 5, 5, 7, 5, 7], n_images=10)
    assert counts == FileCounts(10, {5: 4, 7: 2}, {5: 3, 7: 1})


def test_multi_category_record_takes_its_largest_factor():
    counts = FileCounts(100, {1: 50, 2: 1}, {1: 50, 2: 1})
    records = [{"image_id": 7, "category_ids": [1, 1, 2]}, {"image_id": 8, "category_ids": [1]}]
    settings = BalanceSettings("repeat-factor", threshold=0.04, max_variants=8)
    # r_1 = max(1, sqrt(0.04 / 0.5)) = 1; r_2 = sqrt(0.04 / 0.01) = 2 exactly.
    assert balance.plan_variants(records, counts, settings, [1, 2]) == {7: 2, 8: 1}
    # Only the balanced categories count: without category 2, record 7 is a plain category-1 record.
    assert balance.plan_variants(records, counts, settings, [1]) == {7: 1, 8: 1}


def test_rounding_is_deterministic_and_unbiased():
    factor = 2.3
    counts = [balance.rounded_count(factor, 0, image_id, cap=8) for image_id in range(4000)]
    assert set(counts) == {2, 3}
    assert np.mean(counts) == pytest.approx(factor, abs=0.03)
    assert counts == [balance.rounded_count(factor, 0, image_id, cap=8) for image_id in range(4000)]
    assert counts != [balance.rounded_count(factor, 1, image_id, cap=8) for image_id in range(4000)]
    assert balance.rounded_count(5.0, 0, 1, cap=8) == 5
    assert all(0 <= balance.unit_hash(3, i) < 1 for i in range(100))


def test_cap_bounds_every_count():
    assert balance.rounded_count(20.0, 0, 1, cap=8) == 8
    assert balance.rounded_count(math.inf, 0, 1, cap=3) == 3
    counts = FileCounts(10_000, {1: 1}, {1: 1})
    settings = BalanceSettings("repeat-factor", threshold=0.1, max_variants=4)  # r = sqrt(1000) = 31.6
    assert balance.plan_variants([{"image_id": 1, "category_ids": [1]}], counts, settings, [1]) == {1: 4}


def test_target_deficit_is_spread_evenly_over_the_records():
    # 13 boxes wanted, 3 in the file: deficit 10 over 4 one-box records -> 3, 3, 2, 2 pictures.
    counts = FileCounts(10, {1: 3}, {1: 3})
    records = [{"image_id": i, "category_ids": [1]} for i in (11, 12, 13, 14)]
    plan = balance.plan_variants(records, counts, BalanceSettings("target", target_boxes=13), [1])
    assert sorted(plan.values()) == [2, 2, 3, 3] and sum(plan.values()) == 10
    # A two-box record adds two boxes per picture: deficit 4 -> 2 pictures in all.
    counts = FileCounts(10, {1: 2}, {1: 1})
    plan = balance.plan_variants([{"image_id": 5, "category_ids": [1, 1]}], counts, BalanceSettings("target", target_boxes=6), [1])
    assert plan == {5: 2}


def test_target_stops_at_the_cap_and_names_the_shortfall():
    counts = FileCounts(10, {1: 2, 2: 40}, {1: 2, 2: 8})
    records = [{"image_id": 1, "category_ids": [1]}, {"image_id": 2, "category_ids": [1]}, {"image_id": 3, "category_ids": [2]}]
    settings = BalanceSettings("target", target_boxes=20, max_variants=3)
    plan = balance.plan_variants(records, counts, settings, [1, 2])
    assert plan == {1: 3, 2: 3, 3: 0}  # category 2 is above target: its record gets nothing
    rows = balance.plan_table([{**r, "variants": plan[r["image_id"]]} for r in records], counts, settings, {1: "a", 2: "b"}, [1, 2])
    short = balance.shortfalls(rows)
    assert [(row.category, row.expected_boxes_after, row.shortfall) for row in short] == [("a", 8, 12)]


def test_target_counts_pictures_already_planned_for_a_rarer_category():
    # Record 1 holds both categories; the rarer one (2) is planned first and its 3 pictures cover category 1 too.
    counts = FileCounts(10, {1: 4, 2: 1}, {1: 4, 2: 1})
    records = [{"image_id": 1, "category_ids": [1, 2]}, {"image_id": 2, "category_ids": [1]}]
    plan = balance.plan_variants(records, counts, BalanceSettings("target", target_boxes=4), [1, 2])
    assert plan == {1: 3, 2: 0}


def test_pass_rates_raise_the_plan():
    counts = FileCounts(100, {1: 2}, {1: 1})
    records = [{"image_id": i, "category_ids": [1]} for i in range(4)]
    plain = balance.plan_variants(records, counts, BalanceSettings("target", target_boxes=6), [1])
    halved = balance.plan_variants(records, counts, BalanceSettings("target", target_boxes=6, pass_rates={1: 0.5}), [1])
    assert sum(plain.values()) == 4 and sum(halved.values()) == 8
    zero = balance.plan_variants(records, counts, BalanceSettings("target", target_boxes=6, max_variants=5, pass_rates={1: 0.0}), [1])
    assert set(zero.values()) == {5}
    settings = BalanceSettings("repeat-factor", threshold=0.04, pass_rates={1: 0.25})  # r = 2, / 0.25 = 8
    assert set(balance.plan_variants(records, counts, settings, [1]).values()) == {8}


def test_plan_file_round_trips_and_refuses_bad_cells(tmp_path):
    counts = FileCounts(10, {1: 3, 2: 1}, {1: 3, 2: 1})
    records = [{"image_id": 1, "category_ids": [1], "variants": 2}, {"image_id": 2, "category_ids": [2, 2], "variants": 3}]
    settings = BalanceSettings("repeat-factor", threshold=0.5, pass_rates={2: 0.5})
    rows = balance.plan_table(records, counts, settings, {1: "a", 2: "b"}, [1, 2])
    balance.write_plan(tmp_path / "plan.csv", rows)
    assert balance.read_plan(tmp_path / "plan.csv") == rows
    assert rows[1].planned_pictures == 3 and rows[1].planned_boxes == 6 and rows[1].expected_boxes_after == 1 + 3
    text = (tmp_path / "plan.csv").read_text().replace(",3,6,", ",three,6,")
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(UserError, match="line 3"):
        balance.read_plan(tmp_path / "bad.csv")


# ---------------------------------------------------------------- stage 1


def test_select_only_shows_and_writes_the_plan(tmp_path):
    annotations = write_skewed_set(tmp_path)
    result = select_only(tmp_path, annotations, tmp_path / "out", "--balance", "repeat-factor", "--balance-threshold", "0.5")
    assert result.returncode == 0, result.stderr
    records = load_records(tmp_path / "out" / "selection.json", require_text=False)
    by_category = {}
    for record in records:
        by_category.setdefault(record["label"], set()).add(record["variants"])
    # f_cat = 20/22 -> r = 1; f_zebra = 2/22 -> r = sqrt(0.5 * 11) = 2.35: 2 or 3 pictures per record.
    assert by_category["cat"] == {1} and by_category["zebra"] <= {2, 3}
    rows = plan_rows(tmp_path / "out")
    assert rows["zebra"].boxes_in_file == 2 and rows["zebra"].images_in_file == 2 and rows["zebra"].selected_records == 2
    assert rows["zebra"].repeat_factor == pytest.approx(math.sqrt(5.5), abs=1e-4)
    assert rows["zebra"].planned_pictures == sum(r["variants"] for r in records if r["label"] == "zebra")
    assert rows["cat"].expected_boxes_after == 40 and rows["zebra"].expected_boxes_after == 2 + rows["zebra"].planned_boxes
    assert "class-balance plan" in result.stdout and "zebra" in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.strip().startswith("category"))
    assert header.split() == ["category", "id", "boxes", "images", "r_c", "records", "pictures", "new", "boxes", "expected"]


def test_target_plan_tops_up_short_categories_and_names_shortfalls(tmp_path):
    annotations = write_skewed_set(tmp_path)
    result = select_only(tmp_path, annotations, tmp_path / "out", "--balance", "target", "--target-boxes", "12", "--max-variants", "4")
    assert result.returncode == 0, result.stderr
    records = load_records(tmp_path / "out" / "selection.json", require_text=False)
    # cat has 20 boxes already: its records are left out; zebra needs 10 boxes but 2 records x 4 give 8.
    assert {r["label"] for r in records} == {"zebra"} and [r["variants"] for r in records] == [4, 4]
    rows = plan_rows(tmp_path / "out")
    assert rows["cat"].selected_records == 20 and rows["cat"].planned_pictures == 0
    assert rows["zebra"].expected_boxes_after == 10 and rows["zebra"].shortfall == 2
    assert "short of target: zebra reaches 10 of 12 boxes (shortfall 2" in result.stdout
    assert "skipped: categories at target (no picture planned)" in result.stdout
    assert " r_c " not in result.stdout  # no repeat factor in a target plan


def test_same_inputs_and_seed_give_the_same_plan(tmp_path):
    annotations = write_skewed_set(tmp_path, common=20, rare=2, kites=6)
    flags = ["--balance", "repeat-factor", "--balance-threshold", "0.9"]
    outputs = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert select_only(tmp_path, annotations, tmp_path / name, *flags, "--seed", seed).returncode == 0
        outputs.append(((tmp_path / name / "selection.json").read_bytes(), (tmp_path / name / "plan.csv").read_bytes()))
    assert outputs[0] == outputs[1]
    variants = [[r["variants"] for r in json.loads(selection)] for selection, _ in outputs]
    assert variants[0] != variants[2], "another seed rounds other records up"


def test_without_balance_the_output_is_unchanged(tmp_path):
    annotations = write_skewed_set(tmp_path)
    assert select_only(tmp_path, annotations, tmp_path / "plain").returncode == 0
    assert select_only(tmp_path, annotations, tmp_path / "planned", "--balance", "repeat-factor").returncode == 0
    assert not (tmp_path / "plain" / "plan.csv").exists()
    plain = (tmp_path / "plain" / "selection.json").read_bytes()
    planned = json.loads((tmp_path / "planned" / "selection.json").read_bytes())
    assert b"variants" not in plain
    assert json.loads(plain) == [{k: v for k, v in record.items() if k != "variants"} for record in planned]


def write_pass_rates(path: Path, rates: dict[str, float]) -> Path:
    rows = [{"category_id": 0, "category": name, "mode": "generation", "pictures": 10, "passed": round(rate * 10),
             "pass_rate": rate, "median_region_clip": 0.5} for name, rate in rates.items()]
    write_summary(path, rows)
    return path


def test_pass_rates_file_raises_the_plan_and_warns_about_zero(tmp_path):
    annotations = write_skewed_set(tmp_path)
    rates = write_pass_rates(tmp_path / "score_summary.csv", {"zebra": 0.5, "kite": 0.0})
    flags = ["--balance", "target", "--target-boxes", "6", "--max-variants", "8"]
    assert select_only(tmp_path, annotations, tmp_path / "plain", *flags).returncode == 0
    result = select_only(tmp_path, annotations, tmp_path / "rated", *flags, "--pass-rates", rates)
    assert result.returncode == 0, result.stderr
    assert "'kite' has a pass rate of 0" in result.stderr
    plain, rated = plan_rows(tmp_path / "plain"), plan_rows(tmp_path / "rated")
    assert plain["zebra"].planned_pictures == 4 and rated["zebra"].planned_pictures == 8
    assert rated["zebra"].pass_rate == 0.5 and rated["zebra"].expected_boxes_after == 2 + 4


BAD_VALUES = [
    (["--balance", "repeat-factor", "--balance-threshold", "0"], "--balance-threshold 0"),
    (["--balance", "repeat-factor", "--balance-threshold", "-1"], "--balance-threshold -1"),
    (["--balance", "target", "--target-boxes", "0"], "--target-boxes 0"),
    (["--balance", "target"], "needs --target-boxes"),
    (["--balance", "repeat-factor", "--max-variants", "0"], "--max-variants 0"),
    (["--balance", "repeat-factor", "--target-boxes", "5"], "--target-boxes needs --balance target"),
    (["--target-boxes", "5"], "--target-boxes needs --balance target"),
    (["--pass-rates", "RATES"], "--pass-rates needs --balance"),
    (["--balance", "repeat-factor", "--pass-rates", "UNKNOWN"], "lacks: giraffe"),
    (["--balance", "repeat-factor", "--pass-rates", "OUTSIDE"], "outside [0, 1]"),
    (["--balance", "repeat-factor", "--pass-rates", "MISSING"], "pass-rates file"),
]


@pytest.mark.parametrize("flags, message", BAD_VALUES, ids=[" ".join(flags) for flags, _ in BAD_VALUES])
def test_bad_values_end_with_one_error_line(tmp_path, flags, message):
    annotations = write_skewed_set(tmp_path, common=2, rare=1)
    files = {"RATES": write_pass_rates(tmp_path / "rates.csv", {"zebra": 0.5}),
             "UNKNOWN": write_pass_rates(tmp_path / "unknown.csv", {"zebra": 0.5, "giraffe": 0.2}),
             "OUTSIDE": tmp_path / "outside.csv", "MISSING": tmp_path / "missing.csv"}
    with open(files["OUTSIDE"], "w", newline="") as f:
        writer = csv.DictWriter(f, SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerow({"category_id": 2, "category": "zebra", "mode": "generation", "pictures": 4, "passed": 2, "pass_rate": 1.5})
    flags = [str(files.get(flag, flag)) for flag in flags]
    result = select_only(tmp_path, annotations, tmp_path / "out", *flags)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "plan.csv").exists()


def test_records_refuse_a_bad_variants_field(tmp_path):
    annotations = write_skewed_set(tmp_path, common=2, rare=1)
    assert select_only(tmp_path, annotations, tmp_path / "out", "--balance", "repeat-factor").returncode == 0
    selection = tmp_path / "out" / "selection.json"
    for bad in (0, -1, 1.5, True, "2"):
        records = json.loads(selection.read_text())
        records[0]["variants"] = bad
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(records))
        with pytest.raises(UserError, match="'variants' that is not a positive integer"):
            load_records(path, require_text=False)


# ---------------------------------------------------------------- stages 1 to 4 with the tiny models


@pytest.fixture(scope="module")
def balanced_run(tiny_models, tmp_path_factory) -> dict:
    """A skewed set (20 cat images, 2 zebra images) through stage 1 (repeat-factor; --limit 5 keeps
    both zebras and 3 cats), stage 2 (generation), stage 3, and stage 4 with every picture picked."""
    folder = tmp_path_factory.mktemp("balanced")
    annotations = write_skewed_set(folder)
    out, images = folder / "out", folder / "images"
    plan_flags = ["--limit", "5", "--balance", "repeat-factor", "--balance-threshold", "0.5", "--seed", "1"]
    preview = run("generate_prompt_blip2.py", "-i", images, "-a", annotations, "-o", out, "--select-only", *plan_flags)
    assert preview.returncode == 0, preview.stderr
    preview_plan = (out / "plan.csv").read_bytes()
    stage1 = run("generate_prompt_blip2.py", "-i", images, "-a", annotations, "-o", out, "--model", tiny_models / "blip2",
                 "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "4", "--num-workers", "0", *plan_flags)
    assert stage1.returncode == 0, stage1.stderr
    stage2 = run("generate_image_gligen.py", "--mode", "generation", "-i", images, "-p", out / "blip2_post.json", "-o", out,
                 "--model", tiny_models / "gligen-generation", "--steps", "2", "--resolution", "64", "--batch-size", "4",
                 "--device", "cpu")
    assert stage2.returncode == 0, stage2.stderr
    stage3 = run("draw_bboxes.py", "-g", out, "-p", out / "blip2_post.json", "-o", folder / "boxes", "--no-overview")
    assert stage3.returncode == 0, stage3.stderr
    picked = folder / "picked" / "generation"
    shutil.copytree(folder / "boxes" / "generation", picked)  # a user keeping every picture
    stage4 = run("finalize_selected_images.py", "--original_annotation", annotations, "--original_data_root", images,
                 "-g", out, "-i", folder / "picked", "-o", folder / "final", "-p", out / "blip2_post.json", "--merge")
    assert stage4.returncode == 0, stage4.stderr
    return {"out": out, "final": folder / "final", "preview_plan": preview_plan, "stage2": stage2, "stage4": stage4}


def test_select_only_previews_the_plan_of_the_full_run(balanced_run):
    out = balanced_run["out"]
    assert (out / "plan.csv").read_bytes() == balanced_run["preview_plan"]
    selection = {r["image_id"]: r["variants"] for r in load_records(out / "selection.json", require_text=False)}
    assert {r["image_id"]: r["variants"] for r in load_records(out / "blip2_post.json")} == selection
    assert (out / "blip2_post.csv").read_text().splitlines()[0].endswith(",variants")


def test_stage2_rerun_resumes_with_the_plan(balanced_run, tiny_models):
    out = balanced_run["out"]
    total = sum(r["variants"] for r in load_records(out / "blip2_post.json"))
    result = run("generate_image_gligen.py", "--mode", "generation", "-i", out.parent / "images", "-p", out / "blip2_post.json",
                 "-o", out, "--model", tiny_models / "gligen-generation", "--steps", "2", "--resolution", "64", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert f"generated 0, skipped as existing {total}" in result.stdout


def test_rare_category_gets_more_pictures_per_record(balanced_run):
    out = balanced_run["out"]
    records = load_records(out / "blip2_post.json")
    made = sorted(path.name for path in (out / "generation").glob("*.png"))
    per_record = {r["image_id"]: sum(1 for name in made if name.split("_")[1].split(".")[0] == f"{r['image_id']:04d}") for r in records}
    assert all(per_record[r["image_id"]] == r["variants"] for r in records)
    zebra = [per_record[r["image_id"]] for r in records if r["label"] == "zebra"]
    cat = [per_record[r["image_id"]] for r in records if r["label"] == "cat"]
    assert len(zebra) == 2 and len(cat) == 3 and min(zebra) >= 2 and max(cat) == 1
    # Names follow today's rule per record: one picture -> <stem>.png, several -> <stem>_<k>.png.
    for record in records:
        stem = f"{record['category_id']}_{record['image_id']:04d}"
        expected = [f"{stem}.png"] if record["variants"] == 1 else [f"{stem}_{k}.png" for k in range(record["variants"])]
        assert [name for name in made if name.startswith(stem + "_") or name == stem + ".png"] == expected
    counted = sum(zebra)
    assert f"zebra {counted}/{counted}" in balanced_run["stage2"].stdout and "cat 3/3" in balanced_run["stage2"].stdout


def test_after_augmentation_ratio_moves_toward_one_as_planned(balanced_run):
    rows = plan_rows(balanced_run["out"])
    merged = json.loads((balanced_run["final"] / "train_augmented.json").read_text())
    boxes = {c["id"]: sum(1 for a in merged["annotations"] if a["category_id"] == c["id"]) for c in CATEGORIES}
    assert boxes[RARE] == rows["zebra"].expected_boxes_after and boxes[COMMON] == rows["cat"].expected_boxes_after
    before = rows["zebra"].boxes_in_file / rows["cat"].boxes_in_file
    after = boxes[RARE] / boxes[COMMON]
    assert before == pytest.approx(0.1) and 0.1 < after < 1
    # Stage 4's table: planned, generated, picked pictures, then boxes before and after.
    lines = balanced_run["stage4"].stdout.splitlines()
    header = lines[0].split()
    assert header[:8] == ["category", "id", "planned", "pictures", "generated", "pictures", "picked", "pictures"]
    zebra = next(line for line in lines if line.startswith("zebra")).split()
    planned = rows["zebra"].planned_pictures
    assert zebra[1:] == [str(RARE), str(planned), str(planned), str(planned), "2", str(2 + planned), str(2 + planned)]


def test_stage2_variants_flag_overrides_the_plan(balanced_run, tiny_models, tmp_path):
    out = balanced_run["out"]
    records = load_records(out / "blip2_post.json")
    one = tmp_path / "one.json"
    one.write_text(json.dumps([r for r in records if r["label"] == "zebra"][:1]))
    result = run("generate_image_gligen.py", "--mode", "generation", "-i", out.parent / "images", "-p", one, "-o", tmp_path / "g",
                 "--model", tiny_models / "gligen-generation", "--steps", "2", "--resolution", "64", "--device", "cpu",
                 "--variants", "1")
    assert result.returncode == 0, result.stderr
    stem = f"{RARE}_{json.loads(one.read_text())[0]['image_id']:04d}"
    assert sorted(p.name for p in (tmp_path / "g" / "generation").glob("*.png")) == [f"{stem}.png"]
