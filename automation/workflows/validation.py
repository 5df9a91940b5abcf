"""Checks a workflow document before it is saved or published. Every error carries the
JSON path of the offending part and a message that names the node (``wait 'w2' (Wait 2
days): ...``), so the editor can point at it and a CLI user can find it."""

from __future__ import annotations

from typing import Any, assert_never

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.addresses import validate_time_zone
from automation.contacts.attributes import coerce_value, field_types
from automation.contacts.models import FieldType
from automation.email.models import SenderIdentity
from automation.errors import FieldError, InvalidInput, join_path
from automation.forms.models import Form
from automation.segments.service import missing_segments
from automation.workflows import conditions, schema

# Contact columns a field_changed trigger may watch (attributes are ``attributes.<name>``).
WATCHABLE_COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "status",
    "lifecycle_stage",
    "score",
    "time_zone",
)
SETTABLE_COLUMNS = ("first_name", "last_name", "time_zone")


def describe(node: Any) -> str:
    """``wait 'w2' (Wait 2 days)``: how every message names a node."""
    kind = getattr(node, "type", "node")
    if kind == "wait":
        kind = "wait"
    label = f"{kind} '{node.id}'"
    if getattr(node, "name", ""):
        label += f" ({node.name})"
    return label


def _describe_raw(raw_nodes: Any, index: int) -> str:
    if (
        isinstance(raw_nodes, list)
        and index < len(raw_nodes)
        and isinstance(raw_nodes[index], dict)
    ):
        item = raw_nodes[index]
        kind = item.get("type") if isinstance(item.get("type"), str) else "node"
        node_id = item.get("id")
        if isinstance(node_id, str) and node_id:
            name = item.get("name")
            suffix = f" ({name})" if isinstance(name, str) and name else ""
            return f"{kind} '{node_id}'{suffix}"
    return f"node #{index + 1}"


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop the union tags pydantic puts in error locations (``nodes.0.wait:duration``)."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        previous = loc[i - 1] if i else None
        before = loc[i - 2] if i > 1 else None
        if previous == "trigger" and part in schema.TRIGGER_TAGS and i == 1:
            continue
        if before == "nodes" and isinstance(previous, int) and part in schema.NODE_TAGS:
            continue
        out.append(part)
    return tuple(out)


def parse_definition(raw: Any) -> tuple[schema.WorkflowDefinition | None, list[FieldError]]:
    """The document as a model, or the schema errors (each naming its node)."""
    if not isinstance(raw, dict):
        return None, [FieldError("body", "a workflow is a JSON object")]
    try:
        return schema.WorkflowDefinition.model_validate(raw), []
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = _clean_loc(tuple(err["loc"]))
            message = err["msg"].removeprefix("Value error, ")
            if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
                message = f"{_describe_raw(raw.get('nodes'), loc[1])}: {message}"
            elif loc and loc[0] == "trigger":
                message = f"trigger: {message}"
            errors.append(FieldError(join_path(loc) or "body", message))
        return None, errors


