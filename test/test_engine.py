"""The stack engine: device preprocessing against the models' own, engine outputs against the
naive path, precision choice within tolerance, fixed-rate drops, the bench command and its ROS
path."""
import json

import numpy as np
import pytest
import torch

from dl_perception import models
from dl_perception.core import tensor_preprocess
from dl_perception.bench.models import synthetic_frames
from dl_perception.cli import main
from dl_perception.engine import Engine, EngineOptions
from dl_perception.models.outputs import DenseOutputs, KeypointOutputs
from dl_perception.core.imaging import DecodedImage
from dl_perception.bench.stack import (STACK, compare_outputs, find_peak, run_engine_at_rate,
                                       run_naive)

SMALL = {"dronet": {}, "netvlad": {"resize_to": [64, 48]}, "posenet": {},
         "depth": {}, "lift": {"scales": [1.0, 2.0], "max_keypoints": 50}}


def frames_of(count, width, height, seed=0):
    rng = np.random.default_rng(seed)
    rendered = [f.pixels for f in synthetic_frames(count, width, height)]
    # rendered corridor frames plus noise: smooth and high-frequency content alike
    return [np.clip(f.astype(np.int16) + rng.integers(-20, 21, f.shape), 0, 255).astype(np.uint8)
            for f in rendered]


def small_stack():
    torch.manual_seed(0)
    return {name: models.create(name, **overrides) for name, overrides in SMALL.items()}


@pytest.mark.parametrize("size", [(160, 120), (90, 60), (200, 150)])
@pytest.mark.parametrize("name", STACK)
def test_device_preprocessing_matches_the_models_own(name, size):
    model = models.create(name)
    frames = frames_of(3, *size)
    reference = torch.cat([model.preprocess(DecodedImage(f, "rgb8")) for f in frames])
    uploaded = tensor_preprocess.upload(frames, torch.device("cpu"))
    assert uploaded.dtype == torch.uint8 and uploaded.shape == (3, 3, size[1], size[0])
    batch = model.preprocess_tensor(uploaded)
    assert batch.shape == reference.shape
    # OpenCV rounds with fixed-point weights: at most one grey level apart, rarely
    difference = (batch - reference).abs()
    assert float(difference.max()) <= 1.0 / 255 + 1e-6
    assert float(difference.mean()) < 0.2 / 255


def test_area_resampling_equals_opencv_for_fractional_factors():
    import cv2
    image = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for width, height in ((20, 15), (53, 37), (70, 41)):
        expected = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        got = tensor_preprocess.resize(torch.from_numpy(image).permute(2, 0, 1)[None], width,
                                       height, "area")[0].permute(1, 2, 0).numpy()
        assert np.abs(got - expected.astype(np.float32)).max() <= 1.0


def test_output_schema_measures():
    dense = DenseOutputs()
    reference = {"x": torch.tensor([1.0, -2.0]), "count": torch.tensor([3])}
    assert dense.deviation(reference, {"x": torch.tensor([1.0, -2.0]), "count": torch.tensor([4])}) == 0.0
    assert dense.deviation(reference, {"x": torch.tensor([1.2, -2.0])}) == pytest.approx(0.1)  # relative above 1 ...
    assert dense.deviation({"p": torch.tensor([0.01])}, {"p": torch.tensor([0.02])}) \
        == pytest.approx(0.01)  # ... absolute below
    assert dense.deviation(reference, {"x": torch.zeros(3)}) == float("inf")
    points = {"keypoints": torch.tensor([[0.0, 0.0], [10.0, 10.0]])}
    assert KeypointOutputs().deviation(points, {"keypoints": torch.tensor([[0.5, 0.0], [30.0, 30.0]])},
                                       0.02) == 0.5
    # over frames, the scale is the range of the whole run, not one frame's value
    small = [{"y": torch.tensor([1.0])}, {"y": torch.tensor([4.0])}]
    shifted = [{"y": torch.tensor([1.2])}, {"y": torch.tensor([4.0])}]
    assert dense.deviation_over_frames(small, shifted) == pytest.approx(0.05)


@pytest.mark.parametrize("preprocess", ["host", "device"])
def test_engine_outputs_match_the_naive_path_frame_by_frame(preprocess):
    stack = small_stack()
    frames = frames_of(5, 160, 120)
    _, naive_outputs = run_naive(stack, frames, torch.device("cpu"))
    engine = Engine(stack, EngineOptions(device="cpu", precision="fp32", channels_last="off",
                                         batch_size=2, workers=2, preprocess=preprocess))
    assert engine.device_preprocessing == (preprocess == "device")
    try:
        outputs = engine.run(frames)
        assert len(outputs) == len(frames) and set(outputs[0]) == set(SMALL)
        report = compare_outputs(naive_outputs, outputs, engine)
        assert all(row["within_tolerance"] for row in report.values()), report
        # frame order survives batching and the workers: frame 3 is not frame 2
        assert not torch.allclose(outputs[3]["posenet"]["position"], outputs[2]["posenet"]["position"])
        assert torch.allclose(outputs[3]["posenet"]["position"], naive_outputs[3]["posenet"]["position"],
                              atol=1e-3)
    finally:
        engine.close()


