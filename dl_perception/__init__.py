"""dl_perception: deep-learning perception for drones and mobile robots (ROS 2).

The package core (models, preprocessing, training, evaluation, simulator, bags) never imports
rclpy; the ROS 2 nodes live in `dl_perception.ros`.
"""
__version__ = "0.1.0"
