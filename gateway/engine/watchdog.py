"""One thread that fires timed callbacks: since statements run in executor
processes (executors.py, which enforce their own deadlines), its users are
timing.pad, which completes a padded answer's future at its release time, and
the catalog pass, which interrupts a catalog statement at its deadline
(gateway.pgcatalog.answer). A timer thread per statement cost more than running
`SELECT 1` itself.

The lanes below were designed for one timeout length per gateway. Padding delays
vary, so each usually gets a lane of its own: still correct (the thread looks at
every lane's first alarm, and drops idle lanes past 8), but the shortest delay
seen sets how often an idle thread wakes (at most every RESOLUTION).

Arming and disarming are O(1) and do not wake the thread. Alarms are kept in one
insertion-ordered lane per timeout length: every query of a gateway has the same
timeout, so each lane is also in deadline order, its first alarm the next to fire,
and a disarmed alarm is simply removed from its lane. The thread sleeps until the
earliest first alarm of a lane, but never less than RESOLUTION at a time (and, with
nothing armed, for the shortest timeout seen), so it wakes a bounded number of
times a second however many statements arm and disarm meanwhile; an arm wakes it
only when its deadline comes before the thread means to look again (a shorter
timeout than any seen so far). A timeout thus fires at most RESOLUTION late.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from typing import Callable

RESOLUTION = 0.05  # seconds: how late a timeout may fire, and so how often the thread may wake

log = logging.getLogger("gateway.watchdog")


class Alarm:
    __slots__ = ("deadline", "callback", "cancelled", "lane", "key")

    def __init__(self, deadline: float, callback: Callable[[], None], lane: OrderedDict, key: int):
        self.deadline, self.callback, self.cancelled = deadline, callback, False
        self.lane, self.key = lane, key


class Watchdog:
    def __init__(self):
        self._lanes: dict[float, OrderedDict[int, Alarm]] = {}  # timeout length -> alarms, oldest first
        self._keys = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._next_look = float("inf")  # when the thread will look at the lanes again, by itself
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, callback: Callable[[], None]) -> Alarm:
        deadline = time.monotonic() + seconds
        with self._lock:
            lane = self._lanes.get(seconds)
            if lane is None:
                lane = self._lanes[seconds] = OrderedDict()
            key = next(self._keys)
            alarm = lane[key] = Alarm(deadline, callback, lane, key)
            if self._thread is None:  # started lazily: after any fork, in the process that uses it
                self._thread = threading.Thread(target=self._run, name="query-watchdog", daemon=True)
                self._thread.start()
            elif deadline + RESOLUTION < self._next_look:  # else the thread looks in time anyway
                self._wake.notify()
        return alarm

    def disarm(self, alarm: Alarm) -> None:
        with self._lock:
            alarm.cancelled = True
            alarm.lane.pop(alarm.key, None)

    def _run(self) -> None:
        shortest = float("inf")  # the shortest timeout armed so far
        while True:
            due: list[Alarm] = []
            with self._lock:
                now = time.monotonic()
                earliest = float("inf")
                for seconds, lane in list(self._lanes.items()):
                    shortest = min(shortest, seconds)
                    while lane:
                        alarm = next(iter(lane.values()))
                        if alarm.deadline > now:
                            earliest = min(earliest, alarm.deadline)
                            break
                        del lane[alarm.key]
                        due.append(alarm)
                    if not lane and len(self._lanes) > 8:  # timeouts of many lengths: drop the idle ones
                        del self._lanes[seconds]
                if not due:
                    # With nothing armed, nothing can fire before the shortest timeout from now.
                    self._next_look = max(min(earliest, now + shortest), now + RESOLUTION)
                    self._wake.wait(self._next_look - now)
                    self._next_look = float("inf")  # awake, and about to look
                    continue
            for alarm in due:
                if alarm.cancelled:  # disarmed after it was taken off its lane
                    continue
                try:
                    alarm.callback()
                except Exception:  # one failing callback must not stop every later timeout
                    log.exception("query timeout callback failed")