def test_calibration_keeps_only_variants_within_tolerance():
    stack = {"depth": small_stack()["depth"]}
    engine = Engine(stack, EngineOptions(device="cpu", batch_size=2, workers=1,
                                         dense_tolerance=1e-9))
    plans = engine.calibrate(frames_of(2, 160, 120), repeats=1)
    plan = plans["depth"]
    assert len(plan.candidates) == 4  # fp32 / bf16 x NCHW / channels_last
    # with a tolerance no reduced precision can meet, fp32 is kept
    assert plan.precision == "fp32" and plan.deviation <= 1e-9
    assert any(not c["within_tolerance"] for c in plan.candidates if c["precision"] != "fp32")


def test_calibration_measures_execution_choices_and_the_baseline_runs_without_them():
    stack = {"lift": small_stack()["lift"]}
    engine = Engine(stack, EngineOptions(device="cpu", precision="fp32", channels_last="off",
                                         batch_size=1, workers=1))
    frames = frames_of(1, 160, 120)
    plan = engine.calibrate(frames, repeats=1)["lift"]
    measured = [c["execution"] for c in plan.candidates]
    assert {"patch_batch": 32, "patch_precision": "fp32"} in measured
    assert any(e["patch_precision"] == "reduced" for e in measured)
    assert set(plan.execution) == {"patch_batch", "patch_precision"}
    assert all(c["deviation_kind"] == "keypoints" for c in plan.candidates)
    # the choices are arguments of each run, never state of the model: the baseline's eager
    # forward (defaults) after calibration gives the uncalibrated model's keypoints exactly
    _, naive = run_naive(stack, frames, torch.device("cpu"))
    with torch.inference_mode():
        fresh = stack["lift"](stack["lift"].preprocess(DecodedImage(frames[0], "rgb8")))
    assert not any(hasattr(stack["lift"], choice) for choice in plan.execution)
    assert torch.equal(naive[0]["lift"]["descriptors"], fresh["descriptors"])
    planned = engine.run(frames)[0]["lift"]
    assert torch.equal(planned["keypoints"], fresh["keypoints"])


