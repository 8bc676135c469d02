"""Step 5's report (cocoaug/finetune_report.py) on hand-made metrics: the files, the CSV values,
the plot, mean ± std over seeds, the rare third and the summary's last line."""

import csv
import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from cocoaug import finetune_report
from cocoaug.detection_eval import EvalResult

NAMES = {1: "person", 2: "car", 3: "dog", 4: "horse", 5: "zebra", 6: "giraffe", 7: "kite"}
# Kite is the rarest in training but has no validation box: its AP is NaN everywhere.
REAL_BOXES = {1: 500, 2: 300, 3: 200, 4: 50, 5: 10, 6: 5, 7: 1}
GENERATED_BOXES = {5: 40, 6: 45, 7: 20}
LAST_LINE = re.compile(r"^augmented vs (control|before): AP [+-]\d+\.\d \(rare third: [+-]\d+\.\d\)$")


def metrics(ap: float, per_class: dict[int, float]) -> dict:
    """A run's metrics.json as the script writes it (EvalResult.to_json)."""
    summary = {"AP": ap, "AP50": ap + 0.2, "AP75": ap - 0.05, "APs": math.nan, "APm": ap / 2, "APl": ap * 1.5}
    return EvalResult(summary, {**{c: 0.3 for c in (1, 2, 3, 4)}, **per_class, 7: math.nan}).to_json()


def three_seeds():
    before = metrics(0.18, {5: 0.05, 6: 0.01})
    control = [metrics(ap, {5: 0.10, 6: c6}) for ap, c6 in [(0.20, 0.02), (0.22, 0.04), (0.24, 0.06)]]
    augmented = [metrics(ap, {5: c5, 6: c6}) for ap, c5, c6 in [(0.25, 0.15, 0.10), (0.26, 0.17, 0.12), (0.30, 0.16, 0.08)]]
    return before, control, augmented


def build(before, control, augmented):
    return finetune_report.build_report(before, control, augmented, NAMES, REAL_BOXES, GENERATED_BOXES, {"seeds": [0, 1, 2]})


