"""Randomised rooms for depth training data (`dl-perception sim record-rooms`).

The city worlds show streets: depths from a metre to a hundred, the far end in the middle of
the image. Real cameras also look at rooms, desks and objects at arm's length, where everything
lies within a few metres and the nearest thing is often in the middle. A room here is a closed
box of random size (2.5-8 m by 2.5-8 m, 2.2-3.5 m high; walls, floor and ceiling showing crops of
real photographs, `randomization.photo_pool`), with tables and objects of several shapes and
sizes on the floor and on the tables; the camera takes random poses inside it (height 0.2-2 m,
any heading, pitch from the room's draw), under the room's random lighting and camera
(`randomization.draw_randomization`: field of view, exposure, blur, noise, grey). Each room is one
sequence folder (docs/datasets.md) with exact depth and camera poses.

`close_ups` rooms aim every view at a table top, an object or the floor from 0.2-1.2 m, looking
down 15-70 deg: the near scenes (a desk, a shelf, an obstacle just ahead of a drone) that views
from random poses in a room rarely give.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .randomization import ImageRandomizer, draw_randomization, photo_pool
from .scene import CAMERA_OFFSET, CameraSpec
from .world import Obstacle, World, WorldError

ROOM_SEED_OFFSET = 100000  # rooms' world seeds in meta.json: far from the evaluation worlds
SHAPES = ("ellipsoid", "cylinder", "box")
TEXTURES = ("concrete", "crate", "container", "brick", "bark", "foliage")


def room_world(seed: int) -> tuple[World, float]:
    """(a room as a World, its height). Walls and ceiling are boxes around the floor area;
    tables are boxes 0.45-0.8 m high; objects stand on the floor or a table. The corner the
    simulator starts in (-x, -y) is kept free."""
    rng = np.random.default_rng((seed, 31))
    width, length = rng.uniform(2.5, 8.0, 2)
    height = rng.uniform(2.2, 3.5)
    # the "streets" only give the simulator a start point: 0.5 m inside the -x -y corner
    world = World(seed=ROOM_SEED_OFFSET + seed, size=float(max(width, length) + 2.0),
                  street_x=np.array([-width / 2 + 0.5, width / 2 - 0.5]),
                  street_y=np.array([-length / 2 + 0.5, length / 2 - 0.5]),
                  width_x=np.array([1.0, 1.0]), width_y=np.array([1.0, 1.0]))
    texture_seeds = iter(rng.integers(0, 2**31, 1000).tolist())

    def add(kind, shape, x, y, size, z=0.0, texture="concrete", yaw=0.0):
        world.obstacles.append(Obstacle(kind, shape, float(x), float(y),
                                        tuple(float(s) for s in size), float(yaw), float(z),
                                        texture, next(texture_seeds)))

    wall = 0.2
    for x, y, sx, sy in ((0, length / 2 + wall / 2, width + 2 * wall, wall),
                         (0, -length / 2 - wall / 2, width + 2 * wall, wall),
                         (width / 2 + wall / 2, 0, wall, length),
                         (-width / 2 - wall / 2, 0, wall, length)):
        add("wall", "box", x, y, (sx, sy, height), texture="facade")
    add("wall", "box", 0, 0, (width + 2 * wall, length + 2 * wall, wall), z=height,
        texture="concrete")  # the ceiling
    start = (world.street_x[0], world.street_y[0])
    free: list[tuple[float, float, float]] = [(start[0], start[1], 0.6)]

    def place(radius: float) -> tuple[float, float] | None:
        for _ in range(30):
            x = rng.uniform(-width / 2 + radius, width / 2 - radius)
            y = rng.uniform(-length / 2 + radius, length / 2 - radius)
            if all(math.hypot(x - fx, y - fy) > radius + fr for fx, fy, fr in free):
                free.append((x, y, radius))
                return x, y
        return None

    surfaces = [(None, 0.0)]  # (table footprint (x, y, sx, sy) or None = floor, top height)
    for _ in range(int(rng.integers(0, 3))):
        sx, sy = rng.uniform(0.6, 1.8), rng.uniform(0.5, 1.0)
        top = rng.uniform(0.45, 0.8)
        spot = place(0.5 * math.hypot(sx, sy))
        if spot:
            add("table", "box", spot[0], spot[1], (sx, sy, top), texture="crate")
            surfaces.append(((spot[0], spot[1], sx, sy), top))
    for _ in range(int(rng.integers(3, 16))):
        table, base = surfaces[int(rng.integers(len(surfaces)))]
        size = float(np.exp(rng.uniform(math.log(0.08), math.log(1.0 if table is None else 0.4))))
        shape = SHAPES[int(rng.integers(3))]
        tall = size * rng.uniform(0.5, 2.5)
        if table is None:
            spot = place(size / 2 + 0.05)
            if spot is None:
                continue
            x, y = spot
        else:  # anywhere on the table top
            tx, ty, sx, sy = table
            x = tx + rng.uniform(-0.5, 0.5) * max(sx - size, 0.0)
            y = ty + rng.uniform(-0.5, 0.5) * max(sy - size, 0.0)
        dims = {"ellipsoid": (size / 2, size / 2, tall / 2), "cylinder": (size / 2, size / 2, tall),
                "box": (size * rng.uniform(0.5, 1.0), size * rng.uniform(0.5, 1.0), tall)}[shape]
        add("object", shape, x, y, dims, z=base, texture=TEXTURES[int(rng.integers(6))],
            yaw=rng.uniform(0, math.pi))
    return world, float(height)


def pose_bounds(world: World) -> tuple[float, float]:
    """Half extents (x, y) of the floor area a camera body may take in a room."""
    return world.street_x[1] + 0.3, world.street_y[1] + 0.3


def close_up_pose(world: World, room_height: float, pitch: float, rng: np.random.Generator
                  ) -> tuple[float, float, float, float] | None:
    """A body pose (x, y, z, yaw) whose camera, pitched down by `pitch` (rad), has a point of a
    table top, an object's top or the floor on its optical axis 0.2-1.2 m ahead; None when the
    drawn pose leaves the room."""
    targets = [o for o in world.obstacles if o.kind in ("object", "table")]
    if targets and rng.uniform() < 0.8:
        target = targets[int(rng.integers(len(targets)))]
        top = target.z + (2.0 * target.size[2] if target.shape == "ellipsoid" else target.size[2])
        reach = 0.5 * (min(target.size[0], target.size[1]) if target.shape == "box"
                       else target.size[0])
        point = np.array([target.x + rng.uniform(-reach, reach),
                          target.y + rng.uniform(-reach, reach), top])
    else:
        point = np.array([rng.uniform(world.street_x[0], world.street_x[1]),
                          rng.uniform(world.street_y[0], world.street_y[1]), 0.0])
    distance = float(np.exp(rng.uniform(math.log(0.2), math.log(1.2))))
    yaw = float(rng.uniform(-math.pi, math.pi))
    forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw),
                        -math.sin(pitch)])
    body = point - distance * forward - CAMERA_OFFSET * np.array([math.cos(yaw), math.sin(yaw), 0.0])
    half_x, half_y = pose_bounds(world)
    if abs(body[0]) > half_x or abs(body[1]) > half_y or not 0.3 <= body[2] <= room_height - 0.3:
        return None
    return float(body[0]), float(body[1]), float(body[2]), yaw


def record_rooms(out: str, seed: int, rooms: int, frames_per_room: int, width: int = 320,
                 height: int = 240, close_ups: bool = False, log=print) -> dict:
    """`rooms` rooms (seeds seed, seed + 1, ...), each a sequence folder OUT/room_<seed> of
    `frames_per_room` frames from random camera poses inside it (`close_ups`: aimed at near
    surfaces, `close_up_pose`)."""
    from ..datasets.sequence import Camera, SequenceWriter
    from .simulator import Simulator

    photos = photo_pool()
    if not photos:
        raise WorldError("record-rooms needs real photographs for textures: none found in the "
                         "shared data folder (set DL_PERCEPTION_DATA; see docs/simulator.md)")
    written = 0
    for room_seed in range(seed, seed + rooms):
        folder = os.path.join(out, f"room_{room_seed:06d}")
        if os.path.isfile(os.path.join(folder, "frames.csv")):
            continue
        world, room_height = room_world(room_seed)
        draw = draw_randomization(ROOM_SEED_OFFSET + room_seed, world.size)
        draw.photo_fraction, draw.photo_ground, draw.clutter = 0.9, True, 0
        draw.pitch_deg = float(np.random.default_rng((room_seed, 3)).uniform(
            *((15.0, 70.0) if close_ups else (-10.0, 50.0))))
        draw.fog = None
        camera_spec = CameraSpec(width, height, draw.hfov_deg)
        sim = Simulator(world.seed, camera=camera_spec, world=world, randomization=draw,
                        photos=photos, altitude=0.5)
        effects = ImageRandomizer(draw)
        fx, fy, cx, cy = camera_spec.intrinsics
        writer = SequenceWriter(folder, Camera(width, height, fx, fy, cx, cy), {
            "world_seed": world.seed, "source": "dl-perception sim record-rooms",
            "room_seed": room_seed, "room_height": room_height, "close_ups": close_ups,
            "randomization": draw.as_meta(),
            "camera": {"width": width, "height": height, "hfov_deg": draw.hfov_deg}})
        rng = np.random.default_rng((room_seed, 5))
        half_x, half_y = pose_bounds(world)
        try:
            attempts = 0
            while len(writer.rows) < frames_per_room and attempts < 20 * frames_per_room:
                attempts += 1
                if close_ups:
                    pose = close_up_pose(world, room_height, math.radians(draw.pitch_deg), rng)
                    if pose is None:
                        continue
                else:
                    pose = (rng.uniform(-half_x, half_x), rng.uniform(-half_y, half_y),
                            rng.uniform(0.3, min(2.0, room_height - 0.3)),
                            rng.uniform(-math.pi, math.pi))
                try:
                    sim.reset(pose)
                except WorldError:  # inside an object: another pose
                    continue
                rgb, depth = sim.render()
                position, quaternion = sim.camera_pose()
                writer.add(0.5 * len(writer.rows), effects(rgb), depth, position, quaternion)
        finally:
            sim.close()
        writer.close(summary={"frames": len(writer.rows)})
        written += len(writer.rows)
        log(f"  room {room_seed}: {len(writer.rows)} frames, {len(world.obstacles) - 5} "
            f"objects and tables, {world.street_x[1] * 2 + 1:.1f} x "
            f"{world.street_y[1] * 2 + 1:.1f} x {room_height:.1f} m")
    return {"rooms": rooms, "frames": written}
