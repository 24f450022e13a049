"""Shared fixtures. ROS traffic of a test run is isolated: a domain id of its own, discovery kept
on this host, and Fast DDS's large-data transports (unfragmented samples up to 4 MB) so
640x480 images cross processes."""
import os
import time

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MUJOCO_GL", "egl")

from dl_perception.paths import REPO_DIR, shared_data_dir  # noqa: E402
from dl_perception.ros import LARGE_DATA_TRANSPORTS  # noqa: E402

os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", LARGE_DATA_TRANSPORTS)


@pytest.fixture(scope="session")
def shared_data() -> str:
    path = shared_data_dir()
    if not os.path.isdir(path):
        pytest.skip(f"shared third-party data not present at {path} (set DL_PERCEPTION_DATA)")
    return path


@pytest.fixture(scope="session")
def official_dronet(shared_data, tmp_path_factory) -> str:
    """The official DroNet release converted to a checkpoint, once per session."""
    from dl_perception.convert import dronet_keras

    folder = os.path.join(shared_data, "dronet")
    model, info = dronet_keras(os.path.join(folder, "model_struct.json"),
                               os.path.join(folder, "model_weights.h5"))
    path = str(tmp_path_factory.mktemp("weights") / "dronet_official.safetensors")
    model.save(path, info=info)
    return path


@pytest.fixture(scope="session")
def repo_dir() -> str:
    return REPO_DIR


@pytest.fixture
def ros():
    """An initialised rclpy for in-process node tests."""
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.try_shutdown()


def spin_until(executor, predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.02)
    return predicate()
