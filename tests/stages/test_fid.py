"""evaluate_fid.py: pytorch-fid's network and distance on folders of any image size and mode, the
same figure as a direct scipy computation on the same features, offline weights, clear errors.
A random-weight FID Inception saved locally stands in for the real weights: nothing is downloaded."""

import argparse
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

import evaluate_fid as stage
from tests.helpers.scripts import ROOT, run_here, run_python

pytestmark = pytest.mark.models  # every test runs the FID Inception network (make test-fast leaves them out)
SCRIPT = "evaluate_fid.py"
N_IMAGES = 70  # more than --dims 64, so that both covariances have full rank


def write_images(folder: Path, count: int, seed: int, brightness: int) -> Path:
    """Images of several sizes and modes, some in a subfolder."""
    rng = np.random.default_rng(seed)
    modes = ["RGB", "L", "RGBA", "P"]
    for k in range(count):
        w, h = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        pixels = np.clip(rng.normal(brightness, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels).convert(modes[k % 4])
        target = folder / ("nested/deeper" if k % 3 == 0 else "") / f"{k}.{'jpg' if modes[k % 4] in ('RGB', 'L') else 'png'}"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target)
    (folder / "notes.txt").write_text("not an image")
    return folder


def run_fid(*args):
    """evaluate_fid.py with ARGS in this process (run_here); a warning that a user's terminal would show
    (pytest would otherwise only record it) fails the test. The real-stderr check is a subprocess below."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        result = run_here(SCRIPT, *args)
    shown = [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert not shown, shown
    return result


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid_images")
    return write_images(root / "real", N_IMAGES, 0, 100), write_images(root / "generated", N_IMAGES, 1, 150)


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_fid_matches_a_direct_scipy_computation(tmp_path, folders, fid_weights, monkeypatch):
    """scipy's FID of the features the run computed (recorded as it ran, not computed again), and the first
    rows of those features computed here from the files with a network loaded here."""
    real, generated = folders
    output = tmp_path / "fid.json"
    computed, activations = [], stage.activations

    def recorded(*args):
        computed.append(activations(*args))
        return computed[-1]

    monkeypatch.setattr(stage, "activations", recorded)
    result = run_fid("-r", real, "-g", generated, "--weights", fid_weights, "--dims", 64, "--device", "cpu",
                     "--batch-size", 16, "--num-workers", 0, "--output", output)
    assert result.returncode == 0, result.stderr
    saved = json.loads(output.read_text())
    assert saved["n_real"] == saved["n_generated"] == N_IMAGES and saved["dims"] == 64
    assert "fewer than" not in result.stderr

    a, b = computed
    assert a.shape == b.shape == (N_IMAGES, 64)
    model = stage.load_inception(64, str(fid_weights), torch.device("cpu"))
    for features, folder in ((a, real), (b, generated)):
        first = activations(stage.image_files(folder)[:3], model, 3, 0, torch.device("cpu"), "here")
        np.testing.assert_allclose(first, features[:3], rtol=1e-4, atol=1e-6)
    expected = scipy_fid(a, b)
    assert expected > 1e-3
    assert saved["fid"] == pytest.approx(expected, rel=1e-5)
    assert f"FID {saved['fid']:.4f}" in result.stdout


def test_features_do_not_depend_on_batching_or_workers(folders, fid_weights):
    real, _ = folders
    files = stage.image_files(real)[:9]
    model = stage.load_inception(192, str(fid_weights), torch.device("cpu"))
    one = stage.activations(files, model, 9, 0, torch.device("cpu"), "a")
    two = stage.activations(files, model, 4, 2, torch.device("cpu"), "b")
    assert one.shape == (9, 192)
    np.testing.assert_allclose(one, two, rtol=1e-4, atol=1e-6)


def test_each_image_is_resized_as_pytorch_fid_does(tmp_path, fid_weights):
    """Our dataset resizes before batching; the network's own resize then changes nothing."""
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    model = stage.load_inception(64, str(fid_weights), torch.device("cpu"))
    ours = model(stage.ImageFolderDataset([tmp_path / "a.png"])[0][None])[0]
    raw = torch.from_numpy(np.asarray(Image.open(tmp_path / "a.png"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    theirs = model(raw)[0]  # pytorch-fid's forward resizes this one itself
    torch.testing.assert_close(ours, theirs)


def test_identical_folders_score_zero(folders, fid_weights):
    real, _ = folders
    result = run_fid("-r", real, "-g", real, "--weights", fid_weights, "--dims", 64, "--num-workers", 2, "--batch-size", 32)
    assert result.returncode == 0, result.stderr
    assert abs(float(result.stdout.split()[1])) < 1e-3


def test_standard_2048_features_by_default(tmp_path, fid_weights):
    """The default --dims is the standard FID's 2048 pool features; taken in-process, without the 2048x2048 matrix
    square root of a whole run (pytorch-fid's own code, minutes on a CPU: the distance is checked at 64 dims)."""
    real = write_images(tmp_path / "r", 2, 2, 100)
    args = stage.build_parser().parse_args(["-r", str(real), "-g", str(real), "--weights", str(fid_weights)])
    assert args.dims == 2048
    model = stage.load_inception(args.dims, args.weights, torch.device("cpu"))
    features = stage.activations(stage.image_files(real), model, 2, 0, torch.device("cpu"), "real")
    assert features.shape == (2, 2048) and np.isfinite(features).all() and features.std() > 0
    assert not np.allclose(features[0], features[1])


def test_fewer_images_than_dimensions_is_one_warning(tmp_path, fid_weights):
    real, generated = write_images(tmp_path / "r", 2, 2, 100), write_images(tmp_path / "g", 3, 3, 160)
    result = run_fid("-r", real, "-g", generated, "--weights", fid_weights, "--dims", 64, "--num-workers", 0)
    assert result.returncode == 0, result.stderr
    assert "dims 64; 2 real, 3 generated" in result.stdout
    assert "has 2 images, fewer than the 64 feature dimensions" in result.stderr
    # scipy's LinAlgWarning (and pytorch-fid's print) become one plain line, without a source line.
    assert "LinAlgWarning" not in result.stderr and "warnings.warn" not in result.stderr, result.stderr
    assert "singular product" not in result.stdout, result.stdout
    assert result.stderr.count("the FID is approximate") <= 1


def test_a_singular_covariance_product_is_one_plain_warning_line():
    """scipy's LinAlgWarning would print raw with its source line; it becomes one log line (real stderr)."""
    code = (
        "import logging, sys, numpy as np, warnings\n"
        "logging.basicConfig(format='%(levelname)s: %(message)s')\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "import evaluate_fid\n"
        "rng = np.random.RandomState(0)\n"
        "real, generated = rng.rand(3, 64), rng.rand(4, 64)\n"
        "real[:, :32] = generated[:, :32] = 0  # dead features, as Inception's ReLUs give: a singular product\n"
        "print(evaluate_fid.frechet_distance(real, generated))\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "WARNING: the covariance matrices are ill-conditioned (fewer images than --dims 64): the FID is approximate"], result.stderr
    assert np.isfinite(float(result.stdout.strip().splitlines()[-1]))


def test_bad_inputs_end_with_one_error_line(tmp_path, folders, fid_weights):
    real, generated = folders
    (tmp_path / "one").mkdir()
    Image.new("RGB", (9, 9)).save(tmp_path / "one" / "a.png")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "cut.png").write_bytes(b"")
    (tmp_path / "exists.json").write_text("{}")
    weights = ["--weights", fid_weights, "--num-workers", 0, "--dims", 64]
    cases = [
        (["-r", tmp_path / "nowhere", "-g", generated, *weights], "image folder does not exist"),
        (["-r", tmp_path / "one", "-g", generated, *weights], "needs at least 2 images"),
        (["-r", real, "-g", generated, "--weights", tmp_path / "other.pth"], "not an FID Inception weights file"),
        (["-r", real, "-g", generated, "--weights", tmp_path / "broken.pth"], "not an FID Inception weights file"),
        (["-r", real, "-g", generated, "--weights", tmp_path / "absent.pth"], "weights file does not exist"),
        (["-r", real, "-g", generated, *weights, "--output", tmp_path / "exists.json"], "use --overwrite"),
        (["-r", real, "-g", generated, *weights, "--batch-size", 0], "must be a positive integer"),
    ]
    for args, message in cases:
        result = run_fid(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert (tmp_path / "exists.json").read_text() == "{}"
    # A few images suffice to show that --overwrite replaces the file (the figure itself is checked above).
    small_real, small_generated = write_images(tmp_path / "r", 3, 2, 100), write_images(tmp_path / "g", 3, 3, 160)
    result = run_fid("-r", small_real, "-g", small_generated, *weights, "--output", tmp_path / "exists.json", "--overwrite")
    assert result.returncode == 0 and json.loads((tmp_path / "exists.json").read_text())["dims"] == 64


@pytest.mark.parametrize("kind", ["json", "text", "pickled namespace", "saved list"])
def test_a_weights_file_of_another_kind_says_what_is_expected(tmp_path, folders, kind):
    real, generated = folders
    weights = tmp_path / ("some.json" if kind == "json" else "weights.pth")
    if kind == "json":
        weights.write_text('{"fc.weight": [1, 2]}')
    elif kind == "text":
        weights.write_text("pt_inception weights\n")
    elif kind == "pickled namespace":
        weights.write_bytes(pickle.dumps(argparse.Namespace(weights=1)))
    else:
        torch.save([torch.zeros(2)], weights)
    result = run_fid("-r", real, "-g", generated, "--weights", weights, "--num-workers", 0, "--dims", 64)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: not an FID Inception weights file: "), result.stderr
    assert lines[0].endswith(f"({weights})")
    assert "pt_inception-2015-12-05-6726825d.pth" in lines[0] and "scripts/make_random_fid_weights.py" in lines[0]
    assert "weights_only" not in result.stderr  # torch's advice to turn it off would run code from the file


def test_help_and_docs_name_every_flag():
    help_text = run_here(SCRIPT, "--help").stdout
    docs = (ROOT / "docs" / "steps.md").read_text()
    for flag in ["--real", "--generated", "--dims", "--batch-size", "--num-workers", "--device", "--weights", "--output", "--overwrite", "--debug"]:
        assert flag in help_text and flag in docs, flag
