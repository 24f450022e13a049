"""dl-perception convert / eval / train / bench / info for DroNet, as a user runs them."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dl_perception.sim.synthetic import SyntheticCorridor

CLI = os.path.join(os.path.dirname(sys.executable), "dl-perception")


def run(*args, timeout=600):
    result = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_convert_and_info(shared_data, tmp_path):
    out = tmp_path / "dronet.safetensors"
    folder = os.path.join(shared_data, "dronet")
    run("convert", "dronet-keras", "--json", os.path.join(folder, "model_struct.json"),
        "--weights", os.path.join(folder, "model_weights.h5"), "--out", str(out))
    info = json.loads(run("info", str(out)))
    assert info["model"] == "dronet" and info["float_values"] == 320930 + 704
    assert info["info"]["weights_sha256"].startswith("7e9ddfae")
    assert info["preprocessing"]["size"] == [320, 240]  # the stored preprocessing spec
    assert info["preprocessing"]["crop"] == [200, 200] and info["preprocessing"]["color"] == "gray"


def test_convert_refuses_a_broken_model_json(shared_data, tmp_path):
    bad = tmp_path / "model.json"
    bad.write_text('{"class_name": "Sequential", "config": []}')
    result = subprocess.run([CLI, "convert", "dronet-keras", "--json", str(bad), "--weights",
                             os.path.join(shared_data, "dronet", "model_weights.h5"),
                             "--out", str(tmp_path / "x.safetensors")],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "functional Model" in result.stderr


def test_eval_on_real_collision_frames(official_dronet, shared_data, tmp_path):
    out = run("eval", "dronet", "--weights", official_dronet, "--data",
              os.path.join(shared_data, "dronet_collision"), "--json", str(tmp_path / "m.json"),
              "--device", "cpu")
    metrics = json.load(open(tmp_path / "m.json"))["rows"][1]
    assert metrics["model"] == "dronet_official" and metrics["collision_samples"] == 52
    # the official model on GOPR0265 at threshold 0.5 (reference_outputs.keras.csv)
    assert metrics["collision_accuracy"] == pytest.approx(46 / 52)
    assert 0.9 < metrics["collision_roc_auc"] <= 1.0
    assert "F1" in out and "constant" in out


def _corridor_dataset(root, frames=48):
    """A tiny project-layout dataset: steering from the obstacle's side, collision when near."""
    corridor = SyntheticCorridor(160, 120, seed=3)
    os.makedirs(root / "images")
    rows = ["image,steering,collision"]
    for i in range(frames):
        t = i * 0.5
        cv2.imwrite(str(root / "images" / f"{i:04d}.png"), corridor.render(t))
        z = corridor.speed * t
        gap = corridor.spacing - (z % corridor.spacing)
        nearest = corridor.obstacle_offsets[(int(z // corridor.spacing) + 1) % 64]
        rows.append(f"images/{i:04d}.png,{-np.sign(nearest) * 0.5:.2f},{int(gap < 4.0)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def test_train_then_eval_on_project_layout(tmp_path):
    data = tmp_path / "data"
    _corridor_dataset(data)
    weights = tmp_path / "trained.safetensors"
    out = run("train", "dronet", "--data", str(data), "--out", str(weights), "--epochs", "3",
              "--batch-size", "16", "--collision-start-epoch", "0", "--collision-ramp-epochs", "1",
              "--device", "cpu")
    assert "epoch 3/3" in out
    info = json.loads(run("info", str(weights)))
    assert info["info"]["train_config"]["epochs"] == 3
    table = run("eval", "dronet", "--weights", str(weights), "--data", str(data))
    assert "trained" in table and "RMSE" in table and "accuracy" in table


def test_train_refuses_evaluation_worlds(tmp_path):
    data = tmp_path / "data"
    _corridor_dataset(data, frames=4)
    (data / "meta.json").write_text('{"world_seed": 1003}')
    result = subprocess.run([CLI, "train", "dronet", "--data", str(data), "--out",
                             str(tmp_path / "w.safetensors"), "--epochs", "1"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "reserved for evaluation" in result.stderr


def test_bench_reports_model_and_node_path(official_dronet, tmp_path):
    out = run("bench", "dronet", "--weights", official_dronet, "--frames", "30", "--device",
              "cpu", "--json", str(tmp_path / "b.json"))
    rows = json.load(open(tmp_path / "b.json"))["rows"]
    assert [r["path"].split()[0] for r in rows] == ["model", "node", "node"]
    assert all(r["fps"] > 0 for r in rows)
    assert 0 < rows[1]["ratio_to_model"]
    assert "ratio_to_model" in out
