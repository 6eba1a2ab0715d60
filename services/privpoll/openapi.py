"""The OpenAPI 3.1 document of the HTTP API, its schemas generated from the same models."""

from __future__ import annotations

from functools import cache
from typing import Any

from privpoll import __version__

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        }
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for s in statuses
    }


def _json(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_ADMIN: list[dict[str, list[str]]] = [{"admin": []}]


@cache
def document() -> dict[str, Any]:
    from privpoll.api import VoteRequest
    from privpoll.spec import NewPoll

    new_poll = NewPoll.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    defs = new_poll.pop("$defs", {})
    vote = VoteRequest.model_json_schema()
    poll = {"type": "object", "required": ["name", "uid", "phase", "spec"]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "privpoll", "version": __version__},
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "schemas": {**defs, "NewPoll": new_poll, "Vote": vote, "Error": _ERROR, "Poll": poll},
        },
        "paths": {
            "/api/v1/polls": {
                "post": {
                    "security": _ADMIN,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("NewPoll")}},
                    },
                    "responses": {
                        "201": _json(_ref("Poll"), "created"),
                        **_errors(400, 401, 403, 409, 413, 415, 503),
                    },
                },
                "get": {
                    "security": _ADMIN,
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("Poll")}),
                        **_errors(401, 403),
                    },
                },
            },
            "/api/v1/polls/{name}": {
                "get": {
                    "parameters": _NAME,
                    "responses": {"200": _json(_ref("Poll")), **_errors(404)},
                }
            },
            "/api/v1/polls/{name}/close": {
                "post": {
                    "security": _ADMIN,
                    "parameters": _NAME,
                    "responses": {"200": _json(_ref("Poll")), **_errors(401, 403, 404, 503)},
                }
            },
            "/api/v1/polls/{name}/remix": {
                "post": {
                    "summary": "Rewrite a closed, drained poll's rows with fresh ids, then vacuum",
                    "security": _ADMIN,
                    "parameters": _NAME,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["name", "remixed", "votes", "ballots", "purge"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "remixed": {"type": "boolean"},
                                    "votes": {"type": "integer"},
                                    "ballots": {"type": "integer"},
                                    "purge": {"enum": ["vacuumed", "pending", "gc"]},
                                    "message": {"type": "string"},
                                },
                            }
                        ),
                        **_errors(401, 403, 404, 409, 503),
                    },
                }
            },
            "/api/v1/polls/{name}/invitations": {
                "get": {
                    "security": _ADMIN,
                    "parameters": _NAME,
                    "responses": {
                        "200": _json(
                            {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["voter", "token", "url"],
                                    "properties": {
                                        "voter": {"type": "string"},
                                        "token": {"type": "string"},
                                        "url": {"type": "string"},
                                    },
                                },
                            }
                        ),
                        **_errors(401, 403, 404),
                    },
                }
            },
            "/api/v1/polls/{name}/votes": {
                "post": {
                    "parameters": _NAME,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Vote")}},
                    },
                    "responses": {
                        "202": _json({"type": "object"}, "accepted: durably queued"),
                        **_errors(400, 403, 404, 409, 410, 413, 415, 503),
                    },
                }
            },
            "/api/v1/polls/{name}/results": {
                "get": {
                    "parameters": _NAME,
                    "responses": {"200": _json({"type": "object"}), **_errors(403, 404)},
                }
            },
            "/healthz": {"get": {"responses": {"200": _json({"type": "object"})}}},
            "/readyz": {
                "get": {
                    "responses": {
                        "200": _json({"type": "object"}),
                        "503": _json({"type": "object"}, "not ready"),
                    }
                }
            },
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}},
        },
    }
