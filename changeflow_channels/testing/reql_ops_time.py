"""Term handlers on times: r.now, epoch_time, iso8601, time parts, and the
day/month constants (r.monday ... r.december)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .reql_datum import (
    format_tz,
    is_time,
    make_time,
    num,
    parse_iso8601,
    parse_tz,
    time_to_datetime,
    to_iso8601,
)
from .reql_errors import ReqlQueryLogicError
from .reql_eval import Ctx, T, as_num, as_str, expect, handler
from .reql_ops_select import bound_closed

# -- times --------------------------------------------------------------------------


def _time(value: Any) -> dict:
    if not is_time(value):
        expect(value, "PTYPE<TIME>")
    return value


@handler(T.NOW, 0)
def now(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    return ctx.now


@handler(T.EPOCH_TIME, 1)
def epoch_time(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    return make_time(as_num(ctx.datum(args[0])))


@handler(T.ISO8601, 1)
def iso8601(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    tz = opts.get("default_timezone")
    return parse_iso8601(as_str(args[0]), as_str(tz) if tz is not None else None)


@handler(T.TO_EPOCH_TIME, 1)
def to_epoch_time(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return _time(ctx.datum(args[0]))["epoch_time"]


@handler(T.TO_ISO8601, 1)
def to_iso(ctx: Ctx, args: list, opts: dict, scope: dict) -> str:
    return to_iso8601(_time(ctx.datum(args[0])))


@handler(T.TIME, 4, 7)
def time_(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    if len(args) not in (4, 7):
        raise ReqlQueryLogicError(f"Got {len(args)} arguments to TIME (expected 4 or 7).")
    *parts, tz = [ctx.datum(a) for a in args]
    numbers = [as_num(p) for p in parts] + [0] * (6 - len(parts))
    year, month, day, hour, minute = (int(n) for n in numbers[:5])
    seconds = numbers[5]
    moment = datetime(year, month, day, hour, minute, tzinfo=parse_tz(as_str(tz)))
    return make_time(moment.timestamp() + seconds, format_tz(moment.tzinfo))


@handler(T.DURING, 3)
def during(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    moment, low, high = (_time(ctx.datum(a))["epoch_time"] for a in args)
    left_closed = bound_closed(opts, "left_bound", "closed")
    right_closed = bound_closed(opts, "right_bound", "open")
    above = moment >= low if left_closed else moment > low
    below = moment <= high if right_closed else moment < high
    return above and below


def _midnight(value: dict) -> datetime:
    return time_to_datetime(value).replace(hour=0, minute=0, second=0, microsecond=0)


@handler(T.DATE, 1)
def date(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    value = _time(ctx.datum(args[0]))
    return make_time(_midnight(value).timestamp(), value["timezone"])


@handler(T.TIME_OF_DAY, 1)
def time_of_day(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    value = _time(ctx.datum(args[0]))
    return num(round(value["epoch_time"] - _midnight(value).timestamp(), 3))


@handler(T.IN_TIMEZONE, 2)
def in_timezone(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    value = _time(ctx.datum(args[0]))
    tz = as_str(ctx.datum(args[1]))
    parse_tz(tz)
    return make_time(value["epoch_time"], format_tz(parse_tz(tz)))


_TIME_PARTS = {
    T.YEAR: lambda d: d.year,
    T.MONTH: lambda d: d.month,
    T.DAY: lambda d: d.day,
    T.DAY_OF_WEEK: lambda d: d.isoweekday(),
    T.DAY_OF_YEAR: lambda d: d.timetuple().tm_yday,
    T.HOURS: lambda d: d.hour,
    T.MINUTES: lambda d: d.minute,
    T.SECONDS: lambda d: num(d.second + d.microsecond / 1e6),
}


def _register_time_part(term_type: int, getter: Any) -> None:
    @handler(term_type, 1)
    def part(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
        return getter(time_to_datetime(_time(ctx.datum(args[0]))))


for _term_type, _getter in _TIME_PARTS.items():
    _register_time_part(_term_type, _getter)


@handler(T.TIMEZONE, 1)
def timezone_(ctx: Ctx, args: list, opts: dict, scope: dict) -> str:
    return _time(ctx.datum(args[0]))["timezone"]


def _register_constant(term_type: int, value: int) -> None:
    @handler(term_type, 0)
    def constant(ctx: Ctx, args: list, opts: dict, scope: dict) -> int:
        return value


for _i, _name in enumerate(
    ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"], 1
):
    _register_constant(getattr(T, _name), _i)
for _i, _name in enumerate(
    [
        "JANUARY",
        "FEBRUARY",
        "MARCH",
        "APRIL",
        "MAY",
        "JUNE",
        "JULY",
        "AUGUST",
        "SEPTEMBER",
        "OCTOBER",
        "NOVEMBER",
        "DECEMBER",
    ],
    1,
):
    _register_constant(getattr(T, _name), _i)
