"""sqlkv's version: written here once, at the bottom of the layers, so that any layer
(the CLI's ``--version``, the SQLAlchemy dialect) can say it without importing the
package's front door, and setuptools reads it without importing sqlkv."""

__version__ = "0.1.0"
