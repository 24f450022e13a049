"""Training and evaluating PoseNet: it learns a scene (held-out frames beat the mean-pose guess),
NaN poses are skipped with a count, evaluation worlds are refused, every layout trains and
evaluates through the CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from posenet_scenes import TINY_MODEL, write_cambridge, write_sequence, write_seven_scenes

from dl_perception import cli
from dl_perception.core.checkpoint import load_checkpoint
from dl_perception.datasets.poses import open_posed_images
from dl_perception.evaluation.posenet import evaluate_posenet, pose_metrics
from dl_perception.core.geometry import yaw_to_quat
from dl_perception.training.common import TrainingDataError
from dl_perception.training.posenet import PoseNetTrainConfig, train_posenet

CLI = os.path.join(os.path.dirname(sys.executable), "dl-perception")


def run(*args, expect=0):
    result = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == expect, result.stdout + result.stderr
    return result.stdout + result.stderr


def run_in_process(capsys, *args, expect=0):
    """The command without a new interpreter (torch's import is most of a CLI start)."""
    code = cli.main(list(args))
    captured = capsys.readouterr()
    assert code == expect, captured.out + captured.err
    return captured.out + captured.err


def test_pose_metrics():
    truth_p = np.zeros((4, 3))
    truth_q = np.array([yaw_to_quat(0.0)] * 4)
    predicted_p = np.array([[0.3, 0, 0], [0.4, 0, 0], [2.0, 0, 0], [0, 0, 0.1]])
    predicted_q = np.array([yaw_to_quat(np.radians(a)) for a in (1.0, 8.0, 2.0, 3.0)])
    predicted_q[3] *= -3.0  # sign and scale do not matter
    metrics = pose_metrics(predicted_p, predicted_q, truth_p, truth_q)
    assert metrics["frames"] == 4
    assert metrics["median_position_error_m"] == pytest.approx(0.35)
    assert metrics["median_rotation_error_deg"] == pytest.approx(2.5, abs=1e-6)
    assert metrics["within_0.5m"] == 0.75 and metrics["within_5deg"] == 0.75
    assert metrics["within_0.5m_5deg"] == 0.5


def test_posenet_learns_a_scene(tmp_path):
    torch.manual_seed(0)
    write_sequence(tmp_path / "train", 96, seed=1, nan_every=16)
    truth = write_sequence(tmp_path / "test", 40, seed=2)
    lines = []
    model = train_posenet([open_posed_images(str(tmp_path / "train"))],
                          str(tmp_path / "w.safetensors"),
                          # 30 epochs: converged (error 0.32-0.38x the mean guess over seeds
                          # and thread counts); after 10 it was 0.47-0.62x, by thread count
                          PoseNetTrainConfig(epochs=30, batch_size=16, learning_rate=3e-3,
                                             beta=50.0, val_fraction=0.0),
                          torch.device("cpu"), model_overrides=TINY_MODEL, log=lines.append)
    assert any("90 used, 6 skipped without a finite pose" in line for line in lines)
    assert model.checkpoint_info["skipped_no_pose"] == 6
    assert model.config.frame_id == "world"
    metrics = evaluate_posenet(str(tmp_path / "w.safetensors"),
                               [open_posed_images(str(tmp_path / "test"))], torch.device("cpu"),
                               log=lines.append)
    # the guess a network that learned nothing converges to: the mean training pose
    xy = np.array([t[:2] for t in truth])
    mean_guess = np.median(np.linalg.norm(xy - 5.0, axis=1))
    mean_yaw_guess = np.degrees(np.median(np.abs([t[2] for t in truth])))
    assert metrics["frames"] == 40
    assert metrics["median_position_error_m"] < 0.6 * mean_guess
    assert metrics["median_rotation_error_deg"] < 0.5 * mean_yaw_guess


def test_resumed_training_ends_where_an_uninterrupted_run_does(tmp_path):
    """Killed in epoch 2 of 2 (after its batches, before it was recorded), then resumed: the
    same weights as a run that was never interrupted, and one history row per epoch."""
    import csv

    write_sequence(tmp_path / "seq", 16, seed=1)
    cfg = PoseNetTrainConfig(epochs=2, batch_size=6, val_fraction=0.25)

    def train(out, log, resume=False):
        return train_posenet([open_posed_images(str(tmp_path / "seq"))], str(tmp_path / out), cfg,
                             torch.device("cpu"), model_overrides=TINY_MODEL, log=log,
                             resume=resume)

    class Killed(Exception):
        pass

    def kill_in_epoch_2(line):
        if line.startswith("epoch 2/2"):
            raise Killed
    straight = train("a.safetensors", lambda line: None)
    with pytest.raises(Killed):
        train("b.safetensors", kill_in_epoch_2)
    lines = []
    resumed = train("b.safetensors", lines.append, resume=True)
    assert "posenet: resuming after epoch 1" in lines
    assert [line[:9] for line in lines if line.startswith("epoch")] == ["epoch 2/2"]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with open(tmp_path / "b.safetensors.history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(float(row["epoch"])) for row in rows] == [1, 2]
    assert {"loss", "median_position_error_m", "median_rotation_error_deg"} <= set(rows[0])
    assert (tmp_path / "b.safetensors.loss.png").stat().st_size > 1000


def test_train_refuses_evaluation_worlds_and_mixed_frames(tmp_path, capsys):
    write_sequence(tmp_path / "eval_world", 4, seed=1, world_seed=1042)
    out = run_in_process(capsys, "train", "posenet", "--data", str(tmp_path / "eval_world"), "--out",
              str(tmp_path / "w.safetensors"), expect=1)
    assert "evaluation world(s) [1042]" in out
    write_sequence(tmp_path / "a", 4, seed=1)
    write_cambridge(str(tmp_path / "b"), 4, seed=2)
    sources = [open_posed_images(str(tmp_path / "a")),
               open_posed_images(str(tmp_path / "b"), frame_id="kings_college")]
    with pytest.raises(TrainingDataError, match="different frames"):
        train_posenet(sources, str(tmp_path / "w.safetensors"), PoseNetTrainConfig(epochs=1),
                      torch.device("cpu"))
    write_sequence(tmp_path / "no_poses", 4, seed=1, nan_every=1)
    out = run_in_process(capsys, "train", "posenet", "--data", str(tmp_path / "no_poses"), "--out",
              str(tmp_path / "w.safetensors"), expect=1)
    assert "0 frames with a finite pose" in out


def test_cli_train_and_eval_every_layout(tmp_path, capsys):
    """Sequence (with NaN poses), then the learned-weighting and aux-head variant on 7-Scenes
    and Cambridge; eval reads the test split and prints the paper's metrics."""
    write_sequence(tmp_path / "seq", 24, seed=1, nan_every=6)
    weights = str(tmp_path / "seq.safetensors")
    out = run("train", "posenet", "--data", str(tmp_path / "seq"), "--out", weights,
              "--epochs", "1", "--batch-size", "8", "--device", "cpu")
    assert "20 used, 4 skipped without a finite pose" in out and "epoch 1/1" in out
    assert os.path.getsize(weights + ".loss.png") > 1000
    assert cli.main(["train", "posenet", "--data", str(tmp_path / "seq"), "--out", weights,
                     "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming after epoch 1" in out and "epoch 1/1" not in out  # nothing left to train
    out = run_in_process(capsys, "eval", "posenet", "--weights", weights, "--data",
                         str(tmp_path / "seq"), "--json", str(tmp_path / "m.json"))
    for key in ("median_position_error_m", "median_rotation_error_deg", "within_0.5m_5deg"):
        assert key in out
    metrics = json.load(open(tmp_path / "m.json"))
    assert metrics["frames"] == 20 and metrics["skipped_no_pose"] == 4
    first = load_checkpoint(weights)
    assert first.info["scene"] == "simulator world 7"

    # fine-tuning keeps the scene normalisation and, unless given, the loss settings (in-process:
    # the CLI's start-up is what costs here)
    tuned = str(tmp_path / "tuned.safetensors")
    assert cli.main(["train", "posenet", "--data", str(tmp_path / "seq"), "--out", tuned, "--init",
                     weights, "--epochs", "1", "--batch-size", "8", "--learning-rate", "1e-4",
                     "--beta", "77"]) == 0
    info = load_checkpoint(tuned).info
    assert info["initialised_from"]["path"] == weights
    assert info["initialised_from"]["info"]["epoch"] == 1
    assert info["train_config"]["norm"] == first.info["train_config"]["norm"] == "l2"
    assert info["train_config"]["beta"] == 77 and info["train_config"]["learning_rate"] == 1e-4
    assert load_checkpoint(tuned).config["scene_center"] == first.config["scene_center"]
    assert cli.main(["train", "posenet", "--data", str(tmp_path / "seq"), "--out", tuned, "--init",
                     weights, "--epochs", "1", "--learned-weighting"]) == 1
    assert "learned_weighting=False" in capsys.readouterr().err

    write_seven_scenes(str(tmp_path / "7s"), 8, seed=3)
    weights = str(tmp_path / "7s.safetensors")
    out = run_in_process(capsys, "train", "posenet", "--data", str(tmp_path / "7s"), "--out",
                         weights, "--epochs", "1", "--batch-size", "4", "--learned-weighting",
                         "--aux-heads", "--norm", "l1", "--frame-id", "chess")
    assert "7 used, 1 skipped without a finite pose" in out and "s_x" in out
    info = json.loads(run_in_process(capsys, "info", weights))
    assert info["config"]["learned_weighting"] and info["config"]["aux_heads"]
    assert info["config"]["frame_id"] == "chess"
    assert info["info"]["train_config"]["norm"] == "l1"
    out = run_in_process(capsys, "eval", "posenet", "--weights", weights, "--data",
                         str(tmp_path / "7s"), "--frame-id", "chess")
    assert "7scenes, 8 frames, 8 used" in out  # the test split: seq-02

    write_cambridge(str(tmp_path / "cam"), 6, seed=4)
    out = run_in_process(capsys, "eval", "posenet", "--weights", weights, "--data",
                         str(tmp_path / "cam"))
    assert "warning" in out and "trained in 'chess'" in out  # another scene frame
    assert "cambridge, 6 frames, 6 used" in out
