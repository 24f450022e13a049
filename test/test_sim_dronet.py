"""The shipped simulator DroNet weights (shipped:sim) are the simulator-trained ones and behave
like it: a wall close ahead means collision, open space does not."""
import os

import numpy as np

from dl_perception.core.paths import shipped_weights


def test_shipped_dronet_weights_were_trained_in_training_worlds():
    from dl_perception.core.checkpoint import load_checkpoint
    from dl_perception.training.common import EVALUATION_WORLD_SEEDS
    path = shipped_weights("dronet", "sim")
    assert os.path.getsize(path) < 3_000_000
    checkpoint = load_checkpoint(path)
    assert checkpoint.model == "dronet"
    seeds = checkpoint.info["world_seeds"]
    assert seeds and not set(seeds) & set(EVALUATION_WORLD_SEEDS)


def test_shipped_dronet_sees_a_wall_ahead():
    """Over nine poses each (lateral offsets -1, 0, 1 m by yaw offsets -0.2, 0, 0.2 rad), the
    median collision probability is above 0.5 with the wall 1.2 m ahead and below it facing open
    space, and the two medians lie well apart. One frame alone moves by 0.2 between Mesa and
    OpenCV builds (0.30 here, 0.51 on one Debian 12 machine, facing open space)."""
    import torch

    from dl_perception import models
    from dl_perception.core.imaging import DecodedImage
    from dl_perception.sim.simulator import Simulator
    from test_sim import wall_world

    model = models.load(shipped_weights("dronet", "sim"), expected="dronet").eval()
    offsets = [(y, yaw) for y in (-1.0, 0.0, 1.0) for yaw in (-0.2, 0.0, 0.2)]
    sim = Simulator(3, world=wall_world())
    probabilities = {}
    try:
        for view, x, heading in (("wall", 10.0 - 1.2, 0.0), ("open", 0.0, np.pi)):
            frames = []
            for y, yaw in offsets:
                sim.reset((x, y, 1.5, heading + yaw))
                frames.append(sim.render()[0].copy())  # the renderer reuses its buffer
            with torch.inference_mode():
                batch = torch.cat([model.preprocess(DecodedImage(rgb, "rgb8")) for rgb in frames])
                probabilities[view] = model(batch)["collision_probability"].flatten().numpy()
    finally:
        sim.close()
    wall, open_view = np.median(probabilities["wall"]), np.median(probabilities["open"])
    assert wall > 0.5 > open_view, probabilities
    assert wall - open_view > 0.3, probabilities
