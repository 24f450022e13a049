"""Hostile weight files (issue 21, items 1-3): non-finite tensors, metadata that would allocate
gigabytes or break every frame, files that are not checkpoints. Each is refused with a
CheckpointError before anything large is allocated, by the one loader every path shares."""
import json
import os
import resource
import types

import pytest
import torch
from safetensors.torch import save_file

from dl_perception import cli, models
from dl_perception.core.checkpoint import FORMAT, CheckpointError, save_checkpoint
from dl_perception.core.paths import WEIGHTS_DIR


def _dronet_file(tmp_path, name="d.safetensors", config=None, state=None):
    model = models.create("dronet")
    checkpoint = model.to_checkpoint()
    if config is not None:
        checkpoint.config = {**checkpoint.config, **config}
    if state is not None:
        checkpoint.state_dict = {**checkpoint.state_dict, **state}
    path = str(tmp_path / name)
    save_checkpoint(path, checkpoint)
    return path


def _raw_file(tmp_path, metadata: dict, tensors=None, name="raw.safetensors"):
    path = str(tmp_path / name)
    save_file(tensors or {"x": torch.zeros(1)}, path, metadata=metadata)
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(tmp_path, value):
    weight = torch.zeros(1, 6272)
    weight[0, 17] = value
    path = _dronet_file(tmp_path, state={"steering.weight": weight})
    with pytest.raises(CheckpointError, match="non-finite.*steering.weight"):
        models.load(path, expected="dronet")


def test_a_negative_batchnorm_variance_is_refused(tmp_path):
    # finite, but every output would be NaN (sqrt of a negative variance)
    path = _dronet_file(tmp_path, state={"blocks.0.bn1.running_var": -torch.ones(32)})
    with pytest.raises(CheckpointError, match="not finite on a test frame"):
        models.load(path, expected="dronet")


@pytest.mark.parametrize("channels,message", [
    ([4096] * 3, "outside"), ([1024] * 3, "parameters"), ([64, 96, 128], "does not fit")])
def test_a_huge_config_in_a_small_file_is_refused_before_allocating(tmp_path, channels, message):
    path = _dronet_file(tmp_path, config={"block_channels": channels})
    assert os.path.getsize(path) < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match=message):
        models.load(path, expected="dronet")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200  # the model itself would take 3.4 GB


def test_a_parameter_budget_is_enforced_before_allocation():
    cls = models.model_class("dronet")
    config = cls.make_config(block_channels=[2048, 2048, 2048])
    with pytest.raises(CheckpointError, match="parameters"):
        cls.check_parameter_budget(config)


@pytest.mark.parametrize("config,message", [
    ({"resize_to": [0, 0]}, "resize_to"),
    # smaller than the 200-pixel crop; the stored preprocessing (320x240) no longer fits either
    ({"resize_to": [100, 100]}, r"test frame|crop|size: \(320, 240\) vs \(100, 100\)"),
    ({"resize_to": [20000, 20000]}, "resize_to"),
    ({"crop_size": "200"}, "crop_size.*int"),
    ({"crop_size": 200.5}, "crop_size"),
    ({"crop_size": True}, "crop_size"),
    ({"block_channels": 32}, "block_channels.*list"),
    ({"block_channels": [32, "64", 128]}, "block_channels"),
    ({"block_channels": []}, "block_channels"),
    ({"block_channels": [[32], [64]]}, "block_channels"),
    ({"dropout": float("nan")}, "dropout"),
    ({"dropout": 2.0}, "dropout"),
    ({"unknown_field": 1}, "unknown_field"),
])
def test_bad_configs_are_refused_with_the_field_named(tmp_path, config, message):
    path = _dronet_file(tmp_path, config=config)
    with pytest.raises(CheckpointError, match=message):
        models.load(path, expected="dronet")


@pytest.mark.parametrize("metadata,message", [
    ({"format": FORMAT}, "no 'model'"),
    ({"format": FORMAT, "model": "dronet"}, "no 'config'"),
    ({"format": FORMAT, "model": "dronet", "config": "[1, 2]"}, "config"),
    ({"format": FORMAT, "model": "dronet", "config": "{"}, "config"),
    ({"format": FORMAT, "model": "dronet", "config": "[" * 100000 + "]" * 100000}, "config"),
    ({"format": FORMAT, "model": "no_such_net", "config": "{}"}, "unknown model"),
])
def test_malformed_metadata_is_a_checkpoint_error(tmp_path, metadata, message):
    path = _raw_file(tmp_path, metadata)
    with pytest.raises(CheckpointError, match=message):
        models.load(path)


def test_shipped_and_official_weights_still_load(official_dronet):
    shipped = sorted(f for f in os.listdir(WEIGHTS_DIR) if f.endswith(".safetensors"))
    assert len(shipped) >= 5
    for name in shipped:
        model = models.load(os.path.join(WEIGHTS_DIR, name))
        assert model.name == name.split(".")[0].split("_")[0]  # dronet_sim: a dronet
    assert models.load(official_dronet, expected="dronet").name == "dronet"


def test_every_preset_of_every_model_fits_its_own_bounds():
    for name in models.MODEL_MODULES:
        cls = models.model_class(name)
        for preset in cls.presets:
            config = cls.make_config(preset)
            values = json.loads(json.dumps(vars(config)))
            assert cls.checked_config(values) == config, (name, preset)
            cls.check_parameter_budget(config)


