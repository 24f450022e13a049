"""ROS 2 adapters: thin nodes over the rclpy-free core."""
