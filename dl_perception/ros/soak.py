"""`dl-perception soak`: a camera node under a stream of hostile frames for minutes, its memory
sampled, to show that nothing accumulates and that every frame is processed or dropped by reason.

Two instances of the node run in this process, one on the raw and one on the compressed camera
transport; a publisher sends both a mix of sound frames (random 320x240 scenes, every
`sound_every`-th frame) and hostile ones (dl_perception.bench.hostile: random headers and payloads,
damaged JPEG/PNG, stamps from the future, the past and out of range) over DDS at `rate` Hz.
The resident set size of the process is sampled every `sample_every` seconds; the report gives
it after the warm-up, at the end, its peak, and the slope of a line fitted after the warm-up.
"""
from __future__ import annotations

import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.logging import LoggingSeverity
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from ..bench.hostile import STAMP_KINDS, pick, random_compressed_image, random_raw_image, stamp
from ..core.imaging import numpy_to_compressed_fields, numpy_to_image_fields
from .nodes import node_class


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def _frames(rng: np.random.Generator, index: int, sound_every: int, now_ns: int):
    """(raw Image, CompressedImage) for one tick: sound ones every `sound_every`-th tick."""
    raw, compressed = Image(), CompressedImage()
    if index % sound_every == 0:
        scene = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        for key, value in numpy_to_image_fields(scene, "rgb8").items():
            setattr(raw, key, value)
        fields = numpy_to_compressed_fields(scene, "rgb8", pick(rng, ["jpeg", "png"]))
        compressed.format, compressed.data = fields["format"], fields["data"]
        kinds = ("now", "now")
    else:
        fake = random_raw_image(rng)
        raw = Image(encoding=fake.encoding, height=fake.height, width=fake.width,
                    step=fake.step, is_bigendian=fake.is_bigendian, data=fake.data)
        fake = random_compressed_image(rng)
        compressed = CompressedImage(format=fake.format, data=fake.data)
        kinds = (pick(rng, STAMP_KINDS), pick(rng, STAMP_KINDS))
    for msg, kind in zip((raw, compressed), kinds):
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp(kind, rng, now_ns)
        msg.header.frame_id = "camera_optical_frame"
    return raw, compressed


def run_soak(node_name: str = "dronet_node", duration: float = 180.0, rate: float = 30.0,
             warmup: float = 20.0, sample_every: float = 5.0, sound_every: int = 3,
             seed: int = 0, on_sample=None) -> dict:
    cls = node_class(node_name)
    rclpy.init()
    try:
        nodes = [cls(node_name, parameter_overrides=[
            Parameter("device", value="cpu"), Parameter("image_transport", value=transport),
            Parameter("qos.depth", value=5)], namespace=f"/soak_{transport}")
            for transport in ("raw", "compressed")]
        for node in nodes:  # thousands of drop warnings say nothing the counts do not
            node.get_logger().set_level(LoggingSeverity.ERROR)
        camera = rclpy.create_node("soak_camera")
        raw_pub = camera.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        compressed_pub = camera.create_publisher(CompressedImage, "/camera/image_raw/compressed",
                                                 qos_profile_sensor_data)
        executor = SingleThreadedExecutor()
        for node in nodes + [camera]:
            executor.add_node(node)
        rng = np.random.default_rng(seed)
        sent = 0
        samples: list[tuple[float, float]] = []  # (seconds since start, RSS MiB)
        start = time.monotonic()
        next_frame = next_sample = start
        while (now := time.monotonic()) - start < duration:
            if now >= next_frame:
                raw, compressed = _frames(rng, sent, sound_every,
                                          camera.get_clock().now().nanoseconds)
                raw_pub.publish(raw)
                compressed_pub.publish(compressed)
                sent += 1
                next_frame += 1.0 / rate
            if now >= next_sample:
                samples.append((now - start, resident_mib()))
                if on_sample:
                    on_sample(*samples[-1])
                next_sample += sample_every
            executor.spin_once(timeout_sec=max(0.0, min(next_frame, next_sample)
                                               - time.monotonic()))
        settled = [(t, rss) for t, rss in samples if t >= warmup] or samples
        times, rss = np.array([t for t, _ in settled]), np.array([r for _, r in settled])
        slope = float(np.polyfit(times / 60.0, rss, 1)[0]) if len(settled) > 2 else 0.0
        report = {
            "node": node_name, "duration_s": duration, "rate_hz": rate, "warmup_s": warmup,
            "frames_sent_per_transport": sent,
            "rss_mib_after_warmup": float(rss[0]), "rss_mib_end": float(rss[-1]),
            "rss_mib_peak": float(max(r for _, r in samples)),
            "rss_mib_per_min_after_warmup": slope,
            "samples": samples,
            "transports": {},
        }
        for transport, node in zip(("raw", "compressed"), nodes):
            summary = node.stats.summary()
            report["transports"][transport] = {
                "received": summary["frames_received"], "processed": summary["frames_processed"],
                "drops": summary["drops"], "latency_ms_p50": summary["latency_ms"]["p50"]}
        for node in nodes + [camera]:
            node.destroy_node()
        return report
    finally:
        rclpy.try_shutdown()
