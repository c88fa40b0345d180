"""Which payload fields are sensitive: the one rule that masking (the operations API, ``conveyor show``) and error
messages (a validation error never quotes a sensitive input) share.

A field is sensitive when its type is pydantic's ``SecretStr`` or ``SecretBytes`` (or ``Secret[...]``), bare or
inside ``Optional``/a union, or when it is declared with ``Field(json_schema_extra={"sensitive": True})``.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

from pydantic import BaseModel, Secret, SecretBytes, SecretStr
from pydantic.fields import FieldInfo

SECRET_TYPES: tuple[type, ...] = (SecretStr, SecretBytes, Secret)
UNIONS = (typing.Union, types.UnionType)


def is_sensitive(field: FieldInfo) -> bool:
    """Declared sensitive (``json_schema_extra={"sensitive": True}``) or typed as a secret."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and extra.get("sensitive") is True:
        return True
    return is_secret(field.annotation)


def is_secret(annotation: Any) -> bool:
    annotation = unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, SECRET_TYPES):
        return True
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and issubclass(origin, SECRET_TYPES):  # Secret[int]
        return True
    if origin in UNIONS:
        return any(is_secret(arm) for arm in typing.get_args(annotation) if arm is not type(None))
    return False


def unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` → ``X``."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def sensitive_names(model: type[BaseModel]) -> frozenset[str]:
    """The names and aliases of every sensitive field in ``model`` and the models nested in it (through lists,
    dicts, unions): what a validation error may not quote the input of. Names, not paths: a field named like a
    sensitive one elsewhere in the tree is treated as sensitive too (quoting less, never more)."""
    names: set[str] = set()
    _collect(model, names, set())
    return frozenset(names)


def _collect(annotation: Any, names: set[str], seen: set[type]) -> None:
    annotation = unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return
        seen.add(annotation)
        for name, field in annotation.model_fields.items():
            if is_sensitive(field):
                names.update(n for n in (name, field.alias, field.serialization_alias) if isinstance(n, str))
                if isinstance(field.validation_alias, str):
                    names.add(field.validation_alias)
            else:
                _collect(field.annotation, names, seen)
        return
    for arm in typing.get_args(annotation):
        _collect(arm, names, seen)


@functools.cache
def has_secret_types(model: type[BaseModel]) -> bool:
    """Whether ``model`` or a model nested in it has a field typed as a secret (``SecretStr`` and the like), whose
    JSON form pydantic masks: the outbox then writes the payload with the values revealed. Once per model."""
    return _has_secrets(model, set())


def _has_secrets(annotation: Any, seen: set[type]) -> bool:
    annotation = unwrap(annotation)
    if is_secret(annotation):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return False
        seen.add(annotation)
        return any(_has_secrets(field.annotation, seen) for field in annotation.model_fields.values())
    return any(_has_secrets(arm, seen) for arm in typing.get_args(annotation))
