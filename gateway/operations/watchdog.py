"""A thread that notices when the event loop stops answering.

Every call (health included) is answered on the one event loop, so a loop
that is blocked or spinning answers nothing, and cannot say so.  The loop
beats every ``BEAT_S``; this thread looks at the last beat:

* no beat for ``stall_s``: the loop is *stalled*.  Logged once (CRITICAL)
  with where the loop thread is (file, line and function of its innermost
  frames; never a variable), counted in ``/metrics``, and the plaintext
  health port (gateway/operations/health.py) answers NOT_SERVING;
* beats again: logged with the stall's length; ``on_recover`` runs on the
  loop (the gateway opens a problem report, 报错处理, naming where it was);
* no beat for ``exit_s`` (0: never): ``on_stuck`` runs on this thread (the
  gateway leaves a note for a problem report and exits, so that its
  supervisor restarts it and it rebuilds from the ledger; a settlement is
  acknowledged only once durable, so an exit loses nothing).

A thread can look only while the loop thread lets go of the GIL, which
Python code does every few milliseconds; a C call that holds the GIL for
long is seen only once it returns.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from typing import Callable

log = logging.getLogger("yidi.watchdog")

BEAT_S = 0.1
# Frames of the loop thread named in a stall report (innermost last).
STACK_FRAMES = 8


def where(thread_id: int) -> str:
    """The innermost frames of a thread, as ``file:line function`` (no values: nothing private)."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return "unknown"
    frames = traceback.extract_stack(frame)[-STACK_FRAMES:]
    return " < ".join(f"{os.path.join(*f.filename.split(os.sep)[-2:])}:{f.lineno} {f.name}" for f in reversed(frames))


class LoopWatchdog:
    def __init__(self, loop: asyncio.AbstractEventLoop, stall_s: float, exit_s: float,
                 on_stall: Callable[[bool], None], on_recover: Callable[[float, str], None],
                 on_stuck: Callable[[float, str], None]) -> None:
        if stall_s <= 0:
            raise ValueError("stall_s must be > 0")
        self.loop = loop
        self.stall_s = stall_s
        self.exit_s = exit_s
        self.on_stall = on_stall
        self.on_recover = on_recover
        self.on_stuck = on_stuck
        self.stalls = 0
        self.longest_stall_s = 0.0
        self._last_beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._watch, name="yidi-loop-watchdog", daemon=True)

    def start(self) -> None:
        """Call on the loop's thread."""
        self._loop_thread = threading.get_ident()
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()

    def lag_s(self) -> float:
        """Seconds since the loop's last beat (0.1 s or less when it is well)."""
        return time.monotonic() - self._last_beat

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        self._timer = self.loop.call_later(BEAT_S, self._beat)

    def _watch(self) -> None:
        stalled_at = 0.0   # the last beat before the stall now going on (0: none)
        stuck = False
        where_stalled = ""
        while not self._stop.wait(BEAT_S):
            last = self._last_beat
            silent_s = time.monotonic() - last
            if stalled_at and last != stalled_at:   # a beat came: the loop answers again
                length = last - stalled_at
                self.longest_stall_s = max(self.longest_stall_s, length)
                log.critical("event loop answered again after a stall of %.1f s", length)
                self.on_stall(False)
                self._call_loop(self.on_recover, length, where_stalled)
                stalled_at, stuck = 0.0, False
                continue
            if not stalled_at and silent_s >= self.stall_s:
                stalled_at, self.stalls = last, self.stalls + 1
                where_stalled = where(self._loop_thread)
                log.critical("event loop stalled: no beat for %.1f s; NOT_SERVING until it answers; it is in %s",
                             silent_s, where_stalled)
                self.on_stall(True)
            if stalled_at and self.exit_s and silent_s >= self.exit_s and not stuck:
                stuck = True
                self.on_stuck(silent_s, where(self._loop_thread))

    def _call_loop(self, fn: Callable, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:   # the loop is closed
            pass
