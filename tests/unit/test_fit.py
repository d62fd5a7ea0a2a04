"""The one fit loop (training/fit.py) with a tiny objective: steps, early stopping, budget, hooks and resume."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from hybridrec.dataclass_yaml import ConfigError
from hybridrec.training.config import OptimConfig
from hybridrec.training.fit import FitState, fit, make_optimizer

pytestmark = pytest.mark.unit


class Scripted:
    """Fits y = 3x; validation returns the scripted scores, one per epoch."""

    def __init__(self, model: nn.Module, scores: Sequence[float]) -> None:
        self.model, self.scores, self.epochs, self.steps = model, list(scores), 0, 0
        self.x = torch.linspace(-1, 1, 32).unsqueeze(1)

    def batches(self, epoch: int) -> Sequence[Tensor]:
        self.epochs += 1
        return [self.x[:16], self.x[16:]]

    def loss(self, batch: Tensor) -> Tensor:
        self.steps += 1
        return ((self.model(batch) - 3 * batch) ** 2).mean()

    def validate(self) -> dict[str, float]:
        assert not self.model.training and not torch.is_grad_enabled()
        return {"score": self.scores[self.epochs - 1]}


def test_fit_steps_every_batch_and_stops_after_patience() -> None:
    model = nn.Linear(1, 1)
    objective = Scripted(model, [0.1, 0.3, 0.2, 0.25, 0.9])
    best: list[float] = []
    epochs: list[int] = []
    o = OptimConfig(lr=0.1, epochs=5, patience=2)
    state = fit(
        model,
        objective,
        torch.optim.Adam(model.parameters(), lr=0.1),
        o,
        on_best=lambda m: best.append(m["score"]),
        on_epoch=lambda s: epochs.append(s.next_epoch),
    )
    assert objective.steps == 8 and epochs == [1, 2, 3, 4]  # epoch 5 never ran: two epochs without a gain
    assert (state.best, state.best_epoch, state.stopped) == (0.3, 2, "patience") and best == [0.1, 0.3]
    assert [row["epoch"] for row in state.history] == [1.0, 2.0, 3.0, 4.0]
    assert state.history[-1]["loss"] < state.history[0]["loss"]  # it did learn


def test_fit_resumes_from_a_state_and_honours_the_time_budget() -> None:
    model = nn.Linear(1, 1)
    objective = Scripted(model, [0.5, 0.6, 0.7])
    start = FitState(next_epoch=1, best=0.4, best_epoch=1, history=[{"epoch": 1.0, "elapsed_s": 0.0}])
    o = replace(OptimConfig(), epochs=3, patience=5, max_minutes=0.0)  # every epoch crosses a zero budget
    state = fit(model, objective, torch.optim.SGD(model.parameters(), lr=0.01), o, state=start)
    assert objective.epochs == 1 and state.next_epoch == 2 and state.stopped == "budget"
    assert state.best == 0.5 and state.best_epoch == 2 and len(state.history) == 2


def test_weight_average_validates_the_average_and_trains_the_raw_weights() -> None:
    """With optim.ema_decay, validation (and on_best, which saves the model) sees the moving average of the weights;
    training and the checkpoint hook go on with the raw weights."""
    from hybridrec.training.fit import WeightAverage

    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    avg = WeightAverage(model, 0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
    avg.update()  # 0.5 * 1 + 0.5 * 3
    avg.swap()
    assert model.weight.item() == 2.0
    avg.swap()
    assert model.weight.item() == 3.0
    with pytest.raises(ValueError, match="ema_decay"):
        WeightAverage(model, 1.0)

    seen: dict[str, list[float]] = {"validate": [], "best": [], "epoch": []}
    model = nn.Linear(1, 1, bias=False)

    class Watched(Scripted):
        def validate(self) -> dict[str, float]:
            seen["validate"].append(model.weight.item())
            return super().validate()

    o = OptimConfig(lr=0.1, epochs=3, patience=5, ema_decay=0.9)
    fit(
        model,
        Watched(model, [0.1, 0.2, 0.3]),
        torch.optim.SGD(model.parameters(), lr=0.1),
        o,
        on_best=lambda m: seen["best"].append(model.weight.item()),
        on_epoch=lambda s: seen["epoch"].append(model.weight.item()),
    )
    assert seen["best"] == seen["validate"]  # the saved model is the validated (averaged) one
    raw = model.weight.item()
    assert seen["epoch"][-1] == raw and all(abs(3.0 - v) > abs(3.0 - raw) for v in seen["validate"])


def test_a_resumed_fit_goes_on_with_the_saved_weight_average() -> None:
    """The checkpoint keeps the weight average (FitState.average): a fit stopped after epoch 1 and resumed validates
    the same averaged weights in epoch 2 as one that never stopped, not an average restarted at the raw weights."""
    import copy

    o = OptimConfig(lr=0.1, epochs=2, patience=5, ema_decay=0.9)

    def validated(model: nn.Module) -> tuple[list[float], Scripted]:
        """The weights each validation sees, and an objective that records them."""
        seen: list[float] = []

        class Watched(Scripted):
            def validate(self) -> dict[str, float]:
                seen.append(model.weight.item())
                return {"score": float(len(seen))}

        return seen, Watched(model, [])

    torch.manual_seed(0)
    whole = nn.Linear(1, 1, bias=False)
    first = copy.deepcopy(whole)
    seen_whole, objective = validated(whole)
    fit(whole, objective, torch.optim.SGD(whole.parameters(), lr=0.1), o)

    opt = torch.optim.SGD(first.parameters(), lr=0.1)
    seen_first, objective = validated(first)
    state = fit(first, objective, opt, replace(o, epochs=1))
    saved = {"model": copy.deepcopy(first.state_dict()), "average": [a.clone() for a in state.average or []]}
    resumed = nn.Linear(1, 1, bias=False)
    resumed.load_state_dict(saved["model"])
    seen_resumed, objective = validated(resumed)
    start = FitState(next_epoch=1, best=state.best, best_epoch=1, history=state.history, average=saved["average"])
    fit(resumed, objective, torch.optim.SGD(resumed.parameters(), lr=0.1), o, state=start)
    assert seen_first + seen_resumed == pytest.approx(seen_whole, abs=1e-7)
    assert resumed.weight.item() == pytest.approx(whole.weight.item())  # training goes on with the raw weights
    with pytest.raises(ValueError, match="does not fit the model"):
        fit(nn.Linear(2, 1), objective, opt, o, state=FitState(next_epoch=1, average=saved["average"]))


def test_linear_lr_decay_falls_per_step_to_zero_over_the_epochs_and_resumes_on_schedule() -> None:
    model = nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lrs: list[float] = []

    class Recorded(Scripted):
        def loss(self, batch: Tensor) -> Tensor:
            lrs.append(opt.param_groups[0]["lr"])
            return super().loss(batch)

    o = OptimConfig(lr=0.1, epochs=2, patience=5, lr_decay="linear")
    fit(model, Recorded(model, [0.1, 0.2]), opt, o)
    assert lrs == pytest.approx([0.1, 0.075, 0.05, 0.025])  # 2 epochs of 2 steps
    lrs.clear()  # a fit resumed at epoch 2 takes the second epoch's rates, not the first's
    fit(model, Recorded(model, [0.3]), opt, o, state=FitState(next_epoch=1, history=[{"epoch": 1.0, "elapsed_s": 0}]))
    assert lrs == pytest.approx([0.05, 0.025])
    with pytest.raises(ValueError, match="lr_decay"):
        fit(model, Scripted(model, [0.1]), opt, replace(o, lr_decay="cosine"))


def test_cnn_lr_scale_puts_the_poster_cnn_in_its_own_group_and_the_schedule_keeps_the_ratio() -> None:
    class Tiny(nn.Module):  # the parameter names of the hybrid's poster CNN, item tower and sequence tower
        def __init__(self) -> None:
            super().__init__()
            self.item_encoder = nn.ModuleDict(
                {"cnn": nn.Linear(1, 1), "spatial": nn.Linear(1, 1), "id": nn.Linear(1, 1)}
            )
            self.sequence_encoder = nn.Linear(1, 1)

    model = Tiny()
    one = make_optimizer(model, OptimConfig(lr=0.1))
    assert len(one.param_groups) == 1 and one.param_groups[0]["lr"] == 0.1
    opt = make_optimizer(model, OptimConfig(lr=0.1, cnn_lr_scale=0.25))
    rest, cnn = opt.param_groups
    enc = model.item_encoder
    assert {id(p) for p in cnn["params"]} == {id(p) for m in (enc["cnn"], enc["spatial"]) for p in m.parameters()}
    assert len(rest["params"]) == 4 and (rest["lr"], cnn["lr"]) == pytest.approx((0.1, 0.025))
    o = OptimConfig(lr=0.1, epochs=2, patience=5, lr_decay="linear", cnn_lr_scale=0.25)
    lin = nn.Linear(1, 1)
    fit(lin, Scripted(lin, [0.1, 0.2]), opt, o)  # the schedule scales both groups and keeps their ratio
    assert cnn["lr"] == pytest.approx(0.25 * rest["lr"]) and 0 < rest["lr"] < 0.1
    with pytest.raises(ConfigError, match="cnn_lr_scale"):
        OptimConfig(cnn_lr_scale=-0.5)


def test_clip_per_module_keeps_one_modules_spike_out_of_the_others_steps() -> None:
    """The whole model's clip scales every gradient by one factor; per module, a spike in one part (the fusion head's)
    leaves the other parts' gradients as they were, and each part's norm ends at most GRAD_CLIP."""
    from hybridrec.training.fit import GRAD_CLIP, clip_gradients

    def model_with_grads() -> nn.Module:
        model = nn.Module()
        model.tower, model.head = nn.Linear(2, 1, bias=False), nn.Linear(2, 1, bias=False)
        model.scale = nn.Parameter(torch.ones(1))  # a parameter of the root itself
        model.tower.weight.grad = torch.tensor([[3.0, 4.0]])  # norm 5: at the clip
        model.head.weight.grad = torch.tensor([[30.0, 40.0]])  # norm 50: a spike
        model.scale.grad = torch.tensor([12.0])
        return model

    whole = model_with_grads()
    clip_gradients(whole)
    total = math.sqrt(5.0**2 + 50.0**2 + 12.0**2)
    assert whole.tower.weight.grad[0].tolist() == pytest.approx(
        [3 * GRAD_CLIP / total, 4 * GRAD_CLIP / total], rel=1e-4
    )

    each = model_with_grads()
    clip_gradients(each, per_module=True)
    assert each.tower.weight.grad[0].tolist() == pytest.approx([3.0, 4.0], rel=1e-4)  # untouched by the head's spike
    assert each.head.weight.grad.norm().item() == pytest.approx(GRAD_CLIP, rel=1e-4)
    assert each.scale.grad.item() == pytest.approx(GRAD_CLIP, rel=1e-4)
