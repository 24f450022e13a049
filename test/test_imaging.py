"""Image conversion without cv_bridge, on synthetic and real (TUM fr3) frames."""
import glob
import os
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from dl_perception.core.imaging import (ENCODINGS, DecodedImage, ImageDecodeError,
                                        compressed_to_numpy, decode, image_to_numpy,
                                        numpy_to_compressed_fields, numpy_to_image_fields, to_gray,
                                        to_rgb8)


def _msg(**fields):
    return SimpleNamespace(**fields)


def _random_pixels(encoding, height=7, width=5, seed=0):
    base, channels = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (height, width, channels) if channels > 1 else (height, width)
    if base == "f4":
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(np.dtype(base)).max, shape, dtype=np.dtype(base))


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip_every_encoding(encoding):
    pixels = _random_pixels(encoding)
    decoded = image_to_numpy(_msg(**numpy_to_image_fields(pixels, encoding)))
    assert decoded.encoding == encoding
    np.testing.assert_array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_step_padding_is_honoured_without_copy(encoding):
    pixels = _random_pixels(encoding, 6, 4, seed=1)
    fields = numpy_to_image_fields(pixels, encoding)
    row = fields["step"]
    padded = bytearray()
    for r in range(6):  # 8 bytes of junk after every row
        padded += fields["data"][r * row:(r + 1) * row] + b"\xab" * 8
    msg = _msg(**{**fields, "step": row + 8, "data": bytes(padded)})
    decoded = image_to_numpy(msg)
    np.testing.assert_array_equal(decoded.pixels, pixels)
    assert np.shares_memory(decoded.pixels, np.frombuffer(msg.data, np.uint8))


def test_unpadded_decode_is_a_view():
    pixels = _random_pixels("rgb8", 10, 10)
    msg = _msg(**numpy_to_image_fields(pixels, "rgb8"))
    assert np.shares_memory(image_to_numpy(msg).pixels, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
def test_big_endian_data(encoding):
    pixels = _random_pixels(encoding, 3, 4)
    big = pixels.astype(pixels.dtype.newbyteorder(">"))
    msg = _msg(height=3, width=4, encoding=encoding, is_bigendian=1,
               step=4 * pixels.dtype.itemsize, data=big.tobytes())
    decoded = image_to_numpy(msg)
    np.testing.assert_array_equal(decoded.pixels, pixels)  # values, whatever the byte order
    assert to_gray(decoded).dtype.byteorder in ("=", "|")  # consumers get native order


@pytest.mark.parametrize("fields,reason", [
    (dict(height=2, width=2, encoding="yuv422", is_bigendian=0, step=4, data=b"\0" * 8),
     "encoding"),
    (dict(height=0, width=0, encoding="rgb8", is_bigendian=0, step=0, data=b""), "empty"),
    (dict(height=4, width=4, encoding="rgb8", is_bigendian=0, step=12, data=b"\0" * 47), "size"),
    (dict(height=4, width=4, encoding="rgb8", is_bigendian=0, step=8, data=b"\0" * 64), "size"),
])
def test_bad_images_raise_with_reason(fields, reason):
    with pytest.raises(ImageDecodeError) as error:
        image_to_numpy(_msg(**fields))
    assert error.value.reason == reason


def test_nan_in_float_image_is_rejected_for_models():
    pixels = np.zeros((4, 4), np.float32)
    pixels[1, 2] = np.nan
    decoded = image_to_numpy(_msg(**numpy_to_image_fields(pixels, "32FC1")))
    with pytest.raises(ImageDecodeError) as error:
        to_gray(decoded)
    assert error.value.reason == "non_finite"


def test_corrupt_and_truncated_jpeg():
    pixels = _random_pixels("rgb8", 32, 32)
    good = numpy_to_compressed_fields(pixels, "rgb8", "jpeg")
    with pytest.raises(ImageDecodeError) as error:
        compressed_to_numpy(_msg(format="jpeg", data=b"\xff\xd8 this is not a jpeg \xff\xd9"))
    assert error.value.reason == "corrupt"
    with pytest.raises(ImageDecodeError) as error:
        compressed_to_numpy(_msg(format="jpeg", data=good["data"][: len(good["data"]) // 2]))
    assert error.value.reason == "corrupt"
    with pytest.raises(ImageDecodeError) as error:
        compressed_to_numpy(_msg(format="jpeg", data=b""))
    assert error.value.reason == "empty"


def _tum_frames(shared_data):
    paths = sorted(glob.glob(os.path.join(shared_data, "tum_fr3_long_office", "rgb", "*.png")))
    assert len(paths) == 17
    return paths


def test_real_frames_every_encoding(shared_data):
    for path in _tum_frames(shared_data)[:4]:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        variants = {"bgr8": bgr, "rgb8": rgb, "rgba8": cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA),
                    "bgra8": cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), "mono8": gray,
                    "mono16": gray.astype(np.uint16) * 257,
                    "32FC1": gray.astype(np.float32) / 255.0}
        for encoding, pixels in variants.items():
            decoded = decode(_msg(header=None, **numpy_to_image_fields(pixels, encoding)))
            assert decoded.pixels.shape[:2] == (480, 640)
            np.testing.assert_array_equal(decoded.pixels, pixels)
            if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
                np.testing.assert_array_equal(to_rgb8(decoded.pixels, encoding), rgb)
                np.testing.assert_array_equal(to_gray(decoded), gray)


def test_real_frames_compressed(shared_data):
    path = _tum_frames(shared_data)[0]
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    png = numpy_to_compressed_fields(bgr, "bgr8", "png")
    decoded = compressed_to_numpy(_msg(**png))
    assert decoded.encoding == "bgr8" and png["format"] == "bgr8; png compressed bgr8"
    np.testing.assert_array_equal(decoded.pixels, bgr)  # png is lossless
    jpeg = compressed_to_numpy(_msg(**numpy_to_compressed_fields(bgr, "bgr8", "jpeg", 95)))
    assert np.abs(jpeg.pixels.astype(int) - bgr).mean() < 3.0
    gray16 = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    mono16 = compressed_to_numpy(_msg(**numpy_to_compressed_fields(gray16, "mono16", "png")))
    assert mono16.encoding == "mono16"
    np.testing.assert_array_equal(mono16.pixels, gray16)


def test_decoded_image_dimensions():
    image = DecodedImage(np.zeros((3, 5, 3), np.uint8), "rgb8")
    assert (image.height, image.width) == (3, 5)
