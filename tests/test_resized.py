"""The resized-photo cache training reads (whaleaudit.data.resized): the same pixels as a fresh decode, one
decode per photo, a new entry when the photo changes, and nothing half-written ever read."""

import os

import numpy as np
import pytest
from PIL import Image

from whaleaudit.data.images import load_rgb_resized
from whaleaudit.data.resized import ResizedPhotos
from whaleaudit.errors import ImageError
from whaleaudit.model.train import ReadImage

SIZE = 32


def noisy_jpeg(path, seed: int, shape=(300, 400)) -> None:
    """A JPEG of noise: it compresses badly, so its file is far larger than a 32 px entry."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def entries(folder):
    return sorted(p for p in folder.rglob("*.npy"))


def test_a_large_photo_is_decoded_once_and_read_back_unchanged(tmp_path):
    photo, folder = tmp_path / "a.jpg", tmp_path / "cache"
    noisy_jpeg(photo, 0)
    photos = ResizedPhotos(SIZE, folder)
    first = photos(photo)
    np.testing.assert_array_equal(first, load_rgb_resized(photo, SIZE))
    [entry] = entries(folder)
    np.testing.assert_array_equal(np.load(entry), first)
    planted = np.full_like(first, 7)  # the second call must come from the entry, not from the file
    np.save(entry, planted)
    np.testing.assert_array_equal(photos(photo), planted)


def test_a_changed_photo_gets_a_new_entry(tmp_path):
    photo, folder = tmp_path / "a.jpg", tmp_path / "cache"
    noisy_jpeg(photo, 0)
    photos = ResizedPhotos(SIZE, folder)
    before = photos(photo)
    noisy_jpeg(photo, 1)
    os.utime(photo, ns=(os.stat(photo).st_atime_ns, os.stat(photo).st_mtime_ns + 1_000_000))
    after = photos(photo)
    np.testing.assert_array_equal(after, load_rgb_resized(photo, SIZE))
    assert not np.array_equal(before, after)
    assert len(entries(folder)) == 2


def test_a_small_photo_is_not_kept(tmp_path):
    photo, folder = tmp_path / "small.png", tmp_path / "cache"
    Image.new("RGB", (SIZE, SIZE), (10, 20, 30)).save(photo)
    np.testing.assert_array_equal(ResizedPhotos(SIZE, folder)(photo), load_rgb_resized(photo, SIZE))
    assert entries(folder) == []


def test_a_damaged_entry_is_decoded_again_and_rewritten(tmp_path):
    photo, folder = tmp_path / "a.jpg", tmp_path / "cache"
    noisy_jpeg(photo, 0)
    photos = ResizedPhotos(SIZE, folder)
    expected = photos(photo)
    [entry] = entries(folder)
    entry.write_bytes(entry.read_bytes()[:40])  # as a disk that filled up under another writer might leave it
    np.testing.assert_array_equal(photos(photo), expected)
    np.testing.assert_array_equal(np.load(entry), expected)


def test_an_unwritable_cache_costs_only_the_decode(tmp_path):
    photo, blocked = tmp_path / "a.jpg", tmp_path / "not-a-folder"
    noisy_jpeg(photo, 0)
    blocked.write_text("a file where the cache folder would go")
    np.testing.assert_array_equal(ResizedPhotos(SIZE, blocked / "cache")(photo), load_rgb_resized(photo, SIZE))


def test_a_missing_photo_is_an_image_error_naming_it(tmp_path):
    with pytest.raises(ImageError, match="gone.jpg: file not found"):
        ResizedPhotos(SIZE, tmp_path / "cache")(tmp_path / "gone.jpg")


def test_training_reads_through_the_workspace_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WHALEAUDIT_HOME", str(tmp_path / "home"))
    noisy_jpeg(tmp_path / "a.jpg", 0)
    image = ReadImage(tmp_path, SIZE)({"path": "a.jpg"})
    np.testing.assert_array_equal(np.array(image), load_rgb_resized(tmp_path / "a.jpg", SIZE))
    assert len(entries(tmp_path / "home" / ".cache" / "resized" / str(SIZE))) == 1
