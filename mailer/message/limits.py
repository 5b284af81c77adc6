"""Resource limits of customer templates: how long one part may render,
how large it may grow, how often its loops may turn.

A 55-byte template can ask for 200 MB of output, or loop for minutes
without writing a byte. The sandbox's own operator checks bound single
expressions; what is bounded here is the whole render of one part:

- every ``{% for %}`` iterates through a budget shared by the part's render:
  at most :data:`MAX_ITERATIONS` turns, and the clock is read every few
  hundred turns (:data:`RENDER_SECONDS`);
- ``range`` yields at most :data:`MAX_RANGE` numbers;
- ``~``, ``+``, filters and method calls may not build a string longer
  than :data:`MAX_PART_CHARS`, and an integer argument that large (a
  ``center``/``ljust`` width) or a format width of seven digits is refused
  before anything is allocated;
- the output is counted as it is produced, and the render stops at
  :data:`MAX_PART_CHARS`.

Exceeding a limit raises jinja2's SecurityError, which the template module
reports as a TemplateError naming the field.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.visitor import NodeTransformer

# Characters of one rendered part (subject, HTML, text, URL). Gmail clips
# an HTML part at 102 KB; ten times that leaves room for any survey.
MAX_PART_CHARS = 1_000_000
# Wall-clock seconds one part may take to render.
RENDER_SECONDS = 2.0
# Loop turns of one part's render, all loops together.
MAX_ITERATIONS = 1_000_000
# Numbers one range() may yield.
MAX_RANGE = 10_000
# How many loop turns between two readings of the clock.
_CLOCK_EVERY = 256

# Names under which the template code reaches the checks; a template that
# calls them itself gets the same checks.
LOOP_GUARD = "_mailer_loop"
SIZE_GUARD = "_mailer_sized"

# A format width or precision of seven digits or more (1,000,000 and up).
_WIDE_FORMAT = re.compile(r"\d{7,}")


class Budget:
    """The limits of one part's render; see :func:`rendering`."""

    def __init__(self, seconds: float = RENDER_SECONDS, iterations: int = MAX_ITERATIONS) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.left = iterations
        self.iterations = iterations

    def check_time(self) -> None:
        """Raises SecurityError past the deadline."""
        if time.monotonic() > self.deadline:
            raise SecurityError(f"rendering took longer than {self.seconds:g} s")

    def loop(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.left -= 1
            if self.left < 0:
                raise SecurityError(f"loops turned more than {self.iterations:,} times")
            if self.left % _CLOCK_EVERY == 0:
                self.check_time()
            yield item


_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "mailer_template_budget", default=None
)


def render_bounded(chunks_of: Callable[[], Iterable[str]]) -> str:
    """Run one part's render (``chunks_of`` makes its output generator)
    under a fresh :class:`Budget`, counting the output as it comes.

    Raises SecurityError when a limit is exceeded; whatever the render
    raises otherwise."""
    budget = Budget()
    token = _CURRENT.set(budget)
    try:
        out: list[str] = []
        size = 0
        for chunk in chunks_of():
            size += len(chunk)
            if size > MAX_PART_CHARS:
                raise SecurityError(f"rendered part longer than {MAX_PART_CHARS:,} characters")
            out.append(chunk)
        budget.check_time()
        return "".join(out)
    finally:
        _CURRENT.reset(token)


def _loop_guard(iterable: Iterable[Any]) -> Iterable[Any]:
    budget = _CURRENT.get()
    if budget is None:  # rendered outside render_bounded: a fresh budget
        budget = Budget()
    return budget.loop(iterable)


def sized(value: Any) -> Any:
    """``value`` unchanged unless it is a string or sequence longer than
    :data:`MAX_PART_CHARS`; raises SecurityError then."""
    if isinstance(value, str | list | tuple) and len(value) > MAX_PART_CHARS:
        raise SecurityError(f"value longer than {MAX_PART_CHARS:,}")
    return value


def bounded_range(*args: int) -> range:
    """range() of at most :data:`MAX_RANGE` numbers; raises SecurityError
    for a longer one, OverflowError/TypeError as range() does."""
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SecurityError(f"range of more than {MAX_RANGE:,} numbers")
    return numbers


def check_arguments(args: Iterable[Any], kwargs: dict[str, Any]) -> None:
    """Refuse, before the call, the arguments that would make a call build
    something huge: an integer of :data:`MAX_PART_CHARS` or more (a width,
    a count), or a format string asking for a seven-digit width."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and value >= MAX_PART_CHARS:
            raise SecurityError(f"argument {value} is too large")


def check_format(template: Any) -> None:
    """Raises SecurityError for a format string with a width or precision
    of a million or more."""
    if (
        isinstance(template, str)
        and ("%" in template or "{" in template)
        and _WIDE_FORMAT.search(template)
    ):
        raise SecurityError("format width too large")


def bounded_filter(fn: Callable[..., Any], *, formats: bool = False) -> Callable[..., Any]:
    """``fn`` (a Jinja filter) with its arguments checked before and its
    result after the call; with ``formats`` (the ``format`` filter) its
    value is a format string and checked as one. Keeps Jinja's
    pass_context/pass_environment mark (functools.wraps copies it)."""

    @functools.wraps(fn)
    def filtered(*args: Any, **kwargs: Any) -> Any:
        check_arguments(args[1:], kwargs)
        if formats and args:
            # pass_environment/pass_context filters get that first
            check_format(next((a for a in args if isinstance(a, str)), None))
        return sized(fn(*args, **kwargs))

    return filtered


class Guard(NodeTransformer):
    """Rewrites a parsed template so that every loop iterates through the
    render's budget and every ``~`` concatenation is size-checked."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        visited = self.generic_visit(node)
        assert isinstance(visited, nodes.For)
        visited.iter = _call(LOOP_GUARD, visited.iter, visited.lineno)
        return visited

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        visited = self.generic_visit(node)
        return _call(SIZE_GUARD, visited, node.lineno)


def _call(name: str, arg: nodes.Node, lineno: int) -> nodes.Call:
    return nodes.Call(nodes.Name(name, "load", lineno=lineno), [arg], [], None, None, lineno=lineno)


GLOBALS: dict[str, Any] = {
    LOOP_GUARD: _loop_guard,
    SIZE_GUARD: sized,
    "range": bounded_range,
}
