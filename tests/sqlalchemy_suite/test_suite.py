"""SQLAlchemy's compliance suite, every test of it, against the ``sqlkv`` dialect."""

from sqlalchemy.testing.suite import *  # noqa: F401,F403
