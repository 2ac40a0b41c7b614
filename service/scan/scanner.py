"""The scan loop: stream a dataset through the model once, keep every unit's top-k on the device.

Per batch, each requested layer's map is reduced inside its forward hook (score and position per
image and channel) and offered to that layer's ``RunningTopK``; the forward stops after the
deepest requested layer. Decoding runs in DataLoader worker processes so it overlaps compute.
Results are deterministic: same batches, same reductions, a total order on ties.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from service.scan.data import ImageDataset, ImageRecord, collate, load_model_input, normalise
from service.scan.errors import LayerError, ScanCancelled
from service.scan.geometry import Preprocess
from service.scan.layers import FeatureTap, LayerInfo, resolve_layers
from service.scan.models import LoadedModel
from service.scan.receptive_field import ReceptiveField
from service.scan.topk import STATE_KEYS, RunningTopK

SCORES = ("max", "mean")


@dataclass(frozen=True)
class ImageOutcome:
    record: ImageRecord
    width: int | None
    height: int | None
    skipped: str | None


@dataclass
class ScanResult:
    layers: dict[str, LayerInfo]
    topk: dict[str, RunningTopK]
    images: list[ImageOutcome]
    preprocess: Preprocess
    score: str
    k: int
    pretrained: bool
    seconds: float
    device: str
    neuron: tuple[int, int] | None = None  # as requested; () = centre of each map

    def merge(self, other: "ScanResult") -> "ScanResult":
        """Combine scans of disjoint image shards of the same index into one result."""
        same = ("score", "k", "preprocess", "pretrained", "neuron")
        if list(self.layers) != list(other.layers) or any(getattr(self, a) != getattr(other, a) for a in same):
            raise ValueError("cannot merge scans with different layers or settings")
        if {o.record.id for o in self.images} & {o.record.id for o in other.images}:
            raise ValueError("cannot merge scans that share images")
        topk = {}
        for name, state in self.topk.items():
            topk[name] = RunningTopK.from_state_dict(state.state_dict(), state.values.device)
            topk[name].merge(other.topk[name])
        devices = sorted(set(self.device.split(",")) | set(other.device.split(",")))
        return ScanResult(
            layers=dict(self.layers), topk=topk,
            images=sorted(self.images + other.images, key=lambda o: o.record.id),
            preprocess=self.preprocess, score=self.score, k=self.k, pretrained=self.pretrained,
            seconds=self.seconds + other.seconds, device=",".join(devices), neuron=self.neuron,
        )

    def to_state(self) -> bytes:
        """Safetensors bytes: the top-k tensors plus everything else as JSON metadata (no pickle)."""
        tensors = {
            f"{i}.{key}": value
            for i, state in enumerate(self.topk.values())
            for key, value in state.state_dict().items()
        }
        meta = {
            "layers": [asdict(layer) for layer in self.layers.values()],
            "images": [[o.record.id, o.record.path, o.record.label, o.width, o.height, o.skipped] for o in self.images],
            "preprocess": self.preprocess.to_dict(), "score": self.score, "k": self.k,
            "pretrained": self.pretrained, "seconds": self.seconds, "device": self.device,
            "neuron": list(self.neuron) if self.neuron is not None else None,
        }
        return save_tensors(tensors, metadata={"unitscope": json.dumps(meta)})

    @classmethod
    def from_state(cls, blob: bytes) -> "ScanResult":
        tensors = load_tensors(blob)
        meta = json.loads(_metadata(blob)["unitscope"])
        layers = {}
        for d in meta["layers"]:
            d["receptive_field"] = ReceptiveField(**d["receptive_field"])
            layers[d["name"]] = LayerInfo(**d)
        topk = {
            name: RunningTopK.from_state_dict({key: tensors[f"{i}.{key}"] for key in STATE_KEYS})
            for i, name in enumerate(layers)
        }
        images = [ImageOutcome(ImageRecord(i, p, lab), w, h, s) for i, p, lab, w, h, s in meta["images"]]
        return cls(
            layers=layers, topk=topk, images=images, preprocess=Preprocess.from_dict(meta["preprocess"]),
            score=meta["score"], k=meta["k"], pretrained=meta["pretrained"], seconds=meta["seconds"],
            device=meta["device"], neuron=tuple(meta["neuron"]) if meta["neuron"] is not None else None,
        )


def _metadata(blob: bytes) -> dict:
    """Read the safetensors header (8-byte little-endian length, then JSON)."""
    size = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + size]).get("__metadata__", {})


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _Reducer:
    """Turns one layer's [N,C,H,W] map into per-(image, channel) scores and map positions.

    Scores use fast reductions (amax/mean); the position of the maximum, the costly part on CPU,
    is found only for the (image, channel) pairs whose score can still enter the top-k."""

    def __init__(self, score: str, neuron: tuple[int, int] | None, info: LayerInfo):
        self.score = score
        self.neuron = neuron
        if neuron is not None:
            y, x = neuron if neuron != () else (info.height // 2, info.width // 2)
            if not (0 <= y < info.height and 0 <= x < info.width):
                raise LayerError(f"neuron ({y}, {x}) is outside layer {info.name}'s {info.height}x{info.width} map")
            self.neuron = (y, x)

    def __call__(self, fmap: torch.Tensor, threshold: torch.Tensor):
        n, c, h, w = fmap.shape
        if self.neuron is not None:
            y, x = self.neuron
            ys = torch.full((n, c), y, dtype=torch.int64, device=fmap.device)
            return fmap[:, :, y, x].float(), ys, torch.full_like(ys, x)
        flat = fmap.flatten(2)
        scores = (flat.amax(dim=2) if self.score == "max" else flat.mean(dim=2)).float()
        # Positions only where a score can still enter the top-k. While most can (the first
        # batches of a scan), one pass over every map is cheaper than gathering the candidates'.
        candidates = scores >= threshold
        if candidates.sum() * 4 > candidates.numel():
            ys, xs = first_max_position(fmap)
        else:
            ys = torch.zeros((n, c), dtype=torch.int64, device=fmap.device)
            xs = torch.zeros_like(ys)
            pick = torch.nonzero(candidates, as_tuple=True)
            ys[pick], xs[pick] = first_max_position(fmap[pick])
        return scores, ys, xs


def first_max_position(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x) of the first maximum in row-major order of each [H, W] map of ``maps`` [..., H, W].

    Row maxima, then the best row, then the best column in that row: what a flat argmax gives,
    at a fraction of its cost on CPU, where argmax over a whole map is not vectorised.
    """
    ys = maps.amax(dim=-1).argmax(dim=-1)
    best_row = maps.gather(-2, ys[..., None, None].expand(*ys.shape, 1, maps.shape[-1])).squeeze(-2)
    return ys, best_row.argmax(dim=-1)


