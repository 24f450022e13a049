"""DroNet and its controller, configured by config/perception.yaml (or config:=FILE)."""
from dl_perception.ros.launch_description import package_config, perception_launch


def generate_launch_description():
    return perception_launch(package_config("perception.yaml"),
                             only=["dronet_node", "dronet_control_node"])
