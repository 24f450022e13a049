"""LaunchDescription shared by the launch files: one Node per section of the parameters file,
exactly the nodes `dl-perception launch` starts from the same file."""
from __future__ import annotations

import os
import tempfile

from .launcher import configured_nodes, params_for_any_namespace


def perception_launch(default_config: str, only: list[str] | None = None):
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def nodes(context):
        config = LaunchConfiguration("config").perform(context)
        namespace = LaunchConfiguration("namespace").perform(context)
        names = [n for n in configured_nodes(config) if not only or n in only]
        if namespace:  # plain node keys of a parameters file match in the root namespace only
            config = params_for_any_namespace(config, tempfile.mkdtemp(prefix="dl_perception_"))
        return [Node(package="dl_perception", executable=name, name=name, namespace=namespace,
                     output="screen", parameters=[config], emulate_tty=True) for name in names]

    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config,
                              description="ROS 2 parameters file naming the nodes to start"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of every node and topic, e.g. drone1"),
        OpaqueFunction(function=nodes),
    ])


def package_config(name: str) -> str:
    from ament_index_python.packages import get_package_share_directory
    return os.path.join(get_package_share_directory("dl_perception"), "config", name)


# launch argument -> (default, description); `bag` has no default, so it must be given
REPLAY_ARGUMENTS = {
    "bag": (None, "rosbag2 bag to play (directory, .mcap or .db3)"),
    "rate": ("1.0", "playback speed factor"),
    "start_offset": ("0.0", "seconds into the bag to start at"),
    "loop": ("false", "play again from the start at the end"),
    "topics": ("", "space-separated topics to play (empty: all)"),
    "remap": ("", "space-separated FROM:=TO topic remappings"),
    "qos_overrides": ("", "QoS overrides YAML, as for ros2 bag play"),
    "delay": ("0.0", "seconds to wait before the first message"),
    "clock_rate": ("40.0", "Hz of /clock (0: none)"),
    "wait_for_subscribers": ("0.0", "seconds to wait for every topic's first subscriber"),
}


def replay_arguments(values: dict[str, str]) -> list[str]:
    """The `dl-perception replay` command line for these launch argument values."""
    args = ["replay", values["bag"], "--rate", values["rate"], "--start-offset",
            values["start_offset"], "--delay", values["delay"], "--clock-rate",
            values["clock_rate"], "--wait-for-subscribers", values["wait_for_subscribers"]]
    if values["loop"].strip().lower() in ("true", "1", "yes"):
        args.append("--loop")
    if values["topics"].split():
        args += ["--topics", *values["topics"].split()]
    for rule in values["remap"].split():
        args += ["--remap", rule]
    if values["qos_overrides"].strip():
        args += ["--qos-profile-overrides-path", values["qos_overrides"].strip()]
    return args


def replay_launch():
    """`dl-perception replay` as a launch description (the player runs as the package's
    dl-perception executable, so ros2 launch starts the same code as the command)."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def player(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in REPLAY_ARGUMENTS}
        return [Node(package="dl_perception", executable="dl-perception",
                     name="dl_perception_player", arguments=replay_arguments(values),
                     output="screen", emulate_tty=True)]

    declared = [DeclareLaunchArgument(name, description=description)
                if default is None else
                DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (default, description) in REPLAY_ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=player)])
