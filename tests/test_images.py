"""Every way an image file can be bad ends as an ImageError with a reason; every good one decodes upright RGB."""

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, JpegImagePlugin

from whaleaudit.data.images import load_rgb, load_rgb_reduced, load_rgb_resized, resolve_image
from whaleaudit.errors import ImageError

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def halves(left=RED, right=BLUE, size=(40, 20)) -> Image.Image:
    """Left half one colour, right half another: shows both rotation and cropping."""
    im = Image.new("RGB", size, right)
    im.paste(left, (0, 0, size[0] // 2, size[1]))
    return im


def save(im: Image.Image, path, fmt=None, **kw):
    im.save(path, fmt, **kw)
    return path


def jpeg_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def close(rgb, colour, tol=12):
    return np.abs(rgb.astype(int) - colour).max() <= tol


# --- files that cannot be decoded ----------------------------------------------------------------------------


def test_truncated_jpeg_is_refused(tmp_path):
    data = jpeg_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError, match="truncated"):
        load_rgb(path)
    with pytest.raises(ImageError, match="truncated"):
        load_rgb_resized(path, 32)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg: empty file \(0 bytes\)"):
        load_rgb(tmp_path / "empty.jpg")


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("image,species\nthis is not a photo\n")
    with pytest.raises(ImageError, match="text file, not an image"):
        load_rgb(tmp_path / "notes.jpg")


def test_unknown_binary_format(tmp_path):
    (tmp_path / "blob.jpg").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ImageError, match="not an image format"):
        load_rgb(tmp_path / "blob.jpg")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="absent.jpg: file not found"):
        load_rgb(tmp_path / "absent.jpg")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(ImageError, match="folder, not an image"):
        load_rgb_resized(tmp_path / "dir.jpg", 16)


