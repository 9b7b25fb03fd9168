"""Stopping on the signals schedulers send, as on Ctrl-C.

SIGTERM is what SLURM, Kubernetes and most schedulers send before a kill; SIGUSR1 is SLURM's
pre-emption warning (``sbatch --signal=USR1@60``). Within :func:`stop_on_signals`, either raises
:class:`Stopped` in the main thread: a ``KeyboardInterrupt``, so every path that handles Ctrl-C (a
final checkpoint, workers shut down) handles them too. The exit status is ``128 + signal``
(130 for Ctrl-C, 143 for SIGTERM, 138 for SIGUSR1), as a shell reports a process the signal killed.

Ctrl-C raises :class:`Stopped` too, not Python's own ``KeyboardInterrupt``: CPython 3.11 records an
exact ``KeyboardInterrupt`` raised inside source run by ``exec``/``eval`` (``dataclasses`` and
``namedtuple`` do so while torch imports) as unhandled even once caught, and ``python -m metarl``
then kills itself by SIGINT on exit instead of returning 130.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Stopped(KeyboardInterrupt):
    """Raised in the main thread when a stop signal arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_name(interrupt: BaseException) -> str:
    """``"SIGTERM"`` or ``"SIGUSR1"`` for those signals, ``"Ctrl-C"`` for SIGINT and any other
    ``KeyboardInterrupt``."""
    if isinstance(interrupt, Stopped) and interrupt.signum != signal.SIGINT:
        return signal.Signals(interrupt.signum).name
    return "Ctrl-C"


def exit_status(interrupt: BaseException) -> int:
    """``128 + signal number`` of the signal behind ``interrupt`` (SIGINT for a plain Ctrl-C)."""
    return 128 + (interrupt.signum if isinstance(interrupt, Stopped) else signal.SIGINT)


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


@contextmanager
def _handlers(signums: tuple[int, ...], handler: Any) -> Iterator[None]:
    """``handler`` for ``signums`` within the block, the previous ones restored after it (in the main
    thread only: Python runs signal handlers there; elsewhere the block changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def stop_on_signals() -> AbstractContextManager[None]:
    """Within the block, SIGTERM, SIGUSR1 and Ctrl-C raise :class:`Stopped`; a SIGINT that was ignored
    (a background job of a script) stays ignored."""
    sigint = () if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else (signal.SIGINT,)
    return _handlers((*sigint, *STOP_SIGNALS), _raise_stopped)


def signals_ignored() -> AbstractContextManager[None]:
    """Within the block, Ctrl-C and the stop signals are ignored, so that a second signal does not cut
    a stopping run's final writes short (they take a second at most)."""
    return _handlers((signal.SIGINT, *STOP_SIGNALS), signal.SIG_IGN)
