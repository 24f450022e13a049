"""The declarative preprocessing (core/preprocessing.py) is every network's only preprocessing
(`preprocess` runs the spec's host half, `preprocess_tensor` its device half; before they were
swapped in, this test proved them bit for bit equal to each network's own code on these frames):
on real frames of several sizes and encodings host and device agree within OpenCV's rounding;
the spec a checkpoint stores is compared on load, and a checkpoint with another is refused."""
import dataclasses
import glob
import json
import os

import cv2
import numpy as np
import pytest
import torch

from dl_perception import models
from dl_perception.core import tensor_preprocess
from dl_perception.core.checkpoint import CheckpointError, read_metadata, save_checkpoint
from dl_perception.core.preprocessing import (PreprocessSpec, preprocessing_mismatch,
                                              require_preprocessing)
from dl_perception.core.imaging import DecodedImage, to_rgb8
from dl_perception.core.paths import resolve_weights
from torch_threads import one_torch_thread  # noqa: F401

# configurations beside the cpu presets that take the other branches of each pipeline: frames
# smaller than the input (enlarging), a view crop, larger inputs
CONFIGS = [
    ("dronet", {}), ("dronet", {"resize_to": [200, 210], "crop_size": 120}),
    ("lift", {}),
    ("netvlad", {}), ("netvlad", {"resize_to": [96, 160]}),
    ("posenet", {}), ("posenet", {"resize_short": 256, "crop": [224, 224]}),
    ("depth", {}), ("depth", {"view_crop": 0.8, "input_size": [192, 144]}),
]


@pytest.fixture(scope="module")
def real_frames(shared_data):
    """Real frames: TUM office (640x480 colour, as bgr8 and as mono16), Udacity (324x244 grey
    JPEG, as rgb8), a 137x90 crop of Strecha (smaller than every input: enlarging)."""
    paths = [sorted(glob.glob(os.path.join(shared_data, "tum_fr3_long_office", "rgb", "*.png")))[0],
             sorted(glob.glob(os.path.join(shared_data, "udacity_hmb3", "*.jpg")))[0],
             sorted(glob.glob(os.path.join(shared_data, "strecha_mvs", "fountain-P11", "images", "*")))[0]]
    bgr = [cv2.imread(p, cv2.IMREAD_COLOR) for p in paths]
    assert all(image is not None for image in bgr), paths
    gray = cv2.cvtColor(bgr[0], cv2.COLOR_BGR2GRAY)
    return [DecodedImage(bgr[0], "bgr8"), DecodedImage(gray.astype(np.uint16) * 257 + 3, "mono16"),
            DecodedImage(cv2.cvtColor(bgr[1], cv2.COLOR_BGR2RGB), "rgb8"),
            DecodedImage(np.ascontiguousarray(bgr[2][100:190, 200:337]), "bgr8")]


@pytest.mark.parametrize("name,overrides", CONFIGS)
def test_host_and_device_agree_on_real_frames(name, overrides, real_frames):
    model = models.create(name, **overrides)
    spec = model.preprocessing_spec()
    channels = 1 if spec.color == "gray" else 3
    for image in real_frames:
        got = model.preprocess(image)
        assert got.dtype == torch.float32 and got.shape[:2] == (1, channels), name
        assert got.shape[-1:-3:-1] == spec.input_size(image.width, image.height)
        assert 0.0 <= float(got.min()) and float(got.max()) <= 1.0  # scaled to [0, 1]
    for image in real_frames[::2]:  # a batch of two frames, and an enlarging one
        rgb = to_rgb8(image.pixels, image.encoding)
        uploaded = tensor_preprocess.upload([rgb, rgb[::-1].copy()], torch.device("cpu"))
        on_device = model.preprocess_tensor(uploaded)
        difference = (on_device[:1] - spec.host(DecodedImage(rgb, "rgb8"))).abs()
        assert float(difference.mean()) < 0.4 / 255
        resized = spec.resized_size(image.width, image.height)
        if spec.interpolation != "area" or (resized[0] <= image.width and resized[1] <= image.height):
            assert float(difference.max()) <= 1.0 / 255 + 1e-6  # OpenCV's fixed-point rounding
        # else: enlarging with "area" (OpenCV: bilinear-like; tensor_preprocess: cell overlap)
        # differs by up to 8 levels at a few pixels, in the models' own two paths alike


def test_empty_frames_are_a_counted_reason_not_an_opencv_error():
    from dl_perception.core.imaging import ImageDecodeError
    spec = PreprocessSpec(color="rgb", resize="fixed", size=(32, 24), interpolation="area")
    with pytest.raises(ImageDecodeError) as error:
        spec.host(DecodedImage(np.zeros((0, 5, 3), np.uint8), "rgb8"))
    assert error.value.reason == "empty"


def test_invalid_specs_are_refused_with_every_problem_named():
    with pytest.raises(ValueError, match="color 'hsv'.*needs a crop"):
        PreprocessSpec(color="hsv", resize="cover", size=(10, 10))
    with pytest.raises(ValueError, match="view"):
        PreprocessSpec(color="rgb", resize="cover", size=(10, 10), crop=(10, 10), view=1.5)


