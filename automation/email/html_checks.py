"""What is sent, checked: the rendered HTML of one message, parsed as a browser parses it,
refused if it carries anything that runs, navigates or reaches outside the email.

The template's source is checked at save (mjml_checks), but the source is not what a
recipient gets: ``|safe`` values, ``{% raw %}``, a CDATA section, ``java{{ '' }}script:``
or a contact's own data in an ``href`` only appear once rendered. So every rendered HTML
(at save for the sample contact, per recipient at send, on the view-in-browser page and in
previews) goes through :func:`check_html`.

It refuses instead of rewriting. A rewriting sanitizer (nh3/ammonia, bleach) drops what it
does not know, and email HTML lives on exactly that: ``<style>`` blocks, Outlook's
conditional comments and VML, ``mso-`` styles, table attributes. A refusal leaves the
email byte for byte as MJML made it, or stops that one message with a reason the operator
can read. The parser is lexbor (selectolax), a WHATWG HTML parser: it builds the tree a
browser builds, so markup that confuses a lenient parser (CDATA in HTML, a ``<script>``
inside ``<math>``, unquoted attributes) is seen as the browser will see it. CSS is read
with tinycss2, which decodes CSS escapes (``\\6a avascript:``).
"""

from __future__ import annotations

import re

import tinycss2
from selectolax.lexbor import LexborHTMLParser, LexborNode

from automation.email.render_budget import RenderError

# Elements that run code, embed other documents, navigate, or change how links resolve.
REFUSED_ELEMENTS = {
    "applet": "runs code",
    "base": "changes where every link goes",
    "embed": "embeds other content",
    "form": "posts data from the email",
    "frame": "embeds another page",
    "frameset": "embeds other pages",
    "iframe": "embeds another page",
    "math": "is not supported in email and can carry script",
    "noembed": "is not supported in email",
    "object": "embeds other content",
    "portal": "embeds another page",
    "script": "runs code",
    "svg": "is not supported in most email clients and can carry script",
    "template": "is not supported in email",
}
_META_ALLOWED = {"content-type", "x-ua-compatible", "content-language"}
URL_ATTRIBUTES = {
    "action",
    "background",
    "cite",
    "codebase",
    "data",
    "dynsrc",
    "formaction",
    "href",
    "longdesc",
    "lowsrc",
    "ping",
    "poster",
    "src",
    "usemap",
    "xlink:href",
}
BAD_SCHEMES = {"javascript", "vbscript", "data", "livescript", "mocha", "jar"}
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")
_URL_NOISE = re.compile(r"[\t\n\r]")
_C0_AND_SPACE = "".join(map(chr, range(33)))
_CSS_FUNCTIONS_REFUSED = {"expression"}
_CSS_PROPERTIES_REFUSED = {"behavior", "-moz-binding"}


class UnsafeHtml(RenderError):
    """The rendered HTML carries something an email must not (the message is not sent)."""


def url_scheme(value: str) -> str | None:
    """The scheme a browser reads in ``value`` (an attribute value, entities decoded):
    leading and trailing spaces and controls dropped, tabs and newlines removed anywhere."""
    cleaned = _URL_NOISE.sub("", value.strip(_C0_AND_SPACE))
    match = _SCHEME.match(cleaned.lower())
    return match.group(1) if match else None


def _bad_url(value: str) -> bool:
    return url_scheme(value) in BAD_SCHEMES


def css_problems(css: str, *, declarations: bool) -> list[str]:
    """What is refused in a style attribute (``declarations``) or a <style> sheet."""
    lowered = css.lower()
    if not any(sign in lowered for sign in ("(", "\\", "behavior", "binding")):
        return []  # no function, no url(), no escape: nothing to look at (most inline styles)
    if declarations:
        nodes = tinycss2.parse_blocks_contents(css)
    else:
        nodes = tinycss2.parse_stylesheet(css, skip_comments=True, skip_whitespace=True)
    problems: list[str] = []
    stack = list(nodes)
    while stack:
        node = stack.pop()
        kind = node.type
        if kind == "error" and node.kind == "bad-url":
            problems.append("a url(...) CSS cannot read (a parenthesis or quote in it)")
        elif kind in ("url", "string") and _bad_url(node.value):
            problems.append(f"a {url_scheme(node.value)}: URL in CSS")
        elif kind == "function":
            if node.lower_name in _CSS_FUNCTIONS_REFUSED:
                problems.append(f"CSS {node.lower_name}()")
            stack.extend(node.arguments)
        elif kind == "declaration":
            if node.lower_name in _CSS_PROPERTIES_REFUSED:
                problems.append(f"the CSS property {node.lower_name}")
            stack.extend(node.value)
        elif kind == "qualified-rule":
            stack.extend(tinycss2.parse_blocks_contents(node.content))
            stack.extend(node.prelude)
        elif kind == "at-rule":
            stack.extend(node.prelude)
            if node.content is not None:
                stack.extend(tinycss2.parse_blocks_contents(node.content))
        elif kind in ("() block", "[] block", "{} block"):
            stack.extend(node.content)
    return problems


def _element_problems(node: LexborNode) -> list[str]:
    tag = node.tag or ""
    problems: list[str] = []
    why = REFUSED_ELEMENTS.get(tag)
    if why is not None:
        problems.append(f"<{tag}> ({why})")
    attributes = node.attributes
    if tag == "meta":
        equiv = (attributes.get("http-equiv") or "").strip().lower()
        if equiv and equiv not in _META_ALLOWED:
            problems.append(f'<meta http-equiv="{equiv}"> (it can reload or leave the page)')
    for name, value in attributes.items():
        if name.startswith("on"):
            problems.append(f"the event handler {name}= on <{tag}>")
        elif name == "srcdoc":
            problems.append(f"srcdoc= on <{tag}> (an embedded page)")
        elif value is None:
            continue
        elif name in URL_ATTRIBUTES and _bad_url(value):
            problems.append(f"a {url_scheme(value)}: URL in {name}= on <{tag}>")
        elif name == "srcset" and any(_bad_url(part) for part in value.split(",")):
            problems.append(f"a refused URL in srcset= on <{tag}>")
        elif name == "style":
            found = css_problems(value, declarations=True)
            problems.extend(f"{p} in style= on <{tag}>" for p in found)
    if tag == "style":
        found = css_problems(node.text(deep=True), declarations=False)
        problems.extend(f"{p} in <style>" for p in found)
    return problems


def html_problems(html: str, *, _depth: int = 0) -> list[str]:
    """Every refused construct in ``html``, as a browser would build it (an empty list when
    the HTML is fine). Outlook's conditional comments are read as the HTML they hold."""
    problems: list[str] = []
    tree = LexborHTMLParser(html)
    root = tree.root
    if root is None:
        return problems
    for node in root.traverse(include_text=True):
        tag = node.tag
        if tag == "-text":
            continue
        if tag == "-comment":
            content = node.comment_content or ""
            if _depth == 0 and content.lstrip().startswith("[if") and "<" in content:
                problems.extend(html_problems(content, _depth=1))
            continue
        problems.extend(_element_problems(node))
    return problems


def check_html(html: str) -> None:
    """Raise UnsafeHtml naming the first refused constructs of the rendered ``html``."""
    problems = html_problems(html)
    if problems:
        shown = "; ".join(dict.fromkeys(problems[:5]))
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise UnsafeHtml(f"the rendered HTML is refused: {shown}{more}")
