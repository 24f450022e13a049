"""The output schemas (models/outputs.py), which the engine asks how far a faster variant is from
fp32, on every network's outputs for real frames: equal and slightly perturbed outputs are within
the engine's tolerance, far-off, reshaped, shifted or missing ones are not."""
import glob
import os

import cv2
import pytest
import torch

from dl_perception import engine, models
from dl_perception.core.imaging import DecodedImage
from torch_threads import one_torch_thread  # noqa: F401

SMALL = {"dronet": {}, "lift": {"max_keypoints": 60, "scales": [1.0, 2.0]},
         "netvlad": {"resize_to": [64, 48], "pca_dim": 0}, "posenet": {}, "depth": {}}


@pytest.fixture(scope="module")
def frames(shared_data):
    paths = sorted(glob.glob(os.path.join(shared_data, "tum_fr3_long_office", "rgb", "*.png")))
    return [DecodedImage(cv2.resize(cv2.imread(p), (160, 120), interpolation=cv2.INTER_AREA),
                         "bgr8") for p in paths[:2]]


def variants(outputs: dict) -> list[dict]:
    """Candidates a faster variant might give: equal, slightly off, far off, shifted keypoints,
    fewer keypoints, none, a wrong shape."""
    def changed(fn):
        return {k: fn(k, v) if torch.is_tensor(v) and torch.is_floating_point(v) else v
                for k, v in outputs.items()}
    generator = torch.Generator().manual_seed(0)

    def noise(scale):
        return changed(lambda k, v: v + scale * torch.randn(v.shape, generator=generator))
    out = [dict(outputs), noise(1e-3), noise(0.5)]
    if "keypoints" in outputs:
        out.append({**outputs, "keypoints": outputs["keypoints"] + torch.tensor([0.8, 0.0])})
        out.append({k: v[: len(v) // 2] for k, v in outputs.items()})
        out.append({k: v[:0] for k, v in outputs.items()})
    else:
        key = next(k for k, v in outputs.items() if torch.is_floating_point(v))
        out.append({**outputs, key: torch.cat([outputs[key], outputs[key]], dim=-1)})
    return out


@pytest.mark.parametrize("name", sorted(SMALL))
def test_schema_deviation_separates_close_from_far(name, frames):
    torch.manual_seed(0)
    model = models.create(name, **SMALL[name]).eval()
    schema = model.outputs
    with torch.inference_mode():
        reference = [model(model.preprocess(f)) for f in frames]
    options = engine.EngineOptions()
    tolerance = options.dense_tolerance
    limit = options.keypoint_tolerance if schema.kind == "keypoints" else tolerance
    per_frame = [variants(r) for r in reference]
    for ref, (equal, close, far, *changed) in zip(reference, per_frame):
        assert schema.deviation(ref, equal, tolerance) == 0.0
        assert schema.deviation(ref, close, tolerance) < limit
        assert schema.deviation(ref, far, tolerance) > limit
        if schema.kind == "keypoints":
            shifted, half, none = changed
            assert schema.deviation(ref, shifted, tolerance) == 0.0  # 0.8 px: within match_px
            assert schema.deviation(ref, half, tolerance) >= 0.4
            assert schema.deviation(ref, none, tolerance) == 1.0
        else:
            assert schema.deviation(ref, changed[0], tolerance) == float("inf")
    equal, close, far = ([c[i] for c in per_frame] for i in range(3))
    assert schema.deviation_over_frames(reference, equal, tolerance) == 0.0
    assert schema.deviation_over_frames(reference, close, tolerance) < limit
    assert schema.deviation_over_frames(reference, far, tolerance) > limit
    if schema.kind == "keypoints":
        assert len(reference[0][schema.keypoints]) > 0  # the real frames give keypoints


def test_every_network_declares_its_outputs():
    for name in models.MODEL_MODULES:
        schema = models.model_class(name).outputs
        assert schema.fields, name
