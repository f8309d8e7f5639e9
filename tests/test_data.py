"""Image decoding of awkward inputs, and the eval preprocessing's geometry against PaddleClas's rules."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mobilezoo.data import ImageError, decode_image, eval_preprocess, find_images, load_image

from .conftest import DATA


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    "mode, fmt",
    [("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("L", "JPEG"), ("I;16", "PNG"), ("1", "PNG")],
)
def test_every_mode_becomes_rgb(mode, fmt):
    img = Image.new(mode, (40, 30))
    out = decode_image(_encode(img, fmt), f"x.{fmt.lower()}")
    assert out.mode == "RGB" and out.size == (40, 30)


def test_transparency_composited_on_white_and_16bit_scaled():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert decode_image(_encode(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    g16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert decode_image(_encode(g16, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = decode_image(_encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 60)


def test_bad_files_get_one_line_errors(tmp_path):
    good = (DATA / "images" / "cat.jpg").read_bytes()
    cases = {
        "empty.jpg": (b"", "empty file"),
        "text.jpg": (b"hello, not an image at all", "not an image"),
        "truncated.jpg": (good[: len(good) // 2], "corrupt or truncated"),
        "corrupt.png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "corrupt or truncated|not an image"),
    }
    for name, (data, why) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(ImageError, match=why) as ei:
            load_image(p)
        assert str(p) in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "absent.jpg")


def test_decompression_bomb_refused_by_pixel_limit():
    big = _encode(Image.new("L", (3000, 3000)), "PNG")  # small file, many pixels
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(big, "bomb.png", max_pixels=1_000_000)


def test_find_images_files_folders_globs(tmp_path):
    paths, problems = find_images([DATA / "images", str(DATA / "images" / "c*.jpg"), tmp_path / "nope.jpg"])
    names = [p.name for p in paths]
    assert names.count("cat.jpg") == 2 and len(names) == 6 + 3
    assert problems == [f"{tmp_path / 'nope.jpg'}: no such file"]


def test_eval_geometry_is_paddleclas():
    pre = eval_preprocess()
    # PaddleClas ResizeImage: short side 256, both sides int(round(side * 256 / short))
    assert pre.resized_size(451, 300) == (round(451 * 256 / 300), 256) == (385, 256)
    assert pre.resized_size(300, 451) == (256, 385)
    img = load_image(DATA / "images" / "cat.jpg")
    x = pre(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    # CropImage: offsets floored, (385 - 224) // 2 = 80 (torchvision's CenterCrop rounds to 81)
    t = torch.arange(385, dtype=torch.uint8).repeat(3, 256, 1)
    assert int(pre.geometry(t)[0, 0, 0]) == 80


def test_normalize_matches_formula():
    pre = eval_preprocess({"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    x = torch.full((3, 256, 256), 51, dtype=torch.uint8)
    torch.testing.assert_close(pre(x), torch.full((3, 224, 224), (51 / 255 - 0.5) / 0.25))
