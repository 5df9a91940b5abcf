"""WSGI entry point for gunicorn: `gunicorn web.wsgi:app`."""

from automation.processes import keep_out_of_collector
from web import create_app

app = create_app()
keep_out_of_collector()
