"""`dl-perception process`: the configured models over a whole bag without DDS. Outputs match the
model run directly, one per input frame per model, stamped like their inputs; deterministic;
damaged input keeps what was produced in a closed bag; bad frames are counted drops."""
import os

import numpy as np
import pytest
import torch
import yaml

from dl_perception import models
from dl_perception.core import rosmsg
from dl_perception.bags import BagError, BagReader, BagWriter
from dl_perception.bags.from_images import images_to_bag
from dl_perception.bags.process import process_bag
from dl_perception.cli import main as cli
from dl_perception.core.imaging import decode
from dl_perception.processors import node_parameters, processor_class
from dl_perception.processors.dronet import COLLISION_TOPIC, STEERING_TOPIC


@pytest.fixture(scope="module")
def tum_bag(shared_data, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bags") / "tum")
    images_to_bag(os.path.join(shared_data, "tum_fr3_long_office"), path, tum_list="rgb.txt")
    return path


def _config(tmp_path, weights, **extra):
    path = tmp_path / "perception.yaml"
    path.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"use_sim_time": False}},
        "dronet_node": {"ros__parameters": {"weights": weights, "device": "cpu"}},
        "dronet_control_node": {"ros__parameters": {"rate_hz": 30.0}}, **extra}))
    return str(path)


def _outputs(path):
    with BagReader(path) as reader:
        return {topic: [(m.log_time, m.data) for m in reader.messages([topic])]
                for topic in reader.topics}


@pytest.fixture(scope="module")
def processed(tum_bag, official_dronet, tmp_path_factory):
    folder = tmp_path_factory.mktemp("processed")
    notes = []
    out = str(folder / "out")
    result = process_bag(tum_bag, _config(folder, official_dronet), out, copy_inputs=True,
                         show_progress=False, on_note=notes.append)
    return result, notes, out


def test_process_writes_one_output_per_frame_and_model_stamped_like_the_input(
        tum_bag, official_dronet, processed):
    result, notes, out = processed
    assert result.fault is None and result.frames == 17
    assert any("dronet_control_node: no offline processor" in n for n in notes)
    (run,) = result.runs
    assert (run.stats.received, run.stats.processed, run.outputs) == (17, 17, 34)
    assert dict(result.outputs) == {STEERING_TOPIC: 17, COLLISION_TOPIC: 17}
    model = models.load(official_dronet, expected="dronet").eval()
    with BagReader(tum_bag) as source, BagReader(out) as output:
        inputs = [(m, source.deserialize(m)) for m in source.messages(["/camera/image_raw"])]
        written = {t: [(m.log_time, output.deserialize(m).data) for m in output.messages([t])]
                   for t in (STEERING_TOPIC, COLLISION_TOPIC)}
        copied = [m.data for m in output.messages(["/camera/image_raw"])]
        assert output.topics["/camera/image_raw"].msgtype == rosmsg.IMAGE
    assert copied == [m.data for m, _ in inputs]
    stamps = [rosmsg.stamp_ns(image.header.stamp) for _, image in inputs]
    for topic in (STEERING_TOPIC, COLLISION_TOPIC):
        assert [stamp for stamp, _ in written[topic]] == stamps
    with torch.inference_mode():
        direct = [model(model.preprocess(decode(image))) for _, image in inputs]
    np.testing.assert_array_equal([v for _, v in written[STEERING_TOPIC]],
                                  [np.float32(d["steering"][0]) for d in direct])
    np.testing.assert_array_equal([v for _, v in written[COLLISION_TOPIC]],
                                  [np.float32(d["collision_probability"][0]) for d in direct])
    assert len({round(float(v), 4) for _, v in written[COLLISION_TOPIC]}) > 1  # real outputs


def test_process_is_deterministic(tum_bag, official_dronet, processed, tmp_path):
    again = str(tmp_path / "again")
    process_bag(tum_bag, _config(tmp_path, official_dronet), again, show_progress=False)
    first = _outputs(processed[2])
    del first["/camera/image_raw"]  # copied there, not here
    assert _outputs(again) == first


