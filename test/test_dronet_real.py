"""DroNet on real cameras: the PULP-DroNet converters against a reference forward pass, the real
dataset readers and their time-block split, refusal of the validation sets, `eval dronet` over
several checkpoints and datasets with per-frame output, the real-camera training options, and
the shipped checkpoints by purpose."""
import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

CLI = os.path.join(os.path.dirname(sys.executable), "dl-perception")
PULP = {  # file -> (block key prefix, stem key, NEMO/DORY-style BN'd stem and shortcut)
    "v2/dronet_v2_gapflow_original.pth": ("resBlock", "layer1", False),
    "v2/dronet_v2_nemo_dory_original_himax.pth": ("resBlock", "first_conv", True),
    "v3/pulp-dronet-v3-resblock-1.0.pth": ("Block", "first_conv", True),
}


def _bn(x, sd, name):
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"],
                        sd[f"{name}.weight"], sd[f"{name}.bias"], training=False, eps=1e-5)


def _conv(x, sd, name, stride, padding):
    return F.conv2d(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"), stride=stride, padding=padding)


def pulp_reference(sd: dict, block: str, stem: str, nemo: bool, x: torch.Tensor) -> torch.Tensor:
    """PULP-DroNet v2/v3 written out from its architecture notes (ARCHITECTURES.txt), straight on
    the raw state_dict: returns N x 2 (steering, collision probability)."""
    relu6 = lambda t: t.clamp(0.0, 6.0)  # noqa: E731
    x = _conv(x, sd, stem, 2, 2)
    if nemo:
        x = relu6(_bn(x, sd, "bn1"))
    x = F.max_pool2d(x, 2, 2)
    for i in (1, 2, 3):
        b = f"{block}{i}"
        main = relu6(_bn(_conv(x, sd, f"{b}.conv1", 2, 1), sd, f"{b}.bn1"))
        main = relu6(_bn(_conv(main, sd, f"{b}.conv2", 1, 1), sd, f"{b}.bn2"))
        bypass = _conv(x, sd, f"{b}.bypass", 2, 0)
        if nemo:
            bypass = _bn(bypass, sd, f"{b}.bn_bypass")
        x = main + relu6(bypass)
    x = x.reshape(len(x), -1)
    if not nemo:
        x = relu6(x)
    out = F.linear(x, sd["fc.weight"], sd.get("fc.bias"))
    return torch.stack([out[:, 0], torch.sigmoid(out[:, 1])], 1)


@pytest.mark.parametrize("name", sorted(PULP))
def test_pulp_converter_matches_reference_forward(shared_data, name, tmp_path):
    from dl_perception.models.dronet_convert import pulp_dronet
    from dl_perception.core.imaging import DecodedImage
    from dl_perception.models.dronet import DroNet

    path = os.path.join(shared_data, "pulp_dronet_weights", name)
    model, info = pulp_dronet(path)
    model.save(str(tmp_path / "pulp.safetensors"), info=info)
    model = DroNet.from_checkpoint(str(tmp_path / "pulp.safetensors"))  # through the checkpoint
    assert info["licence"].startswith("Apache-2.0")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    frame = cv2.imread(os.path.join(shared_data, "himax_collision", "test_2", "frame_1.png"),
                       cv2.IMREAD_GRAYSCALE)
    real = model.preprocess(DecodedImage(np.ascontiguousarray(frame), "mono8"))
    # upstream's own crop of its 324x244 frames: v2 bottom centre, v3 centre
    top = 44 if name.startswith("v2") else 22
    assert torch.allclose(real[0, 0], torch.from_numpy(frame[top:top + 200, 62:262] / np.float32(255)),
                          atol=1e-6)
    batch = torch.cat([real, torch.rand(3, 1, 200, 200, generator=torch.Generator().manual_seed(0))])
    with torch.inference_mode():
        out = model(batch)
        expected = pulp_reference(sd, *PULP[name], batch)
    ours = torch.stack([out["steering"], out["collision_probability"]], 1)
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-4), (ours - expected).abs().max()
    assert expected[:, 1].std() > 1e-3 or expected[:, 0].std() > 1e-3  # inputs tell apart


def test_pulp_converter_refuses_the_depthwise_variant(shared_data):
    from dl_perception.models.dronet_convert import ConversionError, pulp_dronet
    with pytest.raises(ConversionError, match="depthwise"):
        pulp_dronet(os.path.join(shared_data, "pulp_dronet_weights", "v3",
                                 "tiny-pulp-dronet-v3-dw-pw-0.125.pth"))


