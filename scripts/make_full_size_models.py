"""Write random-weight models with the real models' full size and structure, for the full-size check on CPU.

Each folder has the hub checkpoint's layout (``save_pretrained``, the same classes, the same
files) and its published configuration, copied below with its source; only the weights are
random, stored in float16 to save disk (about 13 GB in all):

  DIR/blip2               Salesforce/blip2-opt-2.7b (3.7B parameters)
  DIR/gligen-generation   masterful/gligen-1-4-generation-text-box (UNet 1.07B, VAE, CLIP ViT-L/14 text encoder)
  DIR/gligen-inpainting   masterful/gligen-1-4-inpainting-text-box (the same with a 9-channel UNet)
  DIR/owlv2               google/owlv2-base-patch16-ensemble (155M, 960-pixel input)
  DIR/clip                openai/clip-vit-large-patch14 (428M)

The tokenizers are the real vocabularies, read from files that pip packages ship: CLIP's BPE
(49,408 tokens) from open_clip_torch's ``bpe_simple_vocab_16e6.txt.gz``, and GPT-2's BPE (the
vocabulary and merges of OPT) from openai-whisper's ``gpt2.tiktoken``. OPT numbers GPT-2's
tokens in fairseq's dictionary order, which no package ships: here they keep GPT-2's order after
OPT's four special tokens, with OPT's size (50,265) and the ids that the code depends on in
their places (``</s>`` 2, ``<pad>`` 1, the newline 50118, ``<image>`` 50265).

Built from a fixed seed. Each folder is built beside its target and renamed into place; without
--overwrite a complete existing folder is reused. Needs about 8 GB of memory (BLIP-2).

    python scripts/make_full_size_models.py full_size_models
    python scripts/make_full_size_models.py full_size_models --only owlv2,clip
"""

import base64
import gzip
import importlib.resources
import sys
import time
from pathlib import Path

# Run as a file (python scripts/...), this script needs the repository root (cocoaug) and its own folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cocoaug import cli  # noqa: E402
from cocoaug.errors import UserError  # noqa: E402
from cocoaug.runtime import resolve_device, run_cli  # noqa: E402
from make_tiny_models import without_log_line, write_atomically  # noqa: E402

SEED = 0

# ---------------------------------------------------------------- the published configurations

# Salesforce/blip2-opt-2.7b, config.json and preprocessor_config.json / processor_config.json (hub
# revision of 2024 that added the <image> token). The vision tower is EVA ViT-g/14, the language
# model facebook/opt-2.7b whose eos is the newline (50118) so that a caption stops at the line's end.
BLIP2 = {
    "vision_config": {"hidden_size": 1408, "intermediate_size": 6144, "num_hidden_layers": 39, "num_attention_heads": 16,
                      "image_size": 224, "patch_size": 14, "hidden_act": "gelu", "layer_norm_eps": 1e-6, "qkv_bias": True},
    "qformer_config": {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                       "intermediate_size": 3072, "cross_attention_frequency": 2, "encoder_hidden_size": 1408},
    "text_config": {"vocab_size": 50304, "hidden_size": 2560, "ffn_dim": 10240, "num_hidden_layers": 32, "num_attention_heads": 32,
                    "max_position_embeddings": 2048, "word_embed_proj_dim": 2560, "activation_function": "relu",
                    "do_layer_norm_before": True, "bos_token_id": 2, "eos_token_id": 50118, "pad_token_id": 1, "prefix": "</s>"},
    "num_query_tokens": 32,
    "image_token_index": 50265,
}
BLIP2_IMAGE_SIZE = 224
OPT_VOCAB_SIZE = 50265  # facebook/opt-2.7b vocab.json; "<image>" comes after it
OPT_NEWLINE_ID = 50118

# CompVis/stable-diffusion-v1-4 (unet/, vae/, text_encoder/, scheduler/ config.json), which
# masterful/gligen-1-4-*-text-box extend with gated self-attention and the box projection
# ("attention_type": "gated"); the inpainting UNet takes noisy latents, masked-picture latents and the mask.
GLIGEN_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32, "norm_eps": 1e-5, "act_fn": "silu",
    "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "attention_type": "gated",
}
GLIGEN_INPAINTING_IN_CHANNELS = 9
GLIGEN_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4, "act_fn": "silu",
    "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215,
}
# The text encoder of openai/clip-vit-large-patch14, with its legacy special ids (eos 2: transformers pools at the highest id).
CLIP_TEXT = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 768,
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
GLIGEN_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                    "skip_prk_steps": True, "set_alpha_to_one": False, "steps_offset": 1}

# openai/clip-vit-large-patch14, config.json and preprocessor_config.json.
CLIP_VISION = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
               "image_size": 224, "patch_size": 14, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 768}
CLIP_PROJECTION_DIM = 768
CLIP_IMAGE_SIZE = 224

