"""The render budget: what one message's render may cost, enforced at every operation the
sandbox intercepts, so a template stops with an error *before* it builds a huge value.

Every operation a template performs goes through the sandbox (an operator, a call, a filter,
a loop step, an output); each one spends from its message's :class:`Budget` and checks the
deadline. The checks are made on the operands, before Python runs the operation: a product
of two ints whose result would pass ``MAX_INT_BITS``, a repetition, join, sum, format width
or ``expandtabs`` whose result would pass ``MAX_VALUE`` is refused without computing it.

Units of work are characters and items built (a list item costs ``ITEM_UNITS``), so the
budget is deterministic (the same template and contact always fail at the same line) and
bounds memory as well as time: a render never holds more than ``MAX_WORK`` units of values
it built, at most a few bytes each (docs/templates.md states the bound; a test measures it).
The deadline is the backstop for what units cannot see (one slow but small operation).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Template
from jinja2.utils import Namespace
from markupsafe import Markup

MAX_SECONDS = 1.0  # wall time for one message (subject, HTML and text together)
MAX_WORK = 4_000_000  # units (characters and items built) for one message
MAX_ITERATIONS = 100_000  # loop steps for one message
MAX_OPERATIONS = 100_000  # operators, calls, filters, loop steps and outputs for one message
CALL_OPERATIONS = 4  # a macro call costs as much as a few other operations
MAX_VALUE = 1_000_000  # characters (or items) of any one value
MAX_OUTPUT = 1_000_000  # characters of one part's output
MAX_WIDTH = 1_000  # a format width or precision, a pad width, a tab size
MAX_INT_BITS = 4_096  # an int (about 1,233 decimal digits)
ITEM_UNITS = 4  # a list, tuple or dict item: its slot and its share of the item objects
_ESCAPED = 6  # the most HTML escaping multiplies a text by ('"' → '&#34;')


class RenderError(Exception):
    """A template could not be rendered for a recipient (the message fails, nothing else)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class RenderBudgetExceeded(RenderError):
    """The render would run too long, build too large a value or do too much work."""


def too_large(what: str) -> RenderBudgetExceeded:
    return RenderBudgetExceeded(f"{what} would be larger than {MAX_VALUE:,} characters or items")


@dataclass
class Budget:
    """What is left of one message's render budget (shared by its subject, HTML and text)."""

    deadline: float
    max_seconds: float = MAX_SECONDS
    work: int = 0
    operations: int = 0
    iterations: int = 0
    output: int = 0  # characters of dynamic output of the part being rendered
    # An output of that part went out unescaped (|safe, a macro, autoescape off): its HTML
    # is checked even when the template's skeleton is inert (html_checks.inert_skeleton).
    unescaped: bool = False
    max_output: int = MAX_OUTPUT
    undefined: list[tuple[str, int | None]] = field(default_factory=list)
    template: Template | None = None

    def spend(self, units: int, operations: int = 1) -> None:
        """Count one operation and its ``units`` of work, and check the deadline: called at
        every operation."""
        self.work += units
        self.operations += operations
        if self.operations > MAX_OPERATIONS:
            raise RenderBudgetExceeded(f"the template runs more than {MAX_OPERATIONS:,} operations")
        if self.work > MAX_WORK:
            raise RenderBudgetExceeded(
                f"the template does too much work (more than {MAX_WORK:,} characters and "
                "items built)"
            )
        if time.monotonic() > self.deadline:
            raise RenderBudgetExceeded(f"rendering took longer than {self.max_seconds:g} s")

    def step(self, weight: int) -> None:
        """One loop iteration, whose body's static text is ``weight`` characters."""
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise RenderBudgetExceeded(f"the template loops more than {MAX_ITERATIONS:,} times")
        self.spend(1 + weight)

    def emit(self, size: int) -> None:
        """One ``{{ … }}`` output of ``size`` characters."""
        self.output += size
        if self.output > self.max_output:
            raise RenderBudgetExceeded(f"the output is larger than {self.max_output:,} characters")
        self.spend(1 + size)


def new_budget(max_seconds: float = MAX_SECONDS) -> Budget:
    return Budget(deadline=time.monotonic() + max_seconds, max_seconds=max_seconds)


