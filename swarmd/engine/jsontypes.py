"""Types for strict request models that match JSON Schema exactly.

Request models validate in pydantic's strict mode, so a JSON ``"5"`` is not an
integer and ``0`` is not a boolean, as their schemas say. One gap remains:
JSON Schema's ``integer`` admits ``1.0`` (a number with a zero fraction), which
strict ``int`` refuses; :data:`JsonInt` takes it. An optional one with bounds is
``Annotated[int, Ge(1), integral] | None``: bounds before the validator, or the
schema shows them as ``ge``/``le`` instead of ``minimum``/``maximum``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator


def _integral(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


integral = BeforeValidator(_integral)
JsonInt = Annotated[int, integral]
One = Annotated[Literal[1], integral]
