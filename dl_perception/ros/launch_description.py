"""LaunchDescription shared by the launch files: one Node per section of the parameters file,
exactly the nodes `dl-perception launch` starts from the same file."""
from __future__ import annotations

import os

from .launcher import configured_nodes


def perception_launch(default_config: str, only: list[str] | None = None):
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def nodes(context):
        config = LaunchConfiguration("config").perform(context)
        names = [n for n in configured_nodes(config) if not only or n in only]
        return [Node(package="dl_perception", executable=name, name=name, output="screen",
                     parameters=[config], emulate_tty=True) for name in names]

    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config,
                              description="ROS 2 parameters file naming the nodes to start"),
        OpaqueFunction(function=nodes),
    ])


def package_config(name: str) -> str:
    from ament_index_python.packages import get_package_share_directory
    return os.path.join(get_package_share_directory("dl_perception"), "config", name)
