"""Blocks of the torchvision families the reference tests do not cover: channels-last LayerNorm
(ConvNeXt), Swin's channels-last stages, ShuffleNet's chunk + channel shuffle, GoogLeNet's
transform_input, RegNet's tensor-computed widths. Small configurations of the real torchvision
blocks, random init, tiny inputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlock, LayerNorm2d
from torchvision.models.shufflenetv2 import InvertedResidual
from torchvision.models.swin_transformer import SwinTransformer

from service.scan.errors import LayerError
from service.scan.layers import catalog_layers, default_layer_names, resolve_layers
from service.scan.models import ModelSpec, check_spec
from service.scan.receptive_field import ReceptiveField, measured_receptive_fields, traced_receptive_fields


def tiny_convnext() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), LayerNorm2d(8)),
        nn.Sequential(CNBlock(8, layer_scale=1.0, stochastic_depth_prob=0.0)),
        nn.Sequential(LayerNorm2d(8), nn.Conv2d(8, 16, 2, stride=2)),
        nn.Sequential(CNBlock(16, layer_scale=1.0, stochastic_depth_prob=0.0)),
    ).eval()


def test_convnext_fields_pass_through_channels_last_layer_norm_whose_outputs_are_left_out():
    model = tiny_convnext()
    catalog = {layer.name: layer for layer in catalog_layers(model, 32)}
    # stem 4/4: (4, 4, 0); depthwise 7x7 pad 3 at jump 4: size 4 + 6*4, offset -12; the residual adds nothing
    assert catalog["1.0"].receptive_field == ReceptiveField(28, 4, -12)
    assert catalog["0.1"].receptive_field == ReceptiveField(4, 4, 0)
    assert (catalog["1.0"].channels, catalog["1.0"].height, catalog["1.0"].width) == (8, 8, 8)
    assert "1.0.block.2" not in catalog and "1.0.block.3" not in catalog  # [N, H, W, C] LayerNorm, Linear
    assert traced_receptive_fields(model, 32, ["1.0", "3.0"]) == measured_receptive_fields(model, 32, ["1.0", "3.0"])
    with pytest.raises(LayerError, match="channels-last"):
        resolve_layers(model, 32, ["1.0.block.2"])


def test_measured_fields_see_through_torchvision_norm_subclasses():
    """LayerNorm2d of a uniform probe is zero; the linearised copy must drop it like nn.LayerNorm."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), LayerNorm2d(4), nn.Conv2d(4, 4, 3, stride=2)).eval()
    assert measured_receptive_fields(model, 16, ["2"]) == {"2": ReceptiveField(5, 2, -1)}


def test_swin_offers_only_its_patch_embedding_and_refuses_channels_last_stages_clearly():
    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                            window_size=[2, 2], num_classes=3).eval()
    catalog = catalog_layers(model, 32)
    assert [layer.name for layer in catalog] == ["features.0.0"]
    assert catalog[0].receptive_field == ReceptiveField(4, 4, 0)
    assert default_layer_names(catalog) == ["features.0.0"]
    with pytest.raises(LayerError, match="channels-last"):
        resolve_layers(model, 32, ["features.0"])


def test_shufflenet_chunk_and_channel_shuffle_keep_the_traced_field():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), InvertedResidual(8, 8, 1),
                          InvertedResidual(8, 16, 2)).eval()
    names = ["1.branch2", "1", "2"]
    traced = traced_receptive_fields(model, 32, names)
    assert set(traced) == set(names)
    assert traced == measured_receptive_fields(model, 32, names)


def test_googlenet_transform_input_keeps_the_traced_fields():
    """transform_input (set with the ImageNet weights) rebuilds the input from x[:, c] slices."""
    names = ["conv1", "maxpool2", "inception3a"]
    kwargs = dict(aux_logits=False, init_weights=False)
    plain = traced_receptive_fields(torchvision.models.googlenet(transform_input=False, **kwargs).eval(), 64, names)
    transformed = traced_receptive_fields(torchvision.models.googlenet(transform_input=True, **kwargs).eval(), 64, names)
    assert transformed == plain and set(plain) == set(names)


def test_check_spec_checks_regnet_layer_names_without_building_weights():
    """RegNet's builder computes block widths with tensors, which fails on the meta device."""
    check_spec(ModelSpec(arch="regnet_y_128gf"), ["trunk_output.block4", "stem"])
    with pytest.raises(LayerError, match="no layer 'layer4'"):
        check_spec(ModelSpec(arch="regnet_x_400mf"), ["layer4"])