def test_real_dataset_readers(shared_data):
    from dl_perception.datasets.dronet import read_dronet_dataset

    udacity = read_dronet_dataset(os.path.join(shared_data, "udacity_hmb3"))
    assert len(udacity) == 4279
    assert all(np.isfinite(s.steering) and np.isnan(s.collision) for s in udacity)
    assert os.path.basename(udacity[0].image) == "frame_1479425441182877835.jpg"
    assert udacity[0].steering == pytest.approx(-0.0169280299)
    validation = read_dronet_dataset(os.path.join(shared_data, "udacity_hmb3") + "@0.75:1")
    assert len(validation) == 1070 and validation[-1].image == udacity[-1].image
    training = read_dronet_dataset(os.path.join(shared_data, "udacity_hmb3") + "@:0.75")
    assert len(training) + len(validation) == 4279 and training[-1].image == udacity[3208].image

    himax = read_dronet_dataset(os.path.join(shared_data, "himax_collision"))
    assert len(himax) == 220 and sum(s.collision for s in himax) == 75
    assert all(np.isnan(s.steering) for s in himax)
    test_2 = [os.path.basename(s.image) for s in himax if "test_2" + os.sep in s.image]
    assert test_2[:11] == [f"frame_{k}.png" for k in range(1, 12)]  # numeric, not name order

    bicycle = read_dronet_dataset(os.path.join(shared_data, "dronet_collision"))
    assert len(bicycle) == 52 and set(s.collision for s in bicycle) == {0.0, 1.0}
    with pytest.raises(ValueError, match="START:END"):
        read_dronet_dataset(os.path.join(shared_data, "himax_collision") + "@half")


def test_training_refuses_the_real_validation_sets(shared_data):
    from dl_perception.training.common import TrainingDataError
    from dl_perception.training.dronet import refuse_real_validation

    for spec in ("himax_collision", "dronet_collision", "udacity_hmb3", "udacity_hmb3@0.7:0.8"):
        with pytest.raises(TrainingDataError, match="validation"):
            refuse_real_validation(os.path.join(shared_data, spec))
    refuse_real_validation(os.path.join(shared_data, "udacity_hmb3") + "@0:0.75")


