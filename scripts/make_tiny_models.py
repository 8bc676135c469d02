"""Write tiny random-weight BLIP-2, GLIGEN, CLIP, OWLv2 and Grounding DINO models, for tests and demos, with nothing downloaded.

The stages load these folders exactly as they load the hub checkpoints (``from_pretrained`` on
the same classes, the same files and folder layout), only every width and depth is a few hundred
times smaller. Every structural setting is the real checkpoint's, so the tests take the code paths
of the full-size models: token ids and vocabulary sizes, BLIP-2's 32 query tokens, the UNet's three
downsamplings and the VAE's factor 8 (odd latent sizes), CLIP's 77-token and OWLv2's 16-token limits.

  DIR/blip2               like Salesforce/blip2-opt-2.7b: Blip2ForConditionalGeneration (vision
                          tower, Q-Former, OPT) and its Blip2Processor, 32x32-pixel images
  DIR/gligen-generation   like masterful/gligen-1-4-generation-text-box: StableDiffusionGLIGENPipeline
                          folders (unet, vae, text_encoder, tokenizer, scheduler, safety_checker,
                          feature_extractor), 64x64 pixels; the safety checker flags nothing
  DIR/gligen-inpainting   like masterful/gligen-1-4-inpainting-text-box: the same with a 9-channel UNet
  DIR/safety-checker-flags-all   the same safety checker and feature extractor, flagging every picture
  DIR/clip                like openai/clip-vit-large-patch14: CLIPModel and CLIPProcessor, 32x32-pixel images
  DIR/owlv2               like google/owlv2-base-patch16-ensemble: Owlv2ForObjectDetection and
                          Owlv2Processor, 32x32 pixels (16 patches, 16 detections), 16-token queries
  DIR/grounding-dino      like IDEA-Research/grounding-dino-tiny: GroundingDinoForObjectDetection (Swin
                          backbone, BERT text encoder) and GroundingDinoProcessor, 64-pixel shortest side

The tokenizers are real byte-level BPE tokenizers trained here on a few dozen caption-like
sentences (Grounding DINO's: a WordPiece vocabulary of their words plus every letter), padded with
unused tokens to the real vocabulary sizes so that the special tokens have the real ids. The
weights are random, so captions are random words and pictures are noise; the output layer of
BLIP-2's OPT only scores whole words, so captions are never empty. Every model is
built from a fixed seed: two runs write byte-identical weights. Each folder is built beside its
target and renamed into place. Without --overwrite a complete existing folder is reused.

    python scripts/make_tiny_models.py tiny_models
    python scripts/make_tiny_models.py tiny_models --overwrite
"""

import argparse
import contextlib
import logging
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

# Run as a file (python scripts/...), this script needs the repository root to import cocoaug.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cocoaug.atomic import UMASK  # noqa: E402
from cocoaug.errors import UserError  # noqa: E402
from cocoaug import cli  # noqa: E402
from cocoaug.runtime import run_cli  # noqa: E402

