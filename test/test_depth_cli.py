"""dl-perception train / eval / bench depth, as a user runs them, on tiny fabricated sequences."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dl_perception.core.checkpoint import load_checkpoint
from dl_perception.datasets.sequence import Camera, SequenceWriter

CLI = os.path.join(os.path.dirname(sys.executable), "dl-perception")


def run(*args, expect=0, timeout=600):
    result = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert result.returncode == expect, result.stdout + result.stderr
    return result.stdout + result.stderr


def ground_and_box_sequence(root, world_seed, frames=16, width=160, height=120):
    """A camera 1.5 m above a ground plane (depth from the row) with a red box at 3-12 m; the sky
    has no return."""
    focal = width / 2
    writer = SequenceWriter(str(root), Camera(width, height, focal, focal, width / 2, height / 2),
                            {"world_seed": world_seed})
    rng = np.random.default_rng(world_seed)
    rows = np.arange(height, dtype=np.float32)[:, None] + 0.5 - height / 2
    for i in range(frames):
        depth = np.where(rows > 0, 1.5 * focal / np.maximum(rows, 1e-3), np.nan)
        depth = np.repeat(depth, width, axis=1).astype(np.float32)
        shade = np.clip(255 - 10 * np.nan_to_num(depth, nan=30.0), 30, 255)
        rgb = np.stack([0.4 * shade, 0.7 * shade, 0.3 * shade], -1).astype(np.uint8)
        rgb[rows[:, 0] <= 0] = (150, 180, 220)
        box_depth = rng.uniform(3.0, 12.0)
        left = int(rng.integers(0, width - 30))
        bottom = int(height / 2 + 1.5 * focal / box_depth)
        top = max(0, int(height / 2 - 1.0 * focal / box_depth))
        right = left + int(1.5 * focal / box_depth)
        rgb[top:bottom, left:right] = (200, 60, 50)
        depth[top:bottom, left:right] = box_depth
        writer.add(i * 0.1, rgb, depth, [0, 0, 0], [0, 0, 0, 1])
    writer.close()
    return str(root)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth_cli")
    train = ground_and_box_sequence(root / "train" / "world_5", 5)
    evaluation = ground_and_box_sequence(root / "eval" / "world_1001", 1001, frames=4)
    weights = str(root / "depth.safetensors")
    out = run("train", "depth", "--data", train, "--out", weights, "--coarse-epochs", "2",
              "--fine-epochs", "1", "--batch-size", "8", "--optimizer", "adam", "--adam-lr",
              "1e-3", "--device", "cpu")
    return {"root": root, "train": train, "eval": evaluation, "weights": weights, "log": out}


def test_train_runs_coarse_then_fine(trained):
    log = trained["log"]
    assert "coarse epoch 2/2" in log and "fine epoch 1/1" in log
    assert log.index("coarse epoch 2/2") < log.index("fine epoch 1/1")
    checkpoint = load_checkpoint(trained["weights"], expected_model="depth")
    info = checkpoint.info
    assert info["stack"] == "fine" and info["train_config"]["loss_lambda"] == 0.5
    # the fine stage starts (epoch 0) at the coarse prediction: the checkpoint keeps its best epoch
    assert [(h["stack"], h["epoch"]) for h in info["history"]][:3] == [
        ("coarse", 1), ("coarse", 2), ("fine", 0)]
    assert log.index("fine epoch 0/1") < log.index("fine epoch 1/1")
    assert checkpoint.config["input_size"] == [160, 120]


def test_fine_stage_alone_keeps_the_coarse_stack(trained, tmp_path):
    weights = str(tmp_path / "fine_only.safetensors")
    run("train", "depth", "--data", trained["train"], "--out", weights, "--init",
        trained["weights"], "--stages", "fine", "--fine-epochs", "1", "--batch-size", "8",
        "--device", "cpu")
    before = load_checkpoint(trained["weights"]).state_dict
    trained_fine = load_checkpoint(weights)
    after = trained_fine.state_dict
    fine_changed = trained_fine.info["epoch"] > 0  # else epoch 0 (the start) stayed the best
    for name in before:
        same = bool((before[name] == after[name]).all())
        fixed = name.startswith("coarse") or name in ("mean", "std")
        assert same == (fixed or not fine_changed), name


def test_eval_prints_every_measure_raw_and_median_scaled(trained):
    json_path = str(trained["root"] / "metrics.json")
    out = run("eval", "depth", "--weights", trained["weights"], "--data", trained["eval"],
              "--json", json_path, "--device", "cpu")
    for label in ("abs rel", "sq rel", "RMSE (m)", "RMSE log", "scale-invariant RMSE log",
                  "delta < 1.25 ", "delta < 1.25^2", "delta < 1.25^3", "median-scaled"):
        assert label in out, label
    metrics = json.load(open(json_path))
    assert metrics["images"] == 4 and metrics["frames"] == 4
    # the sky (no return) is masked: 60 of 120 rows have depth
    assert metrics["pixels"] == pytest.approx(4 * 160 * 60, rel=0.05)
    raw, scaled = metrics["raw"], metrics["median_scaled"]
    assert raw["si_rmse_log"] == pytest.approx(scaled["si_rmse_log"], rel=1e-6)  # scale-invariant
    assert 0 <= raw["delta_1"] <= raw["delta_2"] <= raw["delta_3"] <= 1


def test_eval_defaults_to_the_shipped_checkpoints(trained):
    """No --weights: the real-camera checkpoint; shipped:sim: the simulator's."""
    for weights, name in (([], "depth.safetensors"), (["--weights", "shipped:sim"],
                                                      "depth_sim.safetensors")):
        out = run("eval", "depth", *weights, "--data", trained["eval"], "--device", "cpu")
        assert out.splitlines()[0].startswith("Depth evaluation of ")
        assert out.splitlines()[0].split()[3].endswith(os.sep + name)


def test_train_refuses_evaluation_worlds(trained):
    out = run("train", "depth", "--data", trained["eval"], "--out",
              str(trained["root"] / "x.safetensors"), expect=1)
    assert "reserved for evaluation" in out and "1001" in out


def test_bench_reports_frames_per_second(trained, tmp_path):
    out = run("bench", "depth", "--weights", trained["weights"], "--frames", "10", "--no-ros",
              "--device", "cpu", "--json", str(tmp_path / "bench.json"))
    assert "model (preprocess+forward)" in out and "paper preset model" in out
    rows = json.load(open(tmp_path / "bench.json"))["rows"]
    assert rows[0]["fps"] > 0 and all(row["ratio_to_model"] > 0 for row in rows[1:])
