"""Play a rosbag2 bag with its recorded timing and /clock: `dl-perception replay` under
ros2 launch, e.g. ros2 launch dl_perception replay.launch.py bag:=/data/run1 rate:=0.5"""
from dl_perception.ros.launch_description import replay_launch


def generate_launch_description():
    return replay_launch()
