"""Domain randomisation of simulator recordings (`sim record --randomize`): draws are seeded,
the pitched camera's pose agrees with what it renders, clutter keeps the streets passable, the
camera effects, photo textures; recordings without it stay as they were (test_sim.py checks their
determinism)."""
import dataclasses
import json
import math

import numpy as np
import pytest

from dl_perception.sim.randomization import (ImageRandomizer, add_clutter, draw_randomization,
                                             photo_texture)
from dl_perception.sim.world import World, generate_world


def test_draws_are_seeded_and_inside_their_ranges():
    a, b, c = (draw_randomization(s, 64.0) for s in (5, 5, 6))
    assert a == b and a != c
    ranges = a.ranges
    for draw in (a, c):
        assert ranges.hfov_deg[0] <= draw.hfov_deg <= ranges.hfov_deg[1]
        assert ranges.altitude[0] <= draw.altitude <= ranges.altitude[1]
        assert ranges.pitch_deg[0] <= draw.pitch_deg <= ranges.pitch_deg[1]
        assert draw.sun_direction[2] < 0  # the sun shines down
    json.dumps(a.as_meta())  # plain values for meta.json


def test_image_effects_grey_camera_exposure_and_noise():
    rng = np.random.default_rng(0)
    rgb = rng.integers(40, 200, (48, 64, 3)).astype(np.uint8)
    draw = draw_randomization(1, 64.0)
    grey = ImageRandomizer(dataclasses.replace(draw, grey=True, gain=1.0, gamma=1.0,
                                               white_balance=(1.0, 1.0, 1.0)))(rgb)
    assert grey.shape == rgb.shape and grey.dtype == np.uint8
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    quiet = dataclasses.replace(draw, grey=False, noise_sigma=0.0, gamma=1.0,
                                white_balance=(1.0, 1.0, 1.0))
    quiet.ranges = dataclasses.replace(draw.ranges, blur_probability=0.0, flicker=0.0)
    bright = ImageRandomizer(dataclasses.replace(quiet, gain=1.4))(rgb)
    dark = ImageRandomizer(dataclasses.replace(quiet, gain=0.6))(rgb)
    assert bright.mean() > rgb.mean() * 1.3 and dark.mean() < rgb.mean() * 0.7
    noisy = ImageRandomizer(dataclasses.replace(quiet, gain=1.0, noise_sigma=5.0))(rgb)
    assert 3.0 < np.std(noisy.astype(float) - rgb) < 7.0


def test_clutter_has_several_shapes_and_leaves_the_streets_passable():
    world = generate_world(4)
    before = len(world.obstacles)
    draw = dataclasses.replace(draw_randomization(4, world.size), clutter=60)
    add_clutter(world, draw)
    clutter = world.obstacles[before:]
    assert len(clutter) >= 30 and {o.shape for o in clutter} == {"ellipsoid", "cylinder", "box"}
    for obstacle in clutter:
        radius = obstacle.footprint_radius()
        bands = [(obstacle.x, world.street_x, world.width_x),
                 (obstacle.y, world.street_y, world.width_y)]
        inside = [np.abs(coord - centres) for coord, centres, widths in bands
                  if np.any(np.abs(coord - centres) < widths / 2)]
        assert len(inside) == 1  # in one street, not in a crossing
        # off that street's centre line (the drone flies there) by 1 m plus its size
        assert inside[0].min() >= 1.0 + 0.5 * min(obstacle.size[:2]) - 1e-9 or \
            inside[0].min() >= 1.0 + 0.5 * radius - 1e-9


def test_photo_texture_tiles_crops_of_the_photo(tmp_path):
    import cv2
    photo = np.zeros((120, 160, 3), np.uint8)
    photo[:, :80] = (200, 30, 30)
    photo[:, 80:] = (30, 30, 200)
    path = str(tmp_path / "photo.png")
    cv2.imwrite(path, photo)
    texture = photo_texture(path, 400, 50, seed=3)
    assert texture.shape == (50, 400, 3)
    assert np.array_equal(texture, photo_texture(path, 400, 50, seed=3))
    assert texture.std() > 20  # the photo's content, not one flat colour


