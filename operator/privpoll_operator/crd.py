"""The Poll CustomResourceDefinition, its schema generated from the model the API validates with.

``python -m privpoll_operator.crd > crds/poll.yaml`` writes it, and the same output goes to
``charts/privpoll/crds/poll.yaml`` (helm installs it from there); a test fails when either
committed file and the model drift apart.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from privpoll.cluster import GROUP, KIND, PLURAL, VERSION
from privpoll.core.spec import PollSpec

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION", "poll_crd", "render", "spec_schema"]

# Cross-field checks the API server makes before the operator ever sees the object.
_RULES: dict[tuple[str, ...], list[dict[str, str]]] = {
    ("schedule",): [
        {
            "rule": "!has(self.opensAt) || !has(self.closesAt) || self.opensAt == null || "
            "self.closesAt == null || timestamp(self.closesAt) > timestamp(self.opensAt)",
            "message": "closesAt must be after opensAt",
        }
    ],
    ("voters",): [
        {
            "rule": "(has(self.ids) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0) + "
            "(has(self.configMapRefs) ? 1 : 0) + (has(self.secretRef) ? 1 : 0) == 1",
            "message": "give exactly one of ids, configMapRef, configMapRefs or secretRef",
        }
    ],
    ("noise", "fakeVotes"): [
        {
            "rule": "!has(self.distribution) || self.distribution != 'fixed' || has(self.count)",
            "message": "distribution 'fixed' needs 'count' (fake votes per real vote)",
        },
        {
            "rule": "!has(self.distribution) || self.distribution != 'uniform' || has(self.max)",
            "message": "distribution 'uniform' needs 'max' (most fake votes)",
        },
    ],
}
# Scalar lists whose items must be unique: the API server rejects duplicates itself.
_SETS = {("choices",), ("voters", "ids")}


def _structural(
    node: dict[str, Any], defs: dict[str, Any], path: tuple[str, ...]
) -> dict[str, Any]:
    """Turn pydantic's JSON Schema into a Kubernetes structural OpenAPI v3 schema."""
    if "$ref" in node:
        return _structural(
            {
                **defs[node["$ref"].rsplit("/", 1)[-1]],
                **{k: v for k, v in node.items() if k != "$ref"},
            },
            defs,
            path,
        )
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(node["anyOf"])
        if len(options) == 1:
            merged = {**{k: v for k, v in node.items() if k != "anyOf"}, **options[0]}
            single = _structural(merged, defs, path)
            if nullable:
                single["nullable"] = True
            return single
        # A union of a word and a mapping (choiceWeights): checked by the operator.
        loose: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}
        if "description" in node:
            loose["description"] = node["description"]
        return loose
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in {"title", "default", "additionalProperties", "$defs"}:
            continue
        if key == "const":
            out["enum"] = [value]
            out.setdefault("type", "string")
        elif key == "exclusiveMinimum":
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum":
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "properties":
            out["properties"] = {
                name: _structural(prop, defs, (*path, name)) for name, prop in value.items()
            }
        elif key == "items":
            out["items"] = _structural(value, defs, (*path, "[]"))
        else:
            out[key] = value
    if path in _SETS:
        out["x-kubernetes-list-type"] = "set"
    if path in _RULES:
        out["x-kubernetes-validations"] = _RULES[path]
    return out


def spec_schema() -> dict[str, Any]:
    schema = PollSpec.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})
    return _structural(schema, defs, ())


def poll_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": "poll",
                "kind": KIND,
                "shortNames": ["pp"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Votes", "type": "integer", "jsonPath": ".status.turnout.votes"},
                        {"name": "Closes", "type": "date", "jsonPath": ".spec.schedule.closesAt"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "spec": spec_schema(),
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    header = "# Generated by `python -m privpoll_operator.crd` from privpoll.core.spec.PollSpec.\n"
    return header + yaml.dump(poll_crd(), Dumper=_Dumper, sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