# google/owlv2-base-patch16-ensemble, config.json and preprocessor_config.json: CLIP B/16 at 960
# pixels (60 x 60 patches, 3600 detections); queries padded with "!" (id 0) to 16 tokens.
OWLV2_TEXT = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
              "max_position_embeddings": 16, "hidden_act": "quick_gelu", "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 0}
OWLV2_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                "image_size": 960, "patch_size": 16, "hidden_act": "quick_gelu"}
OWLV2_PROJECTION_DIM = 512
OWLV2_QUERY_TOKENS = 16

# The parameter counts of the hub checkpoints (model.num_parameters()), which a build must reproduce.
PARAMETERS = {
    "blip2": 3_744_761_856,
    "gligen-unet": 1_068_623_204,
    "owlv2": 154_966_792,
    "clip": 427_616_513,
}


def build_parser():
    """The command-line interface."""
    parser = cli.new_parser(__doc__)
    parser.add_argument("output", type=Path, metavar="DIR", help="folder to write the model folders to (about 13 GB)")
    parser.add_argument("--only", metavar="NAME[,NAME...]", help=f"build only these folders, of {', '.join(BUILDERS)}")
    parser.add_argument("--device", default="cpu", type=cli.device_name,
                        help="where the random weights are drawn: cpu (default), or cuda, much faster (the files are the same kind)")
    cli.add_overwrite(parser, help="rebuild the models even if their folders exist")
    cli.add_debug(parser)
    return parser


# ---------------------------------------------------------------- tokenizers


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's and CLIP's printable stand-in character for each byte (printable bytes stand for themselves)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def package_file(package: str, name: str) -> Path:
    """A data file that a pip package ships; a UserError naming the package if it is not installed."""
    try:
        path = importlib.resources.files(package) / name
    except ModuleNotFoundError:
        raise UserError(f"needs the pip package that ships {name} (pip install -r requirements-test.txt)", package) from None
    if not path.is_file():
        raise UserError(f"the installed package lacks {name}", package)
    return Path(str(path))


def clip_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """openai CLIP's BPE as its ``simple_tokenizer.py`` builds it: bytes, bytes + ``</w>``, 48,894 merges, 2 specials."""
    lines = gzip.open(package_file("open_clip", "bpe_simple_vocab_16e6.txt.gz")).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def build_clip_tokenizer(model_max_length: int = 77, pad_token: str = "<|endoftext|>"):
    """The CLIPTokenizer of openai/clip-vit-large-patch14 (OWLv2's: 16 tokens, padded with "!")."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length, pad_token=pad_token)


def gpt2_ranks() -> list[bytes]:
    """GPT-2's 50,256 BPE tokens (bytes) in rank order, from openai-whisper's ``gpt2.tiktoken``."""
    ranked = {}
    for line in package_file("whisper", "assets/gpt2.tiktoken").read_text().splitlines():
        if line:
            token, rank = line.split()
            ranked[int(rank)] = base64.b64decode(token)
    return [ranked[rank] for rank in range(len(ranked))]


def recover_merges(tokens: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The merge that makes each multi-byte token: BPE of its bytes with the lower-ranked tokens only ends in two parts."""
    rank = {token: i for i, token in enumerate(tokens)}
    merges = []
    for token in tokens:
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pairs = [(rank.get(a + b, len(tokens)), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            best, i = min(pairs)
            if best >= rank[token]:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        merges.append((parts[0], parts[1]))
    return merges


def build_opt_tokenizer():
    """facebook/opt-2.7b's GPT2Tokenizer: GPT-2's BPE, OPT's special ids, ``</s>`` starts each text, left padding."""
    from transformers import GPT2TokenizerFast

    to_unicode = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(to_unicode[b] for b in token)

    ranked = gpt2_ranks()
    tokens = ["<s>", "<pad>", "</s>", "<unk>"] + [text(token) for token in ranked]
    newline = tokens.index(text(b"\n"))
    tokens[newline], tokens[OPT_NEWLINE_ID] = tokens[OPT_NEWLINE_ID], tokens[newline]
    tokens += [f"madeupword{i:04d}" for i in range(OPT_VOCAB_SIZE - len(tokens))]  # fairseq's fillers
    merges = [(text(a), text(b)) for a, b in recover_merges(ranked)]
    return GPT2TokenizerFast(vocab={token: i for i, token in enumerate(tokens)}, merges=merges, bos_token="</s>", eos_token="</s>",
                             unk_token="</s>", pad_token="<pad>", add_bos_token=True, padding_side="left")


# ---------------------------------------------------------------- models


def random_model(make, device: str):
    """``make()`` with float16 parameters drawn from the fixed seed (float16 from the start: BLIP-2 in float32 is 15 GB)."""
    import torch

    torch.manual_seed(SEED)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device(device):
            return make()
    finally:
        torch.set_default_dtype(default)


def build_blip2(folder: Path, device: str):
    """Save Salesforce/blip2-opt-2.7b's Blip2ForConditionalGeneration and Blip2Processor, random weights, to ``folder``."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    tokenizer = build_opt_tokenizer()
    image_processor = BlipImageProcessor(size={"height": BLIP2_IMAGE_SIZE, "width": BLIP2_IMAGE_SIZE},
                                         image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
    processor = Blip2Processor(image_processor, tokenizer, num_query_tokens=BLIP2["num_query_tokens"])  # adds "<image>"
    if tokenizer.convert_tokens_to_ids("<image>") != BLIP2["image_token_index"]:
        raise RuntimeError("the <image> token did not get the hub checkpoint's id")
    model = random_model(lambda: Blip2ForConditionalGeneration(Blip2Config(**BLIP2)), device)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_gligen(folder: Path, device: str, mode: str):
    """Save masterful/gligen-1-4-``mode``-text-box's pipeline folders (unet, vae, text_encoder, tokenizer, scheduler) to ``folder``."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionGLIGENPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    in_channels = GLIGEN_INPAINTING_IN_CHANNELS if mode == "inpainting" else GLIGEN_UNET["in_channels"]
    unet = random_model(lambda: UNet2DConditionModel(**{**GLIGEN_UNET, "in_channels": in_channels}), device)
    vae = random_model(lambda: AutoencoderKL(**GLIGEN_VAE), device)
    text_encoder = random_model(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_TEXT)), device)
    with without_log_line("diffusers.pipelines.pipeline_utils", "The StableDiffusionGLIGENPipeline has been deprecated"):
        pipeline = StableDiffusionGLIGENPipeline(vae=vae, text_encoder=text_encoder, tokenizer=build_clip_tokenizer(), unet=unet,
                                                 scheduler=PNDMScheduler(**GLIGEN_SCHEDULER), safety_checker=None,
                                                 feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder)


