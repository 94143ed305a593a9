"""One pager per exchange: walk its trades by the exchange's OWN cursor (through ccxt `params`) and
prove the window [start, end) was read to its end, or say why not.

A window is proven complete only when the walk is continuous by the exchange's contract (its cursor,
and contiguous ids where the exchange has them) from before `start` up to a trade at or after `end`.
Otherwise `covered_to_ms` is the last instant the pager is sure of (every trade before it is in the
result) and `reason` names the exchange, symbol, instant and what was tried. A page seen before is
dropped and asked again; one that keeps coming back is a `StuckCursorError`, never a quiet stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from crypto_platform.sources.wire import Wire, iso_ms

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Paged:
    """The trades of [start, end) a pager read, and what it proves about them."""

    trades: list[dict[str, Any]]
    covered_to_ms: int  # every trade of [start, covered_to_ms) is in `trades`
    complete: bool  # covered_to_ms == end, proven by the exchange's answers
    reason: str | None  # why not complete (None when complete)
    method: str  # how the exchange was paged


class Pager(Protocol):
    """Reads one symbol's trades of [start_ms, end_ms) from an exchange (`now_ms`: the clock)."""

    method: ClassVar[str]

    def collect(self, wire: Wire, start_ms: int, end_ms: int, now_ms: int) -> Paged:
        """The trades in the window and the coverage the exchange's answers prove."""
        ...


def _ts(t: dict[str, Any]) -> int:
    return int(t["timestamp"])


def _id(t: dict[str, Any]) -> int:
    return int(t["id"])


