"""How long each template bomb of the corpus (tests/template_bombs.py) runs before the
render budget refuses it, beside a floor measured in the same run: rendering the ~33 KB
newsletter of bench/send.py for one recipient (its skeleton is inert: no check per
recipient). Also what checking the rendered HTML
(automation/email/html_checks.py) costs for a recipient who needs it.

    .venv/bin/python bench/template_bombs.py            # 5 runs each, the median
    .venv/bin/python bench/template_bombs.py --smoke    # one run each (CI)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from template_bombs import BOMBS, template  # noqa: E402  # the corpus lives with the tests

from automation.email.html_checks import check_html  # noqa: E402
from automation.email.render import compile_version, render_email, tracking_urls  # noqa: E402
from automation.email.sandbox import HTML_ENV, RenderBudgetExceeded, render  # noqa: E402
from automation.signing import TokenSigner  # noqa: E402
from bench.send import compiled_template, contact  # noqa: E402

RECIPIENT = {"contact": {"email": "bob@example.com", "first_name": "Bob", "attributes": {}}}


def timed(fn, runs: int) -> float:
    """The median wall time of ``runs`` calls, in milliseconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def refuse(source: str) -> str:
    try:
        render(HTML_ENV.from_string(template(source)), RECIPIENT)
    except RenderBudgetExceeded as exc:
        return exc.message
    raise AssertionError(f"not refused: {source[:60]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="one run each (CI)")
    parser.add_argument("--url", help="unused: the smoke test passes every bench a database")
    args = parser.parse_args()
    runs = 1 if args.smoke else args.runs

    version = compile_version(compiled_template())
    tokens = TokenSigner("bench-" + "k" * 40).for_message(1, 0x5EED, version.id)
    urls = tracking_urls(tokens, "https://mail.example.com", len(version.links))
    email = render_email(version, contact(1), urls)
    for _ in range(20):  # warm up
        render_email(version, contact(1), urls)
    floor = timed(lambda: render_email(version, contact(1), urls), max(runs, 20))
    check = timed(lambda: check_html(email.html), max(runs, 20))

    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; median of {runs} run(s)"
    )
    print(
        f"floor: render of the {len(email.html) / 1024:.0f} KB newsletter for one recipient "
        f"(subject, HTML, text): {floor:8.2f} ms"
    )
    print(f"  check_html of that HTML, for a recipient who needs it: {check:8.2f} ms")
    print(f"{'bomb':30} {'kind':6} {'refused after':>13} {'vs floor':>8}  budget says")
    slowest = 0.0
    for name, (kind, source) in BOMBS.items():
        says = refuse(source)
        ms = timed(lambda source=source: refuse(source), runs)
        slowest = max(slowest, ms)
        print(f"{name:30} {kind:6} {ms:10.2f} ms {ms / floor:8.1f}  {says[:60]}")
    print(f"slowest refusal: {slowest:.1f} ms ({slowest / floor:.0f} times the floor)")


if __name__ == "__main__":
    main()