def test_report_files_and_csv_values(tmp_path):
    report = build(*three_seeds())
    finetune_report.write_report(tmp_path, report)
    assert json.loads((tmp_path / "report.json").read_text())["comparison"] == "augmented vs control"
    with open(tmp_path / "per_class_ap.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == finetune_report.CSV_COLUMNS
    # Ordered by real training boxes, rarest first.
    assert [row["category"] for row in rows] == ["kite", "giraffe", "zebra", "horse", "dog", "car", "person"]
    kite, giraffe, zebra = rows[:3]
    assert kite["ap_before"] == kite["ap_control"] == kite["ap_augmented"] == kite["delta"] == ""
    assert (giraffe["real_boxes"], giraffe["generated_boxes"], giraffe["ap_before"]) == ("5", "45", "1.00")
    # giraffe, AP points per seed: control 2, 4, 6; augmented 10, 12, 8; delta 8, 8, 2.
    assert (giraffe["ap_control"], giraffe["ap_control_std"]) == ("4.00", "2.00")
    assert (giraffe["ap_augmented"], giraffe["ap_augmented_std"]) == ("10.00", "2.00")
    assert (giraffe["delta"], giraffe["delta_std"]) == ("6.00", f"{math.sqrt(12):.2f}")
    assert zebra["delta"] == "6.00" and zebra["delta_std"] == "1.00"
    assert [row["rare_third"] for row in rows] == ["False", "True", "True", "False", "False", "False", "False"]


def test_mean_and_std_over_three_seeds():
    report = build(*three_seeds())
    ap = report["summary"]["AP"]
    assert ap["before"] == pytest.approx(18.0)
    assert (ap["control"], ap["control_std"]) == pytest.approx((22.0, 2.0))
    assert (ap["augmented"], ap["augmented_std"]) == pytest.approx((27.0, math.sqrt(7)), abs=1e-4)  # 25, 26, 30
    assert (ap["delta"], ap["delta_std"]) == pytest.approx((5.0, 1.0))  # 5, 4, 6
    assert report["summary"]["APs"]["augmented"] is None  # nothing to measure: null, not a number
    assert len(report["runs"]["control"]) == len(report["runs"]["augmented"]) == 3 and report["seeds"] == 3


def test_rare_third_is_the_measured_categories_with_fewest_real_boxes():
    report = build(*three_seeds())
    rare = report["rare_third"]
    # Six categories have validation boxes (kite has none): the two with fewest real boxes.
    assert rare["category_ids"] == [6, 5] and rare["categories"] == ["giraffe", "zebra"]
    # Per seed, mean of giraffe and zebra: control 6, 7, 8; augmented 12.5, 14.5, 12.0 -> delta 6.5, 7.5, 4.0.
    assert (rare["control"], rare["augmented"], rare["delta"]) == pytest.approx((7.0, 13.0, 6.0))
    assert rare["delta_std"] == pytest.approx(math.sqrt(3.25), abs=1e-4)
    # Nine measured categories: a third is three.
    names = {c: f"c{c}" for c in range(1, 10)}
    run = EvalResult({k: 0.1 for k in finetune_report.SUMMARY_KEYS}, {c: 0.1 for c in names}).to_json()
    real = {c: 100 - c for c in names}  # category 9 is the rarest
    report = finetune_report.build_report(run, [], [run], names, real, {}, {})
    assert report["rare_third"]["category_ids"] == [9, 8, 7]


def test_summary_ends_with_the_line_that_matters():
    lines = finetune_report.summary_lines(build(*three_seeds()))
    assert lines[-1] == "augmented vs control: AP +5.0 (rare third: +6.0)" and LAST_LINE.match(lines[-1])
    ap_line = next(line for line in lines if line.startswith("AP "))
    assert "22.0 ± 2.0" in ap_line and "27.0 ± 2.6" in ap_line and "+5.0 ± 1.0" in ap_line
    assert any("giraffe, zebra" in line for line in lines)


def test_without_control_the_summary_compares_with_before():
    before, _, augmented = three_seeds()
    report = finetune_report.build_report(before, [], augmented[:1], NAMES, REAL_BOXES, GENERATED_BOXES, {})
    lines = finetune_report.summary_lines(report)
    # One seed, no control: augmented 25 - before 18; rare third (10 + 15) / 2 - (1 + 5) / 2 = 9.5.
    assert lines[-1] == "augmented vs before: AP +7.0 (rare third: +9.5)" and LAST_LINE.match(lines[-1])
    assert not any("±" in line for line in lines)
    assert report["summary"]["AP"]["control"] is None and report["summary"]["AP"]["augmented_std"] is None


def test_a_loss_is_signed():
    before, control, augmented = three_seeds()
    lines = finetune_report.summary_lines(build(before, augmented, control))  # swapped: the pictures hurt
    assert lines[-1] == "augmented vs control: AP -5.0 (rare third: -6.0)"


def test_plot_is_a_valid_png(tmp_path):
    finetune_report.write_report(tmp_path, build(*three_seeds()))
    with Image.open(tmp_path / "per_class_ap.png") as image:
        image.verify()
    with Image.open(tmp_path / "per_class_ap.png") as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 300
        pixels = np.asarray(image.convert("RGB"))
    # Bars in the colours of control (blue) and augmented (orange), not an empty canvas.
    assert (np.abs(pixels.astype(int) - [0x4c, 0x78, 0xa8]).sum(axis=2) < 30).sum() > 200
    assert (np.abs(pixels.astype(int) - [0xf5, 0x85, 0x18]).sum(axis=2) < 30).sum() > 200


def test_control_and_augmented_seed_counts_must_match():
    before, control, augmented = three_seeds()
    with pytest.raises(ValueError, match="2 control run"):
        build(before, control[:2], augmented)
