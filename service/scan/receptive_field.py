"""Exact receptive fields (size, jump, offset) of feature-map layers, also on branching graphs.

Sequential formulas (pytorch-receptive-field, torch-scan) walk modules in call order and are wrong as
soon as a block adds or concatenates branches. Here the model is traced with ``torch.fx`` and a
field is propagated along the real data-flow graph: per axis, the span [start, end) seen by neuron 0
and the jump between neighbours; where branches merge (add, cat, mul) the spans are united, which
is the union over paths and, for a concatenation, over channels.

One rule is a choice, not a derivation: a 1x1 map broadcast over a larger one (squeeze-excitation
channel gating) is left out of the union; it rescales a unit everywhere, it does not locate it,
and including it would make every patch the whole image.

Models that ``torch.fx`` cannot trace fall back to ``measured_receptive_fields``: the gradient
support of one neuron and of its neighbour on a linearised copy of the model. It is exact for
convolution/pooling networks whose ReLUs and max pools are modules, and it also serves as the
independent check of the traced method in the tests.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from service.scan.errors import LayerError


@dataclass(frozen=True)
class ReceptiveField:
    size: int
    jump: int
    offset: int

    def input_box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Unclipped half-open input box (x0, y0, x1, y1) seen by neuron (y, x)."""
        x0, y0 = self.offset + x * self.jump, self.offset + y * self.jump
        return x0, y0, x0 + self.size, y0 + self.size


@dataclass(frozen=True)
class Span:
    """Along one axis: neuron 0 sees input [start, end); neuron i sees it shifted by i * jump."""

    start: int
    end: int
    jump: int

    def window(self, kernel: int, stride: int, padding: int, dilation: int = 1) -> "Span":
        """The span after a sliding window (convolution or pooling) over this map."""
        return Span(
            self.start - padding * self.jump,
            self.end + (dilation * (kernel - 1) - padding) * self.jump,
            self.jump * stride,
        )

    def whole(self, extent: int) -> "Span":
        """One neuron looking at all ``extent`` neurons of this map (global pooling)."""
        return self.window(extent, extent, 0)


class Unsupported(Exception):
    """The traced graph holds an operation whose spatial effect is not known."""


IDENTITY = (Span(0, 1, 1), Span(0, 1, 1))


def to_field(spans: tuple[Span, Span]) -> ReceptiveField:
    """One square field per layer (the API's convention): the box covering both axes."""
    (ys, xs) = spans
    if ys.jump != xs.jump:
        raise Unsupported("different strides along the two axes")
    start, end = min(ys.start, xs.start), max(ys.end, xs.end)
    return ReceptiveField(size=end - start, jump=ys.jump, offset=start)


def union(fields: list[tuple[Span, Span]]) -> tuple[Span, Span]:
    out = []
    for axis in (0, 1):
        spans = [f[axis] for f in fields]
        if len({s.jump for s in spans}) != 1:
            raise Unsupported("merging branches with different strides")
        out.append(Span(min(s.start for s in spans), max(s.end for s in spans), spans[0].jump))
    return out[0], out[1]


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if v else (None, None)
    return int(v), int(v)


