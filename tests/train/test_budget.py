"""The time budget: epochs from the measured step time, and a probe that leaves the model as it was."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the [train] extra (torch) is not installed")

from onnxprune.train.budget import measure_step, plan  # noqa: E402


def test_epochs_follow_from_the_step_time() -> None:
    assert plan(minutes=1.0, step_seconds=0.5, eval_seconds=2.0, steps=10, cap=None).epochs == 8  # 60 / 7 s
    assert plan(1.0, 0.5, 2.0, 10, cap=3).epochs == 3
    assert plan(0.05, 0.5, 1.0, 10, cap=None).epochs == 1  # not one epoch: one, which the deadline cuts


def test_the_probe_restores_parameters_and_statistics() -> None:
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)

    def step(k: int) -> None:
        module.train()
        loss = module(torch.randn(4, 3, 8, 8)).pow(2).mean()
        loss.backward()
        optimizer.step()  # even a probe that steps is undone

    seconds = measure_step(module, step)
    assert seconds > 0
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in module.parameters())