def test_damaged_input_keeps_the_outputs_before_the_damage(tum_bag, official_dronet, tmp_path):
    damaged = tmp_path / "damaged"
    os.makedirs(damaged)
    source = next(p for p in os.listdir(tum_bag) if p.endswith(".mcap"))
    data = open(os.path.join(tum_bag, source), "rb").read()
    (damaged / "damaged.mcap").write_bytes(data[:int(len(data) * 0.55)])  # no metadata.yaml
    out = str(tmp_path / "out")
    code = cli(["process", str(damaged), "--config", _config(tmp_path, official_dronet),
                "--out", out, "--nodes", "dronet_node"])
    assert code == 1
    with BagReader(out) as reader:  # closed and complete: footer, index, metadata.yaml
        assert reader.fault is None and os.path.isfile(os.path.join(out, "metadata.yaml"))
        produced = reader.topics[STEERING_TOPIC].count
    assert 5 <= produced < 17
    assert reader.topics[COLLISION_TOPIC].count == produced


def test_damaged_input_error_names_file_and_position(tum_bag, official_dronet, tmp_path,
                                                     capsys):
    damaged = tmp_path / "damaged"
    os.makedirs(damaged)
    data = open(os.path.join(tum_bag, "tum.mcap"), "rb").read()
    (damaged / "damaged.mcap").write_bytes(data[:int(len(data) * 0.3)])
    cli(["process", str(damaged), "--config", _config(tmp_path, official_dronet),
         "--out", str(tmp_path / "out"), "--nodes", "dronet_node"])
    err = capsys.readouterr().err
    assert f"error: {damaged / 'damaged.mcap'}: file ends inside a record" in err
    assert "at byte" in err


def test_bad_frames_are_counted_drops(official_dronet, tmp_path):
    bag = tmp_path / "frames"
    with BagWriter(bag) as writer:
        for i in range(4):
            pixels = np.full((60, 80, 3), 40 * i, np.uint8)
            image = rosmsg.image(pixels, "rgb8", rosmsg.header(10**9 * (i + 1), "cam"))
            if i == 2:
                image.encoding = "yuv422"  # not an encoding the stack reads
            writer.write("/camera/image_raw", 10**9 * (i + 1), image)
    notes = []
    result = process_bag(str(bag), _config(tmp_path, official_dronet), str(tmp_path / "out"),
                         show_progress=False, on_note=notes.append)
    (run,) = result.runs
    assert (run.stats.received, run.stats.processed, dict(run.stats.drops)) == \
        (4, 3, {"encoding": 1})
    assert any("unsupported encoding 'yuv422'" in n for n in notes)
    assert [t for t, _ in _outputs(str(tmp_path / "out"))[STEERING_TOPIC]] == \
        [10**9, 2 * 10**9, 4 * 10**9]


def test_missing_topics_and_unknown_nodes_are_reported(tum_bag, official_dronet, tmp_path):
    config = _config(tmp_path, official_dronet)
    with pytest.raises(BagError, match=r"input topic /cam/nope is not in"):
        process_bag(tum_bag, config, str(tmp_path / "a"), image_topic="/cam/nope")
    with pytest.raises(ValueError, match="does not configure"):
        process_bag(tum_bag, config, str(tmp_path / "b"), nodes=["lift_node"])
    notes = []
    result = process_bag(tum_bag, config, str(tmp_path / "c"), copy_topics=("/not/there",),
                         show_progress=False, on_note=notes.append)
    assert result.frames == 17 and any("cannot copy /not/there" in n for n in notes)


def test_process_command_prints_the_summary(tum_bag, official_dronet, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli(["process", tum_bag, "--config", _config(tmp_path, official_dronet),
                "--out", out, "--copy-inputs"]) == 0
    printed = capsys.readouterr().out
    lines = [line.split() for line in printed.splitlines()]
    assert ["dronet_node", "/camera/image_raw", "17", "17", "0", "34"] == lines[1][:6]
    assert [STEERING_TOPIC, "std_msgs/msg/Float32", "17"] in lines
    assert ["/camera/image_raw", "(copied)", "sensor_msgs/msg/Image", "17"] in lines
    assert "processed 17 frames in" in printed and f"wrote {out} (51 messages)" in printed


def test_parameters_file_and_registry(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"device": "cpu", "qos": {"depth": 3}}},
        "/dronet_node": {"ros__parameters": {"image_transport": "compressed"}}}))
    params = node_parameters(str(path))
    assert params == {"dronet_node": {"device": "cpu", "qos.depth": 3,
                                      "image_transport": "compressed"}}
    cls = processor_class("dronet_node")
    assert cls.input_topic(params["dronet_node"]) == "/camera/image_raw/compressed"
    assert processor_class("dronet_control_node") is None


def test_bench_process_reports_the_ratio(official_dronet, capsys):
    assert cli(["bench", "process", "--weights", official_dronet, "--frames", "8",
                "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "model (preprocess+forward)" in out and "process (read, decode, model, write)" in out
