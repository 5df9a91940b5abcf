"""The engine: claim due enrolments in batches and move each batch node by node, set-wise,
until every contact in it waits, has sent, or has finished (docs/architecture.md, "How data flows").

A batch is claimed and moved in one transaction. On PostgreSQL the claim locks up to
``batch_size`` due rows (``FOR UPDATE SKIP LOCKED``, so concurrent workers take disjoint
batches); the new states are written with the journal, the contact updates and the queued
messages, and the commit releases the rows. A worker that dies mid-batch leaves nothing
behind: its connection closes, PostgreSQL rolls the transaction back, and the rows are due
again at once. One that hangs holding a batch loses it after ``HOLD_LIMIT`` idle in its
transaction (PostgreSQL ends the session). On SQLite a write takes the database's one write
lock first, so ticks run one after another.

The batch used to be leased in a transaction of its own (a token and an expiry stamped on
each row, committed, then moved): every row was written twice per batch, and a dead
worker's rows waited out the lease.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    DateTime,
    String,
    Text,
    cast,
    false,
    insert,
    literal,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from automation import clock
from automation import instruments as metrics
from automation.bulk import insert_rows, update_rows
from automation.db import UTCDateTime, int_array, is_postgres, one_of
from automation.reactions import react_to_contact_changes
from automation.workflows import nodes
from automation.workflows.batch import Batch, End, Item, Leave, Outcome, Park
from automation.workflows.goals import Open, goal_conversions
from automation.workflows.graph import Graph, graphs_for
from automation.workflows.models import (
    Enrollment,
    EnrollmentStatus,
    EnrollmentStep,
    WorkflowVersion,
    enrollment_sources,
)
from automation.workflows.sending import queue_workflow_messages
from automation.workflows.webhooks import HttpClient, UrllibClient

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
# The longest a worker may sit idle inside a batch's transaction before PostgreSQL ends its
# session and the batch is due again (a worker stuck between statements).
# (The worker passes Settings.workflow_hold_seconds, NURTURE_WORKFLOW_HOLD_SECONDS.)
HOLD_LIMIT = timedelta(seconds=300)
MAX_STEPS_PER_BATCH = 200  # validation forbids loops without a wait; this is a backstop
_default_http: HttpClient = UrllibClient()


@dataclass
class BatchReport:
    enrollments: int = 0
    steps: int = 0
    finished: int = 0
    messages: int = 0


@dataclass
class RunReport:
    batches: int = 0
    enrollments: int = 0
    steps: int = 0
    messages: int = 0
    more: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "enrollments": self.enrollments,
            "steps": self.steps,
            "messages": self.messages,
            "more": self.more,
        }


# --- claiming ----------------------------------------------------------------------------


def claim_due(
    session: Session, now: datetime, limit: int = BATCH_SIZE, hold_limit: timedelta | None = None
) -> tuple[list[Item], dict[int, str]]:
    """Lock up to ``limit`` due enrolments for the rest of this transaction: the items, and
    their versions' content digests (read in the same query, so cached graphs need no
    lookup of their own)."""
    if is_postgres(session):
        session.execute(
            text("SELECT set_config('idle_in_transaction_session_timeout', :limit, true)"),
            {"limit": f"{int((hold_limit or HOLD_LIMIT).total_seconds() * 1000)}ms"},
        )
    else:
        # No row locks: an empty write takes the database's write lock now, so a concurrent
        # tick waits until this one commits and then reads what it wrote.
        session.execute(update(Enrollment).where(false()).values(attempts=Enrollment.attempts))
    # Read through Core, the times as stored (naive UTC) and the context as its JSON text:
    # the ORM's row processing, a type decorator call per time and a JSON parse per row
    # were half of a batch's Python time. Contexts repeat (everyone a segment or a bulk
    # enrolment brought in has the same one), so each distinct text is parsed once; items
    # share the parsed dict, which nothing mutates in place (a node replaces it).
    rows = session.connection().execute(
        select(
            Enrollment.id,
            Enrollment.workflow_id,
            Enrollment.contact_id,
            Enrollment.workflow_version_id,
            Enrollment.current_node,
            type_coerce(Enrollment.waiting_since, DateTime()),
            type_coerce(Enrollment.next_run_at, DateTime()),
            Enrollment.waiting_event,
            Enrollment.resume_exit,
            Enrollment.attempts,
            cast(Enrollment.context, Text),
            type_coerce(Enrollment.enrolled_at, DateTime()),
            type_coerce(Enrollment.converted_at, DateTime()),
            WorkflowVersion.digest,
        )
        .outerjoin(WorkflowVersion, WorkflowVersion.id == Enrollment.workflow_version_id)
        .where(Enrollment.status == EnrollmentStatus.ACTIVE, Enrollment.next_run_at <= now)
        .order_by(Enrollment.next_run_at)
        .limit(limit)
        .with_for_update(of=Enrollment, skip_locked=True)
    )
    contexts: dict[str | None, dict[str, Any]] = {None: {}}
    digests: dict[int, str] = {}
    items = []
    for (
        id_,
        workflow_id,
        contact_id,
        version_id,
        node,
        waiting_since,
        next_run_at,
        waiting_event,
        resume_exit,
        attempts,
        context,
        enrolled_at,
        converted_at,
        digest,
    ) in sorted(rows.all(), key=itemgetter(0)):
        if context not in contexts:
            contexts[context] = json.loads(context) or {}
        if digest is not None:
            digests[version_id] = digest
        items.append(
            Item(
                id_,
                workflow_id,
                contact_id,
                version_id,
                node,
                waiting_since and waiting_since.replace(tzinfo=UTC),
                next_run_at and next_run_at.replace(tzinfo=UTC),
                waiting_event,
                resume_exit,
                attempts,
                contexts[context],
                enrolled_at.replace(tzinfo=UTC),
                converted_at and converted_at.replace(tzinfo=UTC),
            )
        )
    return items, digests


# --- moving a batch ----------------------------------------------------------------------


def advance(
    session: Session,
    items: list[Item],
    digests: dict[int, str],
    now: datetime,
    *,
    http: HttpClient | None = None,
) -> BatchReport:
    """Move every claimed enrolment as far as it can go now."""
    report = BatchReport(enrollments=len(items))
    if items:
        graphs = graphs_for(session, digests)
        batch = Batch(session, now, graphs, http or _default_http, items)
        _convert_goal_met(batch)
        report.steps = _run(batch)
        report.messages = len(batch.messages)
        report.finished = sum(1 for i in items if i.finished)
        _write_back(batch)
    return report


def _convert_goal_met(batch: Batch) -> None:
    by_version: dict[int, list[Item]] = defaultdict(list)
    for item in batch.items:
        graph = batch.graphs.get(item.version_id)
        if graph is not None and graph.settings.goal is not None:
            by_version[item.version_id].append(item)
    for version_id, items in by_version.items():
        met = goal_conversions(
            batch.session,
            batch.graphs[version_id],
            [Open(i.id, i.contact_id, i.enrolled_at, i.context) for i in items],
            batch.now,
        )
        for item in items:
            if item.id not in met:
                continue
            if item.open_visit:  # a contact not yet at a node has no visit to close
                batch.close_visit(item, item.node or "", "converted", None)
            item.waiting_since = None
            item.waiting_event = None
            _finish(batch, item, EnrollmentStatus.CONVERTED)


def _run(batch: Batch) -> int:
    """Move items node by node; each round runs every node once for all items at it."""
    steps = 0
    pending = [i for i in batch.items if not i.finished]
    while pending:
        groups: dict[tuple[int, str | None], list[Item]] = defaultdict(list)
        for item in pending:
            groups[(item.version_id, item.node)].append(item)
        pending = []
        batch.round += 1
        for (version_id, node_id), group in groups.items():
            graph = batch.graphs.get(version_id)
            steps += len(group)
            # Where each exit leads, looked up once for the group.
            exits = graph.node(node_id).exits() if graph and node_id in graph.nodes else {}
            for item, outcome in _execute(batch, graph, node_id, group):
                if _apply(batch, exits, item, outcome):
                    pending.append(item)
    return steps


def _execute(
    batch: Batch, graph: Graph | None, node_id: str | None, items: list[Item]
) -> list[tuple[Item, Outcome]]:
    if graph is None or node_id is None or node_id not in graph.nodes:
        detail = {"error": f"node {node_id!r} is not in this version"}
        return [(i, End(EnrollmentStatus.FAILED, "failed", detail)) for i in items]
    node = graph.node(node_id)
    try:
        if not nodes.runs_sql(node, items):
            return nodes.run_node(batch, graph, node, items)
        # A savepoint, so a node that fails (a bad condition, a database error) fails only
        # its own contacts and the rest of the batch still moves.
        with batch.session.begin_nested():
            return nodes.run_node(batch, graph, node, items)
    except Exception as exc:
        log.exception("workflow %s node %s failed", graph.workflow_id, node_id)
        detail = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        return [(i, End(EnrollmentStatus.FAILED, "failed", detail)) for i in items]


def _apply(batch: Batch, exits: dict[str, str | None], item: Item, outcome: Outcome) -> bool:
    """Record ``outcome`` for ``item``; True when it moved on to another node."""
    node_id = item.node or ""
    if isinstance(outcome, Park):
        if not item.open_visit:
            item.waiting_since = batch.now  # journaled when the contact leaves
        item.next_run_at = outcome.until
        item.waiting_event = outcome.waiting_event
        item.resume_exit = None
        if outcome.attempts is not None:
            item.attempts = outcome.attempts
        return False
    batch.close_visit(item, node_id, outcome.label, outcome.detail)
    item.waiting_since = None
    item.waiting_event = None
    item.resume_exit = None
    item.attempts = 0
    item.steps += 1
    if isinstance(outcome, End):
        _finish(batch, item, outcome.status)
        return False
    assert isinstance(outcome, Leave)
    target = exits.get(outcome.label)
    if target is None:
        status = EnrollmentStatus.CONVERTED if item.converted_at else EnrollmentStatus.COMPLETED
        _finish(batch, item, status)
        return False
    item.node = target
    if item.steps >= MAX_STEPS_PER_BATCH:
        item.next_run_at = batch.now  # yield: the next tick carries on
        return False
    return True


def _finish(batch: Batch, item: Item, status: EnrollmentStatus) -> None:
    item.status = status
    item.finished_at = batch.now
    item.next_run_at = None
    if status is EnrollmentStatus.CONVERTED and item.converted_at is None:
        item.converted_at = batch.now


def _write_back(batch: Batch) -> None:
    session, now = batch.session, batch.now
    if is_postgres(session):
        _write_back_postgres(batch)
    else:
        _write_back_portable(batch)
    if batch.messages:
        queue_workflow_messages(session, batch.messages, now)
    if batch.changed_contacts:
        react_to_contact_changes(session, sorted(batch.changed_contacts))


def _state(item: Item) -> dict[str, Any]:
    return {
        "status": item.status,
        "current_node": item.node,
        "waiting_since": item.waiting_since,
        "next_run_at": item.next_run_at,
        "waiting_event": item.waiting_event,
        "resume_exit": item.resume_exit,
        "attempts": item.attempts,
        "converted_at": item.converted_at,
        "finished_at": item.finished_at,
    }


def _write_back_portable(batch: Batch) -> None:
    session = batch.session
    _insert_visits(session, batch)

    rows = []
    with_context = []
    for item in batch.items:
        row = {"id": item.id, **_state(item)}
        if item.context_changed:
            with_context.append({**row, "context": item.context})
        else:
            rows.append(row)
    _update_states(session, rows)
    update_rows(session, Enrollment, with_context)


# The journal rows and the enrolments' new states of a batch as one statement. Each part
# reads one JSON document of groups (what went the same way, then the ids that went that
# way), so json.dumps does the escaping at C speed and the statement text never changes.
# The ``= ANY(ids)`` condition lets PostgreSQL probe the primary key instead of joining the
# document against the whole table. Journal rows go in ordered by round, so a contact's
# visits keep their order in ``id``.
WRITE_BACK_SQL = """
WITH journal AS (
    INSERT INTO enrollment_steps
        (enrollment_id, workflow_version_id, node_id, entered_at, left_at, exit, detail)
    SELECT CAST(i.id AS bigint), CAST(g->>0 AS integer), g->>1, CAST(g->>2 AS timestamp),
           CAST(g->>3 AS timestamp), g->>4, g->6
    FROM jsonb_array_elements(CAST(:visits AS jsonb)) WITH ORDINALITY AS v(g, n),
         jsonb_array_elements_text(g->5) WITH ORDINALITY AS i(id, m)
    ORDER BY v.n, i.m
), states AS (
    SELECT CAST(i.id AS bigint) AS id, g
    FROM jsonb_array_elements(CAST(:states AS jsonb)) AS g,
         jsonb_array_elements_text(g->9) AS i(id)
)
UPDATE enrollments AS e
SET status = s.g->>0, current_node = s.g->>1, waiting_since = CAST(s.g->>2 AS timestamp),
    next_run_at = CAST(s.g->>3 AS timestamp), waiting_event = s.g->>4,
    resume_exit = s.g->>5, attempts = CAST(s.g->>6 AS integer),
    converted_at = CAST(s.g->>7 AS timestamp), finished_at = CAST(s.g->>8 AS timestamp),
    context = COALESCE(s.g->10, e.context)
