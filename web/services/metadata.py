"""Job metadata search: ``GET /jobs?metadata.KEY=VALUE`` (several AND-ed), served by the GIN index on ``metadata``."""

from __future__ import annotations

import re
from collections.abc import Mapping

from sqlalchemy import Select

from shared.models import Job
from shared.schemas.api import METADATA_KEY_CHARS, METADATA_KEY_PATTERN, METADATA_MAX_KEYS, METADATA_VALUE_CHARS
from web.errors import Invalid

PREFIX = "metadata."


def metadata_query(args: Mapping[str, str]) -> dict[str, str]:
    """The ``metadata.KEY=VALUE`` pairs of a query string; 422 for a key or value no job could carry."""
    wanted = {k[len(PREFIX) :]: v for k, v in args.items() if k.startswith(PREFIX)}
    if len(wanted) > METADATA_MAX_KEYS:
        raise Invalid(f"at most {METADATA_MAX_KEYS} metadata filters", code="invalid_query")
    for key, value in wanted.items():
        if not (1 <= len(key) <= METADATA_KEY_CHARS and re.match(METADATA_KEY_PATTERN, key)):
            raise Invalid(
                f"metadata key {key[:80]!r} must be 1-{METADATA_KEY_CHARS} of letters, digits and _.:/-",
                code="invalid_query",
            )
        if len(value) > METADATA_VALUE_CHARS or "\x00" in value:
            raise Invalid(
                f"metadata value of {key!r} must be at most {METADATA_VALUE_CHARS} characters, without NUL",
                code="invalid_query",
            )
    return wanted


def filter_by_metadata(stmt: Select, args: Mapping[str, str]) -> Select:
    """Jobs whose metadata contains every pair asked for (``metadata @> '{…}'``)."""
    wanted = metadata_query(args)
    return stmt.where(Job.meta.contains(wanted)) if wanted else stmt
