"""Geometry helpers, the sequence dataset format and PointCloud2 packing."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from dl_perception.datasets.dronet import read_dronet_dataset
from dl_perception.datasets.sequence import Camera, SequenceWriter, read_sequence
from dl_perception.core.geometry import (backproject, intrinsics_matrix, invert, matrix_to_quat,
                                         pose_matrix, project, quat_to_matrix, rotation_angle_deg,
                                         transform_points, yaw_to_quat)
from dl_perception.core.pointcloud import pack, unpack


def test_quaternion_round_trip_and_known_rotation():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    back = matrix_to_quat(quat_to_matrix(q))
    assert np.allclose(np.abs(np.sum(back * q, axis=1)), 1.0)  # same rotation, up to sign
    r = quat_to_matrix(yaw_to_quat(np.pi / 2))
    assert np.allclose(r @ [1, 0, 0], [0, 1, 0])


def test_rotation_angle_ignores_sign_and_scale():
    q = np.array([0.1, 0.2, 0.3, 0.9])
    assert rotation_angle_deg(q, -3 * q) == pytest.approx(0.0, abs=1e-5)
    assert rotation_angle_deg(yaw_to_quat(0.0), yaw_to_quat(np.radians(30))) == pytest.approx(30)


def test_backproject_project_and_transforms():
    K = intrinsics_matrix(100, 100, 32, 24)
    depth = np.full((48, 64), 5.0)
    points = backproject(depth, K).reshape(-1, 3)
    pixels, z = project(points, K)
    u, v = np.meshgrid(np.arange(64), np.arange(48))
    assert np.allclose(pixels, np.stack([u.ravel(), v.ravel()], 1)) and np.allclose(z, 5)
    T = pose_matrix([1, 2, 3], yaw_to_quat(0.7))
    assert np.allclose(transform_points(invert(T), transform_points(T, points)), points)


def test_sequence_round_trip(tmp_path):
    camera = Camera(32, 24, 16.0, 16.0, 16.0, 12.0)
    writer = SequenceWriter(str(tmp_path), camera, {"world_seed": 3})
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 30, (24, 32)).astype(np.float32)
    depth[0, 0] = np.nan
    rgb = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    writer.add(0.1, rgb, depth, [1, 2, 3], [0, 0, 0, 1], steering=0.25, collision=0)
    writer.add(0.2, rgb, None, [1, 2, 4], [0, 0, 0, 1])
    writer.close(route="test")
    seq = read_sequence(str(tmp_path))
    assert len(seq) == 2 and seq.meta["world_seed"] == 3 and seq.meta["frames"] == 2
    assert seq.camera == camera
    np.testing.assert_array_equal(seq.frames[0].load_rgb(), rgb)
    loaded = seq.frames[0].load_depth()
    assert np.isnan(loaded[0, 0]) and np.nanmax(np.abs(loaded - depth)) <= 0.0005 + 1e-6
    assert seq.frames[1].depth is None and math.isnan(seq.frames[1].steering)
    samples = read_dronet_dataset(str(tmp_path))
    assert samples[0].steering == 0.25 and samples[0].collision == 0


def test_read_sequence_names_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="meta.json is missing"):
        read_sequence(str(tmp_path))


def test_pointcloud_pack_unpack():
    columns = {"u": np.array([1.5, 2.5], np.float32), "rank": np.array([0, 1], np.uint32),
               "descriptor": np.eye(2, 128, dtype=np.float32)}
    packed = pack(columns)
    msg = SimpleNamespace(fields=[SimpleNamespace(name=n, offset=o, datatype=d, count=c)
                                  for n, o, d, c in packed["fields"]],
                          point_step=packed["point_step"], width=packed["width"], height=1,
                          data=packed["data"], is_bigendian=packed["is_bigendian"])
    points = unpack(msg)
    assert points["u"].tolist() == [1.5, 2.5] and points["rank"].tolist() == [0, 1]
    assert points["descriptor"].shape == (2, 128) and points["descriptor"][1, 1] == 1.0
    with pytest.raises(ValueError):
        pack({"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)})
