"""The dl_perception city world in Gazebo (gz-sim Harmonic) with the camera drone, bridged to the
built-in simulator's ROS topics by config/ros_gz_bridge.yaml. Needs ros_gz (ros-<distro>-ros-gz).

    ros2 launch dl_perception gazebo.launch.py [world:=/path/to/world.sdf] [headless:=true]
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction,
                            SetEnvironmentVariable)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("dl_perception")
    models = os.path.join(share, "gazebo", "models")
    default_world = os.path.join(share, "gazebo", "worlds", "dl_perception_city.sdf")
    bridge_config = os.path.join(share, "config", "ros_gz_bridge.yaml")

    def gazebo(context):
        world = LaunchConfiguration("world").perform(context)
        headless = LaunchConfiguration("headless").perform(context).lower() == "true"
        gz_args = f"-r {'-s ' if headless else ''}{world}"
        return [IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(
                get_package_share_directory("ros_gz_sim"), "launch", "gz_sim.launch.py")),
            launch_arguments={"gz_args": gz_args}.items())]

    return LaunchDescription([
        DeclareLaunchArgument("world", default_value=default_world,
                              description="SDF world (default: world 0 of the built-in simulator)"),
        DeclareLaunchArgument("headless", default_value="false",
                              description="run the server only (no GUI)"),
        SetEnvironmentVariable("GZ_SIM_RESOURCE_PATH", os.pathsep.join(
            p for p in (models, os.environ.get("GZ_SIM_RESOURCE_PATH", "")) if p)),
        OpaqueFunction(function=gazebo),
        Node(package="ros_gz_bridge", executable="parameter_bridge", name="ros_gz_bridge",
             output="screen", parameters=[{"config_file": bridge_config, "use_sim_time": True}]),
    ])
