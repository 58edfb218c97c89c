"""Who is asking (server/session.py) and pipeline secrets (server/pipeline_secrets.py)."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from conveyor.server.schemas.common import Schema

__all__ = ["Me", "SecretListed", "SecretRemoved", "SecretSet", "SecretStored", "SecretsSet"]


class Me(Schema):
    """Who the caller is, with which scopes, and what that lets them do."""

    user: str | None = Field(description="The person; null for a token of no user.")
    name: str = Field(description="The user, else the token's name.")
    token: str | None = Field(description="The token's name; null when signed in by password.")
    via: str = Field(description="How the caller authenticated: token or session.")
    scopes: list[str]
    services: list[str] = Field(description="The services it acts on; empty: every one.")
    environments: list[str] = Field(description="The environments it acts on; empty: every one.")
    can: dict[str, bool] = Field(description="read, trigger, approve, admin: allowed or not.")


class SecretListed(Schema):
    """A secret's name, scope and times: never its value."""

    service: str
    environment: str | None = Field(description="null: every environment of the service.")
    name: str
    created_at: dt.datetime
    updated_at: dt.datetime
    updated_by: str | None


class SecretSet(SecretListed):
    created: bool = Field(description="False: an existing secret got a new value.")


class SecretStored(SecretSet):
    registered: bool = Field(
        description="Whether the service is registered (secrets may be set before it is)."
    )


class SecretsSet(Schema):
    secrets: list[SecretSet]
    registered: bool = Field(
        description="Whether the service is registered (secrets may be set before it is)."
    )


class SecretRemoved(Schema):
    service: str
    environment: str | None
    name: str
    removed: bool
