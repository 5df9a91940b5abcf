"""The OpenAPI 3.1 document, generated from the declared operations.

The schemas are pydantic's own JSON Schema for every declared model, made in one
``models_json_schema`` call: it names each component once, tells apart two models of the
same name (``automation__email__schema__VersionOut`` and the workflows' one) and points
every ``$ref`` at ``#/components/schemas``, so all of them resolve. This module only lays
the operations out: paths relative to the server URL, parameters, and every status an
operation can answer (``error_statuses``).
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from automation.db import BIG_ID_MAX, ID_MAX
from web.api.routing import OPERATIONS, Operation

REF = "#/components/schemas/{model}"
ERROR_REF = {"$ref": REF.format(model="Error")}
PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["path", "message"],
                        "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        }
    },
}

ERRORS = {
    400: "The request cannot be read (a malformed upload)",
    401: "No API key, or a wrong or revoked one",
    403: "The key's role is too low for this",
    404: "Nothing with that id (an id out of range included)",
    409: "Refused by a rule about other rows (a name in use, a state that forbids it)",
    413: "The body is too large",
    422: "Invalid input; each detail names the field path and what is wrong",
    429: "Too many requests; try again later",
}

Mode = Literal["validation", "serialization"]


def openapi_path(path: str) -> str:
    """A Flask rule as an OpenAPI path: ``/a/<int:a_id>`` becomes ``/a/{a_id}``."""
    return PARAM.sub(r"{\2}", path)


def error_statuses(op: Operation) -> set[int]:
    """What an operation may answer besides its success: authentication and role always;
    404 when it names rows; 422 for input (a domain rule is checked on every write); 409
    on writes; 400 and 413 where a body is read; plus what it declared itself."""
    writes = op.method != "GET"
    statuses = {401, 403, *op.errors}
    if PARAM.search(op.path) or op.body is not None or op.query is not None:
        statuses.add(404)
    if writes or op.body is not None or op.query is not None:
        statuses.add(422)
    if writes and not op.read_only:
        statuses.add(409)
    if op.body is not None or op.upload is not None:
        statuses |= {400, 413}
    return statuses


def _models(response: Any) -> list[type[BaseModel]]:
    if get_origin(response) is list:
        return _models(get_args(response)[0])
    if isinstance(response, type) and issubclass(response, BaseModel):
        return [response]
    return []


def _response_schema(response: Any, refs: Refs) -> Any:
    if get_origin(response) is list:
        return {"type": "array", "items": _response_schema(get_args(response)[0], refs)}
    if isinstance(response, type) and issubclass(response, BaseModel):
        return refs[(response, "serialization")]
    return {"type": "object"}


Refs = dict[tuple[Any, Mode], Any]


def _component_schemas() -> tuple[Refs, dict[str, Any]]:
    keys: dict[tuple[type[BaseModel], Mode], None] = {}
    for op in OPERATIONS:
        for model in (op.body, op.query, op.upload):
            if model is not None:
                keys[(model, "validation")] = None
        for model in _models(op.response):
            keys[(model, "serialization")] = None
    refs, defs = models_json_schema(list(keys), ref_template=REF)
    return dict(refs), defs.get("$defs", {})


def _query_parameter(name: str, schema: dict[str, Any], required: bool) -> dict[str, Any]:
    """A query parameter: absent is its null, so ``X | None`` is documented as ``X``."""
    schema = dict(schema)
    options = schema.get("anyOf")
    if options is not None:
        kept = [o for o in options if o != {"type": "null"}]
        if len(kept) == 1:
            del schema["anyOf"]
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    if schema.get("default", 0) is None:
        del schema["default"]
    described = {"description": schema.pop("description")} if "description" in schema else {}
    return {"name": name, "in": "query", "required": required, "schema": schema, **described}


def _path_parameter(converter: str | None, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if converter in ("int", "bigid"):
        top = ID_MAX if converter == "int" else BIG_ID_MAX
        schema = {"type": "integer", "minimum": 1, "maximum": top}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _operation(op: Operation, refs: Refs, components: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if op.status == 204:
        responses["204"] = {"description": "Done; no content"}
    else:
        schema = (
            _response_schema(op.response, refs)
            if op.content_type == "application/json"
            else {"type": "string"}
        )
        responses[str(op.status)] = {
            "description": "OK",
            "content": {op.content_type: {"schema": schema}},
        }
    for status in sorted(error_statuses(op)):
        responses[str(status)] = {
            "description": ERRORS[status],
            "content": {"application/json": {"schema": ERROR_REF}},
        }
    item: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": op.tag + "_" + op.method.lower() + re.sub(r"\W+", "_", op.path),
        "description": f"Requires the `{op.role.value}` role.",
        "responses": responses,
    }
    params = [_path_parameter(conv, name) for conv, name in PARAM.findall(op.path)]
    if op.query is not None:
        query = components[refs[(op.query, "validation")]["$ref"].rsplit("/", 1)[1]]
        required = set(query.get("required", ()))
        for name, info in query.get("properties", {}).items():
            params.append(_query_parameter(name, info, name in required))
    if params:
        item["parameters"] = params
    if op.body is not None:
        item["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    elif op.upload is not None:
        item["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": refs[(op.upload, "validation")]}},
        }
    return item


def build_openapi(server_url: str) -> dict[str, Any]:
    """The document for the API served at ``server_url`` (the paths are relative to it)."""
    refs, components = _component_schemas()
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        item = _operation(op, refs, components)
        paths.setdefault(openapi_path(op.path), {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "Nurture API", "version": "1"},
        "servers": [{"url": server_url}],
        "components": {
            "schemas": {"Error": ERROR_SCHEMA, **components},
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
        "paths": paths,
    }
