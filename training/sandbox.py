"""The webui's Jinja sandbox with bounds on size and time: a template cannot exhaust memory or hang.

text-generation-webui renders an instruction template in ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True) with loopcontrols. That sandbox keeps a template away from Python's internals but
grants it `'ab' * 10**12`. `BoundedEnvironment` is the same environment with bounds; the checks only
look at the operands and then let Jinja's own code run, so a template within them renders byte for
byte as in the webui:
- sizes: an operation that would make a value of more than `max_chars` characters (or items) is
  refused before it runs: `*`, `+`, `%`, `~`, `**` and `*` on integers (in bits), the filters and
  str methods that pad, repeat or join (center, indent, replace, join, format, tojson, ljust, zfill,
  expandtabs, ...), an integer argument of a builtin method beyond `max_chars` (to_bytes), lipsum,
  and a value turned into output; the text made in all (output and the buffers of macros, blocks
  and `set`) is bounded too;
- time: every call, loop step, filter and operator checks a deadline, so loops and recursion stop;
- `render_bounded` renders a template with both bounds, streaming the output.
A refusal is a RenderLimitError (a jinja2 TemplateError) that says which bound was hit.
"""

from __future__ import annotations

import inspect
import re
import time
import types
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps

from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

MAX_CHARS = 1 << 20  # characters of one value or of the output, on top of 4x the render's own inputs
MAX_SECONDS = 5.0  # one render; a prompt takes well under a millisecond
MAX_INT_BITS = 1 << 16  # an integer this large prints past Python's own 4300-digit limit
PRODUCED_FACTOR = 4  # all text made (output, macro and block buffers) may be this many outputs' worth


class RenderLimitError(TemplateError):
    """A template that asks for more than its bounds; the message says which bound."""


@dataclass
class Budget:
    max_chars: int = MAX_CHARS
    deadline: float = float("inf")
    seconds: float = MAX_SECONDS
    produced: int = 0


_BUDGET: ContextVar[Budget | None] = ContextVar("spanish_ft_template_budget", default=None)


def _budget() -> Budget:
    """The budget of the render under way; outside one (Jinja folding constants at compile time) sizes only."""
    return _BUDGET.get() or Budget()


def _tick(budget: Budget) -> None:
    if time.monotonic() > budget.deadline:
        raise RenderLimitError(f"rendering took longer than {budget.seconds:g} s (a loop or a recursion that does "
                               "not end in time)")


def _refuse_over(chars: int, what: str, budget: Budget) -> None:
    if chars > budget.max_chars:
        raise RenderLimitError(f"{what} would make about {chars} characters, more than the {budget.max_chars} "
                               "a prompt may have")


def text_size(value, cap: int = MAX_CHARS) -> int:
    """About how many characters `str(value)` has, counted without building it; stops soon after `cap`."""
    total, stack = 0, [value]
    while stack and total <= cap:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, (dict, list, tuple, set, frozenset)):
            total += 2 + 4 * len(item)
            if total <= cap:
                stack.extend(item.items() if isinstance(item, dict) else item)
        elif isinstance(item, Namespace):
            stack.append(item._Namespace__attrs)  # its repr prints every attribute
        else:
            total += 8
    return total


def _number(value) -> int:
    """The magnitude of an integer argument, else 0."""
    return abs(value) if isinstance(value, int) else 0


