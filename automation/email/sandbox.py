"""The Jinja environment every template renders in: sandboxed, immutable, autoescaped, and
within the render budget (automation/email/render_budget.py), so a hostile or careless
template stops with an error naming its line instead of taking the worker down.

Every operation goes through the budget: all binary and unary operators
(``intercepted_binops``), every call (methods, macros, ``range``), every filter (each is
wrapped), every loop step, ``~`` concatenation and every ``{{ … }}`` output (``finalize``).
Operators, string methods, filters and ``str.format`` fields that could build a huge value
in one step are checked on their operands before they run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from jinja2 import ChainableUndefined, Template, Undefined, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
    safe_range,
)
from jinja2.utils import Namespace, pass_environment, pass_eval_context
from markupsafe import Markup, escape

from automation.email.render_budget import (
    CALL_OPERATIONS,
    CURRENT,
    ITEM_UNITS,
    MAX_OUTPUT,
    MAX_SECONDS,
    MAX_VALUE,
    MAX_WIDTH,
    REFUSED_METHODS,
    BoundedFormatting,
    Budget,
    RenderBudgetExceeded,
    RenderError,
    check_binop,
    check_join,
    check_lines,
    check_printf,
    check_replace,
    check_str_method,
    checked,
    current,
    escaped_size,
    new_budget,
    scanned,
    str_size,
    too_large,
)

__all__ = ["RenderBudgetExceeded", "RenderError", "Rendered", "render"]

_OUTPUT_BATCH = 16

GLOBALS: dict[str, Any] = {"range": safe_range, "dict": dict, "namespace": Namespace}


def with_globals(context: dict[str, Any]) -> dict[str, Any]:
    """The context plus the environment's globals, ready for render()."""
    return {**GLOBALS, **context}


def _bounded_iter(iterable: Any, weight: int = 0) -> Iterator[Any]:
    """Wraps every ``for`` loop's iterable: each step spends from the budget, with the
    static text of the loop's body (``weight``), which each step outputs."""
    budget = current()
    if isinstance(iterable, Undefined):
        iterable = ()
    for item in iterable:
        budget.step(weight)
        yield item


@pass_eval_context
def _concat(eval_ctx: EvalContext, values: list[Any]) -> str:
    """``a ~ b``: the parts' sizes checked before they are joined."""
    total = sum(str_size(v) for v in values)
    if total > MAX_VALUE:
        raise too_large("a concatenation (~)")
    current().spend(1 + total)
    return markup_join(values) if eval_ctx.autoescape else str_join(values)


class EscapedText(Markup):
    """HTML that is escaped text: the output of an autoescaping render of an escaped
    source (the preheader slot). Putting it in adds no markup, so, unlike other Markup,
    it does not mark the render unescaped (which would re-check every recipient's HTML);
    an unescaped output inside its own render, in the same budget, still does."""

    __slots__ = ()


@pass_eval_context
def _finalize(eval_ctx: EvalContext, value: Any) -> Any:
    """Every ``{{ … }}`` output: its size (escaped, when it will be) spent before Jinja
    turns it into text."""
    budget = current()
    if type(value) is str:
        size = escaped_size(value) if eval_ctx.autoescape else len(value)
        if not eval_ctx.autoescape:
            budget.unescaped = True
    else:
        size = str_size(value)
        if not eval_ctx.autoescape or (
            hasattr(value, "__html__") and not isinstance(value, (Undefined, EscapedText))
        ):
            budget.unescaped = True
    if size > MAX_VALUE:
        raise too_large("an output")
    budget.emit(size)
    return value


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """``default`` that also fills in None and empty text (a contact's missing first name is
    stored as ""), so ``{{ contact.first_name | default("there") }}`` does what it says."""
    if isinstance(value, Undefined) or value is None or value == "" or (boolean and not value):
        return default_value
    return value


def _width(*numbers: Any) -> None:
    for n in numbers:
        if isinstance(n, int) and not isinstance(n, bool) and abs(n) > MAX_WIDTH:
            raise RenderBudgetExceeded(f"a width or count above {MAX_WIDTH:,}")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


# Checks run before a builtin filter: they get its arguments (without a passed context,
# environment or eval context) and refuse what would build too large a value.
def _before_format(value: Any, *args: Any, **kwargs: Any) -> None:
    check_printf(_text(value), kwargs or args)


