"""The training engine: resume equals an uninterrupted run, NaN stops with a diagnostic, signals checkpoint."""

import json
import os
import signal

import pytest
import torch
from torch.utils.data import DataLoader

from rkd.config import TrainConfig
from rkd.engine import NonFiniteLossError, Step, StopRequested, fit, make_accelerator, train_step


def toy_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    rows = [{"x": x[i], "label": y[i]} for i in range(256)]
    return DataLoader(rows, batch_size=16, shuffle=True), DataLoader(rows, batch_size=64)


class Objective:
    """Cross-entropy with a dropout-like random mask from its own generator (must survive resume)."""

    def __init__(self, fault_at=None, fault="nan"):
        self.generator = torch.Generator().manual_seed(1)
        self.fault_at, self.fault, self.step = fault_at, fault, 0

    def set_step(self, step):
        self.step = step

    def __call__(self, model, batch, train):
        x = batch["x"]
        if train:
            x = x * (torch.rand(x.shape, generator=self.generator) > 0.1)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, batch["label"])
        if train and self.step == self.fault_at:
            if self.fault == "nan":
                loss = loss * float("nan")
            else:
                os.kill(os.getpid(), signal.SIGUSR1)
        return Step(loss=loss, logits=logits.detach(), labels=batch["label"], terms={"ce": loss.detach()})


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


CFG = TrainConfig(epochs=3, lr=1e-2, checkpoint_every=5, log_every=5)


def test_stop_and_resume_equals_uninterrupted(tmp_path):
    accelerator = make_accelerator(cpu=True)
    train, val = toy_data()
    reference = model()
    fit(accelerator, reference, Objective(), train, val, CFG, tmp_path / "ref")

    interrupted = model()
    with pytest.raises(StopRequested):  # SIGUSR1 mid-epoch: checkpoint, then exit
        fit(accelerator, interrupted, Objective(fault_at=23, fault="signal"), train, val, CFG, tmp_path / "run")
    latest = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())
    assert latest["global_step"] == 24 and latest["step_in_epoch"] == 8
    resumed = model()
    summary = fit(accelerator, resumed, Objective(), train, val, CFG, tmp_path / "run")
    assert summary["steps"] == 48
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_until_epoch_stops_on_the_whole_schedule_and_a_later_call_finishes_it(tmp_path):
    """The candidate selection's screening: a stop after epoch 1 of 3, then a resume, is the uninterrupted run."""
    accelerator = make_accelerator(cpu=True)
    train, val = toy_data()
    reference = model()
    whole = fit(accelerator, reference, Objective(), train, val, CFG, tmp_path / "ref")

    screened = model()
    first = fit(accelerator, screened, Objective(), train, val, CFG, tmp_path / "run", until_epoch=1)
    assert first["steps"] == 16 and len(first["history"]) == 1
    assert first["history"][0] == {**whole["history"][0], "time": first["history"][0]["time"]}
    lrs = [
        json.loads(line)["lr"]
        for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
        if "lr" in json.loads(line)
    ]
    assert lrs[-1] > 0.5 * CFG.lr  # a third of the way down the 3-epoch cosine, not at its end
    finished = fit(accelerator, model(), Objective(), train, val, CFG, tmp_path / "run")
    assert finished["steps"] == 48 and finished["best_val_accuracy"] == whole["best_val_accuracy"]
    assert [h["val_accuracy"] for h in finished["history"]] == [h["val_accuracy"] for h in whole["history"]]
    resumed = model()
    fit(accelerator, resumed, Objective(), train, val, CFG, tmp_path / "run")  # finished: nothing left to train
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


class FeatureOnly:
    """A loss that reads a feature, not the logits (the conference design's student). Its accuracy comes from
    a head nothing trains: here right at the first evaluation only, as a frozen random head's can happen to be."""

    def __init__(self, reads: set):
        self.reads, self.evaluated = reads, 0

    def output_keys(self):
        return self.reads

    def __call__(self, model, batch, train):
        feature = model(batch["x"])
        loss = ((feature - batch["x"][:, :2]) ** 2).mean()
        first = not train and self.evaluated < 4  # the val loader's 4 batches of the first epoch
        self.evaluated += 0 if train else 1
        labels = batch["label"]
        logits = torch.nn.functional.one_hot(labels if first else 1 - labels, 2).float()
        return Step(loss=loss, logits=logits, labels=labels)


