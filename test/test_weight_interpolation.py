import pytest
import torch

from dl_perception import models
from dl_perception.core.checkpoint import CheckpointError
from dl_perception.training.weight_interpolation import interpolate_checkpoints, main


def test_halfway_weights_and_refusals(tmp_path):
    torch.manual_seed(0)
    a, b = models.create("dronet"), models.create("dronet")
    b.load_state_dict(a.state_dict())
    b.steering.weight.data.add_(1.0)  # a run fine-tuned from a
    a.save(str(tmp_path / "a.safetensors"))
    b.save(str(tmp_path / "b.safetensors"))
    out = str(tmp_path / "mid.safetensors")
    assert main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), out]) == 0
    mid = models.load(out, expected="dronet")
    for key, value in mid.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.5 * a.state_dict()[key] + 0.5 * b.state_dict()[key])
    quarter = interpolate_checkpoints(str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                                      str(tmp_path / "q.safetensors"), alpha=0.25)
    torch.testing.assert_close(quarter.steering.weight, a.steering.weight + 0.25)
    with pytest.raises(ValueError, match="alpha"):
        interpolate_checkpoints(str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), out, 1.5)
    models.create("depth").save(str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not the same network"):
        interpolate_checkpoints(str(tmp_path / "a.safetensors"), str(tmp_path / "other.safetensors"), out)