FROM states AS s
WHERE e.id = ANY(CAST(:ids AS bigint[])) AND e.id = s.id
"""


def _write_back_postgres(batch: Batch) -> None:
    texts: dict[datetime, str] = {}  # a batch repeats a few instants

    def _instant(value: datetime | None) -> str | None:
        """A stored timestamp's text (naive UTC), as the JSON documents carry it."""
        if value is None:
            return None
        if value not in texts:
            texts[value] = value.astimezone(UTC).replace(tzinfo=None).isoformat()
        return texts[value]

    rounds: dict[int, list[list[Any]]] = defaultdict(list)
    for (number, version_id, node_id, entered_at, left_at, label), ids in batch.visits.items():
        rounds[number].append(
            [version_id, node_id, _instant(entered_at), _instant(left_at), label, ids]
        )
    for row in batch.step_inserts:
        rounds[row["round"]].append(
            [
                row["workflow_version_id"],
                row["node_id"],
                _instant(row["entered_at"]),
                _instant(row["left_at"]),
                row["exit"],
                [row["enrollment_id"]],
                row["detail"],
            ]
        )
    visit_groups = [group for number in sorted(rounds) for group in rounds[number]]

    states: dict[tuple[Any, ...], list[int]] = {}
    state_groups: list[list[Any]] = []
    for item in batch.items:
        state = (
            item.status.value,
            item.node,
            _instant(item.waiting_since),
            _instant(item.next_run_at),
            item.waiting_event,
            item.resume_exit,
            item.attempts,
            _instant(item.converted_at),
            _instant(item.finished_at),
        )
        if item.context_changed:
            state_groups.append([*state, [item.id], item.context])
        else:
            states.setdefault(state, []).append(item.id)
    state_groups += [[*state, ids] for state, ids in states.items()]

    def document(groups: list[list[Any]]) -> str:
        return json.dumps(groups, separators=(",", ":"))

    batch.session.execute(
        text(WRITE_BACK_SQL),
        {
            "visits": document(visit_groups),
            "states": document(state_groups),
            "ids": int_array(i.id for i in batch.items),
        },
    )


