"""processors/batch.py: the processors of all five networks through one engine (what stack_node
runs) give, on real frames, the processors' own messages: bit for bit for the dense
networks in fp32, LIFT's keypoints within the engine's keypoint measure; a changed parameter
takes effect on the frame it was changed for; one processor's fault leaves the others running."""
import glob
import os

import cv2
import numpy as np
import pytest
import torch

from dl_perception import models
from dl_perception.core import rosmsg
from dl_perception.engine import EngineOptions
from dl_perception.core.imaging import DecodedImage
from dl_perception.core.pointcloud import unpack
from dl_perception.processors import processor_class
from dl_perception.processors.batch import BatchExecutor
from dl_perception.processors.depth import DepthProcessor
from dl_perception.processors.dronet import DroNetProcessor
from dl_perception.processors.lift import LIFTProcessor
from dl_perception.processors.netvlad import NetVLADProcessor
from dl_perception.processors.posenet import PoseNetProcessor
from torch_threads import one_torch_thread  # noqa: F401

SMALL = {"dronet": {}, "lift": {}, "netvlad": {"resize_to": [64, 48], "pca_dim": 0},
         "posenet": {}, "depth": {}}
PROCESSORS = [DroNetProcessor, LIFTProcessor, NetVLADProcessor, PoseNetProcessor, DepthProcessor]
FP32 = EngineOptions(device="cpu", precision="fp32", channels_last="off", batch_size=1, workers=1)


@pytest.fixture(scope="module")
def frames(shared_data):
    paths = sorted(glob.glob(os.path.join(shared_data, "tum_fr3_long_office", "rgb", "*.png")))
    return [DecodedImage(cv2.resize(cv2.imread(p), (160, 120), interpolation=cv2.INTER_AREA),
                         "bgr8") for p in paths[:2]]


def make(cls, **params):
    torch.manual_seed(0)
    model = models.create(cls.model_name, **SMALL[cls.model_name])
    return cls(model, torch.device("cpu"), {"max_keypoints": 80, "scales": [1.0, 2.0], **params})


@pytest.fixture(scope="module")
def executor():
    """All five processors on one engine, calibrated once for the module (after the autouse
    one_torch_thread, so the engine gets one thread per worker)."""
    executor = BatchExecutor([make(cls) for cls in PROCESSORS], FP32)
    yield executor
    executor.close()


def test_executor_messages_equal_each_processors_own(frames, executor):
    alone = [make(cls) for cls in PROCESSORS]
    for index, image in enumerate(frames):
        header = rosmsg.header(10**9 * (index + 1), "camera_optical_frame")
        outcome = executor.process(image, header)
        assert outcome.errors == {}
        for processor in alone:
            own = processor.process(image, header)
            got = outcome.messages[processor.node_name]
            assert [o.topic for o in got] == [o.topic for o in own]
            if processor.model_name != "lift":
                assert [rosmsg.serialize(o.message) for o in got] == \
                    [rosmsg.serialize(o.message) for o in own], processor.node_name
                continue
            # the engine picks LIFT's patch batch and patch precision (bf16 where within
            # tolerance) itself: the same keypoints (fp32 detector), descriptors within the
            # engine's own measure
            ours, theirs = (unpack(o[0].message) for o in (got, own))
            assert 0 < len(ours) == len(theirs)
            assert (ours["u"] == theirs["u"]).all() and (ours["v"] == theirs["v"]).all()
            as_outputs = [{"keypoints": torch.from_numpy(np.stack([p["u"], p["v"]], 1)),
                           "descriptors": torch.from_numpy(p["descriptor"].copy())}
                          for p in (theirs, ours)]
            schema = models.model_class("lift").outputs
            assert schema.deviation(*as_outputs, tolerance=FP32.dense_tolerance) \
                <= FP32.keypoint_tolerance


def test_changed_parameters_apply_to_the_same_frame(frames, executor):
    lift = next(p for p in executor.processors if p.node_name == "lift_node")
    header = rosmsg.header(10**9, "camera")
    counts = []
    try:
        for limit in (7, 30, 80):
            lift.params["max_keypoints"] = limit
            cloud = executor.process(frames[0], header).messages["lift_node"][0].message
            counts.append(cloud.width)
    finally:
        lift.params["max_keypoints"] = 80
    assert counts == [7, 30, 80]


def test_a_failing_processor_leaves_the_others_running(frames):
    class Broken(DroNetProcessor):
        def run(self, image):
            raise RuntimeError("broken on purpose")

        def process(self, image, header):
            return self.run(image)
    depth = make(DepthProcessor)
    executor = BatchExecutor([make(Broken), depth], FP32)
    outcome = executor.process(frames[0], rosmsg.header(1, "camera"))
    assert list(outcome.errors) == ["dronet_node"] and "on purpose" in str(outcome.errors["dronet_node"])
    assert [o.topic for o in outcome.messages["depth_node"]][0] == "/dl_perception/depth/image"
    executor.close()


def test_one_processor_per_network():
    with pytest.raises(ValueError, match="one processor per node"):
        BatchExecutor([make(DroNetProcessor), make(DroNetProcessor)], FP32)


def test_processor_class_still_finds_dronets():
    assert processor_class("dronet_node") is DroNetProcessor