def _window(trades: list[dict[str, Any]], start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    return [t for t in trades if start_ms <= _ts(t) < end_ms]


def _result(
    wire: Wire,
    method: str,
    trades: list[dict[str, Any]],
    start_ms: int,
    end_ms: int,
    sure_to_ms: int | None,
    why: str,
) -> Paged:
    """Complete when `sure_to_ms` reaches `end_ms`, else incomplete at it with a reason naming the
    exchange, symbol, the instant the proof stops and what was tried."""
    if sure_to_ms is not None and sure_to_ms >= end_ms:
        return Paged(trades, end_ms, True, None, method)
    covered = max(start_ms, sure_to_ms if sure_to_ms is not None else start_ms)
    reason = (
        f"{wire.exchange_id} {wire.symbol}: window {iso_ms(start_ms)}..{iso_ms(end_ms)} read only up to "
        f"{iso_ms(covered)}: {why} (paged by {method}, {wire.stats.requests} requests)"
    )
    return Paged(trades, covered, False, reason, method)


class BinancePager:
    """Spot/futures aggTrades walked by `fromId`: aggregate ids are contiguous, so every page must start
    exactly at the id asked for; the first id of the window is located by a time query and proven by
    the aggregate just before it lying before `start`."""

    method: ClassVar[str] = "aggTrades fromId (contiguous aggregate ids)"

    def locate(self, wire: Wire, start_ms: int, end_ms: int, now_ms: int) -> int | None:
        """The first aggregate id at or after `start_ms` (before `end_ms`), None when there is none."""
        since, page = start_ms, []
        while since < min(end_ms, now_ms + 1):
            # ccxt sends startTime = since, endTime = since + 1 h (both inclusive)
            page = [t for t in wire.trades(f"aggTrades startTime={since}", since=since, limit=wire.limit)
                    if start_ms <= _ts(t)]  # fmt: skip
            wire.advanced()
            if page:
                break
            since += HOUR_MS + 1
        if not page:
            return None
        first = min(_id(t) for t in page)
        while first > 0:  # prove it: the aggregate just before must lie before `start`
            lo = max(0, first - wire.limit)
            older = [t for t in wire.trades(f"aggTrades fromId={lo}", limit=wire.limit, params={"fromId": lo})
                     if _id(t) < first]  # fmt: skip
            if not older:
                break  # the exchange's history starts at `first`
            if max(_id(t) for t in older) != first - 1:
                wire.repeated(f"aggTrades fromId={lo}", start_ms)
                continue
            wire.advanced()
            inside = [t for t in older if _ts(t) >= start_ms]
            if not inside:
                break
            first = min(_id(t) for t in inside)
            if len(inside) < len(older) or min(_id(t) for t in older) == 0:
                break
        return first

    def collect(self, wire: Wire, start_ms: int, end_ms: int, now_ms: int) -> Paged:
        """Walk aggTrades from the window's first id up to a trade at or after `end_ms`."""
        first = self.locate(wire, start_ms, end_ms, now_ms)
        if first is None:
            tip = wire.trades("aggTrades (newest)", limit=1)
            if tip and _ts(tip[-1]) >= end_ms:  # the hours of the window were asked and are empty
                return _result(wire, self.method, [], start_ms, end_ms, end_ms, "")
            newest = f"the newest trade is at {iso_ms(_ts(tip[-1]))}" if tip else "the exchange has no trade"
            why = f"no trade in the window and {newest}, so nothing proves the window has ended"
            return _result(wire, self.method, [], start_ms, end_ms, None, why)
        kept: list[dict[str, Any]] = []
        from_id, last_ts = first, start_ms
        while True:
            what = f"aggTrades fromId={from_id}"
            page = sorted(wire.trades(what, limit=wire.limit, params={"fromId": from_id}), key=_id)
            if not page:
                why = f"the exchange has nothing after aggregate id {from_id - 1} (at {iso_ms(last_ts)})"
                return _result(wire, self.method, kept, start_ms, end_ms, last_ts, why)
            ids = [_id(t) for t in page]
            if ids[0] < from_id:
                wire.repeated(what, last_ts)  # a stale or duplicated page
                continue
            if ids != list(range(from_id, from_id + len(ids))):  # keep the contiguous part, stop at the gap
                n = next(k for k, a in enumerate(ids) if a != from_id + k)
                kept.extend(_window(page[:n], start_ms, end_ms))
                last_ts = _ts(page[n - 1]) if n else last_ts
                why = (
                    f"aggregate id {from_id + n} is missing (the exchange answered {ids[n]} next, at "
                    f"{iso_ms(_ts(page[n]))}): not published yet, or lost"
                )
                return _result(wire, self.method, kept, start_ms, end_ms, last_ts, why)
            wire.advanced()
            kept.extend(_window(page, start_ms, end_ms))
            last_ts = _ts(page[-1])
            if last_ts >= end_ms:
                return _result(wire, self.method, kept, start_ms, end_ms, end_ms, "")
            from_id = ids[-1] + 1


class KrakenPager:
    """Public Trades walked by the `last` cursor of each answer (nanoseconds, one per trade, so a
    burst sharing one timestamp pages on); the first request asks from `start`'s whole second."""

    method: ClassVar[str] = "Trades since=<last> (nanosecond cursor)"

    def collect(self, wire: Wire, start_ms: int, end_ms: int, now_ms: int) -> Paged:
        """Follow `last` from `start` up to a trade at or after `end_ms`."""
        cursor = str(start_ms // 1000)  # Kraken takes whole seconds too: trades at or after it
        kept: list[dict[str, Any]] = []
        seen: set[str] = set()
        last_ts = start_ms
        while True:
            what = f"Trades since={cursor}"
            page = wire.trades(what, limit=wire.limit, params={"since": cursor})
            if not page:
                why = f"the exchange has nothing after cursor {cursor} (at {iso_ms(last_ts)})"
                return _result(wire, self.method, kept, start_ms, end_ms, last_ts, why)
            nxt = str(page[-1]["info"][-1])  # ccxt appends the answer's `last` to its last trade
            if nxt == cursor:
                wire.repeated(what, last_ts)  # the cursor does not advance: a page already read
                continue
            wire.advanced()
            new = [t for t in page if str(t["id"]) not in seen]
            seen.update(str(t["id"]) for t in new)
            kept.extend(_window(new, start_ms, end_ms))
            last_ts = max(last_ts, max(_ts(t) for t in page))
            if last_ts >= end_ms:
                return _result(wire, self.method, kept, start_ms, end_ms, end_ms, "")
            cursor = nxt


class BackwardIdPager:
    """Exchanges whose trades come newest first with an `after` = "older than this trade id" cursor:
    find the newest trade before `end`, walk back until a trade before `start`."""

    method: ClassVar[str] = ""
    contiguous: ClassVar[bool] = False  # ids step by exactly 1 (then a jump is a proven gap)

    def newest(self, wire: Wire) -> dict[str, Any] | None:
        """The exchange's newest trade (its tip)."""
        tip = wire.trades("newest trade", limit=1)
        return max(tip, key=_id) if tip else None

    def first_page(self, wire: Wire, end_ms: int, tip: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """The newest trades before `end_ms` and the cursor to continue from (older than all of them)."""
        raise NotImplementedError

    def older(self, wire: Wire, after: int) -> list[dict[str, Any]]:
        """One page of trades with ids below `after`, newest first."""
        raise NotImplementedError

    def collect(self, wire: Wire, start_ms: int, end_ms: int, now_ms: int) -> Paged:
        """Walk back from the end of the window (or the exchange's newest trade) to before `start`."""
        tip = self.newest(wire)
        if tip is None:
            return _result(wire, self.method, [], start_ms, end_ms, None, "the exchange has no trade")
        wire.advanced()
        top_ms = end_ms if _ts(tip) >= end_ms else _ts(tip)  # the top of the proof
        why_top = f"the exchange's newest trade (id {_id(tip)}) is at {iso_ms(_ts(tip))}, before the end"
        page, after = self.first_page(wire, min(end_ms, _ts(tip) + 1), tip)
        wire.advanced()
        kept = _window(page, start_ms, end_ms)
        done = not page or min(_ts(t) for t in page) < start_ms
        while not done:
            what = f"trades after={after}"
            page = sorted(self.older(wire, after), key=_id, reverse=True)
            if not page:
                break  # the beginning of the exchange's history
            if _id(page[0]) >= after:
                wire.repeated(what, min((_ts(t) for t in kept), default=top_ms))  # a page already read
                continue
            ids = [_id(t) for t in page]
            if self.contiguous and ids != list(range(after - 1, after - 1 - len(ids), -1)):
                why = (
                    f"trade ids jump below {after} (got {ids[0]}..{ids[-1]}): trades are missing there, "
                    "and a backward walk is sure of nothing before a gap"
                )
                return _result(wire, self.method, kept, start_ms, end_ms, None, why)
            wire.advanced()
            kept.extend(_window(page, start_ms, end_ms))
            after = ids[-1]
            done = min(_ts(t) for t in page) < start_ms
        return _result(wire, self.method, kept, start_ms, end_ms, top_ms, why_top)


class CoinbaseExchangePager(BackwardIdPager):
    """Coinbase Exchange /products/{id}/trades walked back by `after` (CB-AFTER, trade ids step by 1); the
    newest trade before `end` is found by bisecting trade ids (probes of one trade each)."""

    method: ClassVar[str] = "products/{id}/trades after=<trade_id> (contiguous ids, walked back)"
    contiguous: ClassVar[bool] = True

    def probe(self, wire: Wire, trade_id: int, must_exist: bool) -> dict[str, Any] | None:
        """The trade `trade_id` (None: the exchange has no trade that old). Ids step by 1, so another id,
        or no trade where one must exist (`must_exist`), is a stale answer: asked again."""
        while True:
            what = f"trades after={trade_id + 1} limit=1"
            got = wire.trades(what, limit=1, params={"after": trade_id + 1})
            if (got and _id(got[0]) != trade_id) or (not got and must_exist):
                wire.repeated(what, _ts(got[0]) if got else None)
                continue
            wire.advanced()
            return got[0] if got else None

    def first_page(self, wire: Wire, end_ms: int, tip: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """Find the first trade id at or after `end_ms` (galloping down from the newest trade, then
        bisecting) and read the page just below it."""
        hi, floor = _id(tip) + 1, _id(tip)  # hi: first id at/after the end; floor: an id known to exist
        if _ts(tip) >= end_ms:
            hi, lo, step, floor = _id(tip), 0, wire.limit, None
            while True:  # gallop down to a trade before the end (or below the start of history)
                t = self.probe(wire, hi - step, must_exist=False) if hi - step >= 1 else None
                if t is None or _ts(t) < end_ms:
                    lo, floor = max(hi - step, 0), (None if t is None else _id(t))
                    break
                hi, step = _id(t), step * 2
            while hi - lo > 1:
                mid = (lo + hi) // 2
                t = self.probe(wire, mid, must_exist=floor is not None)
                if t is None or _ts(t) < end_ms:
                    lo, floor = mid, (floor if t is None else mid)
                else:
                    hi = mid
        while True:
            what = f"trades after={hi}"
            page = sorted(self.older(wire, hi), key=_id, reverse=True)
            if (page and _id(page[0]) != hi - 1) or (not page and floor is not None and floor < hi):
                wire.repeated(what, end_ms)  # not the page right below `hi`: stale
                continue
            return page, (_id(page[-1]) if page else hi)

    def older(self, wire: Wire, after: int) -> list[dict[str, Any]]:
        """Trades with ids below `after` (the `limit` newest of them)."""
        return wire.trades(f"trades after={after}", limit=wire.limit, params={"after": after})


class OkxPager(BackwardIdPager):
    """OKX history-trades: the newest trades before `end` by timestamp (`type=2`, `after`=end), then
    walked back by trade id (`type=1`, `after`=tradeId)."""

    method: ClassVar[str] = "market/history-trades after=<tradeId> (type 2 to find the end, then type 1)"
    HISTORY: ClassVar[dict[str, str]] = {"method": "publicGetMarketHistoryTrades"}

    def first_page(self, wire: Wire, end_ms: int, tip: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """The newest `limit` trades with timestamps before `end_ms`."""
        params = {**self.HISTORY, "type": "2", "after": str(end_ms)}
        page = sorted(wire.trades(f"history-trades type=2 after={end_ms}", limit=wire.limit, params=params),
                      key=_id, reverse=True)  # fmt: skip
        return page, (_id(page[-1]) if page else _id(tip) + 1)

    def older(self, wire: Wire, after: int) -> list[dict[str, Any]]:
        """Trades with trade ids below `after`, newest first."""
        params = {**self.HISTORY, "type": "1", "after": str(after)}
        return wire.trades(f"history-trades type=1 after={after}", limit=wire.limit, params=params)


class TimestampPager:
    """The fallback for exchanges without a trade cursor in ccxt: `since` = the last page's newest
    timestamp (inclusive, so consecutive pages overlap on it). The walk starts `LEAD_MS` before the
    window and proves its start only by a trade before it (an exchange ignoring `since` answers with
    its newest trades instead); each page must overlap the trades already read. It cannot page past
    more trades in one millisecond than a page holds: it stops there, incomplete, instead of skipping."""

    method: ClassVar[str] = "fetch_trades since=<newest timestamp> (timestamp paging, fallback)"
    LEAD_MS: ClassVar[int] = HOUR_MS

    def collect(self, wire: Wire, start_ms: int, end_ms: int, now_ms: int) -> Paged:
        """Walk `since` forward up to a trade at or after `end_ms`."""
        since, seen, kept, asked_again = start_ms - self.LEAD_MS, set(), [], False
        while True:
            what = f"fetch_trades since={since}"
            page = wire.trades(what, since=since, limit=wire.limit)
            newest = max((_ts(t) for t in page), default=since)
            new = [t for t in page if str(t.get("id")) not in seen]
            if not seen and page and min(_ts(t) for t in page) >= start_ms:
                why = (
                    f"the first answer starts at {iso_ms(min(_ts(t) for t in page))}, with no trade from "
                    f"the {self.LEAD_MS // 60_000} min before the window: the start is unproven (no earlier "
                    "trade, or the exchange does not honour `since`)"
                )
                return _result(wire, self.method, [], start_ms, end_ms, None, why)
            if seen and page and len(new) == len(page):
                why = (
                    f"the answer to since={since} does not overlap the trades already read: a gap is possible"
                )
                return _result(wire, self.method, kept, start_ms, end_ms, since, why)
            if page and newest <= since and len(page) >= wire.limit:
                kept.extend(_window(new, start_ms, end_ms))
                why = (
                    f"more than {wire.limit} trades share the millisecond {iso_ms(since)} and this "
                    "exchange offers no cursor to page within it"
                )
                return _result(wire, self.method, kept, start_ms, end_ms, since, why)
            if not new:
                if page and newest > since:
                    wire.repeated(what, since)  # a page already read
                    continue
                if page and not asked_again:  # only known trades: stale, or really nothing newer?
                    asked_again = True
                    continue
                why = f"the exchange has nothing after {iso_ms(since)}"
                return _result(wire, self.method, kept, start_ms, end_ms, max(since, start_ms), why)
            asked_again = False
            wire.advanced()
            seen.update(str(t.get("id")) for t in new)
            kept.extend(_window(new, start_ms, end_ms))
            if newest >= end_ms:
                return _result(wire, self.method, kept, start_ms, end_ms, end_ms, "")
            since = newest


PAGERS: dict[str, type] = {
    "binance": BinancePager,
    "binanceus": BinancePager,
    "binanceusdm": BinancePager,
    "binancecoinm": BinancePager,
    "kraken": KrakenPager,
    "coinbaseexchange": CoinbaseExchangePager,
    "okx": OkxPager,
}


def pager_for(exchange_id: str) -> Pager:
    """The exchange's own-cursor pager, else the timestamp fallback."""
    return PAGERS.get(exchange_id, TimestampPager)()
