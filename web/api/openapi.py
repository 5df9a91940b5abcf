"""The OpenAPI 3 document, generated from the declared operations."""

from __future__ import annotations

import re
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from web.api.routing import OPERATIONS

REF = "#/components/schemas/{model}"

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        }
    },
}


def _schema(model: Any, components: dict[str, Any]) -> dict[str, Any]:
    if get_origin(model) is list:
        return {"type": "array", "items": _schema(get_args(model)[0], components)}
    if isinstance(model, type) and issubclass(model, BaseModel):
        schema = model.model_json_schema(ref_template=REF, mode="serialization")
        for name, sub in schema.pop("$defs", {}).items():
            components[name] = sub
        components[model.__name__] = schema
        return {"$ref": REF.format(model=model.__name__)}
    return {"type": "object"}


def _input_schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF, mode="validation")
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def build_openapi(base_url: str) -> dict[str, Any]:
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        op_id = op.tag + "_" + op.method.lower() + re.sub(r"\W+", "_", op.path)
        path = "/api/v1" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", op.path)
        item: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": op_id,
            "description": f"Requires the `{op.role.value}` role.",
            "responses": {
                "401": {
                    "description": "No or bad API key",
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model="Error")}}
                    },
                },
                "403": {"description": "Role too low"},
                "422": {
                    "description": "Invalid input; details name each field path",
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model="Error")}}
                    },
                },
            },
        }
        params = [
            {
                "name": n,
                "in": "path",
                "required": True,
                "schema": {"type": "integer" if f"<int:{n}>" in op.path else "string"},
            }
            for n in re.findall(r"<(?:\w+:)?(\w+)>", op.path)
        ]
        if op.query is not None:
            for name, info in op.query.model_json_schema()["properties"].items():
                params.append({"name": name, "in": "query", "required": False, "schema": info})
        if params:
            item["parameters"] = params
        if op.body is not None:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _input_schema(op.body, components)}},
            }
        if op.response is not None:
            item["responses"][str(op.status)] = {
                "description": "OK",
                "content": {op.content_type: {"schema": _schema(op.response, components)}},
            }
        else:
            item["responses"][str(op.status)] = {"description": "OK"}
        paths.setdefault(path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "Nurture API", "version": "1"},
        "servers": [{"url": base_url}],
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
        "paths": paths,
    }
