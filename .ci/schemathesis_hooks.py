"""Schemathesis hooks for .ci/schemathesis.sh (schemathesis pinned there; private APIs used).

Each rule below narrows one check where openapi.yaml cannot say what the contract says, or
waives one known server discrepancy until it is fixed. Every waived failure is counted and
printed at the end, by rule, so nothing disappears silently. ST_STRICT=1 turns the
known-discrepancy waivers off (to see whether a fix landed).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
from collections import Counter

import jsonschema_rs
import schemathesis
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.core.parameters import ParameterLocation
from schemathesis.openapi.checks import EnsureResourceAvailability, RejectedPositiveData

STRICT = os.environ.get("ST_STRICT") == "1"

# Whole floats schemathesis may draw where the schema says integer, up to the size where a float
# still spells the integer exactly (its own bound).
_EXACT = 2**53

# 422 codes for faults a JSON Schema cannot express: a sample's length against the network, x
# against y, weights against the session's shapes, a parameter count (a product of layer sizes),
# a class index against n_out, a label row summing to 1, an overflow in the forward pass.
SEMANTIC_422 = {"shape_mismatch", "invalid_labels", "too_large", "non_finite_result"}
# Import also answers invalid_value for faults the schema cannot see: a history without
# initial_loss, inline data that differs from the built-in dataset it names.
SEMANTIC_422_BY_OPERATION = {"POST /sessions/import": {"invalid_value"}}

waived: Counter[str] = Counter()


def _report() -> None:
    if not waived:
        return
    print("\nschemathesis_hooks: failures waived by rule (see .ci/schemathesis_hooks.py):", file=sys.stderr)
    for rule, n in sorted(waived.items()):
        print(f"  {n:5d}  {rule}", file=sys.stderr)


atexit.register(_report)


def _integral(value):
    if isinstance(value, float) and value.is_integer() and -_EXACT <= value <= _EXACT:
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


@schemathesis.hook
def map_case(context, case):
    """Positive bodies spell whole numbers as integers.

    The contract (and the server) take only integer literals where an integer goes: `4.0` is
    400 invalid_request. JSON Schema's `integer` admits 4.0, and schemathesis deliberately
    draws it for JSON bodies, so every positive case with one would be a false ST202. Turning
    2.0 into 2 keeps the case schema-valid (a number field takes 2 as well as 2.0) and makes
    positive_data_acceptance test what the contract promises. Negative bodies are left alone.
    """
    meta = case.meta
    body_info = meta.components.get(ParameterLocation.BODY) if meta is not None else None
    if body_info is not None and body_info.mode.is_positive and isinstance(case.body, (dict, list)):
        # Not compared first: 2 == 2.0 in Python, so an equality test would see no change.
        case.body = _integral(case.body)
    return case


def _problem(response):
    try:
        doc = json.loads(response.content or b"")
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _without_null_members(value):
    if isinstance(value, dict):
        return {k: _without_null_members(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_null_members(v) for v in value]
    return value


def _body_valid(case, body) -> bool:
    alternative = case.operation.get_body_for_media_type(case.media_type or "application/json")
    if alternative is None:
        return False
    return jsonschema_rs.validator_for(alternative.validation_schema).is_valid(body)


def _only_body_is_negative(case) -> bool:
    meta = case.meta
    if meta is None:
        return False
    return all(
        info.mode.is_positive for loc, info in meta.components.items() if loc != ParameterLocation.BODY
    )


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure except the narrow classes named here (returning False drops one)."""
    if isinstance(failure, RejectedPositiveData) and response.status_code == 422:
        # A schema-valid body the server refuses for a reason the schema cannot express.
        problem = _problem(response) or {}
        code = problem.get("code")
        if code in SEMANTIC_422 or code in SEMANTIC_422_BY_OPERATION.get(case.operation.label, ()):
            waived[f"ST202 422 {code} (not expressible in JSON Schema)"] += 1
            return False

    if not STRICT and isinstance(failure, AcceptedNegativeData) and 200 <= response.status_code < 300:
        # KNOWN SERVER DISCREPANCIES (reported; remove once fixed). A schema-invalid body the
        # server accepts is waived only when the body *as the server reads it* is schema-valid,
        # so every other negative case still has to be refused:
        # - `null` for an optional, non-nullable field reads as absent
        #   ({"layers": [4, 3], "init": {"seed": null}} is 201; the spec wants 400);
        # - check's {"gradients": {"weights": null}} reads as a submission of shape null
        #   (200 with a failed item; the spec's `Submitted` is `not null`);
        # - a nested object sent as an array of exactly its fields reads as that object, by
        #   position, as serde's derived structs do ("init": ["numpy_rand", 3, null, null]
        #   is 201; the spec wants an object).
        body = case.body
        if isinstance(body, dict) and _only_body_is_negative(case):
            read, reasons = _as_server_reads(case.operation.label, body)
            if reasons and _body_valid(case, read):
                for reason in sorted(reasons):
                    waived[f"ST201 {reason} (known server discrepancy)"] += 1
                return False

    if not STRICT and isinstance(failure, RejectedPositiveData) and response.status_code == 400:
        # KNOWN SPEC IMPRECISION (reported; remove once openapi.yaml bounds these integers):
        # layer sizes, class indices and import's sample_shape have no `maximum`, so
        # schemathesis sends integer literals past 64 bits, which serde_json reads as floats
        # (400 "invalid type: floating point" where the contract would say too_large or
        # invalid_labels), or past i64 for sample_shape (400 "expected i64"). Waived only when
        # the body holds such an integer and the server's detail names that number.
        detail = (_problem(response) or {}).get("detail", "")
        match = _BIG_DETAIL.search(detail) if isinstance(detail, str) else None
        if match and abs(float(match.group(1) or match.group(2))) >= 2**63 and _has_huge_int(case.body):
            waived["ST202 400 for an integer literal beyond 64 bits (known spec imprecision)"] += 1
            return False

    if not STRICT and isinstance(failure, EnsureResourceAvailability) and response.status_code == 404:
        # KNOWN SPEC IMPRECISION (reported; remove once `builtin` is an enum): `builtin` is any
        # string, so schemathesis sends {"builtin": ""} to a session it just created, and the
        # contract's 404 for an unknown dataset name reads to it as the session gone missing.
        # Waived only when the 404 is about the dataset name, not the session.
        detail = (_problem(response) or {}).get("detail", "")
        if isinstance(detail, str) and detail.startswith("no built-in dataset"):
            waived["ST302 404 for an unknown built-in dataset name (known spec imprecision)"] += 1
            return False

    return True


