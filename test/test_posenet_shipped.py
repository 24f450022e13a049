"""The shipped PoseNet weights: trained on simulator world 7 (a training world), they say so, and
they relocalise the camera in views of that world rendered afresh on a route never recorded."""
import os


from dl_perception.core.paths import shipped_weights

WORLD_SEED = 7


def test_shipped_posenet_weights_name_their_scene():
    from dl_perception.core.checkpoint import load_checkpoint
    from dl_perception.training.common import EVALUATION_WORLD_SEEDS

    path = shipped_weights("posenet")
    assert os.path.getsize(path) < 5_000_000
    checkpoint = load_checkpoint(path, expected_model="posenet")
    assert checkpoint.info["scene"] == f"simulator world {WORLD_SEED} (64 m x 64 m)"
    assert WORLD_SEED not in EVALUATION_WORLD_SEEDS
    assert checkpoint.config["frame_id"] == "world" and checkpoint.config["learned_weighting"]


def test_shipped_posenet_relocalises_in_its_world(tmp_path):
    import torch

    from dl_perception.datasets.poses import open_posed_images
    from dl_perception.evaluation.posenet import evaluate_posenet
    from dl_perception.sim.recording import RecordConfig, record

    # a route never recorded for training, one frame every 4 s of flight (about 8 m)
    record(RecordConfig(world_seed=WORLD_SEED, out=str(tmp_path / "flight"), route="random",
                        route_seed=300, frames=12, rate_hz=0.25, bag=False))
    metrics = evaluate_posenet(shipped_weights("posenet"),
                               [open_posed_images(str(tmp_path / "flight"))], torch.device("cpu"),
                               log=lambda _: None)
    assert metrics["frames"] == 12
    # a network that learned nothing is tens of metres off in a 64 m world
    assert metrics["median_position_error_m"] < 3.0, metrics
    assert metrics["median_rotation_error_deg"] < 10.0, metrics
