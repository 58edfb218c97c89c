"""The filters the listings share: columns equal to given values, and one service by name."""

from __future__ import annotations

from typing import Any, TypeVarTuple

from sqlalchemy import Select
from sqlalchemy.orm import QueryableAttribute

from conveyor.store.models import Service

Ts = TypeVarTuple("Ts")


def filtered(
    query: Select[*Ts],
    *equal: tuple[QueryableAttribute[Any], object],
    service: str | None = None,
) -> Select[*Ts]:
    """``query`` narrowed to the service named ``service`` (joined) and to each column equal to
    its value; a filter without a value (None or empty) lets everything through."""
    if service:
        query = query.join(Service).where(Service.name == service)
    for column, value in equal:
        if value:
            query = query.where(column == value)
    return query
