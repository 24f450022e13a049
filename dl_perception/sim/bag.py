"""Writing the simulator's topics to a rosbag2 (MCAP storage, Kilted message definitions) with
the `rosbags` library: no ROS installation needed, and `ros2 bag`, Foxglove and rosbags read it.
"""
from __future__ import annotations

import math

import numpy as np

# topic -> message type, exactly the simulator's (docs/interfaces.md, "Built-in simulator")
SIM_TOPICS = {
    "/camera/image_raw": "sensor_msgs/msg/Image",
    "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "/camera/depth/image_raw": "sensor_msgs/msg/Image",
    "/ground_truth/odometry": "nav_msgs/msg/Odometry",
    "/sim/collision": "std_msgs/msg/Bool",
    "/clock": "rosgraph_msgs/msg/Clock",
    "/cmd_vel": "geometry_msgs/msg/Twist",
}


class SimBagWriter:
    """`write_*` methods take simulated seconds; stamps are those seconds in nanoseconds."""

    def __init__(self, path: str, frame_ids: dict):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.ROS2_KILTED)
        self.types = self.store.types
        self.frame_ids = frame_ids
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections = {topic: self.writer.add_connection(topic, msgtype, typestore=self.store)
                            for topic, msgtype in SIM_TOPICS.items()}

    def _time(self, seconds: float):
        nanoseconds = int(round(seconds * 1e9))
        return self.types["builtin_interfaces/msg/Time"](sec=nanoseconds // 10**9,
                                                         nanosec=nanoseconds % 10**9)

    def _header(self, seconds: float, frame: str):
        return self.types["std_msgs/msg/Header"](stamp=self._time(seconds), frame_id=frame)

    def _write(self, topic: str, seconds: float, msg) -> None:
        self.writer.write(self.connections[topic], int(round(seconds * 1e9)),
                          self.store.serialize_cdr(msg, SIM_TOPICS[topic]))

    def write_camera(self, seconds: float, rgb: np.ndarray, depth: np.ndarray, intrinsics) -> None:
        image_type = self.types["sensor_msgs/msg/Image"]
        header = self._header(seconds, self.frame_ids["camera"])
        height, width = depth.shape
        self._write("/camera/image_raw", seconds, image_type(
            header=header, height=height, width=width, encoding="rgb8", is_bigendian=0,
            step=width * 3, data=np.ascontiguousarray(rgb).reshape(-1)))
        self._write("/camera/depth/image_raw", seconds, image_type(
            header=header, height=height, width=width, encoding="32FC1", is_bigendian=0,
            step=width * 4, data=np.ascontiguousarray(depth, "<f4").view(np.uint8).reshape(-1)))
        fx, fy, cx, cy = intrinsics
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        self._write("/camera/camera_info", seconds, self.types["sensor_msgs/msg/CameraInfo"](
            header=header, height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], float),
            r=np.eye(3).ravel(), p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], float),
            binning_x=0, binning_y=0, roi=roi))

    def write_state(self, seconds: float, position, yaw: float, body_velocity, yaw_rate: float,
                    collision: bool) -> None:
        t = self.types
        vector, point = t["geometry_msgs/msg/Vector3"], t["geometry_msgs/msg/Point"]
        pose = t["geometry_msgs/msg/Pose"](
            position=point(x=float(position[0]), y=float(position[1]), z=float(position[2])),
            orientation=t["geometry_msgs/msg/Quaternion"](
                x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)))
        twist = t["geometry_msgs/msg/Twist"](
            linear=vector(x=float(body_velocity[0]), y=float(body_velocity[1]),
                          z=float(body_velocity[2])),
            angular=vector(x=0.0, y=0.0, z=float(yaw_rate)))
        self._write("/ground_truth/odometry", seconds, t["nav_msgs/msg/Odometry"](
            header=self._header(seconds, self.frame_ids["odom"]),
            child_frame_id=self.frame_ids["base"],
            pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
            twist=t["geometry_msgs/msg/TwistWithCovariance"](twist=twist,
                                                             covariance=np.zeros(36))))
        self._write("/sim/collision", seconds, t["std_msgs/msg/Bool"](data=bool(collision)))
        self._write("/clock", seconds, t["rosgraph_msgs/msg/Clock"](clock=self._time(seconds)))

    def write_command(self, seconds: float, forward: float, left: float, up: float,
                      yaw_rate: float) -> None:
        vector = self.types["geometry_msgs/msg/Vector3"]
        self._write("/cmd_vel", seconds, self.types["geometry_msgs/msg/Twist"](
            linear=vector(x=float(forward), y=float(left), z=float(up)),
            angular=vector(x=0.0, y=0.0, z=float(yaw_rate))))

    def close(self) -> None:
        self.writer.close()
