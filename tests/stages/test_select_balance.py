"""Class balance in stage 1 (generate_prompt_blip2.py --balance, --select-only): the plan shown and
written, target top-ups and shortfalls, determinism, --pass-rates, bad values, records with a bad
variants field."""

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest

from cocoaug.errors import UserError
from cocoaug.records import MAX_VARIANTS, load_records
from cocoaug.scores import SUMMARY_COLUMNS, write_summary
from tests.helpers.scripts import run_here
from tests.helpers.skewed_set import plan_rows, write_skewed_set


def select_only(folder: Path, annotations: Path, out: Path, *flags) -> subprocess.CompletedProcess:
    return run_here("generate_prompt_blip2.py", "-i", folder / "images", "-a", annotations, "-o", out,
                      "--select-only", "--overwrite", *flags)


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
    for bad, rule in ((-1, "an integer >= 0"), (1.5, "an integer"), (True, "an integer"), ("2", "an integer"),
                      (MAX_VARIANTS + 1, f"an integer <= {MAX_VARIANTS}")):
        records = json.loads(selection.read_text())
        records[0]["variants"] = bad
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(records))
        with pytest.raises(UserError) as info:
            load_records(path, require_text=False)
        assert info.value.message == f"record 0 (image_id {records[0]['image_id']}): variants must be {rule}, got {bad!r}"
