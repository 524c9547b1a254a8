"""What is pending in the usage recorders is written when the process exits, and on SIGTERM
where nothing else would write it; a forked child starts its recorders afresh."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keysentry.stores.usage import UsageRecorder

__all__ = ["install_stop_handler", "live"]

logger = logging.getLogger("keysentry")
live: weakref.WeakSet[UsageRecorder] = weakref.WeakSet()
"""The recorders of this process (each adds itself)."""


def _after_fork_in_child() -> None:
    for recorder in list(live):
        recorder._after_fork()


def _flush_at_exit() -> None:
    for recorder in list(live):
        try:
            recorder.flush()
        except Exception:  # exiting: report, never raise
            logger.exception("keysentry: could not write usage at exit")


_STOP_FLUSH_SECONDS = 5.0


def _flush_then_terminate(signum: int, frame: object) -> None:
    # In a thread: the interrupted main thread may hold a recorder's lock; bounded, so a
    # stuck store cannot keep the process from stopping.
    writer = threading.Thread(target=_flush_at_exit, name="keysentry-stop", daemon=True)
    writer.start()
    writer.join(_STOP_FLUSH_SECONDS)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)  # then stop exactly as the default would have


def install_stop_handler() -> bool:
    """Write pending ``last_used_at`` times on SIGTERM, where nothing else would.

    A SIGTERM left at its default kills the process before :mod:`atexit` runs: that is the
    case under werkzeug's server and waitress (gunicorn and uvicorn catch it and shut down
    cleanly). Only a default SIGTERM, in the main thread, is replaced; the handler writes
    for at most 5 seconds, then terminates the process as the default would. Returns
    whether the handler was installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False  # the server's own, or ours already
        signal.signal(signal.SIGTERM, _flush_then_terminate)
    except (ValueError, OSError):  # no signals here (an embedded interpreter)
        return False
    return True


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)
