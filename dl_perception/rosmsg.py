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
