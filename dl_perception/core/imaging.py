"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

Works on any object with the message's fields (rclpy messages, `rosbags` messages, plain
namespaces), so the core never imports rclpy. Decoding returns a view onto the message buffer
whenever the layout allows it (no padding or padding skipped by strides); copies happen only where
a consumer needs a different layout (byte order, colour conversion).
"""
from __future__ import annotations

import os
import re
import struct
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

# Frames with more pixels are dropped as `too_large` before anything is decoded or allocated:
# a 4K (4096x2160) frame passes. Nodes take it from their `max_pixels` parameter.
DEFAULT_MAX_PIXELS = 4096 * 2160

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


def _field(msg, name: str, kind=None):
    """A message field, `kind`-converted; a message without it (a bag's own definition of the
    type, a foreign object) is unusable, not a crash."""
    try:
        value = getattr(msg, name)
        return kind(value) if kind is not None else value
    except (AttributeError, TypeError, ValueError) as error:
        raise ImageDecodeError("corrupt", f"message has no usable '{name}' field "
                                          f"({type(error).__name__})") from None


def _check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError("too_large", f"frame is {width}x{height} = {width * height} "
                                            f"pixels, more than max_pixels {max_pixels}")


def image_to_numpy(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode a sensor_msgs/Image. Raises ImageDecodeError for anything unusable."""
    encoding = _field(msg, "encoding", str)
    if encoding not in ENCODINGS:
        raise ImageDecodeError(
            "encoding", f"unsupported encoding '{encoding}' (supported: {', '.join(ENCODINGS)})")
    height, width, step = (_field(msg, name, int) for name in ("height", "width", "step"))
    if height <= 0 or width <= 0:
        raise ImageDecodeError("empty", f"image has zero size ({width}x{height})")
    _check_pixel_count(width, height, max_pixels)
    base, channels = ENCODINGS[encoding]
    dtype = _dtype(base, _field(msg, "is_bigendian", bool))
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            "size", f"step {step} is smaller than width*pixel size {row_bytes} ({encoding})")
    buffer = np.frombuffer(_field(msg, "data"), dtype=np.uint8)
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


JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# magic numbers of image formats OpenCV would also decode, refused unless declared as one we take
OTHER_FORMATS = {b"II*\x00": "tiff", b"MM\x00*": "tiff", b"PF\n": "pfm", b"Pf\n": "pfm",
                 b"BM": "bmp", b"GIF8": "gif", b"RIFF": "webp", b"\x00\x00\x00\x0cjP": "jpeg2000",
                 b"#?RADIANCE": "hdr", b"\x76\x2f\x31\x01": "exr"}
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic)
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def declared_format(fmt: str) -> str | None:
    """'jpeg' or 'png' from a CompressedImage format ('jpeg', 'rgb8; jpeg compressed bgr8',
    ...), None when empty, else the string itself (a format we do not take)."""
    text = (fmt or "").strip().lower()
    if not text:
        return None
    if "jpeg" in text or "jpg" in text:
        return "jpeg"
    if "png" in text:
        return "png"
    return text


def _sniffed_format(data: bytes) -> str | None:
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    return next((name for magic, name in OTHER_FORMATS.items() if data.startswith(magic)), None)


def jpeg_frame_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header, None when there is none before the
    scan (walks the marker segments; reads nothing of the compressed data)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            pos += 2
            continue
        if marker == 0xDA or marker == 0xD9:  # scan or end before any frame header
            return None
        length = struct.unpack_from(">H", data, pos + 2)[0]
        if marker in JPEG_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        pos += 2 + length
    return None


def png_frame_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, None when it does not start with one."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return width, height


# libjpeg reports damage it can decode around (a cut-short scan padded with grey, a bad Huffman
# code, junk between markers) only as a warning printed on the process's stderr, which OpenCV
# neither returns nor raises. Decoding with file descriptor 2 pointed at a buffer of our own
# catches those lines; what other threads print meanwhile is passed on to the real stderr.
_LIBJPEG_WARNING = re.compile(r"JPEG|Huffman|marker|SOS|progression|scanlines|arithmetic code",
                              re.IGNORECASE)
