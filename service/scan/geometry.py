"""Preprocessing parameters and the exact mapping from model-input pixels to original pixels.

Pure Python on purpose: the API imports this module to turn stored boxes into original-image
boxes without importing torch. The resize and crop rules replicate torchvision's ``Resize(int)``
and ``CenterCrop`` (including their rounding and the zero padding of too-small images), and
``service.scan.data`` builds its tensors from these same functions, so a box computed here lands
on exactly the pixels the model saw.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from service.scan.errors import ModelSpecError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FIELDS = ("resize", "crop", "mean", "std", "input_size")


def _positive_int_or_none(name: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ModelSpecError(f"preprocess.{name} must be a positive integer or null, got {value!r}")


def _triple(name: str, value) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ModelSpecError(f"preprocess.{name} must be three numbers, got {value!r}") from None
    if len(triple) != 3 or not all(math.isfinite(v) for v in triple):
        raise ModelSpecError(f"preprocess.{name} must be three finite numbers, got {value!r}")
    return triple  # type: ignore[return-value]


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize`` (if set), centre-crop ``input_size``, normalise.

    ``crop`` is kept for reporting; when set it must equal ``input_size`` because the tensor fed to
    the model is always the ``input_size`` square centre crop (with ``crop`` unset the crop is still
    ``input_size``, which makes batches of differently shaped images possible).
    """

    resize: int | None
    crop: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int

    def __post_init__(self) -> None:
        _positive_int_or_none("resize", self.resize)
        _positive_int_or_none("crop", self.crop)
        _positive_int_or_none("input_size", self.input_size)
        if self.input_size is None:
            raise ModelSpecError("preprocess.input_size is required when neither crop nor resize is set")
        if self.crop is not None and self.crop != self.input_size:
            raise ModelSpecError(f"preprocess.crop ({self.crop}) must equal input_size ({self.input_size})")
        object.__setattr__(self, "mean", _triple("mean", self.mean))
        object.__setattr__(self, "std", _triple("std", self.std))
        if any(s <= 0 for s in self.std):
            raise ModelSpecError("preprocess.std values must be positive")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        if not isinstance(d, dict):
            raise ModelSpecError("preprocess must be an object")
        unknown = set(d) - set(FIELDS)
        if unknown:
            raise ModelSpecError(f"unknown preprocess fields: {sorted(unknown)}")
        size = d.get("input_size") or d.get("crop") or d.get("resize")
        return cls(
            resize=d.get("resize"),
            crop=d.get("crop"),
            mean=d.get("mean", IMAGENET_MEAN),
            std=d.get("std", IMAGENET_STD),
            input_size=size,
        )

    def with_overrides(self, overrides: dict | None) -> "Preprocess":
        """Apply a spec's partial overrides; the input size follows an overridden crop."""
        if not overrides:
            return self
        if not isinstance(overrides, dict):
            raise ModelSpecError("preprocess must be an object")
        merged = self.to_dict()
        merged.update(overrides)
        if "crop" in overrides and "input_size" not in overrides:
            merged["input_size"] = overrides["crop"] or merged["resize"]
        return Preprocess.from_dict(merged)


IMAGENET_CLASSIC = Preprocess(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=224)


def resized_size(width: int, height: int, preprocess: Preprocess) -> tuple[int, int]:
    """Image size after torchvision's ``Resize(int)``: shorter side to ``resize``, long side truncated."""
    if preprocess.resize is None:
        return width, height
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = preprocess.resize, int(preprocess.resize * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _crop_start(extent: int, crop: int) -> int:
    """torchvision ``CenterCrop`` start along one axis; negative when it pads a too-small image."""
    if crop > extent:
        return -((crop - extent) // 2)
    return int(round((extent - crop) / 2.0))


def crop_origin(width: int, height: int, preprocess: Preprocess) -> tuple[int, int]:
    """Top-left corner (left, top) of the model input inside the resized image."""
    rw, rh = resized_size(width, height, preprocess)
    return _crop_start(rw, preprocess.input_size), _crop_start(rh, preprocess.input_size)


def original_box(
    box: tuple[int, int, int, int], width: int, height: int, preprocess: Preprocess, clip: bool = True
) -> tuple[int, int, int, int]:
    """Map a model-input box (x0, y0, x1, y1) to original-image pixels, rounding outward."""
    x0, y0, x1, y1 = box
    rw, rh = resized_size(width, height, preprocess)
    left, top = crop_origin(width, height, preprocess)
    ox0 = ((x0 + left) * width) // rw
    oy0 = ((y0 + top) * height) // rh
    ox1 = -((-(x1 + left) * width) // rw)
    oy1 = -((-(y1 + top) * height) // rh)
    if clip:
        ox0, ox1 = min(max(ox0, 0), width), min(max(ox1, 0), width)
        oy0, oy1 = min(max(oy0, 0), height), min(max(oy1, 0), height)
    return ox0, oy0, ox1, oy1
