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
import io
import logging
import pickle
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np

from cocoaug import cli
from cocoaug.atomic import remove_temp_files, write_json_atomic
from cocoaug.errors import UserError
from cocoaug.images import open_rgb
from cocoaug.paths import require_dir, require_file
from cocoaug.progress import progress
from cocoaug.runtime import resolve_device, run_cli

log = logging.getLogger("cocoaug")

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
FID_DIMS = (64, 192, 768, 2048)  # pytorch-fid's feature blocks
INCEPTION_SIZE = 299
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's release file


# ---------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(__doc__)
    parser.add_argument("-r", "--real", required=True, metavar="REAL_DIR", help="folder of real images (read recursively)")
    cli.add_generated(parser, help="folder of generated images (read recursively)")
    parser.add_argument("--dims", type=int, default=2048, choices=FID_DIMS, help="Inception feature size; 2048 (default) is the standard FID")
    cli.add_batch_size(parser, default=50, help="images per forward pass")
    cli.add_num_workers(parser, default=4)
    cli.add_device(parser, dtype=False)
    parser.add_argument("--weights", metavar="FILE.pth", help=f"local file of the FID Inception weights, e.g. {WEIGHTS_FILE} "
                                                              "(default: pytorch-fid downloads them)")
    cli.add_output(parser, required=False, metavar="FID.json", help="also write {fid, n_real, n_generated, dims} to this JSON file")
    cli.add_overwrite(parser, help="replace an existing --output file")
    cli.add_debug(parser)
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
        with warnings.catch_warnings():  # a file that is not a checkpoint can raise this first, before the error below
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, UnicodeDecodeError) as exc:
        # torch's own message advises weights_only=False, i.e. running code from the file: never say that.
        raise UserError(not_weights_message(f"cannot read it with torch.load ({type(exc).__name__})"), path) from exc
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise UserError(not_weights_message(f"it holds a {type(state_dict).__name__}, not a state dict of tensors"), path)
    download = fid_inception.load_state_dict_from_url
    fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state_dict
    try:
        yield
    finally:
        fid_inception.load_state_dict_from_url = download


def not_weights_message(why: str) -> str:
    """The error line for a --weights file that is not what pytorch-fid's network loads."""
    return (f"not an FID Inception weights file: {why}; --weights expects a state dict of pytorch-fid's FID Inception "
            f"network such as {WEIGHTS_FILE} from pytorch-fid's releases (scripts/make_random_fid_weights.py writes a "
            "random one for tests)")


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
        raise UserError(not_weights_message(str(exc).splitlines()[0]), weights or "downloaded weights") from exc
    except OSError as exc:  # the download failed (URLError is an OSError)
        raise UserError(f"cannot download the FID Inception weights ({exc}); download them elsewhere and pass "
                        "--weights PATH", WEIGHTS_FILE) from exc
    return model.to(device).eval()


def activations(files: list[Path], model, batch_size: int, num_workers: int, device, desc: str) -> np.ndarray:
    """Inception features of ``files``, one row per image."""
    import torch
    import torch.nn.functional as F
    loader = torch.utils.data.DataLoader(ImageFolderDataset(files), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers)
    rows = []
    with torch.no_grad():
        for batch in progress(loader, desc=desc, unit="batch"):
            features = model(batch.to(device))[0]
            if features.shape[2:] != (1, 1):  # the lower blocks return feature maps; pytorch-fid pools them
                features = F.adaptive_avg_pool2d(features, output_size=(1, 1))
            rows.append(features.squeeze(3).squeeze(2).cpu().numpy())
    return np.concatenate(rows).astype(np.float64)


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """FID of two feature sets: pytorch-fid's formula on their means and covariances."""
    from pytorch_fid.fid_score import calculate_frechet_distance
    from scipy.linalg import LinAlgWarning

    mu1, sigma1 = real.mean(axis=0), np.cov(real, rowvar=False)
    mu2, sigma2 = generated.mean(axis=0), np.cov(generated, rowvar=False)
    printed = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, redirect_stdout(printed):
        warnings.simplefilter("always", LinAlgWarning)
        fid = float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
    # scipy's warning would print raw with its source line, and pytorch-fid prints its own: say it once, plainly.
    if printed.getvalue().strip() or any(issubclass(warning.category, LinAlgWarning) for warning in caught):
        log.warning("the covariance matrices are ill-conditioned (fewer images than --dims %d): the FID is approximate",
                    real.shape[1])
    for warning in caught:
        if not issubclass(warning.category, LinAlgWarning):
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return fid


def main(args):
    if args.batch_size < 1:
        raise UserError("must be a positive integer", f"--batch-size {args.batch_size}")
    if args.num_workers < 0:
        raise UserError("must not be negative", f"--num-workers {args.num_workers}")
    if args.output and Path(args.output).exists() and not args.overwrite:
        raise UserError("output file exists; use --overwrite to replace it", args.output)
    if args.output:
        remove_temp_files(args.output)
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
