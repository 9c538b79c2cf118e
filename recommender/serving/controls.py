"""The recommendation controls as they arrive through the API, checked and turned into engine arguments.

``where``, ``max_per``, ``items`` and ``exclude`` come from ``gr.JSON`` inputs: a client may send the
value itself (a dict, a list) or the same value as a JSON string. Their shapes are checked here, so a
wrong type gets a message naming the parameter and an example; what the values mean (a known column,
a known item id, a cap of at least 1, a diversity from 0 to 1...) is checked by the engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from ..errors import InvalidQueryError

EXAMPLES = {
    "where": '{"channel": "Crafts"}, {"channel": ["Crafts", "Tech Reviews"]} or {"channel": {"not": ["Crafts"]}}',
    "max_per": '{"channel": 2}',
    "items": '["vid000", "vid101"]',
    "exclude": '["vid000", "vid101"]',
}


@dataclass(frozen=True)
class Controls:
    """The controls of one request, in the engine's terms (``None`` / defaults where not given)."""

    where: dict | None = None
    diversity: float = 0.0
    max_per: dict | None = None
    dedupe: bool = True
    offset: int = 0
    items: list | None = None
    exclude: list | None = None

    def engine_arguments(self) -> dict[str, Any]:
        """The controls as keyword arguments of ``Recommender.recommend`` (the values themselves, not copies)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def parse_controls(where: Any = None, diversity: Any = None, max_per: Any = None, dedupe: Any = None,
                   offset: Any = None, items: Any = None, exclude: Any = None) -> Controls:
    """Controls from raw API values; ``None`` (or an empty string) means the default."""
    return Controls(
        where=json_value("where", where, dict),
        diversity=0.0 if blank(diversity) else diversity,
        max_per=json_value("max_per", max_per, dict),
        dedupe=True if blank(dedupe) else checked_bool("dedupe", dedupe),
        offset=0 if blank(offset) else offset,
        items=json_value("items", items, list),
        exclude=json_value("exclude", exclude, list),
    )


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def json_value(name: str, value: Any, kind: type) -> Any:
    """``value`` as a ``kind`` (dict or list), parsed first if it is a JSON string; empty means not given."""
    if blank(value):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise InvalidQueryError(f"{name} is not valid JSON ({error.msg} at character {error.pos}); "
                                    f"expected e.g. {EXAMPLES[name]}.") from None
    if not isinstance(value, kind):
        wanted = "a JSON object" if kind is dict else "a list of item ids"
        raise InvalidQueryError(f"{name} must be {wanted}, e.g. {EXAMPLES[name]}; got {describe(value)}.")
    return value or None


def checked_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidQueryError(f"{name} must be true or false, got {describe(value)}.")
    return value


def describe(value: Any) -> str:
    """A short description of a wrong value, for error messages."""
    shown = json.dumps(value, default=str)
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    return f"{type(value).__name__} {shown}"