SEED = 0
BLIP2_IMAGE_SIZE = 32  # pixels of the vision tower's input (224 for the hub model)
# Salesforce/blip2-opt-2.7b's config.json: 32 query tokens, the "<image>" token the processor adds
# after OPT's 50265 tokens, an embedding padded to 50304 rows, and captions that stop at a newline.
NUM_QUERY_TOKENS = 32
OPT_VOCAB_SIZE = 50265
OPT_EMBEDDING_ROWS = 50304
OPT_NEWLINE_ID = 50118  # "\u010a" (byte-level "\n"): text_config.eos_token_id
# CLIP's tokenizer (openai/clip-vit-large-patch14, SD-1.4's and OWLv2's): 49408 tokens, the last two
# <|startoftext|> and <|endoftext|>. Its text configs keep the legacy ids 0/2/1 for bos/eos/pad, with
# which transformers pools the text at the highest token id (<|endoftext|>).
CLIP_VOCAB_SIZE = 49408
CLIP_LEGACY_IDS = {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
# Stable Diffusion 1.4's UNet and VAE layout: four blocks each, so the latents are 1/8 of the picture
# and the UNet halves them three times (odd latent sizes, e.g. 74x55 at 592x440, take its resize path).
GLIGEN_SIZE = 64  # pixels of the tiny models' native square (512 for the hub models)
VAE_SCALE_FACTOR = 8
GLIGEN_LATENT_SIZE = GLIGEN_SIZE // VAE_SCALE_FACTOR  # the UNet's sample_size
GLIGEN_CHANNELS = (32, 32, 64, 64)  # SD-1.4: (320, 640, 1280, 1280); GroupNorm needs multiples of 32
HIDDEN_SIZE = 32  # every transformer's width; also the UNet's cross_attention_dim
SMALL = {"hidden_size": HIDDEN_SIZE, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
CLIP_IMAGE_SIZE = 32  # pixels of the scorer's CLIP input (224 for ViT-L/14)
OWL_IMAGE_SIZE = 32  # pixels of OWLv2's square input: 4 x 4 patches, 16 detections (960 and 3600 for the hub model)
GROUNDING_DINO_SIZE = 64  # shortest side of Grounding DINO's input (800 for the hub model)
CAPTIONS = [
    "a photo of a cat sitting on a couch", "two dogs running on the grass", "a bird perched on a tree branch",
    "a red car parked on the street", "a person riding a bicycle down the road", "a puffin standing on a rock by the sea",
    "a stingray swimming over the sand", "a black and white cat sleeping on a bed", "a dog catching a frisbee in a park",
    "a group of people standing in a kitchen", "a small bird sitting on a wooden fence", "a blue car driving past a building",
    "a man holding an umbrella in the rain", "a woman walking her dog on the beach", "three puffins on a grassy cliff",
    "a close up of a stingray in an aquarium", "a white car and a yellow bus at a traffic light", "a cat looking out of a window",
    "a person throwing a red ball to a dog", "a kite flying high in the blue sky", "a box of donuts on a table",
    "a child playing with a ball in the garden", "a horse standing in a field of flowers", "a plate of food with a fork and a knife",
    "an airplane flying over the city", "a boat on a lake near the mountains", "a teddy bear sitting on a chair",
    "a train stopped at a station", "a pizza with cheese and tomatoes", "a star shaped cookie on a white plate",
    "a brown dog lying on the floor", "two birds flying over the water", "a person skiing down a snowy hill",
    "a cat and a dog sleeping together", "a large elephant walking through the grass", "a bowl of fruit next to a laptop",
]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = cli.new_parser(__doc__)
    parser.add_argument("output", type=Path, metavar="DIR", help="folder to write DIR/blip2, DIR/gligen-generation, DIR/gligen-inpainting, "
                        "DIR/safety-checker-flags-all, DIR/clip, DIR/owlv2 and DIR/grounding-dino to")
    cli.add_overwrite(parser, help="rebuild the models even if their folders exist")
    cli.add_debug(parser)
    return parser


def learn_merges(words: list[list[str]]) -> list[tuple[str, str]]:
    """Byte-pair merges learned from ``words`` (lists of symbols) until each is one symbol.

    The most frequent pair is merged first, ties in alphabetical order: the ``tokenizers`` trainer
    breaks ties by hash order, which changes the token ids from run to run.
    """
    merges = []
    while pairs := Counter(pair for word in words for pair in zip(word, word[1:])):
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for word in words:
            i = 0
            while i < len(word) - 1:
                if (word[i], word[i + 1]) == best:
                    word[i:i + 2] = [word[i] + word[i + 1]]
                i += 1
    return merges


def unused_tokens(count: int, start: int) -> list[str]:
    """Placeholder vocabulary entries that no merge produces, so the tokenizer never emits them."""
    return [f"<unused{i}>" for i in range(start, start + count)]


def build_opt_tokenizer():
    """A GPT-2 byte-level BPE laid out like OPT's: ``<s> <pad> </s> <unk>`` first, the newline at 50118,
    50265 tokens in all; ``</s>`` starts and ends, ``<pad>`` pads on the left."""
    from tokenizers import pre_tokenizers
    from transformers import GPT2TokenizerFast

    pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    merges = learn_merges([list(word) for caption in CAPTIONS for word, _ in pre_tokenizer.pre_tokenize_str(caption)])
    newline = "\u010a"
    tokens = ["<s>", "<pad>", "</s>", "<unk>"] + [c for c in sorted(pre_tokenizers.ByteLevel.alphabet()) if c != newline]
    tokens += ["".join(m) for m in merges]
    tokens += unused_tokens(OPT_NEWLINE_ID - len(tokens), len(tokens)) + [newline]
    tokens += unused_tokens(OPT_VOCAB_SIZE - len(tokens), len(tokens))
    # OPT continues the last token of each row, so batched generation needs left padding.
    return GPT2TokenizerFast(vocab={token: i for i, token in enumerate(tokens)}, merges=merges, bos_token="</s>", eos_token="</s>",
                             unk_token="</s>", pad_token="<pad>", add_bos_token=True, padding_side="left", model_max_length=512)


def build_blip2(folder: Path):
    """Save a tiny Blip2ForConditionalGeneration and its Blip2Processor to ``folder``."""
    import torch
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig,
                              Blip2VisionConfig, BlipImageProcessor, OPTConfig)
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    tokenizer = build_opt_tokenizer()
    image_processor = BlipImageProcessor(size={"height": BLIP2_IMAGE_SIZE, "width": BLIP2_IMAGE_SIZE},
                                         image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
    # The processor adds the "<image>" token to the tokenizer, as for the hub checkpoint; the model
    # needs its id, and the processor puts num_query_tokens of them before each prompt.
    processor = Blip2Processor(image_processor, tokenizer, num_query_tokens=NUM_QUERY_TOKENS)
    image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    assert image_token_index == OPT_VOCAB_SIZE and tokenizer.convert_ids_to_tokens(OPT_NEWLINE_ID) == "\u010a"
    vocab = tokenizer.get_vocab()
    words = sorted({vocab["\u0120" + word] for caption in CAPTIONS for word in caption.split()[1:]})  # "\u0120": a space
    small = {"hidden_size": HIDDEN_SIZE, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = Blip2Config(
        vision_config=Blip2VisionConfig(**small, intermediate_size=64, image_size=BLIP2_IMAGE_SIZE, patch_size=8).to_dict(),
        qformer_config=Blip2QFormerConfig(**small, intermediate_size=64).to_dict(),
        # OPT-2.7b's decoder: pre-layer-norm, biases, ReLU, no embedding projection, 2048 positions.
        text_config=OPTConfig(**small, ffn_dim=64, word_embed_proj_dim=HIDDEN_SIZE, vocab_size=OPT_EMBEDDING_ROWS,
                              max_position_embeddings=2048, do_layer_norm_before=True, enable_bias=True, activation_function="relu",
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=OPT_NEWLINE_ID,
                              pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False).to_dict(),
        num_query_tokens=NUM_QUERY_TOKENS, image_token_index=image_token_index,
    )
    torch.manual_seed(SEED)
    model = Blip2ForConditionalGeneration(config)
    # Random logits would often pick a special token (an empty caption) or a lone byte (mojibake);
    # a zero output row scores 0, below the best of the whole words, so greedy decoding picks words.
    with torch.no_grad():
        keep = torch.zeros(OPT_EMBEDDING_ROWS, dtype=torch.bool)
        keep[words] = True
        model.language_model.lm_head.weight[~keep] = 0.0
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_clip_tokenizer(model_max_length: int = 77, pad_token: str = "<|endoftext|>"):
    """A CLIP byte-level BPE laid out like openai/clip-vit-large-patch14's: bytes, bytes + ``</w>``, merges,
    then the specials at 49406 and 49407."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    pre_tokenizer = CLIPTokenizer().backend_tokenizer.pre_tokenizer  # CLIP's word split, then byte-level
    words = [word for caption in CAPTIONS for word, _ in pre_tokenizer.pre_tokenize_str(caption)]
    merges = learn_merges([list(word[:-1]) + [word[-1] + "</w>"] for word in words])
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # codepoint order is CLIP's bytes_to_unicode order
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    tokens += unused_tokens(CLIP_VOCAB_SIZE - 2 - len(tokens), len(tokens)) + ["<|startoftext|>", "<|endoftext|>"]
    # Stable Diffusion pads with <|endoftext|>, CLIPTokenizer's default.
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=merges, model_max_length=model_max_length,
                         pad_token=pad_token)


@contextlib.contextmanager
def without_log_line(logger_name: str, start: str):
    """Drop the records of one logger whose message starts with ``start``; every other record passes."""
    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(start)

    logger = logging.getLogger(logger_name)
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


SAFETY_CONCEPTS_THRESHOLD = {"none": 2.0, "all": -2.0}  # a cosine similarity is never above 1 nor below -1


def build_safety_checker(flags: str):
    """A tiny StableDiffusionSafetyChecker and its CLIPImageProcessor (SD-1.4's: CLIP vision tower, 17 concepts
    and 3 special-care concepts compared by cosine similarity with per-concept thresholds).

    Random weights would flag random pictures, so the thresholds decide: ``flags="none"`` flags nothing,
    ``flags="all"`` every picture.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    vision = {**SMALL, "image_size": CLIP_IMAGE_SIZE, "patch_size": 8}
    torch.manual_seed(SEED)
    checker = StableDiffusionSafetyChecker(CLIPConfig(text_config={**SMALL, "vocab_size": CLIP_VOCAB_SIZE, **CLIP_LEGACY_IDS},
                                                      vision_config=vision, projection_dim=HIDDEN_SIZE))
    with torch.no_grad():
        checker.concept_embeds.copy_(torch.randn_like(checker.concept_embeds))
        checker.special_care_embeds.copy_(torch.randn_like(checker.special_care_embeds))
        checker.concept_embeds_weights.fill_(SAFETY_CONCEPTS_THRESHOLD[flags])
        checker.special_care_embeds_weights.fill_(SAFETY_CONCEPTS_THRESHOLD[flags])
    feature_extractor = CLIPImageProcessor(size={"shortest_edge": CLIP_IMAGE_SIZE},
                                           crop_size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE})
    return checker.eval(), feature_extractor


def build_safety_checker_flags_all(folder: Path):
    """Save a safety checker that flags every picture, with its feature extractor, to ``folder``."""
    checker, feature_extractor = build_safety_checker("all")
    checker.save_pretrained(folder)
    feature_extractor.save_pretrained(folder)


def build_gligen(folder: Path, mode: str):
    """Save a tiny StableDiffusionGLIGENPipeline (text-box) for ``mode`` ("generation" or "inpainting") to ``folder``."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionGLIGENPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_clip_tokenizer()
    # The text encoder's pooled output is GLIGEN's phrase embedding, so its width is the cross-attention width.
    text_config = CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE, hidden_size=HIDDEN_SIZE, intermediate_size=64, projection_dim=HIDDEN_SIZE,
                                 num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77, **CLIP_LEGACY_IDS)
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(text_config)
    torch.manual_seed(SEED)
    # sample_size is the picture size the pipeline's inpainting resizes to.
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * len(GLIGEN_CHANNELS),
                        up_block_types=["UpDecoderBlock2D"] * len(GLIGEN_CHANNELS), block_out_channels=list(GLIGEN_CHANNELS),
                        layers_per_block=1, latent_channels=4, sample_size=GLIGEN_SIZE)
    torch.manual_seed(SEED)
    # Inpainting: noisy latents (4) + masked picture latents (4) + mask (1). SD-1.4's blocks, one layer each instead of two.
    unet = UNet2DConditionModel(sample_size=GLIGEN_LATENT_SIZE, in_channels=9 if mode == "inpainting" else 4, out_channels=4,
                                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                                block_out_channels=GLIGEN_CHANNELS, layers_per_block=1, cross_attention_dim=HIDDEN_SIZE,
                                attention_head_dim=8, attention_type="gated")
    safety_checker, feature_extractor = build_safety_checker("none")
    # Stable Diffusion 1.4's scheduler, as in the masterful checkpoints.
    scheduler = PNDMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    # Building the pipeline is how a checkpoint folder is written; its "deprecated" notice says nothing to the user here.
    with without_log_line("diffusers.pipelines.pipeline_utils", "The StableDiffusionGLIGENPipeline has been deprecated"):
        pipeline = StableDiffusionGLIGENPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                                 safety_checker=safety_checker, feature_extractor=feature_extractor)
    pipeline.save_pretrained(folder)


def build_clip(folder: Path):
    """Save a tiny CLIPModel and its CLIPProcessor (like openai/clip-vit-large-patch14) to ``folder``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = build_clip_tokenizer()
    text = {**SMALL, "vocab_size": len(tokenizer), "max_position_embeddings": 77, **CLIP_LEGACY_IDS}
    vision = {**SMALL, "image_size": CLIP_IMAGE_SIZE, "patch_size": 8}
    torch.manual_seed(SEED)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=HIDDEN_SIZE))
    image_processor = CLIPImageProcessor(size={"shortest_edge": CLIP_IMAGE_SIZE}, crop_size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE})
    model.save_pretrained(folder)
    CLIPProcessor(image_processor, tokenizer).save_pretrained(folder)


