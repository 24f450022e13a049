"""Per-frame processor messages are throttled by kind (core/log_throttle.py): a frequent warning
neither floods the log nor hides a rare one."""
from dl_perception.core.log_throttle import MessageThrottle, message_kind


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_messages_differing_only_in_numbers_are_one_kind():
    assert message_kind("frame 12 is 3.5e-2 s late") == message_kind("frame 7 is -1.25 s late")
    assert message_kind("no keypoints in this frame") != message_kind("the database is empty")


def test_each_kind_has_its_own_throttle_and_held_back_messages_are_counted():
    clock = FakeClock()
    throttle = MessageThrottle(2.0, clock)
    assert throttle("camera_info is for 640x480 images") == "camera_info is for 640x480 images"
    for step in range(10):  # a frequent warning, every 0.1 s
        clock.now = 0.1 * (step + 1)
        assert throttle(f"camera_info is for 320x{step} images") is None
    # a rare, different warning is not hidden behind it
    assert throttle("no keypoints in this frame") == "no keypoints in this frame"
    clock.now = 2.5
    assert throttle("camera_info is for 640x480 images") == \
        "camera_info is for 640x480 images (10 more like it in the last 2 s)"
    clock.now = 2.6
    assert throttle("camera_info is for 640x480 images") is None
    clock.now = 5.0
    assert throttle("camera_info is for 640x480 images").endswith("(1 more like it in the last 2 s)")