CURRENT: ContextVar[Budget | None] = ContextVar("nurture_render_budget", default=None)


def current() -> Budget:
    """The budget of the render in progress; outside one (Jinja folding constants while it
    compiles a template) a fresh one, so each such operation is still bounded."""
    return CURRENT.get() or new_budget()


# --- sizes ------------------------------------------------------------------------------

_CONTAINERS = (list, tuple, dict, set, frozenset, Namespace)


def str_size(value: Any, limit: int = MAX_VALUE) -> int:
    """An upper bound of ``len(str(value))``, found without building it; raises
    RenderBudgetExceeded as soon as it passes ``limit`` (so the walk itself is bounded)."""
    if isinstance(value, str):
        size = len(value)
    elif isinstance(value, bool) or value is None:
        size = 5
    elif isinstance(value, int):
        size = value.bit_length() * 3 // 10 + 2
    elif isinstance(value, _CONTAINERS):
        size = _container_size(value, limit)
    elif isinstance(value, bytes | bytearray):
        size = 4 * len(value) + 3
    else:
        size = 64  # floats, dates, macros, Undefined: short reprs
    if size > limit:
        raise too_large("the text of this value")
    return size


def _container_size(value: Any, limit: int) -> int:
    """The walk behind str_size for containers (str() of a list is the repr of its items:
    a string item counts its quotes, and ten characters a character if it is escaped)."""
    size = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Namespace):
            item = item._Namespace__attrs  # its repr is this dict's
            size += 13
        if isinstance(item, dict):
            size += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            size += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, str):
            size += len(item) + 10 if item.isprintable() else 10 * len(item) + 10
        else:
            size += str_size(item, limit)
        if size > limit:
            raise too_large("the text of this value")
    return size


def escaped_size(value: str) -> int:
    """The length of ``markupsafe.escape(value)``, counted without building it."""
    return (
        len(value)
        + 3 * (value.count("<") + value.count(">"))
        + 4 * (value.count("&") + value.count('"') + value.count("'"))
    )


def checked(value: Any) -> Any:
    """A value an operation built: refused if too large, else its size spent."""
    units = 1
    if isinstance(value, str | bytes):
        if len(value) > MAX_VALUE:
            raise too_large("a value")
        units = len(value)
    elif isinstance(value, list | tuple | dict | set | frozenset):
        if len(value) > MAX_VALUE:
            raise too_large("a value")
        units = ITEM_UNITS * len(value)
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise RenderBudgetExceeded(f"a number would be larger than {MAX_INT_BITS:,} bits")
    current().spend(1 + units)
    return value


def scanned(value: Any) -> Any:
    """A value an operation reads through (``in``, ``==``, a method or filter that scans
    its input): its length spent, so scanning a large value many times runs out of work."""
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        current().spend(1 + len(value))
    return value


# --- operators --------------------------------------------------------------------------

_SEQUENCES = (str, bytes, list, tuple)


