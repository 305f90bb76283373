"""The gateway's application log: one line per event, as text or JSON, at a chosen level.

``configure(fmt, level)`` (``yidi serve --log-format json|text --log-level``)
puts one handler on the root logger:

* ``text``: ``2026-11-20T08:00:00.123Z INFO yidi.rpc refused method=... caller=...``;
* ``json``: one object per line, ``{"ts", "level", "logger", "msg", ...fields}``.

Fields ride on a record as ``extra={"fields": {...}}``: every line about a
request (``log_call``) carries ``method``, ``caller``, ``request_id``,
``code``, ``reason`` and ``latency_ms``; refusals and bugs are logged at INFO
and above, successful calls only at DEBUG.  ID numbers are masked in every
line (``privacy.MaskingFilter``).

Two other writers share the terminal, and neither may break a line:

* start-up progress (``Progress``): on a terminal one ``\\r``-updated line,
  ended before any log line is written; elsewhere (a file, a pipe, JSON) a
  log line per stage at most once a second;
* gRPC core, which writes its own lines (TLS handshake failures ...) to file
  descriptor 2.  ``CoreLogRelay`` takes that descriptor over and re-logs each
  line under the logger ``grpc.core`` with its level, so it is marked (and is
  JSON in JSON mode); Python's own stderr keeps the original descriptor.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time

from ..security.privacy import MaskingFilter

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
CORE_LOGGER = "grpc.core"

log = logging.getLogger("yidi.rpc")


class _Console:
    """Whether the stream's last write left a partial (progress) line that a log line must end first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.partial = False

    def end_partial(self, stream) -> None:
        if self.partial:
            stream.write("\n")
            self.partial = False


CONSOLE = _Console()


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        extra = "".join(f" {k}={_text_value(v)}" for k, v in fields.items())
        line = f"{_iso(record.created)} {record.levelname} {record.name} {record.getMessage()}{extra}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        return line + ("\n" + record.exc_text if record.exc_text else "")


def _text_value(value) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (not text or " " in text or '"' in text) else text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": _iso(record.created), "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class LineHandler(logging.StreamHandler):
    """A stream handler that first ends a pending progress line."""

    def emit(self, record: logging.LogRecord) -> None:
        with CONSOLE.lock:
            CONSOLE.end_partial(self.stream)
            super().emit(record)


def configure(fmt: str = "text", level: str = "info", stream=None) -> logging.Handler:
    """The root logger writes one line per record to stream (stderr) in fmt at level; the handler."""
    if fmt not in FORMATS:
        raise SystemExit(f"--log-format {fmt!r}: one of {', '.join(FORMATS)}")
    if level.lower() not in LEVELS:
        raise SystemExit(f"--log-level {level!r}: one of {', '.join(LEVELS)}")
    handler = LineHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(MaskingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def call_level(code: str) -> int:
    """The level of a call's log line: refusals at INFO, bugs at ERROR, successful calls at DEBUG."""
    return logging.DEBUG if code == "OK" else logging.ERROR if code == "INTERNAL" else logging.INFO


def wants_call(code: str) -> bool:
    """Whether a call that ended with code is logged at the level in force (checked before gathering its fields)."""
    return log.isEnabledFor(call_level(code))


def log_call(method: str, caller: str, request_id: str, code: str, reason: str, seconds: float) -> None:
    """The request's log line, at ``call_level(code)``."""
    level = call_level(code)
    fields = {"method": method, "caller": caller, "request_id": request_id[:64], "code": code, "reason": reason,
              "latency_ms": round(seconds * 1000, 3)}
    log.log(level, "ok" if code == "OK" else "refused", extra={"fields": fields})


class Progress:
    """Start-up progress (``progress(stage, done, total)``): a ``\\r`` line on a terminal, else log lines."""

    def __init__(self, label: str, stream=None, interactive: bool | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.start = time.monotonic()
        self.stage = ""
        self.logged_at = 0.0
        self.log = logging.getLogger("yidi.progress")

    def __call__(self, stage: str, done: int, total: int | None = None) -> None:
        of = f"/{total:,}" if total else ""
        text = f"{self.label} {stage}: {done:,}{of} rows ({time.monotonic() - self.start:.1f} s)"
        if self.interactive:
            with CONSOLE.lock:
                if self.stage and self.stage != stage:
                    CONSOLE.end_partial(self.stream)
                self.stream.write(f"\r{text}   ")
                self.stream.flush()
                CONSOLE.partial = True
        elif stage != self.stage or time.monotonic() - self.logged_at >= 1.0:
            self.logged_at = time.monotonic()
            self.log.info(text)
        self.stage = stage

    def done(self) -> None:
        """End the progress line (if any)."""
        with CONSOLE.lock:
            CONSOLE.end_partial(self.stream)


_ABSL = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]]+)\] ?(.*)$")
_ABSL_LEVEL = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}


class CoreLogRelay:
    """gRPC core's lines on file descriptor 2, re-logged under ``grpc.core`` (marked, and JSON in JSON mode).

    ``start()`` points descriptor 2 at a pipe read by a thread, and returns a text stream on the
    original descriptor for the application's own log (``sys.stderr`` is moved there too).
    ``close()`` gives descriptor 2 back and relays what is still in the pipe.
    """

    def __init__(self) -> None:
        self.saved_fd = -1
        self.read_fd = -1
        self.thread: threading.Thread | None = None
        self.log = logging.getLogger(CORE_LOGGER)

    def start(self):
        sys.stderr.flush()
        self.saved_fd = os.dup(2)
        self.read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        stream = os.fdopen(os.dup(self.saved_fd), "w", buffering=1, encoding="utf-8", errors="replace")
        sys.stderr = stream
        self.thread = threading.Thread(target=self._relay, name="grpc-core-log", daemon=True)
        self.thread.start()
        return stream

    def _relay(self) -> None:
        with os.fdopen(self.read_fd, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.relay_line(line.decode("utf-8", "replace"))
            if pending:
                self.relay_line(pending.decode("utf-8", "replace"))

    def relay_line(self, line: str) -> None:
        if not line.strip():
            return
        match = _ABSL.match(line)
        if match is None:
            self.log.warning(line)
            return
        level, where, message = match.groups()
        self.log.log(_ABSL_LEVEL[level], message, extra={"fields": {"source": where}})

    def close(self, timeout_s: float = 0.5) -> None:
        """Descriptor 2 back to where it was; the relay ends once the pipe is drained."""
        if self.saved_fd < 0:
            return
        os.dup2(self.saved_fd, 2)     # closes the pipe's last write end: the reader sees EOF
        os.close(self.saved_fd)
        self.saved_fd = -1
        if self.thread is not None:
            self.thread.join(timeout_s)
