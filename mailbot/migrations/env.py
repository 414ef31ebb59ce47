"""Alembic environment: runs migrations against the URL that ``mailbot init-db`` was given."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import DateTime, String

from mailbot.adapters.database import make_engine
from mailbot.adapters.orm import EnumText, UTCDateTime, metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Write our column types as plain SQLAlchemy types, so migrations never import the ORM."""
    if type_ == "type" and isinstance(obj, EnumText):
        return f"sa.{String(20)!r}"
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return f"sa.{DateTime(timezone=True)!r}"
    return False


config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "mailbot.adapters.database.alembic_config sets the URL"

engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
