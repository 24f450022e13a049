"""Place databases (faiss search, files, refusal of another model's database, corrupt files),
sources (folders, bags with interpolated poses, truncated bags), online revisits, Recall@N and
the place commands."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from place_fixtures import write_route

from dl_perception import models
from dl_perception.evaluation.place import correct_by_position, read_ground_truth, recall_at_n
from dl_perception.place.build import build_database
from dl_perception.place.database import PlaceDatabase, PlaceDatabaseError, model_fingerprint
from dl_perception.place.online import OnlinePlaces
from dl_perception.place.sources import BagSource, FolderSource, PoseTrack, slerp

torch.set_num_threads(2)
CLI = os.path.join(os.path.dirname(sys.executable), "dl-perception")
FINGERPRINT = {"name": "netvlad", "config_hash": "c", "weights_hash": "w"}


def unit_rows(count, dim, seed=0):
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = models.create("netvlad", resize_to=[64, 48], pca_dim=0)
    path = str(tmp_path_factory.mktemp("w") / "netvlad.safetensors")
    model.save(path)
    return path


def test_exact_and_hnsw_search_agree_and_missing_columns_are_marked():
    rows = unit_rows(3000, 32)
    queries = rows[:50] + 0.01 * unit_rows(50, 32, seed=1)
    results = {}
    for kind in ("flat", "hnsw"):
        database = PlaceDatabase(dim=32, model=FINGERPRINT, index_kind=kind)
        database.add(rows[:1000])
        database.add(rows[1000:])  # growing an index after it was built
        database.index
        database.add(rows[:0])
        scores, indices = database.search(queries, 5)
        assert indices.shape == (50, 5)
        assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
        results[kind] = indices
    np.testing.assert_array_equal(results["flat"][:, 0], np.arange(50))
    assert np.mean(results["hnsw"][:, 0] == results["flat"][:, 0]) >= 0.98
    small = PlaceDatabase(dim=32, model=FINGERPRINT)
    small.add(rows[:2])
    scores, indices = small.search(rows[0], 4)
    assert list(indices[0]) == [0, 1, -1, -1] and np.isnan(scores[0, 2:]).all()
    empty = PlaceDatabase(dim=32, model=FINGERPRINT)
    scores, indices = empty.search(rows[:3], 5)
    assert (indices == -1).all() and np.isnan(scores).all()
    with pytest.raises(PlaceDatabaseError, match="16-D"):
        empty.search(rows[:1, :16], 1)


@pytest.mark.parametrize("kind", ["auto", "hnsw"])
def test_save_load_round_trip(tmp_path, kind):
    database = PlaceDatabase(dim=16, model=FINGERPRINT, frame_id="odom", index_kind=kind)
    positions = np.arange(30, dtype=float).reshape(10, 3)
    positions[3] = np.nan
    database.add(unit_rows(10, 16), positions, None, np.arange(10) * 0.5,
                 [f"img{i}" for i in range(10)])
    path = str(tmp_path / "db.safetensors")
    database.save(path)
    loaded = PlaceDatabase.load(path, expected_model=FINGERPRINT)
    assert len(loaded) == 10 and loaded.frame_id == "odom" and loaded.names[4] == "img4"
    np.testing.assert_array_equal(loaded.positions, positions)
    assert np.isnan(loaded.quaternions).all()
    np.testing.assert_array_equal(loaded.search(unit_rows(10, 16)[7], 1)[1], [[7]])
    empty_path = str(tmp_path / "empty.safetensors")
    PlaceDatabase(dim=16, model=FINGERPRINT).save(empty_path)
    empty = PlaceDatabase.load(empty_path)
    assert len(empty) == 0 and (empty.search(unit_rows(1, 16), 3)[1] == -1).all()


def test_another_model_or_a_broken_file_is_refused_clearly(tmp_path, weights):
    model = models.load(weights)
    path = str(tmp_path / "db.safetensors")
    PlaceDatabase(dim=model.descriptor_dim, model=model_fingerprint(model)).save(path)
    PlaceDatabase.load(path, expected_model=model_fingerprint(model))
    other_weights = models.create("netvlad", resize_to=[64, 48], pca_dim=0)
    with pytest.raises(PlaceDatabaseError, match="other netvlad weights"):
        PlaceDatabase.load(path, expected_model=model_fingerprint(other_weights))
    other_config = models.create("netvlad", pca_dim=0)
    with pytest.raises(PlaceDatabaseError, match="another netvlad configuration"):
        PlaceDatabase.load(path, expected_model=model_fingerprint(other_config))
    with pytest.raises(PlaceDatabaseError, match="built with model 'netvlad', not 'dronet'"):
        PlaceDatabase.load(path, expected_model={**FINGERPRINT, "name": "dronet"})
    with pytest.raises(PlaceDatabaseError, match="not found"):
        PlaceDatabase.load(str(tmp_path / "nope.safetensors"))
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(2048))
    for broken in (truncated, garbage):
        with pytest.raises(PlaceDatabaseError, match="corrupt or truncated"):
            PlaceDatabase.load(str(broken))
    with pytest.raises(PlaceDatabaseError, match="not a place database"):
        PlaceDatabase.load(weights)


def test_pose_track_interpolates_and_refuses_gaps():
    q0 = np.array([0.0, 0.0, 0.0, 1.0])
    q1 = np.array([0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)])  # yaw 90 deg
    track = PoseTrack([1.0, 0.0, 3.0], [[1, 0, 0], [0, 0, 0], [5, 0, 0]], [q1, q0, q1],
                      max_gap=1.5)
    position, quaternion = track.at(0.5)
    np.testing.assert_allclose(position, [0.5, 0, 0])
    np.testing.assert_allclose(quaternion, slerp(q0, q1, 0.5))
    np.testing.assert_allclose(quaternion, [0, 0, math.sin(math.pi / 8), math.cos(math.pi / 8)])
    np.testing.assert_allclose(track.at(2.0)[0], [3, 0, 0])
    np.testing.assert_allclose(track.at(3.4)[0], [5, 0, 0])  # past the end, close enough
    assert np.isnan(track.at(5.0)[0]).all() and np.isnan(track.at(-2.0)[1]).all()
    gappy = PoseTrack([0.0, 10.0], [[0, 0, 0], [1, 0, 0]], [q0, q0], max_gap=0.5)
    assert np.isnan(gappy.at(5.0)[0]).all()


def _write_bag(path, frames=12, truncate=False, storage="sqlite3", damage=None):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    T = store.types
    stamp = lambda t: T["builtin_interfaces/msg/Time"](sec=int(t), nanosec=int(round((t % 1) * 1e9)))  # noqa: E731
    header = lambda t, frame: T["std_msgs/msg/Header"](stamp=stamp(t), frame_id=frame)  # noqa: E731
    texture = np.random.default_rng(3).integers(0, 255, (48, 400, 3), np.uint8)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        image_conn = writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=store)
        odom_conn = writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=store)
        for i in range(frames * 2 + 2):  # odometry at 10 Hz from t = 10 s
            t = 10.0 + i * 0.1
            pose = T["geometry_msgs/msg/Pose"](
                position=T["geometry_msgs/msg/Point"](x=t * 2.0, y=1.0, z=0.0),
                orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
            odom = T["nav_msgs/msg/Odometry"](
                header=header(t, "odom"), child_frame_id="base_link",
                pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
                twist=T["geometry_msgs/msg/TwistWithCovariance"](
                    twist=T["geometry_msgs/msg/Twist"](
                        linear=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                        angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
                    covariance=np.zeros(36)))
            writer.write(odom_conn, int(t * 1e9),
                         store.serialize_cdr(odom, "nav_msgs/msg/Odometry"))
        for i in range(frames):  # images at 5 Hz, between odometry stamps
            t = 10.05 + i * 0.2
            pixels = np.ascontiguousarray(texture[:, 10 * i:10 * i + 64])
            encoding, data = ("rgb8", pixels.reshape(-1)) if i != 4 else ("yuv422", pixels.reshape(-1))
            msg = T["sensor_msgs/msg/Image"](header=header(t, "camera"), height=48, width=64,
                                             encoding=encoding, is_bigendian=0, step=64 * 3,
                                             data=data)
            writer.write(image_conn, int(t * 1e9), store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    (db,) = [os.path.join(path, f) for f in os.listdir(path) if f.endswith((".db3", ".mcap"))]
    size = os.path.getsize(db)
    with open(db, "r+b") as handle:
        if truncate:
            handle.truncate(int(size * 0.6))
        if damage:
            handle.seek(int(size * damage))
            handle.write(np.random.default_rng(0).integers(0, 255, 4000, np.uint8).tobytes())
    return str(path)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_source_associates_poses_and_skips_bad_images(tmp_path, storage):
    bag = _write_bag(tmp_path / "bag", storage=storage)
    source = BagSource(bag, "/cam/image", "/odom")
    assert source.frame_id == "odom" and len(source) == 12
    frames = list(source)
    assert len(frames) == 11 and source.skipped == 1  # the yuv422 frame
    for frame in frames:  # x = 2 t, interpolated at the image stamp
        np.testing.assert_allclose(frame.position, [2 * frame.stamp, 1.0, 0.0], atol=1e-6)
        assert frame.rgb.shape == (48, 64, 3)
    with pytest.raises(ValueError, match="no image topic '/camera/image_raw'.*'/cam/image'"):
        BagSource(bag, "/camera/image_raw", "/odom")
    with pytest.raises(ValueError, match="no pose topic '/tf'"):
        BagSource(bag, "/cam/image", "/tf")


def test_real_mcap_poses(shared_data):
    """The pose side on a real ROS 2 recording (Nav2 TurtleBot, no images)."""
    from pathlib import Path

    from rosbags.highlevel import AnyReader
    path = os.path.join(shared_data, "trajectories", "nav2_turtlebot.mcap")
    with AnyReader([Path(path)]) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
    assert topics["/odom"] == "nav_msgs/msg/Odometry"
    with pytest.raises(ValueError, match="no image topic"):
        BagSource(path, "/odom", "/amcl_pose")


def test_damaged_bags_keep_what_was_read_or_fail_clearly(tmp_path):
    # damage near the end of a sqlite3 bag: the frames before it are kept, the reason recorded
    bag = _write_bag(tmp_path / "damaged", frames=40, damage=0.9)
    source = BagSource(bag, "/cam/image", "/odom")
    frames = list(source)
    assert 10 < len(frames) < 39 and "malformed" in source.truncated
    # a recording cut off before its end (no MCAP footer): a clear error, not a traceback
    cut = _write_bag(tmp_path / "cut", frames=40, truncate=True, storage="mcap")
    with pytest.raises(ValueError, match="cannot read bag"):
        BagSource(cut, "/cam/image", "/odom")


def test_build_database_from_folder_with_min_distance(tmp_path, weights):
    route = write_route(tmp_path / "r", 5, "day", frames=20, spacing=0.5)
    model = models.load(weights)
    database = build_database(model, FolderSource(route), torch.device("cpu"), min_distance=1.9)
    assert len(database) == 5  # every 4th frame: 0, 2, 4, 6, 8 m
    np.testing.assert_allclose(database.positions[:, 0], [0, 2, 4, 6, 8])
    assert database.names[1] == "images/000004.png"
    assert database.model == model_fingerprint(model)


def test_online_revisits_ignore_recent_keyframes():
    rows = unit_rows(6, 8)
    database = PlaceDatabase(dim=8, model=FINGERPRINT)
    online = OnlinePlaces(database, ignore_recent=10.0, keyframe_distance=2.0,
                          keyframe_period=0.0, revisit_min_score=0.9)
    path = [(0.0, 0), (1.0, 1), (2.0, 2), (3.0, 3)]  # t, place; 3 m apart
    for t, place in path:
        _, indices, revisit, added = online.observe(rows[place], t, 3, [3.0 * place, 0, 0])
        assert added and revisit is None and (indices == -1).all()  # all held back
    # standing still: no new keyframe, and the recent ones are still not searched
    _, _, revisit, added = online.observe(rows[3], 4.0, 3, [9.0, 0, 0])
    assert not added and revisit is None
    # back at place 1 after 20 s: a revisit of the keyframe taken at t = 1
    scores, indices, revisit, _ = online.observe(rows[1], 20.0, 3, [3.0, 0.5, 0])
    assert revisit is not None and revisit.db_index == 1 and revisit.db_stamp == 1.0
    assert revisit.score == pytest.approx(1.0, abs=1e-5) and online.revisits == 1
    assert indices[0] == 1 and len(database) == 4


def test_recall_at_n_with_both_ground_truth_forms(tmp_path):
    ranked = np.array([[3, 1, 2], [0, 4, 1], [2, 2, 2], [1, 0, 3]])
    correct = [np.array([3]), np.array([1]), np.array([]), np.array([9])]
    metrics = recall_at_n(ranked, correct, (1, 2, 3))
    assert metrics["queries"] == 4 and metrics["queries_with_ground_truth"] == 3
    assert metrics["recall_at_1"] == pytest.approx(1 / 3)
    assert metrics["recall_at_2"] == pytest.approx(1 / 3)
    assert metrics["recall_at_3"] == pytest.approx(2 / 3)
    db_positions = np.array([[0.0, 0, 0], [5.0, 0, 0], [10.0, 0, 0], [np.nan] * 3])
    query_positions = np.array([[4.0, 0, 0], [np.nan, 0, 0], [10.0, 5.0, 0]])
    found = correct_by_position(query_positions, db_positions, 5.0)
    assert [list(f) for f in found] == [[0, 1], [], [2]]  # inclusive threshold, NaN skipped
    np.save(tmp_path / "gt.npy", np.array([[1, 2], [3]], dtype=object), allow_pickle=True)
    (tmp_path / "gt.json").write_text(json.dumps([[1, 2], [3]]))
    for name in ("gt.npy", "gt.json"):
        assert [list(g) for g in read_ground_truth(str(tmp_path / name))] == [[1, 2], [3]]
    with pytest.raises(ValueError, match="no query has a correct"):
        recall_at_n(ranked[:1], [np.array([])])


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """`dl-perception ...` in this process (the console script itself is run once below)."""
    from dl_perception.cli import main

    def run(*args):
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)
    return run


def test_place_commands_end_to_end(tmp_path, weights, cli):
    database_route = write_route(tmp_path / "db", 7, "day", frames=24)
    query_route = write_route(tmp_path / "q", 7, "dusk", frames=24, offset=0.4)
    db_path = str(tmp_path / "places.safetensors")
    result = cli("place", "build-db", "--weights", weights, "--data", database_route,
                  "--out", db_path, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "24 places" in result.stdout and "frame 'map'" in result.stdout
    info = json.loads(cli("place", "info", db_path).stdout)
    assert info["places"] == 24 and info["model"]["name"] == "netvlad"
    for database in (db_path, database_route):
        result = cli("eval", "place", "--weights", weights, "--database", database,
                      "--queries", query_route, "--threshold", "5", "--json",
                      str(tmp_path / "m.json"), "--device", "cpu")
        assert result.returncode == 0, result.stderr
        assert "recall_at_1" in result.stdout and "recall_at_20" in result.stdout
        metrics = json.load(open(tmp_path / "m.json"))
        assert metrics["queries_with_ground_truth"] == 24 and metrics["database_places"] == 24
        assert metrics["recall_at_20"] == 1.0  # 24 places, each within 5 m of >= 5 others
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps([[i] for i in range(24)]))
    result = cli("eval", "place", "--weights", weights, "--database", db_path, "--queries",
                  query_route, "--ground-truth", str(gt), "--json", str(tmp_path / "g.json"))
    assert result.returncode == 0, result.stderr
    assert json.load(open(tmp_path / "g.json"))["ground_truth"] == str(gt)
    other = str(tmp_path / "other.safetensors")
    models.create("netvlad", resize_to=[64, 48], pca_dim=0).save(other)
    result = cli("eval", "place", "--weights", other, "--database", db_path, "--queries",
                  query_route)
    assert result.returncode == 1 and "other netvlad weights" in result.stderr
    elsewhere = write_route(tmp_path / "elsewhere", 8, "dusk", frames=5)
    result = cli("eval", "place", "--weights", weights, "--database", database_route,
                  "--queries", elsewhere)
    assert result.returncode == 1 and "different place groups" in result.stderr


def test_build_db_from_bag_command(tmp_path, weights):
    bag = _write_bag(tmp_path / "bag")
    out = str(tmp_path / "bag_places.safetensors")
    result = subprocess.run([CLI, "place", "build-db", "--weights", weights, "--bag", bag, "--image-topic",
                             "/cam/image", "--pose-topic", "/odom", "--out", out],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "11 places" in result.stdout and "11 with positions" in result.stdout
    assert "frame 'odom'" in result.stdout and "skipped 1" in result.stdout
    database = PlaceDatabase.load(out)
    assert database.frame_id == "odom" and database.has_poses


def test_bench_place_command(tmp_path, weights, cli):
    result = cli("bench", "place", "--weights", weights, "--places", "2000", "--queries", "8",
                  "--device", "cpu", "--json", str(tmp_path / "b.json"))
    assert result.returncode == 0, result.stderr
    report = json.load(open(tmp_path / "b.json"))
    assert [row["index"] for row in report["rows"]] == ["flat", "hnsw"]
    for row in report["rows"]:
        assert row["places"] == 2000 and 0 < row["search_share"] < 1
    assert report["rows"][1]["top1_as_exact"] >= 0.75
    assert "search_share" in result.stdout
