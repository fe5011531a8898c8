"""One thread that fires every query's timeout. A timer thread per query cost
more than running `SELECT 1` itself."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable


class Alarm:
    __slots__ = ("deadline", "callback", "cancelled")

    def __init__(self, deadline: float, callback: Callable[[], None]):
        self.deadline, self.callback, self.cancelled = deadline, callback, False


class Watchdog:
    def __init__(self):
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, callback: Callable[[], None]) -> Alarm:
        alarm = Alarm(time.monotonic() + seconds, callback)
        with self._wake:
            heapq.heappush(self._heap, (alarm.deadline, next(self._order), alarm))
            if self._thread is None:  # started lazily: after any fork, in the process that uses it
                self._thread = threading.Thread(target=self._run, name="query-watchdog", daemon=True)
                self._thread.start()
            self._wake.notify()
        return alarm

    @staticmethod
    def disarm(alarm: Alarm) -> None:
        alarm.cancelled = True  # dropped when its deadline comes up

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                    while self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                _, _, alarm = heapq.heappop(self._heap)
            if not alarm.cancelled:
                alarm.callback()
