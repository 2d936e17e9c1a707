"""The subset of Stripe's search query language the simulator understands.

Supported: clauses `metadata['key']:'value'`, `status:'succeeded'`, `customer:'cus_...'`, joined by `AND`. Anything else is refused with 400 rather than half-understood.
Unlike Stripe's (eventually consistent, ~1 min lag) search, results are immediate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from billkeep.gateways.simulator.errors import invalid_request
from billkeep.gateways.simulator.limits import MAX_SEARCH_CLAUSES

__all__ = ["SearchQuery", "parse_query"]

_STRING = r"""(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")"""
_METADATA_CLAUSE = re.compile(rf"^metadata\[{_STRING}\]:{_STRING}$")
_FIELD_CLAUSE = re.compile(rf"^(status|customer):{_STRING}$")
_AND = re.compile(r"\s+AND\s+")


@dataclass(frozen=True, slots=True)
class SearchQuery:
    metadata: tuple[tuple[str, str], ...]
    filters: tuple[tuple[str, str], ...]  # (store column, value)


def _unquote(single: str | None, double: str | None) -> str:
    raw = single if single is not None else (double or "")
    return re.sub(r"\\(.)", r"\1", raw)


_FIELD_COLUMNS = {"status": "status", "customer": "ref"}


def parse_query(query: str) -> SearchQuery:
    clauses = [c.strip() for c in _AND.split(query.strip()) if c.strip()]
    if not clauses or len(clauses) > MAX_SEARCH_CLAUSES:
        raise invalid_request(f"Search query needs 1..{MAX_SEARCH_CLAUSES} clauses", param="query")
    metadata: list[tuple[str, str]] = []
    filters: list[tuple[str, str]] = []
    for clause in clauses:
        meta = _METADATA_CLAUSE.match(clause)
        if meta is not None:
            metadata.append((_unquote(meta[1], meta[2]), _unquote(meta[3], meta[4])))
            continue
        plain = _FIELD_CLAUSE.match(clause)
        if plain is None:
            raise invalid_request(f"Unsupported search clause: {clause}", param="query")
        filters.append((_FIELD_COLUMNS[plain[1]], _unquote(plain[2], plain[3])))
    return SearchQuery(tuple(metadata), tuple(filters))
