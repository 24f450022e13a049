"""Headless MuJoCo rendering of RGB and metric depth from the drone's camera, in one pass.

MUJOCO_GL defaults to `egl` (set before mujoco is imported). Creating a GL context can fail
(no libEGL, no usable device) or, with some broken drivers, block; so the first renderer of a
process probes the backend in a child process with a timeout and turns any failure into a
RenderingError that says what to install or set, instead of a crash or a hang.
"""
from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("MUJOCO_GL", "egl")  # also set by the package, for direct imports

import numpy as np  # noqa: E402

PROBE_TIMEOUT_S = 60.0
MAX_RANGE = 100.0  # m; depth beyond is reported as +inf (no return), as the sky is
_probe_result: str | None = None  # "" = backend works; otherwise the error text

_PROBE = """
import mujoco, numpy as np
m = mujoco.MjModel.from_xml_string('<mujoco><visual><global offwidth="8" offheight="8"/></visual>'
    '<worldbody><geom type="sphere" size="1"/></worldbody></mujoco>')
ctx = mujoco.GLContext(8, 8); ctx.make_current()
con = mujoco.MjrContext(m, mujoco.mjtFontScale.mjFONTSCALE_100)
mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, con)
rgb = np.zeros((8, 8, 3), np.uint8)
mujoco.mjr_readPixels(rgb, None, mujoco.MjrRect(0, 0, 8, 8), con)
print("ok")
"""


class RenderingError(OSError):
    """The machine cannot render offscreen (an environment fault, like a missing library)."""


def load_mujoco():
    """Import mujoco; a broken GL backend (MUJOCO_GL naming a missing library) raises at import
    time, which becomes a RenderingError naming the backend."""
    try:
        import mujoco
    except Exception as error:
        raise RenderingError(
            f"importing mujoco with MUJOCO_GL={os.environ.get('MUJOCO_GL')} failed: {error!r}. "
            "Install EGL and Mesa (Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri) or set "
            "MUJOCO_GL=egl") from error
    return mujoco


def probe_backend(timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise RenderingError unless an offscreen GL context works (checked once per process)."""
    global _probe_result
    if _probe_result is None:
        backend = os.environ.get("MUJOCO_GL", "egl")
        try:
            result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True,
                                    text=True, timeout=timeout, env=os.environ.copy())
            if result.returncode == 0 and "ok" in result.stdout:
                _probe_result = ""
            else:
                lines = (result.stderr or result.stdout).strip().splitlines()
                _probe_result = lines[-1] if lines else f"exit status {result.returncode}"
        except subprocess.TimeoutExpired:
            _probe_result = f"creating a GL context did not finish within {timeout:.0f} s"
        if _probe_result:
            _probe_result = (
                f"offscreen rendering with MUJOCO_GL={backend} failed: {_probe_result}. "
                "Install EGL and Mesa (Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri) "
                "or a GPU driver, or set MUJOCO_GL=osmesa (libosmesa6)")
    if _probe_result:
        raise RenderingError(_probe_result)


class Renderer:
    """Renders the model's camera `camera_name` into preallocated RGB (uint8) and depth
    (float32, metres along the optical axis, +inf beyond MAX_RANGE: sky) arrays."""

    def __init__(self, model, width: int, height: int, camera_name: str = "front",
                 fog: bool = False):
        mujoco = load_mujoco()
        probe_backend()
        self._mujoco = mujoco
        self.model = model
        self.width, self.height = width, height
        try:
            self._context = mujoco.GLContext(width, height)
            self._context.make_current()
            self._mjr = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        except Exception as error:  # driver-level failures after a good probe
            raise RenderingError(f"cannot create the renderer: {error}") from error
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._mjr)
        self._mjr.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._fog = fog
        self._scene = self.new_scene()
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera_name)
        if camera_id < 0:
            raise RenderingError(f"the model has no camera '{camera_name}'")
        self._camera.fixedcamid = camera_id
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._rgb_raw = np.empty((height, width, 3), np.uint8)
        self._depth_raw = np.empty((height, width), np.float32)
        self.rgb = np.empty((height, width, 3), np.uint8)
        self.depth = np.empty((height, width), np.float32)
        # reversed-Z float depth buffer -> metric depth: z = d / (buffer + c), as OpenGL's
        # perspective matrix with MuJoCo's near and far planes
        extent = model.stat.extent
        near = np.float32(model.vis.map.znear * extent)
        far = np.float32(model.vis.map.zfar * extent)
        # (float32 keeps about 1e-6 relative error over 0.05-200 m with a float depth buffer)
        c = -(far + near) / (far - near)
        d = -(np.float32(2) * far * near) / (far - near)
        self._c = np.float32(np.float32(-0.5) * c - np.float32(0.5))
        self._d = np.float32(np.float32(-0.5) * d)
        self._sky = np.empty((height, width), bool)

    def new_scene(self):
        """A scene (geometry list) to fill with `update_scene` and draw with `draw`; one per
        frame in flight when a render thread draws while the caller updates the next."""
        mujoco = self._mujoco
        scene = mujoco.MjvScene(self.model, maxgeom=max(1000, 2 * self.model.ngeom))
        scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = True
        scene.flags[mujoco.mjtRndFlag.mjRND_FOG] = self._fog
        return scene

    def update_scene(self, data, scene) -> None:
        """Copy what the camera sees in `data` into `scene` (CPU only: any thread)."""
        self._mujoco.mj_camlight(self.model, data)
        self._mujoco.mjv_updateScene(self.model, data, self._option, None, self._camera,
                                     self._mujoco.mjtCatBit.mjCAT_ALL, scene)

    def render_raw(self, data) -> None:
        """The engine's part alone: scene update, render, read back RGB and depth buffers."""
        self.update_scene(data, self._scene)
        self.draw(self._scene, self._rgb_raw, self._depth_raw)

    def render(self, data) -> tuple[np.ndarray, np.ndarray]:
        """(rgb HxWx3 uint8, depth HxW float32 metres); the arrays are reused between calls."""
        self.render_raw(data)
        self.convert(self._rgb_raw, self._depth_raw, self.rgb, self.depth)
        return self.rgb, self.depth

    def draw(self, scene, rgb_raw: np.ndarray, depth_raw: np.ndarray) -> None:
        """Render `scene` and read back the GL buffers (bottom-up rows, depth-buffer values)
        into `rgb_raw` and `depth_raw`; on the thread that created this renderer, which holds
        the GL context."""
        self._context.make_current()  # several renderers may share a thread
        self._mujoco.mjr_render(self._rect, scene, self._mjr)
        self._mujoco.mjr_readPixels(rgb_raw, depth_raw, self._rect, self._mjr)

    def convert(self, rgb_raw: np.ndarray, depth_raw: np.ndarray, rgb: np.ndarray,
                depth: np.ndarray) -> None:
        """GL buffers from `draw` -> top-down `rgb` and metric `depth` (any one thread: it
        reuses a mask)."""
        np.copyto(rgb, rgb_raw[::-1])  # GL rows run bottom-up
        np.add(depth_raw[::-1], self._c, out=depth)
        np.divide(self._d, depth, out=depth)
        np.greater(depth, MAX_RANGE, out=self._sky)  # the skybox lies beyond
        depth[self._sky] = np.inf  # no return (REP-118: +inf)

    def close(self) -> None:
        if getattr(self, "_context", None) is not None:
            self._mjr.free()
            self._context.free()
            self._context = None
