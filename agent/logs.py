"""Structured log lines (`level msg="event" key=value …`), never a secret in them.

`governor run` writes them to stderr (the service manager's journal) and to a
size-rotated file in the user log dir (`GOVERNOR_LOG_DIR`, else platformdirs'
`user_log_dir("governor")`; dir 0700, files 0600), which `governor logs`
prints and the tray's "Open logs" opens. Reading needs no mitmproxy.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

LOG_FILE = "agent.log"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3  # agent.log.1 … .3: at most 20 MiB of history
FOLLOW_POLL_S = 0.25

log = logging.getLogger("governor.logs")


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


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files are created 0600 (rotation renames keep the mode)."""

    def _open(self) -> IO[str]:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if os.name == "posix":
            os.fchmod(fd, 0o600)  # a file left looser by an older version
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)


def log_dir() -> Path:
    configured = os.environ.get("GOVERNOR_LOG_DIR")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_log_dir("governor", appauthor=False))


def log_path() -> Path:
    return log_dir() / LOG_FILE


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


def add_file(path: Path | None = None) -> Path | None:
    """Also write the log to `path` (default `log_path()`); None, with a warning on stderr, when it cannot."""
    path = path or log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.name == "posix":
            os.chmod(path.parent, 0o700)
        handler = _PrivateRotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError as exc:
        # Deliberately fail-open: the agent governs without its log file (stderr still has everything).
        log.warning("log_file_unavailable path=%s error=%s", path, exc.strerror or type(exc).__name__)
        return None
    handler.setFormatter(_EventFormatter())
    logging.getLogger().addHandler(handler)
    return path


def off_the_loop() -> logging.handlers.QueueListener:
    """Hand the writing of log lines to a thread: the proxy's event loop only queues them.

    Writing a line costs a flush and, for the rotating file, a stat of it; on a
    slow or busy disk that would stall every request in flight. Stop the
    returned listener at exit to flush what is queued.
    """
    import queue

    root = logging.getLogger()
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(lines, *root.handlers, respect_handler_level=True)
    root.handlers[:] = [logging.handlers.QueueHandler(lines)]
    listener.start()
    return listener


# -- reading (`governor logs`) ------------------------------------------------------


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines, reaching into the newest rotated file when the current one is short."""
    found: list[str] = []
    for candidate in (path, path.with_name(path.name + ".1")):
        try:
            text = candidate.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        found = text.splitlines() + found
        if len(found) >= lines:
            break
    return found[-lines:] if lines > 0 else []


def follow(path: Path, stop: Callable[[], bool] | None = None) -> Iterator[str]:
    """Lines appended to `path` from now on, across rotations (`stop()` true ends it; tests use it)."""
    handle, inode, existed = None, None, True
    while stop is None or not stop():
        if handle is None:
            try:
                handle = open(path, encoding="utf-8", errors="replace")
            except FileNotFoundError:
                existed = False  # not written yet: once it is, print it from its first line
                time.sleep(FOLLOW_POLL_S)
                continue
            inode = os.fstat(handle.fileno()).st_ino
            if existed:
                handle.seek(0, os.SEEK_END)
        line = handle.readline()
        if line:
            yield line.rstrip("\n")
            continue
        try:
            rotated = os.stat(path).st_ino != inode or os.stat(path).st_size < handle.tell()
        except FileNotFoundError:
            rotated = True
        if rotated:
            rest = handle.read()  # what was written before the rename
            yield from rest.splitlines()
            handle.close()
            handle = None
            try:
                handle = open(path, encoding="utf-8", errors="replace")  # the new file, from its start
                inode = os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                handle = None
            continue
        time.sleep(FOLLOW_POLL_S)
    if handle is not None:
        handle.close()
