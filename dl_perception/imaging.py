"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

Works on any object with the message's fields (rclpy messages, `rosbags` messages, plain
namespaces), so the core never imports rclpy. Decoding returns a view onto the message buffer
whenever the layout allows it (no padding or padding skipped by strides); copies happen only where
a consumer needs a different layout (byte order, colour conversion).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import cv2
import numpy as np

# encoding -> (numpy base type, channels)
ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "mono16": ("u2", 1),
    "8UC1": ("u1", 1),
    "8UC3": ("u1", 3),
    "16UC1": ("u2", 1),
    "32FC1": ("f4", 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "8UC3")
MONO_ENCODINGS = ("mono8", "mono16", "8UC1", "16UC1", "32FC1")

_TO_GRAY = {
    "rgb8": cv2.COLOR_RGB2GRAY,
    "bgr8": cv2.COLOR_BGR2GRAY,
    "8UC3": cv2.COLOR_BGR2GRAY,
    "rgba8": cv2.COLOR_RGBA2GRAY,
    "bgra8": cv2.COLOR_BGRA2GRAY,
}
_TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "8UC3": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
}


class ImageDecodeError(ValueError):
    """A frame that cannot be used. `reason` is a short key nodes count drops under."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class DecodedImage:
    """Pixels of one frame and the encoding they are in (HxW or HxWxC)."""

    pixels: np.ndarray
    encoding: str

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]


def _dtype(base: str, bigendian: bool) -> np.dtype:
    if base == "u1":
        return np.dtype(np.uint8)
    return np.dtype((">" if bigendian else "<") + base)


def image_to_numpy(msg) -> DecodedImage:
    """Decode a sensor_msgs/Image. Raises ImageDecodeError for anything unusable."""
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        raise ImageDecodeError(
            "encoding", f"unsupported encoding '{encoding}' (supported: {', '.join(ENCODINGS)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError("empty", f"image has zero size ({width}x{height})")
    base, channels = ENCODINGS[encoding]
    dtype = _dtype(base, bool(msg.is_bigendian))
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            "size", f"step {step} is smaller than width*pixel size {row_bytes} ({encoding})")
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size < step * height:
        raise ImageDecodeError(
            "size", f"data has {buffer.size} bytes, step*height needs {step * height}")
    shape = (height, width, channels) if channels > 1 else (height, width)
    if step % dtype.itemsize == 0:
        # Zero-copy view honouring row padding through the row stride.
        strides = (step, channels * dtype.itemsize, dtype.itemsize)[: len(shape)]
        pixels = np.ndarray(shape, dtype=dtype, buffer=buffer, strides=strides)
    else:  # misaligned rows: gather them once
        rows = buffer[: step * height].reshape(height, step)[:, :row_bytes]
        pixels = np.ascontiguousarray(rows).view(dtype).reshape(shape)
    return DecodedImage(pixels, encoding)


def numpy_to_image_fields(pixels: np.ndarray, encoding: str) -> dict:
    """Fields of a sensor_msgs/Image holding `pixels` (header excluded)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported encoding '{encoding}'")
    base, channels = ENCODINGS[encoding]
    expected_ndim = 3 if channels > 1 else 2
    if pixels.ndim == 3 and channels == 1 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim != expected_ndim or (channels > 1 and pixels.shape[2] != channels):
        raise ValueError(f"array of shape {pixels.shape} does not fit encoding {encoding}")
    dtype = _dtype(base, False)
    if pixels.dtype != dtype:
        if pixels.dtype.kind != dtype.kind or pixels.dtype.itemsize != dtype.itemsize:
            raise ValueError(f"array dtype {pixels.dtype} does not fit encoding {encoding}")
        pixels = pixels.astype(dtype)
    height, width = pixels.shape[:2]
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0 if dtype.itemsize == 1 else int(sys.byteorder == "big"),
        "step": width * channels * dtype.itemsize,
        "data": np.ascontiguousarray(pixels).tobytes(),
    }


