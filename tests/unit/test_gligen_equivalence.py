"""The project's GLIGEN sampler reproduces diffusers' StableDiffusionGLIGENPipeline.

At batch size 1, on a square picture, from the same random numbers, both give the same image
in generation and in inpainting. The pipeline draws its initial latents from ``generator``;
in inpainting it draws the VAE sample, the latents and each step's noise from torch's global
generator, which is seeded here with the image's seed (the sampler's generator starts there too).

diffusers keeps the pipeline in its deprecated folder. The sampler's output is therefore also
compared with a stored reference, tests/data/gligen_reference.npz, which keeps this test working
when the pipeline is gone. When scripts/make_tiny_models.py changes, rewrite the reference (the
test says so) and commit it:

    python -m tests.helpers.gligen_reference --write
"""

import numpy as np
import pytest
import torch

from cocoaug.gligen_sampler import GligenSampler, SampleRequest
from tests.helpers.gligen_reference import (
    BOXES, GROUNDING_BETA, GUIDANCE_SCALE, PHRASES, PROMPT, SEED, STEPS, inpaint_picture, load_open_components,
    models_fingerprint, read_reference, sample,
)

try:
    from diffusers import StableDiffusionGLIGENPipeline
except ImportError:  # removed from diffusers: the stored reference alone is the yardstick
    StableDiffusionGLIGENPipeline = None


@pytest.mark.parametrize("mode", ["generation", "inpainting"])
def test_sampler_matches_the_diffusers_pipeline(tiny_models, mode):
    components = load_open_components(tiny_models, mode)
    # Every UNet call's inputs are recorded, so the comparison is exact where the picture would blur it.
    calls = []
    components.unet.register_forward_pre_hook(lambda module, args, kwargs: calls.append(unet_inputs(args, kwargs)), with_kwargs=True)
    ours = sample(components, mode).astype(np.int16)
    our_calls, calls[:] = list(calls), []
    size = components.native_size
    assert ours.shape == (size, size, 3)
    assert ours.std() > 5  # a real picture, not a constant

    reference = read_reference()
    assert reference["fingerprint"] == models_fingerprint(tiny_models), (
        "tests/data/gligen_reference.npz was made with other tiny models: run python -m tests.helpers.gligen_reference --write")
    assert np.abs(ours - reference[mode].astype(np.int16)).max() <= 1

    if StableDiffusionGLIGENPipeline is None:
        return
    pipe = StableDiffusionGLIGENPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer, unet=components.unet,
        scheduler=components.scheduler_class.from_config(components.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    picture = inpaint_picture(mode, size)
    if mode == "inpainting":
        torch.manual_seed(SEED)
        latent = size // components.vae_scale_factor
        randomness = {"gligen_inpaint_image": picture, "latents": torch.zeros(1, 9, latent, latent)}
    else:
        randomness = {"generator": torch.Generator().manual_seed(SEED)}
    theirs = pipe(
        prompt=PROMPT, gligen_phrases=PHRASES, gligen_boxes=BOXES, num_inference_steps=STEPS, guidance_scale=GUIDANCE_SCALE,
        gligen_scheduled_sampling_beta=GROUNDING_BETA, height=size, width=size, output_type="np", **randomness,
    ).images[0]
    theirs = np.round(theirs * 255).astype(np.int16)

    assert len(our_calls) == len(calls) >= STEPS
    for step, (mine, pipelines) in enumerate(zip(our_calls, calls)):
        for name in mine:
            assert torch.allclose(mine[name], pipelines[name], atol=1e-5), f"step {step}: {name}"
    assert theirs.shape == ours.shape
    assert np.abs(ours - theirs).max() <= 1


def unet_inputs(args, kwargs) -> dict:
    gligen = kwargs["cross_attention_kwargs"]["gligen"]
    return {
        "latents": args[0].clone(), "timestep": torch.as_tensor(args[1]).float().reshape(1),
        "prompt_embeds": kwargs["encoder_hidden_states"].clone(), **{k: v.clone() for k, v in gligen.items()},
    }


def test_grounding_changes_the_picture(tiny_models):
    """Guards the test above: with open gates, the boxes and phrases have a visible effect."""
    components = load_open_components(tiny_models, "generation")
    size, request = components.native_size, SampleRequest(PROMPT, PHRASES, BOXES, SEED)
    grounded, free = (GligenSampler(components, 2, GUIDANCE_SCALE, beta)([request], size, size)[0] for beta in (1.0, 0.0))
    assert np.abs(np.asarray(grounded, dtype=np.int16) - np.asarray(free, dtype=np.int16)).max() > 2