def structural_errors(definition: schema.WorkflowDefinition) -> list[FieldError]:
    """Errors in the shape of the graph itself (no database needed)."""
    errors: list[FieldError] = []
    nodes = definition.nodes
    index: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node.id in index:
            errors.append(
                FieldError(f"nodes[{i}].id", f"{describe(node)}: the id '{node.id}' is used twice")
            )
        else:
            index[node.id] = i
    if not nodes:
        errors.append(FieldError("nodes", "a workflow needs at least one node after the trigger"))
        return errors
    if definition.start is None:
        errors.append(FieldError("start", "the trigger leads nowhere: set start to a node id"))
    elif definition.start not in index:
        errors.append(
            FieldError("start", f"the trigger leads to '{definition.start}', which does not exist")
        )

    for i, node in enumerate(nodes):
        for label, target, path in _exit_paths(node, i):
            if target is None:
                if len(node.exits()) > 1:
                    errors.append(
                        FieldError(
                            path,
                            f"{describe(node)}: missing the '{label}' exit (use an exit node "
                            "to end a path)",
                        )
                    )
            elif target not in index:
                errors.append(
                    FieldError(
                        path,
                        f"{describe(node)}: its '{label}' exit leads to '{target}', which does "
                        "not exist",
                    )
                )
        if isinstance(node, schema.SplitNode):
            names: set[str] = set()
            for j, split_path in enumerate(node.paths):
                if not split_path.weight > 0:
                    errors.append(
                        FieldError(
                            f"nodes[{i}].paths[{j}].weight",
                            f"{describe(node)}: path '{split_path.name}' needs a positive "
                            f"weight, not {split_path.weight:g}",
                        )
                    )
                if split_path.name in names:
                    errors.append(
                        FieldError(
                            f"nodes[{i}].paths[{j}].name",
                            f"{describe(node)}: two paths are named '{split_path.name}'",
                        )
                    )
                names.add(split_path.name)

    if definition.start in index:
        reached = _reachable(definition, index)
        for i, node in enumerate(nodes):
            if node.id not in reached:
                errors.append(
                    FieldError(
                        f"nodes[{i}]", f"{describe(node)}: no path leads here from the trigger"
                    )
                )
    errors.extend(_loops_without_wait(definition, index))
    return errors


def _exit_paths(node: Any, i: int) -> list[tuple[str, str | None, str]]:
    if isinstance(node, schema.SplitNode):
        return [(p.name, p.next, f"nodes[{i}].paths[{j}].next") for j, p in enumerate(node.paths)]
    if isinstance(node, schema.GoalNode):
        return [("next", node.next, f"nodes[{i}].next")]
    return [(label, target, f"nodes[{i}].{label}") for label, target in node.exits().items()]


def _successors(node: Any) -> list[str]:
    return [target for target in node.exits().values() if target is not None]


def _reachable(definition: schema.WorkflowDefinition, index: dict[str, int]) -> set[str]:
    seen: set[str] = set()
    stack = [definition.start] if definition.start else []
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in index:
            continue
        seen.add(node_id)
        stack.extend(_successors(definition.nodes[index[node_id]]))
    return seen


def _loops_without_wait(
    definition: schema.WorkflowDefinition, index: dict[str, int]
) -> list[FieldError]:
    """A loop through instant nodes only would spin a contact forever in one tick."""
    instant = {n.id: n for n in definition.nodes if not isinstance(n, schema.WAIT_NODES)}
    errors: list[FieldError] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    reported: set[str] = set()

    def visit(node_id: str, path: list[str]) -> None:
        state[node_id] = 1
        path.append(node_id)
        for target in _successors(instant[node_id]):
            if target not in instant:
                continue
            if state.get(target) == 1:
                loop = [*path[path.index(target) :], target]
                first = loop[0]
                if first not in reported:
                    reported.add(first)
                    node = definition.nodes[index[first]]
                    errors.append(
                        FieldError(
                            f"nodes[{index[first]}]",
                            f"{describe(node)}: in a loop with no wait ({' → '.join(loop)}); "
                            "add a wait node to the loop",
                        )
                    )
            elif target not in state:
                visit(target, path)
        path.pop()
        state[node_id] = 2

    for node_id in instant:
        if node_id not in state:
            visit(node_id, [])
    return errors