def test_decompression_bomb_limit_is_an_error(tmp_path, monkeypatch):
    """Over the limit Pillow only warns; over twice the limit it raises. Both must stop the image."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    save(Image.new("RGB", (40, 40)), tmp_path / "warn.png")  # 1,600 pixels: Pillow's warning zone
    save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")  # 10,000 pixels: Pillow's error zone
    with pytest.raises(ImageError, match="too many pixels.*1600 pixels"):
        load_rgb(tmp_path / "warn.png")
    with pytest.raises(ImageError, match="too many pixels.*10000 pixels"):
        load_rgb_resized(tmp_path / "bomb.png", 8)


def test_under_the_pixel_limit_decodes(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    save(Image.new("RGB", (30, 30), RED), tmp_path / "small.png")
    assert close(load_rgb(tmp_path / "small.png")[0, 0], RED, 0)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_bytes_give_an_image_or_image_error(tmp_path, data):
    """Flip, cut or replace bytes of a real JPEG/PNG: nothing but ImageError may come out."""
    fmt = data.draw(st.sampled_from(["JPEG", "PNG"]))
    buf = io.BytesIO()
    halves(size=(24, 16)).save(buf, fmt)
    raw = bytearray(buf.getvalue())
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))] + data.draw(st.binary(max_size=64))
    path = tmp_path / "mangled.img"
    path.write_bytes(bytes(raw))
    for load in (load_rgb, lambda p: load_rgb_resized(p, 8)):
        try:
            rgb = load(path)
        except ImageError as e:
            assert str(e).startswith("mangled.img: ")
        else:
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


# --- colour modes ----------------------------------------------------------------------------------------------


def test_rgba_is_composited_on_white(tmp_path):
    im = Image.new("RGBA", (4, 2), (255, 0, 0, 0))  # transparent red: must come out white, not red
    im.putpixel((0, 0), (0, 0, 255, 255))
    im.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black: mid grey
    rgb = load_rgb(save(im, tmp_path / "alpha.png"))
    assert rgb.shape == (2, 4, 3) and rgb.dtype == np.uint8
    assert close(rgb[0, 0], BLUE, 0)
    assert close(rgb[1, 3], WHITE, 0)
    assert close(rgb[0, 1], (127, 127, 127), 1)


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 0  # palette entry 0 (red) is transparent
    rgb = load_rgb(save(im, tmp_path / "palette.png", transparency=0))
    assert close(rgb[0, 0], WHITE, 0) and close(rgb[0, 1], (0, 255, 0), 0)


def test_palette_and_grey_and_bilevel(tmp_path):
    pal = Image.new("P", (3, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((2, 0), 1)
    assert load_rgb(save(pal, tmp_path / "p.png")).tolist() == [[[10, 20, 30], [10, 20, 30], [200, 100, 50]]]
    grey = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), "L")
    assert load_rgb(save(grey, tmp_path / "l.png")).tolist() == [[[0] * 3, [77] * 3, [255] * 3]]
    one = Image.new("1", (2, 1))
    one.putpixel((1, 0), 1)
    assert load_rgb(save(one, tmp_path / "one.png")).tolist() == [[[0] * 3, [255] * 3]]


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 100 * 257, 32768, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(levels), tmp_path / "deep.png")
    assert Image.open(path).mode == "I;16"
    rgb = load_rgb(path)
    assert rgb[0, :, 0].tolist() == [0, 100, 128, 255]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_cmyk_jpeg_comes_out_in_the_right_colours(tmp_path):
    im = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # cyan 0, magenta+yellow full: red
    im.paste((255, 255, 0, 0), (16, 0, 32, 16))  # cyan+magenta: blue
    rgb = load_rgb(save(im, tmp_path / "cmyk.jpg", quality=95))
    assert close(rgb[8, 4], RED, 20) and close(rgb[8, 28], BLUE, 20)
    assert close(load_rgb_resized(tmp_path / "cmyk.jpg", 8)[4, 1], RED, 20)


@pytest.mark.parametrize("orientation, shape, top_colour", [
    (1, (20, 40, 3), None),  # no rotation: left half red
    (6, (40, 20, 3), RED),  # stored rotated: turn 90 degrees clockwise, so the red left half ends on top
    (8, (40, 20, 3), BLUE),  # turn 90 degrees anticlockwise: the blue right half ends on top
    (3, (20, 40, 3), None),  # 180 degrees: red ends on the right
])
def test_exif_orientation_is_applied(tmp_path, orientation, shape, top_colour):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(halves(), tmp_path / "turned.jpg", exif=exif, quality=95)
    for rgb in (load_rgb(path), load_rgb_resized(path, 40)):
        assert rgb.shape[2] == 3
        if top_colour is not None:
            top, bottom = (rgb[: rgb.shape[0] // 4], rgb[-rgb.shape[0] // 4:])
            assert close(top.mean((0, 1)), top_colour, 20)
            assert close(bottom.mean((0, 1)), BLUE if top_colour == RED else RED, 20)
    rgb = load_rgb(path)
    assert rgb.shape == shape
    left, right = rgb[:, :4].mean((0, 1)), rgb[:, -4:].mean((0, 1))
    if orientation == 1:
        assert close(left, RED, 20) and close(right, BLUE, 20)
    if orientation == 3:
        assert close(left, BLUE, 20) and close(right, RED, 20)


# --- resizing ----------------------------------------------------------------------------------------------


def test_resized_is_squashed_not_cropped(tmp_path):
    """Four bands across a wide photo all survive: a centre crop would lose the outer two."""
    colours = [RED, (0, 255, 0), BLUE, (255, 255, 0)]
    im = Image.new("RGB", (64, 16))
    for k, c in enumerate(colours):
        im.paste(c, (16 * k, 0, 16 * (k + 1), 16))
    rgb = load_rgb_resized(save(im, tmp_path / "wide.png"), 32)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8 and rgb.flags.writeable
    for k, c in enumerate(colours):
        assert close(rgb[16, 8 * k + 4], c, 0)


def test_large_jpeg_is_decoded_at_reduced_scale_then_resized(tmp_path, monkeypatch):
    """A 1600 px JPEG wanted at 64 px is decoded at 1/8 scale (the speed), and still comes out right."""
    path = save(halves(size=(1600, 800)), tmp_path / "big.jpg", quality=95)
    decoded = []
    load = JpegImagePlugin.JpegImageFile.load
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", lambda im: decoded.append(im.size) or load(im))
    rgb = load_rgb_resized(path, 64)
    assert decoded and set(decoded) == {(200, 100)}
    assert rgb.shape == (64, 64, 3)
    assert close(rgb[:, :28].mean((0, 1)), RED, 12) and close(rgb[:, 36:].mean((0, 1)), BLUE, 12)


@pytest.mark.parametrize("full, size, decoded", [
    ((2400, 1600), 128, (300, 200)),   # 1/8 keeps both sides >= 128
    ((2400, 1600), 256, (600, 400)),   # 1/8 would leave the short side at 200: 1/4
    ((1000, 250), 128, (1000, 250)),   # 1/2 would leave the short side at 125: full size
    ((100, 80), 128, (100, 80)),       # smaller than wanted: as it is
])
def test_reduced_decode_is_the_smallest_scale_that_keeps_the_size(tmp_path, full, size, decoded):
    """Decoded at the smallest JPEG scale whose sides both stay >= ``size``, with the photo's full size beside
    it, and the same picture as the full decode shrunk to that size."""
    path = save(halves(size=full), tmp_path / "photo.jpg", quality=90)
    rgb, full_size = load_rgb_reduced(path, size)
    assert full_size == full and rgb.shape == (decoded[1], decoded[0], 3) and rgb.dtype == np.uint8
    shrunk = np.asarray(Image.fromarray(load_rgb(path)).resize(decoded, Image.Resampling.BOX)).astype(int)
    assert np.abs(rgb.astype(int) - shrunk).mean() < 2


def test_reduced_decode_of_a_turned_photo_is_upright_with_its_upright_size(tmp_path):
    """A photo stored on its side (EXIF orientation 6): upright pixels, and the full size of the upright photo,
    the frame in which a user's boxes are drawn."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(halves(size=(2400, 1600)), tmp_path / "turned.jpg", exif=exif, quality=90)
    rgb, full_size = load_rgb_reduced(path, 128)
    assert full_size == (1600, 2400) and rgb.shape == (300, 200, 3)
    assert close(rgb[:100].mean((0, 1)), RED, 20) and close(rgb[-100:].mean((0, 1)), BLUE, 20)


