"""What every perception node shares: validated parameters, the camera subscription (raw or
compressed) with configurable QoS, stale-frame dropping, per-frame fault isolation, /diagnostics,
device selection and model loading, clean shutdown."""
from __future__ import annotations

import sys
import time
import traceback

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from .. import models
from ..core import rosmsg
from ..core.checkpoint import CheckpointError
from ..core.device import describe, select_device
from ..core.imaging import DEFAULT_MAX_PIXELS, DecodedImage, ImageDecodeError, decode
from ..core.log_throttle import MessageThrottle
from ..core.paths import resolve_weights
from ..processors import TF_TOPICS
from ..core.stats import FrameStats
from .signals import mark_running, stop_requested
from .messages import message_class, stamp_to_seconds
from .params import Param, ParameterSet
from .spinning import spin_until_stopped
from .tf import TF_QOS


def _device_problem(value) -> str | None:
    try:
        select_device(str(value))
    except ValueError as error:
        return str(error)
    return None


def common_params() -> list[Param]:
    return [
        Param("device", "auto", "compute device: auto (GPU when present), cpu, cuda or cuda:N",
              read_only=True, validator=_device_problem),
        Param("weights", "", "checkpoint path; empty = the checkpoint the project ships",
              read_only=True),
        Param("image_transport", "raw", "subscribe to raw Image or CompressedImage",
              choices=("raw", "compressed"), read_only=True),
        Param("qos.reliability", "best_effort", "camera subscription reliability",
              choices=("best_effort", "reliable"), read_only=True),
        Param("qos.depth", 1, "camera subscription queue depth (keep last)", low=1, high=1000,
              read_only=True),
        Param("max_frame_age", 0.5, "drop frames whose stamp is older than this (s); 0 disables",
              low=0.0, high=3600.0),
        Param("max_future", 1.0, "drop frames stamped more than this (s) ahead of the node's "
              "clock, as 'future'; 0 disables (their latency is never counted)",
              low=0.0, high=3600.0),
        Param("max_pixels", DEFAULT_MAX_PIXELS, "drop frames with more pixels (read from the "
              "header, before decoding) as 'too_large'", low=1, high=1 << 31),
        Param("diagnostics_period", 1.0, "seconds between /diagnostics messages", low=0.05,
              high=3600.0, read_only=True),
    ]


def sensor_qos(reliability: str, depth: int) -> QoSProfile:
    profile = QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable"
        else ReliabilityPolicy.BEST_EFFORT,
        durability=qos_profile_sensor_data.durability)
    return profile


def relative(topic: str) -> str:
    """A topic name relative to the node's namespace (docs/interfaces.md names topics from the
    root: the same names when no namespace is set)."""
    return topic.lstrip("/")


def undeclared_overrides(node: Node) -> list[str]:
    """Parameters given to `node` (parameters file, -p) that it does not declare: ROS ignores
    them silently, so they are usually a typo or a parameter in the wrong node's section."""
    return sorted(name for name in node._parameter_overrides if not node.has_parameter(name))


def warn_undeclared_overrides(node: Node) -> None:
    unknown = undeclared_overrides(node)
    if unknown:
        node.get_logger().warning(
            f"ignoring parameters this node does not declare: {', '.join(unknown)} "
            "(check the node's section of the parameters file)")


