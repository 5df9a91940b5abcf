"""The Jinja environment every template renders in: sandboxed, immutable, autoescaped, and
bounded in time and size, so a hostile or careless template stops with an error instead of
taking the worker down.

Bounds (per render): at most ``MAX_ITERATIONS`` loop iterations, ``MAX_SECONDS`` of wall
time (checked at every loop iteration and output chunk), ``MAX_OUTPUT`` characters of
output, and no intermediate string or list beyond ``MAX_VALUE`` items. Operators and
string methods that could build a huge value in one step (``*``, ``**``, ``%``, ``+``,
``ljust``, ``center``, ``replace``, ``format`` widths …) are checked before they run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from jinja2 import ChainableUndefined, Template, Undefined, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.filters import (
    do_batch,
    do_center,
    do_indent,
    do_replace,
    do_slice,
    do_wordwrap,
)
from jinja2.filters import do_format as _do_format
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import Namespace
from markupsafe import Markup

MAX_ITERATIONS = 100_000
MAX_SECONDS = 2.0
MAX_OUTPUT = 1_000_000
MAX_VALUE = 1_000_000
MAX_WIDTH = 1_000
_CHECK_EVERY = 256
_OUTPUT_BATCH = 16


class RenderError(Exception):
    """A template could not be rendered for a recipient (the message fails, nothing else)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class RenderLimitExceeded(RenderError):
    """The render ran too long or produced too much."""