def test_eval_several_checkpoints_and_datasets_with_per_frame_output(official_dronet, shared_data,
                                                                      tmp_path):
    pulp = tmp_path / "pulp.safetensors"
    subprocess.run([CLI, "convert", "pulp-dronet", "--weights", os.path.join(
        shared_data, "pulp_dronet_weights", "v2", "dronet_v2_gapflow_original.pth"),
        "--out", str(pulp)], check=True, capture_output=True)
    per_frame, roc = tmp_path / "frames.csv", tmp_path / "roc.png"
    udacity = os.path.join(shared_data, "udacity_hmb3") + "@0.99:1"
    result = subprocess.run(
        [CLI, "eval", "dronet", "--weights", official_dronet, str(pulp), "--data",
         os.path.join(shared_data, "dronet_collision"), udacity, "--per-frame", str(per_frame),
         "--roc", str(roc), "--json", str(tmp_path / "m.json"), "--device", "cpu"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.load(open(tmp_path / "m.json"))["rows"]
    assert [(r["dataset"], r["model"].split()[0]) for r in rows] == [
        ("dronet_collision", "constant"), ("dronet_collision", "dronet_official"),
        ("dronet_collision", "pulp"), ("udacity_hmb3@0.99:1", "constant"),
        ("udacity_hmb3@0.99:1", "dronet_official"), ("udacity_hmb3@0.99:1", "pulp")]
    official = rows[1]
    # the official model on GOPR0265 at threshold 0.5 (reference_outputs.keras.csv)
    assert official["collision_accuracy"] == pytest.approx(46 / 52)
    assert rows[0]["collision_roc_auc"] == 0.5 and rows[3]["steering_eva"] == pytest.approx(0.0)
    assert "steering_rmse" not in official and "collision_accuracy" not in rows[4]
    assert "ROC-AUC" in result.stdout and "constant" in result.stdout
    with open(per_frame) as handle:
        frames = list(csv.DictReader(handle))
    assert len(frames) == 2 * (52 + 43)  # two checkpoints, 52 + 43 frames
    keras = {row["frame"]: float(row["collision"]) for row in csv.DictReader(
        open(os.path.join(shared_data, "dronet_collision", "reference_outputs.keras.csv")))}
    for row in frames[:52]:
        assert row["model"] == "dronet_official" and row["steering_label"] == ""
        assert float(row["collision_probability"]) == pytest.approx(
            keras[os.path.basename(row["image"])], abs=1e-4)
    assert all(row["collision_label"] == "" and row["steering_label"] for row in frames[104:])
    assert os.path.getsize(roc) > 10_000


def _stripes(root, frames=24):
    """A tiny project-layout dataset: the stripe's side gives the steering; dark frames collide."""
    os.makedirs(root / "images")
    rng = np.random.default_rng(0)
    rows = ["image,steering,collision"]
    for i in range(frames):
        image = np.full((120, 160), 200 if i % 2 else 60, np.uint8)
        side = rng.choice([-1, 1])
        image[:, 80 + 40 * side - 10:80 + 40 * side + 10] = 255
        cv2.imwrite(str(root / "images" / f"{i}.png"), image)
        rows.append(f"images/{i}.png,{side * 0.5},{'' if i % 3 == 0 else i % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def test_finetune_freeze_distill_tail_split_and_resume(official_dronet, tmp_path):
    from dl_perception.models.dronet import DroNet
    from dl_perception.training.dronet import DroNetTrainConfig, train_dronet

    data = tmp_path / "data"
    _stripes(data)
    out = str(tmp_path / "tuned.safetensors")
    cfg = DroNetTrainConfig(epochs=2, batch_size=8, learning_rate=1e-3, val_split="tail",
                            val_fraction=0.25, photometric=1.0, distill_collision=[official_dronet],
                            freeze=["conv1", "blocks", "collision"], collision_start_epoch=-1)
    logs = []
    tuned = train_dronet([str(data)], out, cfg, torch.device("cpu"), init_weights=official_dronet,
                         log=logs.append)
    assert any("18 train / 6 held out (tail)" in line for line in logs)
    assert any("8 frames take their collision target from 1 teacher" in line for line in logs)
    official = DroNet.from_checkpoint(official_dronet)
    tuned_state, official_state = tuned.state_dict(), official.state_dict()
    for key in tuned_state:  # frozen weights and BN statistics stay the official ones
        same = torch.equal(tuned_state[key], official_state[key])
        assert same == (not key.startswith("steering")), key
    assert tuned.checkpoint_info["licence"].startswith("MIT")
    history = open(out + ".history.csv").read().splitlines()
    assert len(history) == 3 and os.path.isfile(out + ".loss.png")
    # a killed run continues after its last finished epoch
    cfg.epochs = 3
    logs = []
    train_dronet([str(data)], out, cfg, torch.device("cpu"), init_weights=official_dronet,
                 resume=True, log=logs.append)
    assert any("resuming after epoch 2" in line for line in logs)
    assert [line.split()[1] for line in logs if line.startswith("epoch")] == ["3/3"]
    assert len(open(out + ".history.csv").read().splitlines()) == 4


def test_soft_collision_targets_cost_nothing_when_matched():
    from dl_perception.training.dronet import dronet_loss
    target = torch.tensor([0.2, 0.9, float("nan")])
    logits = torch.logit(torch.tensor([0.2, 0.9, 0.5]))
    outputs = {"steering": torch.zeros(3), "collision_logit": logits}
    loss, parts = dronet_loss(outputs, torch.full((3,), float("nan")), target, 3, 3, 1.0)
    assert abs(parts["collision_bce"]) < 1e-6
    off = {"steering": torch.zeros(3), "collision_logit": torch.zeros(3)}
    assert dronet_loss(off, torch.full((3,), float("nan")), target, 3, 3, 1.0)[0] > 0.05


def test_shipped_checkpoints_by_purpose():
    from dl_perception.core.checkpoint import CheckpointError, load_checkpoint
    from dl_perception.core.paths import resolve_weights, shipped_weights

    assert resolve_weights("dronet", "") == shipped_weights("dronet")
    assert resolve_weights("dronet", "shipped:sim").endswith("dronet_sim.safetensors")
    with pytest.raises(CheckpointError, match="dronet_moon.safetensors"):
        resolve_weights("dronet", "shipped:moon")
    import yaml

    from dl_perception.core.paths import REPO_DIR
    sim = yaml.safe_load(open(os.path.join(REPO_DIR, "config", "sim.yaml")))
    assert sim["dronet_node"]["ros__parameters"]["weights"] == "shipped:sim"
    real = load_checkpoint(shipped_weights("dronet"))
    assert real.info["licence"].startswith("MIT")  # derived from the official release
    assert os.path.getsize(shipped_weights("dronet")) < 3_000_000


def test_info_set_records_provenance_without_touching_the_tensors(official_dronet, tmp_path):
    from dl_perception.core.checkpoint import load_checkpoint
    out = tmp_path / "noted.safetensors"
    subprocess.run([CLI, "info", official_dronet, "--set", "purpose=real cameras",
                    "licence=MIT", "--out", str(out)], check=True, capture_output=True)
    info = json.loads(subprocess.run([CLI, "info", str(out)], check=True, capture_output=True,
                                     text=True).stdout)
    assert info["info"]["purpose"] == "real cameras" and info["info"]["licence"] == "MIT"
    assert info["info"]["weights_sha256"].startswith("7e9ddfae")  # earlier entries kept
    before, after = load_checkpoint(official_dronet), load_checkpoint(str(out))
    assert all(torch.equal(before.state_dict[k], after.state_dict[k]) for k in before.state_dict)


@pytest.mark.parametrize("anchor", ["bottom", "centre"])
def test_pulp_layout_trains_and_its_batched_preprocessing_matches(anchor):
    from dl_perception.core import tensor_preprocess
    from dl_perception.core.imaging import DecodedImage
    from dl_perception.models.dronet import DroNet
    from dl_perception.training.dronet import dronet_loss

    model = DroNet(DroNet.make_config(layout="pulp", resize_to=[324, 244], crop_anchor=anchor,
                                      stem_batchnorm=True, shortcut_batchnorm=True,
                                      conv_bias=False, head_bias=False, head_activation=False))
    assert model.steering.bias is None and model.blocks[0].shortcut_bn is not None
    frames = np.random.default_rng(2).integers(0, 256, (2, 244, 324, 3), dtype=np.uint8)
    reference = torch.cat([model.preprocess(DecodedImage(f, "rgb8")) for f in frames])
    batch = model.preprocess_tensor(tensor_preprocess.upload(list(frames), torch.device("cpu")))
    assert batch.shape == reference.shape == (2, 1, 200, 200)
    assert float((batch - reference).abs().max()) <= 1.0 / 255 + 1e-6
    model.train()
    before = model.blocks[2].conv2.weight.clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss, _ = dronet_loss(model(reference), torch.tensor([0.3, -0.2]), torch.tensor([1.0, 0.0]),
                          2, 2, 1.0)
    (loss + model.regularization_loss()).backward()
    optimizer.step()
    assert not torch.equal(before, model.blocks[2].conv2.weight)
    with pytest.raises(ValueError, match="layout 'pulp'"):
        DroNet.make_config(stem_batchnorm=True)  # the keras layout is the official model exactly


def test_distillation_targets_are_the_teachers_mean_blended_with_the_labels(official_dronet,
                                                                            tmp_path):
    from dl_perception.datasets.dronet import read_dronet_dataset
    from dl_perception.models.dronet import DroNet
    from dl_perception.training.dronet import DroNetData, DroNetTrainConfig, distill_labels, predict

    _stripes(tmp_path / "data", frames=6)
    samples = read_dronet_dataset(str(tmp_path / "data"))
    official = DroNet.from_checkpoint(official_dronet)
    data = DroNetData(samples, official)
    labels, collision = data.steering.copy(), data.collision.copy()
    teacher_s, teacher_c = predict(official, data, np.arange(6))
    cfg = DroNetTrainConfig(distill_collision=[official_dronet, official_dronet],
                            distill_steering=[official_dronet], distill_steering_weight=0.25)
    distill_labels(data, samples, cfg, torch.device("cpu"), log=lambda _: None)
    np.testing.assert_allclose(data.steering, 0.25 * teacher_s + 0.75 * labels, atol=1e-6)
    unlabelled = np.isnan(collision)
    assert unlabelled.sum() == 2
    np.testing.assert_allclose(data.collision[unlabelled], teacher_c[unlabelled], atol=1e-6)
    assert np.array_equal(data.collision[~unlabelled], collision[~unlabelled])  # labels kept
