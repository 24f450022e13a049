"""The built-in simulator core: worlds, rendering (depth accuracy, clear faults), dynamics,
recording (sequence folder + rosbag2), evaluation-world refusal, closed loop."""
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from dl_perception.sim.scene import CAMERA_OFFSET, CameraSpec
from dl_perception.sim.world import Obstacle, World, WorldError, generate_world

CLI = os.path.join(os.path.dirname(sys.executable), "dl-perception")


def wall_world(distance_to_wall: float = 0.0) -> World:
    """One textured wall whose face lies on the plane x = 10."""
    world = World(seed=3, size=64.0, street_x=np.array([-20.0, 20.0]),
                  street_y=np.array([-20.0, 20.0]), width_x=np.array([8.0, 8.0]),
                  width_y=np.array([8.0, 8.0]))
    world.obstacles.append(Obstacle("wall", "box", 10.5, 0.0, (1.0, 30.0, 8.0), texture="facade",
                                    texture_seed=17))
    return world


def test_worlds_are_seeded_and_large_enough():
    a, b, c = generate_world(5), generate_world(5), generate_world(6)
    assert [(o.kind, o.x, o.y) for o in a.obstacles] == [(o.kind, o.x, o.y) for o in b.obstacles]
    assert [(o.x, o.y) for o in a.obstacles] != [(o.x, o.y) for o in c.obstacles]
    assert a.size >= 60.0
    kinds = {o.kind for o in a.obstacles}
    assert {"wall", "building"} <= kinds and kinds & {"crate", "container", "barrier"}
    route = a.route("figure8")
    assert len({tuple(p) for p in route}) < len(route)  # revisits crossings


def test_bad_world_parameters_raise_clearly():
    with pytest.raises(WorldError, match="seed"):
        generate_world(-1)
    with pytest.raises(WorldError, match="size"):
        generate_world(1, size=5.0)
    with pytest.raises(WorldError, match="blocks"):
        generate_world(1, size=40.0, blocks=6)
    with pytest.raises(WorldError, match="route"):
        generate_world(1).route("zigzag")
    with pytest.raises(WorldError, match="hfov"):
        CameraSpec(320, 240, 200.0).validate()
    from dl_perception.sim.simulator import Simulator
    with pytest.raises(WorldError, match="preset"):
        Simulator(1, preset="night")
    with pytest.raises(WorldError, match="physics rate"):
        Simulator(1, physics_rate_hz=0.0)


def test_textures_differ_per_surface_and_are_cached(tmp_path):
    from dl_perception.sim import textures
    a = textures.generate("facade", 128, 64, 1)
    b = textures.generate("facade", 128, 64, 2)
    assert a.shape == (64, 128, 3) and a.std() > 10  # structure, not a flat colour
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 10
    path = textures.cached_texture("foliage", 64, 64, 3, cache_dir=str(tmp_path))
    stamp = os.path.getmtime(path)
    assert textures.cached_texture("foliage", 64, 64, 3, cache_dir=str(tmp_path)) == path
    assert os.path.getmtime(path) == stamp
    with pytest.raises(ValueError, match="unknown texture"):
        textures.generate("marble", 64, 64, 1)


@pytest.mark.parametrize("distance", [2.0, 5.0, 12.0])
def test_depth_of_a_wall_at_a_known_distance(distance):
    from dl_perception.sim.simulator import Simulator
    sim = Simulator(3, world=wall_world())
    try:
        sim.reset((10.0 - distance - CAMERA_OFFSET, 0.0, 1.5, 0.0))  # camera `distance` from it
        rgb, depth = sim.render()
        assert rgb.shape == (240, 320, 3) and depth.shape == (240, 320) and depth.dtype == np.float32
        wall = depth[60:120, 60:260]  # above the horizon the wall fills the middle
        assert np.all(np.abs(wall - distance) < 0.01 * distance), (wall.min(), wall.max())
        if distance > 10:  # the 8 m wall no longer fills the view: sky, no return
            assert np.isinf(depth[0, 160])
        assert rgb[60:180, 60:260].std() > 5  # textured, not flat
    finally:
        sim.close()


