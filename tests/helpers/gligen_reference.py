"""The GLIGEN sampler's reference output on the tiny models, stored in tests/data/gligen_reference.npz.

tests/unit/test_gligen_equivalence.py compares the project's sampler with diffusers' pipeline;
diffusers keeps that pipeline in its deprecated folder, so the sampler's output is also stored
here, to be compared with when the pipeline is gone. The same settings make both: the layout,
prompt, seed and step count below, on scripts/make_tiny_models.py's models with their GLIGEN
gates opened. The file also holds a fingerprint of the tiny models' weights, so that a change of
the tiny models says "rewrite the reference" rather than failing on pixels.

After a change to scripts/make_tiny_models.py or to the sampler's intended output, rewrite it
(deterministic: two runs write the same arrays) and commit it:

    python -m tests.helpers.gligen_reference --write
"""

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cocoaug.gligen_sampler import GligenComponents, GligenSampler, SampleRequest, load_components

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "data" / "gligen_reference.npz"
MODES = ("generation", "inpainting")
# Box edges on the 1/8 grid, where the sampler's outward-rounded mask equals diffusers' truncated one.
BOXES = [[0.125, 0.25, 0.5, 0.75], [0.5, 0.5, 1.0, 0.875]]
PHRASES = ["a dog", "a red ball"]
PROMPT = "a dog plays with a red ball on the grass"
SEED = 1234
STEPS = 3
GUIDANCE_SCALE = 7.5
GROUNDING_BETA = 0.5


def load_open_components(models: Path, mode: str) -> GligenComponents:
    """The tiny GLIGEN model of ``mode`` on the CPU in float32, its gates opened (random models start with
    tanh(0) = 0, closed, so the boxes would not count)."""
    components = load_components(str(models / f"gligen-{mode}"), torch.device("cpu"), torch.float32)
    for name, parameter in components.unet.named_parameters():
        if name.endswith(("alpha_attn", "alpha_dense")):
            parameter.data.fill_(0.5)
    return components


def inpaint_picture(mode: str, size: int) -> Image.Image | None:
    """The picture inpainting repaints (seeded noise), None in generation."""
    if mode != "inpainting":
        return None
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))


def sample(components: GligenComponents, mode: str) -> np.ndarray:
    """The sampler's picture for the reference layout, uint8 HxWx3."""
    size = components.native_size
    sampler = GligenSampler(components, steps=STEPS, guidance_scale=GUIDANCE_SCALE, grounding_beta=GROUNDING_BETA)
    request = SampleRequest(PROMPT, PHRASES, BOXES, SEED, inpaint_picture(mode, size))
    return np.asarray(sampler([request], size, size)[0], dtype=np.uint8)


def models_fingerprint(models: Path) -> str:
    """SHA-256 over the weights of both tiny GLIGEN models (file names and bytes)."""
    digest = hashlib.sha256()
    for mode in MODES:
        for path in sorted((models / f"gligen-{mode}").rglob("*.safetensors")):
            digest.update(str(path.relative_to(models)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def read_reference(path: Path = REFERENCE) -> dict:
    """The stored pictures by mode and the fingerprint of the models they were made with."""
    with np.load(path) as data:
        return {"fingerprint": str(data["fingerprint"]), **{mode: data[mode] for mode in MODES}}


def write_npz(path: Path, arrays: dict[str, np.ndarray]):
    """An .npz file that np.load reads, byte-identical for equal arrays (np.savez stamps each member with the time)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            archive.writestr(member, buffer.getvalue())


def write_reference(path: Path = REFERENCE):
    """Build the tiny models in a temporary folder, sample both modes, and store the pictures with the fingerprint."""
    with tempfile.TemporaryDirectory() as folder:
        models = Path(folder) / "models"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_models.py"), str(models)], check=True, capture_output=True)
        arrays = {mode: sample(load_open_components(models, mode), mode) for mode in MODES}
        fingerprint = models_fingerprint(models)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    write_npz(temp, {"fingerprint": np.array(fingerprint), **arrays})
    temp.replace(path)
    print(f"wrote {path.relative_to(ROOT)}: {', '.join(f'{m} {a.shape}' for m, a in arrays.items())}, models {fingerprint[:12]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"rewrite {REFERENCE.relative_to(ROOT)}")
    args = parser.parse_args()
    if not args.write:
        parser.error("nothing to do: pass --write to rewrite the reference")
    write_reference()


if __name__ == "__main__":
    main()
