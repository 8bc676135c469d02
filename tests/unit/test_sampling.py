"""Step 5's curricula and sampler (cocoaug/sampling.py): the formulas on hand-made sets, the draws
against the distributions they should follow, the sharding across processes, and the plan file."""

import csv
import math
import subprocess
import sys

import numpy as np
import pytest

from cocoaug import sampling
from cocoaug.errors import UserError
from cocoaug.sampling import DistributedWeightedSampler, LabelTable

# One category per image, one box each: 600 cats, 150 dogs, 30 zebras.
SKEWED = {1: 600, 2: 150, 3: 30}


def skewed_labels():
    return [[label] for label, images in SKEWED.items() for _ in range(images)]


def drawn_shares(labels, weights_for_epoch, epoch, draws=30_000, seed=0):
    """The share of each label among ``draws`` images drawn by the sampler at ``epoch``."""
    sampler = DistributedWeightedSampler(weights_for_epoch, draws, seed=seed)
    sampler.set_epoch(epoch)
    drawn = np.array([labels[index][0] for index in sampler])
    return {label: float(np.mean(drawn == label)) for label in SKEWED}, draws


def assert_within_sampling_error(shares, expected, draws):
    for label, p in expected.items():
        tolerance = 4 * math.sqrt(p * (1 - p) / draws)  # four binomial standard deviations
        assert abs(shares[label] - p) < tolerance, (label, shares[label], p, tolerance)


def test_dcl_starts_natural_and_ends_balanced():
    labels = skewed_labels()
    generated = np.zeros(len(labels), dtype=bool)
    epochs = 6

    def weights(epoch):
        return sampling.image_weights(labels, generated, curriculum="dcl", epoch=epoch, epochs=epochs)

    total = sum(SKEWED.values())
    shares, draws = drawn_shares(labels, weights, epoch=0)
    assert_within_sampling_error(shares, {label: n / total for label, n in SKEWED.items()}, draws)
    shares, draws = drawn_shares(labels, weights, epoch=epochs - 1)
    assert_within_sampling_error(shares, {label: 1 / 3 for label in SKEWED}, draws)
    # In between, the rare category's share grows epoch by epoch.
    middle, _ = drawn_shares(labels, weights, epoch=2)
    assert 30 / total + 0.02 < middle[3] < 1 / 3 - 0.02


def test_dcl_first_epoch_weights_are_exactly_natural():
    labels = [[1, 1, 2], [1], [], [3, 1], [2]] * 3
    weights = sampling.image_weights(labels, np.zeros(15, bool), curriculum="dcl", epoch=0, epochs=4)
    assert np.allclose(weights, weights[0]) and weights[0] > 0


@pytest.mark.parametrize("schedule, epoch, expected", [
    ("convex", 2, math.cos(math.pi / 4)),  # cos(l pi / 2L), L = 4
    ("convex", 1, math.cos(math.pi / 8)),
    ("linear", 1, 0.75),
    ("linear", 3, 0.25),
    ("concave", 1, 0.99),
    ("concave", 3, 0.99**3),
    ("composite", 1, 0.5 * math.cos(math.pi / 4) + 0.5),
    ("composite", 2, 0.5),
])
def test_dcl_schedules_at_known_epochs(schedule, epoch, expected):
    assert sampling.dcl_g(epoch, 5, schedule) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("schedule", sampling.DCL_SCHEDULES)
def test_every_schedule_falls_from_one_to_zero(schedule):
    g = [sampling.dcl_g(epoch, 12, schedule) for epoch in range(12)]
    assert g[0] == 1.0 and g[-1] == 0.0 and all(a >= b for a, b in zip(g, g[1:]))
    assert sampling.dcl_g(0, 1, schedule) == 0.0  # a single epoch is the last: balanced


