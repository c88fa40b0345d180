"""Masking sensitive payload fields before a payload is shown (``GET /runs/{id}``, ``conveyor show``).

Which fields are sensitive is :mod:`shared.sensitive`'s rule. A sensitive value is replaced with ``"***"`` (a null stays null: that it is empty is not a secret). The walk follows the model's types
through nested models, lists, tuples, sets and dict values, so a secret three levels down is masked too.

The stored payload is the JSON the producer sent, keyed by the wire names (aliases), and may not even fit the model
(a foreign producer's body): masking works on that JSON by field name and alias and never validates it, so a
payload the model refuses is still masked field by field.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from shared.sensitive import UNIONS as _UNIONS
from shared.sensitive import is_secret as _is_secret
from shared.sensitive import is_sensitive
from shared.sensitive import unwrap as _unwrap

MASK = "***"

_SEQUENCES = (list, tuple, set, frozenset, Sequence, typing.List, typing.Tuple, typing.Set)  # noqa: UP006


def mask_payload(model: type[BaseModel], payload: Any) -> Any:
    """A copy of ``payload`` (the stored JSON value) with ``model``'s sensitive fields masked, at any depth."""
    return _mask(model, payload)


def mask_everything(payload: Any) -> Any:
    """Every leaf value masked, keys and shape kept: for a payload whose model is unknown (a job no longer in the
    registry), where which fields are secret cannot be known."""
    if isinstance(payload, dict):
        return {key: mask_everything(value) for key, value in payload.items()}
    if isinstance(payload, list):
        return [mask_everything(value) for value in payload]
    return None if payload is None else MASK


def _mask_model(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    declared: set[str] = set()
    for name, field in model.model_fields.items():
        keys = {name, field.alias, field.serialization_alias} - {None}
        declared |= keys
        for key in keys:
            if key not in out:
                continue
            if is_sensitive(field):
                out[key] = None if out[key] is None else MASK
            else:
                out[key] = _mask(field.annotation, out[key])
    for key in out.keys() - declared:
        out[key] = mask_everything(out[key])
    return out


def _mask(annotation: Any, value: Any) -> Any:
    """``value`` (JSON) as it would be read into ``annotation``, with what is sensitive in it masked."""
    if value is None:
        return None
    annotation = _unwrap(annotation)
    if _is_secret(annotation):
        return MASK
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _mask_model(annotation, value) if isinstance(value, dict) else value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in _UNIONS:
        # Which arm the value was read as is not recorded: apply every arm's masks (masking more, never less).
        for arm in args:
            if arm is not type(None):
                value = _mask(arm, value)
        return value
    if isinstance(value, list) and origin in _SEQUENCES and args:
        if origin in (tuple, typing.Tuple) and not (len(args) == 2 and args[1] is Ellipsis):  # noqa: UP006
            # A fixed tuple: each position its own type (extra items, which validation would refuse, are kept).
            return [_mask(args[i], item) if i < len(args) else item for i, item in enumerate(value)]
        return [_mask(args[0], item) for item in value]
    if isinstance(value, dict) and origin in (dict, Mapping, typing.Dict) and len(args) == 2:  # noqa: UP006
        return {key: _mask(args[1], item) for key, item in value.items()}
    return value
