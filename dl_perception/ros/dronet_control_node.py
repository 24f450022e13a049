"""dronet_control_node: DroNet outputs -> /cmd_vel through DroNet's control law, at a fixed rate,
only while enabled through a std_srvs/SetBool service. Disabling publishes one zero command so the
vehicle does not keep its last velocity."""
from __future__ import annotations

import dataclasses

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from rclpy.node import Node
from std_msgs.msg import Float32
from std_srvs.srv import SetBool

from ..navigation.control import Command, DroNetController, DroNetControlParams
from .params import Param, ParameterSet

_DEFAULTS = DroNetControlParams()
PARAMS = [
    Param("rate_hz", 30.0, "command rate (Hz)", low=1.0, high=1000.0, read_only=True),
    Param("max_forward_velocity", _DEFAULTS.max_forward_velocity,
          "forward speed (m/s) at zero collision probability", low=0.0, high=50.0),
    Param("max_yaw_rate", _DEFAULTS.max_yaw_rate, "yaw rate (rad/s) for steering = 1",
          low=0.0, high=20.0),
    Param("alpha_velocity", _DEFAULTS.alpha_velocity, "low-pass weight of new speed targets",
          low=1e-6, high=1.0),
    Param("alpha_yaw", _DEFAULTS.alpha_yaw, "low-pass weight of new yaw targets", low=1e-6, high=1.0),
    Param("critical_probability", _DEFAULTS.critical_probability,
          "stop forward motion at or above this collision probability (<= 1)", low=1e-6, high=1.0),
    Param("input_timeout", _DEFAULTS.input_timeout,
          "network outputs older than this (s) command zero velocity", low=1e-3, high=60.0),
    Param("steering_limit", _DEFAULTS.steering_limit,
          "|steering| above this is invalid input (held like a missing one, then zero)",
          low=1.0, high=1000.0),
    Param("enabled_at_start", False, "publish commands without waiting for the enable service",
          read_only=True),
]
CONTROL_FIELDS = [f.name for f in dataclasses.fields(DroNetControlParams)]


class DroNetControlNode(Node):
    @classmethod
    def declared_params(cls) -> list[Param]:
        return PARAMS

    def __init__(self, node_name: str = "dronet_control_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self.params = ParameterSet(self, PARAMS)
        self.controller = DroNetController(self._control_params())
        self.add_post_set_parameters_callback(self._on_params_changed)
        self.enabled = bool(self.params["enabled_at_start"])
        self._steering: tuple[float, float] | None = None  # (value, receipt time)
        self._collision: tuple[float, float] | None = None
        self._fresh = False  # an output arrived since the last tick
        self.last_command = Command(0.0, 0.0, "stop: no input")
        self.commands_published = 0
        self.cmd_pub = self.create_publisher(Twist, "cmd_vel", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(Float32, "dl_perception/dronet/steering_angle",
                                 self._on_steering, 10)
        self.create_subscription(Float32, "dl_perception/dronet/collision_probability",
                                 self._on_collision, 10)
        self.create_service(SetBool, "dl_perception/dronet_control/enable", self._on_enable)
        self.create_timer(1.0 / self.params["rate_hz"], self._on_tick)
        self.create_timer(1.0, self._publish_diagnostics)

    def _control_params(self) -> DroNetControlParams:
        return DroNetControlParams(**{name: self.params[name] for name in CONTROL_FIELDS})

    def _on_params_changed(self, changes) -> None:
        if any(change.name in CONTROL_FIELDS for change in changes):
            self.controller.params = self._control_params()

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_steering(self, msg: Float32) -> None:
        self._steering, self._fresh = (msg.data, self._now()), True

    def _on_collision(self, msg: Float32) -> None:
        self._collision, self._fresh = (msg.data, self._now()), True

    def _on_enable(self, request, response):
        was_enabled, self.enabled = self.enabled, bool(request.data)
        if was_enabled and not self.enabled:
            self.controller.reset()
            self._publish(Twist())
        response.success = True
        response.message = "enabled" if self.enabled else "disabled"
        self.get_logger().info(f"control {response.message}")
        return response

    def _on_tick(self) -> None:
        if self._fresh and self._steering is not None and self._collision is not None:
            self._fresh = False
            steering, collision = self._steering[0], self._collision[0]
            if not self.controller.update_perception(
                    steering, collision, min(self._steering[1], self._collision[1])):
                self.get_logger().warning(
                    "invalid DroNet output ignored: "
                    f"{self.controller.params.input_problem(steering, collision)}",
                    throttle_duration_sec=2.0)
        self.last_command = self.controller.step(self._now())
        if not self.enabled:
            return
        twist = Twist()
        twist.linear.x = self.last_command.forward_velocity
        twist.angular.z = self.last_command.yaw_rate
        self._publish(twist)

    def _publish(self, twist: Twist) -> None:
        try:
            self.cmd_pub.publish(twist)
            self.commands_published += 1
        except Exception as error:  # a saturated middleware must not kill the control loop
            self.get_logger().warning(f"cmd_vel publish failed: {error}", throttle_duration_sec=2.0)

    def _publish_diagnostics(self) -> None:
        command = self.last_command
        stopped = command.reason.startswith("stop")
        level = DiagnosticStatus.WARN if self.enabled and stopped else DiagnosticStatus.OK
        values = {
            "enabled": str(self.enabled),
            "state": command.reason,
            "forward_velocity": f"{command.forward_velocity:.3f}",
            "yaw_rate": f"{command.yaw_rate:.3f}",
            "commands_published": str(self.commands_published),
            "invalid_inputs": str(self.controller.invalid_inputs),
        }
        status = DiagnosticStatus(
            level=level, name=self.get_fully_qualified_name(),
            message=("enabled, " if self.enabled else "disabled, ") + command.reason,
            hardware_id="cpu", values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        try:
            self.diag_pub.publish(msg)
        except Exception:
            pass

