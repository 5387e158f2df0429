"""nvidia-smi `--query-gpu` rows -> typed sample dicts (numbers, throttle reasons, row time).

A field nvidia-smi cannot report (`[N/A]`, `Not Supported`, ...: GB10's memory and power-limit
fields) is left out of the sample, never 0. Field names and aliases are those of
`nvidia-smi --help-query-gpu` on the 580 driver; the reason bits are nvml.h's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

# nvidia-smi field -> sample key (numbers) ; aliases from `nvidia-smi --help-query-gpu` (580).
NUMERIC_KEYS = {
    "index": "gpu", "power.draw": "power_w", "power.draw.average": "power_avg_w",
    "power.draw.instant": "power_instant_w", "power.limit": "power_limit_w",
    "enforced.power.limit": "enforced_power_limit_w", "clocks.sm": "sm_clock_mhz",
    "clocks.current.sm": "sm_clock_mhz", "clocks.max.sm": "sm_clock_max_mhz",
    "clocks.gr": "gr_clock_mhz", "clocks.current.graphics": "gr_clock_mhz",
    "clocks.mem": "mem_clock_mhz", "clocks.current.memory": "mem_clock_mhz",
    "temperature.gpu": "temp_c", "utilization.gpu": "util_pct", "memory.used": "mem_used_mib",
    "memory.total": "mem_total_mib", "memory.free": "mem_free_mib",
}
TEXT_KEYS = {"name": "name", "gpu_name": "name", "pstate": "pstate"}
REASON_MASK_FIELDS = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")
# Bit values from nvml.h (nvmlClocksEventReason*), as nvidia-smi prints them in the mask.
REASON_BITS = {
    0x001: "gpu_idle", 0x002: "applications_clocks_setting", 0x004: "sw_power_cap",
    0x008: "hw_slowdown", 0x010: "sync_boost", 0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown", 0x080: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
# What nvidia-smi prints for a field the device cannot report (with or without brackets).
NOT_AVAILABLE = {"n/a", "not supported", "unknown error", "insufficient permissions", "not found",
                 "requested functionality has been deprecated", "gpu requires reset", ""}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_gpu_value(raw: str) -> str | None:
    """One CSV cell, stripped; None for nvidia-smi's 'cannot report' answers ([N/A], ...)."""
    value = raw.strip()
    if value.strip("[]").strip().lower() in NOT_AVAILABLE:
        return None
    return value


def parse_row_time(stamp: str, utc_offset_s: float = 0.0) -> float:
    """nvidia-smi's `YYYY/MM/DD HH:MM:SS.mmm` (node local time) -> epoch seconds."""
    local = datetime.strptime(stamp.strip(), "%Y/%m/%d %H:%M:%S.%f")
    return (local.replace(tzinfo=UTC) - timedelta(seconds=utc_offset_s)).timestamp()


def reason_flags(mask: int) -> list[str]:
    """Named clock-event reasons of a mask (unknown bits as hex)."""
    names = [name for bit, name in REASON_BITS.items() if mask & bit]
    unknown = mask & ~sum(REASON_BITS)
    return names + ([f"0x{unknown:x}"] if unknown else [])


def parse_gpu_row(line: str, fields: Sequence[str], utc_offset_s: float = 0.0) -> dict[str, Any]:
    """One `--format=csv,noheader,nounits` row -> a sample dict (absent fields left out).

    Raises ValueError for a line that is not a row of `fields` (an error message, a header).
    """
    cells = [c.strip() for c in line.split(",")]
    if len(cells) != len(fields):
        raise ValueError(f"expected {len(fields)} fields, got {len(cells)}: {line.strip()[:200]}")
    sample: dict[str, Any] = {"source": "gpu"}
    for field, raw in zip(fields, cells, strict=True):
        value = parse_gpu_value(raw)
        if field == "timestamp":
            if value is None:
                raise ValueError(f"row without a timestamp: {line.strip()[:200]}")
            sample["t"] = parse_row_time(value, utc_offset_s)
        elif value is None:
            continue
        elif field in REASON_MASK_FIELDS:
            mask = int(value, 16)
            sample["throttle_mask"] = f"0x{mask:016x}"
            sample["throttle_reasons"] = reason_flags(mask)
        elif field.startswith(("clocks_event_reasons.", "clocks_throttle_reasons.")) and \
                value in ("Active", "Not Active"):
            sample["reason_" + field.split(".", 1)[1]] = value == "Active"
        elif field in NUMERIC_KEYS:
            number = _number(value)
            if number is None:
                raise ValueError(f"{field} = {value!r} is not a number: {line.strip()[:200]}")
            sample[NUMERIC_KEYS[field]] = int(number) if field == "index" else number
        else:
            number = _number(value)
            sample[TEXT_KEYS.get(field, field)] = number if number is not None and \
                field not in TEXT_KEYS else value
    return sample
