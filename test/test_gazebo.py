"""The Gazebo (gz-sim) files: valid SDF (`ign sdf -k`, Debian's ignition-tools + libsdformat-dev),
the shipped world is the built-in simulator's world 0, and the ros_gz_bridge config carries
exactly the built-in simulator's topics and types (docs/interfaces.md)."""
import os
import re
import shutil
import subprocess

import pytest
import yaml

from dl_perception.core.paths import REPO_DIR
from dl_perception.sim.bag import SIM_TOPICS

GAZEBO = os.path.join(REPO_DIR, "gazebo")
WORLD = os.path.join(GAZEBO, "worlds", "dl_perception_city.sdf")
MODEL = os.path.join(GAZEBO, "models", "dl_perception_drone", "model.sdf")
GZ_TYPES = {"sensor_msgs/msg/Image": "gz.msgs.Image", "sensor_msgs/msg/CameraInfo":
            "gz.msgs.CameraInfo", "nav_msgs/msg/Odometry": "gz.msgs.Odometry",
            "std_msgs/msg/Bool": "gz.msgs.Boolean", "rosgraph_msgs/msg/Clock": "gz.msgs.Clock",
            "geometry_msgs/msg/Twist": "gz.msgs.Twist"}


def interface_topics() -> dict:
    """topic -> (short type, direction) from the "Built-in simulator" table of interfaces.md."""
    text = open(os.path.join(REPO_DIR, "docs", "interfaces.md")).read()
    table = text.split("## Built-in simulator", 1)[1].split("\n## ", 1)[0]
    topics = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`(/[^`]+)`", cells[0]) if len(cells) == 3 else []
        types = [t.split("(")[0].strip().split("/")[-1] for t in cells[1].split(",")] if names else []
        if names and len(types) == 1:
            types = types * len(names)
        for name, short in zip(names, types):
            topics[name] = (short, cells[2])
    return topics


def ign_sdf(path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SDF_PATH": os.path.join(GAZEBO, "models"),
           "IGN_GAZEBO_RESOURCE_PATH": os.path.join(GAZEBO, "models")}
    return subprocess.run(["ign", "sdf", "-k", path], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.fixture(scope="module")
def ign():
    if shutil.which("ign") is None:
        pytest.skip("`ign sdf` is not installed (Debian: apt-get install ignition-tools "
                    "libsdformat-dev; .ci/run installs them where apt works)")


@pytest.mark.parametrize("path", [MODEL, WORLD])
def test_sdf_files_are_valid(ign, path):
    result = ign_sdf(path)
    assert result.returncode == 0 and "Valid" in result.stdout, result.stdout + result.stderr


def test_an_invalid_sdf_is_refused(ign, tmp_path):
    broken = tmp_path / "broken.sdf"
    broken.write_text(open(MODEL).read().replace("<mass>1.0</mass>", "<mass>heavy</mass>"))
    result = ign_sdf(str(broken))
    assert "Valid." not in result.stdout


def test_world_is_the_simulator_world_0():
    from dl_perception.sim.sdf import world_sdf
    from dl_perception.sim.world import generate_world
    assert open(WORLD).read() == world_sdf(generate_world(0))


def test_bridge_config_matches_the_interface_contract():
    bridge = yaml.safe_load(open(os.path.join(REPO_DIR, "config", "ros_gz_bridge.yaml")))
    contract = interface_topics()
    assert set(contract) == set(SIM_TOPICS) == {entry["ros_topic_name"] for entry in bridge}
    for entry in bridge:
        topic = entry["ros_topic_name"]
        short, direction = contract[topic]
        assert entry["ros_type_name"] == SIM_TOPICS[topic]
        assert entry["ros_type_name"].split("/")[-1] == short, topic
        assert entry["gz_type_name"] == GZ_TYPES[entry["ros_type_name"]]
        assert entry["direction"] == ("GZ_TO_ROS" if direction == "out" else "ROS_TO_GZ")


def test_gazebo_launch_file_names_the_installed_files():
    text = open(os.path.join(REPO_DIR, "launch", "gazebo.launch.py")).read()
    compile(text, "gazebo.launch.py", "exec")
    for name in ("dl_perception_city.sdf", "ros_gz_bridge.yaml", "GZ_SIM_RESOURCE_PATH",
                 "parameter_bridge"):
        assert name in text
