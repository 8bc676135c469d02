"""GLIGEN text-box sampling for a batch of different layouts, written out step by step.

diffusers' ``StableDiffusionGLIGENPipeline`` puts one set of boxes on a whole batch, so it can
only batch variants of one layout (and it lives in diffusers' deprecated folder). This module
runs the same computation on diffusers' components (UNet, VAE, CLIP text encoder and tokenizer,
scheduler) with one prompt, one set of boxes and phrases, one inpainting picture and one random
generator per image of the batch. At batch size 1, from the same random numbers, it reproduces
the pipeline (tests/unit/test_gligen_equivalence.py).

Each image's randomness comes from its own ``torch.Generator`` (on the CPU, so results do not
depend on the device's random number generator), drawn in the order the pipeline draws it:
in inpainting the VAE posterior sample, then the initial latents, then at every step the noise
of the known region followed by the scheduler's own noise (ancestral and DDPM schedulers).
"""

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from cocoaug.errors import UserError
from cocoaug.generated import MAX_OBJECTS
from cocoaug.runtime import model_load_errors


@dataclass
class GligenComponents:
    """The pieces of a GLIGEN checkpoint, loaded once and shared by every batch."""

    model: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_class: type
    scheduler_config: dict
    vae_scale_factor: int

    @property
    def native_size(self) -> int:
        """The square size the model was trained at (512 for the hub GLIGEN models)."""
        return self.unet.config.sample_size * self.vae_scale_factor


def scheduler_class_for(name: str | None, model: str):
    """The diffusers scheduler class called ``name``, or the checkpoint's own when ``name`` is None."""
    import diffusers

    with model_load_errors(model):
        config = diffusers.DDIMScheduler.load_config(model, subfolder="scheduler")
    name = name or config["_class_name"]
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise UserError("not a diffusers scheduler (e.g. DDIMScheduler, EulerDiscreteScheduler)", f"--scheduler {name}")
    return cls, config


