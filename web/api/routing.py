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
from automation.errors import FieldError, Forbidden, InvalidInput, TooLarge, field_errors
from web.api.access import authenticate_request
from web.input import parse_json


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
    upload: type[BaseModel] | None = None  # documents a multipart body the view reads
    errors: tuple[int, ...] = ()  # statuses beyond those openapi.error_statuses infers
    read_only: bool = False


OPERATIONS: list[Operation] = []


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


BodyProblems = Callable[[dict[str, Any]], list[FieldError]]


def _parse_body(
    model: type[BaseModel], max_body: int | None, more: BodyProblems | None = None
) -> BaseModel:
    if request.mimetype != "application/json":
        raise InvalidInput(FieldError("body", "send JSON with Content-Type: application/json"))
    if max_body is not None and (request.content_length or 0) > max_body:
        raise TooLarge(FieldError("body", f"larger than {max_body // 1024} KB"))
    raw = request.get_data(cache=True)
    if max_body is not None and len(raw) > max_body:
        raise TooLarge(FieldError("body", f"larger than {max_body // 1024} KB"))
    payload = parse_json(raw)
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
        upload: type[BaseModel] | None = None,
        errors: tuple[int, ...] = (),
        max_body: int | None = None,
        body_problems: BodyProblems | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare an endpoint. ``read_only`` marks a POST that changes nothing (a count or
        a preview whose input is too large for a query string), so viewers may call it.
        ``upload`` documents the multipart fields of a view that reads files itself;
        ``errors`` adds statuses the document cannot infer (a rate limit's 429);
        ``max_body`` refuses a larger JSON body with 413 (the app's own bound is 64 MB);
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
                upload=upload,
                errors=errors,
                read_only=read_only or method == "GET",
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
                    kwargs["body"] = _parse_body(body, max_body, body_problems)
                if query is not None:
                    kwargs["query"] = _parse_query(query)
                result = view(**kwargs)
                if isinstance(result, Response):
                    return result
                if result is None:
                    return Response(status=204)
                return jsonify(_dump(result)), status

            endpoint.required_role = role  # type: ignore[attr-defined]
            endpoint.read_only = op.read_only  # type: ignore[attr-defined]
            self.add_url_rule(path, endpoint=view.__name__, view_func=endpoint, methods=[method])
            return endpoint

        return decorate
