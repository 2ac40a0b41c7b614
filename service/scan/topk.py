"""Running, mergeable per-unit top-k (values, image ids, map positions) on the scan device.

Candidates are ordered by (value descending, image id ascending): a total order, so the k best of
a union equal the k best of the union of each part's k best. That makes a scan over shards merged
afterwards identical, bit for bit, to one scan over everything, and it makes ties deterministic.
Memory is [C, k] per layer whatever the number of images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MAX_K = 100
EMPTY = -1  # image id of an unused slot (fewer than k images seen)
STATE_KEYS = ("values", "image_ids", "ys", "xs")


@dataclass
class TopK:
    values: Tensor     # [C, k] float32, descending per row
    image_ids: Tensor  # [C, k] int64, EMPTY for unused slots
    ys: Tensor         # [C, k] int64
    xs: Tensor         # [C, k] int64


class RunningTopK:
    def __init__(self, channels: int, k: int, device="cpu"):
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
        self.k = k
        self.values = torch.full((channels, k), float("-inf"), dtype=torch.float32, device=device)
        self.image_ids = torch.full((channels, k), EMPTY, dtype=torch.int64, device=device)
        self.ys = torch.zeros((channels, k), dtype=torch.int64, device=device)
        self.xs = torch.zeros((channels, k), dtype=torch.int64, device=device)

    @property
    def channels(self) -> int:
        return self.values.shape[0]

    def threshold(self) -> Tensor:
        """[C] score an image must reach to enter each row (-inf while the row has free slots)."""
        return self.values[:, -1]

    def add(self, scores: Tensor, ys: Tensor, xs: Tensor, image_ids: Tensor) -> None:
        """Offer one score per (image, channel): ``scores``/``ys``/``xs`` are [N, C], ids [N]."""
        n = scores.shape[0]
        ids = image_ids.to(self.image_ids.device, torch.int64).view(1, n).expand(self.channels, n)
        self._keep_best(
            scores.to(self.values.device, torch.float32).t(), ids,
            ys.to(self.ys.device, torch.int64).t(), xs.to(self.xs.device, torch.int64).t(),
        )

    def merge(self, other: "RunningTopK") -> None:
        """Absorb a state built on a disjoint set of images."""
        if other.values.shape[0] != self.channels or other.k != self.k:
            raise ValueError("cannot merge top-k states of different shapes")
        dev = self.values.device
        self._keep_best(other.values.to(dev), other.image_ids.to(dev), other.ys.to(dev), other.xs.to(dev))

    def _keep_best(self, values: Tensor, ids: Tensor, ys: Tensor, xs: Tensor) -> None:
        values = torch.nan_to_num(values, nan=float("-inf"))
        all_values = torch.cat([self.values, values], dim=1)
        all_ids = torch.cat([self.image_ids, ids], dim=1)
        all_ys = torch.cat([self.ys, ys], dim=1)
        all_xs = torch.cat([self.xs, xs], dim=1)
        # Two stable sorts give the (value desc, id asc) order; empty slots sort after any image.
        id_key = torch.where(all_ids == EMPTY, torch.iinfo(torch.int64).max, all_ids)
        order = torch.sort(id_key, dim=1, stable=True).indices
        by_value = torch.sort(all_values.gather(1, order), dim=1, descending=True, stable=True).indices
        keep = order.gather(1, by_value)[:, : self.k]
        self.values = all_values.gather(1, keep)
        self.image_ids = all_ids.gather(1, keep)
        self.ys = all_ys.gather(1, keep)
        self.xs = all_xs.gather(1, keep)

    def result(self) -> TopK:
        return TopK(**self.state_dict())

    def state_dict(self) -> dict[str, Tensor]:
        return {key: getattr(self, key).cpu().clone() for key in STATE_KEYS}

    @classmethod
    def from_state_dict(cls, d: dict[str, Tensor], device="cpu") -> "RunningTopK":
        values = d["values"]
        if set(d) != set(STATE_KEYS) or any(d[key].shape != values.shape for key in STATE_KEYS):
            raise ValueError("malformed top-k state")
        state = cls(values.shape[0], values.shape[1], device)
        for key in STATE_KEYS:
            setattr(state, key, d[key].to(device, getattr(state, key).dtype))
        return state
