"""Posed-image readers: sequence folders, the Cambridge Landmarks and 7-Scenes layouts, rosbag2
recordings with time association (and a real MCAP recording's pose topics)."""
import math
import os

import numpy as np
import pytest
from posenet_scenes import poses, write_cambridge, write_sequence, write_seven_scenes

from dl_perception.datasets.poses import (detect_layout, open_posed_images, pose_at,
                                          read_bag_poses)
from dl_perception.core.geometry import rotation_angle_deg, yaw_to_quat


def test_sequence_records_keep_nan_poses(tmp_path):
    truth = write_sequence(tmp_path / "seq", 10, seed=1, nan_every=4)
    source = open_posed_images(str(tmp_path / "seq"))
    assert source.kind == "sequence" and source.frame_id == "world" and len(source) == 10
    assert [r.has_pose for r in source.records] == [i % 4 != 0 for i in range(10)]
    assert np.allclose(source.records[1].position[:2], truth[1][:2], atol=1e-5)
    frames = list(source.images([3, 1]))
    assert [i for i, _ in frames] == [1, 3] and frames[0][1].shape == (48, 64, 3)


def test_cambridge_layout(tmp_path):
    write_cambridge(str(tmp_path), 6, seed=3)
    assert detect_layout(str(tmp_path)) == "cambridge"
    train = open_posed_images(str(tmp_path), split="train")
    test = open_posed_images(str(tmp_path), split="test", frame_id="kings_college")
    assert len(train) == len(test) == 6 and test.frame_id == "kings_college"
    x, y, yaw = poses(6, 3)[2]
    record = train.records[2]
    assert np.allclose(record.position, [x, y, 1.5])
    # the file holds the world-to-camera rotation; records hold the camera's orientation
    assert rotation_angle_deg(record.quaternion, yaw_to_quat(yaw)) < 1e-4
    assert next(train.images([0]))[1].shape == (48, 64, 3)
    (tmp_path / "dataset_train.txt").write_text("a\nb\nc\nseq1/x.png 1 2 3\n")
    with pytest.raises(ValueError, match="expected 'image x y z w p q r'"):
        open_posed_images(str(tmp_path))


def test_seven_scenes_layout_and_infinite_poses(tmp_path):
    write_seven_scenes(str(tmp_path), 5, seed=4)
    assert detect_layout(str(tmp_path)) == "7scenes"
    train = open_posed_images(str(tmp_path), split="train")
    test = open_posed_images(str(tmp_path), split="test")
    assert all("seq-01" in r.name for r in train.records)
    assert all("seq-02" in r.name for r in test.records)
    assert [r.has_pose for r in train.records] == [True] * 4 + [False]  # the "-1.#INF" pose
    x, y, yaw = poses(5, 6)[3]
    assert np.allclose(test.records[3].position, [x, y, 1.5])
    assert rotation_angle_deg(test.records[3].quaternion, yaw_to_quat(yaw)) < 1e-4


def test_unknown_layouts_and_unreadable_images(tmp_path):
    with pytest.raises(ValueError, match="not a sequence folder"):
        open_posed_images(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        open_posed_images(str(tmp_path / "missing"))
    write_sequence(tmp_path / "seq", 3, seed=1)
    (tmp_path / "seq" / "images" / "000001.png").write_bytes(b"not a png")
    source = open_posed_images(str(tmp_path / "seq"))
    assert [i for i, _ in source.images(range(3))] == [0, 2]
    assert source.drops["unreadable_image"] == 1


def test_pose_interpolation_within_the_gap():
    stamps = np.array([0.0, 0.1, 0.2, 1.0])
    positions = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]])
    quaternions = np.array([yaw_to_quat(a) for a in (0.0, 0.2, 0.4, 0.6)])
    position, quaternion = pose_at(0.125, stamps, positions, quaternions, max_gap=0.1)
    assert np.allclose(position, [1.25, 0, 0])
    assert rotation_angle_deg(quaternion, yaw_to_quat(0.25)) < 1e-6
    assert np.allclose(pose_at(0.2, stamps, positions, quaternions, 0.01)[0], [2.0, 0, 0])
    assert pose_at(0.5, stamps, positions, quaternions, max_gap=0.1) is None  # gap too long
    assert pose_at(-0.01, stamps, positions, quaternions, max_gap=0.1) is None  # before all
    assert pose_at(1.2, stamps, positions, quaternions, max_gap=0.5) is None  # after all


