"""Image sources: list a dataset, decode one image exactly as the model sees it, batch with skips.

Decoding never fails a scan: unreadable, truncated, non-image and oversized files become a skip
reason. Pillow's decompression-bomb guard stays on (``Image.MAX_IMAGE_PIXELS`` is never changed
and truncated files are never "loaded anyway"). Resize and crop use ``service.scan.geometry``, the
same arithmetic the API uses to map boxes back, so boxes land on the pixels the model saw.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from service.scan.errors import DatasetError
from service.scan.geometry import Preprocess, crop_origin, resized_size

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BACKGROUND = (255, 255, 255)  # transparent pixels are composited over white
MAX_RESIZED_PIXELS = 1 << 24  # above this, only the cropped part of the resized image is computed


@dataclass(frozen=True)
class ImageRecord:
    id: int
    path: str
    label: str | None


def _label(rel: PurePosixPath) -> str | None:
    return rel.parts[0] if len(rel.parts) > 1 else None


def list_images(root: Path, files: list[str] | None = None) -> list[ImageRecord]:
    """Folder scan (recursive, hidden entries skipped, sorted by relative path) or an explicit list."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root.name!r} is not a folder")
    if files is None:
        rels = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.suffix.lower() in EXTENSIONS and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    else:
        rels = [_checked_relative(f) for f in files]
        if len(set(rels)) != len(rels):
            raise DatasetError("the file list names some files more than once")
    if not rels:
        raise DatasetError("the dataset holds no images")
    return [ImageRecord(i, rel, _label(PurePosixPath(rel))) for i, rel in enumerate(rels)]


def _checked_relative(name) -> str:
    if not isinstance(name, str) or not name:
        raise DatasetError("file list entries must be non-empty strings")
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        raise DatasetError(f"file list entry {name!r} must be relative to the dataset root")
    return rel.as_posix()


class Skipped(Exception):
    """An image that cannot be used; the message is the reason reported to the user."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit grey rescaled, alpha over white, CMYK/palette converted."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float32)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).round().astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, BACKGROUND + (255,))
        img = Image.alpha_composite(background, img)
    return img if img.mode == "RGB" else img.convert("RGB")


def read_image(path: Path, preprocess: Preprocess) -> tuple[torch.Tensor, int, int]:
    """Decode, resize and crop to a uint8 [3, S, S] tensor; plus original width and height.

    JPEG decoding uses ``draft`` (DCT-domain downscaling) when the image is at least twice the
    resize target, then resizes to the exact size torchvision's ``Resize`` would produce.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                target = resized_size(width, height, preprocess)
                if img.format == "JPEG" and img.mode == "RGB" and target[0] * 2 <= width and target[1] * 2 <= height:
                    img.draft("RGB", target)
                img.load()
                rgb = _to_rgb(img)
    except Image.DecompressionBombError:
        raise Skipped("too large") from None
    except UnidentifiedImageError:
        raise Skipped("not an image") from None
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise Skipped("truncated") from None
        raise Skipped(f"unreadable: {exc.strerror or exc}"[:200]) from None
    except (ValueError, SyntaxError) as exc:  # Pillow plugins raise these on malformed headers
        raise Skipped(f"unreadable: {exc}"[:200]) from None
    left, top = crop_origin(width, height, preprocess)
    size = preprocess.input_size
    if rgb.size != target and target[0] * target[1] > MAX_RESIZED_PIXELS:
        rgb = _resized_crop(rgb, target, left, top, size)
    else:
        if rgb.size != target:
            rgb = rgb.resize(target, Image.BILINEAR)
        rgb = rgb.crop((left, top, left + size, top + size))  # zero-pads outside, as CenterCrop does
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1), width, height


def _resized_crop(img: Image.Image, target: tuple[int, int], left: int, top: int, size: int) -> Image.Image:
    """``img.resize(target).crop((left, top, left + size, top + size))`` computing only the cropped
    pixels: Pillow's ``box`` keeps the scale and reads source pixels beyond the box for the filter,
    so the pixels are the same up to float rounding (at most 1 of 255), but a panorama of extreme
    aspect ratio (65000x1 -> 16.6M x 256) does not allocate gigabytes that the crop throws away.
    Used only past ``MAX_RESIZED_PIXELS``; outside the image stays zero, as in ``CenterCrop``."""
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + size, target[0]), min(top + size, target[1])
    sx, sy = img.width / target[0], img.height / target[1]
    part = img.resize((x1 - x0, y1 - y0), Image.BILINEAR, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    if part.size == (size, size):
        return part
    out = Image.new("RGB", (size, size))
    out.paste(part, (x0 - left, y0 - top))
    return out


def normalise(batch: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """uint8 [N,3,S,S] -> float, exactly ToTensor() then Normalize(mean, std)."""
    mean = torch.tensor(preprocess.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=batch.device).view(1, 3, 1, 1)
    return batch.float().div_(255).sub_(mean).div_(std)


def load_model_input(path: Path, preprocess: Preprocess) -> tuple[torch.Tensor, int, int]:
    """One image as the model sees it ([3,S,S] normalised) plus its original width, height."""
    try:
        pixels, width, height = read_image(Path(path), preprocess)
    except Skipped as exc:
        raise DatasetError(f"cannot use {Path(path).name}: {exc}") from None
    return normalise(pixels.unsqueeze(0), preprocess)[0], width, height


@dataclass
class Batch:
    pixels: torch.Tensor | None  # uint8 [n, 3, S, S] of the readable images, None if none
    ids: torch.Tensor      # int64 [n]
    outcomes: list         # (record, width, height, skip reason) for every image of the batch


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, root: Path, records: list[ImageRecord], preprocess: Preprocess):
        self.root, self.records, self.preprocess = Path(root), records, preprocess

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        record = self.records[i]
        try:
            pixels, width, height = read_image(self.root / record.path, self.preprocess)
        except Skipped as exc:
            return record, None, None, None, str(exc)
        return record, pixels, width, height, None


def collate(items) -> Batch:
    """Stack readable images; skipped ones only travel as outcomes."""
    good = [it for it in items if it[1] is not None]
    pixels = torch.stack([it[1] for it in good]) if good else None
    ids = torch.tensor([it[0].id for it in good], dtype=torch.int64)
    return Batch(pixels, ids, [(rec, w, h, reason) for rec, _, w, h, reason in items])
