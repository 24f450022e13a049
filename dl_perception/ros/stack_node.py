"""stack_node: one camera subscription, the networks of several perception nodes through one
engine (dl_perception.engine: one upload per frame, preprocessing on the device, measured
precision and memory format per network).

The nodes it hosts (`nodes` parameter) are the usual ones, created without a camera subscription:
they keep their parameters (their own sections of the parameters file), publishers, topics and
/diagnostics; their processors run as one processors/batch.py BatchExecutor (each frame's
parameters go to the engine with it), and each node publishes what its processor made of the
engine's outputs, exactly as it would from its own forward pass. The first frame calibrates the engine (logged), so it is processed late.
"""
from __future__ import annotations

import time

from .. import registry
from ..core import rosmsg
from ..core.imaging import DecodedImage
from ..engine import EngineOptions
from ..processors.batch import BatchExecutor
from .nodes import node_class
from .node_base import FrameNode, ProcessorNode
from .params import Param

DEFAULT_HOSTED = registry.hosted_defaults()


class StackNode(FrameNode):
    extra_params = [
        Param("nodes", DEFAULT_HOSTED, "perception nodes whose networks run in this node's "
                                       "engine (they publish as usual)", read_only=True),
        Param("precision", "auto", "auto (measured per network), fp32, or reduced (bf16 on CPU, "
                                   "fp16 on CUDA)", choices=("auto", "fp32", "reduced"),
              read_only=True),
        Param("channels_last", "auto", "auto (measured per network), on or off",
              choices=("auto", "on", "off"), read_only=True),
    ]

    def __init__(self, node_name: str = "stack_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self.hosted_nodes: list[ProcessorNode] = []
        try:
            for name in self.params["nodes"]:
                cls = node_class(name)
                if not issubclass(cls, ProcessorNode):
                    raise ValueError(f"stack_node can host network nodes only, not '{name}'")
                self.hosted_nodes.append(cls(name, hosted=True))
        except Exception:
            for hosted in self.hosted_nodes:
                hosted.destroy_node()
            raise
        self.batch = BatchExecutor(  # not `executor`: rclpy.Node has an attribute of that name
            [node.processor for node in self.hosted_nodes],
            EngineOptions(device=self.params["device"], precision=self.params["precision"],
                          channels_last=self.params["channels_last"], batch_size=1, workers=1))
        self.engine = self.batch.engine
        self.get_logger().info(
            f"hosting {', '.join(n.get_name() for n in self.hosted_nodes)} on {self.engine.device}")

    def process(self, image: DecodedImage, header) -> None:
        calibrating = not self.batch.calibrated
        started = time.perf_counter()
        outcome = self.batch.process(
            image, rosmsg.header(rosmsg.stamp_ns(header.stamp), header.frame_id))
        seconds = time.perf_counter() - started
        if calibrating:
            for name, plan in self.engine.plans.items():
                self.get_logger().info(f"engine: {name} {plan.precision}, channels_last "
                                       f"{plan.channels_last}, deviation {plan.deviation:.1e}")
        for node in self.hosted_nodes:
            node.stats.frame_received()
            error = outcome.errors.get(node.processor.node_name)
            if error is not None:  # one node's fault must not stop the others
                node.stats.drop("error")
                node.get_logger().error(f"frame failed: {error!r}", throttle_duration_sec=5.0)
                continue
            node.publish_outputs(outcome.messages[node.processor.node_name])
            node.stats.frame_done(seconds)

    def diagnostic_values(self) -> dict[str, str]:
        return {"hosted": ",".join(n.get_name() for n in self.hosted_nodes),
                **{f"plan_{name}": f"{plan.precision}{' channels_last' if plan.channels_last else ''}"
                   for name, plan in self.engine.plans.items()}}

