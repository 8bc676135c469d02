"""torchvision detection models by builder name, and the checkpoints that start or resume them.

Models are built with ``weights=None, weights_backbone=None``: nothing is ever downloaded; the
starting weights come from ``--checkpoint``. A checkpoint is either the user's own state_dict
(``torch.save(model.state_dict(), path)``, or a dict holding it under ``"model"``) or one that
``finetune_detector.py`` wrote (``CHECKPOINT_FORMAT``: the weights, the category mapping, and
the state of an unfinished run). Every problem with a checkpoint is a UserError naming it.
"""

import ast
import logging

from cocoaug.errors import UserError, listed
from cocoaug.paths import require_file

log = logging.getLogger("cocoaug")
CHECKPOINT_FORMAT = "cocoaug-finetune-1"
DEFAULT_MODEL = "fasterrcnn_resnet50_fpn_v2"
# Keypoint R-CNN needs keypoint annotations, which a COCO detection file does not give.
UNSUPPORTED = {"keypointrcnn_resnet50_fpn": "it needs keypoint annotations"}
# The class-dependent layers of each family: --reset-head leaves them freshly initialised, and a
# class-count mismatch shows there first.
HEAD_PREFIXES = {
    "fasterrcnn": ("roi_heads.box_predictor.",),
    "maskrcnn": ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits."),
    "retinanet": ("head.classification_head.cls_logits.",),
    "fcos": ("head.classification_head.cls_logits.",),
    "ssd": ("head.classification_head.",),  # ssd300_vgg16 and ssdlite320_mobilenet_v3_large
}


def builder_names() -> list[str]:
    """The torchvision detection builders this project trains."""
    from torchvision.models import detection, list_models

    return [name for name in list_models(module=detection) if name not in UNSUPPORTED]


def head_prefixes(model_name: str) -> tuple[str, ...]:
    """The class-dependent layers of the builder's family."""
    return next(prefixes for family, prefixes in HEAD_PREFIXES.items() if model_name.startswith(family))


