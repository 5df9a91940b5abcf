"""How every API endpoint is declared: path, method, role, and pydantic models for the
body, query and response. The same declarations validate requests and generate the
OpenAPI document, so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from pydantic import BaseModel, ValidationError

from automation.accounts.models import Role
from automation.errors import FieldError, Forbidden, InvalidInput, field_errors
from web.api.access import authenticate_request


@dataclass
class Operation:
    path: str
    method: str
    summary: str
    role: Role
    tag: str
    status: int
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None
    content_type: str = "application/json"


OPERATIONS: list[Operation] = []


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


BodyProblems = Callable[[dict[str, Any]], list[FieldError]]


def _parse_body(model: type[BaseModel], more: BodyProblems | None = None) -> BaseModel:
    if request.mimetype != "application/json":
        raise InvalidInput(FieldError("body", "send JSON with Content-Type: application/json"))
    try:
        payload = request.get_json(silent=True)
    except RecursionError:  # json.loads gives up on very deep nesting with this, not ValueError
        raise InvalidInput(FieldError("body", "the JSON is nested too deeply")) from None
    if payload is None:
        raise InvalidInput(FieldError("body", "the body is not valid JSON"))
    if not isinstance(payload, dict):
        raise InvalidInput(FieldError("body", "the body must be a JSON object"))
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = field_errors(exc)
        if more is not None:
            seen = {e.path for e in errors}
            errors += [e for e in more(payload) if e.path not in seen]
        raise InvalidInput(errors) from None


def _parse_query(model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise InvalidInput(
            [FieldError(f"query.{e.path}", e.message) for e in field_errors(exc)]
        ) from None


class ApiBlueprint(Blueprint):
    """A Blueprint whose routes are declared with their schemas and role."""

    def operation(
        self,
        path: str,
        method: str = "GET",
        *,
        summary: str,
        role: Role = Role.VIEWER,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        content_type: str = "application/json",
        read_only: bool = False,
        body_problems: BodyProblems | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare an endpoint. ``read_only`` marks a POST that changes nothing (a count or
        a preview whose input is too large for a query string), so viewers may call it.
        ``body_problems`` finds the problems beyond the body's shape when its shape is
        invalid, so one answer names them all (a filter tree's unknown fields)."""

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            op = Operation(
                path=path,
                method=method,
                summary=summary,
                role=role,
                tag=self.name,
                status=status,
                body=body,
                query=query,
                response=response,
                content_type=content_type,
            )
            OPERATIONS.append(op)

            @wraps(view)
            def endpoint(**kwargs: Any) -> Any:
                principal = authenticate_request()
                if not principal.role.allows(role):
                    raise Forbidden(
                        f"this needs the {role.value} role; you are {principal.role.value}"
                    )
                g.principal = principal
                if body is not None:
                    kwargs["body"] = _parse_body(body, body_problems)
                if query is not None:
                    kwargs["query"] = _parse_query(query)
                result = view(**kwargs)
                if isinstance(result, Response):
                    return result
                if result is None:
                    return Response(status=204)
                return jsonify(_dump(result)), status

            endpoint.required_role = role  # type: ignore[attr-defined]
            endpoint.read_only = read_only or method == "GET"  # type: ignore[attr-defined]
            self.add_url_rule(path, endpoint=view.__name__, view_func=endpoint, methods=[method])
            return endpoint

        return decorate
