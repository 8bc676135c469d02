"""Which training images step 5 draws each epoch: the curriculum, the sampler, and the plan file.

Three curricula (``--sampling``), each a weight per image; an epoch draws ``num_samples`` images
with replacement, each with probability proportional to its weight:

- ``natural``: every image weighs 1.
- ``repeat-factor`` (LVIS): for category c, ``f_c`` = fraction of the training images that contain
  c and ``r_c = max(1, sqrt(t / f_c))``; an image weighs the largest ``r_c`` of its categories
  (1 with no box). The same rule as stage 1's ``--balance repeat-factor`` (``balance.repeat_factor``).
- ``dcl``: the sampling scheduler of Dynamic Curriculum Learning (Wang et al., ICCV 2019).
  ``n_c`` = boxes of category c, ``D[c] = n_c / min n``; the target distribution at epoch l is
  ``D ** g(l)``, with g falling from 1 at the first epoch to 0 at the last (``dcl_g``). An image
  weighs ``max over its categories of D[c] ** g / n_c``, so that the boxes of c are drawn in
  proportion to ``D[c] ** g``: at g = 1 every image weighs ``1 / min n`` (the natural
  distribution, exactly), at g = 0 each category's boxes are drawn equally often (balanced; exact
  when each image holds one category, approximate otherwise, as LVIS' max rule is). An image with
  no box weighs as little as the lightest image with one.

``--generated-weight`` multiplies the weight of every generated picture. Category labels are any
ints (the script passes COCO category ids, so the plan file names them). The draw of an epoch is
fixed by (seed, epoch) and shared by all processes; each takes a disjoint part of it
(``DistributedWeightedSampler``). Nothing here imports torch.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cocoaug.atomic import write_csv_atomic
from cocoaug.balance import repeat_factor
from cocoaug.errors import UserError

CURRICULA = ("natural", "repeat-factor", "dcl")
DCL_SCHEDULES = ("convex", "linear", "concave", "composite")
CONCAVE_LAMBDA = 0.99
PLAN_FILE = "sampling_plan.csv"
PLAN_COLUMNS = ["epoch", "category_id", "category", "box_share", "expected_generated_images", "expected_real_images"]


def dcl_g(epoch: int, epochs: int, schedule: str) -> float:
    """DCL's g(l) for epoch ``l`` of ``epochs`` (l = 0 ... L, L = epochs - 1): 1 at the first epoch, 0 at the last.

    convex ``cos(l pi / 2L)``, linear ``1 - l / L``, concave ``0.99 ** l``, composite
    ``cos(l pi / L) / 2 + 1 / 2``. The paper's concave schedule never reaches 0: here it is
    ``0.99 ** l`` up to the second-to-last epoch and 0 at the last, so that every schedule ends
    balanced. A single epoch (L = 0) is the last epoch: g = 0, balanced.
    """
    if schedule not in DCL_SCHEDULES:
        raise ValueError(f"unknown DCL schedule {schedule!r}, expected one of {DCL_SCHEDULES}")
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch {epoch} outside 0..{epochs - 1}")
    last = epochs - 1
    if epoch == last:
        return 0.0
    if schedule == "convex":
        return math.cos(epoch * math.pi / (2 * last))
    if schedule == "linear":
        return 1 - epoch / last
    if schedule == "concave":
        return CONCAVE_LAMBDA**epoch
    return 0.5 * math.cos(epoch * math.pi / last) + 0.5


@dataclass(frozen=True)
class LabelTable:
    """The boxes' category labels of every image, flattened once for the per-epoch weights.

    ``box_image[k]`` is the image index of box k and ``box_class[k]`` the index of its label in
    ``classes`` (sorted labels); boxes are ordered by image.
    """

    n_images: int
    classes: np.ndarray
    box_image: np.ndarray
    box_class: np.ndarray
    boxes_per_class: np.ndarray
    images_per_class: np.ndarray

    @classmethod
    def from_lists(cls, image_labels: Sequence[Sequence[int]]) -> "LabelTable":
        """One list of box labels per image (an image with no box: an empty list)."""
        counts = np.fromiter((len(labels) for labels in image_labels), dtype=np.int64, count=len(image_labels))
        flat = np.fromiter((label for labels in image_labels for label in labels), dtype=np.int64, count=int(counts.sum()))
        box_image = np.repeat(np.arange(len(counts)), counts)
        classes, box_class = np.unique(flat, return_inverse=True)
        # Each (image, class) pair once: boxes are ordered by image, so sorting the pair codes groups them.
        pairs = np.sort(box_image * len(classes) + box_class)
        first = np.ones(len(pairs), dtype=bool)
        first[1:] = pairs[1:] != pairs[:-1]
        return cls(len(counts), classes, box_image, box_class.astype(np.int64),
                   np.bincount(box_class, minlength=len(classes)),
                   np.bincount(pairs[first] % max(len(classes), 1), minlength=len(classes)))


def label_table(image_labels) -> LabelTable:
    """``image_labels`` as a LabelTable (built once by the caller to save the work every epoch)."""
    return image_labels if isinstance(image_labels, LabelTable) else LabelTable.from_lists(image_labels)


def repeat_factors(image_labels, threshold: float) -> np.ndarray:
    """LVIS' repeat factor of every image: the largest ``r_c`` of its categories, 1 for an image with no box."""
    table = label_table(image_labels)
    class_factor = np.array([repeat_factor(int(images), table.n_images, threshold) for images in table.images_per_class])
    return _max_per_image(table, class_factor[table.box_class], default=1.0)


