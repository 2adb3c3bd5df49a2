"""What the ``sqlkv`` dialect supports, for SQLAlchemy's compliance suite.

SQLAlchemy's defaults (``SuiteRequirements``), with the features SQLite has
opened, so the suite exercises them through sqlkv, and ``schemas`` closed.
A test that fails the same way with SQLAlchemy's own ``sqlite+pysqlite``
driver is skipped by name (sqlite_dialect_failures.txt, checked by
tests/test_sqlalchemy_suite.py). The README lists every skip of the run.
"""

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements

#: Features SQLite has (and SQLAlchemy's SQLite dialect uses) that the suite's
#: defaults leave closed.
_SQLITE_HAS = (
    "table_ddl_if_exists", "index_ddl_if_exists", "intersect", "except_",
    "window_functions", "ctes", "ctes_with_update_delete", "ctes_on_dml", "tuple_in",
    "views", "temp_table_names", "has_temp_table", "temporary_views",
    "index_reflection", "indexes_with_expressions", "check_constraint_reflection",
    "inline_check_constraint_reflection", "json_type", "autocommit", "isolation_level",
    "server_defaults",
    "expression_server_defaults", "savepoints", "update_from", "computed_columns",
    "computed_columns_stored", "computed_columns_virtual", "regexp_match",
    "boolean_col_expressions", "nullsordering", "datetime_historic", "date_historic",
    "timestamp_microseconds", "dbapi_lastrowid", "reflect_table_options", "reflects_pk_names",
    "supports_bitwise_or", "supports_bitwise_and", "supports_bitwise_not",
    "supports_bitwise_xor", "supports_bitwise_shift", "mod_operator_as_percent_sign",
)


class Requirements(SuiteRequirements):
    @property
    def schemas(self):
        # A schema in SQLite is an ATTACHed database file; sqlkv opens one
        # database per connection and refuses ATTACH of another file.
        return exclusions.closed()

    @property
    def parens_in_union_contained_select_w_limit_offset(self):
        # SQLite refuses a parenthesized SELECT inside UNION.
        return exclusions.closed()

    @property
    def parens_in_union_contained_select_wo_limit_offset(self):
        # SQLite refuses a parenthesized SELECT inside UNION.
        return exclusions.closed()

    @property
    def get_isolation_levels(self):
        # SQLite's two levels, as SQLAlchemy's SQLite dialect sets them.
        def levels(config):
            return {"default": "SERIALIZABLE", "supported": ["READ UNCOMMITTED", "SERIALIZABLE", "AUTOCOMMIT"]}

        return levels


for _name in _SQLITE_HAS:
    setattr(Requirements, _name, property(lambda self: exclusions.open()))
