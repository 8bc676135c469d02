"""cocoaug.quality: exact results on hand-made boxes and detections."""

import numpy as np
import pytest

from cocoaug.quality import Detection, Thresholds, box_iou, judge, match_boxes, padded_crop, percentiles


def test_box_iou_of_hand_made_boxes():
    a = [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]]
    b = [[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]]
    expected = [[0.0625 / (0.25 + 0.25 - 0.0625), 1.0, 0.0],
                [0.25, 0.25, 0.09]]
    assert box_iou(a, b) == pytest.approx(np.array(expected))
    assert box_iou(a, []).shape == (2, 0)
    assert box_iou([[0.2, 0.2, 0.2, 0.4]], [[0.2, 0.2, 0.2, 0.4]])[0, 0] == 0.0  # degenerate boxes: no overlap, no NaN


def test_one_detection_matches_one_box_greedily_by_score():
    boxes = [[0.0, 0.0, 0.4, 0.4], [0.05, 0.0, 0.45, 0.4]]  # two overlapping dogs
    detections = [Detection("dog", (0.0, 0.0, 0.4, 0.4), 0.3),
                   Detection("dog", (0.04, 0.0, 0.44, 0.4), 0.9)]  # the best detection fits box 1 best
    matches, extra = match_boxes(boxes, ["dog", "dog"], detections, min_iou=0.5, min_score=0.1)
    assert [m.found for m in matches] == [True, True]
    assert matches[1].detector_score == 0.9 and matches[1].best_iou == pytest.approx(0.156 / (0.32 - 0.156))
    assert matches[0].detector_score == 0.3 and matches[0].best_iou == 1.0
    assert extra == 0

    # With one detection, only one box is found, even though it overlaps both by more than 0.5.
    matches, extra = match_boxes(boxes, ["dog", "dog"], detections[1:], min_iou=0.5, min_score=0.1)
    assert [m.found for m in matches] == [False, True]
    assert matches[0].detector_score == 0.9  # box 0's closest detection, taken by box 1
    assert extra == 0


def test_label_iou_and_score_thresholds_decide_found():
    boxes = [[0.1, 0.1, 0.5, 0.5]]
    cat_there = Detection("cat", (0.1, 0.1, 0.5, 0.5), 0.9)
    assert not match_boxes(boxes, ["dog"], [cat_there], 0.5, 0.1)[0][0].found
    assert match_boxes(boxes, ["dog"], [cat_there], 0.5, 0.1)[0][0].best_iou == 0.0
    weak = Detection("dog", (0.1, 0.1, 0.5, 0.5), 0.05)
    (match,), _ = match_boxes(boxes, ["dog"], [weak], 0.5, 0.1)
    assert (match.found, match.best_iou, match.detector_score) == (False, 1.0, 0.05)
    assert match_boxes(boxes, ["dog"], [weak], 0.5, 0.05)[0][0].found  # score >= threshold counts
    shifted = Detection("dog", (0.3, 0.1, 0.7, 0.5), 0.9)  # IoU 1/3
    assert not match_boxes(boxes, ["dog"], [shifted], 0.5, 0.1)[0][0].found
    assert match_boxes(boxes, ["dog"], [shifted], 1 / 3, 0.1)[0][0].found


def test_extra_objects_are_unboxed_confident_detections_counted_once():
    boxes = [[0.0, 0.0, 0.3, 0.3]]
    detections = [
        Detection("dog", (0.0, 0.0, 0.3, 0.3), 0.9),     # the boxed dog
        Detection("dog", (0.01, 0.0, 0.3, 0.3), 0.8),    # a second detection of it: not extra
        Detection("dog", (0.6, 0.6, 0.9, 0.9), 0.7),     # an unboxed dog
        Detection("dog", (0.61, 0.6, 0.9, 0.9), 0.6),    # the same unboxed dog again: counted once
        Detection("dog", (0.6, 0.0, 0.9, 0.3), 0.05),    # not confident
        Detection("cat", (0.0, 0.6, 0.3, 0.9), 0.9),     # a label the record does not have
    ]
    matches, extra = match_boxes(boxes, ["dog"], detections, 0.5, 0.1)
    assert matches[0].found and extra == 1
    assert match_boxes(boxes, ["dog"], detections, 0.5, 0.01)[1] == 2


@pytest.mark.parametrize("box, size, expected", [
    ([0.25, 0.25, 0.75, 0.75], (100, 200), (20, 40, 80, 160)),      # 10% of 50 x 100 on each side
    ([0.0, 0.0, 0.5, 0.5], (100, 100), (0, 0, 55, 55)),             # past the top-left edge: clipped
    ([0.9, 0.8, 1.0, 1.0], (100, 100), (89, 78, 100, 100)),         # past the bottom-right edge: clipped
    ([0.101, 0.0, 0.2, 1.0], (100, 10), (9, 0, 21, 10)),            # fractional pixels round outwards
    ([0.999, 0.999, 1.0, 1.0], (10, 10), (9, 9, 10, 10)),           # at least one pixel
])
def test_padded_crop_grows_boxes_and_clips_them_to_the_picture(box, size, expected):
    assert padded_crop(box, *size) == expected


def test_percentiles_rank_each_value_among_its_category():
    assert percentiles([0.3, 0.1, 0.2, 0.4]).tolist() == [0.75, 0.25, 0.5, 1.0]
    assert percentiles([0.2, 0.2, 0.1]).tolist() == [1.0, 1.0, pytest.approx(1 / 3)]
    assert percentiles([0.5]).tolist() == [1.0]
    assert percentiles([]).size == 0


def test_pass_rule_names_every_failed_rule():
    boxes = [[0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]]
    labels = ["dog", "cat"]
    found_both = [Detection("dog", (0.0, 0.0, 0.4, 0.4), 0.5), Detection("cat", (0.5, 0.5, 0.9, 0.9), 0.5)]
    verdict = judge(boxes, labels, found_both, [0.25, 0.30], Thresholds())
    assert verdict["passed"] and verdict["reasons"] == [] and verdict["box_recall"] == 1.0
    assert verdict["min_region_clip"] == 0.25 and verdict["extra_objects"] == 0

    extra_dog = found_both + [Detection("dog", (0.5, 0.0, 0.9, 0.4), 0.5)]
    verdict = judge(boxes, labels, extra_dog[:1] + extra_dog[2:], [0.20, 0.30], Thresholds())
    assert not verdict["passed"]
    assert verdict["box_recall"] == 0.5
    assert verdict["reasons"] == ["box 1 (cat) not found", "box 0 (dog) region_clip 0.200 < 0.21", "1 extra object(s) > 0"]
    assert [b["found"] for b in verdict["boxes"]] == [True, False]

    lenient = Thresholds(min_region_clip=0.2, max_extra_objects=1)
    assert judge(boxes, labels, extra_dog, [0.20, 0.30], lenient)["passed"]

    # The safety checker's flag fails an otherwise perfect picture, and comes first.
    flagged = judge(boxes, labels, found_both, [0.25, 0.30], Thresholds(), nsfw=True)
    assert not flagged["passed"] and flagged["reasons"] == ["nsfw"] and flagged["box_recall"] == 1.0
    assert judge(boxes, labels, found_both, [0.20, 0.30], Thresholds(), nsfw=True)["reasons"] == ["nsfw", "box 0 (dog) region_clip 0.200 < 0.21"]