def _int(value: Any) -> bool:
    return isinstance(value, int)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operator whose result would be too large, before it runs."""
    if operator == "**":
        big = _int(left) and _int(right) and right > 0 and abs(left) > 1
        if big and left.bit_length() * right > MAX_INT_BITS:
            raise RenderBudgetExceeded(
                f"{left.bit_length()}-bit number ** {right} would be larger than "
                f"{MAX_INT_BITS:,} bits"
            )
    elif operator == "*":
        if _int(left) and _int(right):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
                raise RenderBudgetExceeded(f"a product would be larger than {MAX_INT_BITS:,} bits")
        else:
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, _SEQUENCES) and _int(n) and len(seq) * n > MAX_VALUE:
                    raise too_large(f"a repetition ({len(seq):,} times {n:,})")
    elif operator == "+":
        if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            factor = _ESCAPED if isinstance(left, Markup) or isinstance(right, Markup) else 1
            if len(left) + factor * len(right) > MAX_VALUE:
                raise too_large("a concatenation")
    elif operator == "%" and isinstance(left, str):
        check_printf(left, right)


# --- formatting -------------------------------------------------------------------------

_PRINTF = re.compile(
    r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsab%])"
)


def check_printf(fmt: str, args: Any) -> None:
    """``fmt % args`` (the ``%`` operator and the ``format`` filter): no width or precision
    above MAX_WIDTH, none from an argument (``*``), and a result within MAX_VALUE."""
    specs = _PRINTF.findall(fmt)
    if not specs:
        return
    if isinstance(args, Mapping):
        values: Iterable[Any] = args.values()
    elif isinstance(args, tuple):
        values = args
    else:
        values = (args,)
    largest = max((str_size(v) for v in values), default=0)
    if isinstance(fmt, Markup):
        largest *= _ESCAPED
    total = len(fmt)
    for _key, width, precision, _conversion in specs:
        for number in (width, precision):
            if number == "*":
                raise RenderBudgetExceeded("a width or precision from an argument (*)")
            if number and int(number) > MAX_WIDTH:
                raise RenderBudgetExceeded(f"a width or precision above {MAX_WIDTH:,}")
        total += max(int(width or 0), largest)
        if total > MAX_VALUE:
            raise too_large("the formatted text")


_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[_,]?(?:\.(\d+))?")


class BoundedFormatting:
    """Mixed into Jinja's sandboxed ``str.format`` formatters: each field's spec is checked
    after nested fields are filled in (``'{0:>{1}}'.format('a', 300000000)``), and the
    fields together stay within MAX_VALUE."""

    _size = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        match = _SPEC.match(format_spec)
        for number in match.groups() if match else ():
            if number and int(number) > MAX_WIDTH:
                raise RenderBudgetExceeded(f"a format width or precision above {MAX_WIDTH:,}")
        width = int(match.group(1) or 0) if match else 0
        self._size += max(width, str_size(value))
        if self._size > MAX_VALUE:
            raise too_large("the formatted text")
        return super().format_field(value, format_spec)  # type: ignore[misc]  # a mixin


# --- string methods and the filters that build text ---------------------------------------

_PADDING = {"ljust", "rjust", "center", "zfill"}
REFUSED_METHODS = {"translate", "maketrans", "format_map"}


def check_str_method(name: str, owner: str | bytes, args: tuple[Any, ...], kwargs: Any) -> None:
    """Methods of str (and Markup, bytes) whose result can be much larger than ``owner``."""
    numbers = [a for a in (*args, *kwargs.values()) if _int(a)]
    if name in _PADDING or name == "expandtabs":
        for n in numbers:
            if abs(n) > MAX_WIDTH:
                raise RenderBudgetExceeded(f"{name}() with a width above {MAX_WIDTH:,}")
        if name == "expandtabs":
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            size = max(numbers, default=8)
            if len(owner) + tabs * size > MAX_VALUE:
                raise too_large("expandtabs()")
    elif name == "replace" and len(args) >= 2:
        check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else None)
    elif name == "join" and args:
        check_join(args[0], owner)
    elif name in REFUSED_METHODS:
        raise RenderBudgetExceeded(f"{name}() is not available in templates")


def check_replace(s: Any, old: Any, new: Any, count: Any = None) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        hits = s.count(old) if old else len(s) + 1
        if _int(count) and count >= 0:
            hits = min(hits, count)
        if len(s) + hits * max(0, len(new) - len(old)) > MAX_VALUE:
            raise too_large("replace()")


def check_join(items: Any, separator: Any, *, escape: bool = False) -> None:
    """``separator.join(items)``: items is a materialised sequence."""
    if not isinstance(items, list | tuple):
        return
    gap = len(separator) if isinstance(separator, str | bytes) else 0
    total = gap * max(0, len(items) - 1)
    for item in items:
        total += str_size(item)
        if total * (_ESCAPED if escape else 1) > MAX_VALUE:
            raise too_large("join()")


def check_lines(s: str, per_line: int, what: str, width: int = 0) -> None:
    """indent and wordwrap add ``per_line`` characters to each line of ``s`` (wordwrap
    breaks at spaces, hyphens and every ``width`` characters of a long word)."""
    lines = s.count("\n") + s.count(" ") + s.count("-") + 1 + len(s) // max(1, width or len(s))
    if len(s) + lines * per_line > MAX_VALUE:
        raise too_large(what)