def test_repeat_factor_is_the_lvis_formula():
    # 10 images, t = 0.5: f_1 = 0.8 -> 1; f_2 = 0.2 -> sqrt(0.5 / 0.2) = 1.5811; f_3 = 0.1 -> sqrt(5) = 2.2361.
    labels = [[1, 1]] * 6 + [[1, 3], [2], [2, 1], []]
    factors = sampling.repeat_factors(labels, threshold=0.5)
    assert factors == pytest.approx([1] * 6 + [2.2360680, 1.5811388, 1.5811388, 1])
    # The weights of the curriculum are those factors, generated pictures multiplied by --generated-weight.
    generated = np.array([False] * 9 + [True])
    weights = sampling.image_weights(labels, generated, curriculum="repeat-factor", epoch=0, epochs=1,
                                     repeat_threshold=0.5, generated_weight=0.5)
    assert weights == pytest.approx([1] * 6 + [2.2360680, 1.5811388, 1.5811388, 0.5])


def test_label_table_counts_boxes_and_images():
    table = LabelTable.from_lists([[7, 7, 3], [], [3], [90]])
    assert table.classes.tolist() == [3, 7, 90]
    assert table.boxes_per_class.tolist() == [2, 2, 1] and table.images_per_class.tolist() == [2, 1, 1]


