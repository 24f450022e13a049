"""`dl-perception bench sim`: how fast sim_node publishes 320x240 RGB + depth frames, against
the engine's bare render rate (scene update, render, read back both buffers) measured in the
same run on the same world, in alternating blocks so that load from other processes hits both
alike. The drone turns in place, so every frame shows a new view. sim_node runs with
real_time_factor 0 (as fast as possible) in this process; a subscriber in another process (as
in a deployment) matches both image topics, so the middleware really delivers every frame, and
reports how many arrived and the CPU it spent during the node's blocks. It is a lean consumer
(a polling loop taking serialized messages: rclpy's executor would cost it about 0.4 ms per
message) at the lowest CPU priority: its cost is the consumer's, not the simulator's, and on a
2-core machine it would otherwise take the cores the renderer needs."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from .. import LARGE_DATA_TRANSPORTS

SUBSCRIBER = """
import sys, threading, time, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
rclpy.init(); node = rclpy.create_node("bench_sim_subscriber")
subscriptions = {kind: node.create_subscription(Image, topic, lambda _msg: None,
                                                qos_profile_sensor_data, raw=True)
                 for kind, topic in (("rgb", "/camera/image_raw"),
                                     ("depth", "/camera/depth/image_raw"))}
counts = {"rgb": 0, "depth": 0}
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
while not stop.is_set():
    taken = 0
    for kind, subscription in subscriptions.items():
        while subscription.handle.take_message(Image, True) is not None:
            counts[kind] += 1
            taken += 1
    if taken and counts["rgb"] + counts["depth"] == taken:
        print("ready", flush=True)
    if not taken:
        time.sleep(0.0005)
print(counts["rgb"], counts["depth"], flush=True)
"""
YAW_RATE = 0.6  # rad/s, turning in place


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_sim(frames: int, world_seed: int = 0) -> list[dict]:
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", LARGE_DATA_TRANSPORTS)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from ...sim.simulator import Simulator
    from ..sim_node import SimNode

    if frames < 10:
        raise ValueError("bench sim needs at least 10 frames")
    sim = Simulator(world_seed)
    renderer = sim.renderer
    renderer.render_raw(sim.data)  # warm-up (texture upload)

    def bare_render(count: int) -> float:
        elapsed = 0.0
        for _ in range(count):
            sim.set_command(0.0, 0.0, 0.0, YAW_RATE)
            for _ in range(3):
                sim.step()
            started = time.perf_counter()
            renderer.render_raw(sim.data)
            elapsed += time.perf_counter() - started
        return elapsed

    rclpy.init(args=["bench_sim"])
    subscriber = subprocess.Popen([sys.executable, "-c", SUBSCRIBER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
    try:
        node = SimNode(parameter_overrides=[
            Parameter("world_seed", value=world_seed), Parameter("real_time_factor", value=0.0),
            Parameter("command_timeout", value=60.0)])
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        node.sim.set_command(0.0, 0.0, 0.0, YAW_RATE)
        deadline = time.monotonic() + 90.0
        import selectors
        selector = selectors.DefaultSelector()
        selector.register(subscriber.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and not selector.select(timeout=0):
            executor.spin_once(timeout_sec=0.01)  # until the subscriber has its first frame
        if subscriber.stdout.readline().strip() != "ready":
            raise RuntimeError("the subscriber process received no frames within 90 s")
        os.setpriority(os.PRIO_PROCESS, subscriber.pid, 19)  # started: now the lowest priority

        subscriber_cpu = [0.0]

        def node_publish(count: int) -> tuple[int, float]:
            """(frames published, seconds): at least `count` frames (free run publishes a few
            frames per executor callback)."""
            node.sim.set_command(0.0, 0.0, 0.0, YAW_RATE)
            first = node.frames_published
            cpu_before = _cpu_seconds(subscriber.pid)
            started = time.perf_counter()
            while node.frames_published < first + count:
                executor.spin_once(timeout_sec=0.01)
            seconds = time.perf_counter() - started
            cpu_after = _cpu_seconds(subscriber.pid)
            if cpu_before is not None and cpu_after is not None:
                subscriber_cpu[0] += cpu_after - cpu_before
            return node.frames_published - first, seconds

        block = max(5, frames // 10)
        render_s = node_s = 0.0
        node_frames = 0
        for _ in range(frames // block):
            render_s += bare_render(block)
            published_in_block, seconds = node_publish(block)
            node_frames += published_in_block
            node_s += seconds
        done = block * (frames // block)
        published = node.frames_published
        node.destroy_node()
        subscriber.stdin.close()
        received = subscriber.stdout.readline().split()
        subscriber.wait(timeout=30)
        rows = [{"path": "engine render (RGB + depth readback)", "frames": done,
                 "fps": done / render_s, "width": sim.camera.width, "height": sim.camera.height},
                {"path": "sim_node publish (rgb8 + 32FC1 + camera_info)", "frames": node_frames,
                 "fps": node_frames / node_s,
                 "ratio_to_render": (node_frames / node_s) / (done / render_s),
                 "published_total": published,
                 "received_rgb": int(received[0]) if received else 0,
                 "received_depth": int(received[1]) if len(received) > 1 else 0,
                 "subscriber_cpu_ms_per_frame": 1e3 * subscriber_cpu[0] / node_frames}]
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
        sim.close()
        rclpy.try_shutdown()
    return rows
