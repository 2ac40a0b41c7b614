"""Receptive fields: hand-derived values on sequential nets, an independent measurement on branching ones."""

from __future__ import annotations

import pytest
import torchvision

from service.scan.receptive_field import (
    ReceptiveField,
    measured_receptive_fields,
    receptive_fields,
    traced_receptive_fields,
)

# Derived by hand with s' = s + (k-1)*j, o' = o - p*j, j' = j*stride, layer by layer.
ALEXNET = {
    "features.0": ReceptiveField(11, 4, -2),    # conv 11/4 pad 2
    "features.2": ReceptiveField(19, 8, -2),    # maxpool 3/2
    "features.3": ReceptiveField(51, 8, -18),   # conv 5 pad 2
    "features.5": ReceptiveField(67, 16, -18),  # maxpool 3/2
    "features.6": ReceptiveField(99, 16, -34),  # conv 3 pad 1
    "features.10": ReceptiveField(163, 16, -66),
    "features.12": ReceptiveField(195, 32, -66),
}
VGG16 = {
    "features.0": ReceptiveField(3, 1, -1),
    "features.2": ReceptiveField(5, 1, -2),
    "features.4": ReceptiveField(6, 2, -2),     # maxpool 2/2
    "features.9": ReceptiveField(16, 4, -6),
    "features.16": ReceptiveField(44, 8, -18),
    "features.23": ReceptiveField(100, 16, -42),
    "features.28": ReceptiveField(196, 16, -90),
    "features.30": ReceptiveField(212, 32, -90),
}


@pytest.mark.parametrize("arch, expected", [("alexnet", ALEXNET), ("vgg16", VGG16)])
def test_sequential_fields_match_hand_derived_values(arch, expected):
    model = torchvision.models.get_model(arch, weights=None).eval()
    assert receptive_fields(model, 224, list(expected)) == expected


# A few layers per branching model: inside residual/inverted-residual blocks, block outputs,
# Inception concatenations and DenseNet concatenations.
BRANCHING = {
    "resnet50": ["layer1.0.conv2", "layer1.0", "layer1", "layer2.0.downsample", "layer2.0"],
    "mobilenet_v2": ["features.2", "features.3.conv.0", "features.3", "features.7"],
    "googlenet": ["inception3a.branch2", "inception3a", "maxpool3", "inception3b.branch3"],
    "densenet121": ["features.denseblock1.denselayer1", "features.denseblock1", "features.transition1"],
}


@pytest.mark.parametrize("arch", list(BRANCHING))
def test_branching_fields_match_gradient_support_of_a_linearised_copy(arch):
    model = torchvision.models.get_model(arch, weights=None).eval()
    traced = traced_receptive_fields(model, 128, BRANCHING[arch])
    measured = measured_receptive_fields(model, 128, BRANCHING[arch])
    assert traced == measured


def test_residual_union_differs_from_the_sequential_chain():
    """The shortcut's 1x1 strided conv sees less than the main path; the union is the main path's."""
    model = torchvision.models.get_model("resnet50", weights=None).eval()
    fields = traced_receptive_fields(model, 128, ["layer2.0.downsample", "layer2.0.conv3", "layer2.0"])
    assert fields["layer2.0.downsample"].size < fields["layer2.0.conv3"].size
    assert fields["layer2.0"] == fields["layer2.0.conv3"]


def test_input_box_is_the_half_open_box_of_a_neuron():
    field = ReceptiveField(size=11, jump=4, offset=-2)
    assert field.input_box(0, 0) == (-2, -2, 9, 9)
    assert field.input_box(y=2, x=3) == (10, 6, 21, 17)
