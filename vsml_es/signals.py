"""Graceful stop on SIGTERM/SIGINT: finish the generation in flight, checkpoint, then stop.

Preemptible schedulers send SIGTERM some seconds before SIGKILL; a user presses Ctrl-C. The
first signal lets the generation in flight finish (its work is not wasted); a second one
abandons it, so the last *completed* generation is checkpointed instead. Either way the run
stops with :class:`TrainingInterrupted` and resumes exactly with ``vsml-es resume RUN_DIR``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after the checkpoint is written. A KeyboardInterrupt, so ``except Exception``
    never mistakes a stopped run for a finished one."""

    def __init__(self, signum: int, generation: int, checkpoint: Path | None):
        self.signum = signum
        self.generation = generation
        self.checkpoint = checkpoint
        super().__init__(f"{signal.Signals(signum).name} at generation {generation}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell convention for "ended by signal N"


class GenerationAbandoned(Exception):
    """A second signal arrived while a generation was being computed."""


class StopSignals:
    """Context manager that turns SIGTERM/SIGINT into a stop request.

    Handlers can only be installed from the main thread; elsewhere this is a no-op and signals
    keep their default behaviour. Previous handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._abandonable = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    @contextlib.contextmanager
    def abandonable(self) -> Iterator[None]:
        """Only inside this block may a second signal interrupt (never mid log or checkpoint)."""
        self._abandonable = True
        try:
            yield
        finally:
            self._abandonable = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is None:
            self.requested = signum
        elif self._abandonable:
            self._abandonable = False
            raise GenerationAbandoned(signal.Signals(signum).name)