def compressed_to_numpy(msg) -> DecodedImage:
    """Decode a sensor_msgs/CompressedImage (jpeg or png, as compressed_image_transport writes)."""
    fmt = (msg.format or "").lower()
    if "compresseddepth" in fmt:
        raise ImageDecodeError("encoding", f"compressedDepth images are not supported ('{msg.format}')")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageDecodeError("empty", "compressed image has no data")
    is_jpeg = data.size >= 2 and data[0] == 0xFF and data[1] == 0xD8
    if is_jpeg and not (data[-2] == 0xFF and data[-1] == 0xD9):
        # libjpeg decodes truncated files into grey-padded images with only a warning.
        raise ImageDecodeError("corrupt", f"JPEG data is truncated ({data.size} bytes, no end marker)")
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.size == 0:
        raise ImageDecodeError("corrupt", f"cannot decode compressed image (format '{msg.format}')")
    if pixels.ndim == 2:
        encoding = "mono16" if pixels.dtype == np.uint16 else "mono8"
    elif pixels.shape[2] == 4:
        encoding = "bgra8"
    else:
        encoding = "bgr8"
    if pixels.dtype != np.uint8 and encoding != "mono16":
        pixels = (pixels >> 8).astype(np.uint8)
    return DecodedImage(pixels, encoding)


def numpy_to_compressed_fields(pixels: np.ndarray, encoding: str, fmt: str = "jpeg",
                               quality: int = 90) -> dict:
    """Fields of a sensor_msgs/CompressedImage (format string as compressed_image_transport)."""
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"unsupported compression '{fmt}'")
    if encoding in COLOR_ENCODINGS:
        source, stored = cv2.cvtColor(to_rgb8(pixels, encoding), cv2.COLOR_RGB2BGR), "bgr8"
    else:
        source, stored = native(pixels), encoding
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, buf = cv2.imencode("." + ("jpg" if fmt == "jpeg" else "png"), source, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {encoding} image as {fmt}")
    return {"format": f"{encoding}; {fmt} compressed {stored}", "data": buf.tobytes()}


def native(pixels: np.ndarray) -> np.ndarray:
    """The same pixels in native byte order (copy only when they are not)."""
    if pixels.dtype.byteorder in ("=", "|"):  # numpy reports native order as "="
        return pixels
    return pixels.astype(pixels.dtype.newbyteorder("="))


def _check_finite(pixels: np.ndarray) -> None:
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        bad = int((~np.isfinite(pixels)).sum())
        raise ImageDecodeError("non_finite", f"float image has {bad} NaN/inf pixels")


def to_gray(image: DecodedImage) -> np.ndarray:
    """Single-channel pixels in the image's own depth (uint8, uint16 or float32 in [0, 1])."""
    if image.encoding in _TO_GRAY:
        return cv2.cvtColor(native(image.pixels), _TO_GRAY[image.encoding])
    pixels = native(image.pixels)
    _check_finite(pixels)
    return pixels


def gray_scale_factor(gray: np.ndarray) -> float:
    """Factor mapping `to_gray` values onto [0, 1]."""
    return {"u1": 1.0 / 255.0, "u2": 1.0 / 65535.0}.get(gray.dtype.str[1:], 1.0)


def to_rgb8(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """HxWx3 uint8 RGB from any supported encoding (mono replicated, float assumed in [0, 1])."""
    pixels = native(pixels)
    if encoding == "rgb8":
        return pixels
    if encoding in _TO_RGB:
        return cv2.cvtColor(pixels, _TO_RGB[encoding])
    gray = to_gray(DecodedImage(pixels, encoding))
    if gray.dtype == np.uint16:
        gray = (gray >> 8).astype(np.uint8)
    elif gray.dtype.kind == "f":
        gray = (np.clip(gray, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def decode(msg) -> DecodedImage:
    """Decode either message type (CompressedImage has `format`, Image has `encoding`)."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_to_numpy(msg)
    return image_to_numpy(msg)
