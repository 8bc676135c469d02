"""scripts/make_full_size_models.py and scripts/check_full_size.py, without building a full-size model.

The configurations written out in the builder must give the hub models' structure: their
parameter counts (checked on the meta device, no memory), the ids and sizes the code depends
on, and the real tokenizer vocabularies. `make check-full-size` runs the models (about 35
minutes, BENCHMARKS.md); here only its cheap parts run.
"""

import sys

import pytest
import torch

from tests.helpers.scripts import ROOT, run_script

sys.path.insert(0, str(ROOT / "scripts"))
import make_full_size_models as full  # noqa: E402


def test_blip2_config_has_the_hub_structure():
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    config = Blip2Config(**full.BLIP2)
    assert (config.num_query_tokens, config.image_token_index) == (32, 50265)
    assert (config.text_config.vocab_size, config.text_config.eos_token_id, config.text_config.pad_token_id) == (50304, 50118, 1)
    with torch.device("meta"):
        assert Blip2ForConditionalGeneration(config).num_parameters() == full.PARAMETERS["blip2"] == 3_744_761_856


def test_gligen_unet_and_vae_have_sd14_structure():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**full.GLIGEN_UNET)
        vae = AutoencoderKL(**full.GLIGEN_VAE)
    assert sum(p.numel() for p in unet.parameters()) == full.PARAMETERS["gligen-unet"]
    assert sum(p.numel() for p in unet.position_net.parameters()) == 1_083_968  # the box projection, "1.08M"
    assert len(unet.down_blocks) - 1 == 3 and 2 ** (len(vae.config.block_out_channels) - 1) == 8  # 512 px -> 64 latents
    assert full.GLIGEN_INPAINTING_IN_CHANNELS == 9


def test_clip_and_owlv2_have_the_hub_structure():
    from transformers import CLIPConfig, CLIPModel, Owlv2Config, Owlv2ForObjectDetection

    with torch.device("meta"):
        clip = CLIPModel(CLIPConfig(text_config=full.CLIP_TEXT, vision_config=full.CLIP_VISION, projection_dim=full.CLIP_PROJECTION_DIM))
        owl = Owlv2ForObjectDetection(Owlv2Config(text_config=full.OWLV2_TEXT, vision_config=full.OWLV2_VISION,
                                                  projection_dim=full.OWLV2_PROJECTION_DIM))
    assert clip.num_parameters() == full.PARAMETERS["clip"]
    assert owl.num_parameters() == full.PARAMETERS["owlv2"]
    assert clip.config.text_config.max_position_embeddings == 77 and owl.config.text_config.max_position_embeddings == 16
    assert (owl.config.vision_config.image_size // owl.config.vision_config.patch_size) ** 2 == 3600


def test_clip_tokenizer_is_openai_clips():
    tokenizer = full.build_clip_tokenizer()
    assert len(tokenizer) == 49408
    # openai/clip-vit-large-patch14's ids: <|startoftext|> a photo of a cat <|endoftext|>
    assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    owl = full.build_clip_tokenizer(model_max_length=16, pad_token="!")
    assert owl.pad_token_id == 0 and owl.model_max_length == 16


def test_opt_tokenizer_is_gpt2_bpe_with_opt_ids():
    tokenizer = full.build_opt_tokenizer()
    assert len(tokenizer) == 50265
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("\u010a")) == (1, 2, 50118)
    # GPT-2's ids for "Hello world" (15496, 995), after OPT's 4 special tokens: the merges are GPT-2's.
    assert tokenizer("Hello world")["input_ids"] == [2, 15496 + 4, 995 + 4]
    text = "a puffin on a rock,\ndéjà vu!"
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


@pytest.mark.parametrize("args, message", [
    (["--only", "blip2,sd3"], "error: unknown model sd3: choose from blip2, gligen-generation, gligen-inpainting, owlv2, clip (--only)"),
])
def test_builder_refuses_unknown_models(tmp_path, args, message):
    result = run_script("scripts/make_full_size_models.py", tmp_path / "models", *args, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == message
    assert not (tmp_path / "models").exists()


def test_builder_refuses_a_file_as_output(tmp_path):
    output = tmp_path / "models"
    output.write_text("not a folder")
    result = run_script("scripts/make_full_size_models.py", output, "--only", "owlv2", timeout=300)
    assert result.returncode == 2 and result.stderr.strip() == f"error: output path exists and is not a folder ({output})"


def test_check_keeps_an_earlier_check_without_overwrite(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "report.md").write_text("earlier")
    result = run_script("scripts/check_full_size.py", "--models", tmp_path / "models", "--work", work, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: holds an earlier check: pass --overwrite to empty it first ({work})"
    assert (work / "report.md").read_text() == "earlier" and not (tmp_path / "models").exists()


def test_make_check_full_size_is_a_target_outside_make_test():
    makefile = (ROOT / "Makefile").read_text()
    assert "\ncheck-full-size: setup\n\tnice -n 10 $(PY) scripts/check_full_size.py" in makefile
    test_recipe = makefile.split("\ntest: setup\n")[1].split("\n\n")[0]
    assert "check_full_size" not in test_recipe and "check-full-size" not in test_recipe