def _cli(capsys, *args, debug=False):
    """`dl-perception ARGS` in this process (as the console script runs it)."""
    capsys.readouterr()
    code = cli.main((["--debug"] if debug else []) + list(args))
    out, err = capsys.readouterr()
    return types.SimpleNamespace(returncode=code, stdout=out, stderr=err)


def _error_line(result) -> str:
    return (result.stderr.strip().splitlines() or [""])[-1]


def test_eval_on_nan_weights_is_an_error_not_a_score(tmp_path, shared_data, capsys):
    weight = torch.zeros(1, 6272)
    weight[0, 0] = float("nan")
    path = _dronet_file(tmp_path, state={"collision.weight": weight})
    result = _cli(capsys, "eval", "dronet", "--weights", path, "--data",
                  os.path.join(shared_data, "dronet_collision"), "--device", "cpu")
    assert result.returncode == 1, result.stdout
    assert _error_line(result).startswith("error: ") and "non-finite" in result.stderr
    assert "Traceback" not in result.stderr and "roc_auc" not in result.stdout


def test_eval_on_a_checkpoint_without_a_model_key(tmp_path, capsys):
    path = _raw_file(tmp_path, {"format": FORMAT, "config": "{}"})
    result = _cli(capsys, "eval", "dronet", "--weights", path, "--data", str(tmp_path))
    assert result.returncode == 1
    assert _error_line(result).startswith("error: ") and "Traceback" not in result.stderr


def _keras_json(shared_data):
    with open(os.path.join(shared_data, "dronet", "model_struct.json")) as handle:
        return handle.read()


@pytest.mark.parametrize("case", ["empty_json", "empty_h5", "directory", "pickle", "nested",
                                  "list_json", "nan_h5"])
def test_convert_refuses_bad_inputs_with_an_error_line(tmp_path, shared_data, case, capsys):
    json_path = os.path.join(shared_data, "dronet", "model_struct.json")
    h5_path = os.path.join(shared_data, "dronet", "model_weights.h5")
    if case == "empty_json":
        json_path = str(tmp_path / "empty.json")
        open(json_path, "w").close()
    elif case == "empty_h5":
        h5_path = str(tmp_path / "empty.h5")
        open(h5_path, "w").close()
    elif case == "directory":
        h5_path = str(tmp_path)
    elif case == "pickle":
        import pickle
        h5_path = str(tmp_path / "weights.pkl")
        with open(h5_path, "wb") as handle:
            pickle.dump({"conv2d_1": [1, 2, 3]}, handle)
    elif case == "nested":
        json_path = str(tmp_path / "nested.json")
        with open(json_path, "w") as handle:
            handle.write("[" * 200000 + "]" * 200000)
    elif case == "list_json":
        json_path = str(tmp_path / "list.json")
        with open(json_path, "w") as handle:
            handle.write("[1, 2, 3]")
    elif case == "nan_h5":
        import h5py
        import shutil
        h5_path = str(tmp_path / "nan.h5")
        shutil.copy(os.path.join(shared_data, "dronet", "model_weights.h5"), h5_path)
        with h5py.File(h5_path, "r+") as h5:
            names = []
            h5.visititems(lambda name, item: names.append(name)
                          if isinstance(item, h5py.Dataset) and "kernel" in name else None)
            data = h5[names[0]][()]
            data.flat[0] = float("nan")
            h5[names[0]][...] = data
    out = str(tmp_path / "out.safetensors")
    result = _cli(capsys, "convert", "dronet-keras", "--json", json_path, "--weights", h5_path,
                  "--out", out)
    assert result.returncode == 1, result.stdout + result.stderr
    assert _error_line(result).startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not os.path.exists(out)


def test_debug_shows_the_traceback(tmp_path, capsys):
    path = _raw_file(tmp_path, {"format": FORMAT, "config": "{}"})
    result = _cli(capsys, "info", path, debug=True)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "error: " in result.stderr


def test_a_directory_or_empty_file_as_weights_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="is not a file"):
        models.load(str(tmp_path))
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        models.load(str(empty))


def test_the_schema_follows_annotations_a_network_engineer_may_add():
    from dataclasses import dataclass, field
    from typing import Optional

    from dl_perception.core.checkpoint import checked_config

    @dataclass
    class Config:
        backbone: Optional[str] = None
        extra_scales: list = field(default_factory=list)
        widths: list[int] = field(default_factory=lambda: [8, 16])
        gain: float | None = None
        name: str = "x"

    assert checked_config(Config, {"backbone": "vgg16", "extra_scales": [0.5, 2],
                                   "widths": [4], "gain": 2}, {}).gain == 2
    assert checked_config(Config, {"backbone": None, "extra_scales": []}, {}).backbone is None
    for values, message in [({"backbone": 3}, "backbone.*NoneType or str"),
                            ({"gain": "high"}, "gain"), ({"widths": [[4]]}, "widths"),
                            ({"extra_scales": [[1]]}, "extra_scales"),
                            ({"name": None}, "name"), ({"gain": float("nan")}, "gain")]:
        with pytest.raises(CheckpointError, match=message):
            checked_config(Config, values, {})
