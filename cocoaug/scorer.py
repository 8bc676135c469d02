"""The models of ``score_images.py``: an open-vocabulary detector (OWLv2 or Grounding DINO) and
CLIP, loaded with transformers' auto classes and run in batches, and the generator's safety checker.
What they measure is judged by ``cocoaug.quality``; ``benchmarks/bench_score.py`` runs the same
calls one box at a time."""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cocoaug.errors import UserError
from cocoaug.quality import Detection, padded_crop
from cocoaug.runtime import HUB_ID, check_hub_reachable, model_load_errors, resolve_device, resolve_dtype

DETECTOR_FAMILIES = {"owlv2": "owlv2", "owlvit": "owlv2", "grounding-dino": "grounding-dino"}
GROUNDING_DINO_TEXT_THRESHOLD = 0.25  # a token belongs to a detection's label above this (the model's own default)


def model_type(model: str) -> str:
    """The ``model_type`` of a local model folder's config.json, or the hub id itself."""
    config = Path(model) / "config.json"
    return json.loads(config.read_text()).get("model_type", "") if config.is_file() else model


def detector_family(detector: str) -> str | None:
    """``owlv2`` (OWLv2, OWL-ViT), ``grounding-dino`` or None, from the folder's config or the hub id."""
    name = model_type(detector).lower().replace("_", "-")
    return next((family for key, family in DETECTOR_FAMILIES.items() if key in name), None)


def owl_query(label: str) -> str:
    """OWLv2's text query for a label (the prompt its ensemble checkpoint was tuned with)."""
    return f"a photo of a {label}"


def grounding_text(labels: list[str]) -> str:
    """Grounding DINO's text: the labels lower-cased, each ending with a full stop, as it was trained."""
    return ". ".join(label.strip().lower() for label in labels) + "."


def grounding_label(text_label: str, labels: list[str], special_tokens) -> str | None:
    """The queried label a Grounding DINO detection names, or None when it names none or several."""
    words = " ".join(word for word in text_label.split() if word not in special_tokens)
    parts = {part.strip() for part in words.split(".") if part.strip()}
    named = [label for label in labels if label.strip().lower() in parts]
    return named[0] if len(named) == 1 else None


@dataclass
class Measured:
    """What the models say about one picture."""

    detections: list[Detection]
    detections_min_score: float  # every detection scoring above this is in ``detections``
    region_clips: list[float]
    caption_clip: float


