"""What the public endpoints' responses share: the no-store header, the one small page
(confirmations, unsubscribe, errors of a plain form post) and the client's address."""

from __future__ import annotations

from typing import Any

from flask import Response, render_template_string, request

NO_STORE = "no-store, no-cache, must-revalidate, max-age=0"

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{ title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}
button{font-size:1rem;padding:.5rem 1rem}</style></head><body><h1>{{ title }}</h1>
<p>{{ text }}</p>
{% if action %}<form method="post" action="{{ action }}">
{% for tag, label, checked in topics %}<p><label><input type="checkbox" name="topic"
 value="{{ tag }}"{% if checked %} checked{% endif %}> {{ label }}</label></p>
{% endfor %}
{% for name, label in buttons %}<button name="do" value="{{ name }}">{{ label }}</button>
{% endfor %}</form>{% endif %}</body></html>"""


def page(
    title: str, text: str, action: str = "", buttons: Any = (), status: int = 200, topics: Any = ()
) -> Any:
    html = render_template_string(
        PAGE, title=title, text=text, action=action, buttons=buttons, topics=topics
    )
    return Response(html, status=status, headers={"Cache-Control": NO_STORE})


def client_ip() -> str:
    return (request.remote_addr or "")[:45]