def test_pitched_camera_pose_agrees_with_the_rendered_ground():
    """Over an empty world the depth of the ground pixels follows from the recorded camera pose
    and intrinsics; a wrong pitch in either would move it by far more than 2%."""
    from dl_perception.sim.scene import CameraSpec
    from dl_perception.sim.simulator import Simulator
    from dl_perception.core.geometry import quat_to_matrix

    world = World(seed=3, size=64.0, street_x=np.array([-20.0, 20.0]),
                  street_y=np.array([-20.0, 20.0]), width_x=np.array([8.0, 8.0]),
                  width_y=np.array([8.0, 8.0]))
    draw = dataclasses.replace(draw_randomization(3, 64.0), pitch_deg=30.0, clutter=0,
                               photo_fraction=0.0, photo_ground=False)
    camera = CameraSpec(160, 120, 70.0)
    sim = Simulator(3, camera=camera, world=world, randomization=draw, altitude=1.0)
    try:
        _, depth = sim.render()
        position, quaternion = sim.camera_pose()
        rotation = quat_to_matrix(quaternion)
        assert rotation[2, 2] == pytest.approx(-math.sin(math.radians(30.0)), abs=1e-6)
        fx, fy, cx, cy = camera.intrinsics
        v, u = np.mgrid[60:120, 0:160]
        rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u, float)], -1)
        world_rays = rays @ rotation.T
        expected = -position[2] / world_rays[..., 2]  # along the optical axis (ray z = 1)
        error = np.abs(depth[60:120] - expected) / expected
        assert np.median(error) < 0.02, np.median(error)
    finally:
        sim.close()


def test_randomized_recording_is_seeded_and_documented(shared_data, tmp_path):
    from dl_perception.datasets.sequence import read_sequence
    from dl_perception.sim.recording import RecordConfig, record

    outs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        record(RecordConfig(world_seed=9, out=out, frames=4, bag=False, randomize=True,
                            rate_hz=2.0))
        outs.append(out)
    plain = str(tmp_path / "plain")
    record(RecordConfig(world_seed=9, out=plain, frames=4, bag=False, rate_hz=2.0))
    sequence = read_sequence(outs[0])
    draw = sequence.meta["randomization"]
    assert sequence.camera.fx == pytest.approx(160 / math.tan(math.radians(draw["hfov_deg"]) / 2))
    assert "randomization" not in read_sequence(plain).meta
    for name in ("images/000003.png", "depth/000003.png", "frames.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "images/000003.png").read_bytes() != \
        (tmp_path / "plain" / "images/000003.png").read_bytes()
    heights = [f.position[2] for f in sequence.frames]
    assert abs(heights[0] - draw["altitude"]) < 0.3


def test_close_up_rooms_look_at_near_surfaces(shared_data, tmp_path):
    from dl_perception.datasets.sequence import read_sequence
    from dl_perception.sim.rooms import record_rooms

    record_rooms(str(tmp_path), 4, rooms=1, frames_per_room=4, width=80, height=60,
                 close_ups=True, log=lambda _: None)
    sequence = read_sequence(str(tmp_path / "room_000004"))
    assert sequence.meta["close_ups"] is True
    assert 15.0 <= sequence.meta["randomization"]["pitch_deg"] <= 70.0
    for frame in sequence.frames:
        depth = frame.load_depth()
        # the aimed-at point lies 0.2-1.2 m along the optical axis (nearer if something is between)
        assert 0.05 < depth[29:31, 39:41].max() < 1.25


def test_rooms_are_closed_boxes_with_objects_and_exact_depth(shared_data, tmp_path):
    from dl_perception.datasets.sequence import read_sequence
    from dl_perception.sim.rooms import ROOM_SEED_OFFSET, record_rooms, room_world

    world, height = room_world(4)
    assert world.seed == ROOM_SEED_OFFSET + 4 and 2.2 <= height <= 3.5
    shapes = {o.shape for o in world.obstacles if o.kind in ("object", "table")}
    assert shapes and shapes <= {"ellipsoid", "cylinder", "box"}
    summary = record_rooms(str(tmp_path), 4, rooms=1, frames_per_room=3, width=80, height=60,
                           log=lambda _: None)
    assert summary["frames"] == 3
    sequence = read_sequence(str(tmp_path / "room_000004"))
    diagonal = math.hypot(world.street_x[1] * 2 + 1, world.street_y[1] * 2 + 1)
    for frame in sequence.frames:
        depth = frame.load_depth()
        assert np.isfinite(depth).mean() > 0.99  # closed: every pixel sees a surface
        assert np.nanmax(depth) < math.hypot(diagonal, height) + 0.5