def test_draws_are_deterministic_and_differ_across_epochs():
    weights = np.linspace(1, 5, 50)

    def draw(seed, epoch):
        sampler = DistributedWeightedSampler(lambda _: weights, 200, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draw(3, 1) == draw(3, 1)
    assert draw(3, 1) != draw(3, 2) and draw(3, 1) != draw(4, 1)
    assert all(isinstance(index, int) for index in draw(3, 1))


@pytest.mark.parametrize("world_size, num_samples", [(2, 101), (3, 100), (4, 8)])
def test_ranks_share_one_epoch_draw(world_size, num_samples):
    weights = np.arange(1, 40, dtype=float)
    samplers = [DistributedWeightedSampler(lambda _: weights, num_samples, seed=9, rank=rank, world_size=world_size)
                for rank in range(world_size)]
    for sampler in samplers:
        sampler.set_epoch(5)
    shares = [list(sampler) for sampler in samplers]
    assert all(len(share) == len(sampler) == math.ceil(num_samples / world_size) for share, sampler in zip(shares, samplers))
    # Position k of the epoch's draw goes to rank k % world_size: interleaving the shares gives the draw back.
    interleaved = [shares[k % world_size][k // world_size] for k in range(len(shares[0]) * world_size)]
    draw = sampling.epoch_draw(weights, num_samples, seed=9, epoch=5).tolist()
    assert interleaved[:num_samples] == draw
    assert interleaved[num_samples:] == draw[:len(interleaved) - num_samples]  # the padding repeats the draw's start


def test_skip_resumes_an_interrupted_epoch():
    sampler = DistributedWeightedSampler(lambda _: np.ones(30), 50, seed=2, rank=1, world_size=2)
    sampler.set_epoch(3)
    whole = list(sampler)
    sampler.set_epoch(3, skip=10)
    assert list(sampler) == whole[10:] and len(sampler) == 15
    sampler.set_epoch(4)
    assert len(sampler) == 25 and list(sampler) != whole


def test_generated_weight_changes_the_generated_share_as_predicted():
    labels = [[1]] * 100
    generated = np.array([True] * 30 + [False] * 70)
    for generated_weight in (1.0, 3.0, 0.2):
        weights = sampling.image_weights(labels, generated, curriculum="natural", epoch=0, epochs=1,
                                         generated_weight=generated_weight)
        expected = 30 * generated_weight / (30 * generated_weight + 70)
        assert weights[generated].sum() / weights.sum() == pytest.approx(expected)
        drawn = np.array(list(DistributedWeightedSampler(lambda _: weights, 20_000, seed=1)))
        share = np.mean(generated[drawn])
        assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / 20_000)


def test_generated_weight_zero_without_real_images_is_a_user_error():
    with pytest.raises(UserError, match="--generated-weight"):
        sampling.image_weights([[1], [2]], [True, True], curriculum="natural", epoch=0, epochs=1, generated_weight=0)


def test_sampling_plan_gives_the_dcl_shares_of_the_formula(tmp_path):
    # One category per image, several boxes per image: (label, images, boxes per image, generated images among them).
    layout = [(1, 40, 2, 0), (2, 10, 1, 6), (5, 5, 3, 2)]
    labels, generated = [], []
    for label, images, boxes, n_generated in layout:
        labels += [[label] * boxes] * images
        generated += [True] * n_generated + [False] * (images - n_generated)
    labels.append([])  # a negative: weighs as the lightest image
    generated.append(False)
    epochs, epoch_size = 5, 200
    rows = sampling.sampling_plan(labels, generated, curriculum="dcl", epochs=epochs, epoch_size=epoch_size, schedule="linear")
    assert len(rows) == epochs * 3
    boxes = {label: images * per_image for label, images, per_image, _ in layout}
    for epoch in range(epochs):
        g = 1 - epoch / (epochs - 1)
        # The boxes of c are drawn in proportion to n_c ** g; an image of c weighs n_c ** g / n_c.
        share = {label: n**g / sum(m**g for m in boxes.values()) for label, n in boxes.items()}
        image_weight = {label: n**g / n for label, n in boxes.items()}
        total = sum(image_weight[label] * images for label, images, _, _ in layout) + min(image_weight.values())
        for row in (row for row in rows if row.epoch == epoch):
            label, images, _, n_generated = next(item for item in layout if item[0] == row.category_label)
            assert row.box_share == pytest.approx(share[label], abs=1e-9)
            assert row.expected_generated_images == pytest.approx(epoch_size * n_generated * image_weight[label] / total)
            assert row.expected_real_images == pytest.approx(epoch_size * (images - n_generated) * image_weight[label] / total)
    # Last epoch: balanced.
    assert [row.box_share for row in rows if row.epoch == epochs - 1] == pytest.approx([1 / 3] * 3)

    path = tmp_path / sampling.PLAN_FILE
    names = {1: "cat", 2: "zebra", 5: "kite"}
    sampling.write_sampling_plan(path, rows, names)
    with open(path, newline="") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == sampling.PLAN_COLUMNS and len(written) == len(rows)
    assert written[-1]["epoch"] == "4" and written[-1]["category"] == "kite" and written[-1]["category_id"] == "5"
    assert float(written[-1]["box_share"]) == pytest.approx(1 / 3, abs=1e-6)
    table = sampling.format_plan_table(rows, names).splitlines()
    assert "epoch 0" in table[1] and "epoch 2" in table[1] and "epoch 4" in table[1]
    assert table[2].startswith("zebra") and table[-1].startswith("cat")  # rarest first
    assert "33.3%" in table[2]


def test_natural_plan_draws_each_image_equally():
    rows = sampling.sampling_plan([[1], [1], [2], [1, 2]], [False, False, True, True], curriculum="natural", epochs=2,
                                  epoch_size=8, schedule="convex")
    by_label = {row.category_label: row for row in rows if row.epoch == 1}
    assert by_label[1].box_share == pytest.approx(3 / 5)
    assert (by_label[1].expected_generated_images, by_label[1].expected_real_images) == pytest.approx((2, 4))
    assert (by_label[2].expected_generated_images, by_label[2].expected_real_images) == pytest.approx((4, 0))


def test_sampler_works_as_a_dataloader_sampler():
    import torch.utils.data

    data = list(range(10))
    sampler = DistributedWeightedSampler(lambda _: np.array([0.0] * 9 + [1.0]), 6, seed=0, rank=1, world_size=2)
    batches = list(torch.utils.data.DataLoader(data, sampler=sampler, batch_size=2))
    assert [batch.tolist() for batch in batches] == [[9, 9], [9]]


def test_module_does_not_import_torch():
    code = "import sys, cocoaug.sampling; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
