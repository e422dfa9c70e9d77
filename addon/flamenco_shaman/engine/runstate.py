"""One run's stop switch: the artist's cancel, the first failure of any thread, and the
flag every loop of the pipeline checks (see pipeline.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .errors import SubmitCancelled, SubmitError

POLL = 0.1  # seconds between checks of the stop flag while waiting


class RunState:
    """Shared by the hash pool, the negotiator and the upload workers of one pipeline."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel  # set by the artist (Submission.cancel)
        self.stop = threading.Event()  # set by a cancel, a failure or close()
        self._lock = threading.Lock()
        self._error: SubmitError | None = None

    def stopping(self) -> bool:
        if self.cancel.is_set():
            self.stop.set()
        return self.stop.is_set()

    def check(self) -> None:
        """Raise SubmitCancelled or the first failure, if any."""
        if self.cancel.is_set():
            self.stop.set()
            raise SubmitCancelled()
        if self._error is not None:
            raise self._error
        if self.stop.is_set():
            raise SubmitCancelled()

    def run_or_stop(self, func: Callable[..., object], *args: object) -> None:
        """Run func; if it fails, keep the first failure (for check()) and stop the run.

        Threads run their work through this, so a failure anywhere ends every loop and
        reaches the caller as one SubmitError instead of dying with its thread."""
        try:
            func(*args)
        except SubmitCancelled:
            self.stop.set()
        except BaseException as ex:
            with self._lock:
                if self._error is None:
                    self._error = ex if isinstance(ex, SubmitError) else _unexpected(ex)
            self.stop.set()

    def sleep(self, seconds: float) -> None:
        """Wait, but no longer than until the run stops."""
        deadline = time.monotonic() + seconds
        while not self.stopping() and time.monotonic() < deadline:
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))


def _unexpected(ex: BaseException) -> SubmitError:
    err = SubmitError(f"unexpected error: {type(ex).__name__}: {ex}")
    err.__cause__ = ex
    return err
