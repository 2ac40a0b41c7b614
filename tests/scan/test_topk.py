"""Running top-k: order, ties, empty slots, bounds, merging and state."""

from __future__ import annotations

import pytest
import torch

from service.scan.topk import EMPTY, RunningTopK


def offer(state: RunningTopK, scores, ids, start_pos=0):
    scores = torch.tensor(scores, dtype=torch.float32)
    pos = torch.arange(start_pos, start_pos + scores.numel()).view_as(scores)
    state.add(scores, pos, pos + 100, torch.tensor(ids))


def test_keeps_the_k_best_in_descending_order_with_positions():
    state = RunningTopK(channels=2, k=2)
    offer(state, [[1.0, 5.0], [3.0, 4.0], [2.0, 6.0]], [0, 1, 2])
    top = state.result()
    assert top.values.tolist() == [[3.0, 2.0], [6.0, 5.0]]
    assert top.image_ids.tolist() == [[1, 2], [2, 0]]
    assert top.ys.tolist() == [[2, 4], [5, 1]] and top.xs.tolist() == [[102, 104], [105, 101]]


def test_ties_go_to_the_lower_image_id_whatever_the_arrival_order():
    state = RunningTopK(channels=1, k=2)
    offer(state, [[7.0], [7.0]], [9, 4])
    offer(state, [[7.0]], [2])
    assert state.result().image_ids.tolist() == [[2, 4]]


def test_unused_slots_are_empty_when_fewer_images_than_k():
    state = RunningTopK(channels=1, k=3)
    offer(state, [[float("-inf")]], [5])
    top = state.result()
    assert top.image_ids.tolist() == [[5, EMPTY, EMPTY]]


@pytest.mark.parametrize("k", [0, 101, 2.5, True])
def test_k_outside_one_to_a_hundred_is_refused(k):
    with pytest.raises(ValueError):
        RunningTopK(channels=1, k=k)


def test_merging_random_shards_equals_one_pass_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 20, (300, 16), generator=gen).float() / 4  # many exact ties
    ys = torch.randint(0, 7, (300, 16), generator=gen)
    ids = torch.arange(300)
    whole = RunningTopK(16, 9)
    whole.add(scores, ys, ys, ids)
    parts = [RunningTopK(16, 9) for _ in range(3)]
    for part, chunk in zip(parts, torch.randperm(300, generator=gen).chunk(3)):
        for sub in chunk.chunk(5):
            part.add(scores[sub], ys[sub], ys[sub], ids[sub])
    merged = parts[2]
    merged.merge(parts[0])
    merged.merge(parts[1])
    for key, value in whole.state_dict().items():
        assert torch.equal(merged.state_dict()[key], value)


def test_state_dict_round_trip():
    state = RunningTopK(3, 4)
    offer(state, [[1.0, 2.0, 3.0]], [0])
    back = RunningTopK.from_state_dict(state.state_dict())
    assert all(torch.equal(back.state_dict()[k], v) for k, v in state.state_dict().items())
    with pytest.raises(ValueError):
        RunningTopK.from_state_dict({"values": torch.zeros(2, 2)})
