"""TrainingRun: history CSV, loss plot, and a resumed run that ends where an uninterrupted one does."""
import csv

import numpy as np
import torch

from dl_perception.training.run import TrainingRun


def _train(out, epochs, resume=False, stop_after=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    rng = np.random.default_rng(0)
    run = TrainingRun(str(out), resume=resume)
    start = run.restore(model, optimizer, scheduler, rng)
    for epoch in range(start, epochs):
        x = torch.from_numpy(rng.normal(size=(8, 3)).astype(np.float32))
        noise = torch.randn(8, 1)  # torch's generator must be restored too
        loss = ((model(x) - x.sum(1, keepdim=True) - 0.1 * noise) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        run.end_epoch(epoch + 1, {"loss": loss.item()}, model, optimizer, scheduler, rng)
        if stop_after == epoch + 1:
            break
    else:
        run.finish()
    return model, run


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    straight, _ = _train(tmp_path / "a.safetensors", 5)
    _train(tmp_path / "b.safetensors", 5, stop_after=2)
    resumed, run = _train(tmp_path / "b.safetensors", 5, resume=True)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    with open(run.history_path) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3, 4, 5]
    assert (tmp_path / "b.safetensors.loss.png").stat().st_size > 1000


def test_a_fresh_run_discards_an_old_history(tmp_path):
    _train(tmp_path / "c.safetensors", 3)
    _, run = _train(tmp_path / "c.safetensors", 1)
    with open(run.history_path) as handle:
        assert len(list(csv.DictReader(handle))) == 1
