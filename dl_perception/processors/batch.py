"""A batching executor over frame processors: the networks of several processors through one
engine (dl_perception.engine: one upload per frame, preprocessing on the device, measured
precision and memory format per network), then each processor's own results and messages from
the engine's outputs. stack_node is this executor plus the publishers, parameters and
diagnostics of the nodes it hosts.

Per frame, each processor's per-call settings (`forward_arguments()`) go to the engine with the
frame, so a changed parameter takes effect on the frame it was changed for (stack_node does the
same for the nodes it hosts)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..engine import Engine, EngineOptions
from ..core.imaging import DecodedImage, to_rgb8
from . import FrameProcessor, Output


@dataclass
class FrameOutcome:
    """What each processor made of one frame: its messages, or the error it raised."""

    messages: dict[str, list[Output]] = field(default_factory=dict)  # node name -> outputs
    errors: dict[str, Exception] = field(default_factory=dict)  # node name -> error


class BatchExecutor:
    def __init__(self, processors: list[FrameProcessor], options: EngineOptions | None = None):
        names = [p.node_name for p in processors]
        if len(set(names)) != len(names):
            raise ValueError(f"one processor per node, got {names}")
        models = [p.model_name for p in processors]
        if len(set(models)) != len(models):
            raise ValueError(f"one processor per network (the engine runs each once), got {models}")
        self.processors = list(processors)
        self.engine = Engine({p.model_name: p.model for p in self.processors}, options)
        for processor in self.processors:
            processor.passes_execution = False  # the engine's measured plan decides
        self.calibrated = False

    def process(self, image: DecodedImage, header) -> FrameOutcome:
        """One decoded frame (+ its rosmsg header) through every processor; a processor that
        fails is reported in `errors` and the others go on."""
        rgb = to_rgb8(image.pixels, image.encoding)
        arguments = {p.model_name: p.forward_arguments() for p in self.processors}
        if not self.calibrated:
            self.engine.calibrate([rgb], repeats=1)
            self.calibrated = True
        outputs = self.engine.run([rgb], arguments=arguments)[0]
        outcome = FrameOutcome()
        for processor in self.processors:
            processor.infer = lambda _image, given=outputs[processor.model_name]: given
            try:
                outcome.messages[processor.node_name] = processor.process(image, header)
            except Exception as error:  # one processor's fault must not stop the others
                outcome.errors[processor.node_name] = error
        return outcome

    def close(self) -> None:
        self.engine.close()


__all__ = ["BatchExecutor", "FrameOutcome"]
