"""A World as a MuJoCo model (MJCF): textured meshes for every surface, the quadrotor body with
its forward camera, and the lighting of an appearance preset.

Every obstacle is a mesh with its own texture coordinates, so each surface shows its own
texture image once, in metric scale, with no tiling (see textures.py). Depth precision: the
model's extent is fixed at 100 m, so the near plane sits at 5 cm and the far plane at 200 m.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import numpy as np

from . import textures
from .world import PRESETS, Obstacle, World, WorldError

EXTENT = 100.0  # model statistic extent (m): znear/zfar are fractions of it
NEAR, FAR = 0.05, 200.0
DRONE_HALF_SIZE = (0.25, 0.25, 0.06)  # collision box of the quadrotor (m)
CAMERA_OFFSET = 0.28  # camera ahead of the body centre (m), outside the collision box


@dataclass
class CameraSpec:
    width: int = 320
    height: int = 240
    hfov_deg: float = 90.0

    def validate(self) -> None:
        if not (isinstance(self.width, int) and isinstance(self.height, int)
                and 16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise WorldError(f"camera size must be integers in [16, 4096], got "
                             f"{self.width}x{self.height}")
        if not (math.isfinite(self.hfov_deg) and 10.0 <= self.hfov_deg <= 170.0):
            raise WorldError(f"camera hfov_deg must lie in [10, 170], got {self.hfov_deg}")

    @property
    def fx(self) -> float:
        return self.width / 2 / math.tan(math.radians(self.hfov_deg) / 2)

    @property
    def fovy_deg(self) -> float:
        return math.degrees(2 * math.atan(self.height / 2 / self.fx))

    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy with pixel centres at integer coordinates (ROS convention)."""
        return self.fx, self.fx, self.width / 2 - 0.5, self.height / 2 - 0.5


@dataclass
class Lighting:
    sun_direction: tuple[float, float, float]
    sun_diffuse: tuple[float, float, float]
    ambient: tuple[float, float, float]
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    fog: tuple[float, float, float] | None = None  # colour; fog from 20 m to 120 m


def camera_axes(pitch: float) -> str:
    """MJCF xyaxes of the forward camera pitched down by `pitch` (rad): image x to the body's
    right, image up tilted forward (the camera looks along body x at pitch 0)."""
    if pitch == 0.0:
        return "0 -1 0 0 0 1"
    return f"0 -1 0 {_fmt((math.sin(pitch), 0.0, math.cos(pitch)))}"


def lighting(preset: str, seed: int) -> Lighting:
    if preset not in PRESETS:
        raise WorldError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    rng = np.random.default_rng((seed, 11))
    azimuth = rng.uniform(0, 2 * math.pi)
    if preset == "dusk":
        elevation = math.radians(8.0)
        sun = (0.75, 0.45, 0.3)
        ambient, sky_top, sky_horizon = (0.16, 0.13, 0.18), (0.15, 0.12, 0.3), (0.9, 0.5, 0.3)
        fog = (0.45, 0.33, 0.35)
    else:
        elevation = math.radians(55.0 if preset == "day" else 35.0)
        azimuth += 0.0 if preset == "day" else 2.0
        sun = (0.75, 0.73, 0.68)
        ambient, sky_top, sky_horizon, fog = (0.38, 0.38, 0.4), (0.35, 0.55, 0.9), \
            (0.8, 0.87, 0.95), None
    direction = (-math.cos(elevation) * math.cos(azimuth), -math.cos(elevation) * math.sin(azimuth),
                 -math.sin(elevation))
    return Lighting(direction, sun, ambient, sky_top, sky_horizon, fog)


def appearance_seed(texture_seed: int, preset: str) -> int:
    """'changed' repaints every surface (new textures, same geometry); other presets keep them."""
    return texture_seed if preset != "changed" else (texture_seed * 7919 + 104729) % (2**31)


# --- meshes with texture coordinates ---------------------------------------------------------
def _fmt(values) -> str:
    return " ".join(f"{v:.4f}".rstrip("0").rstrip(".") if v != 0 else "0"
                    for v in np.asarray(values, float).ravel())


