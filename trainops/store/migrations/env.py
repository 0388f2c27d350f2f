"""Alembic's entry point for trainops' schema.

At run time ``trainops.store.engine.migrate`` hands over a connection that
already holds the migration lock inside an open transaction (see there), so
there is no alembic.ini and no URL here. For a developer writing the next
migration, the alembic command line works too, with a small ini file::

    [alembic]
    script_location = trainops/store/migrations
    sqlalchemy.url = sqlite:////tmp/trainops-dev.db

then ``alembic -c dev.ini upgrade head`` and
``alembic -c dev.ini revision --autogenerate -m "..."``; the engine is built
the same way the store builds it. Review what autogenerate writes, and keep
each migration self-contained (no imports from ``tables``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from trainops.store.engine import VERSION_TABLE, make_engine
from trainops.store.tables import Base


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; autogenerate then writes batch
        # (copy-and-move) operations instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("trainops migrations run online only (no --sql)")
    given = context.config.attributes.get("connection")
    if given is not None:
        run(given)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url in the alembic ini file")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            run(connection)
            connection.commit()
    finally:
        engine.dispose()


main()
