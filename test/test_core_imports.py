"""The core must work without ROS: importing every non-ROS module loads no rclpy."""
import os
import pkgutil
import subprocess
import sys

import dl_perception


def core_modules():
    names = []
    for info in pkgutil.walk_packages(dl_perception.__path__, "dl_perception."):
        if not info.name.startswith("dl_perception.ros"):
            names.append(info.name)
    return names


def test_core_imports_without_rclpy():
    modules = core_modules()
    assert "dl_perception.models.dronet" in modules and "dl_perception.core.imaging" in modules
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'rosidl_runtime_py', 'sensor_msgs', 'std_msgs'))\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.path.dirname(dl_perception.__path__[0])})
    assert result.returncode == 0, result.stderr
