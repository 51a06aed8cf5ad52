"""Numbers as the report prints them: counts as integers, other values to about three digits.

Contract: `format_value(value, unit)` -> text with thousands separators; a value with no fractional part
prints as an integer ("113", "10,000"), whatever type it was stored as (MLflow and the records keep every
metric as a float, so "113.0" would be a count made to look like a measurement).
"""

from __future__ import annotations

import math


def format_number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_value(value: float, unit: str = "") -> str:
    return f"{format_number(value)} {unit}".strip()
