"""The candle suite's liquidity floor (`min_non_empty_share`): fixed, off, or derived from the
instrument's own recent history, so an illiquid market is judged against itself.

'auto' (the default): `AUTO_FRACTION` x the median share of traded minutes over the instrument's
previous `AUTO_HISTORY_DAYS` days in silver (at least `AUTO_MIN_DAYS` of them; fewer: floor 0, the
share is only measured).
A real low-volume pair (Kraken BTC/USDC, Q1 2023: 27-64% of minutes traded) passes by default,
while a day that lost most of its trades still fails against its own history.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from statistics import median

import polars as pl

from crypto_platform.partitions import DayPartition

AUTO = "auto"
AUTO_FRACTION = 0.5
AUTO_HISTORY_DAYS = 14
AUTO_MIN_DAYS = 3
INSTRUMENT_SHARE_OPTION = "min_non_empty_share"


def non_empty_share(candles: pl.DataFrame) -> float:
    """Share of 1-minute bars that hold at least one trade."""
    if candles.is_empty():
        return 0.0
    return 1.0 - float(candles["is_empty"].cast(pl.Float64).mean() or 0.0)


def liquidity_floor(
    part: DayPartition,
    fixed: float | None,
    use_instrument_option: bool,
    read_candles: Callable[[DayPartition], pl.DataFrame | None],
) -> tuple[float | None, str]:
    """(floor or None, how it was set) for `part`: the instrument's own option (a share, 'auto' or
    null = off) when present and honoured, else `fixed`, else 'auto' from the instrument's history."""
    options = part.instrument.options
    setting: object = fixed if fixed is not None else AUTO
    if use_instrument_option and INSTRUMENT_SHARE_OPTION in options:
        setting = options[INSTRUMENT_SHARE_OPTION]
        if setting is None:
            return None, f"off ({INSTRUMENT_SHARE_OPTION}: null for {part.instrument.key})"
    if setting != AUTO:
        try:
            value = float(setting)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(
                f"{part.instrument.key}: {INSTRUMENT_SHARE_OPTION} {setting!r} is not a share in [0, 1], "
                f"'{AUTO}' or null"
            ) from None
        return value, f"fixed {INSTRUMENT_SHARE_OPTION} {value:g}"
    shares = []
    for k in range(1, AUTO_HISTORY_DAYS + 1):
        df = read_candles(DayPartition(part.instrument, part.day - timedelta(days=k)))
        if df is not None and not df.is_empty():
            shares.append(non_empty_share(df))
    if len(shares) < AUTO_MIN_DAYS:
        return (
            0.0,
            f"auto: {len(shares)} earlier day(s) in silver (< {AUTO_MIN_DAYS}), no floor yet (measured only)",
        )
    typical = median(shares)
    floor = round(AUTO_FRACTION * typical, 4)
    return (
        floor,
        f"auto: {AUTO_FRACTION:g} x the median share {typical:.3f} of its previous {len(shares)} days",
    )


def floor_note(part: DayPartition, candles: pl.DataFrame, floor: float | None, how: str) -> str | None:
    """A message naming the threshold, the measured share and the setting, when the day is below it."""
    measured = non_empty_share(candles)
    if floor is None or measured >= floor:
        return None
    return (
        f"{part}: {measured:.3f} of its minutes traded, below the liquidity floor {floor:.3f} ({how}); "
        f"to change it set '{INSTRUMENT_SHARE_OPTION}' for {part.instrument.key} in the instruments file "
        "(a share, 'auto' or null = off) or in the candles_1m_suite config"
    )
