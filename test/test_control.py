"""DroNet's control law: filtering, clipping, hard stop, stale inputs."""
import math

import pytest

from dl_perception.control import DroNetController, DroNetControlParams


def make(**overrides):
    return DroNetController(DroNetControlParams(**{
        "max_forward_velocity": 1.0, "max_yaw_rate": 2.0, "alpha_velocity": 0.5,
        "alpha_yaw": 0.25, "critical_probability": 0.7, "input_timeout": 0.5, **overrides}))


def test_no_input_commands_zero():
    command = make().step(0.0)
    assert (command.forward_velocity, command.yaw_rate, command.reason) == (0.0, 0.0, "stop: no input")


def test_low_pass_filter_converges_to_targets():
    controller = make()
    controller.update_perception(steering=0.4, collision_probability=0.2, stamp=0.0)
    first = controller.step(0.01)
    assert math.isclose(first.forward_velocity, 0.5 * 0.8)  # alpha * (1 - p) * v_max from 0
    assert math.isclose(first.yaw_rate, 0.25 * 0.4 * 2.0)
    second = controller.step(0.02)
    assert math.isclose(second.forward_velocity, 0.4 + 0.5 * (0.8 - 0.4))
    for i in range(60):
        command = controller.step(0.03 + i * 1e-3)
    assert math.isclose(command.forward_velocity, 0.8, rel_tol=1e-6)
    assert math.isclose(command.yaw_rate, 0.8, rel_tol=1e-6)
    assert command.reason == "tracking"


def test_steering_is_clipped_to_unit_range():
    controller = make(alpha_yaw=1.0)
    controller.update_perception(steering=3.7, collision_probability=0.0, stamp=0.0)
    assert math.isclose(controller.step(0.0).yaw_rate, 2.0)
    controller.update_perception(steering=-9.0, collision_probability=0.0, stamp=0.0)
    assert math.isclose(controller.step(0.0).yaw_rate, -2.0)


def test_hard_stop_at_critical_probability_keeps_turning():
    controller = make(alpha_velocity=1.0, alpha_yaw=1.0)
    controller.update_perception(0.5, 0.69, 0.0)
    assert controller.step(0.0).forward_velocity > 0.3
    controller.update_perception(0.5, 0.7, 0.0)
    command = controller.step(0.0)
    assert command.forward_velocity == 0.0 and command.reason == "stop: collision"
    assert math.isclose(command.yaw_rate, 1.0)  # it may still turn away
    controller.update_perception(0.0, 0.0, 0.1)  # clear path: restarts from zero, filtered
    assert math.isclose(controller.step(0.1).forward_velocity, 1.0)


def test_stale_input_commands_zero_and_resets_filter():
    controller = make()
    controller.update_perception(0.3, 0.1, stamp=10.0)
    assert controller.step(10.4).forward_velocity > 0
    stale = controller.step(10.6)
    assert (stale.forward_velocity, stale.yaw_rate, stale.reason) == (0.0, 0.0, "stop: stale input")
    controller.update_perception(0.3, 0.1, stamp=10.7)
    assert math.isclose(controller.step(10.7).forward_velocity, 0.5 * 0.9)  # from zero again


def test_non_finite_outputs_are_ignored():
    controller = make(alpha_velocity=1.0)
    controller.update_perception(0.0, 0.2, 0.0)
    controller.update_perception(float("nan"), 0.1, 0.05)
    command = controller.step(0.05)
    assert math.isclose(command.forward_velocity, 0.8)


@pytest.mark.parametrize("field,value", [("critical_probability", 1.3),
                                         ("critical_probability", 0.0),
                                         ("alpha_velocity", 0.0), ("alpha_yaw", 1.5),
                                         ("input_timeout", 0.0), ("max_forward_velocity", -1.0)])
def test_unsafe_parameters_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        make(**{field: value})
