"""Loads what a filter tree refers to (declared fields, referenced segments) from the database,
so the compiler, the evaluator and the explainer work on plain data."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.contacts.models import CustomField, IndexStatus, Tag
from automation.errors import FieldError, InvalidInput
from automation.segments.catalog import (
    Catalog,
    SegmentRef,
    check_filter,
)
from automation.segments.fields import (
    CORE_FIELDS,
    attribute_spec,
)
from automation.segments.models import Segment, SegmentKind
from automation.segments.schema import (
    Filter,
    parse_filter,
    referenced_segments,
    tag_names,
)


def load_catalog(session: Session, tree: Filter | None = None) -> Catalog:
    """Core and custom fields, plus every segment the tree refers to, transitively."""
    fields = dict(CORE_FIELDS)
    for custom in session.scalars(select(CustomField)):
        spec = attribute_spec(
            custom.name,
            custom.type,
            custom.options or [],
            indexed=custom.index_status is IndexStatus.READY,
        )
        fields[spec.name] = spec
    catalog = Catalog(fields)
    if tree is not None:
        load_segments(session, catalog, referenced_segments(tree))
        load_tags(session, catalog, tag_names(tree))
    return catalog


def load_tags(session: Session, catalog: Catalog, names: set[str]) -> None:
    wanted = sorted(names - catalog.tags_looked_up)
    if not wanted:
        return
    catalog.tag_ids.update(
        (name, tag_id)
        for name, tag_id in session.execute(select(Tag.name, Tag.id).where(Tag.name.in_(wanted)))
    )
    catalog.tags_looked_up.update(wanted)


def load_segments(session: Session, catalog: Catalog, ids: list[int]) -> None:
    """Add the segments ``ids`` and those they refer to (one query per level)."""
    pending = {i for i in ids if i not in catalog.segments}
    while pending:
        rows = session.execute(
            select(Segment.id, Segment.name, Segment.kind, Segment.definition).where(
                Segment.id.in_(sorted(pending))
            )
        ).all()
        pending = set()
        names: set[str] = set()
        for segment_id, name, kind, definition in rows:
            tree = _stored_tree(definition) if kind is SegmentKind.DYNAMIC else None
            catalog.segments[segment_id] = SegmentRef(
                segment_id, name, kind is SegmentKind.DYNAMIC, tree
            )
            if tree is not None:
                pending.update(i for i in referenced_segments(tree) if i not in catalog.segments)
                names |= tag_names(tree)
        load_tags(session, catalog, names)


def _stored_tree(definition: dict[str, Any] | None) -> Filter | None:
    if definition is None:
        return None
    return _parse_stored(json.dumps(definition, sort_keys=True))


@lru_cache(maxsize=512)
def _parse_stored(canonical: str) -> Filter | None:
    """Stored definitions are parsed on every incremental refresh: cache by content."""
    try:
        return parse_filter(json.loads(canonical))
    except InvalidInput:
        return None


def validate_filter(
    session: Session, raw: Any, *, segment_id: int | None = None
) -> tuple[Filter, Catalog]:
    """Parse and check a tree against the database; InvalidInput names every bad path.

    ``segment_id`` is the segment being saved, so references back to it are refused.
    """
    tree = parse_filter(raw)
    catalog = load_catalog(session, tree)
    errors = check_filter(tree, catalog, segment_id=segment_id)
    if errors:
        raise InvalidInput(errors)
    return tree, catalog


def require_usable(catalog: Catalog, tree: Filter) -> None:
    """A stored tree whose fields or segments disappeared cannot be evaluated: say which."""
    errors = check_filter(tree, catalog)
    if errors:
        raise InvalidInput(
            [FieldError(e.path, e.message) for e in errors],
            message="the segment definition refers to something that no longer exists: "
            + "; ".join(f"{e.path}: {e.message}" for e in errors),
        )
