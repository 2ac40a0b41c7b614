"""TorchScript models: run their Sequential containers from Python so layers can be observed.

Forward hooks are not supported on ScriptModules and their compiled ``forward`` calls submodules in
C++, out of Python's sight. A scripted ``nn.Sequential`` is nothing more than "call each child in
order", so it can be executed child by child from Python with the same result; every module reached
that way is an observable layer. Modules inside any other compiled block are not reachable and are
refused with a ``LayerError`` naming the block. Receptive fields follow the same chain: a
convolution or pooling applies its window, a known pointwise module keeps the field, and an opaque
block ends the chain (layers after it get no field and are refused).
"""

from __future__ import annotations

from typing import Callable

import torch

from service.scan.errors import LayerError
from service.scan.receptive_field import IDENTITY, ReceptiveField, adaptive_spans, to_field, window_spans

POINTWISE = {
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "GELU", "SiLU", "Mish", "Hardswish", "Hardsigmoid",
    "Sigmoid", "Tanh", "Softplus", "BatchNorm2d", "InstanceNorm2d", "Dropout", "Dropout2d", "Identity",
}
WINDOWS = {"Conv2d", "MaxPool2d", "AvgPool2d"}
ADAPTIVE = {"AdaptiveAvgPool2d", "AdaptiveMaxPool2d"}

Visit = Callable[[str, torch.nn.Module, torch.Tensor, object], None]


def is_script(model: torch.nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def type_name(module: torch.nn.Module) -> str:
    return getattr(module, "original_name", None) or type(module).__name__


def run_chain(model: torch.nn.Module, x: torch.Tensor, visit: Visit):
    """Call ``model(x)``, descending into Sequential containers; ``visit(name, module, input, output)``
    sees every reached submodule after it ran, in forward order."""

    def run(module, prefix, inp):
        if type_name(module) == "Sequential":
            out = inp
            for name, child in module.named_children():
                out = run(child, f"{prefix}.{name}" if prefix else name, out)
        else:
            out = module(inp)
        if prefix:
            visit(prefix, module, inp, out)
        return out

    return run(model, "", x)


def _opaque_block(model: torch.nn.Module, name: str) -> str:
    """The compiled block that hides ``name`` from Python."""
    modules = dict(model.named_modules())  # get_submodule is not available on ScriptModules
    parts = name.split(".")
    for i in range(len(parts)):
        parent_name = ".".join(parts[:i])
        if type_name(modules[parent_name]) != "Sequential":
            return parent_name or "the root module"
    return name


def chain_fields(model: torch.nn.Module, input_size: int) -> dict[str, ReceptiveField | None]:
    """Field of every Python-reachable submodule; None after an opaque block."""
    fields: dict[str, ReceptiveField | None] = {}
    state = {"spans": IDENTITY}

    def visit(name, module, inp, out):
        spans, kind = state["spans"], type_name(module)
        if spans is not None and kind != "Sequential":
            if kind in WINDOWS:
                spans = window_spans(spans, module.kernel_size, module.stride, module.padding,
                                     getattr(module, "dilation", 1))
            elif kind in ADAPTIVE:
                spans = adaptive_spans(spans, inp.shape[-2:], out.shape[-2:])
            elif kind not in POINTWISE:
                spans = None
            state["spans"] = spans
        fields[name] = to_field(spans) if spans is not None else None

    with torch.no_grad():
        run_chain(model, torch.zeros(1, 3, input_size, input_size), visit)
    return fields


def script_receptive_fields(model, input_size: int, layer_names: list[str]) -> dict[str, ReceptiveField]:
    fields = chain_fields(model, input_size)
    out = {}
    for name in layer_names:
        if fields.get(name) is None:
            raise LayerError(unreachable_reason(model, name, fields))
        out[name] = fields[name]
    return out


def unreachable_reason(model, name: str, fields: dict) -> str:
    if name in fields:
        return (f"layer {name} of the TorchScript model comes after a compiled block whose spatial "
                "effect is unknown, so its receptive field cannot be derived")
    if name not in dict(model.named_modules()):
        return f"unknown layer {name!r}"
    return (f"layer {name} is inside the compiled block {_opaque_block(model, name)!r} of the TorchScript "
            "model, which cannot be observed; choose a layer listed by the catalog")
