"""Rendering on a thread of its own, so that the caller can step the physics and publish while
the GL driver rasterises: mujoco releases the GIL inside mjr_render and mjr_readPixels, and with
Mesa's llvmpipe a 320x240 frame keeps only about 1.25 of 2 cores busy.

The thread creates the renderer, so it owns the GL context, and does exactly the engine's part
(render, read back): the render is the bottleneck, so everything else happens on the caller's
thread. Frames go through two slots, each with its own scene and buffers: `submit(data)` fills
the next slot's scene from `data` on the caller's thread (a copy: the caller may step `data` at
once) and queues it with the caller's `tag` (a stamp, say); `result()` waits for the oldest
submitted frame, converts its buffers and returns (rgb, depth, tag), the arrays valid until
that slot is submitted again. So one frame can rasterise while
the previous one is converted and published."""
from __future__ import annotations

import queue
import sys
import threading
from collections import deque

import numpy as np

from .renderer import Renderer, RenderingError

SLOTS = 2
FRAME_TIMEOUT_S = 60.0  # a frame that takes longer means a hung driver: an error, not a hang
# The thread needs the GIL between its GL calls; with Python's default 5 ms switch interval it
# waits out the caller's Python work. sim_node's publish rate / bare render rate, interval A vs
# B in alternating blocks of one `bench sim` run (2000-3000 frames), three runs each:
# 5 ms 0.84 0.88 0.83 vs 0.2 ms 0.85 0.93 0.94; 0.2 ms 0.82 0.84 0.82 vs 0.05 ms 0.83 0.87 0.89;
# 0.05 ms 0.84 0.82 0.84 vs 0.01 ms 0.88 0.86 0.84; 0.2 ms 0.86 0.86 0.83 vs 0.01 ms 0.86 0.87
# 0.89. Only a thread waiting for the GIL forces switches, so when the render thread is the only
# other one the short interval costs little.
SWITCH_INTERVAL_S = 1e-5


class _Slot:
    """One frame in flight: its scene and tag, the GL buffers read back, the converted images."""

    def __init__(self, scene, width: int, height: int):
        self.scene = scene
        self.tag = None
        self.rgb_raw = np.empty((height, width, 3), np.uint8)
        self.depth_raw = np.empty((height, width), np.float32)
        self.rgb = np.empty((height, width, 3), np.uint8)
        self.depth = np.empty((height, width), np.float32)


class RenderThread:
    def __init__(self, model, width: int, height: int, camera_name: str = "front",
                 fog: bool = False):
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        started: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, args=(model, width, height, camera_name, fog, started),
            name="sim-render", daemon=True)
        self._thread.start()
        outcome = started.get()  # Renderer() probes the backend with a timeout: no hang here
        if isinstance(outcome, BaseException):
            raise outcome
        self.renderer: Renderer = outcome
        self._slots = [_Slot(self.renderer.new_scene(), width, height) for _ in range(SLOTS)]
        self._next = 0
        self._in_flight: deque[int] = deque()
        self._hung: RenderingError | None = None  # a frame timed out: results no longer match

    def _run(self, model, width, height, camera_name, fog, started) -> None:
        try:
            renderer = Renderer(model, width, height, camera_name, fog)
        except BaseException as error:
            started.put(error)
            return
        started.put(renderer)
        try:
            while (job := self._jobs.get()) is not None:
                try:
                    renderer.draw(job.scene, job.rgb_raw, job.depth_raw)
                    self._done.put(None)
                except Exception as error:
                    self._done.put(RenderingError(f"rendering a frame failed: {error}"))
        finally:
            renderer.close()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def submit(self, data, tag=None) -> None:
        """Queue a frame of `data`'s current state, returned by `result()` with `tag` (at most
        two may be in flight)."""
        if len(self._in_flight) == SLOTS:
            raise RuntimeError("both render slots are in flight: take a result() first")
        if not self._thread.is_alive():
            raise RenderingError("the render thread has stopped")
        if self._hung is not None:
            raise self._hung
        slot = self._slots[self._next]
        self.renderer.update_scene(data, slot.scene)
        slot.tag = tag
        self._jobs.put(slot)
        self._in_flight.append(self._next)
        self._next = (self._next + 1) % SLOTS

    def result(self) -> tuple[np.ndarray, np.ndarray, object]:
        """(rgb HxWx3 uint8, depth HxW float32 metres, tag) of the oldest frame in flight."""
        if self._hung is not None:
            raise self._hung
        if not self._in_flight:
            raise RuntimeError("no frame in flight: submit() one first")
        try:
            outcome = self._done.get(timeout=FRAME_TIMEOUT_S)
        except queue.Empty:
            self._hung = RenderingError(
                f"the renderer did not finish a frame within {FRAME_TIMEOUT_S:g} s")
            raise self._hung from None
        slot = self._slots[self._in_flight.popleft()]
        if outcome is not None:
            raise outcome
        self.renderer.convert(slot.rgb_raw, slot.depth_raw, slot.rgb, slot.depth)
        return slot.rgb, slot.depth, slot.tag

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(timeout=0.0 if self._hung else FRAME_TIMEOUT_S)
