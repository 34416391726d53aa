"""The consoles the `gristmill` command writes its messages to.

On a terminal, rich lays text out at the terminal's width, as people expect. Anywhere else (output
piped to a file, CI, a cluster job's log) hard wrapping at rich's fallback width of 80 columns would
break one message over several lines — "Did you \\nmean 'normalize'?" — so grep and log search miss
it, and a long path in the message decides where. There, text is printed soft-wrapped (one logical
line per line, whatever its length) and tables are laid out at their natural width instead of being
folded or cut at 80 columns.
"""

from __future__ import annotations

from typing import Any, Optional

from rich.console import Console, ConsoleDimensions

# Wide enough that no table the command prints is narrowed; a width, not a wrap point (text is
# soft-wrapped off a terminal, and tables do not expand to fill it).
NON_TERMINAL_WIDTH = 10_000


class CommandConsole(Console):
    """A rich Console that hard-wraps only on a terminal (see the module's docstring)."""

    @property
    def size(self) -> ConsoleDimensions:
        dimensions = super().size
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(NON_TERMINAL_WIDTH, dimensions.height)
        return dimensions

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def print(self, *objects: Any, soft_wrap: Optional[bool] = None, **kwargs: Any) -> None:
        if soft_wrap is None:
            soft_wrap = not self.is_terminal
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)
