"""Blocks of `conveyor.yml` whose keys are extensions: `health:` and `monitor:` take one key per
check, a `notify:` entry one key per notifier. Which keys exist is the registry's business
(conveyor.extensions), so a new check or notifier needs no change here.

A block is declared as a model with its fixed keys (`monitor.interval`, `notify[].on`); the
first time it is validated, it is extended with one optional field per registered extension,
typed by that extension's options model. Validation therefore reports a wrong option where it
is written (`environments.production.health.tcp.port`), and the JSON Schema lists every
extension with its options.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, create_model
from pydantic_core import CoreSchema

from conveyor.extensions import Extension, Kind, LoadProblem, registry

__all__ = ["DEPLOY_KEYS", "ExtensionBlock", "target_options"]

#: The `deploy:` keys every target shares; the others are the options of its target.
DEPLOY_KEYS = frozenset({"target", "start", "strategy", "url"})

_lock = threading.Lock()
_extended: dict[type[ExtensionBlock], type[ExtensionBlock]] = {}


class ExtensionBlock(BaseModel):
    """Base of a block with one optional key per registered extension of `extension_kind`."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, coerce_numbers_to_str=True, defer_build=True
    )

    extension_kind: ClassVar[Kind]
    # Python field name → extension name, on the extended class (names may hold a '-').
    extension_fields: ClassVar[dict[str, str]] = {}

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        if "extension_fields" in cls.__dict__:  # already the extended class
            return handler(source)
        return handler.generate_schema(cls.extended())

    @classmethod
    def extended(cls) -> type[Self]:
        """The block with a field per extension (made once per process)."""
        if "extension_fields" in cls.__dict__:
            return cls
        found = _extended.get(cls)  # every validation asks: no lock once it is made
        if found is not None:
            return found  # type: ignore[return-value]  # a subclass of cls, made by _extend
        with _lock:
            found = _extended.get(cls)
            if found is None:
                found = _extend(cls, registry().of(cls.extension_kind))
                _extended[cls] = found
        return found  # type: ignore[return-value]  # a subclass of cls, made by _extend

    @classmethod
    def of(cls, **values: Any) -> Self:
        """A block built in code, validated like one read from a file:
        ``Health.of(http={"path": "/healthz"})``."""
        return cls.extended().model_validate(values)

    def configured(self) -> dict[str, BaseModel]:
        """The extensions this block sets, by name, in registry order."""
        fields = type(self).extended().extension_fields
        values = {name: getattr(self, field, None) for field, name in fields.items()}
        return {name: value for name, value in values.items() if value is not None}

    @classmethod
    def choices(cls) -> str:
        """The extensions this block accepts, for a message: "'a', 'b' or 'c'"."""
        names = [f"'{name}'" for name in registry().names(cls.extension_kind)]
        return " or ".join(filter(None, [", ".join(names[:-1]), names[-1]]))

    def without(self, *names: str) -> Self | None:
        """The same block with the named extensions left out; None if none is left."""
        fields = {ext: field for field, ext in type(self).extended().extension_fields.items()}
        update = {fields[name]: None for name in names if name in fields}
        block = self.model_copy(update=update)
        return block if block.configured() else None


def _extend(base: type[ExtensionBlock], extensions: dict[str, Extension]) -> type[ExtensionBlock]:
    fields: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, extension in extensions.items():
        field = name.replace("-", "_")
        if field in base.model_fields or field in names:
            # A plugin must not take the file format down: it is left out of this block only.
            message = f"its name clashes with the key {field!r} of {base.__name__}; left out there"
            registry().problems.append(LoadProblem(extension.kind, extension.origin, message))
            continue
        names[field] = name
        fields[field] = (
            extension.options | None,
            Field(None, alias=name if field != name else None, description=extension.description),
        )
    model = create_model(
        base.__name__,
        __base__=base,
        __module__=base.__module__,
        __doc__=base.__doc__,
        **fields,
    )
    model.extension_fields = names
    return model


def target_options(target: str, deploy: Mapping[str, Any]) -> BaseModel:
    """The options of ``target`` among the keys of a `deploy:` mapping (all but DEPLOY_KEYS),
    validated by the target's model. ExtensionError for an unknown target, ValidationError
    (locations relative to `deploy:`) for options it refuses."""
    model = registry().get(Kind.TARGET, target).options
    return model.model_validate({k: v for k, v in deploy.items() if k not in DEPLOY_KEYS})
