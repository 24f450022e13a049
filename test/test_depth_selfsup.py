"""Self-supervised depth (training/depth_selfsup.py): the photometric reprojection loss on a
synthetic pair with a known pose, auto-masking, the pose network, and `train depth --video
--posed --resume` on tiny fabricated folders."""
import csv
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from dl_perception.training.depth_selfsup import (PoseNetwork, axis_angle_to_matrix,
                                                  pyramid_reprojection_loss, reprojection_loss,
                                                  warp)

CLI = os.path.join(os.path.dirname(sys.executable), "dl-perception")
FOCAL, BASELINE, PLANE = 100.0, 0.1, 2.0  # a 5-pixel shift between the two views


def textured(height, width, seed=0):
    """Smooth random texture (blurred noise), Bx3xHxW in [0, 1]."""
    rng = np.random.default_rng(seed)
    noise = cv2.resize(rng.random((height // 4, width // 4, 3)).astype(np.float32),
                       (width, height), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(np.clip(noise, 0, 1)).permute(2, 0, 1)[None]


def plane_pair(height=48, width=64):
    """A fronto-parallel plane PLANE metres ahead, seen by a target camera and by a source
    camera BASELINE metres to its right: the source image is the target's scene shifted left by
    FOCAL * BASELINE / PLANE pixels. Returns target, source, T_source_target, K."""
    shift = int(FOCAL * BASELINE / PLANE)
    scene = textured(height, width + shift)
    target, source = scene[..., :width], scene[..., shift:shift + width]
    T = torch.eye(4)[None]
    T[0, 0, 3] = -BASELINE  # X_source = X_target - baseline (the source camera is to the right)
    K = torch.tensor([[FOCAL, 0, (width - 1) / 2], [0, FOCAL, (height - 1) / 2], [0, 0, 1]])[None]
    return target, source, T, K


def test_warp_with_the_true_depth_and_pose_reproduces_the_target():
    target, source, T, K = plane_pair()
    depth = torch.full((1, 1, 48, 64), PLANE)
    warped, inside = warp(source, depth, T, K)
    # target column u is source column u - 5: the first 5 fall outside the source
    assert inside[..., 5:].all() and not inside[..., :4].any()
    assert torch.allclose(warped[..., 5:], target[..., 5:], atol=1e-5)
    identity, everywhere = warp(target, depth, torch.eye(4)[None], K)
    assert everywhere.all() and torch.allclose(identity, target, atol=1e-5)


def test_photometric_loss_is_lowest_at_the_true_depth_and_drives_it_there():
    target, source, T, K = plane_pair()
    losses = {}
    for factor in (0.7, 0.85, 1.0, 1.2, 1.5):
        depth = torch.full((1, 1, 48, 64), PLANE * factor)
        losses[factor] = float(reprojection_loss(target, [source], depth, [T], K,
                                                 automask=False)["photometric"])
    assert losses[1.0] < 0.01
    assert min(losses[0.7], losses[0.85], losses[1.2], losses[1.5]) > 3 * losses[1.0]
    # gradient descent on one log-depth value from 25% too far converges to the plane
    log_depth = torch.tensor(math.log(PLANE * 1.25), requires_grad=True)
    optimizer = torch.optim.Adam([log_depth], lr=0.05)
    for _ in range(60):
        depth = torch.exp(log_depth).expand(1, 1, 48, 64)
        loss = pyramid_reprojection_loss(target, [source], depth, [T], K, factors=(1, 2))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert math.exp(log_depth.item()) == pytest.approx(PLANE, rel=0.05)


def test_automasking_ignores_pixels_a_static_source_already_explains():
    target, _, T, K = plane_pair()
    depth = torch.full((1, 1, 48, 64), PLANE)
    # the camera did not move: the unwarped source matches everywhere, warping with a (wrong)
    # motion does not, so auto-masking chooses the identity on (nearly) every pixel
    result = reprojection_loss(target, [target.clone()], depth, [T], K, automask=True)
    assert float(result["automasked"]) > 0.95 and float(result["photometric"]) < 1e-3


def test_pose_network_gives_rigid_small_motions():
    torch.manual_seed(0)
    network = PoseNetwork()
    pose = network(torch.rand(2, 3, 120, 160), torch.rand(2, 3, 120, 160))
    assert pose.shape == (2, 4, 4)
    rotation = pose[:, :3, :3]
    assert torch.allclose(rotation @ rotation.transpose(1, 2), torch.eye(3).expand(2, 3, 3),
                          atol=1e-5)
    assert pose[:, :3, 3].abs().max() < 0.1  # small at the start (x 0.01)
    quarter_turn = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]]))[0]
    assert torch.allclose(quarter_turn @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]),
                          atol=1e-6)


