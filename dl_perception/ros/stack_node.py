"""stack_node: one camera subscription, the networks of several perception nodes through one
engine (dl_perception.engine: one upload per frame, preprocessing on the device, measured
precision and memory format per network).

The nodes it hosts (`nodes` parameter) are the usual ones, created without a camera subscription:
they keep their parameters (their own sections of the parameters file), publishers, topics and
/diagnostics, and publish from the engine's outputs exactly as they would from their own
forward pass. The first frame calibrates the engine (logged), so it is processed late.
"""
from __future__ import annotations

import time

from .. import registry
from ..engine import Engine, EngineOptions
from ..core.imaging import DecodedImage, to_rgb8
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
        self.engine = Engine({node.model_name: node.model for node in self.hosted_nodes},
                             EngineOptions(device=self.params["device"],
                                           precision=self.params["precision"],
                                           channels_last=self.params["channels_last"],
                                           batch_size=1, workers=1))
        self.calibrated = False
        self._outputs: dict = {}
        for node in self.hosted_nodes:
            node.take_outputs_from(lambda image, name=node.model_name: self._outputs[name])
        self.get_logger().info(
            f"hosting {', '.join(n.get_name() for n in self.hosted_nodes)} on {self.engine.device}")

    def process(self, image: DecodedImage, header) -> None:
        rgb = to_rgb8(image.pixels, image.encoding)
        # this frame's parameters go to the engine with it
        arguments = {node.model_name: node.processor.forward_arguments()
                     for node in self.hosted_nodes}
        if not self.calibrated:
            self.engine.calibrate([rgb], repeats=1)
            self.calibrated = True
            for name, plan in self.engine.plans.items():
                self.get_logger().info(f"engine: {name} {plan.precision}, channels_last "
                                       f"{plan.channels_last}, deviation {plan.deviation:.1e}")
        started = time.perf_counter()
        self._outputs = self.engine.run([rgb], arguments=arguments)[0]
        inference = time.perf_counter() - started
        for node in self.hosted_nodes:
            node_started = time.perf_counter()
            node.stats.frame_received()
            try:
                node.process(image, header)
            except Exception as error:  # one node's fault must not stop the others
                node.stats.drop("error")
                node.get_logger().error(f"frame failed: {error!r}", throttle_duration_sec=5.0)
                continue
            node.stats.frame_done(inference + time.perf_counter() - node_started)

    def diagnostic_values(self) -> dict[str, str]:
        return {"hosted": ",".join(n.get_name() for n in self.hosted_nodes),
                **{f"plan_{name}": f"{plan.precision}{' channels_last' if plan.channels_last else ''}"
                   for name, plan in self.engine.plans.items()}}

