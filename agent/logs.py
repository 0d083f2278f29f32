"""Structured log lines (`level msg="event" key=value …`), never a secret in them."""

from __future__ import annotations

import logging
import sys


class _EventFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event, _, rest = message.partition(" ")
        line = f'{self.formatTime(record, "%Y-%m-%dT%H:%M:%S")} {record.levelname} msg="{event}"'
        if rest:
            line += " " + rest
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EventFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # mitmproxy narrates every connection at INFO; its warnings and errors are what we need.
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)
    # httpx logs every request at INFO: the sync loop polls, so keep it to warnings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
