"""`dl-perception bag from-images`: a folder of frames -> a rosbag2 bag of sensor_msgs/Image (or
CompressedImage) with optional CameraInfo, stamped from a TUM list (rgb.txt) or a fixed rate.
Every message is logged at its header stamp, so replay and offline processing see the
recording's own timing."""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..core import rosmsg
from ..core.imaging import numpy_to_compressed_fields
from .reader import BagError
from .writer import BagWriter

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")
ENCODINGS = ("rgb8", "bgr8", "mono8")


@dataclass
class ConversionResult:
    frames: int = 0
    camera_infos: int = 0
    start_ns: int = 0
    end_ns: int = 0
    topics: dict = field(default_factory=dict)
    dropped: list = field(default_factory=list)  # (file, reason)


def tum_frames(list_path: str) -> list[tuple[int, str]]:
    """(stamp ns, image path) from a TUM RGB-D list ('timestamp filename' lines, # comments);
    file names are relative to the list's folder."""
    folder = os.path.dirname(os.path.abspath(list_path))
    frames = []
    with open(list_path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2:
                raise ValueError(f"{list_path}:{number}: expected 'timestamp filename'")
            seconds, _, fraction = parts[0].partition(".")
            try:  # exact nanoseconds from the decimal text, no float rounding
                stamp = int(seconds) * 1_000_000_000 + int((fraction + "0" * 9)[:9] or 0)
            except ValueError:
                raise ValueError(f"{list_path}:{number}: bad timestamp '{parts[0]}'") from None
            frames.append((stamp, os.path.join(folder, parts[1])))
    if not frames:
        raise ValueError(f"{list_path} lists no frames")
    return frames


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def rate_frames(folder: str, rate_hz: float, start_ns: int) -> list[tuple[int, str]]:
    if rate_hz <= 0:
        raise ValueError(f"--rate must be positive, got {rate_hz}")
    names = sorted((n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES)),
                   key=_natural_key)
    if not names:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    period = 1e9 / rate_hz
    return [(start_ns + int(round(i * period)), os.path.join(folder, n))
            for i, n in enumerate(names)]


def _load(path: str, encoding: str) -> tuple[np.ndarray, bytes]:
    with open(path, "rb") as handle:
        data = handle.read()
    flag = cv2.IMREAD_GRAYSCALE if encoding == "mono8" else cv2.IMREAD_COLOR
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flag) if data else None
    if pixels is None or pixels.size == 0:
        raise ValueError("not a readable image")
    if encoding == "rgb8":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    return pixels, data


def _compressed(pixels: np.ndarray, data: bytes, encoding: str) -> tuple[str, bytes]:
    """Format string and bytes as compressed_image_transport writes them; a PNG or JPEG file
    whose colour layout fits `encoding` is stored as it is (no re-encoding)."""
    fmt = "png" if data.startswith(b"\x89PNG") else "jpeg" if data.startswith(b"\xff\xd8") \
        else None
    source = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    source_gray = source.ndim == 2
    if fmt and source.dtype == np.uint8 and source_gray == (encoding == "mono8") and \
            (source_gray or source.shape[2] == 3):
        return f"{encoding}; {fmt} compressed {'mono8' if source_gray else 'bgr8'}", data
    fields = numpy_to_compressed_fields(pixels, encoding, "png")
    return fields["format"], fields["data"]


def images_to_bag(folder: str, out: str, *, rate_hz: float | None = None,
                  tum_list: str | None = None, start_ns: int | None = None,
                  calibration: str | None = None, encoding: str = "rgb8",
                  compressed: bool = False, topic: str = "/camera/image_raw",
                  frame_id: str = "camera_optical_frame", storage: str = "mcap",
                  on_drop=None) -> ConversionResult:
    if encoding not in ENCODINGS:
        raise ValueError(f"--encoding must be one of {', '.join(ENCODINGS)}, got '{encoding}'")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no such folder: {folder}")
    if (rate_hz is None) == (tum_list is None):
        raise ValueError("give either --rate HZ or --tum LIST")
    if tum_list is not None:
        if not os.path.isfile(tum_list) and os.path.isfile(os.path.join(folder, tum_list)):
            tum_list = os.path.join(folder, tum_list)
        frames = tum_frames(tum_list)
    else:
        frames = rate_frames(folder, rate_hz, time.time_ns() if start_ns is None else start_ns)
    camera = rosmsg.read_camera_calibration(calibration) if calibration else None
    image_topic = topic + "/compressed" if compressed else topic
    info_topic = topic.rsplit("/", 1)[0] + "/camera_info"
    result = ConversionResult()
    if os.path.exists(out):
        raise BagError(f"{out} exists already; choose another output or delete it")
    with BagWriter(out, storage=storage) as bag:
        for stamp, path in frames:
            try:
                pixels, data = _load(path, encoding)
            except (OSError, ValueError) as error:
                result.dropped.append((path, str(error)))
                if on_drop:
                    on_drop(path, str(error))
                continue
            header = rosmsg.header(stamp, frame_id)
            if compressed:
                fmt, payload = _compressed(pixels, data, encoding)
                message = rosmsg.compressed_image(payload, fmt, header)
            else:
                message = rosmsg.image(pixels, encoding, header)
            bag.write(image_topic, stamp, message)
            if camera is not None:
                if (camera["width"], camera["height"]) != (pixels.shape[1], pixels.shape[0]):
                    raise BagError(f"{calibration} describes {camera['width']}x"
                                   f"{camera['height']} images, {path} is "
                                   f"{pixels.shape[1]}x{pixels.shape[0]}")
                bag.write(info_topic, stamp, rosmsg.camera_info(camera, header))
                result.camera_infos += 1
            result.frames += 1
            result.start_ns = stamp if result.frames == 1 else min(result.start_ns, stamp)
            result.end_ns = max(result.end_ns, stamp)
        result.topics = dict(bag.counts)
    return result
