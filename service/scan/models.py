"""Load a model from a spec: a torchvision architecture (hub-cached enum weights, a local
state_dict, or random init) or a TorchScript file.

Nothing is ever downloaded (workers have no internet) and nothing is unpickled beyond tensors
(``torch.load(weights_only=True)``); every way a spec can be wrong ends in a typed ``ScanError``.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
import torchvision
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from service.scan.errors import LayerError, ModelSpecError, UnsafeWeights, WeightsMismatch, WeightsNotFound
from service.scan.geometry import FIELDS as PREPROCESS_FIELDS
from service.scan.geometry import IMAGENET_CLASSIC, Preprocess

STATE_DICT_SUFFIXES = (".pth", ".pt", ".safetensors")


@dataclass(frozen=True)
class ModelSpec:
    arch: str | None = None
    weights: str | None = None
    torchscript: str | None = None
    num_classes: int | None = None
    preprocess: dict | None = None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        if not isinstance(d, dict):
            raise ModelSpecError("model spec must be an object")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ModelSpecError(f"unknown model spec fields: {sorted(unknown)}")
        for name in ("arch", "weights", "torchscript"):
            if d.get(name) is not None and (not isinstance(d[name], str) or not d[name]):
                raise ModelSpecError(f"{name} must be a non-empty string")
        if (d.get("arch") is None) == (d.get("torchscript") is None):
            raise ModelSpecError("give exactly one of arch (torchvision name) or torchscript (file path)")
        if d.get("torchscript") is not None and (d.get("weights") or d.get("num_classes")):
            raise ModelSpecError("weights and num_classes apply to arch, not to a TorchScript model")
        num_classes = d.get("num_classes")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
            raise ModelSpecError("num_classes must be a positive integer")
        preprocess = d.get("preprocess")
        if preprocess is not None:
            if not isinstance(preprocess, dict) or set(preprocess) - set(PREPROCESS_FIELDS):
                raise ModelSpecError(f"preprocess must be an object with fields among {list(PREPROCESS_FIELDS)}")
            IMAGENET_CLASSIC.with_overrides(preprocess)  # validates values
        return cls(**d)


@dataclass
class LoadedModel:
    module: torch.nn.Module
    spec: ModelSpec
    preprocess: Preprocess
    pretrained: bool


def list_architectures() -> list[str]:
    """Classification models of the torchvision registry (2-D image input, feature maps inside)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _weights_preprocess(weights) -> Preprocess:
    """Read the numbers of a torchvision weights enum's ``ImageClassification`` transform."""
    t = weights.transforms()
    try:
        return Preprocess(
            resize=int(t.resize_size[0]),
            crop=int(t.crop_size[0]),
            mean=tuple(t.mean),
            std=tuple(t.std),
            input_size=int(t.crop_size[0]),
        )
    except AttributeError:  # a transform without the classification numbers
        return IMAGENET_CLASSIC


def _weights_enum(arch: str, name: str):
    enum = torchvision.models.get_model_weights(arch)
    member = name.split(".", 1)[1] if "." in name else name
    if "." in name and name.split(".", 1)[0] != enum.__name__:
        raise ModelSpecError(f"weights {name!r} do not belong to {arch} (expected {enum.__name__}.*)")
    try:
        return enum[member] if member != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise ModelSpecError(f"unknown weights {name!r} for {arch}; known: {[w.name for w in enum]}") from None


