"""dronet_node: camera frames -> DroNet steering angle and collision probability."""
from __future__ import annotations

import torch
from std_msgs.msg import Float32

from .node_base import ModelNode, node_main


class DroNetNode(ModelNode):
    model_name = "dronet"

    def __init__(self, node_name: str = "dronet_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self.steering_pub = self.create_publisher(
            Float32, "/dl_perception/dronet/steering_angle", 10)
        self.collision_pub = self.create_publisher(
            Float32, "/dl_perception/dronet/collision_probability", 10)

    def process(self, image, header) -> None:
        batch = self.model.preprocess(image).to(self.device, non_blocking=True)
        with torch.inference_mode():
            out = self.model(batch)
        self.publish(self.steering_pub, Float32(data=float(out["steering"][0])))
        self.publish(self.collision_pub, Float32(data=float(out["collision_probability"][0])))


main = node_main(DroNetNode, "dronet_node")
