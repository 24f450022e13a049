"""dronet_node's per-frame work: steering angle and collision probability as std_msgs/Float32."""
from __future__ import annotations

from ..core import rosmsg
from . import FrameProcessor, Output

STEERING_TOPIC = "/dl_perception/dronet/steering_angle"
COLLISION_TOPIC = "/dl_perception/dronet/collision_probability"


class DroNetProcessor(FrameProcessor):
    node_name = "dronet_node"
    model_name = "dronet"
    outputs = {STEERING_TOPIC: rosmsg.FLOAT32, COLLISION_TOPIC: rosmsg.FLOAT32}

    def process(self, image, header) -> list[Output]:
        out = self.infer(image)
        return [Output(STEERING_TOPIC, rosmsg.float32(out["steering"][0])),
                Output(COLLISION_TOPIC, rosmsg.float32(out["collision_probability"][0]))]


PROCESSOR = DroNetProcessor
