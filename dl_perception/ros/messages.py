"""Building ROS messages from core data (numpy images, stamps)."""
from __future__ import annotations

import importlib

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..core.imaging import numpy_to_compressed_fields, numpy_to_image_fields


def message_class(typename: str):
    """The rclpy message class of a ROS type name ('pkg/msg/Type'); ImportError when its Python
    package is not installed here."""
    try:
        package, kind, name = typename.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ValueError, ImportError, AttributeError):
        raise ImportError(f"no Python message class for '{typename}' here") from None


def stamp_to_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(seconds: float) -> Time:
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def header(stamp: Time, frame_id: str) -> Header:
    return Header(stamp=stamp, frame_id=frame_id)


def image_msg(pixels: np.ndarray, encoding: str, msg_header: Header) -> Image:
    return Image(header=msg_header, **numpy_to_image_fields(pixels, encoding))


def compressed_msg(pixels: np.ndarray, encoding: str, msg_header: Header, fmt: str = "jpeg",
                   quality: int = 90) -> CompressedImage:
    return CompressedImage(header=msg_header,
                           **numpy_to_compressed_fields(pixels, encoding, fmt, quality))


def camera_info_msg(width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                    msg_header: Header):
    from sensor_msgs.msg import CameraInfo

    return CameraInfo(
        header=msg_header, width=width, height=height, distortion_model="plumb_bob",
        d=[0.0] * 5, k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


def pointcloud2_msg(columns: dict, msg_header: Header):
    """A height-1 PointCloud2 from named numpy columns (see dl_perception.core.pointcloud.pack)."""
    from sensor_msgs.msg import PointCloud2, PointField

    from ..core.pointcloud import pack

    packed = pack(columns)
    return PointCloud2(
        header=msg_header, height=1, width=packed["width"], is_dense=True,
        is_bigendian=packed["is_bigendian"], point_step=packed["point_step"],
        row_step=packed["point_step"] * packed["width"],
        fields=[PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in packed["fields"]],
        data=packed["data"])
