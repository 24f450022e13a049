"""Output schemas: what a network's `forward` returns, and how far one run of it is from
another (the engine keeps a faster variant only when it stays within tolerance of fp32). Each
network declares its schema; the engine asks the schema, never the output names.

- `DenseOutputs`: every floating output compared element by element, max |difference| /
  max(1, max |reference|): absolute for outputs within +-1 (probabilities, steering, unit
  descriptors, quaternions), relative for larger ones (positions, depth in metres).
- `KeypointOutputs`: a variable number of keypoints per frame; the share of reference keypoints
  without a candidate keypoint within `match_px` whose descriptor is within the dense tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch


def _floating(value) -> bool:
    return torch.is_tensor(value) and torch.is_floating_point(value)


@dataclass(frozen=True)
class DenseOutputs:
    kind: ClassVar[str] = "dense"
    fields: dict = field(default_factory=dict)  # output name -> meaning (docs tables)

    def deviation(self, reference: dict, candidate: dict, tolerance: float = 0.0) -> float:
        """Largest max |candidate - reference| / max(1, max |reference|) over the floating
        outputs both hold; inf when a shape differs. (`tolerance` is the keypoint schema's.)"""
        worst = 0.0
        for key, value in reference.items():
            if not torch.is_floating_point(value) or key not in candidate:
                continue
            other = candidate[key].float()
            if other.shape != value.shape:
                return float("inf")
            value = value.detach().float()
            scale = max(float(value.abs().max()), 1.0)
            worst = max(worst, float((value - other.detach()).abs().max()) / scale)
        return worst

    def deviation_over_frames(self, reference: list[dict], candidate: list[dict],
                              tolerance: float = 0.0) -> float:
        """Over many frames: each output stacked first, so its scale is its range over all."""
        stacked_ref, stacked_got = {}, {}
        for key, value in reference[0].items():
            if _floating(value):
                stacked_ref[key] = torch.cat([r[key].float().reshape(-1) for r in reference])
                stacked_got[key] = torch.cat([c[key].float().reshape(-1) for c in candidate])
        return self.deviation(stacked_ref, stacked_got)


@dataclass(frozen=True)
class KeypointOutputs:
    kind: ClassVar[str] = "keypoints"
    keypoints: str = "keypoints"  # N x 2 pixel coordinates
    descriptors: str | None = "descriptors"  # N x D, compared where both runs have them
    match_px: float = 1.0
    fields: dict = field(default_factory=dict)

    def deviation(self, reference: dict, candidate: dict, tolerance: float) -> float:
        """Share of reference keypoints with no candidate keypoint within `match_px` whose
        descriptor is within `tolerance` (max |difference|) of theirs."""
        ref, got = reference[self.keypoints].float(), candidate[self.keypoints].float()
        if len(ref) == 0:
            return 0.0 if len(got) == 0 else 1.0
        if len(got) == 0:
            return 1.0
        nearest, index = torch.cdist(ref, got).min(dim=1)
        matched = nearest <= self.match_px
        if self.descriptors and self.descriptors in reference and self.descriptors in candidate:
            apart = (reference[self.descriptors].float()
                     - candidate[self.descriptors].float()[index])
            matched &= apart.abs().amax(dim=1) <= tolerance
        return float((~matched).float().mean())

    def deviation_over_frames(self, reference: list[dict], candidate: list[dict],
                              tolerance: float) -> float:
        """The mean over frames."""
        return float(np.mean([self.deviation(r, c, tolerance)
                              for r, c in zip(reference, candidate)]))


OutputSchema = DenseOutputs | KeypointOutputs

__all__ = ["DenseOutputs", "KeypointOutputs", "OutputSchema"]
