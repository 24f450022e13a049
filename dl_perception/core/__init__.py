"""The core every layer builds on, with no rclpy and no network-specific code: images, geometry,
checkpoints, devices, paths, parameters, ROS message dataclasses (CDR without rclpy) and the
declarative preprocessing."""
