"""Layer catalog, default layers, in-place safety, reused modules and TorchScript models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from service.scan.data import list_images
from service.scan.errors import LayerError
from service.scan.geometry import Preprocess
from service.scan.layers import catalog_layers, default_layer_names, resolve_layers
from service.scan.models import LoadedModel, ModelSpec, load_model
from service.scan.receptive_field import ReceptiveField, traced_receptive_fields
from service.scan.scanner import activation_map, scan

SMALL = Preprocess(resize=None, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), input_size=32)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    ).eval()


def wrap(module: nn.Module) -> LoadedModel:
    return LoadedModel(module=module, spec=ModelSpec(arch="custom"), preprocess=SMALL, pretrained=True)


@pytest.fixture(scope="module")
def noise_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root, list_images(root)


def test_catalog_lists_4d_outputs_in_forward_order_with_shapes_and_fields(mobilenet):
    catalog = catalog_layers(mobilenet.module, 224)
    names = [layer.name for layer in catalog]
    assert names.index("features.3.conv.0") < names.index("features.3") < names.index("features.18")
    assert "classifier" not in names and "classifier.1" not in names and "" not in names
    first = catalog[0]
    assert (first.name, first.type, first.channels, first.height, first.width) == ("features.0.0", "Conv2d", 32, 112, 112)
    assert first.receptive_field == ReceptiveField(3, 2, -1)


def test_default_layers_of_a_resnet_are_its_stages():
    """conv1/bn1/relu share a shape (relu kept), maxpool and layer1 too (layer1 kept), avgpool is 1x1."""
    model = torchvision.models.resnet18().eval()
    assert default_layer_names(catalog_layers(model, 224)) == ["relu", "layer1", "layer2", "layer3", "layer4"]


def test_in_place_relu_does_not_corrupt_the_recorded_conv_output(noise_folder):
    """Layer "0" is a conv whose output the next in-place ReLU overwrites (captum issue 156)."""
    root, records = noise_folder
    inplace = small_net()
    plain = small_net()
    plain[1] = nn.ReLU(inplace=False)
    got = scan(wrap(inplace), root, records, ["0"], k=3, score="mean", num_workers=0)
    want = scan(wrap(plain), root, records, ["0"], k=3, score="mean", num_workers=0)
    assert torch.equal(got.topk["0"].values, want.topk["0"].values)
    assert (got.topk["0"].values < 0).any()  # negative pre-ReLU means survived
    fmap = activation_map(wrap(inplace), root / records[0].path, "0", 0)
    assert (fmap < 0).any()


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.head(self.conv(self.conv(x)))


def test_a_module_called_twice_is_refused():
    model = Twice().eval()
    assert [layer.name for layer in catalog_layers(model, 16)] == ["head"]
    with pytest.raises(LayerError, match="runs 2 times"):
        resolve_layers(model, 16, ["conv"])


def test_a_module_called_twice_is_refused_by_activation_map(tmp_path):
    Image.new("RGB", (16, 16), (90, 20, 200)).save(tmp_path / "a.png")
    with pytest.raises(LayerError, match="more than once"):
        activation_map(wrap(Twice().eval()), tmp_path / "a.png", "conv", 0)


def test_scripted_sequential_model_is_observable_layer_by_layer(tmp_path, noise_folder):
    root, records = noise_folder
    eager = small_net()
    torch.jit.save(torch.jit.script(eager), tmp_path / "net.pt")
    loaded = load_model(ModelSpec(torchscript="net.pt", preprocess=SMALL.to_dict()), lambda p: tmp_path / p)
    catalog = catalog_layers(loaded.module, 32)
    names = [layer.name for layer in catalog]
    assert names == ["0", "1", "2", "3.0", "3.1", "3", "4"]
    assert {l.name: l.receptive_field for l in catalog} == traced_receptive_fields(eager, 32, names)
    scripted = scan(loaded, root, records, ["1", "3"], k=2, num_workers=0)
    reference = scan(wrap(eager), root, records, ["1", "3"], k=2, num_workers=0)
    for name in ("1", "3"):
        assert torch.equal(scripted.topk[name].values, reference.topk[name].values)
        assert torch.equal(scripted.topk[name].image_ids, reference.topk[name].image_ids)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv1(x)
        return y + self.conv2(torch.relu(y))


def test_layers_inside_compiled_blocks_of_a_traced_model_are_refused_clearly(tmp_path, noise_folder):
    root, records = noise_folder
    torch.jit.save(torch.jit.trace(Residual().eval(), torch.zeros(1, 3, 32, 32)), tmp_path / "res.pt")
    loaded = load_model(ModelSpec(torchscript=str(tmp_path / "res.pt"), preprocess=SMALL.to_dict()))
    assert catalog_layers(loaded.module, 32) == []
    with pytest.raises(LayerError, match="compiled block 'the root module'"):
        scan(loaded, root, records, ["conv2"], num_workers=0)
    with pytest.raises(LayerError, match="no feature-map layers"):
        scan(loaded, root, records, None, num_workers=0)
