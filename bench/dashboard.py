"""The dashboard's queries over a large events table on PostgreSQL.

Generates contacts and email engagement events spread over 90 days (a tenth of the opens
flagged ``machine``), then times each query the dashboard runs, beside a floor measured
in the same run: a hand-written GROUP BY over the same rows with no machine filter.

    .venv/bin/python bench/dashboard.py --events 1000000
    .venv/bin/python bench/dashboard.py --smoke          # smoke run (CI)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, text

from automation import wiring
from automation.contacts import activity
from automation.db import Base, make_engine, make_session_factory

DEFAULT_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"

FILL = """
INSERT INTO contacts (email, first_name, last_name, status, time_zone, lifecycle_stage, score,
                      attributes, source, emails_sent, opens, clicks, engagement_score,
                      created_at, updated_at)
SELECT 'c' || i || '@example.com', '', '', 'subscribed', 'UTC', 'subscriber', 0, '{}', 'bench',
       0, 0, 0, 0, now() - (i % 90) * interval '1 day', now()
FROM generate_series(1, :contacts) AS i;

INSERT INTO events (contact_id, name, properties, occurred_at, received_at, source)
SELECT 1 + (i % :contacts),
       (ARRAY['email.sent', 'email.sent', 'email.sent', 'email.opened', 'email.opened',
              'email.clicked', 'email.unsubscribed', 'page_viewed'])[1 + i % 8],
       CASE WHEN i % 8 IN (3, 4) AND i % 10 = 0 THEN '{"machine": true}'::jsonb
            ELSE '{"machine": false}'::jsonb END,
       now() - (i % 90) * interval '1 day' - (i % 86400) * interval '1 second',
       now(), 'bench'
FROM generate_series(1, :events) AS i;
ANALYZE contacts;
ANALYZE events;
"""

FLOOR = """
SELECT name, occurred_at::date, count(*) FROM events
WHERE name IN ('email.sent', 'email.opened', 'email.clicked', 'email.unsubscribed')
  AND occurred_at >= now() - interval '30 days'
GROUP BY name, occurred_at::date
"""


def best_of(runs: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times) if runs < 3 else statistics.median(times)


def captured_query(engine: Any, session: Any) -> tuple[str, Any]:
    """The SQL and parameters daily_event_counts sends, to EXPLAIN it as it runs."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", record)
    try:
        activity.daily_event_counts(session, activity.ENGAGEMENT_EVENTS, days=30)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen[-1]


def main() -> None:
    wiring.install()  # reactions, references and every model, as build_runtime does
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--smoke", action="store_true", help="a few thousand rows, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.contacts = 4000, 200
    engine = make_engine(args.url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        for statement in FILL.split(";"):
            if statement.strip():
                conn.execute(text(statement), {"contacts": args.contacts, "events": args.events})
    print(
        f"{platform.node()} · {args.events:,} events, {args.contacts:,} contacts "
        f"(generated in {time.perf_counter() - started:.1f} s)"
    )
    sessions = make_session_factory(engine)
    runs = 1 if args.smoke else 5
    with sessions() as session:
        figures = {
            "floor: hand-written GROUP BY, 30 days, no machine filter": best_of(
                runs, lambda: session.execute(text(FLOOR)).all()
            ),
            "daily_event_counts, 30 days, people only": best_of(
                runs,
                lambda: activity.daily_event_counts(session, activity.ENGAGEMENT_EVENTS, days=30),
            ),
            "daily_event_counts, 90 days, people only": best_of(
                runs,
                lambda: activity.daily_event_counts(session, activity.ENGAGEMENT_EVENTS, days=90),
            ),
            "daily_new_contacts, 30 days": best_of(
                runs, lambda: activity.daily_new_contacts(session, days=30)
            ),
            "overview (contacts by status, 7-day counts)": best_of(
                runs, lambda: activity.overview(session, since=activity.day_range(7)[1])
            ),
            "top_event_names, 30 days": best_of(
                runs, lambda: activity.top_event_names(session, since=activity.day_range(30)[1])
            ),
            "recent_events": best_of(runs, lambda: activity.recent_events(session)),
        }
        floor = next(iter(figures.values()))
        for name, seconds in figures.items():
            print(f"{name:<58} {seconds * 1000:9.1f} ms  {seconds / floor:5.2f}x floor")
        print("plans (key lines):")
        for label, statement, params in (
            ("floor", FLOOR, {}),
            ("daily_event_counts", *captured_query(engine, session)),
        ):
            plan = session.connection().exec_driver_sql("EXPLAIN " + statement, params)
            for (line,) in plan:
                if any(k in line for k in ("Scan", "Aggregate", "Filter", "Index Cond")):
                    print(f"  {label}: {line.strip()}")
    engine.dispose()


if __name__ == "__main__":
    main()