def test_render_thread_matches_the_direct_renderer_with_two_frames_in_flight():
    from dl_perception.sim.renderer import RenderingError
    from dl_perception.sim.simulator import Simulator
    sim = Simulator(5)
    try:
        render = sim.render_thread()
        expected = []
        for frame in range(4):
            rgb, depth = sim.render()  # the direct renderer, on this thread
            expected.append((rgb.copy(), depth.copy()))
            render.submit(sim.data, tag=frame)
            for _ in range(3):  # the data changes while the frame is in flight
                sim.set_command(2.0, 0.0, 0.0, 1.0)
                sim.step()
            if frame:
                assert render.in_flight == 2
                got = render.result()
                assert np.array_equal(got[0], expected[frame - 1][0])
                assert np.array_equal(got[1], expected[frame - 1][1])
                assert got[2] == frame - 1  # the tag travels with its frame
        render.submit(sim.data)
        with pytest.raises(RuntimeError, match="both render slots"):
            render.submit(sim.data)
        got = render.result()
        assert np.array_equal(got[1], expected[3][1])
        render.result()
        assert not np.array_equal(expected[0][0], expected[3][0])  # the views did change
        with pytest.raises(RuntimeError, match="no frame in flight"):
            render.result()
        render.close()
        with pytest.raises(RenderingError, match="render thread has stopped"):
            render.submit(sim.data)
    finally:
        sim.close()


def test_render_thread_faults_are_errors_not_hangs(monkeypatch):
    from dl_perception.sim import render_thread
    from dl_perception.sim.renderer import RenderingError
    from dl_perception.sim.simulator import Simulator
    sim = Simulator(5)
    try:
        render = sim.render_thread()

        def broken_draw(*_):
            raise ValueError("GL_OUT_OF_MEMORY")
        monkeypatch.setattr(render.renderer, "draw", broken_draw)
        render.submit(sim.data)
        with pytest.raises(RenderingError, match="rendering a frame failed: GL_OUT_OF_MEMORY"):
            render.result()
        monkeypatch.setattr(render.renderer, "draw", lambda *_: time.sleep(1.0))
        monkeypatch.setattr(render_thread, "FRAME_TIMEOUT_S", 0.1)
        render.submit(sim.data)
        with pytest.raises(RenderingError, match="did not finish a frame within"):
            render.result()
        with pytest.raises(RenderingError, match="did not finish"):  # hung: stays an error
            render.submit(sim.data)
    finally:
        sim.close()


def test_dynamics_respect_limits_and_collisions_stop_the_body():
    from dl_perception.sim.simulator import Simulator
    sim = Simulator(3, world=wall_world())
    sim.reset((0.0, 0.0, 1.5, 0.0))
    speeds = []
    for _ in range(70):
        sim.set_command(10.0, 0.0, 0.0, 0.0)  # above the 3 m/s limit
        assert not sim.step()
        speeds.append(np.linalg.norm(sim.state.velocity))
    assert np.all(np.diff(speeds) <= sim.limits.max_acceleration * sim.dt + 1e-9)
    assert speeds[-1] == pytest.approx(sim.limits.max_speed)
    touched = False
    for _ in range(600):
        sim.set_command(10.0, 0.0, 0.0, 0.0)
        touched = sim.step()
        if touched:
            break
    assert touched and sim.collisions == 1
    assert sim.state.position[0] + 0.25 <= 10.0 + 1e-6  # the hull stops at the wall
    assert np.all(sim.state.velocity == 0)
    with pytest.raises(ValueError, match="non-finite"):
        sim.set_command(math.nan, 0, 0, 0)
    for _ in range(60):  # no command for longer than command_timeout: it brakes to a hover
        sim.step()
    assert np.all(sim.state.velocity == 0)


def test_expert_steering_label_avoids_obstacles_and_ignores_the_route():
    from dl_perception.sim.expert import ExpertAutopilot
    from dl_perception.sim.simulator import Simulator
    world = wall_world()  # its wall lies 20 m ahead: open space
    sim = Simulator(3, world=world)
    sim.reset((-10.0, 0.0, 1.5, 0.0))
    command = ExpertAutopilot(sim, route=np.array([[-10.0, 0.0], [-10.0, 20.0]])).command()
    assert command.yaw_rate > 0.5  # it flies towards its waypoint on the left ...
    assert command.steering == 0.0 and command.collision == 0  # ... the label says straight on
    sim.close()
    world.obstacles.append(Obstacle("pillar", "cylinder", -8.2, -0.3, (0.3, 0.3, 4.0)))
    sim = Simulator(3, world=world)  # a pillar 1.8 m ahead, right of the centre line
    sim.reset((-10.0, 0.0, 1.5, 0.0))
    command = ExpertAutopilot(sim, route=np.array([[-10.0, 0.0], [-10.0, -20.0]])).command()
    assert command.steering >= 0.5 and command.collision == 1  # turn left, away from it
    sim.close()


