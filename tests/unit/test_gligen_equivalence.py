"""The project's GLIGEN sampler reproduces diffusers' StableDiffusionGLIGENPipeline.

At batch size 1, on a square picture, from the same random numbers, both give the same image
in generation and in inpainting. The pipeline draws its initial latents from ``generator``;
in inpainting it draws the VAE sample, the latents and each step's noise from torch's global
generator, which is seeded here with the image's seed (the sampler's generator starts there too).
"""

import numpy as np
import pytest
from PIL import Image

# Box edges on the 1/8 grid, where the sampler's outward-rounded mask equals diffusers' truncated one.
BOXES = [[0.125, 0.25, 0.5, 0.75], [0.5, 0.5, 1.0, 0.875]]
PHRASES = ["a dog", "a red ball"]
PROMPT = "a dog plays with a red ball on the grass"
SEED = 1234


@pytest.mark.parametrize("mode", ["generation", "inpainting"])
def test_sampler_matches_the_diffusers_pipeline(tiny_models, mode):
    import torch  # here, not at collection: `make test-fast` leaves this test out and need not import them
    from diffusers import StableDiffusionGLIGENPipeline

    from cocoaug.gligen_sampler import GligenSampler, SampleRequest, load_components

    components = load_components(str(tiny_models / f"gligen-{mode}"), torch.device("cpu"), torch.float32)
    # Random-weight models start with closed GLIGEN gates (tanh(0) = 0); open them so the boxes count.
    for name, parameter in components.unet.named_parameters():
        if name.endswith(("alpha_attn", "alpha_dense")):
            parameter.data.fill_(0.5)
    pipe = StableDiffusionGLIGENPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer, unet=components.unet,
        scheduler=components.scheduler_class.from_config(components.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    size = components.native_size
    picture = None
    if mode == "inpainting":
        picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))

    # Every UNet call's inputs are recorded, so the comparison is exact where the picture would blur it.
    calls = []
    components.unet.register_forward_pre_hook(lambda module, args, kwargs: calls.append(unet_inputs(args, kwargs)), with_kwargs=True)

    sampler = GligenSampler(components, steps=3, guidance_scale=7.5, grounding_beta=0.5)
    ours = np.asarray(sampler([SampleRequest(PROMPT, PHRASES, BOXES, SEED, picture)], size, size)[0], dtype=np.int16)
    our_calls, calls[:] = list(calls), []

    if mode == "inpainting":
        torch.manual_seed(SEED)
        latent = size // components.vae_scale_factor
        randomness = {"gligen_inpaint_image": picture, "latents": torch.zeros(1, 9, latent, latent)}
    else:
        randomness = {"generator": torch.Generator().manual_seed(SEED)}
    theirs = pipe(
        prompt=PROMPT, gligen_phrases=PHRASES, gligen_boxes=BOXES, num_inference_steps=3, guidance_scale=7.5,
        gligen_scheduled_sampling_beta=0.5, height=size, width=size, output_type="np", **randomness,
    ).images[0]
    theirs = np.round(theirs * 255).astype(np.int16)

    assert len(our_calls) == len(calls) >= 3
    for step, (mine, pipelines) in enumerate(zip(our_calls, calls)):
        for name in mine:
            assert torch.allclose(mine[name], pipelines[name], atol=1e-5), f"step {step}: {name}"
    assert ours.shape == theirs.shape == (size, size, 3)
    assert ours.std() > 5  # a real picture, not a constant
    assert np.abs(ours - theirs).max() <= 1


def unet_inputs(args, kwargs) -> dict:
    import torch

    gligen = kwargs["cross_attention_kwargs"]["gligen"]
    return {
        "latents": args[0].clone(), "timestep": torch.as_tensor(args[1]).float().reshape(1),
        "prompt_embeds": kwargs["encoder_hidden_states"].clone(), **{k: v.clone() for k, v in gligen.items()},
    }


def test_grounding_changes_the_picture(tiny_models):
    """Guards the test above: with open gates, the boxes and phrases have a visible effect."""
    import torch

    from cocoaug.gligen_sampler import GligenSampler, SampleRequest, load_components

    components = load_components(str(tiny_models / "gligen-generation"), torch.device("cpu"), torch.float32)
    for name, parameter in components.unet.named_parameters():
        if name.endswith(("alpha_attn", "alpha_dense")):
            parameter.data.fill_(0.5)
    size, request = components.native_size, SampleRequest(PROMPT, PHRASES, BOXES, SEED)
    grounded, free = (GligenSampler(components, 2, 7.5, beta)([request], size, size)[0] for beta in (1.0, 0.0))
    assert np.abs(np.asarray(grounded, dtype=np.int16) - np.asarray(free, dtype=np.int16)).max() > 2