def reference_errors(session: Session, definition: schema.WorkflowDefinition) -> list[FieldError]:
    """Errors in what the document refers to: templates, sender identities, segments,
    lists, custom fields, and the conditions' own validity."""
    errors: list[FieldError] = []
    fields = field_types(session)
    trigger = definition.trigger
    if isinstance(trigger, schema.EventTrigger) and trigger.where:
        errors += [
            FieldError(e.path, f"trigger: {e.message}")
            for e in conditions.property_condition_errors(trigger.where, "trigger.where")
        ]
    if isinstance(trigger, schema.SegmentTrigger):
        errors += missing_segments(session, [(trigger.segment_id, "trigger.segment_id")])
    if isinstance(trigger, schema.EmailEngagementTrigger) and trigger.template_id is not None:
        errors += [
            FieldError(path, f"trigger: {message}")
            for path, message in conditions.missing_templates(
                session, [(trigger.template_id, "trigger.template_id")]
            )
        ]
    if isinstance(trigger, schema.FormTrigger):
        errors += _missing_form(session, trigger)
    if isinstance(trigger, schema.DateTrigger | schema.AnniversaryTrigger):
        errors += _date_field_errors(fields, trigger.field, "trigger.field", "trigger")
    if isinstance(trigger, schema.FieldChangedTrigger):
        errors += _watchable_field_errors(fields, trigger.field)

    templates: list[tuple[int, str]] = []
    identities: list[tuple[int, str, str]] = []
    lists: list[tuple[int, str]] = []
    for i, node in enumerate(definition.nodes):
        where = f"nodes[{i}]"
        match node:
            case schema.SendEmailNode():
                templates.append((node.template_id, f"{where}.template_id"))
                if node.sender_identity_id is not None:
                    identities.append(
                        (node.sender_identity_id, f"{where}.sender_identity_id", describe(node))
                    )
            case schema.BranchNode():
                errors += _named(
                    node, conditions.condition_errors(session, node.condition, f"{where}.condition")
                )
                errors += _named(node, _workflow_leaf_errors(definition, node.condition, where))
            case schema.GoalNode():
                if node.condition is not None:
                    errors += _named(
                        node,
                        conditions.condition_errors(session, node.condition, f"{where}.condition"),
                    )
            case schema.WaitEventNode():
                if node.where:
                    errors += _named(
                        node, conditions.property_condition_errors(node.where, f"{where}.where")
                    )
            case schema.WaitDateFieldNode():
                errors += _date_field_errors(fields, node.field, f"{where}.field", describe(node))
            case schema.UpdateContactNode():
                errors += _update_errors(fields, node, where)
                lists += [(x, f"{where}.add_to_lists") for x in node.add_to_lists]
                lists += [(x, f"{where}.remove_from_lists") for x in node.remove_from_lists]
            case (
                schema.WaitDurationNode()
                | schema.WaitTimeOfDayNode()
                | schema.SplitNode()
                | schema.WebhookNode()
                | schema.ExitNode()
            ):
                pass  # refers to nothing stored
            case _:
                assert_never(node)
    node_of = {f"nodes[{i}]": n for i, n in enumerate(definition.nodes)}
    for path, message in conditions.missing_templates(session, templates):
        errors.append(FieldError(path, f"{describe(node_of[path.split('.')[0]])}: {message}"))
    if identities:
        known = set(
            session.scalars(
                select(SenderIdentity.id).where(
                    SenderIdentity.id.in_([i for i, _, _ in identities])
                )
            )
        )
        for identity_id, path, label in identities:
            if identity_id not in known:
                errors.append(FieldError(path, f"{label}: no sender identity {identity_id}"))
    for error in missing_segments(session, lists, static=True):
        errors.append(
            FieldError(
                error.path, f"{describe(node_of[error.path.split('.')[0]])}: {error.message}"
            )
        )
    goal = definition.settings.goal
    if goal is not None:
        if goal.condition is not None:
            errors += [
                FieldError(e.path, f"goal: {e.message}")
                for e in conditions.condition_errors(
                    session, goal.condition, "settings.goal.condition"
                )
            ]
        if goal.event_where:
            errors += [
                FieldError(e.path, f"goal: {e.message}")
                for e in conditions.property_condition_errors(
                    goal.event_where, "settings.goal.event_where"
                )
            ]
    return errors


def _missing_form(session: Session, trigger: schema.FormTrigger) -> list[FieldError]:
    """The form a form trigger names must exist (by id, or by name in older documents)."""
    if trigger.form_id is not None:
        if session.get(Form, trigger.form_id) is None:
            return [FieldError("trigger.form_id", f"trigger: no form {trigger.form_id}")]
        return []
    if session.scalar(select(Form.id).where(Form.name == trigger.form)) is None:
        return [FieldError("trigger.form", f"trigger: no form named {trigger.form!r}")]
    return []


