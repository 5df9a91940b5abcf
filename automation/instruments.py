"""The Prometheus counters and histograms that the work updates where it happens.

They live in the kernel so any floor may count without importing the read side
(``ops/metrics.py`` renders them beside the gauges it reads from the database at scrape
time). Under gunicorn or Celery prefork set PROMETHEUS_MULTIPROC_DIR so every worker
process's counts are summed.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES = Counter("nurture_messages_total", "Messages finished by the sender", ["status"])
HELD = Counter(
    "nurture_messages_held_total",
    "Messages held back at claim time (suppressed, capped, template deleted)",
    ["reason"],
)
TRACKING_HITS = Counter("nurture_tracking_hits_total", "Tracking hits", ["kind", "verdict"])
RENDER_ERRORS = Counter("nurture_render_errors_total", "Template renders that failed")
BATCH_SECONDS = Histogram("nurture_batch_seconds", "Duration of a batch job", ["job"])
BATCH_SIZE = Histogram(
    "nurture_batch_size",
    "Items in a batch",
    ["job"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)

COUNTERS = (MESSAGES, HELD, TRACKING_HITS, RENDER_ERRORS, BATCH_SECONDS, BATCH_SIZE)