class Scorer:
    """A detector and CLIP on one device; ``measure`` runs both on a batch of pictures."""

    def __init__(self, detector, detector_processor, family, clip, clip_processor, device, dtype, stored_min_score, max_detections):
        self.detector, self.detector_processor, self.family = detector, detector_processor, family
        self.clip, self.clip_processor = clip, clip_processor
        self.device, self.dtype = device, dtype
        self.stored_min_score, self.max_detections = stored_min_score, max_detections
        self.text_features = {}  # CLIP text -> its normalised embedding, reused across batches

    @classmethod
    def load(cls, detector: str, clip_model: str, device: str, dtype: str, stored_min_score: float, max_detections: int):
        """Load both models (hub ids or local folders); a detector that is not OWLv2 or Grounding DINO is a UserError."""
        from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor, CLIPModel

        device = resolve_device(device)
        if device.type == "cuda" and device.index is None:
            device = resolve_device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
        torch_dtype = resolve_dtype(dtype, device)
        with model_load_errors(detector):
            kind = AutoConfig.from_pretrained(detector).model_type
            family = DETECTOR_FAMILIES.get(kind.replace("_", "-"))
            if family is None:
                raise UserError(f"not a zero-shot object detector (model_type {kind!r}); --detector takes OWLv2 or Grounding DINO", detector)
            detector_model = AutoModelForZeroShotObjectDetection.from_pretrained(detector, dtype=torch_dtype).to(device).eval()
            detector_processor = AutoProcessor.from_pretrained(detector)
        with model_load_errors(clip_model):
            clip = CLIPModel.from_pretrained(clip_model, dtype=torch_dtype).to(device).eval()
            clip_processor = AutoProcessor.from_pretrained(clip_model)
        return cls(detector_model, detector_processor, family, clip, clip_processor, device, torch_dtype, stored_min_score, max_detections)

    def batch_key(self, width, height):
        """Pictures with equal keys may share a batch: any for OWLv2 (it pads each to a square of its own), one size
        for Grounding DINO (it pads a batch to its largest picture, which would change a picture's scores with its neighbours)."""
        return (width, height) if self.family == "grounding-dino" else None

    def measure(self, images, boxes_per_image, labels_per_image, captions) -> list[Measured]:
        """Detections, each box's region_clip and the caption_clip of a batch of pictures (PIL, RGB)."""
        detections = self.detect(images, labels_per_image)
        crops, texts = [], []
        for image, boxes, labels in zip(images, boxes_per_image, labels_per_image):
            crops += [image.crop(padded_crop(box, *image.size)) for box in boxes]
            texts += [f"a photo of a {label}" for label in labels]
        similarities = self.clip_similarities(crops + list(images), texts + list(captions))
        results, start = [], 0
        for (found, floor), boxes in zip(detections, boxes_per_image):
            results.append(Measured(found, floor, similarities[start:start + len(boxes)], 0.0))
            start += len(boxes)
        for result, similarity in zip(results, similarities[start:]):
            result.caption_clip = similarity
        return results

    def detect(self, images, labels_per_image) -> list[tuple[list[Detection], float]]:
        """Each picture's detections of its labels (normalised xyxy boxes, most confident first) and the score above which all are kept."""
        import torch

        unique_labels = [list(dict.fromkeys(labels)) for labels in labels_per_image]
        sizes = [(image.height, image.width) for image in images]
        if self.family == "owlv2":
            queries = [[owl_query(label) for label in labels] for labels in unique_labels]
            # OWLv2 reads 16 tokens: a longer query (a label of about 10 words) is cut (score_images.py says which).
            inputs = self.detector_processor(text=queries, images=images, return_tensors="pt", truncation=True,
                                             max_length=self.detector.config.text_config.max_position_embeddings)
            # The processor pads short query lists with " "; OWLv2 ignores a query whose first token id is 0.
            most = max(len(q) for q in queries)
            for i, q in enumerate(queries):
                inputs["input_ids"][i * most + len(q):(i + 1) * most] = 0
            inputs = self._to_device(inputs)
            with torch.no_grad():
                outputs = self.detector(**inputs)
            results = self.detector_processor.post_process_grounded_object_detection(
                outputs, threshold=self.stored_min_score, target_sizes=sizes, text_labels=unique_labels)
            named = [[labels[i] for i in result["labels"].tolist()] for result, labels in zip(results, unique_labels)]
        else:
            inputs = self.detector_processor(images=images, text=[grounding_text(labels) for labels in unique_labels],
                                             return_tensors="pt", padding=True)
            input_ids = inputs["input_ids"]
            with torch.no_grad():
                outputs = self.detector(**self._to_device(inputs))
            results = self.detector_processor.post_process_grounded_object_detection(
                outputs, input_ids, threshold=self.stored_min_score, text_threshold=GROUNDING_DINO_TEXT_THRESHOLD, target_sizes=sizes)
            special = set(self.detector_processor.tokenizer.all_special_tokens)
            named = [[grounding_label(text, labels, special) for text in result["text_labels"]]
                     for result, labels in zip(results, unique_labels)]
        return [self._detections(result, names, height, width) for result, names, (height, width) in zip(results, named, sizes)]

    def _detections(self, result, names, height, width) -> tuple[list[Detection], float]:
        scale = [width, height, width, height]
        found = []
        for name, score, box in zip(names, result["scores"].float().tolist(), result["boxes"].float().tolist()):
            if name is not None and score >= self.stored_min_score:
                found.append(Detection(name, tuple(min(1.0, max(0.0, v / s)) for v, s in zip(box, scale)), score))
        found.sort(key=lambda d: -d.score)
        if len(found) > self.max_detections:
            found = found[:self.max_detections]
            return found, found[-1].score
        return found, self.stored_min_score

    def clip_similarities(self, images, texts) -> list[float]:
        """The CLIP cosine similarity of each image (PIL) with the text at the same position."""
        import torch

        missing = [text for text in dict.fromkeys(texts) if text not in self.text_features]
        with torch.no_grad():
            if missing:
                tokens = self.clip_processor.tokenizer(missing, padding=True, truncation=True, return_tensors="pt")
                features = _pooled(self.clip.get_text_features(**self._to_device(tokens)))
                for text, feature in zip(missing, torch.nn.functional.normalize(features.float(), dim=-1)):
                    self.text_features[text] = feature
            pixels = self.clip_processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
            image_features = _pooled(self.clip.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
            image_features = torch.nn.functional.normalize(image_features.float(), dim=-1)
            text_features = torch.stack([self.text_features[text] for text in texts])
            return (image_features * text_features).sum(-1).cpu().tolist()

    def _to_device(self, inputs):
        return {key: value.to(self.device, self.dtype) if value.is_floating_point() else value.to(self.device) for key, value in inputs.items()}


def _pooled(output):
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor.
    return output if hasattr(output, "shape") else output.pooler_output


def safety_checker_of(model: str) -> str | None:
    """``model`` itself when it is a pipeline folder or hub repository with a ``safety_checker`` (as the
    GLIGEN repositories are), else None; a hub repository is asked through its model_index.json."""
    path = Path(model).expanduser()
    if path.is_dir():
        return model if (path / "safety_checker" / "config.json").is_file() else None
    if not HUB_ID.match(model):
        return None
    from diffusers import DiffusionPipeline

    try:
        check_hub_reachable(model)
        with model_load_errors(model):
            index = DiffusionPipeline.load_config(model)
    except UserError as exc:
        raise UserError(f"cannot look for the generator's safety checker ({exc.message}); pass --safety-checker ID_OR_FOLDER "
                        "or --no-safety-checker", model) from exc
    return model if (index.get("safety_checker") or [None])[-1] else None


class SafetyChecker:
    """Stable Diffusion's safety checker (``StableDiffusionSafetyChecker`` and its ``CLIPImageProcessor``), as
    diffusers' pipelines run it after decoding: ``flags(images)`` says which pictures it flags as NSFW.

    ``source`` is a pipeline folder or hub id with ``safety_checker/`` and ``feature_extractor/``, or a
    folder holding the checker's ``config.json`` and the processor's ``preprocessor_config.json`` itself.
    """

    def __init__(self, source: str, device, dtype):
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        path = Path(source).expanduser()
        pipeline_layout = not path.is_dir() or (path / "safety_checker").is_dir()
        with model_load_errors(source):
            self.checker = StableDiffusionSafetyChecker.from_pretrained(
                source, subfolder="safety_checker" if pipeline_layout else "", dtype=dtype).to(device).eval()
            self.feature_extractor = CLIPImageProcessor.from_pretrained(source, subfolder="feature_extractor" if pipeline_layout else "")
        self.device, self.dtype = device, dtype
        # Its warning speaks of the black pictures a pipeline returns; here a flagged picture fails with reason "nsfw".
        logging.getLogger("diffusers.pipelines.stable_diffusion.safety_checker").setLevel(logging.ERROR)

    def flags(self, images) -> list[bool]:
        """Whether each picture (PIL, RGB) is flagged."""
        import numpy as np

        clip_input = self.feature_extractor(images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        _, flagged = self.checker(clip_input=clip_input, images=[np.asarray(image) for image in images])
        return [bool(flag) for flag in flagged]