@dataclass
class _Budget:
    deadline: float
    iterations: int = 0
    undefined: list[tuple[str, int | None]] = field(default_factory=list)
    template: Template | None = None

    def tick(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise RenderLimitExceeded(f"the template loops more than {MAX_ITERATIONS:,} times")
        if not self.iterations % _CHECK_EVERY and time.monotonic() > self.deadline:
            raise RenderLimitExceeded(f"rendering took longer than {MAX_SECONDS:g} s")


GLOBALS: dict[str, Any] = {"range": safe_range, "dict": dict, "namespace": Namespace}


def with_globals(context: dict[str, Any]) -> dict[str, Any]:
    """The context plus the environment's globals, ready for render()."""
    return {**GLOBALS, **context}


_BUDGET: ContextVar[_Budget | None] = ContextVar("nurture_render_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # a render outside render(): bound it anyway
        budget = _Budget(deadline=time.monotonic() + MAX_SECONDS)
        _BUDGET.set(budget)
    return budget


def _check_size(value: Any) -> Any:
    if isinstance(value, str | list | tuple) and len(value) > MAX_VALUE:
        raise RenderLimitExceeded(f"a value grew beyond {MAX_VALUE:,} characters or items")
    return value


def _bounded_iter(iterable: Any) -> Iterator[Any]:
    """Wraps every ``for`` loop's iterable: counts iterations against the render budget."""
    budget = _budget()
    if isinstance(iterable, Undefined):
        iterable = ()
    for item in iterable:
        budget.tick()
        yield item


_WIDE_SPEC = re.compile(r"%[-#0 +]*(\*|\d{4,})|\.(\*|\d{4,})|\{[^{}]*:[^{}]*?\d{4,}")


def _check_format_string(fmt: Any) -> None:
    if isinstance(fmt, str) and _WIDE_SPEC.search(fmt):
        raise SecurityError(f"format widths above {MAX_WIDTH - 1} are not allowed")


def _check_width(*numbers: Any) -> None:
    for n in numbers:
        if isinstance(n, int) and not isinstance(n, bool) and abs(n) > MAX_WIDTH:
            raise SecurityError(f"a width or count above {MAX_WIDTH} is not allowed")


def _check_replace(s: Any, old: Any, new: Any, count: Any = None) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        hits = s.count(old) if old else len(s) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        if len(s) + hits * max(0, len(new) - len(old)) > MAX_VALUE:
            raise RenderLimitExceeded(f"replace() would grow beyond {MAX_VALUE:,} characters")


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """``default`` that also fills in None and empty text (a contact's missing first name is
    stored as ""), so ``{{ contact.first_name | default("there") }}`` does what it says."""
    if isinstance(value, Undefined) or value is None or value == "" or (boolean and not value):
        return default_value
    return value


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_format_string(value)
    return _do_format(value, *args, **kwargs)


def _center(value: str, width: int = 80) -> str:
    _check_width(width)
    return do_center(value, width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    _check_width(width if isinstance(width, int) else len(width))
    out = do_indent(s, width, first, blank)
    _check_size(out)
    return out


def _wordwrap(env: Any, s: str, width: int = 79, *args: Any, **kwargs: Any) -> str:
    _check_width(width)
    return do_wordwrap(env, s, width, *args, **kwargs)


def _replace(ctx: Any, s: str, old: str, new: str, count: int | None = None) -> str:
    _check_replace(str(s), str(old), str(new), count)
    return do_replace(ctx, s, old, new, count)


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _check_width(linecount)
    return do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _check_width(slices)
    return do_slice(value, slices, fill_with)


# Jinja decides how to pass context/environment from these markers on the originals.
_wordwrap.jinja_pass_arg = do_wordwrap.jinja_pass_arg  # type: ignore[attr-defined]
_replace.jinja_pass_arg = do_replace.jinja_pass_arg  # type: ignore[attr-defined]

_SIZED_STR_METHODS = {"ljust", "rjust", "center", "zfill", "expandtabs"}


class Sandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment with render budgets and nothing in its globals but
    ``range`` (bounded), ``dict`` and ``namespace``."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, autoescape: bool, undefined: type[Undefined]) -> None:
        # Text output (plain-text part, subject) drops the line a block tag stands on.
        super().__init__(
            autoescape=autoescape,
            undefined=undefined,
            auto_reload=False,
            trim_blocks=not autoescape,
            lstrip_blocks=not autoescape,
        )
        self.globals.clear()
        self.globals.update(GLOBALS)
        self.filters.pop("attr", None)
        self.filters.update(
            default=_default,
            d=_default,
            format=_format,
            center=_center,
            indent=_indent,
            wordwrap=_wordwrap,
            replace=_replace,
            batch=_batch,
            slice=_slice,
            nurture_bounded=_bounded_iter,
            nurture_sized=_check_size,
        )
        self.tests.pop("callable", None)

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        # Jinja's documented hook before code generation: every loop's iterable goes through
        # the budget, every `~` concatenation through the size check.
        _instrument(source)
        return super()._generate(source, name, filename, defer_init)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 100:
                raise SecurityError("exponents above 100 are not allowed")
            if isinstance(left, int | float) and abs(left) > 10**6 and abs(right) > 2:
                raise SecurityError("this power would be too large")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(n, int)
                if sized and len(seq) * n > MAX_VALUE:
                    raise RenderLimitExceeded(
                        f"a value grew beyond {MAX_VALUE:,} characters or items"
                    )
        elif operator == "%" and isinstance(left, str):
            _check_format_string(left)
        elif (
            operator == "+"
            and isinstance(left, str | list | tuple)
            and hasattr(right, "__len__")
            and len(left) + len(right) > MAX_VALUE
        ):
            raise RenderLimitExceeded(f"a value grew beyond {MAX_VALUE:,} characters")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name in _SIZED_STR_METHODS:
                _check_width(*args, *kwargs.values())
            elif name == "replace":
                _check_replace(owner, *args[:3])
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # The context is plain dicts: look keys up first (the common case, and no
        # AttributeError to raise and catch); anything else takes the sandbox's path.
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Jinja returns an Undefined that raises only when used, and a chainable Undefined
        # is never "used": refuse at once instead, so a violation is reported, not hidden.
        raise SecurityError(f"access to {attribute!r} of a {type(obj).__name__} is not allowed")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_string(value.__self__)
        return wrapped


def _instrument(template: nodes.Template) -> None:
    for loop in template.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "nurture_bounded", [], [], None, None)
    for concat in list(template.find_all(nodes.Concat)):
        concat.nodes = [
            nodes.Filter(nodes.Concat(concat.nodes), "nurture_sized", [], [], None, None)
        ]


class RecordingUndefined(ChainableUndefined):
    """Renders empty like the send-time Undefined, and notes where it was printed, so a save
    can report "renders empty for the sample contact" with the line."""

    __slots__ = ()

    def _note(self) -> None:
        budget = _BUDGET.get()
        if budget is None:
            return
        budget.undefined.append((self._undefined_name or "?", _template_line(budget.template)))

    def __str__(self) -> str:
        self._note()
        return ""

    def __html__(self) -> str:
        self._note()
        return ""


def _template_line(template: Template | None) -> int | None:
    import sys

    if template is None:
        return None
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename == "<template>":
            return template.get_corresponding_lineno(frame.f_lineno)
        frame = frame.f_back  # type: ignore[assignment]
    return None


HTML_ENV = Sandbox(autoescape=True, undefined=ChainableUndefined)
TEXT_ENV = Sandbox(autoescape=False, undefined=ChainableUndefined)
CHECK_HTML_ENV = Sandbox(autoescape=True, undefined=RecordingUndefined)
CHECK_TEXT_ENV = Sandbox(autoescape=False, undefined=RecordingUndefined)


@dataclass(frozen=True)
class Rendered:
    output: str  # empty when a consumer took the chunks
    undefined: list[tuple[str, int | None]]


def render(
    template: Template,
    context: dict[str, Any],
    *,
    max_output: int = MAX_OUTPUT,
    max_seconds: float = MAX_SECONDS,
    consume: Callable[[list[str]], None] | None = None,
) -> Rendered:
    """Render within the budget; any failure becomes a RenderError naming the line.

    With ``consume``, the output chunks are handed over a few at a time as they come (the
    sender encodes them, substituting tracking URLs) instead of being joined into
    ``output``."""
    budget = _Budget(deadline=time.monotonic() + max_seconds, template=template)
    token = _BUDGET.set(budget)
    try:
        try:
            # A shared context uses the dict as it is (no copy, a quarter of the cost);
            # a top-level {% set %} still goes to the Context's own vars, never into it.
            if "namespace" not in context:
                context = with_globals(context)
            chunks = template.root_render_func(template.new_context(context, shared=True))
            texts: list[str] = []
            take = texts.extend if consume is None else consume
            size = 0
            # Chunks are taken a few at a time so the size check costs little per chunk;
            # each chunk is bounded (MAX_VALUE), so the overshoot is too.
            while batch := list(islice(chunks, _OUTPUT_BATCH)):
                size += sum(map(len, batch))
                if size > max_output:
                    raise RenderLimitExceeded(
                        f"the output is larger than {max_output:,} characters"
                    )
                take(batch)
        except Exception:
            template.environment.handle_exception()  # re-raises with template line numbers
        if time.monotonic() > budget.deadline:
            raise RenderLimitExceeded(f"rendering took longer than {max_seconds:g} s")
        return Rendered("".join(texts), budget.undefined)
    except RenderError as exc:
        if exc.line is None:
            exc.line = _error_line(exc)
        raise
    except SecurityError as exc:
        raise RenderError(f"not allowed: {exc}", _error_line(exc)) from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}", _error_line(exc)) from None
    except RecursionError:
        raise RenderError("the template recurses too deeply") from None
    except MemoryError:
        raise RenderLimitExceeded("the template needs too much memory") from None
    finally:
        _BUDGET.reset(token)


def static_chunks(template: Template) -> set[str]:
    """The constant strings of a compiled template (what it yields verbatim)."""
    found: set[str] = set()
    stack = [template.root_render_func.__code__]
    while stack:
        code = stack.pop()
        for const in code.co_consts:
            if isinstance(const, str):
                found.add(const)
            elif hasattr(const, "co_consts"):
                stack.append(const)
    return found


def _error_line(exc: BaseException) -> int | None:
    """Jinja rewrites tracebacks so template frames carry template line numbers."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def markup(value: str) -> Markup:
    """Mark our own generated URLs safe, so autoescape leaves them alone."""
    return Markup(value)  # noqa: S704  # our own signed URLs, never user input