@pytest.mark.parametrize("reads", [{"feature"}, {"feature", "logits"}])
def test_a_loss_that_reads_no_logits_keeps_the_epoch_with_the_lowest_val_loss(tmp_path, reads):
    """Selecting such a student on its head's accuracy kept its first epoch: a barely trained feature."""
    from rkd.engine import evaluate

    accelerator = make_accelerator(cpu=True)
    train, val = toy_data()
    student = model()
    summary = fit(accelerator, student, FeatureOnly(reads), train, val, CFG, tmp_path / "run")
    losses = [r["val_loss"] for r in summary["history"]]
    kept = evaluate(accelerator, student, FeatureOnly(reads), val)["loss"]
    if "logits" in reads:  # accuracy speaks for the model: the first epoch was the best
        assert summary["selected_on"] == "val accuracy" and summary["best_val_accuracy"] == 1.0
        assert kept == pytest.approx(losses[0])
    else:
        assert summary["selected_on"] == "val loss" and min(losses) < losses[0]
        assert kept == pytest.approx(min(losses)) and summary["best_val_accuracy"] == 0.0


def test_nan_loss_stops_with_diagnostic_and_keeps_checkpoint(tmp_path):
    accelerator = make_accelerator(cpu=True)
    train, val = toy_data()
    with pytest.raises(NonFiniteLossError) as info:
        fit(accelerator, model(), Objective(fault_at=12), train, val, CFG, tmp_path / "run", desc="stage9")
    message = str(info.value)
    assert "stage9" in message and "step 12" in message and "'ce'" in message and "grad_clip" in message
    latest = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())
    assert latest["global_step"] == 10  # the last good checkpoint is still there
    assert (tmp_path / "run" / "checkpoints" / latest["dir"]).is_dir()


class Counter:
    """Training state outside the model (like the search's architect): counts the updates it has seen."""

    def __init__(self):
        self.n = 0

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


class CountingObjective(Objective):
    def __init__(self, counter, **kwargs):
        super().__init__(**kwargs)
        self.counter = counter

    def before_update(self, model, batch, global_step):
        self.counter.n += 1


def test_checkpoint_objects_resume_with_their_stage_only(tmp_path):
    accelerator = make_accelerator(cpu=True)
    train, val = toy_data()
    counter = Counter()
    with pytest.raises(StopRequested):
        fit(
            accelerator,
            model(),
            CountingObjective(counter, fault_at=23, fault="signal"),
            train,
            val,
            CFG,
            tmp_path / "run",
            checkpoint_objects=[counter],
        )
    assert counter.n == 24
    resumed = Counter()
    fit(
        accelerator,
        model(),
        CountingObjective(resumed),
        train,
        val,
        CFG,
        tmp_path / "run",
        checkpoint_objects=[resumed],
    )
    assert resumed.n == 48  # 24 restored from the checkpoint, 24 more after the resume
    # a later fit on the same accelerator neither saves nor expects the object
    fit(accelerator, model(), Objective(), train, val, CFG, tmp_path / "next")
    assert not list((tmp_path / "next" / "checkpoints").rglob("checkpoint-object-*"))
    assert list((tmp_path / "run" / "checkpoints").rglob("checkpoint-object-0.pt"))


def test_checkpoint_objects_need_state_dict_methods(tmp_path):
    train, val = toy_data()
    with pytest.raises(TypeError, match=r"checkpoint_objects\[0\] = object .*state_dict\(\) and load_state_dict"):
        fit(
            make_accelerator(cpu=True),
            model(),
            Objective(),
            train,
            val,
            CFG,
            tmp_path / "run",
            checkpoint_objects=[object()],
        )


def test_train_step_refuses_a_non_finite_loss_before_any_update():
    accelerator = make_accelerator(cpu=True)
    net = model()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    batch = next(iter(toy_data()[0]))
    with pytest.raises(NonFiniteLossError) as info:
        train_step(accelerator, net, Objective(fault_at=3), batch, optimizer, global_step=3)
    assert "step 3" in str(info.value) and list(info.value.terms) == ["ce"]
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    step = train_step(accelerator, net, Objective(fault_at=3), batch, optimizer, global_step=4, grad_clip=0.1)
    assert torch.isfinite(step.loss) and not all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_the_cli_hands_the_collective_timeout_to_the_accelerator(monkeypatch, tmp_path, capsys):
    """``collective_timeout_minutes`` from the config (default and override) reaches ``make_accelerator``."""
    import rkd.commands
    from rkd.cli import main
    from rkd.run.launch_check import LaunchError

    seen = []

    def fake_accelerator(*args, **kwargs):
        seen.append(kwargs.get("collective_timeout_minutes", "missing"))
        raise LaunchError("stopped by the test")

    monkeypatch.setattr(rkd.commands, "configure_threads", lambda: None)
    monkeypatch.setattr(rkd.commands, "make_accelerator", fake_accelerator)
    assert main(["teacher", f"runs_dir={tmp_path}"]) == 2
    assert main(["teacher", f"runs_dir={tmp_path}", "collective_timeout_minutes=90"]) == 2
    assert main(["teacher", f"runs_dir={tmp_path}", "collective_timeout_minutes=null"]) == 2
    assert seen == [30.0, 90.0, None]
    assert "stopped by the test" in capsys.readouterr().err
