"""When an answer over private tables may leave: padded, so its time says nothing
about the rows.

A statement's running time grows with the rows its filters keep, and under
differential privacy the wall time is not noised like the numbers are. So the
answer (or the error) of a statement that read a private table leaves at the
first step of a fixed ladder, step, 2*step, 4*step, ..., up to the statement's
deadline, measured from when it reached the engine, that it has not outrun. The ladder comes from the policy
(`timing.step_seconds`), never from the run: every statement that finishes
within the first step leaves at exactly that step, whatever it read. What
remains is which step a slow statement reaches (docs/privacy.md, "Timing").

The wait never holds a thread on success: `pad` completes the statement's
`audited` future, which front ends wait for before sending, at the padded time.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass

from gateway.engine.state import QueryState
from gateway.policy.model import TimingPad


@dataclass(frozen=True)
class StatementClock:
    started: float  # time.monotonic() when the statement reached execute
    step: float | None  # the ladder's first step; None: not padded
    deadline: float  # the statement's deadline: the ladder's last rung

    def leaves_at(self, finished: float) -> float:
        """The first ladder step at or after `finished` (itself when not padded)."""
        if self.step is None or finished >= self.deadline:
            return finished
        span = self.step
        while self.started + span < finished:
            span *= 2
        return min(self.started + span, self.deadline)

    def wait(self) -> None:
        """Sleep until the padded time of a statement finishing now (the failure path)."""
        now = time.monotonic()
        delay = self.leaves_at(now) - now
        if delay > 0:
            time.sleep(delay)


def start(state: QueryState) -> StatementClock:
    now = time.monotonic()
    return StatementClock(now, padding_step(state), now + state.context.config.engine.query_timeout_seconds)


def padding_step(state: QueryState) -> float | None:
    """The ladder's first step when this statement's answer is padded, else None."""
    timing = state.cleanroom.timing
    reads_private = state.authorisation is not None and state.authorisation.min_group_size is not None
    if not reads_private or timing.pad is TimingPad.OFF:
        return None
    if timing.pad is TimingPad.DP and state.noise_plan is None:
        return None
    return timing.step_seconds


def pad(state: QueryState) -> QueryState:
    """Pass: the answer leaves at its padded time (audited completes no earlier)."""
    clock = state.clock
    if clock is None or clock.step is None or state.audited is None:
        return state
    delay = clock.leaves_at(time.monotonic()) - time.monotonic()
    if delay <= 0:
        return state
    held: Future = Future()
    audited = state.audited

    def settle() -> None:
        audited.add_done_callback(lambda done: _copy(done, held))

    state.context.watchdog.arm(delay, settle)
    return state.evolve(audited=held)


def _copy(done: Future, into: Future) -> None:
    error = done.exception()
    if error is not None:
        into.set_exception(error)
    else:
        into.set_result(done.result())
