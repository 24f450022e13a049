"""The shipped simulator DroNet weights (shipped:sim) are the simulator-trained ones and behave
like it: a wall close ahead means collision, open space does not."""
import os

import numpy as np
import pytest

from dl_perception.paths import shipped_weights


def test_shipped_dronet_weights_were_trained_in_training_worlds():
    from dl_perception.checkpoint import load_checkpoint
    from dl_perception.training.common import EVALUATION_WORLD_SEEDS
    path = shipped_weights("dronet", "sim")
    assert os.path.getsize(path) < 3_000_000
    checkpoint = load_checkpoint(path)
    assert checkpoint.model == "dronet"
    seeds = checkpoint.info["world_seeds"]
    assert seeds and not set(seeds) & set(EVALUATION_WORLD_SEEDS)


@pytest.mark.parametrize("yaw, expect_collision", [(0.0, True), (np.pi, False)])
def test_shipped_dronet_sees_a_wall_ahead(yaw, expect_collision):
    import torch

    from dl_perception import models
    from dl_perception.imaging import DecodedImage
    from dl_perception.sim.simulator import Simulator
    from test_sim import wall_world

    model = models.load(shipped_weights("dronet", "sim"), expected="dronet").eval()
    sim = Simulator(3, world=wall_world())
    try:
        sim.reset((10.0 - 1.2 if yaw == 0.0 else 0.0, 0.0, 1.5, yaw))  # 1.2 m from the wall
        rgb, _ = sim.render()
    finally:
        sim.close()
    with torch.inference_mode():
        probability = float(model(model.preprocess(DecodedImage(rgb, "rgb8")))
                            ["collision_probability"][0])
    assert (probability > 0.5) == expect_collision, probability
