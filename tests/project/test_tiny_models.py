"""scripts/make_tiny_models.py: the tiny models load with the real classes, run, and are reproducible."""

import json
import logging
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.scripts import run_here, script_module

SCRIPT = "scripts/make_tiny_models.py"


def test_blip2_captions_a_batch_like_the_hub_checkpoint(tiny_models):
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    folder = tiny_models / "blip2"
    processor = Blip2Processor.from_pretrained(folder)
    model = Blip2ForConditionalGeneration.from_pretrained(folder).eval()
    # The image token as transformers expects it: in the tokenizer and known to the model.
    assert model.config.image_token_index == processor.tokenizer.convert_tokens_to_ids("<image>")
    assert processor.tokenizer.padding_side == "left"
    # Salesforce/blip2-opt-2.7b's structure: 32 query tokens, <image> = 50265, 50304 embedding rows, stop at "\n" (50118).
    assert model.config.num_query_tokens == processor.num_query_tokens == 32
    assert model.config.image_token_index == 50265 and len(processor.tokenizer) == 50266
    assert model.config.text_config.vocab_size == 50304 and model.language_model.get_input_embeddings().num_embeddings == 50304
    assert model.generation_config.eos_token_id == 50118 and processor.tokenizer.decode([50118]) == "\n"
    assert [processor.tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (64, 64), (10, 120, 240))]
    inputs = processor(images=images, text=["a photo of", "a photo of"], return_tensors="pt", padding=True)
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    new_tokens = out[:, inputs["input_ids"].shape[1]:]
    captions = processor.batch_decode(new_tokens, skip_special_tokens=True)
    assert len(captions) == 2
    assert all(caption.strip() for caption in captions), captions


def test_the_tokenizers_are_real_byte_level_bpe(tiny_models):
    from transformers import AutoTokenizer, CLIPTokenizer

    opt = AutoTokenizer.from_pretrained(tiny_models / "blip2")
    text = "a puffin on a rock, déjà vu!"
    assert opt.decode(opt(text)["input_ids"], skip_special_tokens=True) == text  # any text round-trips
    assert len(opt("a puffin")["input_ids"]) < len("a puffin")  # learned merges, not one id per byte

    clip = CLIPTokenizer.from_pretrained(tiny_models / "gligen-generation" / "tokenizer")
    assert clip.model_max_length == 77
    assert (len(clip), clip.bos_token_id, clip.eos_token_id, clip.pad_token_id) == (49408, 49406, 49407, 49407)  # openai CLIP's ids
    ids = clip("a cat sitting on a couch", padding="max_length", max_length=77)["input_ids"]
    assert len(ids) == 77 and ids[0] == clip.bos_token_id
    assert clip.decode(ids, skip_special_tokens=True).strip() == "a cat sitting on a couch"


@pytest.mark.parametrize("mode, in_channels", [("generation", 4), ("inpainting", 9)])
def test_gligen_folders_have_the_hub_layout_and_run(tiny_models, mode, in_channels):
    from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel
    from diffusers.schedulers import PNDMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = tiny_models / f"gligen-{mode}"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionGLIGENPipeline"
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(index)

    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    scheduler = PNDMScheduler.from_pretrained(folder / "scheduler")
    assert isinstance(scheduler, SchedulerMixin) and scheduler.config.beta_schedule == "scaled_linear"
    assert unet.config.attention_type == "gated" and unet.config.in_channels == in_channels
    assert text_encoder.config.hidden_size == unet.config.cross_attention_dim
    # SD-1.4's layout: the VAE's factor 8 and three downsamplings in the UNet.
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8
    assert sum(block.downsamplers is not None for block in unet.down_blocks) == 3
    assert text_encoder.config.eos_token_id == 2  # the hub config's legacy id: transformers pools at the highest token id
    assert scheduler.config.skip_prk_steps and scheduler.config.steps_offset == 1
    assert index["safety_checker"] == ["stable_diffusion", "StableDiffusionSafetyChecker"]

    with torch.no_grad():
        tokens = tokenizer(["a kite in the sky", "kite"], padding="max_length", max_length=77, return_tensors="pt")
        encoded = text_encoder(tokens["input_ids"])
        prompt_embeds = encoded.last_hidden_state[:1]
        phrase_embeds = encoded.pooler_output[1:]  # GLIGEN grounds each box with its phrase's pooled embedding
        boxes = torch.zeros(1, 30, 4)
        boxes[0, 0] = torch.tensor([0.1, 0.2, 0.6, 0.9])
        embeddings = torch.zeros(1, 30, unet.config.cross_attention_dim)
        embeddings[0, 0] = phrase_embeds[0]
        masks = torch.zeros(1, 30)
        masks[0, 0] = 1
        latent_size = unet.config.sample_size
        sample = torch.randn(1, in_channels, latent_size, latent_size, generator=torch.Generator().manual_seed(0))
        gligen = {"gligen": {"boxes": boxes, "positive_embeddings": embeddings, "masks": masks}}
        noise_pred = unet(sample, 10, encoder_hidden_states=prompt_embeds, cross_attention_kwargs=gligen).sample
        assert noise_pred.shape == (1, 4, latent_size, latent_size)
        assert torch.isfinite(noise_pred).all()
        picture = vae.decode(noise_pred / vae.config.scaling_factor).sample
        assert picture.shape == (1, 3, 8 * latent_size, 8 * latent_size)
        # An odd latent size (a 56x40 picture: 7x5 latents) takes the UNet's resize path and keeps its size.
        odd = torch.randn(1, in_channels, 5, 7, generator=torch.Generator().manual_seed(0))
        assert unet(odd, 10, encoder_hidden_states=prompt_embeds, cross_attention_kwargs=gligen).sample.shape == (1, 4, 5, 7)