def build_owlv2(folder: Path):
    """Save a tiny Owlv2ForObjectDetection and its Owlv2Processor (like google/owlv2-base-patch16-ensemble) to ``folder``."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    # OWLv2 pads every query with "!" to 16 tokens, as the hub checkpoint's tokenizer does.
    tokenizer = build_clip_tokenizer(model_max_length=16, pad_token="!")
    text = {**SMALL, "vocab_size": len(tokenizer), "max_position_embeddings": 16, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {**SMALL, "image_size": OWL_IMAGE_SIZE, "patch_size": 8}
    torch.manual_seed(SEED)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=HIDDEN_SIZE))
    # Random heads saturate: every score 0 or 1, every box at the picture's edge. Scaled down, each patch's box
    # stays near its prior (the patch, widened) with some noise, and scores spread over (0.02, 0.5).
    with torch.no_grad():
        model.box_head.dense2.weight.mul_(0.01)
        model.box_head.dense2.bias.copy_(0.3 * torch.randn_like(model.box_head.dense2.bias))
        model.class_head.logit_shift.weight.zero_()
        model.class_head.logit_shift.bias.fill_(-1.0)
        model.class_head.logit_scale.weight.zero_()
        model.class_head.logit_scale.bias.fill_(1.0)
    image_processor = Owlv2ImageProcessor(size={"height": OWL_IMAGE_SIZE, "width": OWL_IMAGE_SIZE})
    model.save_pretrained(folder)
    Owlv2Processor(image_processor, tokenizer).save_pretrained(folder)


def build_bert_tokenizer():
    """A lower-case BERT WordPiece tokenizer whose vocabulary is the captions' words plus every letter and digit, so no word is unknown."""
    from transformers import BertTokenizer

    words = sorted({word.strip(".,") for caption in CAPTIONS for word in caption.split()})
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "-", "'"] + letters + ["##" + c for c in letters]
    tokens += [word for word in words if word not in tokens]
    return BertTokenizer(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True, model_max_length=256)


