"""Image opening gives 8-bit RGB of the original size for every mode; path checks refuse escapes."""

import os

import numpy as np
import pytest
from PIL import Image

from cocoaug.errors import UserError
from cocoaug.images import open_rgb
from cocoaug.paths import refuse_output_inside, resolve_under


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("L", (7, 5), 128),
        lambda: Image.new("RGBA", (7, 5), (255, 0, 0, 0)),
        lambda: Image.new("P", (7, 5), 3),
        lambda: Image.new("CMYK", (7, 5), (0, 0, 0, 0)),
        lambda: Image.fromarray(np.full((5, 7), 65535, dtype=np.uint16)),
    ],
    ids=["L", "RGBA", "P", "CMYK", "I;16"],
)
def test_every_mode_becomes_rgb(tmp_path, make):
    image = make()
    path = tmp_path / ("x.tif" if image.mode == "CMYK" else "x.png")
    image.save(path)
    rgb = open_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (7, 5)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((2, 2), 32768, dtype=np.uint16)).save(tmp_path / "x.png")
    assert open_rgb(tmp_path / "x.png").getpixel((0, 0)) == (128, 128, 128)


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (2, 2), (255, 0, 0, 0)).save(tmp_path / "x.png")
    assert open_rgb(tmp_path / "x.png").getpixel((0, 0)) == (255, 255, 255)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="image file not found"):
        open_rgb(tmp_path / "none.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(UserError, match="cannot read image") as info:
        open_rgb(tmp_path / "cut.png")
    assert "cut.png" in str(info.value)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.png", "a/../../x.png", "C:\\x.png", ""])
def test_paths_that_escape_are_refused(tmp_path, name):
    with pytest.raises(UserError):
        resolve_under(tmp_path, name)


def test_link_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path, root / "out")
    with pytest.raises(UserError, match="outside the image folder"):
        resolve_under(root, "out/x.png")
    assert resolve_under(root, "sub dir/café.png") == root / "sub dir" / "café.png"


def test_output_equal_to_or_inside_a_picture_folder_is_refused(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    os.symlink(images, tmp_path / "link")
    for output in (images / ".", images / "out", images / "sub" / "deeper", tmp_path / "link" / "out"):
        with pytest.raises(UserError, match="image folder") as refused:
            refuse_output_inside(output, {"image folder": images})
        assert str(images) in str(refused.value) and str(output) in str(refused.value)
    refuse_output_inside([tmp_path / "out", tmp_path / "images2"], {"image folder": images, "unused": None})
    refuse_output_inside(tmp_path, {"image folder": images})  # a folder holding the pictures is not inside them