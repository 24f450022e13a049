"""Each network's declarative parts in one place, staged here until the model files take them
(phase B of docs/architecture.md moves `<name>_preprocessing` into models/<name>.py as the
model's `preprocessing_spec()` and OUTPUT_SCHEMAS[<name>] as its `outputs` class attribute, and
deletes this module). Every spec is read from the model's config, so a checkpoint's config
determines its preprocessing as it does today."""
from __future__ import annotations

from ..core.preprocessing import PreprocessSpec
from .base import PerceptionModel
from .outputs import DenseOutputs, KeypointOutputs


def dronet_preprocessing(config) -> PreprocessSpec:
    """Grey, bilinear to resize_to, the crop_size square: bottom rows (the official model; the
    dronet branch adds crop_anchor 'centre' for PULP-DroNet), centre columns."""
    anchor = getattr(config, "crop_anchor", "bottom")
    return PreprocessSpec(color="gray", resize="fixed", size=tuple(config.resize_to),
                          interpolation="linear", crop=(config.crop_size, config.crop_size),
                          crop_rows="centre" if anchor == "centre" else "bottom")


def lift_preprocessing(config) -> PreprocessSpec:
    """Grey at the camera's own size and depth (the detector's pyramid does the scaling)."""
    return PreprocessSpec(color="gray")


def netvlad_preprocessing(config) -> PreprocessSpec:
    """RGB, area to resize_to; the network's input stage: luma when `grey`, standardised per
    image or by the fixed mean/std (NetVLAD runs it through the spec's NetworkInput)."""
    fixed = config.input_normalization == "fixed"
    return PreprocessSpec(color="rgb", resize="fixed", size=tuple(config.resize_to),
                          interpolation="area", channels="luma" if config.grey else "as_is",
                          normalize=config.input_normalization,
                          mean=config.input_mean if fixed else None,
                          std=config.input_std if fixed else None)


def posenet_preprocessing(config) -> PreprocessSpec:
    """Shorter side resize_short (aspect kept, area), centre crop."""
    short = config.resize_short
    return PreprocessSpec(color="rgb", resize="cover", size=(short, short), interpolation="area",
                          crop=tuple(config.crop), normalize="fixed", mean=config.pixel_mean,
                          std=config.pixel_std)


def depth_preprocessing(config) -> PreprocessSpec:
    """Aspect kept so the input covers view_crop of the image along the tighter axis, area when
    shrinking and bilinear when enlarging, centre crop to input_size."""
    size = tuple(config.input_size)
    return PreprocessSpec(color="rgb", resize="cover", size=size, view=config.view_crop,
                          interpolation="area_or_linear", crop=size, normalize="fixed",
                          mean=config.input_mean, std=config.input_std)


PREPROCESSING = {"dronet": dronet_preprocessing, "lift": lift_preprocessing,
                 "netvlad": netvlad_preprocessing, "posenet": posenet_preprocessing,
                 "depth": depth_preprocessing}

OUTPUT_SCHEMAS = {
    "dronet": DenseOutputs({"steering": "steering angle (rad, positive left)",
                            "collision_logit": "collision logit",
                            "collision_probability": "collision probability"}),
    "lift": KeypointOutputs(fields={
        "keypoints": "N x 2 pixel coordinates, strongest first", "scales": "N sigma (px)",
        "orientations": "N radians", "scores": "N detector scores",
        "descriptors": "N x 128, unit length"}),
    "netvlad": DenseOutputs({"descriptor": "global descriptor (whitened when fitted), unit "
                                           "length", "vlad": "the NetVLAD vector"}),
    "posenet": DenseOutputs({"position": "B x 3 metres in the scene frame",
                             "quaternion": "B x 4 x, y, z, w unit",
                             "quaternion_raw": "B x 4 before normalisation",
                             "log_variance_position": "learned weighting only",
                             "log_variance_orientation": "learned weighting only"}),
    "depth": DenseOutputs({"coarse_log_depth": "coarse stack output",
                           "log_depth": "B x 1 x h x w log metres", "depth": "B x 1 x h x w m"}),
}


def preprocessing_spec(model: PerceptionModel) -> PreprocessSpec:
    return PREPROCESSING[model.name](model.config)


def output_schema(model: PerceptionModel):
    return OUTPUT_SCHEMAS[model.name]


__all__ = ["OUTPUT_SCHEMAS", "PREPROCESSING", "output_schema", "preprocessing_spec"]