def build_grounding_dino(folder: Path):
    """Save a tiny GroundingDinoForObjectDetection and its processor (like IDEA-Research/grounding-dino-tiny) to ``folder``."""
    import torch
    from transformers import (BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoImageProcessor,
                              GroundingDinoProcessor, SwinConfig)

    tokenizer = build_bert_tokenizer()
    backbone = SwinConfig(image_size=GROUNDING_DINO_SIZE, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=4,
                          out_indices=[1, 2])
    text = BertConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN_SIZE, num_hidden_layers=1, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=256)
    config = GroundingDinoConfig(backbone_config=backbone.to_dict(), text_config=text.to_dict(), d_model=HIDDEN_SIZE,
                                 encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=4,
                                 decoder_attention_heads=4, num_queries=30, num_feature_levels=2, encoder_n_points=2,
                                 decoder_n_points=2, max_text_len=256, use_timm_backbone=False, use_pretrained_backbone=False)
    torch.manual_seed(SEED)
    model = GroundingDinoForObjectDetection(config)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": GROUNDING_DINO_SIZE, "longest_edge": 2 * GROUNDING_DINO_SIZE})
    model.save_pretrained(folder)
    GroundingDinoProcessor(image_processor, tokenizer).save_pretrained(folder)


BUILDERS = {
    "blip2": (build_blip2, ["config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json"]),
    "gligen-generation": (lambda folder: build_gligen(folder, "generation"), ["model_index.json", "unet/config.json"]),
    "gligen-inpainting": (lambda folder: build_gligen(folder, "inpainting"), ["model_index.json", "unet/config.json"]),
    "safety-checker-flags-all": (build_safety_checker_flags_all, ["config.json", "model.safetensors", "preprocessor_config.json"]),
    "clip": (build_clip, ["config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json"]),
    "owlv2": (build_owlv2, ["config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json"]),
    "grounding-dino": (build_grounding_dino, ["config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json"]),
}