def parse_model_options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings as builder keyword arguments; VALUE is a Python literal when it reads as one
    (``64``, ``0.5``, ``True``, ``(32, 64)``), else a string."""
    options = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UserError("a model option is KEY=VALUE, KEY a keyword argument of the builder", f"--model-option {pair}")
        if key in ("weights", "weights_backbone", "num_classes"):
            raise UserError(f"{key} is set by this script (no download; classes from the dataset)", f"--model-option {pair}")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text
    return options


def build_model(name: str, num_classes: int, options: dict, min_size=None, max_size=None, frozen_batchnorm: bool = False):
    """A torchvision detection model with random weights, ``num_classes`` counting the background.

    ``frozen_batchnorm`` builds the backbone's trunk as torchvision builds its trained detectors: with
    FrozenBatchNorm2d, whose statistics and affine stay those of the starting checkpoint. Built with
    ``weights=None`` the trunk has plain BatchNorm, which batches of a few images would retrain.
    """
    from torchvision.models import get_model_builder

    if name in UNSUPPORTED:
        raise UserError(f"{name} is not supported: {UNSUPPORTED[name]}", f"--model {name}")
    if name not in builder_names():
        raise UserError(f"not a torchvision detection builder; use one of {', '.join(builder_names())}", f"--model {name}")
    kwargs = dict(options)
    if min_size is not None:
        kwargs["min_size"] = min_size
    if max_size is not None:
        kwargs["max_size"] = max_size
    try:
        model = get_model_builder(name)(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise UserError(f"{name} does not take these options: {exc}", "--model-option/--min-size/--max-size") from None
    except ValueError as exc:
        raise UserError(f"{name} refuses these options: {exc}", "--model-option/--min-size/--max-size") from None
    if frozen_batchnorm and hasattr(model.backbone, "body"):
        freeze_batchnorm(model.backbone.body)
    return model


def freeze_batchnorm(module):
    """Replace every BatchNorm2d under ``module`` with a FrozenBatchNorm2d of the same statistics and affine."""
    from torch import nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)


def read_checkpoint(path) -> dict:
    """A checkpoint as ``{"model": state_dict, "categories": mapping dict or None, ...}``; this script's
    checkpoints keep all their keys (``"format"`` is CHECKPOINT_FORMAT)."""
    import pickle
    import zipfile

    import torch

    path = require_file(path, "checkpoint")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, AttributeError,
            IndexError, UnicodeDecodeError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read the checkpoint ({first_line[:200]}): pass a file saved with "
                        "torch.save(model.state_dict(), PATH) or one this script wrote", path) from None
    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        return data
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]  # torchvision's reference scripts and many others keep the state_dict under "model"
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError("the checkpoint is not a state_dict (a dict of tensors), nor a checkpoint this script wrote", path)
    return {"model": data, "categories": None}


def load_weights(model, model_name: str, checkpoint: dict, source, mapping, reset_head: bool) -> str:
    """Load a checkpoint's weights into ``model`` (built for ``mapping``); returns what was done, for the log.

    The class-dependent head is loaded only when the checkpoint was trained on the same categories;
    ``reset_head`` keeps the model's fresh head instead. A checkpoint of another architecture is an error.
    """
    state = checkpoint["model"]
    own = model.state_dict()
    heads = head_prefixes(model_name)
    in_head = [key for key in own if key.startswith(heads)]
    # BatchNorm's step counter is kept by plain BatchNorm only: a checkpoint with or without it fits.
    missing = [key for key in own if key not in state and key not in in_head and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in own and not key.endswith("num_batches_tracked")]
    misfit = [key for key in own if key in state and key not in in_head and state[key].shape != own[key].shape]
    if missing or unexpected or misfit:
        problems = [f"{len(keys)} {what} ({listed(keys, 3)})" for what, keys in
                    (("missing", missing), ("unexpected", unexpected), ("of another shape", misfit)) if keys]
        raise UserError(f"the checkpoint does not fit --model {model_name}: weights {'; '.join(problems)}", source)
    if reset_head:
        loaded = {key: value for key, value in state.items() if key not in in_head}
        model.load_state_dict(loaded, strict=False)
        return f"loaded {len(loaded)} tensors; the class head ({', '.join(heads)}) starts afresh (--reset-head)"
    checkpoint_classes = classes_in_checkpoint(state, own, in_head, mapping.num_classes)
    if checkpoint_classes != mapping.num_classes:
        raise UserError(f"the checkpoint's head predicts {checkpoint_classes - 1} categories but the dataset has "
                        f"{mapping.num_classes - 1}: pass --reset-head to train a new head", source)
    saved = checkpoint.get("categories")
    if saved is not None and list(saved["category_ids"]) != list(mapping.category_ids):
        raise UserError(f"the checkpoint was trained on category ids {listed(saved['category_ids'])}, the dataset has "
                        f"{listed(mapping.category_ids)}: pass --reset-head to train a new head", source)
    if any(key not in state for key in in_head):
        raise UserError(f"the checkpoint lacks the class head of --model {model_name} ({listed([k for k in in_head if k not in state], 3)})"
                        ": pass --reset-head to train a new one", source)
    model.load_state_dict(state)
    return f"loaded {len(state)} tensors with the class head"


def classes_in_checkpoint(state: dict, own: dict, in_head: list, model_classes: int) -> int:
    """The number of classes (background included) the checkpoint's head predicts: the head's first
    weight has a row count proportional to the classes (per anchor for RetinaNet, FCOS and SSD)."""
    for key in in_head:
        if key.endswith("weight") and key in state:
            return state[key].shape[0] * model_classes // own[key].shape[0]
    return model_classes


def predict_detections(model, dataset, mapping, device, batch_size: int, num_workers: int) -> list[dict]:
    """The model's detections on every sample of a DetectionDataset, as COCO results (``bbox`` xywh pixels)."""
    import torch
    from tqdm import tqdm

    from cocoaug.detection_data import collate

    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    detections = []
    with torch.inference_mode():
        for images, targets in tqdm(loader, desc="evaluate", unit="batch", leave=False):
            for output, target in zip(model([image.to(device) for image in images]), targets):
                boxes = output["boxes"].float().cpu()
                boxes[:, 2:] -= boxes[:, :2]
                for box, label, score in zip(boxes.tolist(), output["labels"].tolist(), output["scores"].tolist()):
                    detections.append({"image_id": target["image_id"], "category_id": mapping.category_of(label),
                                       "bbox": box, "score": score})
    return detections


def unwrapped(model):
    """The model inside DistributedDataParallel, or the model itself."""
    return getattr(model, "module", model)
