"""ROS 2 messages as plain Python dataclasses (the `rosbags` typestore of ROS 2 Kilted), so core
code builds, serializes and reads the messages the nodes publish without rclpy. A message
serialized here is byte for byte what rclpy would put on the wire (CDR with its 4-byte
encapsulation header): the ROS nodes publish these bytes, and bags store them."""
from __future__ import annotations

import numpy as np
import yaml
from rosbags.typesys import Stores, get_typestore

from .imaging import numpy_to_image_fields

# the distribution whose message definitions the PyPI rclpy wheels carry
TYPESTORE = get_typestore(Stores.ROS2_KILTED)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
FLOAT32 = "std_msgs/msg/Float32"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)


def message_class(typename: str, typestore=TYPESTORE):
    try:
        return typestore.types[typename]
    except KeyError:
        raise ValueError(f"unknown message type '{typename}'") from None


def serialize(message, typestore=TYPESTORE) -> bytes:
    return bytes(typestore.serialize_cdr(message, message.__msgtype__))


def deserialize(raw: bytes, typename: str, typestore=TYPESTORE):
    return typestore.deserialize_cdr(raw, typename)


def stamp_ns(stamp) -> int:
    """Nanoseconds of any builtin_interfaces/Time-like object (rclpy or rosbags)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def time(nanoseconds: int):
    sec, nanosec = divmod(int(nanoseconds), 1_000_000_000)
    return message_class("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)


def header(nanoseconds: int, frame_id: str):
    return message_class("std_msgs/msg/Header")(stamp=time(nanoseconds), frame_id=frame_id)


def float32(value: float):
    return message_class(FLOAT32)(data=float(value))


def image(pixels: np.ndarray, encoding: str, msg_header):
    fields = numpy_to_image_fields(pixels, encoding)
    fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8)
    return message_class(IMAGE)(header=msg_header, **fields)


def compressed_image(data: bytes, fmt: str, msg_header):
    return message_class(COMPRESSED_IMAGE)(
        header=msg_header, format=fmt, data=np.frombuffer(data, dtype=np.uint8))


def read_camera_calibration(path: str) -> dict:
    """CameraInfo fields from a YAML file in the ROS camera_calibration format (what
    camera_calibration and camera_info_manager write)."""
    with open(path) as handle:
        data = yaml.safe_load(handle)
    try:
        def matrix(key, size):
            values = [float(v) for v in data[key]["data"]]
            if size is not None and len(values) != size:
                raise ValueError(f"'{key}' has {len(values)} values, expected {size}")
            return values

        return {
            "width": int(data["image_width"]), "height": int(data["image_height"]),
            "distortion_model": str(data.get("distortion_model", "plumb_bob")),
            "d": matrix("distortion_coefficients", None) if "distortion_coefficients" in data
            else [],
            "k": matrix("camera_matrix", 9),
            "r": matrix("rectification_matrix", 9) if "rectification_matrix" in data
            else [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "p": matrix("projection_matrix", 12),
        }
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a camera_calibration YAML (missing {error})") from None


def camera_info(calibration: dict, msg_header):
    roi = message_class("sensor_msgs/msg/RegionOfInterest")(
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return message_class(CAMERA_INFO)(
        header=msg_header, height=calibration["height"], width=calibration["width"],
        distortion_model=calibration["distortion_model"],
        d=np.asarray(calibration["d"], dtype=np.float64),
        k=np.asarray(calibration["k"], dtype=np.float64),
        r=np.asarray(calibration["r"], dtype=np.float64),
        p=np.asarray(calibration["p"], dtype=np.float64), binning_x=0, binning_y=0, roi=roi)


POINT_CLOUD2 = "sensor_msgs/msg/PointCloud2"
POSE_WITH_COVARIANCE = "geometry_msgs/msg/PoseWithCovarianceStamped"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"


def pointcloud2(columns: dict, msg_header):
    """A height-1 PointCloud2 of named numpy columns (dl_perception.core.pointcloud.pack)."""
    from .pointcloud import pack

    packed = pack(columns)
    field_class = message_class("sensor_msgs/msg/PointField")
    return message_class(POINT_CLOUD2)(
        header=msg_header, height=1, width=packed["width"],
        fields=[field_class(name=n, offset=o, datatype=d, count=c)
                for n, o, d, c in packed["fields"]],
        is_bigendian=packed["is_bigendian"], point_step=packed["point_step"],
        row_step=packed["point_step"] * packed["width"],
        data=np.frombuffer(packed["data"], dtype=np.uint8), is_dense=True)


def empty_camera_info(msg_header, width: int = 0, height: int = 0):
    """A CameraInfo with the defaults of a freshly made rclpy one (K, R, P zero: uncalibrated)."""
    roi = message_class("sensor_msgs/msg/RegionOfInterest")(
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return message_class(CAMERA_INFO)(
        header=msg_header, height=height, width=width, distortion_model="",
        d=np.zeros(0, np.float64), k=np.zeros(9, np.float64), r=np.zeros(9, np.float64),
        p=np.zeros(12, np.float64), binning_x=0, binning_y=0, roi=roi)


def pose_with_covariance(msg_header, position, quaternion, covariance):
    """PoseWithCovarianceStamped; quaternion x, y, z, w; covariance 6x6 (x, y, z, rotation)."""
    point = message_class("geometry_msgs/msg/Point")(*(float(v) for v in position))
    orientation = message_class("geometry_msgs/msg/Quaternion")(*(float(v) for v in quaternion))
    pose = message_class("geometry_msgs/msg/Pose")(position=point, orientation=orientation)
    return message_class(POSE_WITH_COVARIANCE)(
        header=msg_header, pose=message_class("geometry_msgs/msg/PoseWithCovariance")(
            pose=pose, covariance=np.asarray(covariance, dtype=np.float64).reshape(36)))


def transform_stamped(msg_header, child_frame_id: str, translation, quaternion):
    """T_parent_child (parent = the header's frame) as geometry_msgs/TransformStamped."""
    vector = message_class("geometry_msgs/msg/Vector3")(*(float(v) for v in translation))
    rotation = message_class("geometry_msgs/msg/Quaternion")(*(float(v) for v in quaternion))
    return message_class("geometry_msgs/msg/TransformStamped")(
        header=msg_header, child_frame_id=child_frame_id,
        transform=message_class("geometry_msgs/msg/Transform")(translation=vector,
                                                                rotation=rotation))


def tf_message(transforms: list):
    return message_class(TF_MESSAGE)(transforms=list(transforms))