def box_mesh(sx: float, sy: float, sz: float):
    """Box centred at the origin. The four sides unroll along u (perimeter), v runs from the top
    (0) to the bottom (1) of the wall; the top reuses a strip of the image."""
    x, y, z = sx / 2, sy / 2, sz / 2
    perimeter = 2 * (sx + sy)
    sides = [((-x, -y), (x, -y), (0, -1)), ((x, -y), (x, y), (1, 0)),
             ((x, y), (-x, y), (0, 1)), ((-x, y), (-x, -y), (-1, 0))]
    vertices, normals, uv, faces = [], [], [], []
    u = 0.0
    for (ax, ay), (bx, by), (nx, ny) in sides:
        length = math.hypot(bx - ax, by - ay) / perimeter
        base = len(vertices)
        vertices += [(ax, ay, -z), (bx, by, -z), (bx, by, z), (ax, ay, z)]
        normals += [(nx, ny, 0)] * 4
        uv += [(u, 1), (u + length, 1), (u + length, 0), (u, 0)]
        faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
        u += length
    for zz, nz, order in ((z, 1, (0, 1, 2, 3)), (-z, -1, (3, 2, 1, 0))):
        base = len(vertices)
        corners = [(-x, -y), (x, -y), (x, y), (-x, y)]
        vertices += [(cx, cy, zz) for cx, cy in (corners[k] for k in order)]
        normals += [(0, 0, nz)] * 4
        uv += [((cx + x) / perimeter, 0.3 * (cy + y) / max(sy, 1e-6))
               for cx, cy in (corners[k] for k in order)]
        faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    return vertices, normals, uv, faces


def cylinder_mesh(radius: float, height: float, segments: int = 20):
    """Vertical cylinder centred at the origin; u wraps around, v from top (0) to bottom (1)."""
    vertices, normals, uv, faces = [], [], [], []
    z = height / 2
    for k in range(segments + 1):
        angle = 2 * math.pi * k / segments
        c, s = math.cos(angle), math.sin(angle)
        vertices += [(radius * c, radius * s, -z), (radius * c, radius * s, z)]
        normals += [(c, s, 0), (c, s, 0)]
        uv += [(k / segments, 1), (k / segments, 0)]
    for k in range(segments):
        a, b = 2 * k, 2 * k + 2
        faces += [(a, b, b + 1), (a, b + 1, a + 1)]
    for zz, nz in ((z, 1), (-z, -1)):
        centre = len(vertices)
        vertices.append((0, 0, zz))
        normals.append((0, 0, nz))
        uv.append((0.5, 0.02))
        for k in range(segments):
            angle = 2 * math.pi * k / segments
            vertices.append((radius * math.cos(angle), radius * math.sin(angle), zz))
            normals.append((0, 0, nz))
            uv.append((k / segments, 0.05))
        for k in range(segments):
            a, b = centre + 1 + k, centre + 1 + (k + 1) % segments
            faces.append((centre, a, b) if nz > 0 else (centre, b, a))
    return vertices, normals, uv, faces


def ellipsoid_mesh(radius: float, half_height: float, rings: int = 10, segments: int = 18):
    """Ellipsoid centred at the origin (a tree crown); u around, v from top to bottom."""
    vertices, normals, uv, faces = [], [], [], []
    for r in range(rings + 1):
        polar = math.pi * r / rings
        for k in range(segments + 1):
            angle = 2 * math.pi * k / segments
            n = (math.sin(polar) * math.cos(angle), math.sin(polar) * math.sin(angle),
                 math.cos(polar))
            vertices.append((radius * n[0], radius * n[1], half_height * n[2]))
            normals.append(n)
            uv.append((k / segments, r / rings))
    for r in range(rings):
        for k in range(segments):
            a = r * (segments + 1) + k
            b = a + segments + 1
            if r > 0:
                faces.append((a, b, a + 1))
            if r < rings - 1:
                faces.append((a + 1, b, b + 1))
    return vertices, normals, uv, faces