def check_output_folder(folder: Path):
    """Refuse a DIR or model folder that exists and is not a folder."""
    for path in [folder] + [folder / name for name in BUILDERS]:
        if path.exists() and not path.is_dir():
            raise UserError("output path exists and is not a folder", path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder: {exc.strerror}", folder) from exc


def write_atomically(target: Path, build):
    """Run ``build(temp_folder)`` beside ``target``, then put the result in its place."""
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    temp.chmod(0o777 & ~UMASK)  # mkdtemp's 0o700 would hide the models from the rest of a team
    old = temp.with_suffix(".old")
    try:
        build(temp)
        if target.exists():
            target.rename(old)  # a folder cannot be renamed over a non-empty one
        temp.rename(target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def main(args):
    folder = args.output
    check_output_folder(folder)
    for name, (build, required) in BUILDERS.items():
        target = folder / name
        complete = all((target / file).is_file() for file in required)
        if complete and not args.overwrite:
            print(f"reused {target} (pass --overwrite to rebuild it)")
            continue
        if target.exists() and not complete:
            print(f"rebuilding {target}: it lacks some of {', '.join(required)}")
        import transformers  # here, not sooner: a rerun that reuses every model imports none of the libraries

        transformers.utils.logging.disable_progress_bar()  # "Writing model shards" bars, one per model
        write_atomically(target, build)
        print(f"wrote {target}")


if __name__ == "__main__":
    run_cli(main, build_parser())