def build_clip(folder: Path, device: str):
    """Save openai/clip-vit-large-patch14's CLIPModel and CLIPProcessor, random weights, to ``folder``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    config = CLIPConfig(text_config=CLIP_TEXT, vision_config=CLIP_VISION, projection_dim=CLIP_PROJECTION_DIM)
    model = random_model(lambda: CLIPModel(config), device)
    image_processor = CLIPImageProcessor(size={"shortest_edge": CLIP_IMAGE_SIZE}, crop_size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE})
    model.save_pretrained(folder)
    CLIPProcessor(image_processor, build_clip_tokenizer()).save_pretrained(folder)


def build_owlv2(folder: Path, device: str):
    """Save google/owlv2-base-patch16-ensemble's Owlv2ForObjectDetection and Owlv2Processor, random weights, to ``folder``."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    config = Owlv2Config(text_config=OWLV2_TEXT, vision_config=OWLV2_VISION, projection_dim=OWLV2_PROJECTION_DIM)
    model = random_model(lambda: Owlv2ForObjectDetection(config), device)
    size = OWLV2_VISION["image_size"]
    model.save_pretrained(folder)
    Owlv2Processor(Owlv2ImageProcessor(size={"height": size, "width": size}),
                   build_clip_tokenizer(model_max_length=OWLV2_QUERY_TOKENS, pad_token="!")).save_pretrained(folder)


BUILDERS = {
    "blip2": (build_blip2, ["config.json", "processor_config.json", "tokenizer_config.json"]),
    "gligen-generation": (lambda folder, device: build_gligen(folder, device, "generation"), ["model_index.json", "unet/config.json", "vae/config.json"]),
    "gligen-inpainting": (lambda folder, device: build_gligen(folder, device, "inpainting"), ["model_index.json", "unet/config.json", "vae/config.json"]),
    "owlv2": (build_owlv2, ["config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json"]),
    "clip": (build_clip, ["config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json"]),
}


def selected_builders(only: str | None) -> list[str]:
    """The folder names ``--only`` names (all without it); a UserError for an unknown one."""
    if only is None:
        return list(BUILDERS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in BUILDERS]
    if unknown or not names:
        raise UserError(f"unknown model {', '.join(unknown) or '(none)'}: choose from {', '.join(BUILDERS)}", "--only")
    return names


def is_complete(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds every file the build of ``name`` writes last."""
    return all((folder / file).is_file() for file in BUILDERS[name][1])


def main(args):
    import transformers

    transformers.utils.logging.disable_progress_bar()
    names = selected_builders(args.only)
    device = str(resolve_device(args.device))
    folder = args.output
    if folder.exists() and not folder.is_dir():
        raise UserError("output path exists and is not a folder", folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = folder / name
        if is_complete(target, name) and not args.overwrite:
            print(f"reused {target} (pass --overwrite to rebuild it)")
            continue
        start = time.perf_counter()
        write_atomically(target, lambda temp: BUILDERS[name][0](temp, device))
        print(f"wrote {target} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    run_cli(main, build_parser())
