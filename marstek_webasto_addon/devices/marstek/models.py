"""Pydantic models of the method results, generated from the data-point table.

Each read method gets a model whose fields are exactly the wire fields the table names, all optional
(firmware omits fields freely). A reply with a bad field loses only that field: the rest is kept and the
problem is reported, so one odd value never blanks a whole battery.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .datapoints import BATTERY_POINTS, Kind, Method

_FIELD_TYPES: dict[Kind, Any] = {
    Kind.FLOAT: float | None,
    Kind.INT: float | None,  # ints arrive as 716.0 on some firmware, and soc is documented as a string
    Kind.TEXT: str | None,
    Kind.BOOL: bool | None,
    Kind.MODE: str | int | None,
}


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _build_models() -> dict[Method, type[_Result]]:
    fields: dict[Method, dict[str, Any]] = defaultdict(dict)
    for point in BATTERY_POINTS:
        for source in point.sources:
            fields[source.method][source.field] = (_FIELD_TYPES[point.kind], None)
    return {
        method: create_model(f"{method.replace('.', '')}Result", __base__=_Result, **spec)
        for method, spec in fields.items()
    }


RESULT_MODELS: dict[Method, type[_Result]] = _build_models()


class SetResult(BaseModel):
    model_config = ConfigDict(extra="ignore")
    set_result: bool


def validate_result(method: Method, raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Validated fields of one result (only the fields the table knows) and a list of problems."""
    model = RESULT_MODELS.get(method)
    if model is None:
        return {}, []
    problems: list[str] = []
    data = dict(raw)
    for _ in range(2):
        try:
            return model.model_validate(data).model_dump(exclude_none=True), problems
        except ValidationError as exc:
            bad = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else "(root)"
                problems.append(f"{method}: field '{field}' = {raw.get(field)!r} rejected: {err['msg']}")
            data = {k: v for k, v in data.items() if k not in bad}
    return {}, problems
