"""Logging setup for entrypoints: JSON lines (default) or plain text.

JSON lines carry ``run_id`` (when the code works for a run: activities, the
run API) and ``trace_id`` / ``span_id`` (when a span is current), so a log
line leads to its run and its trace.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


def _context(out: dict[str, Any]) -> None:
    """Add the current run id and trace/span ids (swarmd.telemetry) to a log line."""
    from opentelemetry import trace

    from swarmd.telemetry import RUN_ID

    run_id = RUN_ID.get()
    if run_id is not None and "run_id" not in out:
        out["run_id"] = run_id
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        out.setdefault("trace_id", f"{ctx.trace_id:032x}")
        out.setdefault("span_id", f"{ctx.span_id:016x}")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                out[k] = v
        _context(out)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


#: client libraries whose INFO lines are one per request
NOISY_LOGGERS = ("httpx", "httpcore")


def setup_logging(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO: thousands of lines a second to the sidecar under
    # load, a few percent of the app's CPU, and nothing our own logs do not say
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