def _write_bag(path, pose_type="nav_msgs/msg/Odometry", compressed=False, images=12,
              storage="MCAP"):
    """Images at 10 Hz (from t = 100.0 s), poses at 50 Hz from t = 100.05 s: x = t - 100 m,
    yaw = 0.1 (t - 100) rad, frame 'map'."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    T = store.types
    Time, Header = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]

    def header(t, frame):
        return Header(stamp=Time(sec=int(t), nanosec=int(round((t % 1) * 1e9))), frame_id=frame)

    def pose(t):
        q = yaw_to_quat(0.1 * (t - 100))
        return T["geometry_msgs/msg/Pose"](
            position=T["geometry_msgs/msg/Point"](x=t - 100, y=2.0, z=1.0),
            orientation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))

    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with Writer(path, version=9, storage_plugin=getattr(StoragePlugin, storage)) as writer:
        image_conn = writer.add_connection("/camera/image_raw", image_type, typestore=store)
        pose_conn = writer.add_connection("/pose", pose_type, typestore=store)
        messages = []
        for i in range(images):
            t = 100.0 + 0.1 * i
            pixels = np.full((24, 32, 3), (10 * i) % 256, np.uint8)
            if compressed:
                data = np.frombuffer(cv2.imencode(".png", pixels)[1].tobytes(), np.uint8)
                msg = T[image_type](header=header(t, "camera"), format="png", data=data)
            else:
                msg = T[image_type](header=header(t, "camera"), height=24, width=32,
                                    encoding="rgb8", is_bigendian=0, step=96,
                                    data=pixels.reshape(-1))
            messages.append((t, image_conn, msg, image_type))
        for i in range(int(0.1 * images * 50) - 5):
            t = 100.05 + 0.02 * i
            if pose_type == "nav_msgs/msg/Odometry":
                cov = T["geometry_msgs/msg/PoseWithCovariance"](pose=pose(t), covariance=np.zeros(36))
                twist = T["geometry_msgs/msg/TwistWithCovariance"](
                    twist=T["geometry_msgs/msg/Twist"](
                        linear=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                        angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
                    covariance=np.zeros(36))
                msg = T[pose_type](header=header(t, "map"), child_frame_id="base_link",
                                   pose=cov, twist=twist)
            else:
                msg = T[pose_type](header=header(t, "map"), pose=pose(t))
            messages.append((t, pose_conn, msg, pose_type))
        for t, conn, msg, msgtype in sorted(messages, key=lambda m: m[0]):
            writer.write(conn, int(t * 1e9), store.serialize_cdr(msg, msgtype))
    return path


@pytest.mark.parametrize("pose_type,compressed", [("nav_msgs/msg/Odometry", False),
                                                  ("geometry_msgs/msg/PoseStamped", True)])
def test_bag_images_are_labelled_by_time(tmp_path, pose_type, compressed):
    bag = _write_bag(tmp_path / "bag", pose_type, compressed)
    source = open_posed_images(str(bag), image_topic="/camera/image_raw", pose_topic="/pose",
                               max_pose_gap=0.05)
    assert detect_layout(str(bag)) == "bag" and source.frame_id == "map"
    assert len(source) == 12
    # the first image (t=100.0) precedes every pose; poses end at 101.13, after the last image
    labelled = [r.has_pose for r in source.records]
    assert labelled == [False] + [True] * 11
    for record in source.records[1:]:
        assert record.position[0] == pytest.approx(record.stamp - 100, abs=1e-6)
        assert rotation_angle_deg(record.quaternion,
                                  yaw_to_quat(0.1 * (record.stamp - 100))) < 1e-4
    frames = dict(source.images([0, 5]))
    assert sorted(frames) == [0, 5] and frames[5].shape == (24, 32, 3)
    assert frames[5][0, 0, 0] == 50


def test_bag_errors_and_truncation(tmp_path):
    bag = _write_bag(tmp_path / "bag", images=40)
    with pytest.raises(ValueError, match="no topic /odom"):
        open_posed_images(str(bag), pose_topic="/odom")
    with pytest.raises(ValueError, match="expected one of"):
        open_posed_images(str(bag), pose_topic="/camera/image_raw")
    # a recording cut short (no MCAP footer / a torn sqlite3 file): a clear error, not a crash
    for storage, suffix in (("MCAP", ".mcap"), ("SQLITE3", ".db3")):
        bag = _write_bag(tmp_path / storage, images=40, storage=storage)
        (name,) = [f for f in os.listdir(bag) if f.endswith(suffix)]
        data = (bag / name).read_bytes()
        (bag / name).write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(ValueError, match="cannot open bag"):
            open_posed_images(str(bag), pose_topic="/pose")


def test_real_mcap_pose_topics(shared_data):
    path = os.path.join(shared_data, "trajectories", "nav2_turtlebot.mcap")
    stamps, positions, quaternions, frame = read_bag_poses(path, "/amcl_pose")
    assert frame == "map" and len(stamps) == 135 and (np.diff(stamps) >= 0).all()
    assert np.allclose(np.linalg.norm(quaternions, axis=1), 1.0, atol=1e-6)
    stamps, positions, _, frame = read_bag_poses(path, "/odom")
    assert frame == "odom" and len(stamps) == 2639
    assert math.isfinite(positions.sum())
