"""The output schemas (models/outputs.py) measure what engine.output_deviation measures today,
for every network, on real frames: phase B lets the engine ask the schema instead of looking for
"keypoints" in the outputs."""
import glob
import os

import cv2
import pytest
import torch

from dl_perception import engine, models
from dl_perception.imaging import DecodedImage
from dl_perception.models.specs import OUTPUT_SCHEMAS, output_schema
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
        out.append({**outputs, "keypoints": outputs["keypoints"] + 0.8})
        out.append({k: v[: len(v) // 2] for k, v in outputs.items()})
        out.append({k: v[:0] for k, v in outputs.items()})
    else:
        key = next(k for k, v in outputs.items() if torch.is_floating_point(v))
        out.append({**outputs, key: outputs[key][..., :1]})
    return out


@pytest.mark.parametrize("name", sorted(SMALL))
def test_schema_deviation_equals_the_engines(name, frames):
    torch.manual_seed(0)
    model = models.create(name, **SMALL[name]).eval()
    schema = output_schema(model)
    with torch.inference_mode():
        reference = [model(model.preprocess(f)) for f in frames]
    tolerance = engine.EngineOptions.dense_tolerance
    per_frame = [variants(r) for r in reference]
    for candidates in zip(*per_frame):
        for ref, got in zip(reference, candidates):
            expected, kind = engine.output_deviation(ref, got, tolerance)
            assert schema.kind == kind
            assert schema.deviation(ref, got, tolerance) == expected
        if all(c.keys() == r.keys() for c, r in zip(candidates, reference)):
            try:
                expected = engine.deviation_over_frames(reference, list(candidates), tolerance)[0]
            except RuntimeError:  # shapes that cannot be stacked: the schema raises alike
                with pytest.raises(RuntimeError):
                    schema.deviation_over_frames(reference, list(candidates), tolerance)
                continue
            assert schema.deviation_over_frames(reference, list(candidates), tolerance) == expected
    if schema.kind == "keypoints":
        assert len(reference[0][schema.keypoints]) > 0  # the real frames give keypoints


def test_every_network_declares_its_outputs():
    assert sorted(OUTPUT_SCHEMAS) == sorted(models.MODEL_MODULES)
    for name, schema in OUTPUT_SCHEMAS.items():
        assert schema.fields, name
