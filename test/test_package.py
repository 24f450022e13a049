"""The repository is a valid ament_python ROS 2 package."""
import glob
import os
import xml.etree.ElementTree as ElementTree


def test_package_xml(repo_dir):
    root = ElementTree.parse(os.path.join(repo_dir, "package.xml")).getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "dl_perception"
    assert root.find("export/build_type").text == "ament_python"
    assert root.find("buildtool_depend") is None  # ament_python is no rosdep key
    exec_deps = {e.text for e in root.findall("exec_depend")}
    for dep in ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "nav_msgs", "std_srvs",
                "diagnostic_msgs", "rosgraph_msgs", "tf2_msgs", "launch", "launch_ros",
                "python3-numpy", "python3-opencv", "python3-torch-pip", "python3-safetensors-pip"):
        assert dep in exec_deps, dep
    assert root.findtext("license") == "Apache-2.0"


def test_package_xml_passes_catkin_pkg_validation(repo_dir):
    from catkin_pkg.package import parse_package
    warnings = []
    package = parse_package(os.path.join(repo_dir, "package.xml"), warnings=warnings)
    package.validate(warnings=warnings)
    assert warnings == []
    assert package.get_build_type() == "ament_python"


def _documented_keys(repo_dir) -> dict:
    """docs/packaging.md's table: key -> (kind, source)."""
    rows = {}
    for line in open(os.path.join(repo_dir, "docs", "packaging.md")):
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1] in ("exec", "test"):
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_every_dependency_is_a_documented_rosdep_key(repo_dir):
    """Each key of package.xml is a ROS package, a key of rosdistro's python.yaml or one of
    rosdep/dl_perception.yaml, as docs/packaging.md lists; the custom file redefines none of
    rosdistro's keys."""
    import yaml
    root = ElementTree.parse(os.path.join(repo_dir, "package.xml")).getroot()
    used = {(e.text, "exec" if e.tag == "exec_depend" else "test")
            for e in root if e.tag in ("exec_depend", "test_depend")}
    documented = _documented_keys(repo_dir)
    assert used == {(key, kind) for key, (kind, _) in documented.items()}
    custom = set(yaml.safe_load(open(os.path.join(repo_dir, "rosdep", "dl_perception.yaml"))))
    assert custom == {k for k, (_, source) in documented.items()
                      if source == "rosdep/dl_perception.yaml"}
    assert all(source in ("ROS package", "rosdistro rosdep/python.yaml",
                          "rosdep/dl_perception.yaml") for _, source in documented.values())


def test_ament_layout(repo_dir):
    assert os.path.isfile(os.path.join(repo_dir, "resource", "dl_perception"))
    assert glob.glob(os.path.join(repo_dir, "launch", "*.launch.py"))
    assert os.path.isfile(os.path.join(repo_dir, "config", "perception.yaml"))
    setup_cfg = open(os.path.join(repo_dir, "setup.cfg")).read()
    assert "script_dir=$base/lib/dl_perception" in setup_cfg  # where `ros2 run` looks


def test_wheel_installs_launch_config_and_index(repo_dir, tmp_path):
    """What colcon/pip install put under share/ (an editable install skips data_files)."""
    import subprocess
    import sys
    import zipfile
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), repo_dir], check=True, timeout=300)
    (wheel,) = glob.glob(str(tmp_path / "dl_perception-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    data = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    for expected in ("share/dl_perception/package.xml",
                     "share/dl_perception/launch/perception.launch.py",
                     "share/dl_perception/launch/dronet.launch.py",
                     "share/dl_perception/launch/replay.launch.py",
                     "share/dl_perception/config/perception.yaml",
                     "share/dl_perception/config/ros_gz_bridge.yaml",
                     "share/dl_perception/launch/gazebo.launch.py",
                     "share/dl_perception/gazebo/worlds/dl_perception_city.sdf",
                     "share/dl_perception/gazebo/models/dl_perception_drone/model.sdf",
                     "share/ament_index/resource_index/packages/dl_perception"):
        assert expected in data, expected