def test_stored_spec_round_trips_and_a_difference_is_named():
    spec = models.create("posenet").preprocessing_spec()
    stored = spec.to_metadata()
    assert preprocessing_mismatch(stored, spec) == []
    other = models.create("posenet", crop=[128, 96]).preprocessing_spec()
    assert preprocessing_mismatch(stored, other) == ["crop: (144, 112) vs (128, 96)"]
    assert "unknown fields" in preprocessing_mismatch({**stored, "gamma": 2.2}, spec)[0]
    assert "version" in preprocessing_mismatch({**stored, "spec_version": 99}, spec)[0]
    with pytest.raises(CheckpointError, match=r"posenet.safetensors: preprocessing .*crop: \(144, 112\)"):
        require_preprocessing(stored, other, "posenet.safetensors")
    require_preprocessing(stored, spec, "posenet.safetensors")


@pytest.mark.parametrize("name", sorted(models.MODEL_MODULES))
def test_shipped_checkpoints_prose_agrees_with_their_spec(name):
    """A shipped checkpoint's stored preprocessing agrees with the spec of the config it holds
    (else loading it is an error): a stored spec field for field; prose from before the spec
    where it states a colour, size, crop or view. A changed field is named."""
    metadata = read_metadata(resolve_weights(name, ""))
    config = models.model_class(name).Config(**json.loads(metadata["config"]))
    spec = models.model_class(name).meta_model(config).preprocessing_spec()
    stored = json.loads(metadata["preprocessing"])
    assert preprocessing_mismatch(stored, spec) == []
    if "spec_version" in stored:
        wider = {**stored, "size": [2 * stored["size"][0], stored["size"][1]]}
        assert [problem.split(":")[0] for problem in preprocessing_mismatch(wider, spec)] == ["size"]
        return
    flipped = {**stored, "color": "rgb" if stored["color"] == "gray" else "gray"}
    assert preprocessing_mismatch(flipped, spec) == ["color: 'rgb' vs 'gray'" if spec.color == "gray"
                                                     else "color: 'gray' vs 'rgb'"]


def test_network_input_stage_luma_and_standardisation(real_frames):
    """NetVLAD's cpu preset (grey backbone, each image standardised) stated by the spec and run
    by its NetworkInput: luma as OpenCV's RGB2GRAY, zero mean and unit spread per image, a flat
    image flat; a stored spec or legacy prose with another input stage is named on load."""
    spec = models.create("netvlad").preprocessing_spec()
    assert (spec.channels, spec.normalize, spec.mean) == ("luma", "image", None)
    rgb = to_rgb8(real_frames[0].pixels, real_frames[0].encoding)
    batch = spec.host(DecodedImage(rgb, "rgb8"))
    luma = PreprocessSpec(color="rgb", channels="luma").network_input()(batch)
    opencv = cv2.cvtColor(np.ascontiguousarray((batch[0].permute(1, 2, 0) * 255).round()
                                               .byte().numpy()), cv2.COLOR_RGB2GRAY)
    assert luma.shape == (1, 1, 96, 128)
    assert float((luma[0, 0] * 255 - torch.from_numpy(opencv).float()).abs().max()) <= 1.0
    standardised = spec.network_input()(torch.cat([batch, 0.8 * batch + 0.1]))
    # gain and offset go (up to the epsilon that keeps a flat image flat)
    assert float((standardised[0] - standardised[1]).abs().max()) < 0.05 * float(
        standardised[0].abs().max())
    assert abs(float(standardised.mean())) < 1e-4 and 0.85 < float(standardised.std()) < 1.0
    assert float(spec.network_input()(torch.full((1, 3, 8, 8), 0.7)).abs().max()) < 1e-4
    fixed = models.create("netvlad", preset="paper").preprocessing_spec()
    assert (fixed.channels, fixed.normalize, len(fixed.mean)) == ("as_is", "fixed", 3)
    assert preprocessing_mismatch(spec.to_metadata(), fixed)[-4:] == [
        "channels: 'luma' vs 'as_is'", "normalize: 'image' vs 'fixed'",
        f"mean: None vs {fixed.mean!r}", f"std: None vs {fixed.std!r}"]
    prose = {"color": "grey (BT.601 luma of rgb)", "resize_to_wh": [128, 96],
             "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    assert preprocessing_mismatch(prose, spec) == [
        "normalize: 'fixed' vs 'image'", "mean: (0.5, 0.5, 0.5) vs None",
        "std: (0.25, 0.25, 0.25) vs None"]
    missing = {k: v for k, v in spec.to_metadata().items() if k != "normalize"}
    assert "missing fields ['normalize']" in preprocessing_mismatch(missing, spec)[0]
    with pytest.raises(ValueError, match="luma' needs color 'rgb'.*go together"):
        PreprocessSpec(color="gray", channels="luma", normalize="fixed")


def test_a_checkpoint_with_another_preprocessing_is_refused_on_load(tmp_path):
    """Saved checkpoints store the spec; one whose stored spec differs from the spec of the
    config it holds (another crop and interpolation) is refused, naming the fields."""
    model = models.create("posenet")
    path = str(tmp_path / "posenet.safetensors")
    model.save(path)
    assert json.loads(read_metadata(path)["preprocessing"]) == model.preprocessing_spec().to_metadata()
    models.load(path)  # its own spec: loads
    checkpoint = model.to_checkpoint()
    save_checkpoint(path, dataclasses.replace(checkpoint, preprocessing={
        **checkpoint.preprocessing, "crop": [128, 96], "interpolation": "linear"}))
    with pytest.raises(CheckpointError, match=r"posenet.safetensors: preprocessing .*interpolation.*crop|posenet.safetensors: preprocessing .*crop.*interpolation"):
        models.load(path)
