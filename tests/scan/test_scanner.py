"""The scan loop against a brute-force reference on real MobileNetV2 weights and real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.scan.errors import LayerError, ScanCancelled
from service.scan.layers import LayerInfo
from service.scan.receptive_field import ReceptiveField
from service.scan.scanner import ScanResult, _Reducer, activation_map, scan

from .conftest import REFERENCE_LAYERS

K = 5


@pytest.fixture(scope="module")
def scans(mobilenet, imagenet_dir, photos):
    return {
        score: scan(mobilenet, imagenet_dir, photos, REFERENCE_LAYERS, k=K, score=score, batch_size=8, num_workers=0)
        for score in ("max", "mean")
    }


def assert_matches_reference(result, reference_values, reference_ids, reference_ys=None, reference_xs=None):
    """Values equal (to float rounding) and ids equal except between near-equal values."""
    np.testing.assert_allclose(result.values.numpy(), reference_values, rtol=1e-5, atol=1e-6)
    ids = result.image_ids.numpy()
    differ = ids != reference_ids
    tied = np.isclose(result.values.numpy(), reference_values, rtol=1e-5, atol=1e-6)
    assert not (differ & ~tied).any()
    if reference_ys is not None:
        same = ~differ
        assert (result.ys.numpy()[same] == reference_ys[same]).all()
        assert (result.xs.numpy()[same] == reference_xs[same]).all()


@pytest.mark.parametrize("layer", REFERENCE_LAYERS)
def test_max_scan_matches_brute_force_reference(scans, reference_maps, photos, brute_force_topk, layer):
    values, ids, ys, xs = brute_force_topk(reference_maps[layer], [p.id for p in photos], K, "max")
    assert_matches_reference(scans["max"].topk[layer].result(), values, ids, ys, xs)


@pytest.mark.parametrize("layer", REFERENCE_LAYERS)
def test_mean_scan_matches_brute_force_reference(scans, reference_maps, photos, brute_force_topk, layer):
    values, ids, _, _ = brute_force_topk(reference_maps[layer], [p.id for p in photos], K, "mean")
    assert_matches_reference(scans["mean"].topk[layer].result(), values, ids)


def test_scan_reports_layers_in_forward_order_with_shapes(scans):
    layers = list(scans["max"].layers.values())
    assert [layer.name for layer in layers] == REFERENCE_LAYERS
    inner = scans["max"].layers["features.3.conv.0"]
    assert (inner.channels, inner.height, inner.width) == (144, 56, 56)


def test_scan_records_every_image_with_original_size(scans, photos):
    images = scans["max"].images
    assert [o.record.id for o in images] == [p.id for p in photos]
    assert all(o.skipped is None and o.width > 0 and o.height > 0 for o in images)


def test_shards_merged_equal_one_scan_bit_for_bit(mobilenet, imagenet_dir, photos, scans):
    first = scan(mobilenet, imagenet_dir, photos[:8], REFERENCE_LAYERS, k=K, batch_size=8, num_workers=0)
    second = scan(mobilenet, imagenet_dir, photos[8:], REFERENCE_LAYERS, k=K, batch_size=8, num_workers=0)
    merged = second.merge(first)
    whole = scans["max"]
    for layer in REFERENCE_LAYERS:
        a, b = merged.topk[layer].state_dict(), whole.topk[layer].state_dict()
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert merged.images == whole.images


def test_state_round_trips_without_pickle(scans):
    result = scans["mean"]
    blob = result.to_state()
    assert b"\x80\x04" not in blob[:16]  # safetensors header, not a pickle
    back = ScanResult.from_state(blob)
    assert back.layers == result.layers and back.images == result.images
    assert (back.preprocess, back.score, back.k, back.pretrained) == (result.preprocess, "mean", K, True)
    for layer in REFERENCE_LAYERS:
        assert all(torch.equal(v, result.topk[layer].state_dict()[key]) for key, v in back.topk[layer].state_dict().items())


def test_worker_processes_give_identical_results(mobilenet, imagenet_dir, photos, scans):
    with_workers = scan(mobilenet, imagenet_dir, photos, ["features.6"], k=K, batch_size=8, num_workers=2)
    assert torch.equal(with_workers.topk["features.6"].values, scans["max"].topk["features.6"].values)
    assert torch.equal(with_workers.topk["features.6"].image_ids, scans["max"].topk["features.6"].image_ids)


def test_neuron_mode_ranks_the_centre_neuron(mobilenet, imagenet_dir, photos, reference_maps, brute_force_topk):
    result = scan(mobilenet, imagenet_dir, photos, ["features.6"], k=K, neuron=(), batch_size=8, num_workers=0)
    fmaps = reference_maps["features.6"]
    h, w = fmaps.shape[-2:]
    centre = fmaps[:, :, h // 2 : h // 2 + 1, w // 2 : w // 2 + 1]
    values, ids, _, _ = brute_force_topk(centre, [p.id for p in photos], K, "max")
    top = result.topk["features.6"].result()
    assert_matches_reference(top, values, ids)
    assert (top.ys == h // 2).all() and (top.xs == w // 2).all()


def test_neuron_outside_the_map_is_refused(mobilenet, imagenet_dir, photos):
    with pytest.raises(LayerError, match="outside"):
        scan(mobilenet, imagenet_dir, photos[:2], ["features.18"], neuron=(9, 9), num_workers=0)


def test_progress_is_reported_per_batch(mobilenet, imagenet_dir, photos):
    calls = []
    scan(mobilenet, imagenet_dir, photos[:6], ["features.1"], batch_size=4, num_workers=0,
         progress=lambda done, total, rate: calls.append((done, total, rate)))
    assert [(d, t) for d, t, _ in calls] == [(4, 6), (6, 6)]
    assert all(rate > 0 for _, _, rate in calls)


def test_cancel_between_batches_raises_scan_cancelled(mobilenet, imagenet_dir, photos):
    batches = []
    with pytest.raises(ScanCancelled):
        scan(mobilenet, imagenet_dir, photos[:8], ["features.1"], batch_size=4, num_workers=0,
             progress=lambda *a: batches.append(a), should_cancel=lambda: len(batches) >= 1)
    assert len(batches) == 1


def test_forward_stops_after_the_deepest_requested_layer(mobilenet, imagenet_dir, photos):
    batch_sizes = []  # the catalog's own single-image passes run the whole model; the scan must not

    def record(_module, _inputs, out):
        if isinstance(out, torch.Tensor):
            batch_sizes.append(out.shape[0])

    handle = mobilenet.module.features[4].register_forward_hook(record)
    try:
        scan(mobilenet, imagenet_dir, photos[:2], ["features.3"], batch_size=2, num_workers=0)
    finally:
        handle.remove()
    assert 2 not in batch_sizes


def test_unknown_layer_is_refused(mobilenet, imagenet_dir, photos):
    with pytest.raises(LayerError, match="unknown layer"):
        scan(mobilenet, imagenet_dir, photos[:2], ["features.99"], num_workers=0)


def test_default_layers_are_the_stage_outputs(mobilenet, imagenet_dir, photos):
    result = scan(mobilenet, imagenet_dir, photos[:2], None, k=1, num_workers=0)
    assert list(result.layers) == [f"features.{i}" for i in (0, 1, 3, 6, 10, 13, 16, 17, 18)]


def test_activation_map_equals_the_recorded_feature_map(mobilenet, imagenet_dir, photos, reference_maps):
    fmap = activation_map(mobilenet, imagenet_dir / photos[3].path, "features.3.conv.0", 7)
    np.testing.assert_allclose(fmap.numpy(), reference_maps["features.3.conv.0"][3, 7], rtol=1e-5, atol=1e-5)


def test_activation_map_refuses_unit_out_of_range(mobilenet, imagenet_dir, photos):
    with pytest.raises(LayerError, match="out of range"):
        activation_map(mobilenet, imagenet_dir / photos[0].path, "features.1", 16)


@pytest.mark.parametrize("threshold", [[float("-inf")] * 5, [float("-inf")] + [9.0] * 4, [9.0] * 5],
                         ids=["every-map", "candidates-only", "none"])
def test_positions_are_the_first_flat_argmax_for_every_pair_that_can_enter(threshold):
    """Both ways of finding positions (every map at once, or only the candidates' maps) agree
    with a flat argmax, ties included, wherever a score reaches the threshold."""
    torch.manual_seed(0)
    fmap = torch.randn(6, 5, 7, 9).clamp(max=1.0)  # many tied maxima at 1.0
    info = LayerInfo("x", "Conv2d", 5, 7, 9, ReceptiveField(3, 1, -1))
    threshold = torch.tensor(threshold)
    scores, ys, xs = _Reducer("max", None, info)(fmap, threshold)
    flat = fmap.flatten(2).argmax(dim=2)
    can_enter = scores >= threshold
    assert torch.equal(scores, fmap.amax(dim=(2, 3)))
    assert torch.equal(ys[can_enter], (flat // 9)[can_enter]) and torch.equal(xs[can_enter], (flat % 9)[can_enter])