class LayerScanner:
    """The per-batch work of a scan, without the data source: forward through the tap, reduce each
    requested map in its hook, offer the scores to the layer's running top-k."""

    def __init__(self, loaded: LoadedModel, layers: list[LayerInfo], k: int, score: str,
                 neuron: tuple[int, int] | None, device: torch.device):
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}")
        self.preprocess, self.device = loaded.preprocess, device
        self.topk = {layer.name: RunningTopK(layer.channels, k, device) for layer in layers}
        self._reducers = {layer.name: _Reducer(score, neuron, layer) for layer in layers}
        self._ids = torch.empty(0, dtype=torch.int64)
        self._tap = FeatureTap(loaded.module, [layer.name for layer in layers], self._on_output)

    def _on_output(self, name: str, fmap: torch.Tensor) -> None:
        state = self.topk[name]
        state.add(*self._reducers[name](fmap, state.threshold()), self._ids)

    def add(self, pixels: torch.Tensor, ids: torch.Tensor) -> None:
        """One batch of uint8 [n,3,S,S] images (as decoded) with their image ids."""
        self._ids = ids.to(self.device)
        with torch.inference_mode():
            self._tap(normalise(pixels.to(self.device, non_blocking=True), self.preprocess))


def scan(loaded: LoadedModel, root: Path, records: list[ImageRecord], layer_names: list[str] | None,
         k: int = 9, score: str = "max", neuron: tuple[int, int] | None = None,
         batch_size: int = 32, device: str = "auto", num_workers: int = 2,
         progress: Callable[[int, int, float], None] | None = None,
         should_cancel: Callable[[], bool] | None = None) -> ScanResult:
    """Scan ``records`` (a whole dataset or one shard of it); see the module docstring.

    ``neuron`` = (y, x) switches to neuron mode; ``()`` means the centre of each layer's map.
    """
    started = time.perf_counter()
    pre = loaded.preprocess
    layers = resolve_layers(loaded.module, pre.input_size, layer_names)
    dev = pick_device(device)
    loader = torch.utils.data.DataLoader(
        ImageDataset(root, records, pre), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=collate, pin_memory=dev.type == "cuda",
    )
    outcomes: list[ImageOutcome] = []
    loaded.module.to(dev)
    try:
        scanner = LayerScanner(loaded, layers, k, score, neuron, dev)
        for batch in loader:
            if should_cancel is not None and should_cancel():
                raise ScanCancelled("scan cancelled")
            if batch.pixels is not None:
                scanner.add(batch.pixels, batch.ids)
            outcomes.extend(ImageOutcome(rec, w, h, reason) for rec, w, h, reason in batch.outcomes)
            if progress is not None:
                elapsed = time.perf_counter() - started
                progress(len(outcomes), len(records), len(outcomes) / elapsed if elapsed > 0 else 0.0)
    finally:
        loaded.module.to("cpu")
    return ScanResult(
        layers={layer.name: layer for layer in layers}, topk=scanner.topk, images=outcomes, preprocess=pre,
        score=score, k=k, pretrained=loaded.pretrained, seconds=time.perf_counter() - started,
        device=str(dev), neuron=tuple(neuron) if neuron is not None else None,
    )


def activation_map(loaded: LoadedModel, image_path: Path, layer: str, unit: int) -> torch.Tensor:
    """One unit's [H, W] feature map on one image (float32, CPU), for heatmaps."""
    pixels, _, _ = load_model_input(Path(image_path), loaded.preprocess)
    captured: dict[str, torch.Tensor] = {}

    def keep(_name, fmap):
        if not 0 <= unit < fmap.shape[1]:
            raise LayerError(f"unit {unit} is out of range for layer {layer} ({fmap.shape[1]} channels)")
        captured["map"] = fmap[0, unit].float().clone()

    with torch.inference_mode():
        FeatureTap(loaded.module, [layer], keep, stop_early=False)(pixels.unsqueeze(0))
    return captured["map"]