def test_keypoint_deviation_counts_changed_descriptors():
    reference = {"keypoints": torch.tensor([[0.0, 0.0], [10.0, 10.0]]),
                 "descriptors": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    same_place = {"keypoints": reference["keypoints"].clone(),
                  "descriptors": torch.tensor([[1.0, 0.0], [0.6, 0.8]])}
    assert KeypointOutputs().deviation(reference, same_place, 0.02) == 0.5
    assert KeypointOutputs().deviation(reference, same_place, 0.7) == 0.0


def test_fixed_rate_mode_counts_drops_only_when_overloaded():
    engine = Engine({"dronet": small_stack()["dronet"]},
                    EngineOptions(device="cpu", precision="fp32", channels_last="off",
                                  batch_size=2, workers=1))
    frames = frames_of(2, 64, 48)
    engine.run(frames)
    relaxed = run_engine_at_rate(engine, frames, rate=5.0, duration=1.0)
    assert relaxed["dropped"] == 0 and relaxed["processed"] == relaxed["sent"] >= 4
    flooded = run_engine_at_rate(engine, frames, rate=20000.0, duration=0.5, queue_depth=2)
    assert flooded["dropped"] > 0 and flooded["drop_share"] > 0.05
    assert flooded["processed"] + flooded["dropped"] == flooded["sent"]


class SleepingEngine:
    """Stands in for the engine with a known throughput: 10 ms per frame, one worker, a queue of
    four frames."""
    batch_size, workers, models = 4, 1, {"fake": None}

    def _run_chunk(self, frames, names):
        import time
        time.sleep(0.01 * len(frames))


def test_peak_is_not_above_what_the_engine_sustains():
    # a queue that absorbs a burst must not let a rate above the throughput pass
    peak = find_peak(SleepingEngine(), [np.zeros((2, 2, 3), np.uint8)], throughput=100.0,
                     min_seconds=0.05)
    assert all(probe["sent"] >= 40 for probe in peak["probes"])  # ten times the queue
    assert peak["probes"][0]["rate_hz"] == 200.0 and peak["probes"][0]["drop_share"] > 0.05
    assert peak["peak_hz"] is not None and peak["peak_hz"] <= 120.0


def test_bench_command_writes_the_stack_result(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--models", "dronet,posenet,depth", "--frames", "3", "--size", "96", "72",
                 "--batch-size", "2", "--rounds", "1", "--no-peak", "--rate", "4",
                 "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "naive stack" in printed and "engine stack" in printed and "x the naive baseline" in printed
    result = json.loads(out.read_text())
    assert set(result["outputs_vs_naive"]) == {"dronet", "posenet", "depth"}
    assert all(row["within_tolerance"] for row in result["outputs_vs_naive"].values())
    assert result["stack_ratio"] > 0 and result["fixed_rate"]["sent"] >= 4
    paths = [row["path"] for row in result["rows"]]
    assert paths[:2] == ["naive stack (eager fp32, batch 1, one model after another)", "engine stack"]
    assert "  depth engine" in paths


def test_ros_path_counts_what_each_node_processed(tmp_path):
    from dl_perception.ros.bench.stack import bench_ros_stack

    config = tmp_path / "stack.yaml"
    config.write_text("dronet_node:\n  ros__parameters:\n    max_frame_age: 0.0\n")
    # 3 s at 10 Hz: at least 10 frames sent even when a loaded machine delays the driver
    result = bench_ros_stack(frames_of(2, 96, 72), rate=10.0, duration=3.0, config=str(config))
    assert result["nodes"] == ["dronet_node"] and result["skipped"] == {}
    row = result["per_node"]["dronet_node"]
    # one executor: the driver sends between DroNet's frames (~10 ms each idle, ~500 ms at a load
    # of 20 on 2 cores), so a loaded machine sends fewer
    assert row["frames_processed"] >= 3 and result["sent"] >= 5
    assert result["complete"] == row["frames_processed"]


BLOCKER = '''
import importlib.abc, sys
BLOCKED = {"mujoco", "rosbags", "mcap", "faiss", "evo", "rclpy", "sensor_msgs", "scipy",
           "matplotlib", "kornia"}
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("not on a bare GPU machine: " + name)
sys.meta_path.insert(0, _Block())
'''


def test_gpu_script_needs_only_torch_numpy_opencv_safetensors_yaml(tmp_path, repo_dir):
    """The device script installs nothing: with ROS, simulator, bag and search packages made
    unimportable it still builds every paper model and writes its JSON."""
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(site), DEVICE="cpu", FRAMES="2",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-c", "from dl_perception import models\n"
                    "from dl_perception.bench import stack\n"
                    "for name in stack.STACK: models.create(name, preset='paper')"],
                   check=True, env=env, cwd=repo_dir)
    done = subprocess.run(["bash", "scripts/gpu_bench.sh", str(out), "--models", "dronet,depth",
                           "--size", "64", "48", "--rounds", "1", "--no-peak", "--no-per-model"],
                          env=env, cwd=repo_dir, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for name in ("bench_paper.json", "bench_cpu.json", "bench_paper.txt", "gpu.txt"):
        assert (out / name).is_file()
    paper = json.loads((out / "bench_paper.json").read_text())
    assert paper["preset"] == "paper" and set(paper["outputs_vs_naive"]) == {"dronet", "depth"}


def test_stack_node_publishes_each_hosted_nodes_topics(tmp_path):
    """stack_node runs DroNet and depth through its engine; the hosted nodes publish their usual
    topics with the frame's stamp, and the launcher does not start them a second time."""
    from dl_perception.ros.launcher import configured_nodes
    from dl_perception.ros.bench.stack import bench_ros_stack

    depth_weights = tmp_path / "depth.safetensors"
    models.create("depth").save(str(depth_weights))
    config = tmp_path / "stack.yaml"
    config.write_text(
        "stack_node:\n  ros__parameters:\n    nodes: [dronet_node, depth_node]\n"
        "    max_frame_age: 0.0\n    precision: fp32\n"
        f"depth_node:\n  ros__parameters:\n    weights: {depth_weights}\n"
        "dronet_control_node:\n  ros__parameters:\n    enabled_at_start: false\n")
    assert configured_nodes(str(config)) == ["stack_node", "dronet_control_node"]
    # 4 s: one executor sends between the stack's frames, fewer on a loaded machine
    result = bench_ros_stack(frames_of(2, 96, 72), rate=5.0, duration=4.0, config=str(config))
    assert result["nodes"] == ["dronet_node", "depth_node"] and result["skipped"] == {}
    for row in result["per_node"].values():
        assert row["frames_processed"] >= 3 and row["drops_total"] == 0
