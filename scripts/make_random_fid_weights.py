"""Write a random-weight FID Inception state dict, for demos and tests, with nothing downloaded.

``evaluate_fid.py --weights FILE`` loads it exactly as it loads pytorch-fid's real
``pt_inception-2015-12-05-6726825d.pth``: the same architecture (torchvision's Inception v3 with
pytorch-fid's FID-specific blocks), the same keys and shapes, strict loading. The weights are
random (seeded, Kaiming-initialised convolutions), so the distance it gives is only a number that
shows the pipeline runs: it says nothing about the pictures. Without --overwrite an existing
FILE is reused.

    python scripts/make_random_fid_weights.py demo_output/random_fid_inception.pth
    python evaluate_fid.py -r REAL -g GENERATED --weights demo_output/random_fid_inception.pth
"""

import argparse
import sys
from pathlib import Path

# Run as a file (python scripts/...), this script needs the repository root to import cocoaug.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cocoaug.atomic import atomic_path  # noqa: E402
from cocoaug import cli  # noqa: E402
from cocoaug.runtime import run_cli  # noqa: E402

SEED = 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = cli.new_parser(__doc__)
    parser.add_argument("output", type=Path, metavar="FILE", help="the .pth file to write")
    cli.add_overwrite(parser, help="rewrite FILE even if it exists")
    cli.add_debug(parser)
    return parser


def random_fid_inception():
    """pytorch-fid's FID Inception network (as its ``fid_inception_v3`` builds it) with seeded random weights."""
    import torch
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2, _inception_v3

    torch.manual_seed(SEED)
    net = _inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = FIDInceptionA(192, 32), FIDInceptionA(256, 64), FIDInceptionA(288, 64)
    net.Mixed_6b, net.Mixed_6c = FIDInceptionC(768, 128), FIDInceptionC(768, 160)
    net.Mixed_6d, net.Mixed_6e = FIDInceptionC(768, 160), FIDInceptionC(768, 192)
    net.Mixed_7b, net.Mixed_7c = FIDInceptionE_1(1280), FIDInceptionE_2(2048)
    for module in net.modules():  # keep activations near unit scale through the whole network
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return net


def main(args):
    if args.output.exists() and not args.overwrite:
        print(f"reused {args.output} (pass --overwrite to rewrite it)")
        return
    import torch  # after the reuse check: a rerun that writes nothing takes a fraction of a second

    with atomic_path(args.output) as tmp:
        torch.save(random_fid_inception().state_dict(), tmp)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_cli(main, build_parser())
