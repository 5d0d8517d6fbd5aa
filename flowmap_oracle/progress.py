"""Live progress of long commands on stderr: what is running and how far along.

A tiny wrapper around `tqdm <https://tqdm.github.io>`_ that the console script and the report job
use. :class:`Progress` is enabled only when its stream (stderr by default) is a terminal and the
user did not ask for ``--quiet``; disabled, every call does nothing, so code can report progress
unconditionally. Progress never goes to stdout, which stays parseable (``--json``).

::

    progress = Progress(quiet=args.quiet)
    with progress.bar("checks", total=len(checks)) as bar:
        for chk in checks:
            bar.start(chk.name)  # shown next to the count while it runs
            run_check(chk, impl)
            bar.advance()
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Bar", "Progress"]


class Bar:
    """One progress bar (a no-op when its :class:`Progress` is disabled)."""

    def __init__(self, bar=None) -> None:
        self._bar = bar

    def start(self, label: str) -> None:
        """Show ``label`` as the item now running."""
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.refresh()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items as finished."""
        if self._bar is not None:
            self._bar.update(n)

    def add_total(self, n: int) -> None:
        """Grow the total by ``n`` items (work discovered on the way)."""
        if self._bar is not None:
            self._bar.total = (self._bar.total or 0) + n
            self._bar.refresh()


class Progress:
    """Progress bars on ``stream`` (stderr), shown only on a terminal and without ``quiet``.

    Arguments:
        quiet: never show anything.
        stream: where bars go (default ``sys.stderr``, looked up at call time).
        enabled: force the display on or off (``None``: on when ``stream`` is a terminal).
    """

    def __init__(
        self, *, quiet: bool = False, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled and not quiet
        self._depth = 0

    @classmethod
    def disabled(cls) -> Progress:
        """A progress that shows nothing."""
        return cls(enabled=False)

    @contextmanager
    def bar(self, description: str, total: int | None, *, unit: str = "item") -> Iterator[Bar]:
        """A bar for ``total`` items described as ``description``; nested bars stack below.

        The bar is removed when the block ends (also on Ctrl-C), leaving the terminal clean for
        the command's own output.
        """
        if not self.enabled:
            yield Bar()
            return
        from tqdm import tqdm

        # A terminal that reports no size (a fresh pseudo-terminal) would hide every bar.
        sized = _terminal_size(self.stream) != (0, 0)
        handle = tqdm(
            total=total,
            desc=description,
            unit=unit,
            file=self.stream,
            position=self._depth,
            leave=False,
            dynamic_ncols=sized,
            ncols=None if sized else 80,
            nrows=None if sized else 24,
            mininterval=0.2,
        )
        self._depth += 1
        try:
            yield Bar(handle)
        finally:
            self._depth -= 1
            handle.close()


def _terminal_size(stream: TextIO) -> tuple[int, int]:
    """``(columns, lines)`` of the terminal ``stream`` writes to (``(0, 0)`` when unknown)."""
    import os

    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return (0, 0)
    return (size.columns, size.lines)