def load_components(model: str, device, dtype, scheduler_name: str | None = None) -> GligenComponents:
    """Load UNet, VAE, text encoder, tokenizer and scheduler config of a GLIGEN checkpoint."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    scheduler_class, scheduler_config = scheduler_class_for(scheduler_name, model)
    with model_load_errors(model):
        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", dtype=dtype)
        vae = AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=dtype)
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=dtype)
    for module in (text_encoder, vae, unet):
        # Some library versions ignore the dtype asked of from_pretrained; cast only then, since
        # diffusers warns on every dtype cast, needed or not.
        if next(module.parameters()).dtype != dtype:
            module.to(dtype=dtype)
        module.to(device=device).eval().requires_grad_(False)
    return GligenComponents(
        model=model, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler_class=scheduler_class, scheduler_config=scheduler_config,
        vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1),
    )


@dataclass
class SampleRequest:
    """One image to make: its prompt, its grounding and, in inpainting, the picture to edit."""

    prompt: str
    phrases: list[str]
    boxes: list[list[float]]  # [x0, y0, x1, y1] normalised to the working frame
    seed: int
    inpaint_image: Image.Image | None = None  # RGB at the working size, inpainting only


class GligenSampler:
    """Text-box GLIGEN sampling where every image of a batch has its own layout and seed."""

    def __init__(self, components: GligenComponents, steps: int, guidance_scale: float,
                 grounding_beta: float, negative_prompt: str = ""):
        self.c = components
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.grounding_beta = grounding_beta
        self.negative_prompt = negative_prompt

    @property
    def do_cfg(self) -> bool:
        return self.guidance_scale > 1.0

    @torch.no_grad()
    def __call__(self, requests: list[SampleRequest], width: int, height: int) -> list[Image.Image]:
        """Make one image per request, all at ``width`` x ``height`` pixels (multiples of 8)."""
        unet, device = self.c.unet, self.c.unet.device
        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]

        # 1. Prompts: the unconditional half first, as diffusers concatenates them.
        prompt_embeds = self.encode_text([r.prompt for r in requests])
        if self.do_cfg:
            negative_embeds = self.encode_text([self.negative_prompt] * len(requests))
            prompt_embeds = torch.cat([negative_embeds, prompt_embeds])

        # 2. Grounding: boxes, phrase embeddings and masks, padded to 30 objects per image.
        gligen = self.encode_grounding(requests)

        # 3. Timesteps, on a fresh scheduler: schedulers keep state between steps.
        scheduler = self.c.scheduler_class.from_config(self.c.scheduler_config)
        scheduler.set_timesteps(self.steps, device=device)
        timesteps = scheduler.timesteps

        # 4. Inpainting inputs: known latents, mask (1 = keep) and the UNet's extra channels.
        inpainting = requests[0].inpaint_image is not None
        if inpainting:
            known_latents, keep_mask, unet_extra = self.prepare_inpainting(requests, generators)

        # 5. Initial latents, one generator per image.
        shape = (len(requests), 4, height // self.c.vae_scale_factor, width // self.c.vae_scale_factor)
        latents = self.randn(shape, generators, prompt_embeds.dtype) * scheduler.init_noise_sigma

        # 6. Denoising loop, with grounding (the "fuser") on for the first beta x steps only.
        num_grounding_steps = int(self.grounding_beta * len(timesteps))
        step_kwargs = self.scheduler_step_kwargs(scheduler, generators)
        self.enable_fuser(True)
        try:
            for i, t in enumerate(timesteps):
                if i == num_grounding_steps:
                    self.enable_fuser(False)
                if inpainting:
                    # Channels-last, as diffusers' randn_like on its channels-last VAE latents draws it.
                    noise = self.randn(known_latents.shape, generators, known_latents.dtype, torch.channels_last)
                    noisy_known = scheduler.add_noise(known_latents, noise, t.reshape(1))
                    latents = noisy_known * keep_mask + latents * (1 - keep_mask)
                model_input = torch.cat([latents] * 2) if self.do_cfg else latents
                model_input = scheduler.scale_model_input(model_input, t)
                if inpainting:
                    model_input = torch.cat([model_input, unet_extra], dim=1)
                noise_pred = unet(
                    model_input, t, encoder_hidden_states=prompt_embeds,
                    cross_attention_kwargs={"gligen": gligen},
                ).sample
                if self.do_cfg:
                    noise_uncond, noise_text = noise_pred.chunk(2)
                    noise_pred = noise_uncond + self.guidance_scale * (noise_text - noise_uncond)
                latents = scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
        finally:
            self.enable_fuser(True)

        # 7. Decode to 8-bit pictures.
        vae = self.c.vae
        pixels = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        pixels = (pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
        return [Image.fromarray((p * 255).round().astype("uint8")) for p in pixels]

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """CLIP hidden states of each text, padded to the tokenizer's 77 tokens."""
        tokens = self.c.tokenizer(
            texts, padding="max_length", max_length=self.c.tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        )
        return self.c.text_encoder(tokens.input_ids.to(self.c.text_encoder.device))[0]

    def encode_grounding(self, requests: list[SampleRequest]) -> dict:
        """The UNet's ``gligen`` inputs: per image 30 boxes, phrase embeddings and a mask of real objects."""
        encoder, device = self.c.text_encoder, self.c.text_encoder.device
        phrases = [p for r in requests for p in r.phrases]
        # diffusers' pipeline fails on a phrase over 77 tokens; here it is cut, as prompts are (stage 2 says which).
        tokens = self.c.tokenizer(phrases, padding=True, truncation=True, max_length=self.c.tokenizer.model_max_length,
                                  return_tensors="pt").to(device)
        pooled = encoder(**tokens).pooler_output  # one CLIP embedding per phrase

        batch, dim = len(requests), self.c.unet.config.cross_attention_dim
        boxes = torch.zeros(batch, MAX_OBJECTS, 4, device=device, dtype=encoder.dtype)
        embeddings = torch.zeros(batch, MAX_OBJECTS, dim, device=device, dtype=encoder.dtype)
        masks = torch.zeros(batch, MAX_OBJECTS, device=device, dtype=encoder.dtype)
        start = 0
        for i, request in enumerate(requests):
            n = len(request.boxes)
            boxes[i, :n] = torch.tensor(request.boxes, dtype=encoder.dtype)
            embeddings[i, :n] = pooled[start:start + n]
            masks[i, :n] = 1
            start += n
        if self.do_cfg:
            # The unconditional half sees no objects.
            boxes, embeddings = torch.cat([boxes] * 2), torch.cat([embeddings] * 2)
            masks = torch.cat([torch.zeros_like(masks), masks])
        return {"boxes": boxes, "positive_embeddings": embeddings, "masks": masks}

    def prepare_inpainting(self, requests: list[SampleRequest], generators):
        """VAE latents of the pictures, the keep-mask at latent size, and the UNet's 5 extra channels."""
        vae = self.c.vae
        pixels = np.stack([np.asarray(r.inpaint_image, dtype=np.float32) / 255.0 for r in requests])
        pixels = torch.from_numpy(pixels).permute(0, 3, 1, 2) * 2.0 - 1.0
        pixels = pixels.to(device=vae.device, dtype=vae.dtype)
        known_latents = vae.encode(pixels).latent_dist.sample(generator=generators) * vae.config.scaling_factor
        latent_size = known_latents.shape[2:]
        keep_mask = torch.stack([keep_mask_from_boxes(r.boxes, *latent_size) for r in requests])[:, None]
        keep_mask = keep_mask.to(known_latents)
        unet_extra = torch.cat([known_latents * keep_mask, keep_mask], dim=1)
        if self.do_cfg:
            unet_extra = torch.cat([unet_extra] * 2)
        return known_latents, keep_mask, unet_extra

    def randn(self, shape, generators, dtype, memory_format=torch.contiguous_format) -> torch.Tensor:
        """Standard normal noise with row i drawn from generator i (on the CPU, then moved).

        The values depend on the memory format the CPU fills, so it is given explicitly.
        """
        rows = [torch.empty((1, *shape[1:]), dtype=dtype, memory_format=memory_format).normal_(generator=g) for g in generators]
        return torch.cat(rows).contiguous().to(self.c.unet.device)

    @staticmethod
    def scheduler_step_kwargs(scheduler, generators) -> dict:
        """Pass the per-image generators to schedulers that draw noise (DDPM, ancestral samplers)."""
        accepted = inspect.signature(scheduler.step).parameters
        return {"generator": generators} if "generator" in accepted else {}

    def enable_fuser(self, enabled: bool):
        """Switch GLIGEN's gated self-attention layers on or off (scheduled sampling)."""
        from diffusers.models.attention import GatedSelfAttentionDense

        for module in self.c.unet.modules():
            if isinstance(module, GatedSelfAttentionDense):
                module.enabled = enabled


def keep_mask_from_boxes(boxes, height: int, width: int) -> torch.Tensor:
    """A (height, width) mask: 0 on every latent cell a box touches, 1 elsewhere (the part kept).

    diffusers truncates both box edges to the grid, which leaves up to a cell of each box
    unpainted; here the cells are rounded outwards so the whole box is repainted.
    """
    mask = torch.ones(height, width)
    for x0, y0, x1, y1 in boxes:
        # The tolerance keeps a box edge that lies on the grid, up to float error, on its cell.
        left, top = int(np.floor(x0 * width + 1e-6)), int(np.floor(y0 * height + 1e-6))
        right, bottom = int(np.ceil(x1 * width - 1e-6)), int(np.ceil(y1 * height - 1e-6))
        mask[top:bottom, left:right] = 0
    return mask
