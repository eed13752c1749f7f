"""Saved filters: typed criteria compiled to SQLAlchemy expressions (never SQL text).

A criteria tree is JSON::

    {"all": [node, ...]}   every node matches ({"all": []} matches everyone)
    {"any": [node, ...]}   at least one matches (must not be empty)
    {"not": node}          everyone the node does not match
    {"field": F, "op": OP, "value": V}

Fields: tier, state, segment_class, timezone, company, name, source, last_outcome (text);
days_since_contact (whole days since the last contact; a never-contacted client counts as
infinitely long ago, so gt/gte include it and eq/lt/lte do not; ``is_null`` finds them);
created_at (ISO date or datetime; a date or naive time is in the department's zone);
custom.<key> (the client's custom fields: text comparison, or numeric when the value is a
number, in which case non-numeric values never match).

Text ``contains`` is case-insensitive (on SQLite for ASCII letters only). ``ne`` on a
column that may be empty also matches the empty ones: "timezone ne X" includes clients
with no zone; so does ``not`` (a client with no zone is not "timezone eq X").

Modules: ``criteria`` (the tree) and ``fields`` (the leaves) compile, ``json_fields`` spells
custom fields per backend, ``paging`` counts and pages, ``saved`` stores named filters.
"""

from engine.filters.context import Context
from engine.filters.criteria import (
    MAX_DEPTH,
    MAX_NODES,
    compile_criteria,
    validate_criteria,
    where_for,
)
from engine.filters.fields import MAX_IN, NULLABLE, OPS, ORDER_OPS, TEXT_FIELDS
from engine.filters.json_fields import JsonNumber, JsonText, custom_value
from engine.filters.paging import MAX_PAGE, Page, count_matching, page_matching, preview
from engine.filters.saved import (
    create_filter,
    delete_filter,
    filter_json,
    get_filter,
    list_filters,
    update_filter,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_IN",
    "MAX_NODES",
    "MAX_PAGE",
    "NULLABLE",
    "OPS",
    "ORDER_OPS",
    "TEXT_FIELDS",
    "Context",
    "JsonNumber",
    "JsonText",
    "Page",
    "compile_criteria",
    "count_matching",
    "create_filter",
    "custom_value",
    "delete_filter",
    "filter_json",
    "get_filter",
    "list_filters",
    "page_matching",
    "preview",
    "update_filter",
    "validate_criteria",
    "where_for",
]
