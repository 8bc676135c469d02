"""FID between a folder of real images and a folder of generated ones, with pytorch-fid.

Both folders are read recursively (png, jpg, jpeg, bmp, webp, tif, tiff; any size and mode).
Each image becomes 8-bit RGB in [0, 1] and is resized to 299x299 as pytorch-fid's network does
(bilinear), features come from pytorch-fid's FID Inception network, and the distance from its
``calculate_frechet_distance``. The figure is comparable with other pytorch-fid results at the
same ``--dims``; with fewer images than dimensions it means little (a warning says so).

pytorch-fid downloads the FID Inception weights on first use; on a machine without internet,
download ``pt_inception-2015-12-05-6726825d.pth`` from pytorch-fid's releases elsewhere and pass
``--weights``. Example::

    python evaluate_fid.py --real coco/train2017 --generated out/generation --output out/fid.json
"""

import argparse
import logging
import pickle
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cocoaug.atomic import write_json_atomic
from cocoaug.errors import UserError
from cocoaug.images import open_rgb
from cocoaug.paths import require_dir, require_file
from cocoaug.runtime import add_debug_flag, resolve_device, run_cli

log = logging.getLogger("cocoaug")

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
FID_DIMS = (64, 192, 768, 2048)  # pytorch-fid's feature blocks
INCEPTION_SIZE = 299


# ---------------------------------------------------------------- arguments


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-r", "--real", required=True, help="folder of real images (read recursively)")
    parser.add_argument("-g", "--generated", required=True, help="folder of generated images (read recursively)")
    parser.add_argument("--dims", type=int, default=2048, choices=FID_DIMS, help="Inception feature size; 2048 is the standard FID")
    parser.add_argument("--batch-size", type=int, default=50, help="images per forward pass")
    parser.add_argument("--num-workers", type=int, default=4, help="processes that read images")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    parser.add_argument("--weights", help="local file of the FID Inception weights (default: pytorch-fid downloads them)")
    parser.add_argument("--output", help="also write {fid, n_real, n_generated, dims} to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    add_debug_flag(parser)
    return parser


# ---------------------------------------------------------------- the stage's steps


def image_files(folder) -> list[Path]:
    """Image files under ``folder``, recursively, sorted; hidden files are left out."""
    folder = require_dir(folder, "image folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if len(files) < 2:
        raise UserError(f"FID needs at least 2 images in each folder; found {len(files)}", folder)
    return files


class ImageFolderDataset:
    """Images as float tensors (3, 299, 299) in [0, 1], resized the way pytorch-fid's network resizes them."""

    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        import torch
        import torch.nn.functional as F

        array = np.asarray(open_rgb(self.files[index]), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).permute(2, 0, 1)[None]
        # Same call as InceptionV3.forward; resizing here lets images of any size share a batch,
        # and the network's own resize of a 299x299 input is then the identity.
        return F.interpolate(tensor, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)[0]


@contextmanager
def _weights_from(path):
    """Make pytorch-fid's builder take its state dict from ``path`` instead of downloading it.

    pytorch-fid has no argument for local weights; swapping its download function keeps its
    exact architecture (including the FID-specific blocks) and strict loading.
    """
    import pytorch_fid.inception as fid_inception
    import torch

    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise UserError(f"cannot read the weights file: {exc}".splitlines()[0], path) from exc
    download = fid_inception.load_state_dict_from_url
    fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state_dict
    try:
        yield
    finally:
        fid_inception.load_state_dict_from_url = download


def load_inception(dims: int, weights, device):
    """pytorch-fid's FID Inception network returning ``dims`` features, in eval mode on ``device``."""
    from pytorch_fid.inception import InceptionV3

    blocks = [InceptionV3.BLOCK_INDEX_BY_DIM[dims]]
    try:
        if weights:
            with _weights_from(require_file(weights, "weights file")):
                model = InceptionV3(blocks)
        else:
            model = InceptionV3(blocks)
    except RuntimeError as exc:  # load_state_dict: missing or unexpected keys, wrong shapes
        raise UserError(f"not the FID Inception weights: {str(exc).splitlines()[0]}", weights or "downloaded weights") from exc
    except OSError as exc:  # the download failed (URLError is an OSError)
        raise UserError(f"cannot download the FID Inception weights ({exc}); download them elsewhere and pass "
                        "--weights PATH", "pt_inception-2015-12-05-6726825d.pth") from exc
    return model.to(device).eval()


def activations(files: list[Path], model, batch_size: int, num_workers: int, device, desc: str) -> np.ndarray:
    """Inception features of ``files``, one row per image."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    loader = torch.utils.data.DataLoader(ImageFolderDataset(files), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers)
    rows = []
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, unit="batch"):
            features = model(batch.to(device))[0]
            if features.shape[2:] != (1, 1):  # the lower blocks return feature maps; pytorch-fid pools them
                features = F.adaptive_avg_pool2d(features, output_size=(1, 1))
            rows.append(features.squeeze(3).squeeze(2).cpu().numpy())
    return np.concatenate(rows).astype(np.float64)


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """FID of two feature sets: pytorch-fid's formula on their means and covariances."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    mu1, sigma1 = real.mean(axis=0), np.cov(real, rowvar=False)
    mu2, sigma2 = generated.mean(axis=0), np.cov(generated, rowvar=False)
    return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))


def main(args):
    if args.batch_size < 1:
        raise UserError("must be a positive integer", f"--batch-size {args.batch_size}")
    if args.num_workers < 0:
        raise UserError("must not be negative", f"--num-workers {args.num_workers}")
    if args.output and Path(args.output).exists() and not args.overwrite:
        raise UserError("output file exists; use --overwrite to replace it", args.output)
    real_files, generated_files = image_files(args.real), image_files(args.generated)
    for folder, files in ((args.real, real_files), (args.generated, generated_files)):
        if len(files) < args.dims:
            log.warning("%s has %d images, fewer than the %d feature dimensions: the covariance is singular and the "
                        "FID says little (use thousands of images, or a smaller --dims only to compare runs)",
                        folder, len(files), args.dims)

    device = resolve_device(args.device)
    model = load_inception(args.dims, args.weights, device)
    real = activations(real_files, model, args.batch_size, args.num_workers, device, "real")
    generated = activations(generated_files, model, args.batch_size, args.num_workers, device, "generated")
    fid = frechet_distance(real, generated)

    if args.output:
        write_json_atomic(args.output, {"fid": fid, "n_real": len(real_files), "n_generated": len(generated_files), "dims": args.dims})
    print(f"FID {fid:.4f} (dims {args.dims}; {len(real_files)} real, {len(generated_files)} generated images)")


if __name__ == "__main__":
    run_cli(main, build_parser())