def _digits(text: str) -> int:
    return int(text) if text.isdigit() and len(text) < 10 else 10**10 if text.isdigit() else 0


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_FIELD = re.compile(r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")


def _printf_size(fmt: str, values) -> int:
    """An upper bound of `fmt % values`: widths and precisions, stars from the values, each value per spec."""
    specs = _PRINTF_SPEC.findall(fmt)
    widths = sum(_digits(part) for spec in specs for part in spec)
    if any("*" in spec for spec in specs):
        widths += sum(map(_number, values if isinstance(values, tuple) else (values,)))
    return len(fmt) + widths + len(specs) * text_size(values)


def _format_size(fmt: str, args, kwargs) -> int:
    """An upper bound of `fmt.format(*args, **kwargs)`, as `_printf_size` for str.format's fields."""
    fields = _FORMAT_FIELD.findall(fmt)
    widths = sum(_digits(run) for field in fields for run in re.findall(r"\d+", field.partition(":")[2]))
    if any(field.count("{") > 1 for field in fields):  # a width taken from the arguments
        widths += sum(map(_number, (*args, *kwargs.values())))
    return len(fmt) + widths + len(fields) * text_size((args, kwargs))


def _replace_size(text, old, new, count=-1) -> int:
    found = text.count(old) if old else len(text) + 1
    found = found if count is None or count < 0 else min(found, _number(count))
    return len(text) + found * len(new)


# filter -> the size of its result from its bound arguments (the filters that pad, repeat or join)
FILTER_SIZES = {
    "center": lambda a: text_size(a["value"]) + _number(a["width"]),
    "indent": lambda a: text_size(a["s"]) * (1 + (len(a["width"]) if isinstance(a["width"], str)
                                                  else _number(a["width"]))),
    "wordwrap": lambda a: text_size(a["s"]) * (1 + len(str(a["wrapstring"] or "\n"))),
    "replace": lambda a: _replace_size(str(a["s"]), str(a["old"]), str(a["new"]), a["count"]),
    "join": lambda a: text_size(a["value"]) + len(str(a["d"])) * len(a["value"]),
    "batch": lambda a: text_size(a["value"]) + _number(a["linecount"]),
    "slice": lambda a: text_size(a["value"]) + _number(a["slices"]),
    "format": lambda a: _printf_size(str(a["value"]), a["kwargs"] or a["args"]),
    "tojson": lambda a: text_size(a["value"]) * (1 + _number(a["indent"])),
    "sum": lambda a: text_size(a["iterable"]) + text_size(a["start"]),
    "urlize": lambda a: text_size(a["value"]) * (1 + text_size((a["target"], a["rel"], a["extra_schemes"]))),
}
STR_METHOD_SIZES = {
    "expandtabs": lambda s, a: len(s) + s.count("\t") * _number(a[0] if a else 8),
    "join": lambda s, a: text_size(a[0]) + len(s) * len(a[0]),
    "replace": lambda s, a: _replace_size(s, a[0], a[1], a[2] if len(a) > 2 else -1),
    "translate": lambda s, a: len(s) * (1 + max(map(text_size, a[0].values()), default=0)),
}
_PASSED_NAMES = {"eval_ctx", "environment", "env", "context", "ctx"}  # the first parameter of a pass_* filter
_MATERIALIZED = {"join", "sum"}  # consume their iterable whole: given as a list, it can be measured first


def _materialized(values: tuple) -> tuple:
    """`values` with a lone iterator (a map or select filter's) turned into a list, so its size can be read."""
    first, *rest = values or (None,)
    if isinstance(first, types.GeneratorType) or (hasattr(first, "__next__") and not hasattr(first, "__len__")):
        return (list(first), *rest)
    return values


def _checked_result(value, what: str, budget: Budget):
    if isinstance(value, (str, bytes, list, tuple, dict)):
        _refuse_over(len(value), what, budget)
    return value


def bounded_filter(name: str, function):
    """`function` (the filter `name`) with its input measured, its result estimated first, and the deadline checked."""
    estimate = FILTER_SIZES.get(name)
    signature = inspect.signature(function) if estimate else None
    # Jinja passes the environment or context first; an async variant's signature (slice, sum) omits it
    skip = int(bool(getattr(function, "jinja_pass_arg", None)) and
               next(iter(signature.parameters), "") not in _PASSED_NAMES) if estimate else 0

    @wraps(function)
    def bounded(*args, **kwargs):
        budget = _budget()
        _tick(budget)
        _refuse_over(text_size((args, kwargs), budget.max_chars), f"the filter {name!r} on its input", budget)
        if estimate:
            try:
                bound = signature.bind(*args[skip:], **kwargs)
            except TypeError:
                bound = None  # the filter raises its own error for these arguments
            if bound:
                bound.apply_defaults()
                if name in _MATERIALIZED:
                    key = next(k for k in ("value", "iterable") if k in bound.arguments)
                    bound.arguments[key] = _materialized((bound.arguments[key],))[0]
                    args, kwargs = (*args[:skip], *bound.args), bound.kwargs
                _refuse_over(_guarded(estimate, bound.arguments), f"the filter {name!r}", budget)
        return _checked_result(function(*args, **kwargs), f"the filter {name!r}", budget)

    return bounded


def _guarded(estimate, *arguments) -> int:
    """The estimate, or 0 when the arguments are of types the call itself will refuse."""
    try:
        return estimate(*arguments)
    except (TypeError, AttributeError, IndexError, KeyError, ValueError):
        return 0


class _Filters(dict):
    """Filters are bounded as they are registered, the environment's own and those added later (tojson)."""

    def __setitem__(self, name, function):
        super().__setitem__(name, bounded_filter(name, function))


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with every loop step, `~` and output buffer passing through the budget."""

    def buffer(self, frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.bounded_buffer()")

    def visit_For(self, node, frame) -> None:
        node.iter = nodes.Call(nodes.EnvironmentAttribute("bounded_loop"), [node.iter], [], None, None,
                               lineno=node.lineno)
        super().visit_For(node, frame)

    def visit_Concat(self, node, frame) -> None:
        if frame.eval_ctx.volatile:  # Jinja's own choice of join, as in CodeGenerator.visit_Concat
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.checked_concat((")
        for operand in node.nodes:
            self.visit(operand, frame)
            self.write(", ")
        self.write(")))")


class _Buffer(list):
    """The output buffer of a macro, block, filter block or `{% set %}` block, counted as it fills."""

    def append(self, text) -> None:
        _spend(text_size(text))
        super().append(text)

    def extend(self, texts) -> None:
        texts = tuple(texts)
        _spend(sum(map(text_size, texts)))
        super().extend(texts)


def _spend(chars: int) -> None:
    budget = _budget()
    _tick(budget)
    budget.produced += chars
    if budget.produced > PRODUCED_FACTOR * budget.max_chars:
        raise RenderLimitError(f"the template made more than {PRODUCED_FACTOR * budget.max_chars} characters of "
                               "text in all (output, macros and blocks)")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment with every operation that can grow a value or loop checked first."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(("*", "**", "+", "%"))

    def __init__(self, **options):
        super().__init__(**options)
        filters, self.filters = self.filters, _Filters()
        for name, function in filters.items():
            self.filters[name] = function
        self.finalize = self.checked_output
        self.globals["lipsum"] = _bounded_lipsum(self.globals["lipsum"])

    def call_binop(self, context, operator: str, left, right):
        budget = _budget()
        _tick(budget)
        if isinstance(left, int) and isinstance(right, int) and operator in ("*", "**"):
            bits = left.bit_length() + right.bit_length() if operator == "*" else (abs(left).bit_length() - 1) * right
            if bits > MAX_INT_BITS:
                raise RenderLimitError(f"{operator!r} would make an integer of about {bits} bits, more than the "
                                       f"{MAX_INT_BITS} allowed")
        elif operator == "*" and isinstance(left, int) != isinstance(right, int):
            count, value = (left, right) if isinstance(left, int) else (right, left)
            _refuse_over(text_size(value, budget.max_chars) * max(count, 0), "'*'", budget)
        elif operator == "+":
            _refuse_over(text_size((left, right), budget.max_chars), "'+'", budget)
        elif operator == "%" and isinstance(left, str):
            _refuse_over(_printf_size(left, right), "'%'", budget)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's own signature)
        budget = _budget()
        _tick(budget)
        if isinstance(__obj, (types.BuiltinMethodType, types.MethodWrapperType)):
            args = _checked_builtin_call(__obj, args, kwargs, budget)
        return _checked_result(super().call(__context, __obj, *args, **kwargs), "the call", budget)

    def wrap_str_format(self, value):
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt = value.__self__

        @wraps(wrapper)
        def bounded(*args, **kwargs):
            budget = _budget()
            _refuse_over(_format_size(fmt, args, kwargs), f"str.{value.__name__}", budget)
            return wrapper(*args, **kwargs)

        return bounded

    def bounded_loop(self, iterable):
        """The loop's items, checking the deadline before each."""
        budget = _budget()
        for item in iterable:
            _tick(budget)
            yield item

    def bounded_buffer(self) -> _Buffer:
        return _Buffer()

    def checked_concat(self, operands: tuple) -> tuple:
        """The operands of `~`, once their text is known to fit."""
        budget = _budget()
        _tick(budget)
        _refuse_over(text_size(operands, budget.max_chars), "'~'", budget)
        return operands

    def checked_output(self, value):
        """A value about to be printed (`{{ value }}`), once its text is known to fit."""
        budget = _budget()
        _refuse_over(text_size(value, budget.max_chars), "printing a value", budget)
        return value


def _checked_builtin_call(method, args: tuple, kwargs: dict, budget: Budget) -> tuple:
    """A builtin method's arguments (an iterator for str.join made a list), refused when its result would not fit."""
    name = getattr(method, "__name__", "method")
    for value in (*args, *kwargs.values()):
        if _number(value) > budget.max_chars:
            raise RenderLimitError(f"{name}() with the number {value} would make more than the {budget.max_chars} "
                                   "characters a prompt may have")
    owner = getattr(method, "__self__", None)
    if isinstance(owner, str) and name in STR_METHOD_SIZES:
        args = _materialized(args) if name == "join" else args
        _refuse_over(_guarded(STR_METHOD_SIZES[name], owner, args), f"str.{name}()", budget)
    return args


def _bounded_lipsum(lipsum):
    @wraps(lipsum)
    def bounded(n=5, html=True, min=20, max=100):  # noqa: A002 (Jinja's own parameter names)
        _refuse_over(_number(n) * (_number(min) + _number(max)) * 12, "lipsum()", _budget())
        return lipsum(n, html, min, max)

    return bounded


def render_bounded(template, **context) -> str:
    """`template.render(**context)`; RenderLimitError past MAX_SECONDS or MAX_CHARS + 4x the context's text."""
    budget = Budget(MAX_CHARS + 4 * text_size(context, 1 << 40), time.monotonic() + MAX_SECONDS, MAX_SECONDS)
    token = _BUDGET.set(budget)
    try:
        parts, size = [], 0
        for chunk in template.generate(**context):
            size += len(chunk)
            _refuse_over(size, "the output", budget)
            _spend(len(chunk))
            parts.append(chunk)
        return "".join(parts)
    finally:
        _BUDGET.reset(token)
