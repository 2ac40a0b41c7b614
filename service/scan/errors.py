"""Typed scan errors.

Every failure a request can provoke (bad spec, missing or unsafe weights, unknown layer, empty
dataset, cancellation) is one of these, so the API maps it to a problem response by ``kind`` and a
worker records a readable message instead of a traceback.
"""

from __future__ import annotations


class ScanError(Exception):
    """Base class; ``kind`` is the stable slug the API uses as the problem ``type`` suffix."""

    kind = "scan-error"


class ModelSpecError(ScanError):
    kind = "invalid-model-spec"


class WeightsNotFound(ScanError):
    kind = "weights-not-found"


class WeightsMismatch(ScanError):
    kind = "weights-mismatch"


class UnsafeWeights(ScanError):
    kind = "unsafe-weights"


class LayerError(ScanError):
    kind = "unknown-layer"


class DatasetError(ScanError):
    kind = "invalid-dataset"


class ScanCancelled(ScanError):
    kind = "cancelled"