def test_real_photos_decode_exactly(real_photos):
    """At their own size the real 128 px photos are decoded pixel for pixel as Pillow does."""
    for path in sorted((real_photos / "images").iterdir())[:20]:
        with Image.open(path) as im:
            expected = np.asarray(im.convert("RGB"))
        assert np.array_equal(load_rgb_resized(path, 128), expected)
        assert np.array_equal(load_rgb(path), expected)


# --- confinement ------------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    save(halves(), root / "sub" / "a.jpg")
    save(halves(), tmp_path / "secret.jpg")
    return root


def test_resolve_inside_the_root(root):
    assert resolve_image(root, "sub/a.jpg") == (root / "sub" / "a.jpg").resolve()
    assert resolve_image(str(root), "./sub//a.jpg") == (root / "sub" / "a.jpg").resolve()
    os.symlink(root / "sub" / "a.jpg", root / "alias.jpg")  # a link that stays inside is fine
    assert resolve_image(root, "alias.jpg") == (root / "sub" / "a.jpg").resolve()


@pytest.mark.parametrize("relpath, reason", [
    ("../secret.jpg", r"'\.\.' leads out"),
    ("sub/../../secret.jpg", r"'\.\.' leads out"),
    ("sub\\..\\..\\secret.jpg", r"'\.\.' leads out"),
    ("/etc/passwd", "absolute path"),
    ("C:\\Windows\\win.ini", "absolute path"),
    ("a\0b.jpg", "not a usable path"),
])
def test_resolve_refuses_paths_out_of_the_root(root, relpath, reason):
    with pytest.raises(ImageError, match=reason):
        resolve_image(root, relpath)


def test_resolve_refuses_a_symlink_out_of_the_root(root):
    os.symlink(root.parent / "secret.jpg", root / "sub" / "escape.jpg")
    os.symlink(root.parent, root / "up")
    with pytest.raises(ImageError, match="symbolic link leads out"):
        resolve_image(root, "sub/escape.jpg")
    with pytest.raises(ImageError, match="symbolic link leads out"):
        resolve_image(root, "up/secret.jpg")