def _named(node: Any, errors: list[FieldError]) -> list[FieldError]:
    prefix = describe(node)
    return [
        e if e.message.startswith(prefix) else FieldError(e.path, f"{prefix}: {e.message}")
        for e in errors
    ]


def _workflow_leaf_errors(
    definition: schema.WorkflowDefinition, tree: dict[str, Any], where: str
) -> list[FieldError]:
    """Leaves that name another node must name one of the right kind."""
    by_id = {n.id: n for n in definition.nodes}
    errors = []
    for path, leaf in conditions.workflow_leaves(tree, f"{where}.condition"):
        is_email = "workflow_email" in leaf
        target = leaf.get("node") if is_email else leaf.get("webhook")
        wanted = "send_email" if is_email else "webhook"
        node = by_id.get(target) if isinstance(target, str) else None
        if node is None or node.type != wanted:
            key = "node" if is_email else "webhook"
            errors.append(FieldError(f"{path}.{key}", f"'{target}' is not a {wanted} node here"))
    return errors


def _date_field_errors(
    fields: dict[str, Any], name: str, path: str, label: str
) -> list[FieldError]:
    attribute = name.removeprefix("attributes.")
    field = fields.get(attribute)
    if field is None or field.type is not FieldType.DATE:
        return [FieldError(path, f"{label}: '{name}' is not a declared date field")]
    return []


def _watchable_field_errors(fields: dict[str, Any], name: str) -> list[FieldError]:
    if name in WATCHABLE_COLUMNS:
        return []
    if name.startswith("attributes.") and name.removeprefix("attributes.") in fields:
        return []
    return [
        FieldError(
            "trigger.field",
            f"trigger: '{name}' is not a contact field; use one of "
            f"{', '.join(WATCHABLE_COLUMNS)} or attributes.<declared field>",
        )
    ]


def _update_errors(
    fields: dict[str, Any], node: schema.UpdateContactNode, where: str
) -> list[FieldError]:
    errors = []
    label = describe(node)
    for key, value in node.set.items():
        path = f"{where}.set.{key}"
        if key in SETTABLE_COLUMNS:
            if not isinstance(value, str):
                errors.append(FieldError(path, f"{label}: {key} must be text"))
            elif key == "time_zone":
                try:
                    validate_time_zone(value)
                except ValueError as exc:
                    errors.append(FieldError(path, f"{label}: {exc}"))
            continue
        attribute = key.removeprefix("attributes.")
        field = fields.get(attribute) if key.startswith("attributes.") else None
        if field is None:
            errors.append(
                FieldError(
                    path,
                    f"{label}: cannot set '{key}'; use {', '.join(SETTABLE_COLUMNS)} or "
                    "attributes.<declared field>",
                )
            )
            continue
        try:
            coerce_value(field, value)
        except ValueError as exc:
            errors.append(FieldError(path, f"{label}: {exc}"))
    overlap = set(node.add_tags) & set(node.remove_tags)
    if overlap:
        errors.append(
            FieldError(
                f"{where}.remove_tags",
                f"{label}: tags both added and removed: {', '.join(sorted(overlap))}",
            )
        )
    return errors


def check_definition(
    session: Session | None, raw: Any
) -> tuple[schema.WorkflowDefinition | None, list[FieldError]]:
    """Every error in the document; reference checks need a session."""
    definition, errors = parse_definition(raw)
    if definition is None:
        return None, errors
    errors = structural_errors(definition)
    if session is not None:
        errors += reference_errors(session, definition)
    return definition, errors


def validate_definition(session: Session | None, raw: Any) -> schema.WorkflowDefinition:
    definition, errors = check_definition(session, raw)
    if errors or definition is None:
        raise InvalidInput(errors or [FieldError("body", "invalid workflow")])
    return definition