def _texture_size(length_m: float, height_m: float, px_per_m: float) -> tuple[int, int]:
    width = int(np.clip(round(length_m * px_per_m / 4) * 4, 64, 2048))
    height = int(np.clip(round(height_m * px_per_m / 4) * 4, 32, 1024))
    return width, height


def _obstacle_parts(obstacle: Obstacle, preset: str, cache_dir: str | None, photo=None):
    """(name, mesh, texture path, geom position) for each visual/collision part. `photo`:
    (path, seed) of a real photograph whose crops replace the procedural textures."""
    seed = appearance_seed(obstacle.texture_seed, preset)
    sx, sy, sz = obstacle.size
    base = obstacle.z

    def texture(kind, width, height, kind_seed, px_per_m):
        if photo is None:
            return textures.cached_texture(kind, width, height, kind_seed, px_per_m, cache_dir)
        return _photo_png(photo, width, height, cache_dir)

    if obstacle.shape == "ellipsoid":
        width, height = _texture_size(2 * math.pi * sx, math.pi * sz, 64.0)
        return [("", ellipsoid_mesh(sx, sz), texture(obstacle.texture, width, height, seed,
                                                     width / (2 * math.pi * sx)), base + sz)]
    if obstacle.shape == "box":
        ppm = 32.0 if obstacle.kind in ("building", "wall") else 64.0
        width, height = _texture_size(2 * (sx + sy), sz, ppm)
        return [("", box_mesh(sx, sy, sz), texture(obstacle.texture, width, height, seed,
                                                   width / (2 * (sx + sy))), base + sz / 2)]
    if obstacle.shape == "cylinder":
        width, height = _texture_size(2 * math.pi * sx, sz, 64.0)
        return [("", cylinder_mesh(sx, sz), texture(obstacle.texture, width, height, seed,
                                                    width / (2 * math.pi * sx)), base + sz / 2)]
    trunk_radius, crown_radius, crown_half = sx, sy, sz
    trunk_height = obstacle.crown_base + crown_half
    width, height = _texture_size(2 * math.pi * trunk_radius, trunk_height, 64.0)
    bark = texture("bark", width, height, seed, width / (2 * math.pi * trunk_radius))
    width, height = _texture_size(2 * math.pi * crown_radius, math.pi * crown_half, 48.0)
    leaves = texture("foliage", width, height, seed + 1, 48.0)
    return [("_trunk", cylinder_mesh(trunk_radius, trunk_height, 12), bark,
             base + trunk_height / 2),
            ("_crown", ellipsoid_mesh(crown_radius, crown_half), leaves,
             base + obstacle.crown_base + crown_half)]


def _photo_png(photo, width: int, height: int, cache_dir: str | None) -> str:
    """A width x height texture of crops of the photo (cached like every texture)."""
    from .randomization import photo_texture
    path, seed = photo
    return textures.cached_png(f"photo/{width}x{height}/{seed}/{path}",
                               lambda: photo_texture(path, width, height, seed), cache_dir)