def test_rendering_faults_give_a_clear_error_not_a_hang():
    code = ("from dl_perception.sim import renderer\n"
            "try:\n"
            "    renderer.probe_backend(timeout=0.001)\n"
            "except renderer.RenderingError as error:\n"
            "    print('ERROR', error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert "ERROR offscreen rendering with MUJOCO_GL=egl failed" in result.stdout
    assert "did not finish" in result.stdout and "libegl1" in result.stdout
    # a backend whose library is missing or broken: an error naming it
    env = {**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    code = ("from dl_perception.sim.simulator import Simulator\n"
            "from dl_perception.sim.renderer import RenderingError\n"
            "try:\n"
            "    Simulator(1).render()\n"
            "    print('RENDERED')\n"
            "except RenderingError as error:\n"
            "    print('ERROR', error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.stdout.startswith(("ERROR importing mujoco with MUJOCO_GL=osmesa failed",
                                     "ERROR offscreen rendering with MUJOCO_GL=osmesa failed",
                                     "RENDERED")), result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from dl_perception.sim.recording import RecordConfig, record
    out = str(tmp_path_factory.mktemp("sim") / "seq")
    summary = record(RecordConfig(world_seed=7, out=out, frames=30, perturb=0.3))
    return out, summary


def test_recording_reads_back_as_a_sequence(recording):
    from dl_perception.datasets.dronet import read_dronet_dataset
    from dl_perception.datasets.sequence import read_sequence
    from dl_perception.core.geometry import OPTICAL_TO_BODY, quat_to_matrix
    out, summary = recording
    sequence = read_sequence(out)
    assert len(sequence) == 30 and summary["frames"] == 30
    assert sequence.meta["world_seed"] == 7 and sequence.meta["preset"] == "day"
    assert sequence.camera.fx == pytest.approx(160.0) and sequence.camera.width == 320
    frame = sequence.frames[10]
    depth = frame.load_depth()
    assert frame.load_rgb().shape == (240, 320, 3) and np.nanmax(depth) > 1.0
    assert np.all(np.diff([f.stamp for f in sequence.frames]) == pytest.approx(0.1))
    rotation = quat_to_matrix(frame.quaternion)
    body = rotation @ OPTICAL_TO_BODY.T  # optical -> world, then back to the body frame
    assert body[2, 2] == pytest.approx(1.0)  # level camera: body z stays up
    steering = np.array([f.steering for f in sequence.frames])
    assert np.all(np.abs(steering) <= 1.0) and set(np.unique([f.collision for f in
                                                               sequence.frames])) <= {0.0, 1.0}
    assert len(read_dronet_dataset(out)) == 30  # DroNet reads it as training data


def test_recorded_bag_reads_back_with_consistent_stamps_and_poses(recording):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    from dl_perception.sim.bag import SIM_TOPICS
    out, _ = recording
    messages: dict[str, list] = {}
    with AnyReader([__import__("pathlib").Path(out, "bag")],
                   default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == SIM_TOPICS
        for connection, stamp, raw in reader.messages():
            messages.setdefault(connection.topic, []).append(
                (stamp, reader.deserialize(raw, connection.msgtype)))
    assert len(messages["/camera/image_raw"]) == 30
    image = messages["/camera/depth/image_raw"][5][1]
    assert image.encoding == "32FC1" and image.step == 320 * 4
    for topic in ("/camera/image_raw", "/ground_truth/odometry", "/clock"):
        stamps = [s for s, _ in messages[topic]]
        assert np.all(np.diff(stamps) > 0), topic
    odometry = [m for _, m in messages["/ground_truth/odometry"]]
    assert odometry[0].header.frame_id == "odom" and odometry[0].child_frame_id == "base_link"
    times = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in odometry])
    positions = np.array([[m.pose.pose.position.x, m.pose.pose.position.y] for m in odometry])
    yaws = np.array([2 * math.atan2(m.pose.pose.orientation.z, m.pose.pose.orientation.w)
                     for m in odometry])
    body = np.array([[m.twist.twist.linear.x, m.twist.twist.linear.y] for m in odometry])
    world_velocity = np.stack([np.cos(yaws) * body[:, 0] - np.sin(yaws) * body[:, 1],
                               np.sin(yaws) * body[:, 0] + np.cos(yaws) * body[:, 1]], -1)
    moved = np.diff(positions, axis=0)
    predicted = world_velocity[1:] * np.diff(times)[:, None]
    assert np.linalg.norm(positions[-1] - positions[0]) > 1.0  # it flew
    assert np.abs(moved - predicted).max() < 1e-3
    yaw_rates = np.array([m.twist.twist.angular.z for m in odometry])
    turned = np.remainder(np.diff(yaws) + math.pi, 2 * math.pi) - math.pi
    assert np.abs(turned - yaw_rates[1:] * np.diff(times)).max() < 1e-3


