"""Gymnasium spaces derived from an environment's JSON schemas: the fallback of ``gym/env.py``.

An environment that does not describe itself to Gymnasium (no ``gym_spaces`` hook) is still a
``gymnasium.Env``: its observation becomes a ``Dict`` with one entry per observation field and
its action a ``Dict`` over the action's fields, each field mapped by its JSON-schema type. The
schemas are the ones served at ``/schema``, so this works for a remote server whose code is not
installed here as well as for a local class.

Field mapping (a Gymnasium user reads each entry directly):

- ``boolean`` -> ``Discrete(2)``; an ``enum`` of n values -> ``Discrete(n)`` (index into the enum);
- ``integer`` bounded on both sides -> ``Discrete(n, start=minimum)``, else a scalar int64 ``Box``;
- ``number`` -> a scalar float64 ``Box`` with the schema's bounds (open where it has none);
- ``string`` -> ``Text`` over printable ASCII;
- ``array`` -> ``Sequence`` of its items (a tuple); a model (``object`` with properties) -> ``Dict``;
- anything else (unions such as ``int | None``, free-form dicts) -> ``Text`` holding compact JSON.

The action space holds the action's *required* fields; optional ones keep their defaults (they
are usually modifiers, such as 2048's ``game_name``). An action whose fields are all optional
offers all of them. ``action_fields`` chooses explicitly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from stratagem.envs.gym_text import TEXT_CHARSET

MAX_TEXT_LENGTH = 10_000
INT64 = np.iinfo(np.int64)
ENVELOPE_FIELDS = ("done", "reward", "metadata")  # lifted to the top level by the wire protocol


@dataclass
class Codec:
    """One space and the two conversions between its values and JSON values."""

    space: spaces.Space
    encode: Callable[[Any], Any]  # JSON value -> element of ``space``
    decode: Callable[[Any], Any]  # element of ``space`` -> JSON value


def observation_codec(schema: dict[str, Any]) -> Codec:
    """A ``Dict`` over an observation model's fields, without the protocol's envelope fields."""
    names = [name for name in schema.get("properties", {}) if name not in ENVELOPE_FIELDS]
    if not names:
        raise ValueError(f"the observation schema {schema.get('title', '')!r} has no fields to observe")
    return _model_codec(schema, names, schema.get("$defs", {}))


def action_codec(schema: dict[str, Any], fields: Sequence[str] | None = None) -> Codec:
    """A ``Dict`` over the action fields an agent chooses (see the module docstring)."""
    properties = {k: v for k, v in schema.get("properties", {}).items() if k != "metadata"}  # OpenEnv's: no choice
    if fields is None:
        fields = [name for name in properties if name in schema.get("required", [])] or list(properties)
    unknown = sorted(set(fields) - set(properties))
    if unknown:
        raise ValueError(f"action_fields {unknown} are not fields of the action; it has: {sorted(properties)}")
    if not fields:
        raise ValueError(f"the action schema {schema.get('title', '')!r} has no fields to act with")
    return _model_codec(schema, list(fields), schema.get("$defs", {}))


def _model_codec(schema: dict[str, Any], names: list[str], defs: dict[str, Any]) -> Codec:
    fields = {name: codec_for(schema["properties"][name], defs) for name in names}
    return Codec(
        spaces.Dict({name: c.space for name, c in fields.items()}),
        lambda value: {name: c.encode(value[name]) for name, c in fields.items()},
        lambda value: {name: c.decode(value[name]) for name, c in fields.items()},
    )


def codec_for(schema: dict[str, Any], defs: dict[str, Any]) -> Codec:
    """The codec of one JSON-schema node (``$ref`` resolved against ``defs``)."""
    if "$ref" in schema:
        schema = {**defs[schema["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in schema.items() if k != "$ref"}}
    values = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if values:
        return Codec(spaces.Discrete(len(values)), lambda v: np.int64(values.index(v)), lambda i: values[int(i)])
    kind = schema.get("type")
    if kind == "boolean":
        return Codec(spaces.Discrete(2), lambda v: np.int64(bool(v)), lambda i: bool(int(i)))
    if kind == "integer":
        return _integer_codec(schema)
    if kind == "number":
        low = _bound(schema, "minimum", "exclusiveMinimum", -np.inf, np.inf)
        high = _bound(schema, "maximum", "exclusiveMaximum", np.inf, -np.inf)
        box = spaces.Box(low, high, (), np.float64)
        return Codec(box, lambda v: np.array(v, dtype=np.float64), float)
    if kind == "string":
        text = spaces.Text(min_length=schema.get("minLength", 0), max_length=schema.get("maxLength", MAX_TEXT_LENGTH),
                           charset=TEXT_CHARSET)  # fmt: skip
        return Codec(text, str, str)
    if kind == "array" and isinstance(schema.get("items"), dict):
        item = codec_for(schema["items"], defs)
        return Codec(
            spaces.Sequence(item.space),
            lambda v: tuple(item.encode(x) for x in v),
            lambda v: [item.decode(x) for x in v],
        )
    if kind == "object" and schema.get("properties") and schema.get("additionalProperties") is False:
        return _model_codec(schema, list(schema["properties"]), defs)
    return json_text_codec()


def json_text_codec() -> Codec:
    """Any JSON value as compact ASCII JSON text; a malformed action is a ValueError."""

    def decode(text: Any) -> Any:
        try:
            return json.loads(str(text))
        except json.JSONDecodeError as exc:
            raise ValueError(f"this action field takes JSON text, got {str(text)[:40]!r}: {exc}") from None

    text = spaces.Text(max_length=MAX_TEXT_LENGTH, charset=TEXT_CHARSET)
    return Codec(text, lambda v: json.dumps(v, separators=(",", ":"), sort_keys=True), decode)


def _integer_codec(schema: dict[str, Any]) -> Codec:
    low = schema.get("minimum", schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else None)
    high = schema.get("maximum", schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else None)
    if low is not None and high is not None and 0 < high - low + 1 <= INT64.max:
        return Codec(spaces.Discrete(int(high - low + 1), start=int(low)), np.int64, int)
    box = spaces.Box(INT64.min if low is None else low, INT64.max if high is None else high, (), np.int64)
    return Codec(box, lambda v: np.array(v, dtype=np.int64), int)


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str, default: float, toward: float) -> float:
    """A closed float bound: an exclusive one moves to the next float inside the interval."""
    if inclusive in schema:
        return float(schema[inclusive])
    if exclusive in schema:
        return float(np.nextafter(float(schema[exclusive]), toward))
    return default