GROUPED_UPDATES = 16  # past this many distinct end states, one UPDATE ... FROM unnest


JOURNAL_COLUMNS = [
    "enrollment_id",
    "workflow_version_id",
    "node_id",
    "entered_at",
    "left_at",
    "exit",
]


def _insert_visits(session: Session, batch: Batch) -> None:
    """The batch's journal rows (portable path), round by round so each contact's visits
    keep their order in ``id`` (a contact visits one node per round). Contacts that went
    the same way differ only by id: one INSERT ... SELECT per group with an id list; lone
    rows (a wait that began at its own time, a row with detail) in one executemany."""
    rounds: dict[int, list[tuple[tuple[Any, ...], list[int]]]] = defaultdict(list)
    for key, ids in batch.visits.items():
        rounds[key[0]].append((key[1:], ids))
    lone: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in batch.step_inserts:
        lone[row["round"]].append({k: v for k, v in row.items() if k != "round"})
    for number in sorted(rounds.keys() | lone.keys()):
        for (version_id, node_id, entered_at, left_at, label), ids in rounds[number]:
            if len(ids) == 1:
                lone[number].append(
                    {
                        "enrollment_id": ids[0],
                        "workflow_version_id": version_id,
                        "node_id": node_id,
                        "entered_at": entered_at,
                        "left_at": left_at,
                        "exit": label,
                        "detail": None,
                    }
                )
                continue
            chosen = select(
                Enrollment.id,
                literal(version_id),
                literal(node_id),
                literal(entered_at, UTCDateTime()),
                literal(left_at, UTCDateTime()),
                literal(label, String()),
            ).where(one_of(session, Enrollment.id, ids))
            session.execute(insert(EnrollmentStep).from_select(JOURNAL_COLUMNS, chosen))
        insert_rows(session, EnrollmentStep, lone[number])


