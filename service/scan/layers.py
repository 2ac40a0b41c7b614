"""The layer catalog (every module that outputs a 4-D feature map) and the tap that observes layers
during a forward pass.

The tap hands each output to a callback *inside* the forward hook, before any later module runs.
Callers reduce (or clone) right there, so an in-place ReLU that follows the observed module cannot
corrupt what is recorded (captum issue 156). A module that runs more than once per forward has no
single output and is refused.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable

import torch

from service.scan.errors import LayerError
from service.scan.receptive_field import ReceptiveField, receptive_fields
from service.scan.scripted import chain_fields, is_script, run_chain, type_name, unreachable_reason

MIN_DEFAULT_LAYERS = 3


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    channels: int
    height: int
    width: int
    receptive_field: ReceptiveField


class _Stop(Exception):
    """Raised by the last needed hook: the rest of the forward pass is not needed."""


def _observe(model: torch.nn.Module, x: torch.Tensor, names: set[str] | None,
             visit: Callable[[str, torch.nn.Module, torch.Tensor], None]) -> None:
    """Run the model; ``visit(name, module, output)`` for each observed submodule (all when ``names``
    is None) right after it ran, in completion order. ``visit`` may raise ``_Stop``."""
    try:
        if is_script(model):
            def chain_visit(name, module, _inp, out):
                if names is None or name in names:
                    visit(name, module, out)

            run_chain(model, x, chain_visit)
            return
        modules = dict(model.named_modules())
        missing = sorted(set(names or ()) - set(modules))
        if missing:
            raise LayerError(f"unknown layers {missing}")
        handles = [
            modules[n].register_forward_hook(lambda m, _i, o, n=n: visit(n, m, o))
            for n in (names if names is not None else [n for n in modules if n])
        ]
        try:
            model(x)
        finally:
            for h in handles:
                h.remove()
    except _Stop:
        pass


def _is_map(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == 4


def _survey(model: torch.nn.Module, input_size: int):
    """One forward on a blank input: (name, type, C, H, W) of 4-D outputs in order, and call counts."""
    seen: dict[str, tuple] = {}
    calls: dict[str, int] = {}

    def visit(name, module, out):
        calls[name] = calls.get(name, 0) + 1
        if _is_map(out) and name not in seen:
            seen[name] = (name, type_name(module), *out.shape[1:])

    with torch.no_grad():
        _observe(model, torch.zeros(1, 3, input_size, input_size), None, visit)
    return list(seen.values()), calls


_CATALOGS: "weakref.WeakKeyDictionary[torch.nn.Module, dict[int, list[LayerInfo]]]" = weakref.WeakKeyDictionary()


def catalog_layers(model: torch.nn.Module, input_size: int) -> list[LayerInfo]:
    """Every observable single-call module with a 4-D output, in forward (completion) order.

    Cached per model object (a loaded model's structure does not change), because the API asks
    for it on every activation map and layer listing."""
    per_model = _CATALOGS.setdefault(model, {})
    if input_size not in per_model:
        per_model[input_size] = _build_catalog(model, input_size)
    return list(per_model[input_size])


def _build_catalog(model: torch.nn.Module, input_size: int) -> list[LayerInfo]:
    entries, calls = _survey(model, input_size)
    entries = [e for e in entries if calls[e[0]] == 1]
    if is_script(model):
        fields = chain_fields(model, input_size)
    else:
        fields = receptive_fields(model, input_size, [e[0] for e in entries], with_layout=True)
    # left out: channels-last [N, H, W, C] outputs and layers whose field cannot be derived
    entries = [e for e in entries if fields.get(e[0]) is not None]
    return [LayerInfo(name, kind, int(c), int(h), int(w), fields[name]) for name, kind, c, h, w in entries]


def default_layer_names(catalog: list[LayerInfo]) -> list[str]:
    """Stage outputs: at the shallowest module depth holding at least three feature-map layers
    (e.g. ``features.N`` of VGG/MobileNet, ``layerN`` of ResNet), the last layer of each run of
    consecutive layers with the same output shape (one layer per block or stage, not each
    conv/bn/relu of it). 1x1 maps (global pooling) have no spatial extent and are left out."""
    catalog = [layer for layer in catalog if layer.height * layer.width > 1]
    if not catalog:
        return []
    depths = sorted({layer.name.count(".") for layer in catalog})
    level = next((d for d in depths if sum(l.name.count(".") == d for l in catalog) >= MIN_DEFAULT_LAYERS), depths[0])
    chosen = [l for l in catalog if l.name.count(".") == level]
    shape = lambda l: (l.channels, l.height, l.width)  # noqa: E731
    return [l.name for i, l in enumerate(chosen) if i + 1 == len(chosen) or shape(chosen[i + 1]) != shape(l)]


def resolve_layers(model: torch.nn.Module, input_size: int, names: list[str] | None) -> list[LayerInfo]:
    """The requested layers (defaults when None) in forward order, or a LayerError saying why not."""
    catalog = catalog_layers(model, input_size)
    by_name = {layer.name: layer for layer in catalog}
    if names is None:
        names = default_layer_names(catalog)
    if not names:
        raise LayerError("no feature-map layers to scan in this model")
    if len(set(names)) != len(names):
        raise LayerError("layer names must be unique")
    for name in names:
        if name not in by_name:
            raise LayerError(_why_not(model, input_size, name))
    wanted = set(names)
    return [layer for layer in catalog if layer.name in wanted]


def _why_not(model: torch.nn.Module, input_size: int, name: str) -> str:
    if is_script(model):
        return unreachable_reason(model, name, chain_fields(model, input_size))
    if name not in dict(model.named_modules()) or not name:
        return f"unknown layer {name!r}"
    entries, calls = _survey(model, input_size)
    if calls.get(name, 0) > 1:
        return f"layer {name} runs {calls[name]} times in one forward pass, so it has no single output"
    if calls.get(name, 0) == 0:
        return f"layer {name} does not run in the forward pass"
    if name not in {e[0] for e in entries}:
        return f"layer {name} does not output a 4-D feature map"
    if name in receptive_fields(model, input_size, [name], with_layout=True):
        return f"layer {name} outputs a channels-last [N, H, W, C] tensor, not an [N, C, H, W] feature map"
    return (f"layer {name} comes after an operation whose spatial effect is unknown (e.g. window "
            "attention or a reshape into tokens), so its receptive field cannot be derived")


class FeatureTap:
    """Runs the model and calls ``on_output(name, tensor)`` for each requested layer as soon as it
    is computed; with ``stop_early`` the forward ends once every requested layer was seen."""

    def __init__(self, model: torch.nn.Module, names: list[str],
                 on_output: Callable[[str, torch.Tensor], None], stop_early: bool = True):
        self.model, self.names, self.on_output, self.stop_early = model, set(names), on_output, stop_early

    def __call__(self, x: torch.Tensor) -> None:
        seen: set[str] = set()

        def visit(name, _module, out):
            if name in seen:
                raise LayerError(f"layer {name} runs more than once in one forward pass")
            if not _is_map(out):
                raise LayerError(f"layer {name} does not output a 4-D feature map")
            seen.add(name)
            self.on_output(name, out)
            if self.stop_early and seen == self.names:
                raise _Stop

        _observe(self.model, x, self.names, visit)
        if seen != self.names:
            raise LayerError(f"layers {sorted(self.names - seen)} did not run")
