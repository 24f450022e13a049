"""Hostile camera input for the fuzz suite (test/test_fuzz.py) and the soak (`dl-perception
soak`): sensor_msgs/Image and CompressedImage fields with random headers and payloads, JPEG and
PNG frames with random damage, and stamps of every kind a node must cope with. Everything is
drawn from a numpy Generator, so a seed reproduces a case."""
from __future__ import annotations

import struct
from types import SimpleNamespace

import cv2
import numpy as np

from ..core.imaging import ENCODINGS

FORMATS = ["", "jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8",
           "mono16; png compressed mono16", "tiff", "pfm", "16UC1; compressedDepth png", "JPG",
           "\u00e9", "jpeg png"]
# stamp kinds: now, unstamped, far ahead (2038 and the int32 limit), long past, out of range
STAMP_KINDS = ["now", "zero", "future", "2038", "past", "negative", "nanosec"]


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _noise(rng: np.random.Generator, size: int) -> bytes:
    return rng.bytes(size) if rng.random() < 0.7 else bytes(size)


def random_raw_image(rng: np.random.Generator) -> SimpleNamespace:
    """Fields of a sensor_msgs/Image: random encoding, sizes (mostly small, sometimes 2**31 or
    2**32 - 1), step and payload length near or far from consistent."""
    encoding = pick(rng, sorted(ENCODINGS) + ["yuv422", "", "rgb8\x00", "32FC3", "RGB8"])
    base, channels = ENCODINGS.get(encoding, ("u1", 1))
    pixel = np.dtype(base).itemsize * channels

    def side():
        return int(rng.integers(0, 40)) if rng.random() < 0.85 else \
            pick(rng, [2**31 - 1, 2**32 - 1, 65536, 300])
    height, width = side(), side()
    step = pick(rng, [width * pixel, width * pixel + 3, width * pixel - 1, 0, 2**32 - 1,
                      int(rng.integers(0, 200))])
    step = max(0, min(step, 2**32 - 1))
    exact = min(step * height, 8192)
    size = pick(rng, [exact, max(exact - 1, 0), exact + 5, int(rng.integers(0, 512))])
    return SimpleNamespace(encoding=encoding, height=height, width=width, step=step,
                           is_bigendian=pick(rng, [0, 1, 255]), data=_noise(rng, size))


def seed_images() -> dict[str, bytes]:
    """Small sound files of every format a camera might send (JPEG baseline, grey and
    progressive, PNG 8 and 16 bit and with alpha) and of formats nodes refuse (TIFF, PFM, BMP)."""
    rng = np.random.default_rng(1)
    color = cv2.GaussianBlur(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (3, 3), 1)
    gray16 = rng.integers(0, 65535, (12, 16), dtype=np.uint16)

    def encoded(extension, pixels, *params):
        return cv2.imencode(extension, pixels, list(params))[1].tobytes()
    return {
        "jpeg": encoded(".jpg", color),
        "jpeg_gray": encoded(".jpg", color[:, :, 0]),
        "jpeg_progressive": encoded(".jpg", color, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        "png": encoded(".png", color),
        "png16": encoded(".png", gray16),
        "png_alpha": encoded(".png", np.dstack([color, color[:, :, :1]])),
        "tiff": encoded(".tiff", color.astype(np.float32)),
        "pfm": encoded(".pfm", color.astype(np.float32) / 255),
        "bmp": encoded(".bmp", color),
    }


SEED_IMAGES = seed_images()


def mutated(rng: np.random.Generator, seed: bytes) -> bytes:
    """`seed` with up to three random edits: flips, cuts, insertions, deletions, an end marker
    put back, a frame size patched into the JPEG SOF or PNG IHDR."""
    data = bytearray(seed)
    for _ in range(int(rng.integers(0, 4))):
        kind = pick(rng, ["flip", "truncate", "append", "insert", "delete", "end_marker",
                          "size"])
        if kind == "flip" and data:
            data[int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))
        elif kind == "truncate":
            del data[int(rng.integers(len(data) + 1)):]
        elif kind == "append":
            data += rng.bytes(int(rng.integers(1, 17)))
        elif kind == "insert":
            at = int(rng.integers(len(data) + 1))
            data[at:at] = rng.bytes(int(rng.integers(1, 9)))
        elif kind == "delete" and data:
            at = int(rng.integers(len(data)))
            del data[at:at + int(rng.integers(1, 17))]
        elif kind == "end_marker":
            data += b"\xff\xd9"
        elif kind == "size" and len(data) > 24:
            sof = data.find(b"\xff\xc0")
            if sof >= 0:
                side = pick(rng, [0, 1, 65535])
                data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
            else:
                data[16:20] = struct.pack(">I", pick(rng, [0, 1, 65535, 2**31 - 1]))
    return bytes(data)


def random_compressed_image(rng: np.random.Generator) -> SimpleNamespace:
    """Fields of a sensor_msgs/CompressedImage: a damaged seed image (or noise) and a format
    string that may or may not say what the data is."""
    data = mutated(rng, SEED_IMAGES[pick(rng, sorted(SEED_IMAGES))]) if rng.random() < 0.9 \
        else rng.bytes(int(rng.integers(0, 65)))
    return SimpleNamespace(format=pick(rng, FORMATS), data=data)


def stamp(kind: str, rng: np.random.Generator, now_ns: int) -> tuple[int, int]:
    """(sec, nanosec) of a header stamp of the given STAMP_KINDS kind."""
    if kind == "now":
        return divmod(now_ns, 1_000_000_000)
    return {"zero": (0, 0), "future": (2**31 - 1 - 10**6, 0), "2038": (2_145_916_800, 0),
            "past": (1, 0), "negative": (-int(rng.integers(1, 2**31)), 0),
            "nanosec": (0, int(rng.integers(10**9, 2**32)))}[kind]


# what a node does with a frame of each stamp kind before looking at its pixels
EXPECTED_STAMP_DROPS = {"negative": "invalid_stamp", "nanosec": "invalid_stamp",
                        "future": "future", "2038": "future", "past": "stale"}