_capture_lock = threading.Lock()
_capture_fd: int | None = None


@contextmanager
def _native_stderr_captured(lines: list[str]):
    global _capture_fd
    with _capture_lock:
        if _capture_fd is None:
            _capture_fd = os.memfd_create("dl_perception_decoder_messages")
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(_capture_fd, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            size = os.lseek(_capture_fd, 0, os.SEEK_END)
            text = os.pread(_capture_fd, size, 0).decode("utf-8", "replace") if size else ""
            os.ftruncate(_capture_fd, 0)
            os.lseek(_capture_fd, 0, os.SEEK_SET)
    for line in text.splitlines():
        if _LIBJPEG_WARNING.search(line):
            lines.append(line.strip())
        else:
            print(line, file=sys.stderr)


def compressed_to_numpy(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode a sensor_msgs/CompressedImage (jpeg or png, as compressed_image_transport writes).
    The data must be what `format` declares (either, when it is empty); the frame size is read
    from the header and checked against `max_pixels` before decoding; a JPEG the decoder warns
    about is corrupt, whatever it would have made of it."""
    declared_text = _field(msg, "format", lambda value: str(value or ""))
    if "compresseddepth" in declared_text.lower():
        raise ImageDecodeError("encoding", f"compressedDepth images are not supported "
                                           f"('{declared_text}')")
    data = _field(msg, "data", bytes)
    if len(data) == 0:
        raise ImageDecodeError("empty", "compressed image has no data")
    declared, found = declared_format(declared_text), _sniffed_format(data)
    if declared not in (None, "jpeg", "png"):
        raise ImageDecodeError("format", f"unsupported compressed format '{declared_text}' "
                                         "(jpeg or png)")
    if found not in ("jpeg", "png"):
        if found is not None:
            raise ImageDecodeError("format", f"data is {found}, format says "
                                             f"'{declared_text or 'jpeg or png'}'")
        raise ImageDecodeError("corrupt", f"data is not {declared or 'JPEG or PNG'} "
                                          f"(format '{declared_text}')")
    if declared is not None and found != declared:
        raise ImageDecodeError("format", f"data is {found}, format says '{declared_text}'")
    size = jpeg_frame_size(data) if found == "jpeg" else png_frame_size(data)
    if size is None:
        raise ImageDecodeError("corrupt", f"{found} data has no readable frame header")
    if size[0] <= 0 or size[1] <= 0:
        raise ImageDecodeError("empty", f"{found} header declares a {size[0]}x{size[1]} frame")
    _check_pixel_count(*size, max_pixels)
    buffer = np.frombuffer(data, dtype=np.uint8)
    warnings: list[str] = []
    try:
        if found == "jpeg":
            with _native_stderr_captured(warnings):
                pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        else:
            pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise ImageDecodeError("corrupt", f"cannot decode {found}: {str(error).strip()[-200:]}") \
            from None
    if warnings:
        raise ImageDecodeError("corrupt", f"{found} data is damaged: {warnings[0]}")
    if pixels is None or pixels.size == 0:
        raise ImageDecodeError("corrupt", f"cannot decode {found} data")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if pixels.dtype not in (np.uint8, np.uint16) or channels not in (1, 3, 4):
        raise ImageDecodeError("format", f"{found} holds {channels}-channel {pixels.dtype} "
                                         "pixels (8 or 16 bits, 1, 3 or 4 channels)")
    if channels == 1:
        encoding = "mono16" if pixels.dtype == np.uint16 else "mono8"
    elif channels == 4:
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


def decode(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode either message type (CompressedImage has `format`, Image has `encoding`); frames
    of more than `max_pixels` pixels are dropped as `too_large`."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_to_numpy(msg, max_pixels)
    return image_to_numpy(msg, max_pixels)