def _video_folder(root, frames=9):
    root.mkdir(parents=True)
    scene = (textured(60, 100, seed=3)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    for i in range(frames):  # a camera panning right: the scene slides left
        cv2.imwrite(str(root / f"frame_{i:04d}.jpg"), np.ascontiguousarray(scene[:, 2 * i:2 * i + 80]))
    return str(root)


def _posed_folder(root):
    for scene in ("wall-A", "wall-B"):
        images = root / scene / "images"
        images.mkdir(parents=True)
        texture = (textured(60, 120, seed=len(scene))[0].permute(1, 2, 0).numpy() * 255)
        rows = []
        for i in range(3):  # a camera moving right along a wall 2 m ahead, 0.1 m per image
            cv2.imwrite(str(images / f"{i:04d}.jpg"),
                        np.ascontiguousarray(texture[:, 5 * i:5 * i + 80].astype(np.uint8)))
            rows.append([f"{i:04d}.jpg", 100, 100, 39.5, 29.5, 1, 0, 0, 0, 1, 0, 0, 0, 1,
                         -0.1 * i, 0, 0])
        with open(root / scene / "cameras.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "fx", "fy", "cx", "cy", "r11", "r12", "r13", "r21", "r22",
                             "r23", "r31", "r32", "r33", "t1", "t2", "t3"])
            writer.writerows(rows)
    return str(root)


def _sparse_folder(root, frames=10):
    """NYU-style rgb/ + depth/ with metric depth at a sparse grid of points (0 = none)."""
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    for i in range(frames):
        image = (textured(60, 80, seed=10 + i)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        cv2.imwrite(str(root / "rgb" / f"{i:04d}.png"), image)
        depth = np.zeros((60, 80), np.uint16)
        depth[::6, ::6] = 2000 + 100 * i  # millimetres
        cv2.imwrite(str(root / "depth" / f"{i:04d}.png"), depth)
    return str(root)


def test_train_mixes_simulator_video_and_posed_images_and_resumes(tmp_path):
    from test_depth_cli import ground_and_box_sequence

    from dl_perception.core.checkpoint import load_checkpoint
    sim = ground_and_box_sequence(tmp_path / "sim" / "world_5", 5, frames=10)
    video = _video_folder(tmp_path / "video")
    posed = _posed_folder(tmp_path / "posed")
    sparse = _sparse_folder(tmp_path / "sparse")
    out = str(tmp_path / "mixed.safetensors")
    args = ["train", "depth", "--data", sim, "--video", video, "--posed", posed, "--sparse", sparse,
            "--posed-val-scenes", "wall-B", "--out", out, "--coarse-epochs", "1",
            "--fine-epochs", "1", "--batch-size", "4", "--real-batch", "2", "--optimizer",
            "adam", "--adam-lr", "1e-3", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    first = subprocess.run([CLI, *args, "--stages", "coarse"], capture_output=True, text=True,
                           env=env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "video_photometric" in first.stdout and "val_posed_photometric" in first.stdout
    assert "assumed fx = 0.8 * width" in first.stdout
    assert "sparse real depth: 10 images from 1 folder(s), 9 train / 1 validation" in first.stdout
    assert "sparse_scale_invariant" in first.stdout
    with open(out + ".history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and float(rows[0]["val_posed_photometric"]) < 0.5
    assert 0 < float(rows[0]["val_sparse_abs_rel"]) < 10  # measured on the held-out image
    assert os.path.isfile(out + ".resume.pt") and os.path.isfile(out + ".loss.png")
    info = load_checkpoint(out, expected_model="depth").info
    assert info["video"] == [video] and info["posed"] == [posed] and info["sparse"] == [sparse]
    # the same command again with --resume: the coarse stage is done, nothing is retrained
    again = subprocess.run([CLI, *args, "--stages", "coarse", "--resume"], capture_output=True,
                           text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "coarse epoch 1/1" not in again.stdout


def test_selection_and_heldout_scores(tmp_path):
    from test_depth_cli import ground_and_box_sequence

    from dl_perception.models.depth import EigenDepth
    from dl_perception.training.depth import DepthTrainConfig, heldout_scores, selection_score

    metrics = {"abs_rel": 0.1, "val_posed_photometric": 0.2}
    assert selection_score(metrics) == pytest.approx(0.3)
    assert selection_score({**metrics, "val_sparse_abs_rel": 0.05}) == pytest.approx(0.35)
    assert selection_score(metrics, "simulator") == pytest.approx(0.1)
    assert selection_score({**metrics, "si_rmse_log": 0.4, "val_sparse_abs_rel": 0.05},
                           "relative") == pytest.approx(0.65)
    with pytest.raises(ValueError, match="unknown selection"):
        selection_score(metrics, "validation")
    ground_and_box_sequence(tmp_path / "sim" / "world_6", 6, frames=10)
    posed = _posed_folder(tmp_path / "posed")
    weights = str(tmp_path / "w.safetensors")
    EigenDepth(EigenDepth.make_config("cpu")).save(weights)
    scores = heldout_scores(weights, [str(tmp_path / "sim")], [posed], torch.device("cpu"),
                            DepthTrainConfig(posed_val_scenes="wall-B"), log=lambda _: None)
    assert set(scores) == {"sim_abs_rel", "sim_median_scaled_abs_rel", "val_posed_photometric"}
    assert all(np.isfinite(v) and v > 0 for v in scores.values())