class FrameNode(Node):
    """A node consuming camera frames. Subclasses set `extra_params` and implement
    `process(image, header)`; raising ImageDecodeError there counts a drop under its reason."""

    extra_params: list[Param] = []
    image_topic = "camera/image_raw"
    subscribes_camera = True  # False: the subclass subscribes to its own inputs

    @classmethod
    def declared_params(cls) -> list[Param]:
        return common_params() + cls.extra_params

    def __init__(self, node_name: str, hosted: bool = False, **kwargs):
        """`hosted`: run inside a stack_node, which subscribes to the camera and hands frames
        to `process` (the node keeps its parameters, publishers and diagnostics)."""
        super().__init__(node_name, **kwargs)
        self.hosted = hosted
        self.params = ParameterSet(self, self.declared_params())
        self.stats = FrameStats()
        self.device = select_device(self.params["device"])
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._last_drops = 0
        self.create_timer(self.params["diagnostics_period"], self._publish_diagnostics)
        qos = sensor_qos(self.params["qos.reliability"], self.params["qos.depth"])
        if not self.subscribes_camera or hosted:
            pass
        elif self.params["image_transport"] == "compressed":
            # image_transport's rule: the compressed topic follows the base topic's remapping
            base = self.resolve_topic_name(self.image_topic)
            self.create_subscription(CompressedImage, base + "/compressed", self._on_frame, qos)
        else:
            self.create_subscription(Image, self.image_topic, self._on_frame, qos)

    # --- per frame --------------------------------------------------------------------------
    def _on_frame(self, msg, info) -> None:
        started = time.perf_counter()
        self.stats.frame_received(info.get("publisher_gid", {}).get("data"),
                                  info.get("publication_sequence_number"))
        stamp = msg.header.stamp
        if stamp.sec < 0 or not 0 <= stamp.nanosec < 1_000_000_000:
            self.stats.drop("invalid_stamp")
            self.get_logger().warning(f"dropped frame: invalid stamp {stamp.sec} s "
                                      f"{stamp.nanosec} ns", throttle_duration_sec=2.0)
            return
        stamp = stamp_to_seconds(stamp)
        now = self.get_clock().now().nanoseconds * 1e-9
        # a zero stamp (unstamped) or clock (sim time before /clock) says nothing about age
        age = now - stamp if stamp > 0 and now > 0 else None
        max_age, max_future = self.params["max_frame_age"], self.params["max_future"]
        if age is not None and max_age > 0 and age > max_age:
            self.stats.drop("stale")
            return
        if age is not None and max_future > 0 and -age > max_future:
            self.stats.drop("future")
            self.get_logger().warning(f"dropped frame stamped {-age:.3f} s ahead of the clock",
                                      throttle_duration_sec=2.0)
            return
        try:
            image = decode(msg, self.params["max_pixels"])
            self.process(image, msg.header)
        except ImageDecodeError as error:
            self.stats.drop(error.reason)
            self.get_logger().warning(f"dropped frame: {error}", throttle_duration_sec=2.0)
            return
        except Exception as error:  # one bad frame must never stop the node
            self.stats.drop("error")
            self.get_logger().error(f"frame failed: {error!r}\n{traceback.format_exc()}",
                                    throttle_duration_sec=5.0)
            return
        processing = time.perf_counter() - started
        # stamp -> outputs published, on the node's clock (sim time included); only from stamps
        # not ahead of the clock beyond the tolerance, so a bad stamp cannot skew the statistics
        valid = age is not None and age >= -max_future
        latency = age + processing if valid else None
        self.stats.frame_done(processing, latency)

    def process(self, image: DecodedImage, header) -> None:
        raise NotImplementedError

    def publish(self, publisher, msg) -> None:
        """Publish without letting a transient middleware error escape the callback."""
        try:
            publisher.publish(msg)
        except Exception as error:  # rclpy raises RCLError when the DDS queue is saturated
            self.stats.drop("publish_error")
            self.get_logger().warning(f"publish failed: {error}", throttle_duration_sec=2.0)

    # --- diagnostics ------------------------------------------------------------------------
    def diagnostic_values(self) -> dict[str, str]:
        """Extra key/values a subclass reports."""
        return {}

    def _publish_diagnostics(self) -> None:
        summary = self.stats.summary()
        new_drops = summary["drops_total"] - self._last_drops
        self._last_drops = summary["drops_total"]
        if summary["frames_received"] == 0:
            level, message = DiagnosticStatus.WARN, "no frames received"
        elif new_drops:
            level, message = DiagnosticStatus.WARN, f"{new_drops} frames dropped"
        else:
            level, message = DiagnosticStatus.OK, f"{summary['rate_hz']:.1f} Hz"
        values = {
            "rate_hz": f"{summary['rate_hz']:.2f}",
            "frames_received": str(summary["frames_received"]),
            "frames_processed": str(summary["frames_processed"]),
            "latency_ms_p50": f"{summary['latency_ms']['p50']:.2f}",
            "latency_ms_p99": f"{summary['latency_ms']['p99']:.2f}",
            "processing_ms_p50": f"{summary['processing_ms']['p50']:.2f}",
            "processing_ms_p99": f"{summary['processing_ms']['p99']:.2f}",
            "drops_total": str(summary["drops_total"]),
            **{f"drops_{reason}": str(count) for reason, count in summary["drops"].items()},
            "device": describe(self.device),
            **self.diagnostic_values(),
        }
        status = DiagnosticStatus(
            level=level, name=self.get_fully_qualified_name(), message=message,
            hardware_id=str(self.device),
            values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.publish(self._diagnostics, msg)


class ModelNode(FrameNode):
    """A FrameNode running one registered network."""

    model_name: str

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        self.weights_path = resolve_weights(self.model_name, self.params["weights"])
        self.model = models.load(self.weights_path, expected=self.model_name).to(self.device)
        self.get_logger().info(
            f"{self.model_name} from {self.weights_path} on {describe(self.device)}")

    def diagnostic_values(self) -> dict[str, str]:
        return {"model": self.model_name, "weights": self.weights_path}


class ProcessorNode(ModelNode):
    """The node of one network, generated from its core FrameProcessor (dl_perception.processors):
    it declares the processor's parameters (read live, so `ros2 param set` applies from the next
    frame), subscribes to its side inputs, advertises its outputs and publishes the processor's
    messages serialized by the core, so its topics carry exactly what `dl-perception process`
    writes to a bag for the same frame. Topic names are relative (a namespace moves them), TF
    excepted. ros/nodes.py makes one subclass per registered network."""

    processor_class: type

    @classmethod
    def declared_params(cls) -> list[Param]:
        return common_params() + list(cls.processor_class.parameters)

    def __init__(self, node_name: str | None = None, **kwargs):
        super().__init__(node_name or self.processor_class.node_name, **kwargs)
        self.processor = self.processor_class(self.model, self.device, self.params)
        # start-up notes in full: rclpy throttles per call site, and these lambdas are one site
        self.processor.warn = self.get_logger().warning
        self.processor.info = self.get_logger().info
        self.side_input_errors = 0
        self._output_publishers = {}
        for topic, msgtype in dict(self.processor.outputs).items():
            try:
                cls = message_class(msgtype)
            except ImportError as error:
                self.get_logger().warning(f"{topic} not published: {error} (for TF `make venv` "
                                          "builds tf2_msgs into the venv; a ROS install has it)")
                self.processor.outputs = {t: m for t, m in self.processor.outputs.items()
                                          if t != topic}
                continue
            self._output_publishers[topic] = self.create_publisher(
                cls, *self._topic_and_qos(topic))
        for topic, msgtype in self.processor.side_inputs().items():
            reliability, depth = self.processor.side_input_qos(topic)
            self.create_subscription(
                message_class(msgtype), relative(topic),
                lambda raw, topic=topic, msgtype=msgtype: self._on_side_input(topic, msgtype, raw),
                sensor_qos(reliability, depth), raw=True)
        self.processor.announce()
        # per frame: throttled by kind of message, so a bad stream cannot flood the log and a
        # frequent warning cannot hide a rare one
        self.processor.warn = self._throttled(self.get_logger().warning, MessageThrottle(2.0))
        self.processor.info = self._throttled(self.get_logger().info, MessageThrottle(1.0))

    @staticmethod
    def _throttled(log, throttle: MessageThrottle):
        def emit(text: str) -> None:
            line = throttle(text)
            if line is not None:
                log(line)
        return emit

    def _topic_and_qos(self, topic: str):
        if topic in TF_TOPICS:
            return topic, TF_QOS
        if topic in self.processor.sensor_data_outputs:
            return relative(topic), qos_profile_sensor_data
        return relative(topic), 10

    def _on_side_input(self, topic: str, msgtype: str, raw: bytes) -> None:
        try:  # the same message dataclass as a bag's: node and `process` read one input alike
            self.processor.observe(topic, rosmsg.deserialize(raw, msgtype))
        except Exception as error:  # a bad side message must never stop the node
            self.side_input_errors += 1
            self.get_logger().warning(f"{topic}: message not used: {error!r}",
                                      throttle_duration_sec=5.0)

    def process(self, image: DecodedImage, header) -> None:
        core_header = rosmsg.header(rosmsg.stamp_ns(header.stamp), header.frame_id)
        self.publish_outputs(self.processor.process(image, core_header))

    def publish_outputs(self, outputs) -> None:
        """Publish the processor's messages (stack_node hands in what its executor made)."""
        for output in outputs:
            publisher = self._output_publishers.get(output.topic)
            if publisher is not None:
                self.publish(publisher, rosmsg.serialize(output.message))

    def diagnostic_values(self) -> dict[str, str]:
        values = {**super().diagnostic_values(), **self.processor.diagnostic_values()}
        if self.processor.side_inputs():
            values["side_input_errors"] = str(self.side_input_errors)
        return values


def run_nodes(node_factories, args=None, executor_kind: str = "single",
              duration: float | None = None) -> int:
    """Create nodes, spin them until SIGINT/SIGTERM (or `duration` seconds), shut down cleanly.
    A node that cannot start (bad parameter, missing weights) ends the process with status 1;
    a stop signal during start-up ends it with status 0."""
    mark_running()
    rclpy.init(args=args)
    nodes = []

    def stopping() -> bool:
        return stop_requested() or not rclpy.ok()
    try:
        try:
            for factory in node_factories:
                nodes.append(factory())
        except (ValueError, CheckpointError, KeyError, OSError) as error:
            if stopping():
                return 0
            print(f"error: {error}", file=sys.stderr)
            return 1
        except Exception:
            if stopping():  # the signal shut the context down under a node being created
                return 0
            raise
        if executor_kind == "multi":
            from rclpy.executors import MultiThreadedExecutor
            executor = MultiThreadedExecutor(num_threads=2)
        else:
            executor = SingleThreadedExecutor()
        for node in nodes:
            for each in [node, *getattr(node, "hosted_nodes", [])]:
                warn_undeclared_overrides(each)
                executor.add_node(each)
        spin_until_stopped(executor, duration)
        return 0
    finally:
        for node in nodes:
            for hosted in getattr(node, "hosted_nodes", []):
                hosted.destroy_node()
            node.destroy_node()
        rclpy.try_shutdown()
