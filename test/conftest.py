"""Shared fixtures. ROS traffic of a test run is isolated: a domain id of its own, discovery kept
on this host, and Fast DDS's large-data transports (unfragmented samples up to 4 MB) so
640x480 images cross processes."""
import importlib.util
import os
import sys
import time

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MUJOCO_GL", "egl")

from dl_perception.core.paths import REPO_DIR, shared_data_dir  # noqa: E402
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
    from dl_perception.models.dronet_convert import dronet_keras

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


ROS_LAUNCH_PACKAGES = ("launch", "launch_ros", "launch_testing", "launch_testing_ros")


def ros_launch_sources() -> str:
    """ROS 2's launch, launch_ros and launch_testing as Python sources beside the shared data
    (../shared/ros2_launch; see its SOURCE.txt)."""
    return os.path.join(os.path.dirname(os.path.abspath(shared_data_dir())), "ros2_launch")


def _ament_prefix(root: str) -> str:
    """An ament prefix holding this package as `colcon build --symlink-install` lays it out, so
    FindPackageShare('dl_perception') and launch_ros's executables resolve to this checkout."""
    share = os.path.join(root, "share", "dl_perception")
    os.makedirs(share)
    for name in ("package.xml", "launch", "config", "gazebo"):
        os.symlink(os.path.join(REPO_DIR, name), os.path.join(share, name))
    index = os.path.join(root, "share", "ament_index", "resource_index", "packages")
    os.makedirs(index)
    open(os.path.join(index, "dl_perception"), "w").close()
    executables = os.path.join(root, "lib", "dl_perception")
    os.makedirs(executables)
    from importlib.metadata import distribution
    bin_dir = os.path.dirname(sys.executable)
    for entry in distribution("dl_perception").entry_points:
        if entry.group == "console_scripts":
            os.symlink(os.path.join(bin_dir, entry.name), os.path.join(executables, entry.name))
    return root


@pytest.fixture(scope="session")
def ros_launch_env(tmp_path_factory) -> dict:
    """Environment in which `python -m launch_testing.launch_test FILE` runs this package's launch
    files against the real launch and launch_ros: a ROS install's, else ../shared/ros2_launch."""
    env = dict(os.environ)
    if importlib.util.find_spec("launch_testing") is None:
        sources = ros_launch_sources()
        if not os.path.isdir(sources):
            pytest.skip(f"launch_testing is not installed (a ROS 2 install has it) and its sources "
                        f"are not at {sources}")
        paths = [os.path.join(sources, name) for name in ROS_LAUNCH_PACKAGES]
        env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    prefix = _ament_prefix(str(tmp_path_factory.mktemp("ament_prefix")))
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(
        [prefix, sys.prefix] + [p for p in [env.get("AMENT_PREFIX_PATH", "")] if p])
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env