def _require_cached(weights) -> None:
    """Refuse enum weights whose file is not already in the torch hub cache: never download."""
    filename = os.path.basename(urlparse(weights.url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not cached.is_file():
        raise WeightsNotFound(
            f"{type(weights).__name__}.{weights.name} is not in the torch hub cache ({cached}) and downloads "
            "are disabled; place the file there, or pass a local state_dict path as weights"
        )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsNotFound(f"weights file {path.name!r} not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsMismatch(f"{path.name} is not a readable safetensors file: {exc}") from None
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        # torch raises the same type for a forbidden global and for bytes that are no pickle at all
        problem = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0][:200]
        if "global" in problem.lower():
            raise UnsafeWeights(
                f"{path.name} needs unpickling of arbitrary objects, refused; save a plain state_dict ({problem})"
            ) from None
        raise WeightsMismatch(f"{path.name} is not a readable state_dict file ({problem})") from None
    except Exception as exc:  # torch raises many types for foreign or damaged files
        raise WeightsMismatch(f"{path.name} is not a readable state_dict file ({type(exc).__name__})") from None
    return _unwrap_checkpoint(obj, path.name)


def _unwrap_checkpoint(obj, name: str) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or the common {"state_dict": ...}/{"model": ...} checkpoint wrapper."""
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = [obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)]
        obj = inner[0] if inner else obj
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsMismatch(f"{name} does not hold a state_dict (a mapping of names to tensors)")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Strict load with a short message instead of torch's wall of keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if keys:
            problems.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
    if problems:
        hint = "; set num_classes if the classifier was retrained" if shapes else ""
        raise WeightsMismatch(f"{name} does not fit this architecture: {'; '.join(problems)}{hint}")
    model.load_state_dict(state, strict=True)


def _load_torchscript(path: Path) -> torch.nn.Module:
    if not path.is_file():
        raise WeightsNotFound(f"TorchScript file {path.name!r} not found")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError/ValueError for anything that is not a TorchScript archive
        raise ModelSpecError(f"{path.name} is not a loadable TorchScript file ({type(exc).__name__})") from None


def _build(arch: str, num_classes: int | None, weights=None) -> torch.nn.Module:
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    try:
        return torchvision.models.get_model(arch, weights=weights, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ModelSpecError(f"cannot build {arch}: {exc}") from None


class _LargeOnMeta(TorchFunctionMode):
    """Like ``torch.device("meta")`` for tensors over ``SMALL`` elements (weights); smaller ones are
    made on the CPU, so builders that compute with small tensors (RegNet's block widths) still run.
    A torch function mode is thread-local: concurrent model builds are not affected."""

    SMALL = 4096

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _device_constructors() and kwargs.get("device") is None:
            out = func(*args, **{**kwargs, "device": "meta"})
            return out if out.numel() > self.SMALL else func(*args, **kwargs)
        return func(*args, **kwargs)


def _skeleton(arch: str, num_classes: int | None) -> torch.nn.Module:
    """The architecture without allocated weights, for its module names."""
    try:
        with torch.device("meta"):
            return _build(arch, num_classes)
    except NotImplementedError:  # the builder reads tensor values, which meta tensors do not have
        with _LargeOnMeta():
            return _build(arch, num_classes)


def check_spec(spec: ModelSpec, layers: list[str] | None = None) -> None:
    """Raise the ScanError a scan of this torchvision spec would end with, without loading it.

    Cheap enough for a web request: enum weights are only looked up in the hub cache, and layer
    names are checked against the architecture built on the meta device (no weights allocated,
    no forward pass). File paths are the caller's to check (it knows how to name them); TorchScript
    layers are checked by the scan itself.
    """
    if spec.torchscript is not None:
        return
    if spec.arch not in list_architectures():
        raise ModelSpecError(f"unknown architecture {spec.arch!r}; see list_architectures()")
    if spec.weights is not None and not (spec.weights.endswith(STATE_DICT_SUFFIXES) or "/" in spec.weights):
        _require_cached(_weights_enum(spec.arch, spec.weights))
    if layers:
        names = {name for name, _ in _skeleton(spec.arch, spec.num_classes).named_modules() if name}
        unknown = [layer for layer in layers if layer not in names]
        if unknown:
            raise LayerError(f"{spec.arch} has no layer {', '.join(map(repr, unknown))}; layers are "
                             "module paths as PyTorch prints them (e.g. features.3, layer2.1.conv2)")


def load_model(spec: ModelSpec, resolve_path: Callable[[str], Path] = Path) -> LoadedModel:
    """Build the model on CPU in eval mode, with the preprocessing its weights were trained with."""
    if spec.torchscript is not None:
        module = _load_torchscript(Path(resolve_path(spec.torchscript)))
        base, pretrained = IMAGENET_CLASSIC, True
    else:
        if spec.arch not in list_architectures():
            raise ModelSpecError(f"unknown architecture {spec.arch!r}; see list_architectures()")
        first = list(torchvision.models.get_model_weights(spec.arch))[0]
        base, pretrained = _weights_preprocess(first), spec.weights is not None
        if spec.weights is None:
            module = _build(spec.arch, spec.num_classes)
        elif spec.weights.endswith(STATE_DICT_SUFFIXES) or "/" in spec.weights:
            path = Path(resolve_path(spec.weights))
            state = _read_state_dict(path)
            module = _build(spec.arch, spec.num_classes)
            _load_strict(module, state, path.name)
        else:
            weights = _weights_enum(spec.arch, spec.weights)
            _require_cached(weights)
            module = _build(spec.arch, spec.num_classes, weights)
            base = _weights_preprocess(weights)
    return LoadedModel(module=module.eval(), spec=spec, preprocess=base.with_overrides(spec.preprocess), pretrained=pretrained)
