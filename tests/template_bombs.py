"""The template bomb corpus (issue 17, items 2 and 3): templates that would burn seconds of
CPU, gigabytes of memory or megabytes of output, each a single Jinja line. The tests render
every one (tests/test_template_bombs.py) and bench/template_bombs.py times them.

Each is (kind, source); the source stands on line 3 of the template it is tested in."""

from __future__ import annotations

_SQUARED_17 = "{% set a = 9**100 %}" + "{% set a = a*a %}" * 17 + "{{ a }}"
_BIG_LIST = "{% set a = ['x' * 900000] * 1000 %}"
_STATIC_1K = "<p>" + "static text " * 83 + "</p>"

BOMBS: dict[str, tuple[str, str]] = {
    # CPU: huge numbers, quadratic sums, loops and scans
    "squared 17 times": ("cpu", _SQUARED_17),
    "large exponent": ("cpu", "{{ 9 ** 999999 }}"),
    "exponent of exponent": ("cpu", "{{ (9 ** 9) ** (9 ** 9) }}"),
    "number of 4000 digits": ("cpu", "{{ 10 ** 4000 * 10 ** 4000 }}"),
    "number squared in a loop": (
        "cpu",
        "{% set ns = namespace(n=3) %}{% for i in range(1000) %}{% set ns.n = ns.n * ns.n %}"
        "{% endfor %}{{ ns.n }}",
    ),
    "quadratic sum": ("cpu", "{% set a = range(1000)|list %}{{ ([a]*2000)|sum(start=[]) }}"),
    "quadratic sum of small lists": (
        "cpu",
        "{% set a = [1, 2, 3, 4, 5] %}{{ ([a]*200000)|sum(start=[])|length }}",
    ),
    "nested loops": (
        "cpu",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    ),
    "scan in a loop": (
        "cpu",
        "{% set big = 'x' * 900000 %}{% for i in range(100000) %}{% if 'y' in big %}y"
        "{% endif %}{% endfor %}",
    ),
    "count in a loop": (
        "cpu",
        "{% set big = 'x' * 900000 %}{% for i in range(100000) %}{{ big.count('y') }}{% endfor %}",
    ),
    "list built in a loop": (
        "cpu",
        "{% for i in range(1000) %}{% set x = range(100000)|list %}{% endfor %}",
    ),
    "exponential macro": (
        "cpu",
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}x{% endmacro %}"
        "{{ m(40) }}",
    ),
    # memory: one operation that builds hundreds of megabytes
    "expandtabs": ("memory", "{{ ('\\t' * 300000).expandtabs(1000) }}"),
    "nested format width": ("memory", "{{ '{0:>{1}}'.format('a', 300000000) }}"),
    "format filter width": ("memory", "{{ '%(a)300000000s'|format(a='x') }}"),
    "percent width": ("memory", "{{ '%300000000s' % 'x' }}"),
    "percent star width": ("memory", "{{ '%*s' % (300000000, 'x') }}"),
    "join": ("memory", "{{ (['a'] * 20000)|join('b' * 15000) }}"),
    "str.join": ("memory", "{{ ('b' * 15000).join(['a'] * 20000) }}"),
    "repetition": ("memory", "{{ 'x' * 300000000 }}"),
    "list repetition": ("memory", "{{ ([0] * 300000000)|length }}"),
    "center": ("memory", "{{ 'x'.center(300000000) }}"),
    "zfill": ("memory", "{{ '1'.zfill(300000000) }}"),
    "replace filter": ("memory", "{{ ('a' * 100000)|replace('a', 'b' * 1000) }}"),
    "str.replace": ("memory", "{{ ('a' * 100000).replace('a', 'b' * 1000) }}"),
    "indent": ("memory", "{{ ('\\n' * 500000)|indent(1000) }}"),
    "wordwrap": ("memory", "{{ ('a ' * 400000)|wordwrap(1, wrapstring='b' * 900) }}"),
    "text of a list": ("memory", _BIG_LIST + "{{ a }}"),
    "string filter of a list": ("memory", _BIG_LIST + "{{ a|string|length }}"),
    "tojson of a list": ("memory", _BIG_LIST + "{{ a|tojson|length }}"),
    "percent of a list": ("memory", _BIG_LIST + "{{ '%s' % (a,) }}"),
    "format of a list": ("memory", _BIG_LIST + "{{ '{0}'.format(a) }}"),
    "many format fields": ("memory", "{{ ('{0}' * 1000).format('x' * 900000) }}"),
    "concatenation of lists": ("memory", _BIG_LIST + "{{ a ~ a }}"),
    "block set in a loop": (
        "memory",
        "{% set x %}{% for i in range(100000) %}" + _STATIC_1K + "{% endfor %}{% endset %}"
        "{{ x|length }}",
    ),
    "escaping multiplies": ("memory", "{{ '\"' * 999999 }}"),
    # size: the output itself
    "output loop": ("size", "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}"),
}

# Heavy only for real recipients: the sample contact (ada@example.com) renders it in no time.
GATED = "{% if contact.email != 'ada@example.com' %}" + _SQUARED_17 + "{% endif %}"


def template(source: str) -> str:
    """A bomb on line 3 of a small template."""
    return f"<p>Hello</p>\n<p>{{{{ contact.first_name }}}}</p>\n{source}\n<p>Bye</p>\n"
