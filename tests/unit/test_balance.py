"""Class balance (cocoaug/balance.py): the formulas on hand-made counts and the plan file. Stage 1's
--balance is tested in tests/stages/test_select_balance.py, a skewed set through stages 1-4 in
tests/e2e/test_balanced_pipeline.py."""

import math

import numpy as np
import pytest

from cocoaug import balance
from cocoaug.balance import BalanceSettings, FileCounts
from cocoaug.errors import UserError


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
