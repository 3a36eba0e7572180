"""Time said up front: the whole run's plan before it starts, and each stage's projected time after its first ~30 s.

A stage's work is a plan of phases (``Phase``: a count of steps or images, and the seconds one of them
cost when ``rkd.run.calibrate`` timed this stage's models here). The plan alone is the up-front
estimate. While the stage runs, the training loop reports each finished unit of work
(``advance(phase)``); ``StageClock`` compares the seconds spent with the plan's seconds for the work
done so far and, once the stage has run ``PROJECT_AFTER`` seconds, says the remaining plan scaled by
that ratio: the plan knows the stage's shape (weight-only steps, then architecture steps, then
candidates), the ratio knows how fast this machine is going right now. The ratio is kept per kind of
work (a phase name): a forward pass over images and a training step can both be off the plan, each by
its own factor, and a stage that begins with the one (stage 2's tokens) must not price the other by it.

Some work is not known in the first 30 s: the search's candidates are drawn only after the supernet
(how many fit under the searched cells' size, and what their cells cost, depends on what it found).
So the projection is said again ("revised") when the plan learns its real size (``rescale``) or a
kind of work gets its own pace, if that moves it by more than ``REVISE_BY``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta

PROJECT_AFTER = 30.0  # seconds of a stage before its projected time is said
OWN_PACE_AFTER = 2.0  # planned seconds of a kind of work done before its own pace prices the rest of it,
OWN_PACE_SHARE = 0.25  # and this share of that kind's planned work (its first units, one candidate's cells, mislead)
REVISE_BY = 0.15  # a revised projection is said when it moves the last one said by more than this fraction
LONG_RUN = 2 * 3600.0  # past this, the plan says what a quicker run would cost


@dataclass
class Phase:
    """``units`` of one kind of work, ``seconds`` each (as calibrated; None: learned from the stage itself)."""

    name: str
    units: float
    seconds: float | None = None


@dataclass
class StagePlan:
    stage: str
    phases: list[Phase] = field(default_factory=list)

    def add(self, name: str, units: float, seconds: float | None) -> None:
        if units > 0:
            self.phases.append(Phase(name, float(units), seconds))

    @property
    def seconds(self) -> float | None:
        """The plan's total, or None while a phase's cost is unknown."""
        costs = [p.seconds for p in self.phases]
        if any(c is None for c in costs):
            return None
        return sum(p.units * c for p, c in zip(self.phases, costs) if c is not None)


def clock_text(seconds: float) -> str:
    return str(timedelta(seconds=int(round(seconds))))


class StageClock:
    """Tracks one stage's work against its plan and says the projected total once, after ``after`` seconds.

    Reports fill the plan's phases of their name in order (the search's weight-only steps, then its
    steps with an architecture update: one name, two costs); a name is matched exactly, else by its
    first word before the colon ("candidate 3/16 (1 of 3 epochs):train" -> "candidate:train").
    """

    def __init__(
        self,
        plan: StagePlan,
        say: Callable[[str], None],
        after: float = PROJECT_AFTER,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = StagePlan(plan.stage, [replace(p) for p in plan.phases])  # ``rescale`` leaves the caller's as said
        self.say, self.after, self.now = say, after, now
        self.started = now()
        self.done = [0.0] * len(plan.phases)  # counted here
        self.skipped = [0.0] * len(plan.phases)  # done before a resume
        self.last_report: float | None = None
        self.spent: dict = {}  # seconds between reports, by the phase name of the report that closed them
        self.planned: dict = {}  # planned seconds of the work those reports finished, by phase name
        self.projected: float | None = None  # the projection said after ``after`` seconds
        self.revised: float | None = None  # the last revision said since

    def _matching(self, name: str) -> list[int]:
        exact = [i for i, p in enumerate(self.plan.phases) if p.name == name]
        if exact:
            return exact
        head, _, kind = name.partition(":")
        short = f"{head.split()[0]}:{kind}" if head.split() else name
        return [i for i, p in enumerate(self.plan.phases) if p.name == short]

    def advance(self, name: str, units: float = 1.0, counted: bool = True) -> None:
        """``units`` of work ``name`` are finished; ``counted=False``: done before (a resume), not timed here."""
        matching = self._matching(name)
        before = self._planned_done()
        for n, i in enumerate(matching):
            room = self.plan.phases[i].units - self.done[i] - self.skipped[i]
            take = units if n == len(matching) - 1 else min(units, max(0.0, room))
            (self.done if counted else self.skipped)[i] += take
            units -= take
            if units <= 0:
                break
        if matching and counted:
            now, kind = self.now(), self.plan.phases[matching[0]].name
            if self.last_report is not None:  # the first report's interval is set-up, paid once
                had_pace = self._has_own_pace(kind)
                self.spent[kind] = self.spent.get(kind, 0.0) + now - self.last_report
                self.planned[kind] = self.planned.get(kind, 0.0) + self._planned_done() - before
                if not had_pace and self._has_own_pace(kind):
                    self._revise(f"now that {kind} is timed")
            self.last_report = now
        if matching and self.projected is None and self.now() - self.started >= self.after:
            self.projected = self.projection()
            if self.projected is not None:
                self._say_projection()

    def rescale(self, head: str, factor: float, why: str) -> None:
        """Scale the units of every phase named ``head:...`` (the plan learned the real amount of that work)."""
        for p in self.plan.phases:
            if p.name.partition(":")[0] == head:
                p.units *= factor
        self._revise(why)

    def _revise(self, why: str) -> None:
        """Say the projection again if it moved the last one said by more than ``REVISE_BY``."""
        last = self.revised if self.revised is not None else self.projected
        if last is None:
            return  # nothing said yet: the first projection will use what is known by then
        now = self.projection()
        if now is None or abs(now - last) <= REVISE_BY * last:
            return
        self.revised = now
        elapsed = self.now() - self.started
        self.say(
            f"[rkd] {self.plan.stage}: revised projection {clock_text(now)} in all "
            f"({clock_text(max(0.0, now - elapsed))} to go), {why}; said before: {clock_text(last)}"
        )

    def _say_projection(self) -> None:
        if self.projected is None:
            return
        elapsed = self.now() - self.started
        planned = self.plan.seconds
        versus = f"; the plan said {clock_text(planned)}" if planned else ""
        self.say(
            f"[rkd] {self.plan.stage}: projected {clock_text(self.projected)} in all "
            f"({clock_text(max(0.0, self.projected - elapsed))} to go), from its first {elapsed:.0f} s{versus}"
        )

    def _has_own_pace(self, kind: str) -> bool:
        """Enough of ``kind`` is timed to price the rest of it: ``OWN_PACE_AFTER`` planned seconds and
        ``OWN_PACE_SHARE`` of its plan (the search's candidates differ in cost: the first few do not price the rest)."""
        planned_all = sum(p.units * p.seconds for p in self.plan.phases if p.name == kind and p.seconds is not None)
        return self.planned.get(kind, 0.0) >= max(OWN_PACE_AFTER, OWN_PACE_SHARE * planned_all)

    def _planned_done(self) -> float:
        return sum(d * p.seconds for d, p in zip(self.done, self.plan.phases) if p.seconds is not None)

    def projection(self) -> float | None:
        """Elapsed + the rest of the plan, each kind of work scaled by how its part so far compared with the plan.

        A kind of work with enough of it done (``_has_own_pace``) is priced by its own pace; the
        rest by the pace of all the work so far. Paces are taken from the first report on: the stage's
        set-up before it (loading the teacher, the data, the first step's allocations) is paid once, and
        would inflate the rest if spread over it.
        """
        elapsed = self.now() - self.started
        planned_done = self._planned_done()
        if planned_done <= 0:
            return None
        spent, planned = sum(self.spent.values()), sum(self.planned.values())  # from the first report on
        pace = spent / planned if spent > 0 and planned > 0 else elapsed / planned_done
        remaining = 0.0
        for p, d, s in zip(self.plan.phases, self.done, self.skipped):
            if p.seconds is None:
                continue
            kind_pace = self.spent[p.name] / self.planned[p.name] if self._has_own_pace(p.name) else pace
            remaining += max(0.0, p.units - d - s) * p.seconds * kind_pace
        return elapsed + remaining


_ACTIVE: list = []


@contextlib.contextmanager
def stage_clock(plan: StagePlan | None, say: Callable[[str], None]) -> Iterator[StageClock | None]:
    """Make a clock for ``plan`` the one ``advance`` reports to, for the duration of a stage."""
    clock = StageClock(plan, say) if plan is not None else None
    _ACTIVE.append(clock)
    try:
        yield clock
    finally:
        _ACTIVE.pop()


def advance(name: str, units: float = 1.0, counted: bool = True) -> None:
    """Report finished work to the running stage's clock (nothing happens outside a stage)."""
    if _ACTIVE and _ACTIVE[-1] is not None:
        _ACTIVE[-1].advance(name, units, counted)


def rescale(head: str, factor: float, why: str) -> None:
    """Tell the running stage's clock that its ``head:...`` work is ``factor`` times what the plan assumed."""
    if _ACTIVE and _ACTIVE[-1] is not None:
        _ACTIVE[-1].rescale(head, factor, why)


def timing_record(plan: StagePlan | None, clock: StageClock | None) -> dict:
    """What a stage record keeps of its estimates: the plan's seconds, the projection said after 30 s, its revision."""
    out: dict = {}
    if plan is not None and plan.seconds is not None:
        out["planned_seconds"] = round(plan.seconds, 1)
    if clock is not None and clock.projected is not None:
        out["projected_seconds"] = round(clock.projected, 1)
    if clock is not None and clock.revised is not None:
        out["revised_seconds"] = round(clock.revised, 1)
    return out


def plan_lines(plans: list[StagePlan], quick_seconds: float | None = None) -> list[str]:
    """The run's plan as log lines: one per stage, the total, and past two hours what would be quicker."""
    lines, total = [], 0.0
    for plan in plans:
        seconds = plan.seconds or 0.0
        total += seconds
        lines.append(f"[rkd] plan: {plan.stage:<8} ~{clock_text(seconds)}")
    finish = time.strftime("%H:%M", time.localtime(time.time() + total))
    lines.append(f"[rkd] plan: the whole run ~{clock_text(total)} on this machine (done around {finish})")
    if total > LONG_RUN:
        heavy = max(plans, key=lambda p: p.seconds or 0.0)
        advice = f"`rkd run --quick` (a smoke run) ~{clock_text(quick_seconds)}; " if quick_seconds else ""
        lines.append(
            f"[rkd] plan: that is over {clock_text(LONG_RUN)}: {advice}the longest stage is {heavy.stage} "
            f"(~{clock_text(heavy.seconds or 0.0)}); halving its epochs halves its time (and costs accuracy)"
        )
    return lines