def image_weights(image_labels, is_generated, *, curriculum: str, epoch: int, epochs: int, schedule: str = "convex",
                  repeat_threshold: float = 0.001, generated_weight: float = 1.0) -> np.ndarray:
    """The sampling weight of every image at ``epoch`` (float64, not normalised); see the module docstring."""
    table = label_table(image_labels)
    is_generated = np.asarray(is_generated, dtype=bool)
    if is_generated.shape != (table.n_images,):
        raise ValueError(f"is_generated has {is_generated.size} entries for {table.n_images} images")
    if curriculum == "natural":
        weights = np.ones(table.n_images)
    elif curriculum == "repeat-factor":
        weights = repeat_factors(table, repeat_threshold)
    elif curriculum == "dcl":
        weights = dcl_weights(table, dcl_g(epoch, epochs, schedule))
    else:
        raise ValueError(f"unknown curriculum {curriculum!r}, expected one of {CURRICULA}")
    weights[is_generated] *= generated_weight
    if table.n_images and not weights.sum() > 0:
        raise UserError("every training image has sampling weight 0: with --generated-weight 0 the set needs real images",
                        f"--generated-weight {generated_weight}")
    return weights


def dcl_weights(table: LabelTable, g: float) -> np.ndarray:
    """DCL's weight of every image for a given g: max over its categories of ``D[c] ** g / n_c``."""
    if len(table.classes) == 0:
        return np.ones(table.n_images)
    counts = table.boxes_per_class.astype(np.float64)
    target = (counts / counts.min()) ** g
    weights = _max_per_image(table, (target / counts)[table.box_class], default=np.nan)
    weights[np.isnan(weights)] = np.nanmin(weights)
    return weights


def _max_per_image(table: LabelTable, box_values: np.ndarray, default: float) -> np.ndarray:
    """The largest of each image's box values; ``default`` for an image with no box."""
    result = np.full(table.n_images, default, dtype=np.float64)
    if len(box_values):
        starts = np.flatnonzero(np.r_[True, table.box_image[1:] != table.box_image[:-1]])
        result[table.box_image[starts]] = np.maximum.reduceat(box_values, starts)
    return result


