"""Model specs and loading: every way a spec can be wrong is a typed error."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from service.scan.errors import LayerError, ModelSpecError, UnsafeWeights, WeightsMismatch, WeightsNotFound
from service.scan.geometry import IMAGENET_MEAN, Preprocess
from service.scan.models import ModelSpec, check_spec, list_architectures, load_model

MOBILENET_PREPROCESS = Preprocess(resize=256, crop=224, mean=IMAGENET_MEAN, std=(0.229, 0.224, 0.225), input_size=224)


class NotATensor:
    """Pickled into a file to stand for arbitrary objects that weights_only loading must refuse."""


def test_local_state_dict_loads_in_eval_mode_with_first_weights_preprocess(mobilenet):
    assert not mobilenet.module.training and mobilenet.pretrained
    assert mobilenet.preprocess == MOBILENET_PREPROCESS


def test_real_weights_classify_a_photo(mobilenet, imagenet_dir):
    from service.scan.data import load_model_input

    pixels, _, _ = load_model_input(imagenet_dir / "n02099601_golden_retriever.JPEG", mobilenet.preprocess)
    with torch.no_grad():
        assert mobilenet.module(pixels.unsqueeze(0)).argmax().item() == 207


def test_no_weights_is_random_init_flagged_not_pretrained():
    loaded = load_model(ModelSpec(arch="resnet18", num_classes=10))
    assert not loaded.pretrained and loaded.module.fc.out_features == 10
    assert loaded.preprocess.input_size == 224


def test_safetensors_weights_load(tmp_path):
    source = torchvision.models.resnet18(num_classes=7)
    save_file(source.state_dict(), tmp_path / "r.safetensors")
    loaded = load_model(ModelSpec(arch="resnet18", weights="r.safetensors", num_classes=7), lambda p: tmp_path / p)
    assert torch.equal(loaded.module.conv1.weight, source.conv1.weight)


def test_enum_weights_load_from_the_hub_cache(tmp_path, monkeypatch, mobilenet_weights):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").symlink_to(mobilenet_weights)
    loaded = load_model(ModelSpec(arch="mobilenet_v2", weights="MobileNet_V2_Weights.IMAGENET1K_V1"))
    assert loaded.pretrained and loaded.preprocess == MOBILENET_PREPROCESS


def test_enum_weights_missing_from_the_cache_are_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFound, match="torch hub cache"):
        load_model(ModelSpec(arch="mobilenet_v2", weights="IMAGENET1K_V2"))


def test_enum_of_another_architecture_is_refused():
    with pytest.raises(ModelSpecError, match="do not belong"):
        load_model(ModelSpec(arch="mobilenet_v2", weights="ResNet18_Weights.IMAGENET1K_V1"))


def test_unknown_architecture_is_refused():
    assert "mobilenet_v2" in list_architectures()
    with pytest.raises(ModelSpecError, match="unknown architecture"):
        load_model(ModelSpec(arch="mobilenet_v9"))


def test_missing_weights_file_is_weights_not_found(tmp_path):
    with pytest.raises(WeightsNotFound):
        load_model(ModelSpec(arch="resnet18", weights=str(tmp_path / "nope.pth")))


def test_arbitrary_pickled_objects_are_unsafe(tmp_path):
    torch.save({"conv1.weight": NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeWeights, match="unpickling"):
        load_model(ModelSpec(arch="resnet18", weights=str(tmp_path / "evil.pth")))


def test_garbage_file_is_a_mismatch_not_a_crash(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(WeightsMismatch, match="not a readable"):
        load_model(ModelSpec(arch="resnet18", weights=str(tmp_path / "junk.pt")))


def test_weights_of_another_architecture_are_a_short_mismatch(mobilenet_weights):
    with pytest.raises(WeightsMismatch) as err:
        load_model(ModelSpec(arch="resnet18", weights=str(mobilenet_weights)))
    assert "missing" in str(err.value) and len(str(err.value)) < 400


def test_wrong_class_count_hints_at_num_classes(mobilenet_weights):
    with pytest.raises(WeightsMismatch, match="num_classes"):
        load_model(ModelSpec(arch="mobilenet_v2", weights=str(mobilenet_weights), num_classes=10))


def test_preprocess_overrides_apply_on_top_of_the_weights_transforms():
    spec = ModelSpec(arch="resnet18", preprocess={"resize": None, "crop": 64, "mean": [0.5, 0.5, 0.5]})
    assert load_model(spec).preprocess == Preprocess(None, 64, (0.5, 0.5, 0.5), (0.229, 0.224, 0.225), 64)


@pytest.mark.parametrize("bad", [
    {}, {"arch": "resnet18", "torchscript": "m.pt"}, {"arch": "resnet18", "colour": "red"},
    {"arch": "resnet18", "num_classes": 0}, {"arch": 3}, {"torchscript": "m.pt", "weights": "w.pth"},
    {"arch": "resnet18", "preprocess": {"crop": 224, "input_size": 256}},
    {"arch": "resnet18", "preprocess": {"std": [1, 0, 1]}},
])
def test_bad_specs_are_refused(bad):
    with pytest.raises(ModelSpecError):
        ModelSpec.from_dict(bad)


def test_spec_round_trips_through_a_dict():
    spec = ModelSpec(arch="resnet18", weights="IMAGENET1K_V1", preprocess={"resize": 300})
    assert spec.to_dict() == {"arch": "resnet18", "weights": "IMAGENET1K_V1", "preprocess": {"resize": 300}}
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_torchscript_that_is_not_a_torchscript_file_is_refused(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"PK\x03\x04 nothing")
    with pytest.raises(ModelSpecError, match="TorchScript"):
        load_model(ModelSpec(torchscript=str(tmp_path / "m.pt")))


def test_check_spec_finds_a_missing_layer_without_loading_weights():
    with pytest.raises(LayerError, match="'layer9'"):
        check_spec(ModelSpec(arch="resnet50"), ["layer1", "layer9"])
    check_spec(ModelSpec(arch="resnet50"), ["layer1", "layer4.2.conv3"])  # real module paths pass


def test_check_spec_refuses_uncached_enum_weights_and_unknown_names(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFound, match="hub cache"):
        check_spec(ModelSpec(arch="resnet18", weights="IMAGENET1K_V1"))
    with pytest.raises(ModelSpecError, match="known: \\['IMAGENET1K_V1'\\]"):
        check_spec(ModelSpec(arch="resnet18", weights="IMAGENET1K_V9"))
    with pytest.raises(ModelSpecError, match="unknown architecture"):
        check_spec(ModelSpec(arch="resnet1000"))