@pytest.mark.parametrize("folder, flagged", [("gligen-generation/safety_checker", False), ("safety-checker-flags-all", True)])
def test_safety_checkers_flag_nothing_or_everything(tiny_models, folder, flagged):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    checker = StableDiffusionSafetyChecker.from_pretrained(tiny_models / folder).eval()
    processor_folder = tiny_models / ("gligen-generation/feature_extractor" if flagged is False else folder)
    feature_extractor = CLIPImageProcessor.from_pretrained(processor_folder)
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 56, 3), dtype=np.uint8)) for i in range(3)]
    clip_input = feature_extractor(images, return_tensors="pt").pixel_values
    _, has_nsfw = checker(clip_input=clip_input, images=[np.asarray(image) for image in images])
    assert has_nsfw == [flagged] * 3


def test_same_seed_same_files_and_a_rerun_reuses_them(tiny_models, tmp_path, monkeypatch):
    """A copy of the session's models is reused as it is; --overwrite builds every model again, in this
    process, to the bytes of the session's build (a child process)."""
    folder = tmp_path / "models"
    shutil.copytree(tiny_models, folder)  # file times copied too
    weights = folder / "blip2" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    result = run_here(SCRIPT, folder)
    assert result.returncode == 0 and result.stdout.count("reused") == 7, result.stdout
    assert weights.stat().st_mtime_ns == stamp

    # diffusers and transformers log with their own handlers: here their lines reach run_here's stderr too,
    # and the warnings a terminal would show are kept.
    for library in ("diffusers", "transformers"):
        monkeypatch.setattr(logging.getLogger(library), "propagate", True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        result = run_here(SCRIPT, folder, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("wrote") == 7
    shown = result.stderr + result.stdout + "".join(str(w.message) for w in caught)
    assert "deprecated" not in shown  # diffusers' notice about the GLIGEN pipeline class
    assert weights.stat().st_mtime_ns != stamp
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tiny_models) for p in tiny_models.rglob("*") if p.is_file())
    for file in files:
        assert (folder / file).read_bytes() == (tiny_models / file).read_bytes(), file
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_an_incomplete_folder_is_rebuilt(tmp_path):
    (tmp_path / "blip2").mkdir()
    (tmp_path / "blip2" / "config.json").write_text("{}")
    tiny = script_module(SCRIPT)
    for name, (_, required) in tiny.BUILDERS.items():  # the other models look complete: only blip2 is built
        for file in required if name != "blip2" else []:
            (tmp_path / name / file).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / file).write_text("{}")
    result = run_here(SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "rebuilding" in result.stdout and result.stdout.count("reused") == 6 and result.stdout.count("wrote") == 1
    assert (tmp_path / "blip2" / "model.safetensors").is_file()


def test_an_output_that_is_a_file_is_a_user_error(tmp_path):
    target = tmp_path / "models"
    target.write_text("not a folder")
    result = run_here(SCRIPT, target)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: output path exists and is not a folder ({target})"]


def test_model_folders_get_the_permissions_of_a_plain_mkdir(tiny_models, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert (tiny_models / "blip2").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_clip_scores_pictures_against_texts(tiny_models):
    from transformers import AutoProcessor, CLIPModel

    processor = AutoProcessor.from_pretrained(tiny_models / "clip")
    model = CLIPModel.from_pretrained(tiny_models / "clip").eval()
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (20, 64), (10, 120, 240))]
    inputs = processor(text=["a photo of a kite", "a photo of a red ball on the grass"], images=images, return_tensors="pt", padding=True)
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    assert processor.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=True).strip() == "a photo of a kite"


@pytest.mark.parametrize("name, model_type", [("owlv2", "owlv2"), ("grounding-dino", "grounding-dino")])
def test_detectors_load_as_zero_shot_detectors_and_detect(tiny_models, name, model_type):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models / name)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(tiny_models / name).eval()
    assert model.config.model_type.replace("_", "-") == model_type
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    if name == "owlv2":
        inputs = processor(text=[["a photo of a kite", "a photo of a ball"]], images=[image], return_tensors="pt")
        assert inputs["input_ids"].shape == (2, 16)  # queries padded to 16 tokens, as the hub checkpoint's
        assert model.config.text_config.max_position_embeddings == 16 and processor.image_processor.do_pad  # pad to square
    else:
        inputs = processor(text=["kite. ball."], images=[image], return_tensors="pt")
        tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
        assert tokens == ["[CLS]", "kite", ".", "ball", ".", "[SEP]"]  # no unknown words
    with torch.no_grad():
        outputs = model(**inputs)
    if name == "owlv2":
        results = processor.post_process_grounded_object_detection(outputs, threshold=0.0, target_sizes=[(48, 64)])
    else:
        results = processor.post_process_grounded_object_detection(outputs, inputs["input_ids"], threshold=0.0, target_sizes=[(48, 64)])
    scores, boxes = results[0]["scores"], results[0]["boxes"]
    assert len(scores) >= 10 and torch.isfinite(boxes).all()
    # Untrained heads would give every detection the same score and box: these differ, as real ones do.
    assert scores.std() > 1e-3 and len({tuple(box) for box in boxes.round(decimals=2).tolist()}) > 5
