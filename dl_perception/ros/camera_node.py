"""camera_node: a camera source for running the stack without hardware. Publishes
camera/image_raw, camera/image_raw/compressed (JPEG, encoded only while someone subscribes, as
image_transport does) and camera/camera_info from the synthetic corridor or from a folder of
images, at a fixed rate; reliable by default (REP-2003), so reliable and best-effort subscribers
both receive frames."""
from __future__ import annotations

import glob
import os

import cv2
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..sim.synthetic import SyntheticCorridor
from .messages import camera_info_msg, compressed_msg, header, image_msg
from .node_base import sensor_qos
from .params import Param, ParameterSet

IMAGE_TOPIC = "camera/image_raw"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".bmp")
PARAMS = [
    Param("source", "synthetic", "'synthetic' or a folder of images (sorted by name)",
          read_only=True),
    Param("rate_hz", 10.0, "frames per second", low=0.01, high=1000.0, read_only=True),
    Param("width", 320, "synthetic image width", low=16, high=8192, read_only=True),
    Param("height", 240, "synthetic image height", low=16, high=8192, read_only=True),
    Param("encoding", "rgb8", "published encoding", choices=("rgb8", "bgr8", "mono8"),
          read_only=True),
    Param("qos.reliability", "reliable", "reliability of the image publishers (reliable "
          "serves reliable and best-effort subscribers)", choices=("reliable", "best_effort"),
          read_only=True),
    Param("qos.depth", 5, "image publishers' queue depth (keep last)", low=1, high=1000,
          read_only=True),
    Param("jpeg_quality", 90, "quality of camera/image_raw/compressed", low=1, high=100,
          read_only=True),
    Param("loop", True, "restart a folder at its end", read_only=True),
    Param("frame_id", "camera_optical_frame", "frame of the published images", read_only=True),
]


class CameraNode(Node):
    @classmethod
    def declared_params(cls) -> list[Param]:
        return PARAMS

    def __init__(self, node_name: str = "camera_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self.params = ParameterSet(self, PARAMS)
        source = self.params["source"]
        if source == "synthetic":
            self.corridor = SyntheticCorridor(self.params["width"], self.params["height"])
            self.files = []
        else:
            self.corridor = None
            self.files = sorted(f for f in glob.glob(os.path.join(os.path.expanduser(source), "*"))
                                if f.lower().endswith(IMAGE_EXTENSIONS))
            if not self.files:
                raise ValueError(f"camera_node: no images in '{source}'")
        qos = sensor_qos(self.params["qos.reliability"], self.params["qos.depth"])
        self.image_pub = self.create_publisher(Image, IMAGE_TOPIC, qos)
        # image_transport's naming: the compressed topic follows the base topic's remapping
        self.compressed_pub = self.create_publisher(
            CompressedImage, self.resolve_topic_name(IMAGE_TOPIC) + "/compressed", qos)
        self.info_pub = self.create_publisher(CameraInfo, "camera/camera_info", qos)
        self.index = 0
        self.frames_published = 0
        self.create_timer(1.0 / self.params["rate_hz"], self._on_tick)

    def next_frame(self):
        """(pixels, encoding) of the next frame, or None at the end of a non-looping folder."""
        if self.corridor is not None:
            rgb = self.corridor.render(self.index / self.params["rate_hz"])
            self.index += 1
            return rgb, "rgb8"
        if self.index >= len(self.files):
            if not self.params["loop"]:
                return None
            self.index = 0
        path = self.files[self.index]
        self.index += 1
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            self.get_logger().warning(f"cannot read {path}; skipped")
            return self.next_frame()
        return bgr, "bgr8"

    def _on_tick(self) -> None:
        if not self.context.ok():  # shutting down: the publishers are gone
            return
        frame = self.next_frame()
        if frame is None:
            return
        pixels, encoding = frame
        wanted = self.params["encoding"]
        if wanted != encoding:
            code = {("rgb8", "bgr8"): cv2.COLOR_RGB2BGR, ("bgr8", "rgb8"): cv2.COLOR_BGR2RGB,
                    ("rgb8", "mono8"): cv2.COLOR_RGB2GRAY,
                    ("bgr8", "mono8"): cv2.COLOR_BGR2GRAY}[(encoding, wanted)]
            pixels = cv2.cvtColor(pixels, code)
        msg_header = header(self.get_clock().now().to_msg(), self.params["frame_id"])
        height, width = pixels.shape[:2]
        try:
            self.image_pub.publish(image_msg(pixels, wanted, msg_header))
            if self.compressed_pub.get_subscription_count():
                self.compressed_pub.publish(compressed_msg(pixels, wanted, msg_header,
                                                           quality=self.params["jpeg_quality"]))
            f = self.corridor.focal if self.corridor else width / 2  # folders: assume 90 deg HFOV
            self.info_pub.publish(camera_info_msg(width, height, f, f, width / 2, height / 2,
                                                  msg_header))
            self.frames_published += 1
        except Exception as error:
            self.get_logger().warning(f"publish failed: {error}", throttle_duration_sec=2.0)

