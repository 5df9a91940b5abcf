"""Loads what a filter tree refers to (declared fields, referenced segments) from the database,
so the compiler, the evaluator and the explainer work on plain data."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.contacts.models import CustomField, IndexStatus, Tag
from automation.errors import FieldError, InvalidInput, join_path
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
    Node,
    Path,
    limit_nesting,
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


_NODE: TypeAdapter[Node] = TypeAdapter(Node)


def problems_beyond_shape(
    session: Session, raw: Any, *, segment_id: int | None = None
) -> list[FieldError]:
    """The name, operator and value problems of every part of a tree whose shape is valid,
    for a tree whose shape is not: with the shape errors pydantic reports, the caller
    answers every problem of the tree at once (docs/segments.md, "Bad input").

    A node that parses is checked whole; a group that does not is searched for children
    that do. Nothing is reported when ``raw`` is not a list of conditions at all."""
    try:
        nodes = limit_nesting(raw)
    except ValueError:
        return []  # too many nodes: the shape error says so, nothing else is looked at
    if not isinstance(nodes, list):
        return []
    parsed: list[tuple[Path, Node]] = []

    def visit(path: Path, node: Any) -> None:
        try:
            parsed.append((path, _NODE.validate_python(node)))
            return
        except ValidationError:
            pass
        if not isinstance(node, dict):
            return
        for key in ("all", "any"):
            if isinstance(node.get(key), list):
                for i, child in enumerate(node[key]):
                    visit((*path, key, i), child)
        if "not" in node:
            visit((*path, "not"), node["not"])

    for i, node in enumerate(nodes):
        visit(("conditions", i), node)
    if not parsed:
        return []
    catalog = load_catalog(session, Filter(conditions=tuple(node for _, node in parsed)))
    errors: list[FieldError] = []
    for path, node in parsed:
        # Checked as the only condition of a tree, then moved to the node's own path.
        alone, here = join_path(("conditions", 0)), join_path(path)
        for error in check_filter(Filter(conditions=(node,)), catalog, segment_id=segment_id):
            errors.append(FieldError(here + error.path.removeprefix(alone), error.message))
    return errors


def require_usable(catalog: Catalog, tree: Filter) -> None:
    """A stored tree whose fields or segments disappeared cannot be evaluated: say which."""
    errors = check_filter(tree, catalog)
    if errors:
        raise InvalidInput(
            [FieldError(e.path, e.message) for e in errors],
            message="the segment definition refers to something that no longer exists: "
            + "; ".join(f"{e.path}: {e.message}" for e in errors),
        )