def _as_server_reads(label, body):
    """The body as the server reads it, and which known discrepancies that took."""
    reasons = set()
    body = dict(body)
    for key, fields in _SEQ_STRUCTS.get(label, {}).items():
        value = body.get(key)
        if isinstance(value, list) and len(value) == len(fields):
            body[key] = dict(zip(fields, value))
            reasons.add("nested object accepted as an array of its fields")
    gradients = body.get("gradients") if label == "POST /sessions/{id}/check" else None
    if isinstance(gradients, dict) and "weights" in gradients and gradients["weights"] is None:
        # Any non-null value stands in: the server compares it and fails the item.
        body["gradients"] = {**gradients, "weights": []}
        reasons.add("check: gradients.weights null taken as a submission")
    stripped = _without_null_members(body)
    if stripped != body:
        reasons.add("null for an optional field accepted as absent")
    return stripped, reasons


# The server's nested request structs and their fields in declaration order, which is the
# order serde reads an array in.
_SEQ_STRUCTS = {
    "POST /sessions": {"init": ("method", "seed", "weights", "biases")},
    "POST /sessions/{id}/check": {"gradients": ("weights", "biases")},
    "POST /sessions/import": {
        "init": ("method", "seed"),
        "dataset": ("builtin", "sample_shape", "x", "y"),
    },
}

_BIG_DETAIL = re.compile(
    r"invalid type: floating point `([-+0-9.eE]+)`|invalid value: integer `(-?[0-9]+)`, expected i64"
)


def _has_huge_int(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not (-(2**63) <= value <= 2**63 - 1)
    if isinstance(value, list):
        return any(_has_huge_int(v) for v in value)
    if isinstance(value, dict):
        return any(_has_huge_int(v) for v in value.values())
    return False
