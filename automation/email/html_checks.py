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
inside ``<math>``, unquoted attributes) is seen as the browser will see it. Outlook's
conditional comments are read tag by tag (Python's HTML tokenizer), as Outlook's Word
engine reads them, context or not. CSS is read with tinycss2, which decodes CSS escapes
(``\\6a avascript:``).
"""

from __future__ import annotations

import functools
import re
from html.parser import HTMLParser

import tinycss2
from selectolax.lexbor import LexborHTMLParser, LexborNode

from automation.email.jinja_source import Placeholders
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


@functools.lru_cache(maxsize=2048)
def css_problems(css: str, *, declarations: bool) -> tuple[str, ...]:
    """What is refused in a style attribute (``declarations``) or a <style> sheet. Cached:
    a template's styles are the same for every recipient, and tinycss2 is pure Python."""
    lowered = css.lower()
    if not any(sign in lowered for sign in ("(", "\\", "behavior", "binding")):
        return ()  # no function, no url(), no escape: nothing to look at (most inline styles)
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
    return tuple(problems)


def _element_problems(node: LexborNode) -> list[str]:
    tag = node.tag or ""
    style = node.text(deep=True) if tag == "style" else None
    return _problems(tag, node.attributes, style)


def _problems(tag: str, attributes: dict[str, str | None], style: str | None) -> list[str]:
    """What is refused in one element: its tag, its attributes, its CSS."""
    problems: list[str] = []
    why = REFUSED_ELEMENTS.get(tag)
    if why is not None:
        problems.append(f"<{tag}> ({why})")
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
    if style is not None:
        found = css_problems(style, declarations=False)
        problems.extend(f"{p} in <style>" for p in found)
    return problems


class _Tokens(HTMLParser):
    """Every tag of a fragment as the tokenizer reads it, whatever its context: a
    conditional comment is read by Outlook's Word engine, not a browser, and is often half
    a table (a <td> a browser would drop outside one)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._style: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.problems.extend(_problems(tag, dict(attrs), None))
        if tag == "style":
            self._style = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.problems.extend(_problems(tag, dict(attrs), None))

    def handle_data(self, data: str) -> None:
        if self._style is not None:
            self._style.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._end_style()

    def _end_style(self) -> None:
        if self._style is not None:
            self.problems.extend(_problems("style", {}, "".join(self._style)))
            self._style = None

    def close(self) -> None:
        super().close()
        self._end_style()


# Outlook's conditional comments, dozens in every MJML email, are almost all tables and VML
# with plain styles. One with nothing but such tags, no character that can start an entity,
# an escape or a CSS function, no on…= and no scheme word cannot hold anything refused, and
# is not parsed (a parse each would cost more than the rest of the check).
_TAG_NAME = re.compile(r"<\s*/?\s*([a-zA-Z][^\s/>]*)")
_QUIET_TAGS = {"table", "tbody", "thead", "tr", "td", "th", "div", "p", "span", "center", "br",
               "xml", "noscript", "style"}  # fmt: skip
_LOUD = ("&", "\\", "(", "srcdoc", "expression", "behavio", "binding")
_SCHEME_WORDS = ("javascript", "vbscript", "livescript", "mocha", "data:", "jar:")


def _quiet_conditional(content: str) -> bool:
    lowered = content.lower()
    if any(word in lowered for word in _LOUD) or _has_handler(lowered):
        return False
    squeezed = _URL_NOISE.sub("", lowered)
    if any(word in squeezed for word in _SCHEME_WORDS):
        return False
    return all(
        name in _QUIET_TAGS or name.startswith(("v:", "o:", "w:"))
        for name in _TAG_NAME.findall(lowered)
    )


_BEFORE_ON = ("\t", "\n", "\f", "\r", " ", "/", '"', "'")
_ON_REST = re.compile(r"on[^\t\n\f\r />=]*[\t\n\f\r ]*=")


def _has_handler(lowered: str) -> bool:
    """Whether lowercased HTML may hold an on…= attribute: the tokenizer reads one only
    after a space, a slash or a quote. A few scans in C, then a look at each hit."""
    for before in _BEFORE_ON:
        at = lowered.find(before + "on")
        while at >= 0:
            if _ON_REST.match(lowered, at + 1):
                return True
            at = lowered.find(before + "on", at + 1)
    return False


# The elements worth a look, picked by lexbor's selectors (in C) rather than a walk in
# Python over every element of every recipient's HTML: refused tags, URL attributes,
# srcset, srcdoc, meta http-equiv, <style>, and style attributes with a parenthesis, a
# backslash or a refused property's name in them (entities already decoded). Any other
# element can only be refused for an on…= attribute, and the tokenizer reads one only
# after a space, a slash or a quote: when the source has none such, nothing else is walked.
_CANDIDATES = ", ".join(
    [
        *sorted(REFUSED_ELEMENTS),
        *(f"[{name}]" for name in sorted(URL_ATTRIBUTES) if ":" not in name),  # xlink: svg
        "[srcset]",
        "[srcdoc]",
        "meta[http-equiv]",
        "style",
        '[style*="("]',
        '[style*="\\\\"]',
        '[style*="behavior" i]',
        '[style*="binding" i]',
    ]
)


def html_problems(html: str, *, walk: bool = False) -> list[str]:
    """Every refused construct in ``html``, as a browser would build it (an empty list when
    the HTML is fine). Outlook's conditional comments are read as the HTML they hold.
    ``walk`` looks at every element and every conditional comment (what the shortcuts
    must agree with)."""
    problems: list[str] = []
    root = LexborHTMLParser(html).root
    if root is None:
        return problems
    if walk or _has_handler(html.lower()):
        nodes = [node for node in root.traverse() if node.tag and node.tag[0] != "-"]
    else:
        nodes = root.css(_CANDIDATES)
    for node in nodes:
        problems.extend(_element_problems(node))
    conditionals = [
        content
        for node in root.traverse(include_text=True)
        if node.tag == "-comment"
        and (content := node.comment_content or "").lstrip().startswith("[if")
        and "<" in content
    ]
    # Quiet together is quiet each (the test is "nothing loud anywhere"): one look for all.
    if walk or not _quiet_conditional("\n".join(conditionals)):
        for content in conditionals:
            if walk or not _quiet_conditional(content):
                problems.extend(_fragment_problems(content))
    return problems


def _fragment_problems(html: str) -> list[str]:
    """A conditional comment's content, tag by tag."""
    tokens = _Tokens()
    tokens.feed(html)
    tokens.close()
    return tokens.problems


# --- the shortcut for recipients whose HTML cannot differ in anything that matters --------

_OWN_URL = re.compile(
    r"\{\{-?\s*(unsubscribe_url|preferences_url|view_in_browser_url|confirm_url)\s*-?\}\}"
)
_RAWTEXT = {"iframe", "noembed", "noframes", "noscript", "plaintext", "script", "style", "xmp"}
_RCDATA = {"textarea", "title"}
_SAFE_START = re.compile(r"[\x00-\x20]*(?:https?|mailto|tel):", re.IGNORECASE)
# Attributes whose value means more than text (URLs, CSS, markup, how a tag behaves).
_MEANINGFUL = URL_ATTRIBUTES | {"content", "http-equiv", "rel", "srcdoc", "srcset", "style", "type"}


def inert_skeleton(compiled_html: str) -> bool:
    """Whether every recipient's HTML passes check_html when this compiled HTML (Jinja in
    it) does with its Jinja replaced by placeholders, as long as every output of the render
    was escaped text (Budget.unescaped is False): the check then needs no rerun per
    recipient.

    True when each control tag (``{% … %}``) stands in plain text, and each output
    (``{{ … }}``) in plain text, the text of a <title>/<textarea>, a quoted attribute
    value that is only text (``alt``, ``title``, ``aria-label``; not a URL, CSS, a handler
    or ``content``), or is one of our own URLs as a whole URL attribute. Escaped text holds
    no ``<``, ``>`` or quote, so it cannot open or end a tag, a comment or an attribute; a
    placeholder right after a static ``<`` lands in a tag name or a comment, not in text,
    and so is not counted. And since no control tag stands inside an element the
    tokenizer reads as raw text (script, style, textarea, title …), every stretch of
    static HTML between them is read the same way whichever branches run and however
    often a loop repeats: its tags are the skeleton's,
    already checked."""
    placeholders = Placeholders()
    hidden, _ = placeholders.hide(compiled_html)
    total = len(placeholders.found(hidden))
    if html_problems(hidden, walk=True):
        return False
    root = LexborHTMLParser(hidden).root
    if root is None:
        return total == 0
    counted = 0
    for node in root.traverse(include_text=True):
        tag = node.tag or ""
        if tag == "-text":
            parent = (node.parent.tag if node.parent is not None else None) or ""
            for name in placeholders.found(node.text_content or ""):
                output = placeholders.jinja[name].startswith("{{")
                if parent not in _RAWTEXT and (parent not in _RCDATA or output):
                    counted += 1
        elif tag and tag[0] != "-":
            for attribute, given in node.attributes.items():
                value = given or ""
                names = placeholders.found(value)
                if not names:
                    continue
                quoted = f'="{value}"' in hidden or f"='{value}'" in hidden
                outputs = all(placeholders.jinja[n].startswith("{{") for n in names)
                if attribute in URL_ATTRIBUTES:
                    own = value in placeholders.jinja and _OWN_URL.fullmatch(
                        placeholders.jinja[value]
                    )
                    # A static "https:" (or mailto:, tel:) before any Jinja fixes the scheme.
                    fixed = _SAFE_START.match(value.split(names[0], 1)[0])
                    if own or (fixed and quoted and outputs):
                        counted += len(names)
                elif (
                    attribute not in _MEANINGFUL
                    and not attribute.startswith("on")
                    and outputs
                    and quoted
                ):
                    counted += len(names)  # escaped text in a quoted, inert value
    return counted == total


def check_html(html: str) -> None:
    """Raise UnsafeHtml naming the first refused constructs of the rendered ``html``."""
    problems = html_problems(html)
    if problems:
        shown = "; ".join(dict.fromkeys(problems[:5]))
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise UnsafeHtml(f"the rendered HTML is refused: {shown}{more}")
