"""Check a rendered report section against its data: every number a reader sees in the findings, captions,
tables and paragraphs must be one of the computed values (at the printed precision), a value the test
derives independently, or a stated threshold / constant the test lists. Plot JSON is ignored."""
from __future__ import annotations

import html as _html
import math
import re
from typing import Any, Iterable

NUMBER = re.compile(r"(?:(?<=[\s(\[=:,/{])|^)[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?%?(?!\w)(?!\.\d)")


def visible_text(page: str) -> str:
    """Findings, captions, tables and paragraphs as plain text (scripts and tags removed)."""
    page = re.sub(r"<script>.*?</script>", " ", page, flags=re.S)
    page = re.sub(r'title="[^"]*"', " ", page)  # token hover values are plot-like data
    return _html.unescape(re.sub(r"<[^>]+>", " ", page))


def numbers(text: str) -> list[str]:
    return [m.group(0).rstrip(",") for m in NUMBER.finditer(text)]


def flatten(data: Any) -> Iterable[float]:
    """Every number in nested JSON data, and every number written inside its strings."""
    if isinstance(data, bool):
        yield float(data)
    elif isinstance(data, (int, float)):
        if data == data:  # not NaN
            yield float(data)
    elif isinstance(data, str):
        for t in numbers(data):
            yield _value(t)[0]
    elif isinstance(data, dict):
        for v in data.values():
            yield from flatten(v)
    elif isinstance(data, (list, tuple)):
        for v in data:
            yield from flatten(v)


def _value(token: str) -> tuple[float, float, bool]:
    """(value, half a unit of the last printed digit, is a percentage)."""
    pct = token.endswith("%")
    t = token.rstrip("%").replace(",", "")
    if "e" in t:
        mant, exp = t.split("e")
        decimals = len(mant.split(".")[1]) if "." in mant else 0
        return float(t), 0.5 * 10 ** (int(exp) - decimals), pct
    decimals = len(t.split(".")[1]) if "." in t else 0
    return float(t), 0.5 * 10 ** -decimals, pct


def unmatched_numbers(page: str, data: Any, derived: Iterable[float] = (), constants: Iterable[float] = ()) -> list[str]:
    """The printed numbers that are none of the data's values, the derived values or the constants."""
    computed = list(flatten(data)) + [float(x) for x in derived]
    fixed = {float(c) for c in constants}
    missing = []
    for token in numbers(visible_text(page)):
        value, half, pct = _value(token)
        if value in fixed or abs(value) in fixed:
            continue
        scales = (1.0, 100.0) if pct else (1.0,)
        ok = any(math.isfinite(v) and abs(abs(value) - abs(v * s)) <= half * (1 + 1e-9) + 1e-12
                 for v in computed for s in scales)
        if not ok:
            missing.append(token)
    return missing


def thresholds(module) -> list[float]:
    """The values of a report module's named thresholds (uncover.report.claims.Threshold constants)."""
    from uncover.report.claims import Threshold

    return [v.value for v in vars(module).values() if isinstance(v, Threshold)]
