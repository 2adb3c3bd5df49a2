"""sqlkv from SQLAlchemy, Alembic and pandas: ORM sessions, reflection,
migrations (batch mode too), a pandas round trip, the async engine, and the
one-writer rule, over LMDB and over a Redis of the test run's own."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import math
import tomllib
import urllib.parse
from pathlib import Path

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is the extra [sqlalchemy] (and in [test])")

from helpers import unique_namespace  # noqa: E402
from sqlalchemy import ForeignKey, String, create_engine, inspect, select, text  # noqa: E402
from sqlalchemy.dialects import registry  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship  # noqa: E402

import sqlkv  # noqa: E402
from sqlkv import dbapi2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIALECTS = {"sqlkv": "SQLKVDialect", "sqlkv.aio": "SQLKVDialect_aio"}


def _declared_entry_points() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return project["project"]["entry-points"]["sqlalchemy.dialects"]


def _register_if_not_installed() -> None:
    """A checkout whose installed metadata predates the entry points, or names the modules
    they were in before a move, still finds the dialects where pyproject.toml says."""
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="sqlalchemy.dialects")}
    for name, target in _declared_entry_points().items():
        if installed.get(name) != target:
            module, _, cls = target.partition(":")
            registry.register(name, module, cls)


_register_if_not_installed()


def test_entry_points_name_the_dialects() -> None:
    declared = _declared_entry_points()
    assert declared == {name: f"sqlkv.dbapi2.dialect:{cls}" for name, cls in DIALECTS.items()}
    from sqlkv.dbapi2 import dialect

    for target in declared.values():
        assert getattr(dialect, target.split(":")[1]).driver.startswith("sqlkv")


@pytest.fixture(params=["lmdb", "redis"])
def store_url(request, tmp_path) -> str:
    """The store URL of a fresh store: LMDB in a temporary directory, or a Redis namespace."""
    if request.param == "lmdb":
        return f"lmdb://{tmp_path / 'kv'}"
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?namespace={unique_namespace()}"


def _url(store_url: str, name: str = "app.db", driver: str = "sqlkv", **options: str) -> str:
    query = urllib.parse.urlencode({"store": store_url, **options})
    return f"{driver}:///{name}?{query}"


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    books: Mapped[list[Book]] = relationship(back_populates="author", cascade="all, delete-orphan")


class Book(Base):
    __tablename__ = "book"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    price: Mapped[float | None]
    author_id: Mapped[int] = mapped_column(ForeignKey("author.id"))
    author: Mapped[Author] = relationship(back_populates="books")


def test_orm_session_and_reflection(store_url) -> None:
    engine = create_engine(_url(store_url))
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Author(name="Le Guin", books=[Book(title="The Dispossessed", price=9.5),
                                                  Book(title="Lathe of Heaven", price=None)]))
        session.commit()
    with Session(engine) as session:
        author = session.scalars(select(Author).where(Author.name == "Le Guin")).one()
        assert sorted(b.title for b in author.books) == ["Lathe of Heaven", "The Dispossessed"]
        session.add(Author(name="Le Guin"))
        with pytest.raises(sqlalchemy.exc.IntegrityError) as caught:
            session.commit()
        assert isinstance(caught.value.orig, dbapi2.IntegrityError)
        session.rollback()
        author.books[0].price = 11.0
        session.commit()
    inspector = inspect(engine)
    assert inspector.get_table_names() == ["author", "book"]
    assert [fk["referred_table"] for fk in inspector.get_foreign_keys("book")] == ["author"]
    assert {c["name"] for c in inspector.get_columns("book")} == {"id", "title", "price", "author_id"}
    engine.dispose()
    # What the ORM committed is in the store: sqlkv's own API reads it back.
    store = sqlkv.open_store(store_url)
    try:
        with sqlkv.connect(store, "app.db", readonly=True) as db:
            assert db.query("SELECT title, price FROM book ORDER BY id").rows == [
                ("The Dispossessed", 11.0), ("Lathe of Heaven", None)]
    finally:
        store.close()


def test_one_writer_and_readonly_readers(store_url) -> None:
    writer = create_engine(_url(store_url))
    with writer.begin() as conn:
        conn.execute(text("CREATE TABLE t(x)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    with writer.connect() as held:  # the writer's one pooled connection holds the lease
        held.execute(text("SELECT 1"))
        other = create_engine(_url(store_url))
        with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
            other.connect()
        assert isinstance(caught.value.orig, sqlkv.LockedError)
        reader = create_engine(_url(store_url, readonly="true"))
        with reader.connect() as conn:
            assert conn.execute(text("SELECT x FROM t")).all() == [(1,)]
            with pytest.raises(sqlalchemy.exc.OperationalError):
                conn.execute(text("INSERT INTO t VALUES (2)"))
        reader.dispose()
        other.dispose()
    writer.dispose()


def test_url_options_are_checked() -> None:
    with pytest.raises(sqlalchemy.exc.ArgumentError, match="unknown sqlkv URL option 'colour'"):
        create_engine("sqlkv:///a.db?store=memory%3A%2F%2F&colour=blue").connect()
    with pytest.raises(sqlalchemy.exc.ArgumentError, match="readonly must be true or false"):
        create_engine("sqlkv:///a.db?store=memory%3A%2F%2F&readonly=maybe").connect()
    with pytest.raises(sqlalchemy.exc.ArgumentError, match="no host"):
        create_engine("sqlkv://somehost/a.db").connect()
    from sqlkv.dbapi2.dialect import connect_args

    args = connect_args(sqlalchemy.engine.make_url(
        "sqlkv:///a.db?store=lmdb%3A%2F%2F.%2Fd&readonly=true&chunk_size=8192&lease_seconds=none"
        "&max_staleness=2.5"))
    assert args == {
        "store": "lmdb://./d", "readonly": True, "chunk_size": 8192, "lease_seconds": None, "max_staleness": 2.5,
    }


ALEMBIC_REVISIONS = {
    "0001_create.py": '''
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None


def upgrade():
    op.create_table("item", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(20), nullable=False),
                    sa.Column("legacy", sa.Text))
    op.execute("INSERT INTO item(name, legacy) VALUES ('kept', 'old')")


def downgrade():
    op.drop_table("item")
''',
    "0002_batch.py": '''
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"


def upgrade():
    # SQLite cannot drop a column with a constraint or change a type in place:
    # batch mode copies the table, as Alembic does for SQLite.
    with op.batch_alter_table("item", recreate="always") as batch:
        batch.add_column(sa.Column("price", sa.Float, server_default="0"))
        batch.drop_column("legacy")
        batch.alter_column("name", type_=sa.String(200), existing_nullable=False)
        batch.create_unique_constraint("uq_item_name", ["name"])


def downgrade():
    with op.batch_alter_table("item", recreate="always") as batch:
        batch.drop_constraint("uq_item_name", type_="unique")
        batch.alter_column("name", type_=sa.String(20), existing_nullable=False)
        batch.add_column(sa.Column("legacy", sa.Text))
        batch.drop_column("price")
''',
}


@pytest.fixture
def loggers_kept():
    """Alembic's generated env.py runs ``logging.config.fileConfig``, which disables
    every logger that exists (sqlkv's too) for the rest of the process: later tests
    that read sqlkv's warnings would see none. Put the flags back afterwards."""
    loggers = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    disabled = [lg.disabled for lg in loggers]
    yield
    for lg, was in zip(loggers, disabled):
        lg.disabled = was


def test_alembic_upgrade_and_downgrade_with_batch_mode(store_url, tmp_path, loggers_kept) -> None:
    pytest.importorskip("alembic", reason="Alembic is in the extra [test]")
    from alembic import command
    from alembic.config import Config

    url = _url(store_url, "migrated.db")
    config = Config(str(tmp_path / "alembic.ini"))
    command.init(config, str(tmp_path / "migrations"))
    config = Config(str(tmp_path / "alembic.ini"))  # as written by init
    for name, source in ALEMBIC_REVISIONS.items():
        (tmp_path / "migrations" / "versions" / name).write_text(source)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ConfigParser escapes %

    command.upgrade(config, "head")
    engine = create_engine(url)
    inspector = inspect(engine)
    assert {c["name"] for c in inspector.get_columns("item")} == {"id", "name", "price"}
    assert [u["column_names"] for u in inspector.get_unique_constraints("item")] == [["name"]]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name, price FROM item")).all() == [("kept", 0.0)]
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002"
    engine.dispose()

    command.downgrade(config, "0001")
    engine = create_engine(url)
    assert {c["name"] for c in inspect(engine).get_columns("item")} == {"id", "name", "legacy"}
    engine.dispose()
    command.downgrade(config, "base")
    engine = create_engine(url)
    assert inspect(engine).get_table_names() == ["alembic_version"]
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    engine.dispose()


def test_pandas_round_trip(store_url) -> None:
    pd = pytest.importorskip("pandas", reason="pandas is in the extra [test]")
    rows = 1000
    frame = pd.DataFrame({
        "id": range(rows),
        "label": [None if i % 7 == 0 else f"row {i} ü" for i in range(rows)],
        "value": [None if i % 5 == 0 else i * 0.25 - 100.0 for i in range(rows)],
    })
    engine = create_engine(_url(store_url, "frames.db"))
    assert frame.to_sql("frame", engine, index=False, chunksize=250) == rows
    back = pd.read_sql("SELECT id, label, value FROM frame ORDER BY id", engine)
    assert len(back) == rows
    assert list(back["id"]) == list(frame["id"])
    labels = [None if i % 7 == 0 else f"row {i} ü" for i in range(rows)]
    assert [None if pd.isna(v) else v for v in back["label"]] == labels
    for mine, theirs in zip(back["value"], frame["value"]):
        assert (math.isnan(mine) and math.isnan(theirs)) or mine == theirs
    assert pd.read_sql("SELECT count(*) AS n FROM frame WHERE label IS NULL", engine)["n"][0] == 143
    engine.dispose()


def test_async_engine(store_url) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def main() -> None:
        engine = create_async_engine(_url(store_url, "async.db", driver="sqlkv+aio"))
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with AsyncSession(engine) as session:
            session.add(Author(name="Butler", books=[Book(title="Kindred", price=7.25)]))
            await session.commit()
        async with AsyncSession(engine) as session:
            books = (await session.scalars(select(Book).order_by(Book.id))).all()
            assert [(b.title, b.price) for b in books] == [("Kindred", 7.25)]
        async with engine.connect() as conn:
            with pytest.raises(sqlalchemy.exc.IntegrityError):
                await conn.execute(text("INSERT INTO author(id, name) VALUES (1, 'dup')"))
            await conn.rollback()
            streamed = await conn.stream(text("SELECT name FROM author"))
            assert [row.name async for row in streamed] == ["Butler"]
        await engine.dispose()

    asyncio.run(main())
