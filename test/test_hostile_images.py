"""Hostile camera frames (issue 21, items 4-5): JPEG damage only the decoder notices, the
`format` field, float payloads, and frames whose header asks for more pixels than allowed."""
import resource
import struct
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from dl_perception.core.imaging import (DEFAULT_MAX_PIXELS, ImageDecodeError, compressed_to_numpy,
                                        decode, image_to_numpy, numpy_to_compressed_fields)


def _msg(**fields):
    return SimpleNamespace(**fields)


def _scene(height=240, width=320, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (9, 9), 3)


def _jpeg(pixels=None, quality=90) -> bytes:
    ok, buf = cv2.imencode(".jpg", _scene() if pixels is None else pixels,
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes()


def _reason(msg, **kwargs) -> str:
    with pytest.raises(ImageDecodeError) as error:
        decode(msg, **kwargs)
    return error.value.reason


def test_jpeg_cut_short_with_its_end_marker_put_back_is_corrupt():
    data = _jpeg()
    assert _reason(_msg(format="jpeg", data=data[: len(data) // 10] + b"\xff\xd9")) == "corrupt"


def test_jpeg_cut_short_without_end_marker_is_corrupt():
    data = _jpeg()
    assert _reason(_msg(format="jpeg", data=data[: len(data) // 2])) == "corrupt"


def test_jpeg_with_a_trailing_byte_decodes():
    data = _jpeg()
    reference = decode(_msg(format="jpeg", data=data)).pixels
    decoded = decode(_msg(format="rgb8; jpeg compressed bgr8", data=data + b"\x00"))
    np.testing.assert_array_equal(decoded.pixels, reference)


def test_jpeg_with_damaged_entropy_data_is_corrupt():
    data = bytearray(_jpeg())
    # a run of 0xFF 0x00 pairs is a stuffed byte each, a marker-like run of 0xFF 0xD5 (RST5) in
    # the middle of the scan is not: libjpeg warns and resynchronises
    middle = len(data) // 2
    data[middle:middle + 2] = b"\xff\xd5"
    assert _reason(_msg(format="jpeg", data=bytes(data))) == "corrupt"


def _png(pixels) -> bytes:
    ok, buf = cv2.imencode(".png", pixels)
    return buf.tobytes()


@pytest.mark.parametrize("declared,payload", [
    ("png", "jpeg"), ("jpeg", "png"), ("tiff", "tiff"), ("pfm", "pfm"), ("", "tiff"),
    ("bmp", "bmp"), ("jpeg", "pfm")])
def test_the_format_field_is_honoured(declared, payload):
    pixels = _scene(24, 32)
    data = {"jpeg": lambda: _jpeg(pixels), "png": lambda: _png(pixels),
            "tiff": lambda: cv2.imencode(".tiff", pixels.astype(np.float32) / 255)[1].tobytes(),
            "pfm": lambda: cv2.imencode(".pfm", pixels.astype(np.float32) / 255)[1].tobytes(),
            "bmp": lambda: cv2.imencode(".bmp", pixels)[1].tobytes()}[payload]()
    assert _reason(_msg(format=declared, data=data)) == "format"


def test_an_empty_format_field_accepts_jpeg_and_png():
    pixels = _scene(24, 32)
    assert decode(_msg(format="", data=_png(pixels))).pixels.shape == (24, 32, 3)
    assert decode(_msg(format="", data=_jpeg(pixels))).pixels.shape == (24, 32, 3)


def _png_of_size(width: int, height: int) -> bytes:
    """A valid grey PNG of any size, a few hundred KB at most (one zlib stream of zero rows)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                  0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_a_png_larger_than_max_pixels_is_refused_from_its_header():
    data = _png_of_size(10000, 10000)
    assert len(data) < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert _reason(_msg(format="png", data=data)) == "too_large"
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50  # MiB
    small = _png_of_size(64, 48)
    assert _reason(_msg(format="png", data=small), max_pixels=64 * 48 - 1) == "too_large"
    assert decode(_msg(format="png", data=small), max_pixels=64 * 48).pixels.shape == (48, 64)


def test_a_jpeg_header_declaring_a_huge_frame_is_refused_before_decoding():
    data = bytearray(_jpeg(_scene(24, 32)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    assert _reason(_msg(format="jpeg", data=bytes(data))) == "too_large"


def test_raw_images_larger_than_max_pixels_are_dropped():
    pixels = np.zeros((300, 400), np.uint8)
    msg = _msg(height=300, width=400, encoding="mono8", is_bigendian=0, step=400,
               data=pixels.tobytes())
    assert image_to_numpy(msg).pixels.shape == (300, 400)
    assert _reason(msg, max_pixels=300 * 400 - 1) == "too_large"
    assert DEFAULT_MAX_PIXELS >= 3840 * 2160  # a 4K frame passes by default


def test_sixteen_bit_and_alpha_pngs_decode_to_supported_encodings():
    gray16 = (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80)
    assert compressed_to_numpy(_msg(format="png", data=_png(gray16))).encoding == "mono16"
    rgba16 = np.dstack([gray16] * 4)
    decoded = compressed_to_numpy(_msg(format="png", data=_png(rgba16)))
    assert decoded.encoding == "bgra8" and decoded.pixels.dtype == np.uint8


def test_float_raw_payloads_with_nan_are_dropped_with_a_reason():
    from dl_perception.core.imaging import to_gray
    pixels = np.full((4, 4), np.nan, np.float32)
    msg = _msg(height=4, width=4, encoding="32FC1", is_bigendian=0, step=16,
               data=pixels.tobytes())
    with pytest.raises(ImageDecodeError) as error:
        to_gray(decode(msg))
    assert error.value.reason == "non_finite"


def test_compressed_fields_round_trip_through_the_checks():
    pixels = _scene(48, 64)
    for fmt in ("jpeg", "png"):
        fields = numpy_to_compressed_fields(pixels, "bgr8", fmt)
        assert decode(_msg(**fields)).pixels.shape == (48, 64, 3)
