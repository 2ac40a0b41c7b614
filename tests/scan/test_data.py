"""Datasets: listing, odd image formats converted, bad files skipped with reasons, never fatal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from service.scan.data import list_images, load_model_input, read_image
from service.scan.errors import DatasetError
from service.scan.geometry import IMAGENET_CLASSIC, Preprocess
from service.scan.scanner import scan

PHOTO = "n02099601_golden_retriever.JPEG"


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory, imagenet_dir):
    """Every kind of file a user folder holds, built from one real photo."""
    root = tmp_path_factory.mktemp("odd")
    photo = Image.open(imagenet_dir / PHOTO).convert("RGB")
    (root / "dogs").mkdir()
    photo.save(root / "dogs" / "rgb.jpg")
    photo.convert("L").save(root / "dogs" / "grey.png")
    photo.convert("CMYK").save(root / "cmyk.jpg")
    photo.convert("P").save(root / "palette.gif")
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "rgba.png")
    grey16 = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey16).save(root / "grey16.png")
    full = (imagenet_dir / PHOTO).read_bytes()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "notes.jpg").write_text("this is not an image")
    Image.new("RGB", (1000, 1000)).save(root / "huge.png")
    (root / "readme.txt").write_text("ignored: not an image extension")
    (root / ".hidden.jpg").write_bytes(full)
    return root


def test_folder_listing_is_sorted_recursive_with_labels(odd_folder):
    records = list_images(odd_folder)
    assert [r.path for r in records] == sorted(r.path for r in records)
    assert [r.id for r in records] == list(range(len(records)))
    assert "readme.txt" not in {r.path for r in records} and ".hidden.jpg" not in {r.path for r in records}
    assert {r.path: r.label for r in records}["dogs/grey.png"] == "dogs"
    assert {r.path: r.label for r in records}["cmyk.jpg"] is None


def test_explicit_file_list_keeps_order_and_refuses_duplicates_and_escapes(odd_folder):
    assert [r.path for r in list_images(odd_folder, ["rgba.png", "dogs/rgb.jpg"])] == ["rgba.png", "dogs/rgb.jpg"]
    for bad in (["a.png", "a.png"], ["../etc/passwd"], ["/etc/passwd"], []):
        with pytest.raises(DatasetError):
            list_images(odd_folder, bad)


def test_empty_or_missing_folder_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="no images"):
        list_images(tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        list_images(tmp_path / "missing")


def test_scan_of_an_odd_folder_completes_and_reports_skips(odd_folder, mobilenet, monkeypatch):
    # The guard stays on; a lower limit lets a small file trip it (error above twice the limit).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300_000)
    records = list_images(odd_folder)
    result = scan(mobilenet, odd_folder, records, ["features.1"], k=3, batch_size=4, num_workers=0)
    skipped = {o.record.path: o.skipped for o in result.images}
    assert skipped == {
        "cmyk.jpg": None, "dogs/grey.png": None, "dogs/rgb.jpg": None, "grey16.png": None,
        "huge.png": "too large", "notes.jpg": "not an image", "palette.gif": None, "rgba.png": None,
        "truncated.jpg": "truncated",
    }
    sizes = {o.record.path: (o.width, o.height) for o in result.images}
    assert sizes["grey16.png"] == Image.open(odd_folder / "dogs" / "rgb.jpg").size
    assert sizes["notes.jpg"] == (None, None)
    used = set(result.topk["features.1"].image_ids.flatten().tolist())
    assert used <= {r.id for r in records if skipped[r.path] is None}


def test_sixteen_bit_grey_is_rescaled_not_saturated(odd_folder):
    deep, _, _ = read_image(odd_folder / "grey16.png", IMAGENET_CLASSIC)
    grey, _, _ = read_image(odd_folder / "dogs" / "grey.png", IMAGENET_CLASSIC)
    assert (deep.int() - grey.int()).abs().max() <= 1


def test_model_input_equals_torchvision_resize_crop_normalise(imagenet_dir):
    pipeline = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_CLASSIC.mean, IMAGENET_CLASSIC.std),
    ])
    with Image.open(imagenet_dir / PHOTO) as img:
        expected, size = pipeline(img.convert("RGB")), img.size
    pixels, width, height = load_model_input(imagenet_dir / PHOTO, IMAGENET_CLASSIC)
    assert (width, height) == size
    assert torch.equal(pixels, expected)


def test_small_images_are_zero_padded_like_center_crop(tmp_path):
    Image.new("RGB", (20, 11), (200, 100, 50)).save(tmp_path / "small.png")
    pre = Preprocess(resize=None, crop=32, mean=(0, 0, 0), std=(1, 1, 1), input_size=32)
    expected = transforms.Compose([transforms.CenterCrop(32), transforms.PILToTensor()])(Image.open(tmp_path / "small.png"))
    pixels, _, _ = read_image(tmp_path / "small.png", pre)
    assert torch.equal(pixels, expected)


def test_unusable_single_image_is_a_dataset_error(odd_folder):
    with pytest.raises(DatasetError, match="not an image"):
        load_model_input(odd_folder / "notes.jpg", IMAGENET_CLASSIC)


def test_extreme_panorama_is_resized_only_where_the_crop_looks(tmp_path, monkeypatch):
    """A 40000x2 strip resizes to 5.12M x 256 px (3.9 GB of RGB) of which the crop keeps 224x224:
    only the cropped part may be resized, with the pixels torchvision computes (to rounding)."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (2, 40000, 3), dtype=np.uint8)).save(tmp_path / "strip.png")
    Image.fromarray(rng.integers(0, 256, (30, 600, 3), dtype=np.uint8)).save(tmp_path / "pano.png")
    resize = Image.Image.resize

    def bounded_resize(img, size, *args, **kwargs):
        assert size[0] * size[1] <= 4 * 224 * 224, f"resize to {size} allocates pixels the crop drops"
        return resize(img, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", bounded_resize)
    pixels, width, height = read_image(tmp_path / "strip.png", IMAGENET_CLASSIC)
    assert (width, height, tuple(pixels.shape)) == (40000, 2, (3, 224, 224))
    monkeypatch.setattr(Image.Image, "resize", resize)
    monkeypatch.setattr("service.scan.data.MAX_RESIZED_PIXELS", 0)  # the windowed path on a checkable size
    pipeline = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.PILToTensor()])
    windowed, _, _ = read_image(tmp_path / "pano.png", IMAGENET_CLASSIC)
    assert (windowed.int() - pipeline(Image.open(tmp_path / "pano.png")).int()).abs().max() <= 1