def epoch_draw(weights: np.ndarray, num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's image indices: ``num_samples`` draws with replacement, probability proportional to ``weights``.

    Fixed by (seed, epoch) alone, so every process computes the same draw.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or not len(weights) or not np.all(np.isfinite(weights)) or weights.min() < 0 or not weights.sum() > 0:
        raise ValueError("sampling weights must be a non-empty 1-D array of finite non-negative numbers with a positive sum")
    return np.random.default_rng([seed, epoch]).choice(len(weights), size=num_samples, replace=True, p=weights / weights.sum())


class DistributedWeightedSampler:
    """A weighted sampler with replacement that shards one epoch-wide draw across processes.

    PyTorch's WeightedRandomSampler draws per process; here each epoch's draw (``epoch_draw``,
    ``num_samples`` indices in all, fixed by (seed, epoch)) is padded to a multiple of
    ``world_size`` by repeating its first indices, and process ``rank`` takes positions
    ``rank, rank + world_size, ...``. Call ``set_epoch`` before each epoch, as with
    DistributedSampler; ``skip`` leaves out the first indices of this process's share, to resume
    an epoch that was interrupted after that many samples. Usable as ``DataLoader(sampler=...)``:
    it iterates over ints and has a length.
    """

    def __init__(self, weights_for_epoch: Callable[[int], np.ndarray], num_samples: int, *, seed: int,
                 rank: int = 0, world_size: int = 1):
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.weights_for_epoch = weights_for_epoch
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.per_rank = -(-num_samples // world_size)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0):
        if not 0 <= skip <= self.per_rank:
            raise ValueError(f"skip {skip} outside 0..{self.per_rank}")
        self.epoch = epoch
        self.skip = skip

    def indices(self) -> np.ndarray:
        """This process's share of the current epoch's draw, less the skipped start."""
        draw = epoch_draw(self.weights_for_epoch(self.epoch), self.num_samples, self.seed, self.epoch)
        padded = np.resize(draw, self.per_rank * self.world_size)  # np.resize repeats the draw from its start
        return padded[self.rank::self.world_size][self.skip:]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.per_rank - self.skip


@dataclass(frozen=True)
class PlanRow:
    """One row of ``sampling_plan.csv``: expected values over one epoch's draw, per category."""

    epoch: int
    category_label: int
    box_share: float
    expected_generated_images: float
    expected_real_images: float


def sampling_plan(image_labels, is_generated, *, curriculum: str, epochs: int, epoch_size: int, schedule: str = "convex",
                  repeat_threshold: float = 0.001, generated_weight: float = 1.0) -> list[PlanRow]:
    """Per epoch and category, computed from the weights (no draw): the expected share of the drawn
    boxes, and the expected number of drawn generated and real images that contain the category.
    ``epoch_size`` is the number of images drawn per epoch (all processes together)."""
    table = label_table(image_labels)
    is_generated = np.asarray(is_generated, dtype=bool)
    # Each (image, class) pair once, for the image counts; every box, for the box counts.
    pairs = np.unique(table.box_image * len(table.classes) + table.box_class)
    pair_image, pair_class = np.divmod(pairs, max(len(table.classes), 1))
    rows = []
    for epoch in range(epochs):
        weights = image_weights(table, is_generated, curriculum=curriculum, epoch=epoch, epochs=epochs, schedule=schedule,
                                repeat_threshold=repeat_threshold, generated_weight=generated_weight)
        draws = epoch_size * weights / weights.sum()  # expected times each image is drawn
        boxes = np.bincount(table.box_class, weights=draws[table.box_image], minlength=len(table.classes))
        share = boxes / boxes.sum() if boxes.sum() > 0 else boxes
        generated = np.bincount(pair_class, weights=draws[pair_image] * is_generated[pair_image], minlength=len(table.classes))
        real = np.bincount(pair_class, weights=draws[pair_image] * ~is_generated[pair_image], minlength=len(table.classes))
        rows += [PlanRow(epoch, int(label), float(share[k]), float(generated[k]), float(real[k]))
                 for k, label in enumerate(table.classes)]
    return rows


def write_sampling_plan(path, rows: list[PlanRow], category_names: dict[int, str]):
    """Write ``sampling_plan.csv`` (``PLAN_COLUMNS``; ``category_id`` is the row's label) atomically."""
    write_csv_atomic(path, [{"epoch": row.epoch, "category_id": row.category_label,
                             "category": category_names.get(row.category_label, str(row.category_label)),
                             "box_share": f"{row.box_share:.6f}",
                             "expected_generated_images": f"{row.expected_generated_images:.2f}",
                             "expected_real_images": f"{row.expected_real_images:.2f}"} for row in rows], PLAN_COLUMNS)


def format_plan_table(rows: list[PlanRow], category_names: dict[int, str]) -> str:
    """The plan at the first, middle and last epoch: box share per category, and the images drawn
    (generated / real) at the last epoch; rarest category (at the first epoch) first."""
    epochs = sorted({row.epoch for row in rows})
    if not epochs:
        return "(no category to sample)"
    shown = sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]})
    by_key = {(row.epoch, row.category_label): row for row in rows}
    labels = sorted({row.category_label for row in rows}, key=lambda label: (by_key[epochs[0], label].box_share, label))
    names = {label: category_names.get(label, str(label)) for label in labels}
    width = max(len("category"), *(len(name) for name in names.values()))
    images_header = f"images, epoch {shown[-1]} (gen / real)"
    header = f"{'category':<{width}}" + "".join(f"{f'epoch {e}':>11}" for e in shown) + f"{images_header:>34}"
    lines = [f"box share per epoch; {len(labels)} categories", header]
    for label in labels:
        last = by_key[shown[-1], label]
        images = f"{last.expected_generated_images:.1f} / {last.expected_real_images:.1f}"
        shares = "".join(f"{by_key[e, label].box_share:>11.1%}" for e in shown)
        lines.append(f"{names[label]:<{width}}{shares}{images:>34}")
    return "\n".join(lines)
