"""A published version's graph, parsed once per process (versions never change)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from automation.errors import NotFound
from automation.workflows.models import WorkflowVersion
from automation.workflows.schema import WorkflowDefinition, WorkflowNode, WorkflowSettings

_CACHE_SIZE = 512
_cache: OrderedDict[tuple[int, str], Graph] = OrderedDict()


@dataclass(frozen=True)
class Graph:
    version_id: int
    workflow_id: int
    number: int
    published_at: datetime
    definition: WorkflowDefinition
    nodes: dict[str, WorkflowNode] = field(repr=False)

    @property
    def start(self) -> str | None:
        return self.definition.start

    @property
    def settings(self) -> WorkflowSettings:
        return self.definition.settings

    def node(self, node_id: str) -> WorkflowNode:
        return self.nodes[node_id]

    def follow(self, node_id: str, label: str) -> str | None:
        """Where leaving ``node_id`` by ``label`` leads (None: the enrolment ends)."""
        return self.nodes[node_id].exits().get(label)

    def title(self, node_id: str) -> str:
        node = self.nodes.get(node_id)
        return node.title if node is not None else node_id


def graph_from(version: WorkflowVersion) -> Graph:
    definition = WorkflowDefinition.model_validate(version.definition)
    return Graph(
        version.id,
        version.workflow_id,
        version.number,
        version.published_at,
        definition,
        {node.id: node for node in definition.nodes},
    )


def load_graphs(session: Session, version_ids: Iterable[int] | Select[Any]) -> dict[int, Graph]:
    """Parsed graphs by version id (``version_ids``: ids, or a query selecting them, which
    saves a round trip). Versions never change, but a process may outlive a database
    (tests, a restore): the cache is keyed by id and content digest."""
    if isinstance(version_ids, Select):
        chosen = WorkflowVersion.id.in_(version_ids.scalar_subquery())
    else:
        wanted = set(version_ids)
        if not wanted:
            return {}
        chosen = WorkflowVersion.id.in_(wanted)
    current = dict(
        session.execute(select(WorkflowVersion.id, WorkflowVersion.digest).where(chosen)).all()
    )
    return graphs_for(session, current)


def graphs_for(session: Session, current: dict[int, str]) -> dict[int, Graph]:
    """Parsed graphs of versions whose content digests are known: from the cache, the
    others read and parsed."""
    out = {v: _cache[(v, d)] for v, d in current.items() if (v, d) in _cache}
    missing = set(current) - set(out)
    if missing:
        for version in session.scalars(
            select(WorkflowVersion).where(WorkflowVersion.id.in_(missing))
        ):
            out[version.id] = _remember(version.digest, graph_from(version))
    for version_id, digest in current.items():
        _cache.move_to_end((version_id, digest))
    return out


def load_graph(session: Session, version_id: int) -> Graph:
    graphs = load_graphs(session, [version_id])
    if version_id not in graphs:
        raise NotFound(f"workflow version {version_id} not found")
    return graphs[version_id]


def _remember(digest: str, graph: Graph) -> Graph:
    _cache[(graph.version_id, digest)] = graph
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return graph
