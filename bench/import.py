"""Import N generated contacts from a CSV into PostgreSQL through the real importer.

Prints rows/s and the peak memory of the import, beside a floor measured in the same
run: the same rows written by a bare multi-row INSERT with no validation or upsert.

    .venv/bin/python bench/import.py --rows 100000
    .venv/bin/python bench/import.py --smoke          # smoke run (CI)
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, text

from automation import clock, wiring
from automation.contacts.importer import ImportPermission, import_contacts
from automation.contacts.models import Contact, CustomField, FieldType, ImportBasis
from automation.db import Base, make_engine, make_session_factory

CONSENT = ImportPermission(ImportBasis.CONSENT, "bench: consent given at signup")

DEFAULT_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"


def write_csv(path: Path, rows: int) -> None:
    zones = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC"]
    with path.open("w") as fh:
        fh.write("Email,First Name,Last Name,Time Zone,Plan,Seats,Tags\n")
        for i in range(rows):
            fh.write(
                f"user{i}@example.com,First{i},Last{i},{zones[i % 4]},"
                f"{['free', 'pro'][i % 2]},{i % 50},tag{i % 5};all\n"
            )


def reset(engine) -> None:
    Base.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    Base.metadata.create_all(engine)


def main() -> None:
    wiring.install()  # reactions, references and every model, as build_runtime does
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--smoke", action="store_true", help="a few hundred rows, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.rows = 300
    engine = make_engine(args.url)
    sessions = make_session_factory(engine)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "contacts.csv"
        write_csv(path, args.rows)
        size_mb = path.stat().st_size / 1e6

        # Floor: bare multi-row INSERT of the same contacts, batches of 1000.
        reset(engine)
        now = clock.now()
        started = time.perf_counter()
        with sessions() as s:
            batch = []
            for i in range(args.rows):
                batch.append(
                    {
                        "email": f"user{i}@example.com",
                        "first_name": f"First{i}",
                        "last_name": f"Last{i}",
                        "time_zone": "UTC",
                        "attributes": {"plan": "pro", "seats": i % 50},
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                if len(batch) == 1000:
                    s.execute(insert(Contact), batch)
                    batch = []
            if batch:
                s.execute(insert(Contact), batch)
            s.commit()
        floor = time.perf_counter() - started

        reset(engine)
        with sessions() as s:
            s.add_all(
                [
                    CustomField(
                        name="plan",
                        label="Plan",
                        type=FieldType.CHOICE,
                        options=["free", "pro"],
                        created_at=now,
                    ),
                    CustomField(name="seats", label="Seats", type=FieldType.NUMBER, created_at=now),
                ]
            )
            s.commit()
        started = time.perf_counter()
        with sessions() as s, path.open("rb") as stream:
            report = import_contacts(s, stream, permission=CONSENT, on_batch=lambda _r: s.commit())
            s.commit()
        elapsed = time.perf_counter() - started

        started = time.perf_counter()
        with sessions() as s, path.open("rb") as stream:
            again = import_contacts(s, stream, permission=CONSENT, on_batch=lambda _r: s.commit())
            s.commit()
        reimport = time.perf_counter() - started

    assert report.created == args.rows and report.failed == 0, report.as_dict()
    assert again.unchanged == args.rows
    print(f"machine: {platform.node()} {platform.machine()}, python {platform.python_version()}")
    print(f"rows: {args.rows:,}  file: {size_mb:.1f} MB")
    print(
        f"import:     {elapsed:6.2f} s  {args.rows / elapsed:9,.0f} rows/s  "
        f"(validation, upsert by email, tags, consent records)"
    )
    print(f"re-import:  {reimport:6.2f} s  {args.rows / reimport:9,.0f} rows/s  (all unchanged)")
    print(f"floor:      {floor:6.2f} s  {args.rows / floor:9,.0f} rows/s  (bare INSERT batches)")
    print(f"ratio import/floor time: {elapsed / floor:.2f}x")
    print(f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB")
    engine.dispose()


if __name__ == "__main__":
    main()
