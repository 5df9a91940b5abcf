"""What a condition can name and how it may compare it: the value types, the operators each
type allows, and the fields (contact columns and declared custom attributes)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from automation.contacts.models import ContactStatus, FieldType, LifecycleStage


class Operator(enum.StrEnum):
    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    IN = "in"
    NOT_IN = "not_in"
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    GREATER_THAN = "greater_than"
    GREATER_OR_EQUAL = "greater_or_equal"
    LESS_THAN = "less_than"
    LESS_OR_EQUAL = "less_or_equal"
    BETWEEN = "between"
    IS_SET = "is_set"
    IS_NOT_SET = "is_not_set"
    WITHIN_LAST_DAYS = "within_last_days"
    MORE_THAN_DAYS_AGO = "more_than_days_ago"
    IN_NEXT_DAYS = "in_next_days"
    ANNIVERSARY_TODAY = "anniversary_today"


class ValueType(enum.StrEnum):
    TEXT = "text"
    CHOICE = "choice"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"  # a calendar date, "YYYY-MM-DD"; relative operators use the contact's zone
    DATETIME = "datetime"  # an instant, stored in UTC


Op = Operator
EQUALITY = (Op.EQUALS, Op.NOT_EQUALS, Op.IN, Op.NOT_IN)
ORDER = (Op.GREATER_THAN, Op.GREATER_OR_EQUAL, Op.LESS_THAN, Op.LESS_OR_EQUAL, Op.BETWEEN)
RELATIVE = (Op.WITHIN_LAST_DAYS, Op.MORE_THAN_DAYS_AGO, Op.IN_NEXT_DAYS)
PRESENCE = (Op.IS_SET, Op.IS_NOT_SET)
TEXT_MATCH = (Op.CONTAINS, Op.NOT_CONTAINS, Op.STARTS_WITH, Op.ENDS_WITH)

OPERATORS: dict[ValueType, tuple[Operator, ...]] = {
    ValueType.TEXT: (*EQUALITY, *TEXT_MATCH, *PRESENCE),
    ValueType.CHOICE: (*EQUALITY, *PRESENCE),
    ValueType.NUMBER: (*EQUALITY, *ORDER, *PRESENCE),
    ValueType.BOOLEAN: (Op.EQUALS, Op.NOT_EQUALS, *PRESENCE),
    ValueType.DATE: (*EQUALITY, *ORDER, *RELATIVE, Op.ANNIVERSARY_TODAY, *PRESENCE),
    ValueType.DATETIME: (*ORDER, *RELATIVE, *PRESENCE),
}
# Event properties have no declared type: the value given decides (text, number, boolean).
PROPERTY_OPERATORS = (*EQUALITY, *TEXT_MATCH, *ORDER, *PRESENCE)
NO_VALUE = (Op.IS_SET, Op.IS_NOT_SET, Op.ANNIVERSARY_TODAY)
NEGATIVE = {
    Op.NOT_EQUALS: Op.EQUALS,
    Op.NOT_IN: Op.IN,
    Op.NOT_CONTAINS: Op.CONTAINS,
    Op.IS_NOT_SET: Op.IS_SET,
}


@dataclass(frozen=True)
class FieldSpec:
    """A field a condition can name: a contacts column or a declared custom attribute."""

    name: str
    type: ValueType
    column: str | None = None  # contacts column; None for custom attributes
    attribute: str | None = None  # key in contacts.attributes
    options: tuple[str, ...] = ()
    # A custom attribute whose expression index is built (PostgreSQL): the compiler then
    # emits that index's expression (automation/segments/field_indexes.py).
    indexed: bool = False


def _core(name: str, kind: ValueType, options: tuple[str, ...] = ()) -> FieldSpec:
    return FieldSpec(name, kind, column=name, options=options)


CORE_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        _core("email", ValueType.TEXT),
        _core("first_name", ValueType.TEXT),
        _core("last_name", ValueType.TEXT),
        _core("external_id", ValueType.TEXT),
        _core("source", ValueType.TEXT),
        _core("time_zone", ValueType.TEXT),
        _core("status", ValueType.CHOICE, tuple(s.value for s in ContactStatus)),
        _core("lifecycle_stage", ValueType.CHOICE, tuple(s.value for s in LifecycleStage)),
        _core("score", ValueType.NUMBER),
        _core("emails_sent", ValueType.NUMBER),
        _core("opens", ValueType.NUMBER),
        _core("clicks", ValueType.NUMBER),
        _core("engagement_score", ValueType.NUMBER),
        _core("created_at", ValueType.DATETIME),
        _core("updated_at", ValueType.DATETIME),
        _core("confirmed_at", ValueType.DATETIME),
        _core("last_open_at", ValueType.DATETIME),
        _core("last_click_at", ValueType.DATETIME),
    )
}
ATTRIBUTE_PREFIX = "attributes."
CUSTOM_TYPES = {
    FieldType.TEXT: ValueType.TEXT,
    FieldType.NUMBER: ValueType.NUMBER,
    FieldType.DATE: ValueType.DATE,
    FieldType.BOOLEAN: ValueType.BOOLEAN,
    FieldType.CHOICE: ValueType.CHOICE,
}


def attribute_spec(
    name: str, kind: FieldType, options: list[str] | tuple[str, ...], *, indexed: bool = False
) -> FieldSpec:
    return FieldSpec(
        ATTRIBUTE_PREFIX + name,
        CUSTOM_TYPES[kind],
        attribute=name,
        options=tuple(options),
        indexed=indexed,
    )