def build_mjcf(world: World, preset: str = "day", camera: CameraSpec | None = None,
               start: tuple[float, float, float, float] = (0.0, 0.0, 1.5, 0.0),
               cache_dir: str | None = None, ground_pixels: int = 2048,
               randomization=None, photos: list[str] | None = None) -> str:
    """MJCF text of the world with the drone at start = (x, y, z, yaw). `randomization` (a
    sim.randomization.Randomization) replaces the preset's lighting and sky, pitches the camera
    and puts crops of the `photos` on a fraction of the surfaces (and maybe the ground)."""
    camera = camera or CameraSpec()
    camera.validate()
    light = lighting(preset, world.seed)
    pitch = 0.0
    photo_of = {}  # obstacle index -> (photo path, seed)
    if randomization is not None:
        r = randomization
        light = Lighting(r.sun_direction, r.sun_diffuse, r.ambient, r.sky_top, r.sky_horizon,
                         r.fog)
        pitch = math.radians(r.pitch_deg)
        if photos:
            rng = np.random.default_rng((r.seed, 5))
            for index in range(len(world.obstacles)):
                if rng.random() < r.photo_fraction:
                    photo_of[index] = (photos[int(rng.integers(len(photos)))],
                                       int(rng.integers(2**31)))
    assets, bodies = [], []

    def rgb(values) -> str:
        return _fmt(values)

    ground_seed = appearance_seed(world.seed * 31 + 5, preset)
    if randomization is not None and randomization.photo_ground and photos:
        from .randomization import photo_mosaic
        cells = max(2, int(world.size / 4))
        ground_png = textures.cached_png(
            f"photoground/{world.seed}/{world.size}/{randomization.seed}/{ground_pixels}",
            lambda: photo_mosaic(photos, ground_pixels, cells, randomization.seed), cache_dir)
    else:
        ground_png = textures.cached_png(
            f"ground/{world.seed}/{world.size}/{ground_seed}/{ground_pixels}",
            lambda: textures.ground(world, ground_pixels, ground_seed), cache_dir)
    span = world.size + 4.0
    ground_mesh = box_mesh(span, span, 0.2)
    # the ground's top face shows the whole ground image once
    vertices, normals, uv, faces = ground_mesh
    for index in range(16, 20):
        x, y, _ = vertices[index]
        uv[index] = ((x + span / 2) / span, (span / 2 - y) / span)
    parts = [("ground", ground_mesh, ground_png, (0.0, 0.0, -0.1, 0.0))]
    for index, obstacle in enumerate(world.obstacles):
        for suffix, mesh, texture, z in _obstacle_parts(obstacle, preset, cache_dir,
                                                        photo_of.get(index)):
            parts.append((f"{obstacle.kind}{index}{suffix}", mesh, texture,
                          (obstacle.x, obstacle.y, z, obstacle.yaw)))
    for name, (vertices, normals, uv, faces), texture, (x, y, z, yaw) in parts:
        assets.append(
            f'<texture name="{name}" type="2d" file={quoteattr(texture)}/>'
            f'<material name="{name}" texture="{name}" specular="0.05" shininess="0.1"/>'
            f'<mesh name="{name}" inertia="convex" vertex="{_fmt(vertices)}" '
            f'normal="{_fmt(normals)}" texcoord="{_fmt(uv)}" face="{_fmt(faces)}"/>')
        bodies.append(f'<geom name="{name}" type="mesh" mesh="{name}" material="{name}" '
                      f'pos="{_fmt((x, y, z))}" euler="0 0 {yaw:.5f}"/>')
    fog = ""
    if light.fog is not None:
        fog = f'<rgba fog="{rgb(light.fog)} 1"/>'
    hx, hy, hz = DRONE_HALF_SIZE
    sx, sy, sz, syaw = start
    return f"""<mujoco model="dl_perception_world_{world.seed}_{preset}">
  <compiler angle="radian"/>
  <statistic extent="{EXTENT}" center="0 0 0"/>
  <visual>
    <global offwidth="{camera.width}" offheight="{camera.height}"/>
    <quality shadowsize="0" offsamples="0"/>
    <map znear="{NEAR / EXTENT}" zfar="{FAR / EXTENT}" fogstart="0.2" fogend="1.2"/>
    <headlight ambient="{rgb(light.ambient)}" diffuse="0 0 0" specular="0 0 0"/>
    {fog}
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="{rgb(light.sky_top)}"
             rgb2="{rgb(light.sky_horizon)}" width="256" height="256"/>
    {"".join(assets)}
  </asset>
  <worldbody>
    <light name="sun" directional="true" castshadow="false" pos="0 0 50"
           dir="{rgb(light.sun_direction)}" diffuse="{rgb(light.sun_diffuse)}" specular="0.1 0.1 0.1"/>
    {"".join(bodies)}
    <body name="drone" pos="{_fmt((sx, sy, sz))}" euler="0 0 {syaw:.5f}">
      <freejoint name="drone"/>
      <geom name="drone_hull" type="box" size="{_fmt((hx, hy, hz))}" rgba="0.1 0.1 0.12 1" mass="1"/>
      <camera name="front" pos="{CAMERA_OFFSET} 0 0" xyaxes="{camera_axes(pitch)}" fovy="{camera.fovy_deg:.6f}"/>
    </body>
  </worldbody>
</mujoco>"""