def _before_center(value: Any, width: int = 80) -> None:
    _width(width)


def _before_indent(s: Any, width: int | str = 4, *_: Any, **__: Any) -> None:
    per_line = width if isinstance(width, int) else len(width)
    _width(per_line)
    check_lines(_text(s), per_line, "indent")


def _before_wordwrap(
    s: Any, width: int = 79, break_long_words: bool = True, wrapstring: str | None = None, *_: Any
) -> None:
    _width(width)
    check_lines(_text(s), len(wrapstring or "\n"), "wordwrap", width)


def _before_replace(s: Any, old: Any, new: Any, count: Any = None) -> None:
    check_replace(_text(s), _text(old), _text(new), count)


def _before_batch(value: Any, linecount: int, fill_with: Any = None) -> None:
    _width(linecount)


def _before_urlize(value: Any, *_: Any, **__: Any) -> None:
    if 16 * len(_text(value)) > MAX_VALUE:  # each link becomes an <a> of its own
        raise too_large("urlize")


_BEFORE: dict[str, Callable[..., None]] = {
    "format": _before_format,
    "center": _before_center,
    "indent": _before_indent,
    "wordwrap": _before_wordwrap,
    "replace": _before_replace,
    "batch": _before_batch,
    "slice": _before_batch,
    "urlize": _before_urlize,
}
# Filters that never turn their input into text; every other one gets its container
# arguments' text size checked first (``biglist|string``, ``|tojson``, ``|e``).
_NOT_TEXT = {
    "abs", "batch", "count", "d", "default", "dictsort", "first", "float", "groupby", "int",
    "items", "last", "length", "list", "map", "max", "min", "random", "reject",
    "rejectattr", "reverse", "round", "select", "selectattr", "slice", "sort", "sum",
    "unique",
}  # fmt: skip


# Filters that do not read through their input.
_CHEAP = {"count", "d", "default", "first", "length", "random"}


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A builtin filter within the budget: its checks before, its result's size after."""
    before = _BEFORE.get(name)
    text = name not in _NOT_TEXT
    scans = name not in _CHEAP
    passed = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        own = args[passed:]
        if own and scans:
            scanned(own[0])
        if text:
            for arg in (*own, *kwargs.values()):
                if isinstance(arg, list | tuple | dict | set | Namespace):
                    str_size(arg)
        if before is not None:
            before(*own, **kwargs)
        return checked(func(*args, **kwargs))

    return bounded


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    if len(items) > MAX_VALUE:
        raise too_large("join")
    if attribute is not None:
        getter = make_attrgetter(eval_ctx.environment, attribute)
        items = [getter(item) for item in items]
    check_join(items, d, escape=eval_ctx.autoescape)
    if not eval_ctx.autoescape:
        return str(d).join(map(str, items))
    if hasattr(d, "__html__") or any(hasattr(item, "__html__") for item in items):
        return escape(d).join(items)
    return str(d).join(map(str, items))


@pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    """``sum`` in linear time for lists (Python's sum copies the total at every step) and
    with each step's size checked."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    budget = current()
    if isinstance(start, list | tuple):
        out = list(start)
        for item in iterable:
            if not isinstance(item, list | tuple):
                raise TypeError(f"can only add lists to a list, not {type(item).__name__}")
            if len(out) + len(item) > MAX_VALUE:
                raise too_large("sum")
            budget.spend(1 + ITEM_UNITS * len(item))
            out.extend(item)
        return type(start)(out) if isinstance(start, tuple) else out
    total = start
    for item in iterable:
        check_binop("+", total, item)
        total = checked(total + item)
    return total


class _Formatter(BoundedFormatting, SandboxedFormatter):
    pass


class _EscapeFormatter(BoundedFormatting, SandboxedEscapeFormatter):
    pass


class Sandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment within the render budget, with nothing in its globals
    but ``range`` (bounded), ``dict`` and ``namespace``."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"+", "-"})

    def __init__(self, *, autoescape: bool, undefined: type[Undefined]) -> None:
        # Text output (plain-text part, subject) drops the line a block tag stands on.
        super().__init__(
            autoescape=autoescape,
            undefined=undefined,
            auto_reload=False,
            trim_blocks=not autoescape,
            lstrip_blocks=not autoescape,
            finalize=_finalize,
        )
        self.globals.clear()
        self.globals.update(GLOBALS)
        self.filters.pop("attr", None)
        self.filters.update(default=_default, d=_default, join=_join, sum=_sum)
        for name, func in list(self.filters.items()):
            self.filters[name] = _bounded_filter(name, func)
        self.filters.update(
            nurture_bounded=_bounded_iter, nurture_concat=_concat, nurture_scanned=scanned
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
        check_binop(operator, left, right)
        return checked(super().call_binop(context, operator, left, right))

    def call_unop(self, context: Context, operator: str, arg: Any) -> Any:
        current().spend(1)
        return super().call_unop(context, operator, arg)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes):
            check_str_method(getattr(__obj, "__name__", ""), owner, args, kwargs)
        scanned(owner)  # a method may read all of its object (count, find, index, split)
        if owner is None:
            current().spend(1, CALL_OPERATIONS)  # a macro, caller() or a loop's recursion
        return checked(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        # The context is plain dicts: look keys up first (the common case, and no
        # AttributeError to raise and catch); anything else takes the sandbox's path.
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        if attribute in REFUSED_METHODS and isinstance(obj, str | bytes):
            raise SecurityError(f"{attribute}() is not available in templates")
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Jinja returns an Undefined that raises only when used, and a chainable Undefined
        # is never "used": refuse at once instead, so a violation is reported, not hidden.
        raise SecurityError(f"access to {attribute!r} of a {type(obj).__name__} is not allowed")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's own wrapper, with formatters whose fields are checked (BoundedFormatting)."""
        if getattr(value, "__name__", None) != "format" or not isinstance(
            getattr(value, "__self__", None), str
        ):
            return None
        fmt: str = value.__self__
        formatter: SandboxedFormatter = (
            _EscapeFormatter(self, escape=fmt.escape)
            if isinstance(fmt, Markup)
            else _Formatter(self)
        )
        str_type = type(fmt)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            return str_type(formatter.vformat(fmt, args, kwargs))

        return functools.update_wrapper(wrapper, value)


def _instrument(template: nodes.Template) -> None:
    for loop in template.find_all(nodes.For):
        weight = sum(len(data.data) for data in loop.find_all(nodes.TemplateData))
        loop.iter = nodes.Filter(
            loop.iter, "nurture_bounded", [nodes.Const(weight)], [], None, None
        )
    for compare in template.find_all(nodes.Compare):
        # `in` and `==` read through their operands.
        compare.expr = nodes.Filter(compare.expr, "nurture_scanned", [], [], None, None)
        for operand in compare.ops:
            operand.expr = nodes.Filter(operand.expr, "nurture_scanned", [], [], None, None)
    for item in list(template.find_all(nodes.Getitem)):
        if isinstance(item.arg, nodes.Slice):  # a slice copies: `big[::-1]`
            item.node = nodes.Filter(item.node, "nurture_scanned", [], [], None, None)
    for concat in list(template.find_all(nodes.Concat)):
        parts = nodes.List(concat.nodes)
        concat.nodes = [nodes.Filter(parts, "nurture_concat", [], [], None, None)]


class RecordingUndefined(ChainableUndefined):
    """Renders empty like the send-time Undefined, and notes where it was printed, so a save
    can report "renders empty for the sample contact" with the line."""

    __slots__ = ()

    def _note(self) -> None:
        budget = CURRENT.get()
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
    budget: Budget | None = None,
    max_seconds: float = MAX_SECONDS,
    consume: Callable[[list[str]], None] | None = None,
) -> Rendered:
    """Render within the budget; any failure becomes a RenderError naming the line.

    ``budget`` is the message's, when its parts share one; else the render gets its own
    of ``max_seconds``. With ``consume``, the output chunks are handed over a few at a time
    as they come (the sender encodes them, substituting tracking URLs) instead of being
    joined into ``output``."""
    budget = budget or new_budget(max_seconds)
    budget.template = template
    budget.undefined = []
    budget.output, budget.max_output, budget.unescaped = 0, max_output, False
    token = CURRENT.set(budget)
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
                    raise RenderBudgetExceeded(
                        f"the output is larger than {max_output:,} characters"
                    )
                take(batch)
        except Exception:
            template.environment.handle_exception()  # re-raises with template line numbers
        budget.spend(0)  # the deadline, once more, for a render made of static text
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
        raise RenderBudgetExceeded("the template needs too much memory") from None
    finally:
        CURRENT.reset(token)


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
