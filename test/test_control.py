"""DroNet's control law: filtering, clipping, hard stop, stale inputs."""
import math

import pytest

from dl_perception.navigation.control import DroNetController, DroNetControlParams


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
    controller.update_perception(steering=1.7, collision_probability=0.0, stamp=0.0)
    assert math.isclose(controller.step(0.0).yaw_rate, 2.0)
    controller.update_perception(steering=-1.9, collision_probability=0.0, stamp=0.0)
    assert math.isclose(controller.step(0.0).yaw_rate, -2.0)


@pytest.mark.parametrize("steering,collision", [
    (0.0, -0.5), (0.0, 1.5), (0.0, -1e-3), (9.0, 0.1), (-2.5, 0.1), (float("inf"), 0.1),
    (0.0, float("nan"))])
def test_out_of_range_outputs_are_invalid_hold_then_zero(steering, collision):
    controller = make(alpha_velocity=1.0)
    assert controller.update_perception(0.1, 0.4, 0.0)
    held = controller.step(0.1).forward_velocity
    assert math.isclose(held, 0.6)
    # an invalid output never speeds the vehicle up (a negative probability used to mean
    # full speed): the last valid one holds ...
    assert not controller.update_perception(steering, collision, 0.3)
    assert controller.invalid_inputs == 1
    assert math.isclose(controller.step(0.4).forward_velocity, held)
    # ... until it is older than input_timeout
    command = controller.step(0.51)
    assert (command.forward_velocity, command.yaw_rate, command.reason) == \
        (0.0, 0.0, "stop: stale input")


def test_invalid_outputs_alone_never_move_the_vehicle():
    controller = make()
    for step in range(10):
        controller.update_perception(0.0, -0.5, step * 0.1)
        command = controller.step(step * 0.1)
        assert command.forward_velocity == 0.0 and command.reason == "stop: no input"


def test_the_steering_bound_is_a_parameter():
    with pytest.raises(ValueError, match="steering_limit"):
        make(steering_limit=0.5)  # below the clipping range: every output would be invalid
    assert make(steering_limit=10.0).update_perception(9.0, 0.1, 0.0)


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
