"""Progress: a live bar on a terminal, a few lines with rate and ETA in a job log."""

import io
import re

import pytest
from tqdm import tqdm

from rkd.run import progress as progress_module
from rkd.run.progress import LineProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", c)
    return c


def test_terminal_gets_a_bar_and_a_log_gets_lines(monkeypatch):
    monkeypatch.delenv("RKD_PROGRESS", raising=False)
    assert isinstance(progress_bar(10, "x", stream=Terminal()), tqdm)
    assert isinstance(progress_bar(10, "x", stream=io.StringIO()), LineProgress)
    monkeypatch.setenv("RKD_PROGRESS", "lines")
    assert isinstance(progress_bar(10, "x", stream=Terminal()), LineProgress)
    monkeypatch.setenv("RKD_PROGRESS", "off")
    silent = progress_bar(10, "x", stream=io.StringIO())
    silent.update(3), silent.mark(), silent.close()  # no output, no error
    monkeypatch.setenv("RKD_PROGRESS", "sometimes")
    with pytest.raises(ValueError, match="RKD_PROGRESS = 'sometimes'.*'bar', 'lines'"):
        progress_bar(10, "x")


def test_lines_every_interval_with_rate_and_eta(monkeypatch, clock):
    monkeypatch.setenv("RKD_PROGRESS", "auto")
    monkeypatch.setenv("RKD_PROGRESS_SECONDS", "30")
    log = io.StringIO()
    bar = progress_bar(1000, "stage1", stream=log, unit="steps")
    for _ in range(100):  # 100 steps, 1 s apart: a line every 30 s, not every step
        clock.now += 1.0
        bar.update(1)
    bar.set_postfix(loss="0.4120")
    bar.mark()
    lines = log.getvalue().splitlines()
    assert len(lines) == 4  # at 30, 60, 90 s and the mark
    assert lines[0] == "[stage1] 30/1000 steps (3%), 1.00 steps/s, elapsed 0:00:30, ETA 0:16:10"
    assert lines[-1] == "[stage1] 100/1000 steps (10%), 1.00 steps/s, elapsed 0:01:40, ETA 0:15:00, loss=0.4120"
    bar.close()
    assert len(log.getvalue().splitlines()) == 4  # nothing new since the mark: no repeated line
    bar = LineProgress(10, "cache", "img", interval=1e9, file=log)
    bar.update(4)
    bar.close()
    bar.close()
    assert log.getvalue().splitlines()[4:] == ["[cache] 4/10 img (40%), 0.00 img/s, elapsed 0:00:00"]


def test_resumed_progress_counts_rate_from_where_it_started(clock):
    log = io.StringIO()
    bar = LineProgress(100, "stage2", "steps", initial=60, interval=1e9, file=log)
    clock.now += 10
    bar.update(20)
    bar.mark()
    assert "80/100 steps (80%), 2.00 steps/s" in log.getvalue() and "ETA 0:00:10" in log.getvalue()


def test_bad_interval_names_the_variable(monkeypatch):
    monkeypatch.setenv("RKD_PROGRESS", "lines")
    monkeypatch.setenv("RKD_PROGRESS_SECONDS", "-5")
    with pytest.raises(ValueError, match="RKD_PROGRESS_SECONDS = '-5'.*seconds > 0"):
        progress_bar(10, "x", stream=io.StringIO())


def test_training_in_a_job_log_writes_a_line_per_epoch(tmp_path, capsys, monkeypatch):
    from test_engine import CFG, Objective, model, toy_data

    from rkd.engine import fit, make_accelerator

    monkeypatch.setenv("RKD_PROGRESS", "auto")  # pytest's captured stderr is not a terminal
    monkeypatch.setenv("RKD_PROGRESS_SECONDS", "3600")
    train, val = toy_data()
    fit(make_accelerator(cpu=True), model(), Objective(), train, val, CFG, tmp_path / "run", desc="toy")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("[toy] ")]
    assert len(lines) == CFG.epochs  # one per epoch (close adds none: nothing new); no bar redraws
    assert all(re.search(r"steps/s, elapsed \d+:\d\d:\d\d", line) for line in lines)
    assert lines[0].startswith("[toy] 16/48 steps (33%)") and "ETA" in lines[0] and "\r" not in err