def _update_states(session: Session, rows: list[dict[str, Any]]) -> None:
    """The enrolments' new states: one UPDATE per distinct state (usually a handful: a
    batch mostly moves together), or one UPDATE from arrays when states are many."""
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for row in rows:
        groups[tuple((k, v) for k, v in row.items() if k != "id")].append(row["id"])
    if len(groups) > GROUPED_UPDATES:
        update_rows(session, Enrollment, rows)
        return
    for state, ids in groups.items():
        session.execute(
            update(Enrollment)
            .where(one_of(session, Enrollment.id, ids))
            .values(dict(state))
            .execution_options(synchronize_session=False)
        )


def journal_waits(
    session: Session, enrollment_ids: Sequence[int], label: str, now: datetime
) -> None:
    """Journal the visits of those of ``enrollment_ids`` that wait at a node, as ended now
    by ``label``: outside the engine's batches (a goal met, a removal, an archived
    workflow; a version migration writes its own rows, each saying where it went). A
    waiting visit's row is written once, when it ends; until then the enrolment itself is
    the open visit."""
    if not enrollment_ids:
        return
    chosen = select(
        Enrollment.id,
        Enrollment.workflow_version_id,
        Enrollment.current_node,
        Enrollment.waiting_since,
        literal(now, UTCDateTime()),
        literal(label, String()),
    ).where(
        one_of(session, Enrollment.id, list(enrollment_ids)),
        Enrollment.waiting_since.is_not(None),
        Enrollment.current_node.is_not(None),
    )
    session.execute(
        insert(EnrollmentStep).from_select(
            JOURNAL_COLUMNS,
            chosen.order_by(Enrollment.id),
        )
    )