def window_spans(spans, kernel, stride, padding, dilation=1):
    """Apply a 2-D window with PyTorch-style (int or pair) parameters to (y, x) spans."""
    k, s, d = _pair(kernel), _pair(stride if stride not in (None, ()) else kernel), _pair(dilation)
    if isinstance(padding, str):  # Conv2d padding="valid"/"same"
        p = (0, 0) if padding == "valid" else tuple(d[i] * (k[i] - 1) // 2 for i in (0, 1))
    else:
        p = _pair(padding)
    return tuple(spans[i].window(k[i], s[i], p[i], d[i]) for i in (0, 1))


def adaptive_spans(spans, in_hw, out_hw):
    """Adaptive pooling: exact when the input divides evenly, else the widest bin (an upper bound)."""
    out = []
    for i in (0, 1):
        n, m = in_hw[i], out_hw[i]
        if n % m == 0:
            out.append(spans[i].window(n // m, n // m, 0))
        else:
            widest = max(math.ceil((j + 1) * n / m) - (j * n) // m for j in range(m))
            out.append(spans[i].window(widest, max(n // m, 1), 0))
    return tuple(out)


MODULE_WINDOWS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
# Functional forms: name -> positional order of (kernel, stride, padding, dilation) after the input.
FUNCTION_WINDOWS = {
    "max_pool2d": ("kernel_size", "stride", "padding", "dilation"),
    "_max_pool2d": ("kernel_size", "stride", "padding", "dilation"),
    "max_pool2d_with_indices": ("kernel_size", "stride", "padding", "dilation"),
    "avg_pool2d": ("kernel_size", "stride", "padding", None),
}
FUNCTION_ADAPTIVE = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "_adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"}


def _shape(v):
    """Shape of a tensor, or of the tensors of a tuple/list (chunk, split) when they share one."""
    if isinstance(v, torch.Tensor):
        return tuple(v.shape)
    if isinstance(v, (tuple, list)) and v and all(isinstance(t, torch.Tensor) for t in v):
        shapes = {(t.dim(), tuple(t.shape[-2:])) for t in v}
        return tuple(v[0].shape) if len(shapes) == 1 else None
    return None


def _first_tensor_arg(node: torch.fx.Node):
    return node.args[0] if node.args else next(iter(node.kwargs.values()))


PERMUTES = {"permute", "transpose", "swapaxes", "swapdims"}


class _RecordingTracer(torch.fx.Tracer):
    """An fx tracer that remembers which graph node holds each module's output (leaf or not)."""

    def __init__(self):
        super().__init__()
        self.outputs: dict[str, torch.fx.Node] = {}
        self.calls: dict[str, int] = {}

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        name = self.path_of_module(m)
        self.calls[name] = self.calls.get(name, 0) + 1
        if isinstance(out, torch.fx.Proxy):
            self.outputs[name] = out.node
        return out


class _FieldInterpreter(torch.fx.Interpreter):
    """Runs the traced graph on a real input and propagates (y, x) spans node by node.

    Besides the spans, each node records where its spatial axes are (``axes``: the positions of
    y and x in its shape), so channels-last stretches (ConvNeXt's LayerNorm, Swin) keep their
    field through permutes, and a layer's output can be told apart from a channels-first map.
    """

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__(gm)
        self.fields: dict[torch.fx.Node, tuple[Span, Span] | None] = {}
        self.values: dict[torch.fx.Node, object] = {}
        self.axes: dict[torch.fx.Node, tuple[int, int] | None] = {}

    def run_node(self, n: torch.fx.Node):
        result = super().run_node(n)
        shape = _shape(result)
        self.values[n] = result if shape is not None else None
        if n.op == "placeholder":
            self.fields[n], self.axes[n] = IDENTITY, (len(shape) - 2, len(shape) - 1)
        else:
            self.fields[n], self.axes[n] = self._field(n, shape)
        return result

    def _inputs(self, n: torch.fx.Node):
        return [a for a in n.all_input_nodes if self.fields.get(a) is not None]

    def _field(self, n: torch.fx.Node, shape):
        inputs = self._inputs(n)
        if not inputs:
            return None, None
        if any(self.fields[a] is UNKNOWN for a in inputs):
            return UNKNOWN, None
        if all(self.fields[a] == IDENTITY_GLOBAL for a in inputs):
            return IDENTITY_GLOBAL, None  # computed from values without a location only
        try:
            return self._known_field(n, inputs, shape)
        except Unsupported:
            return UNKNOWN, None

    def _hw(self, a: torch.fx.Node):
        """Spatial size of a located map input, or None."""
        axes, shape = self.axes.get(a), _shape(self.values.get(a))
        if axes is None or shape is None or self.fields[a] == IDENTITY_GLOBAL:
            return None
        return shape[axes[0]], shape[axes[1]]

    def _known_field(self, n: torch.fx.Node, inputs, shape):
        last = (len(shape) - 2, len(shape) - 1) if shape is not None else None
        if n.op == "call_module":
            mod = self.module.get_submodule(n.target)
            src = _first_tensor_arg(n)
            if isinstance(mod, MODULE_WINDOWS + ADAPTIVE) and self.axes.get(src) != (len(shape) - 2, len(shape) - 1):
                raise Unsupported("a window over a map whose spatial axes are not the last two")
            if isinstance(mod, MODULE_WINDOWS):
                return window_spans(self.fields[src], mod.kernel_size, mod.stride, mod.padding, getattr(mod, "dilation", 1)), last
            if isinstance(mod, ADAPTIVE):
                return adaptive_spans(self.fields[src], self.values[src].shape[-2:], shape[-2:]), last
        name = getattr(n.target, "__name__", n.target) if n.op != "call_module" else ""
        if n.op in ("call_function", "call_method"):
            src = _first_tensor_arg(n)
            if name in FUNCTION_WINDOWS or name == "conv2d":
                if self.axes.get(src) != last:
                    raise Unsupported("a window over a map whose spatial axes are not the last two")
                return self._functional_window(n, name, src), last
            if name in FUNCTION_ADAPTIVE:
                return adaptive_spans(self.fields[src], self.values[src].shape[-2:], shape[-2:]), last
            if name in PERMUTES and self._hw(src) is not None:
                return self.fields[src], self._permuted(n, name, self.axes[src], len(shape))
        return self._by_shape(n, inputs, shape)

    @staticmethod
    def _permuted(n, name, axes, dim):
        args = [a for a in n.args[1:]] + list(n.kwargs.values())
        if name == "permute":
            order = [int(d) % dim for d in (args[0] if len(args) == 1 else args)]
            return order.index(axes[0]), order.index(axes[1])
        a, b = (int(d) % dim for d in args[:2])
        swap = {a: b, b: a}
        return swap.get(axes[0], axes[0]), swap.get(axes[1], axes[1])

    def _functional_window(self, n, name, src):
        if name == "conv2d":
            order, kernel = ("bias", "stride", "padding", "dilation"), self.values[n.args[1]].shape[-2:]
            params = dict(zip(order, n.args[2:]))
        else:
            order = FUNCTION_WINDOWS[name]
            params = dict(zip(order, n.args[1:]))
        params.update(n.kwargs)
        if name != "conv2d":
            kernel = params["kernel_size"]
        return window_spans(
            self.fields[src], kernel, params.get("stride", 1 if name == "conv2d" else None),
            params.get("padding", 0), params.get("dilation", 1)
        )

    def _by_shape(self, n, inputs, shape):
        """Generic rule: same spatial size = pointwise in space; spatial size 1 = global pooling.

        The result keeps an input's spatial axes when it has as many dimensions and the same sizes
        there (LayerNorm/Linear over channels-last, elementwise ops), or when its last two
        dimensions have the input's spatial size (a channel picked out: ``x[:, 0]``)."""
        maps = [(a, self._hw(a)) for a in inputs if self._hw(a) is not None]
        same, axes = [], None
        for a, hw in maps if shape is not None else ():
            src_axes = self.axes[a]
            if len(shape) == len(_shape(self.values[a])) and (shape[src_axes[0]], shape[src_axes[1]]) == hw:
                cand = src_axes
            elif len(shape) >= 3 and tuple(shape[-2:]) == hw:
                cand = (len(shape) - 2, len(shape) - 1)
            else:
                continue
            if axes not in (None, cand):
                raise Unsupported("inputs with their spatial axes in different places")
            same.append(a)
            axes = cand
        if same:
            return union([self.fields[a] for a in same]), axes
        if shape is None or len(shape) < 4:
            return IDENTITY_GLOBAL, None  # a vector (or tokens), no location
        if maps and tuple(shape[-2:]) == (1, 1):
            whole = []
            for a, hw in maps:
                whole.append(tuple(self.fields[a][i].whole(hw[i]) for i in (0, 1)))
            return union(whole), (len(shape) - 2, len(shape) - 1)
        if not maps and tuple(shape[-2:]) == (1, 1):
            return IDENTITY_GLOBAL, None  # a vector reshaped to a 1x1 map (gating), no location
        raise Unsupported(f"{n.op} {n.target} changes the spatial size")


IDENTITY_GLOBAL = (Span(0, 0, 0), Span(0, 0, 0))  # sentinel: depends on the input, has no location
UNKNOWN = (Span(0, 0, -1), Span(0, 0, -1))  # sentinel: downstream of an operation not understood
CHANNELS_LAST = None  # traced_receptive_fields' value for a 4-D output that is not a [N, C, H, W] map


def traced_receptive_fields(model: nn.Module, input_size: int, layer_names: list[str],
                            with_layout: bool = False) -> dict[str, ReceptiveField | None]:
    """The torch.fx method; layers it cannot derive are left out of the result.

    With ``with_layout``, layers whose output has its spatial axes elsewhere than the last two
    (channels-last ``[N, H, W, C]`` in ConvNeXt blocks and Swin) map to ``CHANNELS_LAST`` (None):
    they are not feature maps in the catalog's sense. Without it they are left out."""
    tracer = _RecordingTracer()
    graph = tracer.trace(model)
    gm = torch.fx.GraphModule(tracer.root, graph)
    for name in layer_names:
        if tracer.calls.get(name, 0) > 1:
            raise LayerError(f"layer {name} is called {tracer.calls[name]} times in one forward")
    interp = _FieldInterpreter(gm)
    with torch.no_grad():
        interp.run(torch.zeros(1, 3, input_size, input_size))
    out = {}
    for name in layer_names:
        node = tracer.outputs.get(name)
        spans, axes = interp.fields.get(node), interp.axes.get(node)
        shape = _shape(interp.values.get(node))
        if axes is not None and shape is not None and len(shape) == 4 and axes != (2, 3):
            if with_layout:
                out[name] = CHANNELS_LAST
            continue
        if spans is not None and spans not in (IDENTITY_GLOBAL, UNKNOWN):
            try:
                out[name] = to_field(spans)
            except Unsupported:
                continue
    return out


class _Captured(Exception):
    pass


# Norms by class, so subclasses (torchvision's LayerNorm2d) count too: a LayerNorm of the uniform
# probe input is zero and would hide the field.
IDENTITY_IN_LINEARISED = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def _linearised(model: nn.Module) -> nn.Module:
    """A float64 copy whose every path passes a positive signal: activations and norms become
    identities, max pools average pools, weights positive averages. A neuron's input gradient is
    then non-zero exactly on its receptive field."""
    lin = copy.deepcopy(model).double().eval()

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            kind = type(child).__module__
            if isinstance(child, IDENTITY_IN_LINEARISED) or kind.startswith("torch.nn.modules.activation"):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
            elif isinstance(child, nn.AdaptiveMaxPool2d):
                setattr(parent, name, nn.AdaptiveAvgPool2d(child.output_size))
            else:
                replace(child)

    replace(lin)
    with torch.no_grad():
        for p in lin.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.fill_(1.0 / fan_in)
            p.requires_grad_(False)
    return lin


def _support(grad: torch.Tensor, axis: int) -> tuple[int, int]:
    """[first, last+1) of the non-zero rows (axis 0) or columns (axis 1) of a [1,3,H,W] gradient."""
    profile = grad.abs().sum(dim=(0, 1, 3 - axis))
    idx = torch.nonzero(profile).flatten()
    if len(idx) == 0:
        raise Unsupported("the neuron's gradient is zero everywhere")
    return int(idx[0]), int(idx[-1]) + 1


def _measure_layer(lin: nn.Module, module: nn.Module, size: int):
    captured = {}

    def hook(_m, _i, out):
        captured["out"] = out
        raise _Captured

    handle = module.register_forward_hook(hook)
    x = torch.ones(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    try:
        lin(x)
    except _Captured:
        pass
    finally:
        handle.remove()
    out = captured["out"]
    h, w = out.shape[-2:]
    cy, cx = (h - 1) // 2, (w - 1) // 2
    boxes = []
    for y, xx in ((cy, cx), (cy + 1, cx + 1)):
        (g,) = torch.autograd.grad(out[0, :, min(y, h - 1), min(xx, w - 1)].sum(), x, retain_graph=True)
        boxes.append((_support(g, 0), _support(g, 1)))
    return (cy, cx), (h, w), boxes


def measured_receptive_fields(model: nn.Module, input_size: int, layer_names: list[str],
                              max_size: int = 2048) -> dict[str, ReceptiveField]:
    """Receptive fields from the gradient support of a centre neuron and its diagonal neighbour.

    The input grows until the centre neuron's support stays clear of the border (and the map has
    a neighbour), so padding-clipped fields are measured whole.
    """
    lin = _linearised(model)
    modules = dict(lin.named_modules())
    out = {}
    for name in layer_names:
        if name not in modules:
            raise LayerError(f"unknown layer {name!r}")
        try:
            out[name] = _measure_field(lin, modules[name], input_size, max_size)
        except Unsupported:  # no gradient reaches the input: leave the layer out
            continue
    return out


def _measure_field(lin: nn.Module, module: nn.Module, size: int, max_size: int) -> ReceptiveField:
    while True:
        (cy, cx), (h, w), (centre, neighbour) = _measure_layer(lin, module, size)
        (y0, y1), (x0, x1) = centre
        inside = y0 > 0 and x0 > 0 and y1 < size and x1 < size and h > 1 and w > 1
        if inside or size >= max_size:
            break
        size *= 2
    jump_y = neighbour[0][0] - y0 if h > 1 else size
    jump_x = neighbour[1][0] - x0 if w > 1 else size
    spans = (Span(y0 - cy * jump_y, y1 - cy * jump_y, jump_y),
             Span(x0 - cx * jump_x, x1 - cx * jump_x, jump_x))
    return to_field(spans)


def receptive_fields(model: nn.Module, input_size: int, layer_names: list[str],
                     with_layout: bool = False) -> dict[str, ReceptiveField | None]:
    """Exact fields by graph tracing; a model torch.fx cannot trace is measured instead.

    Layers whose field cannot be derived are left out of the result: on a traced model, those
    downstream of an operation whose spatial effect is unknown (window attention, reshapes into
    tokens); measuring them would cost a gradient pass per layer and, past attention or a
    channels-last reshape, would not be exact either. With ``with_layout``, layers the trace
    shows to be channels-last map to ``CHANNELS_LAST``."""
    if isinstance(model, torch.jit.ScriptModule):
        from service.scan.scripted import script_receptive_fields  # scripted builds on this module

        return script_receptive_fields(model, input_size, layer_names)
    try:
        out = traced_receptive_fields(model, input_size, layer_names, with_layout)
    except LayerError:
        raise
    except Exception:  # fx tracing errors have no common base class: measure every layer
        out = measured_receptive_fields(model, input_size, layer_names)
    return {name: out[name] for name in layer_names if name in out}
