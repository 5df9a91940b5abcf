"""Compile a template version once: check it, turn MJML into HTML with its Jinja kept, number
its links for click tracking, place the open pixel and derive the plain-text part.

MJML never sees Jinja: every ``{{ … }}``, ``{% … %}`` and ``{# … #}`` is first replaced by
an opaque alphanumeric placeholder, which survives MJML and the text extraction untouched
and is put back afterwards. A Jinja tag that stands between MJML elements (a loop around
sections, say) is wrapped in ``<mj-raw>`` so MJML keeps it in place.

Every problem carries the line and column of the MJML source it was found in.

This module runs the steps in order; each lives in a module of its own: ``jinja_source``
(placeholders and the Jinja checks), ``mjml_checks``, ``renderer`` (mjml-python and the
fonts), ``links`` (click tracking) and ``text_part``, over ``problems`` (what a check found,
and where).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jinja2.exceptions import TemplateSyntaxError

from automation.email.html_checks import check_html
from automation.email.jinja_source import Placeholders, check_jinja, map_offset
from automation.email.links import LINK_MARKER, OPEN_MARKER, RESERVED, classify_links
from automation.email.mjml_checks import MjmlChecker
from automation.email.problems import Problem
from automation.email.render import LANGUAGE_SLOT, PREHEADER_SLOT, SUBJECT_SLOT
from automation.email.renderer import RENDERER, render_mjml
from automation.email.sandbox import (
    CHECK_HTML_ENV,
    CHECK_TEXT_ENV,
    HTML_ENV,
    TEXT_ENV,
    RenderBudgetExceeded,
    RenderError,
    render,
)
from automation.email.text_part import derive_text

__all__ = [
    "LINK_MARKER",
    "CompileResult",
    "CompiledTemplate",
    "Draft",
    "Problem",
    "compile_template",
]

log = logging.getLogger(__name__)

MAX_HTML_BYTES = 100 * 1024  # Gmail clips messages above ~102 KB
MAX_SOURCE = 500_000
MAX_SUBJECT = 500
MAX_PREHEADER = 500


@dataclass(frozen=True)
class Draft:
    subject: str
    preheader: str
    mjml: str
    marketing: bool


@dataclass(frozen=True)
class CompiledTemplate:
    html: str
    text: str
    links: list[dict[str, Any]]
    html_bytes: int


@dataclass
class CompileResult:
    compiled: CompiledTemplate | None = None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


_PIXEL = (
    f'<img src="{OPEN_MARKER}" width="1" height="1" alt="" border="0" '
    'style="display:block;height:1px;width:1px;border:0;margin:0;padding:0" />'
)


_HONEYPOT = (
    '<a href="{}" tabindex="-1" aria-hidden="true" style="display:none;font-size:0;'
    'line-height:0;max-height:0;overflow:hidden;mso-hide:all"></a>'
)


def compile_template(
    draft: Draft, *, known_fields: Iterable[str], sample: dict[str, Any]
) -> CompileResult:
    """Check and compile a draft; the sample context is used for a trial render."""
    result = CompileResult()
    fields = set(known_fields)
    for path, value, limit in (
        ("subject", draft.subject, MAX_SUBJECT),
        ("preheader", draft.preheader, MAX_PREHEADER),
        ("mjml", draft.mjml, MAX_SOURCE),
    ):
        if len(value) > limit:
            result.errors.append(Problem(path, f"longer than {limit:,} characters"))
    if not draft.subject.strip():
        result.errors.append(Problem("subject", "a subject is required"))
    for path, value in (
        ("subject", draft.subject),
        ("preheader", draft.preheader),
        ("mjml", draft.mjml),
    ):
        if RESERVED in value:
            result.errors.append(Problem(path, f"{RESERVED!r} is reserved for tracking links"))
    if "\n" in draft.subject or "\r" in draft.subject:
        result.errors.append(Problem("subject", "the subject must be one line"))
    if result.errors:
        return result
    for path, source, html in (
        ("subject", draft.subject, False),
        ("preheader", draft.preheader, True),
        ("mjml", draft.mjml, True),
    ):
        _ast, problems = check_jinja(source, path, known_fields=fields, html=html)
        result.errors.extend(problems)
    if result.errors:
        return result

    ph = Placeholders()
    text, mapping = ph.hide(draft.mjml)
    checker = MjmlChecker(text, ph, mapping, draft.mjml)
    checker.feed(text)
    checker.finish()
    result.errors.extend(checker.errors)
    result.warnings.extend(checker.warnings)
    if draft.preheader.strip() and checker.has_preview:
        result.errors.append(
            Problem("preheader", "the MJML has its own <mj-preview>; leave the preheader empty")
        )
    if result.errors:
        return result

    text = _with_slots(text, ph, checker)
    # A placeholder in the body's text travels as a comment: css-inline (for mj-style
    # inline) parses the HTML as a browser does and would move bare text out of a table,
    # so a {% for %} around table rows would end up before the table. Comments stay put.
    for name in checker.in_body_text:
        comment = f"<!--{name}-->"
        text = text.replace(
            name, f"<mj-raw>{comment}</mj-raw>" if name in checker.structural else comment
        )
    try:
        compiled_html = render_mjml(text, checker.fonts)
        compiled_html = re.sub(f"<!--({ph.pattern.pattern})-->", r"\1", compiled_html)
    except Exception:  # mjml-python asserts on input its checks let through
        # Its messages ("Not yet implemented", how to install extras) are for developers.
        log.exception("mjml-python failed on a template that passed the checks")
        line, col = checker.slines.position(map_offset(mapping, checker.body_offset or 0))
        result.errors.append(
            Problem("mjml", f"{RENDERER} cannot compile this template's MJML", line, col)
        )
        return result

    tracked_html, links, has_unsubscribe, dynamic = classify_links(compiled_html, ph)
    body_line, body_col = checker.slines.position(map_offset(mapping, checker.body_offset or 0))
    if draft.marketing and not has_unsubscribe:
        result.errors.append(
            Problem(
                "mjml",
                'a marketing email needs an unsubscribe link: <a href="{{ unsubscribe_url }}">',
                body_line,
                body_col,
            )
        )
    for href in dynamic[:10]:
        result.warnings.append(
            Problem("mjml", f"link {href[:120]!r} depends on the contact and is not click-tracked")
        )
    text_part = ph.restore(derive_text(tracked_html, ph))
    # The honeypot: a tracked link no person can see or reach (hidden, empty, out of the
    # tab order, absent from the text part). Only a machine following every href in the
    # HTML clicks it, so ingestion classifies that message's hits as `scanner`.
    links.append({"index": len(links), "url": "", "text": "", "honeypot": True})
    trap = _HONEYPOT.format(LINK_MARKER.format(len(links) - 1))
    final_html = ph.restore(
        tracked_html.replace("</body>", trap + _PIXEL + "\n</body>", 1)
        if "</body>" in tracked_html
        else tracked_html + trap + _PIXEL
    )
    final_html = _with_preheader(final_html)
    size = len(final_html.encode())
    if size > MAX_HTML_BYTES:
        result.errors.append(
            Problem(
                "mjml",
                f"the HTML is {size / 1024:.0f} KB; keep it under {MAX_HTML_BYTES // 1024} KB "
                "(Gmail clips larger messages)",
            )
        )
    for path, source, env in (
        ("mjml", final_html, HTML_ENV),
        ("mjml", text_part, TEXT_ENV),
    ):
        try:
            env.from_string(source)
        except TemplateSyntaxError as exc:
            result.errors.append(
                Problem(
                    path,
                    "after compiling, the Jinja tags no longer fit together (are some inside "
                    f"HTML comments or hidden elements?): {exc.message}",
                )
            )
    if result.errors:
        return result

    _trial_render(draft, sample, result)
    if result.errors:
        return result
    result.compiled = CompiledTemplate(final_html, text_part, links, size)
    _check_rendered_size(result.compiled, sample, result)
    if result.errors:
        result.compiled = None
    return result


# What differs from one message of a version to the next goes into the compiled HTML as
# render.py's slots (the subject as the title when the template has none, the preheader,
# the language), which it fills per message: a campaign variant's subject and preheader
# are applied there, at send, and are never compiled into a version.
# MJML's own <mj-preview> is coloured white, which spam filters score as hidden text
# (SpamAssassin's HTML_FONT_LOW_CONTRAST): hidden without a colour, as ours is.
_MJML_PREVIEW_STYLE = (
    "display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0px;"
    "max-width:0px;opacity:0;overflow:hidden;"
)
_PREVIEW_STYLE = (
    "display:none;font-size:1px;line-height:1px;max-height:0px;max-width:0px;"
    "opacity:0;overflow:hidden;mso-hide:all;"
)
_PREHEADER = (
    f'{{% if {PREHEADER_SLOT} %}}<div style="{_PREVIEW_STYLE}">{{{{ {PREHEADER_SLOT} }}}}</div>'
    "{% endif %}"
)


def _with_slots(text: str, ph: Placeholders, checker: MjmlChecker) -> str:
    """The MJML (placeholders in) with the title and the language filled in by render.py,
    where the template does not set them itself."""
    head = (
        "" if checker.has_title else f"<mj-title>{ph.new('{{ ' + SUBJECT_SLOT + ' }}')}</mj-title>"
    )
    if head:
        at = checker.head_content_at
        if at is not None:
            # Into the template's own <mj-head>: MJML reads only the first head, so a
            # second one would drop the template's attributes, styles, fonts and title.
            text = text[:at] + head + text[at:]
        else:
            text = re.sub(
                r"<mjml\b[^>]*>", lambda m: m.group() + f"<mj-head>{head}</mj-head>", text, count=1
            )
    language = ph.new("{{ " + LANGUAGE_SLOT + " }}")
    return re.sub(
        r"<mjml\b([^>]*)>",
        lambda m: (
            m.group()
            if re.search(r"\slang\s*=", m.group(1))
            else f'<mjml lang="{language}"{m.group(1)}>'
        ),
        text,
        count=1,
    )


def _with_preheader(html: str) -> str:
    """The preheader's hidden block first in the body, and MJML's own one uncoloured."""
    html = html.replace(_MJML_PREVIEW_STYLE, _PREVIEW_STYLE)
    match = re.search(r"<body\b[^>]*>", html)
    if match is None:
        return _PREHEADER + html
    return html[: match.end()] + _PREHEADER + html[match.end() :]


def _trial_render(draft: Draft, sample: dict[str, Any], result: CompileResult) -> None:
    """Render the sources themselves against the sample, so that runtime problems and
    empty placeholders are reported with source lines; and against another contact, whose
    render must stay within the budget too."""
    other = _other_contact(sample)
    for path, source, env in (
        ("subject", draft.subject, CHECK_TEXT_ENV),
        ("preheader", draft.preheader, CHECK_HTML_ENV),
        ("mjml", draft.mjml, CHECK_HTML_ENV),
    ):
        template = env.from_string(source)
        try:
            rendered = render(template, sample)
        except RenderError as exc:
            result.errors.append(Problem(path, exc.message, exc.line))
            continue
        for name, line in rendered.undefined:
            result.warnings.append(
                Problem(path, f"{name!r} is empty for the sample contact; add | default(…)", line)
            )
        try:
            render(template, other)
        except RenderBudgetExceeded as exc:
            message = f"for a contact other than the sample, {exc.message}"
            result.errors.append(Problem(path, message, exc.line))
        except RenderError:
            pass  # another contact may lack what the sample has: send time reports that


def _other_contact(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample context with a contact unlike the sample one (other address, no name,
    tags or attributes): a template whose cost hides behind ``{% if contact.email !=
    'ada@example.com' %}`` shows it at save for this one."""
    contact = dict(sample.get("contact") or {})
    contact.update(
        email="someone.else@example.org",
        first_name="",
        last_name="",
        full_name="",
        external_id=None,
        score=0,
        tags=[],
        attributes={},
    )
    return {**sample, "contact": contact}


def _check_rendered_size(
    compiled: CompiledTemplate, sample: dict[str, Any], result: CompileResult
) -> None:
    """The compiled HTML rendered for the sample as it will be sent: within Gmail's size,
    and passing check_html."""
    html = HTML_ENV.from_string(compiled.html)
    try:
        rendered = render(html, sample)
        check_html(rendered.output)
    except RenderError as exc:
        result.errors.append(Problem("mjml", exc.message))
        return
    # Each marker becomes a tracking URL of about 80 characters.
    size = len(rendered.output.encode()) + 60 * (len(compiled.links) + 1)
    if size > MAX_HTML_BYTES:
        result.errors.append(
            Problem(
                "mjml",
                f"for the sample contact the HTML is {size / 1024:.0f} KB; keep it under "
                f"{MAX_HTML_BYTES // 1024} KB (Gmail clips larger messages)",
            )
        )