def finish_enrollments(
    session: Session,
    enrollment_ids: Sequence[int],
    status: EnrollmentStatus,
    *,
    exit_label: str,
    now: datetime | None = None,
) -> list[int]:
    """End open enrolments where they stand (goal met, removed, workflow archived);
    returns the ids that were still open."""
    if not enrollment_ids:
        return []
    now = now or clock.now()
    values: dict[str, Any] = {
        "status": status,
        "finished_at": now,
        "next_run_at": None,
        "waiting_event": None,
        "resume_exit": None,
    }
    if status is EnrollmentStatus.CONVERTED:
        values["converted_at"] = now
    ended: list[int] = []
    ids = list(enrollment_ids)
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        ended += session.scalars(
            update(Enrollment)
            .where(Enrollment.id.in_(chunk), Enrollment.status.in_(enrollment_sources(status)))
            .values(values)
            .returning(Enrollment.id)
            .execution_options(synchronize_session=False)
        ).all()
    for start in range(0, len(ended), 5000):
        journal_waits(session, ended[start : start + 5000], exit_label, now)
    return ended


# --- the tick ----------------------------------------------------------------------------


def run_due(
    sessions: sessionmaker[Session],
    *,
    batch_size: int = BATCH_SIZE,
    budget_seconds: float = 10.0,
    http: HttpClient | None = None,
    hold_limit: timedelta | None = None,
) -> RunReport:
    """Claim and move batches until nothing is due or the time budget is spent
    (``more`` then tells the caller to queue another run)."""
    report = RunReport()
    deadline = time.monotonic() + budget_seconds
    while True:
        started = time.perf_counter()
        with sessions() as session:
            now = clock.now()
            items, digests = claim_due(session, now, batch_size, hold_limit)
            if not items:
                return report
            moved = advance(session, items, digests, now, http=http)
            session.commit()
        metrics.BATCH_SIZE.labels("workflow").observe(moved.enrollments)
        metrics.BATCH_SECONDS.labels("workflow").observe(time.perf_counter() - started)
        report.batches += 1
        report.enrollments += moved.enrollments
        report.steps += moved.steps
        report.messages += moved.messages
        if moved.enrollments < batch_size:
            return report
        if time.monotonic() > deadline:
            report.more = True
            return report
