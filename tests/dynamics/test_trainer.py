"""The trainer: exact resume, checkpoint schedules, metrics files, early stopping, fixed-norm training."""
import json
import math

import pytest
import torch

from uncover.dynamics.data import modular_data
from uncover.dynamics.models import ModularMLP, ToyTransformer, nanda_config
from uncover.dynamics.tasks import ModularTask
from uncover.dynamics.trainer import TrainConfig, Trainer, checkpoint_steps, load_checkpoint, weight_norm
from uncover.errors import UncoverError


def _tiny_model(seed=0):
    cfg = nanda_config(11)
    cfg.d_model, cfg.d_head, cfg.d_mlp = 16, 4, 32
    return ToyTransformer(cfg, seed=seed)


@pytest.mark.parametrize("batch_size", [None, 16])
def test_resume_is_identical_to_an_uninterrupted_run(tmp_path, batch_size):
    task = ModularTask(modular_data(11, "add", 0.5, seed=0))
    cfg = dict(lr=3e-3, weight_decay=1.0, warmup_steps=5, batch_size=batch_size, eval_every=4, checkpoints="none")
    straight = Trainer(_tiny_model(), task, TrainConfig(steps=12, **cfg))
    straight.fit()

    first = Trainer(_tiny_model(), task, TrainConfig(steps=6, **cfg), out_dir=tmp_path)
    first.fit()
    resumed = Trainer(_tiny_model(seed=123), task, TrainConfig(steps=12, **cfg), out_dir=tmp_path)
    result = resumed.fit()
    assert result.steps_done == 12
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert straight.train_losses == resumed.train_losses
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 4, 6, 8, 12]
    assert rows[-1]["test_loss"] == pytest.approx(straight.metrics[-1]["test_loss"])


def test_resume_with_different_hyperparameters_is_refused(tmp_path):
    task = ModularTask(modular_data(11, "add", 0.5))
    Trainer(_tiny_model(), task, TrainConfig(steps=2, eval_every=1), out_dir=tmp_path).fit()
    with pytest.raises(UncoverError, match="lr"):
        Trainer(_tiny_model(), task, TrainConfig(steps=4, lr=0.1, eval_every=1), out_dir=tmp_path).fit()


def test_checkpoint_schedules_and_files(tmp_path):
    assert checkpoint_steps(TrainConfig(steps=10, checkpoints="fixed", checkpoint_every=4)) == [0, 4, 8, 10]
    log = checkpoint_steps(TrainConfig(steps=1000, checkpoints="log", n_checkpoints=4))
    assert log == [0, 1, 10, 100, 1000]
    assert checkpoint_steps(TrainConfig(steps=5, checkpoints="none")) == []
    task = ModularTask(modular_data(11, "add", 0.5))
    trainer = Trainer(_tiny_model(), task, TrainConfig(steps=8, eval_every=4, checkpoints="fixed", checkpoint_every=4),
                      out_dir=tmp_path)
    result = trainer.fit()
    assert sorted(result.checkpoints) == [0, 4, 8]
    reloaded = load_checkpoint(_tiny_model(seed=5), result.checkpoints[8])
    for a, b in zip(reloaded.state_dict().values(), trainer.model.state_dict().values()):
        assert torch.equal(a, b)


def test_stop_at_threshold_and_warmup():
    task = ModularTask(modular_data(11, "add", 0.5))
    trainer = Trainer(_tiny_model(), task, TrainConfig(steps=500, lr=1e-2, eval_every=5, checkpoints="none",
                                                       stop_at={"train_acc": 1.0}))
    result = trainer.fit()
    assert result.steps_done < 500 and result.metrics[-1]["train_acc"] == 1.0
    # linear warm-up: the learning rate after step s (s < warmup) is lr * (s + 1) / warmup
    t = Trainer(_tiny_model(), task, TrainConfig(steps=3, lr=1.0, warmup_steps=10, checkpoints="none"))
    t.fit()
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.4)


def test_fixed_norm_training_keeps_the_weight_norm():
    task = ModularTask(modular_data(11, "add", 0.5))
    model = ModularMLP(11, width=16, seed=0)
    trainer = Trainer(model, task, TrainConfig(steps=5, fixed_norm=3.0, weight_decay=0.0, checkpoints="none"))
    trainer.fit()
    assert weight_norm(trainer.model) == pytest.approx(3.0, rel=1e-5)
    naive = math.sqrt(sum((p.detach() ** 2).sum().item() for p in model.parameters()))
    assert naive == pytest.approx(3.0, rel=1e-5)


def test_bad_config_is_rejected():
    with pytest.raises(UncoverError, match="checkpoints"):
        TrainConfig(checkpoints="sometimes")
    with pytest.raises(UncoverError, match="positive"):
        TrainConfig(steps=0)


def test_trainer_puts_the_task_on_its_device():
    """The trainer moves the task's data to the device it trains on (a GPU when present)."""
    moved = []

    class Recording(ModularTask):
        def to(self, device):
            moved.append(torch.device(device))
            return super().to(device)

    task = Recording(modular_data(11, "add", 0.5, seed=0))
    trainer = Trainer(_tiny_model(), task, TrainConfig(steps=1, checkpoints="none", device="cpu"))
    assert moved[-1] == trainer.device and trainer.task.train_tokens.device == trainer.device