def test_recording_is_deterministic(tmp_path):
    from dl_perception.sim.recording import RecordConfig, record
    for name in ("a", "b"):
        record(RecordConfig(world_seed=11, out=str(tmp_path / name), frames=8, bag=False,
                            perturb=0.5, preset="dusk"))
    for name in ("frames.csv", "meta.json", "images/000007.png", "depth/000007.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_dronet_pilot_flies_and_the_expert_takes_over_when_it_stalls(tmp_path):
    import torch

    from dl_perception import models
    from dl_perception.sim.recording import RecordConfig, record
    model = models.create("dronet")
    with torch.no_grad():  # a network that always sees a collision: the control law stops
        model.collision.weight.zero_()
        model.collision.bias.fill_(20.0)
    weights = str(tmp_path / "stopper.safetensors")
    model.save(weights)
    with pytest.raises(WorldError, match="exclude"):
        record(RecordConfig(world_seed=7, out=str(tmp_path / "x"), pilot_weights=weights,
                            perturb=0.2))
    out = str(tmp_path / "dagger")
    summary = record(RecordConfig(world_seed=7, out=out, frames=60, bag=False,
                                  pilot_weights=weights))
    meta = json.loads(open(os.path.join(out, "meta.json")).read())
    assert meta["pilot"] == "dronet stopper.safetensors"
    assert summary["expert_takeovers"] >= 1  # stalled for 3 s, then the expert flew
    assert 0.5 < summary["distance_m"] < 6.0


def test_evaluation_worlds_are_recorded_but_refused_for_training(tmp_path):
    out = tmp_path / "eval_world"
    result = subprocess.run([CLI, "sim", "record", "--world-seed", "1003", "--frames", "3",
                             "--no-bag", "--out", str(out)], capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr
    assert "wrote 3 frames" in result.stdout
    assert json.load(open(out / "meta.json"))["world_seed"] == 1003
    result = subprocess.run([CLI, "train", "dronet", "--data", str(out), "--out",
                             str(tmp_path / "w.safetensors"), "--epochs", "1"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 1 and "reserved for evaluation" in result.stderr


def test_closed_loop_expert_flies_and_straight_crashes():
    from dl_perception.sim.closed_loop import ClosedLoopConfig, evaluate_closed_loop
    result = evaluate_closed_loop(ClosedLoopConfig(seeds=[1000], cap_m=40.0,
                                                   policies=["expert", "straight"]),
                                  log=lambda _: None)
    rows = {r["policy"]: r for r in result["rows"]}
    assert rows["expert"]["mean_m"] == 40.0 and rows["expert"]["collided"] == "0/1"
    assert rows["straight"]["mean_m"] < 40.0 and rows["straight"]["collided"] == "1/1"
    assert rows["expert"]["ratio_to_straight"] > 1.0


def test_closed_loop_runs_dronet_through_the_control_law():
    from dl_perception.core.paths import shipped_weights
    from dl_perception.sim.closed_loop import ClosedLoopConfig, evaluate_closed_loop
    weights = shipped_weights("dronet", "sim")  # the simulator's checkpoint, named as eval closed-loop does
    result = evaluate_closed_loop(ClosedLoopConfig(seeds=[1001], cap_m=4.0, max_time_s=10.0,
                                                   policies=["dronet"], weights=weights),
                                  log=lambda _: None)
    flight = result["flights"]["dronet"][0]
    assert result["weights"] == weights
    assert flight["distance_m"] > 0.5  # the controller made it fly on the network's outputs
