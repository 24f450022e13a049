"""dl_perception: an ament_python ROS 2 package that is also pip-installable."""
import os
import runpy
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dl_perception"

# The ROS 2 client libraries come from a ROS install (colcon route) or, in a plain virtualenv,
# from the PyPI wheels of the `ros` extra.
ROS_WHEELS = [
    "ros-rclpy[fastrtps]",
    "ros-sensor-msgs",
    "ros-std-msgs",
    "ros-geometry-msgs",
    "ros-nav-msgs",
    "ros-std-srvs",
    "ros-diagnostic-msgs",
    "ros-visualization-msgs",
]

# the console scripts come from the registry (every node executable runs
# dl_perception.ros.entry:main, which starts the node its name says), read by path: nothing of
# the package is installed yet
REGISTRY = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), PACKAGE,
                                       "registry.py"))

setup(
    name=PACKAGE,
    version="0.1.0",
    description="ROS 2 deep-learning perception for drones and mobile robots: LIFT, NetVLAD, "
                "PoseNet, monocular depth and DroNet",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["weights/*.safetensors", "weights/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/gazebo/worlds", glob("gazebo/worlds/*.sdf")),
        (f"share/{PACKAGE}/gazebo/models/dl_perception_drone",
         glob("gazebo/models/dl_perception_drone/*")),
    ],
    install_requires=[
        # CPU wheel on machines without a GPU; see README for CUDA builds.
        "torch==2.13.0",
        "numpy>=1.24",
        # pinned: their builds change numbers the tests and docs/ report (SIFT keypoints, RANSAC
        # and PnP, rendered images); the wheel builds of OpenCV 5.1.0 only, MuJoCo 4.0.1 exactly
        "opencv-python-headless~=5.1.0.95",
        "safetensors>=0.4",
        "h5py>=3.8",
        "PyYAML>=6.0",
        "mujoco==4.0.1",
        "rosbags>=0.10",  # rosbag2 reading and writing (sqlite3, mcap) without rosbag2_py
        "evo>=1.28",  # trajectory metrics (ATE/RPE) of `dl-perception eval vo`
        "scipy>=1.9",  # the VO's local bundle adjustment (sparse least squares)
        "faiss-cpu>=1.7",
        "tqdm>=4.60",  # progress with ETA on long commands
        "matplotlib>=3.5",  # loss curves and evaluation plots
    ],
    extras_require={
        "ros": ROS_WHEELS,
        # mcap: an independent reader for written bags; hypothesis: the fuzz suite (test_fuzz.py);
        # ruff: `make lint` (its rules change between minor versions); osrf-pycommon and lark:
        # what launch and launch_testing (../shared/ros2_launch where no ROS install has them)
        # need from PyPI; catkin-pkg: package.xml validation
        "test": ["pytest>=7", "mcap>=1.1", "hypothesis>=6", "ruff~=0.17.5", "osrf-pycommon>=2.0",
                 "lark>=1.1", "catkin-pkg>=1.0"],
    },
    entry_points={
        "console_scripts": REGISTRY["console_scripts"](),
    },
    zip_safe=False,
)
