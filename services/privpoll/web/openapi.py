"""The OpenAPI 3.1 document of the HTTP API, its schemas generated from the same models.

Every status an operation can answer is listed with the body it carries, and every body
schema says exactly which fields come back (tests/integration/test_bad_input.py holds the
running system to this document with schemathesis).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from privpoll import __version__

_REF = "#/components/schemas/{model}"

_ERROR: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable, for programs"},
                "message": {"type": "string", "description": "what to do next, for people"},
                "fields": {
                    "type": "array",
                    "description": "one entry per invalid field of the body",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["field", "message", "code"],
                        "properties": {
                            "field": {"type": "string", "description": "e.g. spec.choices.0"},
                            "message": {"type": "string", "description": "for people"},
                            "code": {
                                "type": "string",
                                "description": "stable, for programs: e.g. string_too_short",
                            },
                        },
                    },
                },
            },
        }
    },
}

_TURNOUT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["eligible", "voters", "votes"],
    "properties": {
        "eligible": {"type": "integer", "minimum": 0},
        "voters": {"type": "integer", "minimum": 0, "description": "distinct voters stored"},
        "votes": {"type": "integer", "minimum": 0, "description": "votes stored"},
    },
}

_POLL_FIELDS: dict[str, Any] = {
    "name": {"type": "string"},
    "uid": {"type": "string", "format": "uuid"},
    "phase": {"enum": ["Pending", "Open", "Closed"]},
    "spec": {"$ref": "#/components/schemas/PollRules"},
    "eligibleVoters": {"type": "integer", "minimum": 0},
}

_POLL: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": list(_POLL_FIELDS),
    "properties": _POLL_FIELDS,
}

_MOMENT: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
_POLL_WITH_TURNOUT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [*_POLL_FIELDS, "turnout", "remixedAt", "purgedAt"],
    "properties": {
        **_POLL_FIELDS,
        "turnout": {"$ref": "#/components/schemas/Turnout"},
        "remixedAt": {**_MOMENT, "description": "when its rows were re-mixed (null: not yet)"},
        "purgedAt": {
            **_MOMENT,
            "description": (
                "when the old row versions left the database's files and WAL and the "
                "poll's stream and voters bucket were deleted (null: not yet)"
            ),
        },
    },
}

_RESULTS_FIELDS: dict[str, Any] = {
    "phase": {"enum": ["Pending", "Open", "Closed"]},
    "pending": {
        "type": ["integer", "null"],
        "minimum": 0,
        "description": "votes accepted (202) but not yet stored, so not counted in `choices`; "
        "null when the queue cannot say right now",
    },
    "verdict": {
        "type": "object",
        "additionalProperties": False,
        "required": ["winner", "message"],
        "properties": {
            "winner": {
                "type": ["string", "null"],
                "description": "the leading choice when its 95% interval lies above every "
                "other's; null when the intervals overlap (no winner can be called)",
            },
            "message": {"type": "string", "description": "the same, in words"},
        },
    },
    "choices": {"type": "array", "items": {"$ref": "#/components/schemas/ChoiceResult"}},
    "votes": {"$ref": "#/components/schemas/VoteCounts"},
    "noise": {"$ref": "#/components/schemas/Noise"},
    "epsilon": {
        "type": ["number", "null"],
        "description": "the privacy loss bound ε of randomized response; null when it is off",
    },
}

_INVITATION: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["voter", "token", "url"],
    "properties": {
        "voter": {"type": "string"},
        "token": {"type": "string"},
        "url": {"type": "string", "format": "uri"},
    },
}

_REMIXED: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "remixed", "votes", "ballots", "purge", "message"],
    "properties": {
        "name": {"type": "string"},
        "remixed": {"const": True},
        "votes": {"type": "integer", "minimum": 0},
        "ballots": {"type": "integer", "minimum": 0},
        "purge": {"enum": ["vacuumed", "pending", "gc"]},
        "message": {"type": "string"},
    },
}

_QUEUED: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["status"],
    "properties": {"status": {"const": "queued"}},
}

_READY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["ready", "checks"],
    "properties": {
        "ready": {"type": "boolean"},
        "checks": {
            "type": "object",
            "additionalProperties": False,
            "required": ["nats", "database", "schema"],
            "properties": {
                "nats": {"type": "boolean"},
                "database": {"type": "boolean"},
                "schema": {"type": "boolean"},
            },
        },
    },
}

_HEALTH: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["status"],
    "properties": {"status": {"const": "ok"}},
}

# Why each error status comes back; an operation lists the ones it can answer.
_WHY = {
    400: "the body or a field is invalid (the message and `fields` say which)",
    401: "no admin token was sent",
    403: "the token is not valid",
    404: "there is no poll of that name",
    409: "conflicts with the poll's state",
    410: "the poll is closed",
    413: "the body is too large",
    415: "the body is not application/json",
    429: "too many requests from this address; retry after Retry-After seconds",
    503: "a server it needs is unavailable; retry after Retry-After seconds",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"const": "Bearer"}}},
    429: {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
    503: {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
}


def _errors(*statuses: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": _WHY[status],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        out[str(status)] = response
    return out


def _json(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


_NAME = [
    {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "the poll's name; any other text answers 404",
        "schema": {"type": "string"},
    }
]
_VOTER = {
    "name": "voter",
    "in": "path",
    "required": True,
    "description": "the voter id, URL-encoded",
    "schema": {"type": "string"},
}
_ERASED: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "erased", "message"],
    "properties": {
        "name": {"type": "string"},
        "erased": {
            "type": "object",
            "additionalProperties": False,
            "required": ["votes", "ballots", "invitations", "queue", "pollResource"],
            "properties": {
                "votes": {"type": "integer", "minimum": 0, "description": "actor rows"},
                "ballots": {"type": "integer", "minimum": 0, "description": "real and fake"},
                "invitations": {"type": "integer", "minimum": 0},
                "queue": {"type": "boolean"},
                "pollResource": {"type": "boolean", "description": "on Kubernetes"},
            },
        },
        "message": {"type": "string"},
    },
}
_INVITATIONS_QUEUED: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["queued", "skipped", "alreadySent"],
    "properties": {
        "queued": {"type": "integer", "minimum": 0},
        "skipped": {
            "type": "array",
            "items": {"type": "string"},
            "description": "voter ids that are not e-mail addresses",
        },
        "alreadySent": {"type": "integer", "minimum": 0, "description": "mailed before"},
    },
}
_REMINDERS_QUEUED: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["queued"],
    "properties": {"queued": {"type": "integer", "minimum": 0}},
}
_MAIL_KIND: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["queued", "sending", "sent", "failed", "skipped", "failures", "done"],
    "properties": {
        **{
            state: {"type": "integer", "minimum": 0}
            for state in ("queued", "sending", "sent", "failed", "skipped")
        },
        "failures": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["voter", "problem"],
                "properties": {"voter": {"type": "string"}, "problem": {"type": "string"}},
            },
        },
        "done": {"type": "boolean"},
    },
}
_MAIL_PROGRESS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["configured", "invitations", "reminders"],
    "properties": {
        "configured": {"type": "boolean"},
        "howToConfigure": {"type": "string"},
        "invitations": _MAIL_KIND,
        "reminders": _MAIL_KIND,
    },
}
_ADMIN: list[dict[str, list[str]]] = [{"admin": []}]
# Admin calls: a missing token, a wrong one, or too many wrong ones from one address.
_AUTH = (401, 403, 429)


def _models() -> dict[str, Any]:
    """JSON schemas of the pydantic models the API reads and writes, sharing one $defs."""
    from privpoll.core.results import ChoiceResult, VoteCounts
    from privpoll.core.spec import NewPoll, PollRules
    from privpoll.web.vote_route import VoteRequest

    _, found = models_json_schema(
        [
            (NewPoll, "validation"),
            (PollRules, "validation"),
            (VoteRequest, "validation"),
            (ChoiceResult, "serialization"),
            (VoteCounts, "serialization"),
        ],
        by_alias=True,
        ref_template=_REF,
    )
    schemas: dict[str, Any] = found["$defs"]
    for name in ("ChoiceResult", "VoteCounts"):
        schemas[name]["additionalProperties"] = False
    return schemas


@cache
def document() -> dict[str, Any]:
    schemas = _models()
    schemas["Vote"] = schemas.pop("VoteRequest")
    results = {
        "type": "object",
        "additionalProperties": False,
        "required": list(_RESULTS_FIELDS),
        "properties": _RESULTS_FIELDS,
    }
    ours = {
        "Error": _ERROR,
        "Poll": _POLL,
        "PollWithTurnout": _POLL_WITH_TURNOUT,
        "Turnout": _TURNOUT,
        "PollResults": results,
    }
    assert not set(ours) & set(schemas), "a hand-written schema shadows a model's"
    schemas.update(ours)
    return {
        "openapi": "3.1.0",
        "info": {"title": "privpoll", "version": __version__},
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": {
            "/api/v1/polls": {
                "post": {
                    "summary": "Create a poll",
                    "description": (
                        "The poll as JSON, or as multipart/form-data for a long voter list: "
                        "the part 'poll' holds {name, spec} without spec.voters, the part "
                        "'voters' a text file with one voter id a line (up to 1,000,000; blank "
                        "lines and # comments skipped)."
                    ),
                    "security": _ADMIN,
                    "requestBody": {
                        "required": True,
                        "content": {
                            **_body("NewPoll")["content"],
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["poll", "voters"],
                                    "properties": {
                                        "poll": {
                                            "type": "string",
                                            "description": "{name, spec} as JSON, no voters",
                                        },
                                        "voters": {
                                            "type": "string",
                                            "contentMediaType": "text/plain",
                                            "description": "one voter id a line",
                                        },
                                    },
                                },
                                "encoding": {
                                    "poll": {"contentType": "application/json"},
                                    "voters": {"contentType": "text/plain"},
                                },
                            },
                        },
                    },
                    "responses": {
                        "201": _json(_ref("Poll"), "created"),
                        **_errors(400, *_AUTH, 409, 413, 415, 503),
                    },
                },
                "get": {
                    "summary": "Every poll, with its turnout",
                    "security": _ADMIN,
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("PollWithTurnout")}),
                        **_errors(*_AUTH, 503),
                    },
                },
            },
            "/api/v1/polls/{name}": {
                "get": {
                    "summary": "A poll, its phase and turnout (no voter list)",
                    "parameters": _NAME,
                    "responses": {"200": _json(_ref("PollWithTurnout")), **_errors(404, 503)},
                },
                "delete": {
                    "summary": "Erase a poll: its vote rows, its row, stream, voters bucket "
                    "and registry entry; on Kubernetes the Poll resource and its sinks",
                    "security": _ADMIN,
                    "parameters": _NAME,
                    "responses": {
                        "200": _json(_ERASED, "what was erased"),
                        **_errors(*_AUTH, 404, 503),
                    },
                },
            },
            "/api/v1/polls/{name}/voters/{voter}/reissue": {
                "post": {
                    "summary": "A new invitation link for one voter; their old link stops "
                    "working (within a second on every ingest worker). A voter who voted "
                    "still cannot vote again.",
                    "security": _ADMIN,
                    "parameters": [*_NAME, _VOTER],
                    "responses": {
                        "200": _json(_INVITATION, "the voter's new invitation"),
                        **_errors(*_AUTH, 404, 409, 503),
                    },
                }
            },
            "/api/v1/polls/{name}/close": {
                "post": {
                    "summary": "Close a poll now",
                    "security": _ADMIN,
                    "parameters": _NAME,
                    "responses": {
                        "200": _json(_ref("PollWithTurnout")),
                        **_errors(*_AUTH, 404, 503),
                    },
                }
            },
            "/api/v1/polls/{name}/remix": {
                "post": {
                    "summary": "Rewrite a closed, drained poll's rows with fresh ids, then vacuum",
                    "security": _ADMIN,
                    "parameters": _NAME,
                    "responses": {"200": _json(_REMIXED), **_errors(*_AUTH, 404, 409, 503)},
                }
            },
            "/api/v1/polls/{name}/invitations": {
                "get": {
                    "summary": "Every voter's invitation: token and link",
                    "security": _ADMIN,
                    "parameters": _NAME,
                    "responses": {
                        "200": _json({"type": "array", "items": _INVITATION}),
                        **_errors(*_AUTH, 404, 503),
                    },
                }
            },
            "/api/v1/polls/{name}/invitations/send": {
                "post": {
                    "summary": "E-mail every voter whose id is an address their own link, in "
                    "the background (GET .../mail shows the progress); nobody mailed before "
                    "is mailed again unless again=true",
                    "security": _ADMIN,
                    "parameters": [
                        *_NAME,
                        {
                            "name": "again",
                            "in": "query",
                            "required": False,
                            "description": "also mail the voters who got their invitation",
                            "schema": {"enum": ["true", "false"]},
                        },
                    ],
                    "responses": {
                        "202": _json(_INVITATIONS_QUEUED, "queued"),
                        **_errors(400, *_AUTH, 404, 409, 503),
                    },
                }
            },
            "/api/v1/polls/{name}/reminders": {
                "post": {
                    "summary": "E-mail a reminder to every voter with an address who has not "
                    "voted (checked again just before each message leaves)",
                    "security": _ADMIN,
                    "parameters": _NAME,
                    "responses": {
                        "202": _json(_REMINDERS_QUEUED, "queued"),
                        **_errors(*_AUTH, 404, 409, 503),
                    },
                }
            },
            "/api/v1/polls/{name}/mail": {
                "get": {
                    "summary": "Progress of the invitations and reminders, and each address "
                    "that failed for good with the mail server's words",
                    "security": _ADMIN,
                    "parameters": _NAME,
                    "responses": {"200": _json(_MAIL_PROGRESS), **_errors(*_AUTH, 404, 503)},
                }
            },
            "/api/v1/polls/{name}/votes": {
                "post": {
                    "summary": "Vote with an invitation's voter id and token",
                    "parameters": _NAME,
                    "requestBody": _body("Vote"),
                    "responses": {
                        "202": _json(_QUEUED, "accepted: durably queued"),
                        **_errors(400, 403, 404, 409, 410, 413, 415, 429, 503),
                    },
                }
            },
            "/api/v1/polls/{name}/results": {
                "get": {
                    "summary": "Estimates with 95% intervals (afterClose polls: admin only)",
                    # Anyone; the admin token also shows an afterClose poll's results early.
                    "security": [{}, *_ADMIN],
                    "parameters": _NAME,
                    "responses": {"200": _json(_ref("PollResults")), **_errors(403, 404, 503)},
                }
            },
            "/healthz": {"get": {"responses": {"200": _json(_HEALTH, "the process is up")}}},
            "/readyz": {
                "get": {
                    "responses": {
                        "200": _json(_READY, "NATS and the database answer, the schema is current"),
                        "503": _json(_READY, "not ready: `checks` says which is missing"),
                    }
                }
            },
            "/metrics": {
                "get": {
                    "responses": {
                        "200": {
                            "description": (
                                "Prometheus text, summed over the ingest's worker processes; "
                                "no label names a voter or choice"
                            ),
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    }
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "responses": {"200": _json({"type": "object"}, "this document")},
                }
            },
        },
    }
