"""Forecasts for the planner, learned from the past only. Pure: series in, series out.

- `load_forecast`: the house load of the coming quarter-hours from the site's own history: for each quarter,
  the mean of the same weekday and quarter over the last `weeks` weeks, blended with the same quarter over
  the last days (recent habits, weather), with the wallbox taken out. Quarters nobody saw are NaN and left
  out. Without enough history it falls back to a typical household day shape scaled to the history's mean
  (or to 3,500 kWh a year without history).
- `pv_forecast_with_error`: for the replay, a PV forecast that could really have been had: the true PV,
  smoothed over two hours (a forecast sees weather, not single clouds), each day scaled by an error drawn
  from a seeded log-normal distribution correlated from day to day (typical day-ahead forecasts of a home
  system miss the day's energy by 20-40 %; sigma 0.3 puts the median miss near 20 % and one day in ten
  beyond 45 %).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

FloatArray = npt.NDArray[np.float64]

QUARTERS_PER_DAY = 96
QUARTERS_PER_WEEK = 7 * QUARTERS_PER_DAY
DEFAULT_DAILY_KWH = 3500 / 365
# The capacity reserve's floor looks this many quarter-hours either side of each time of day (5 h): a
# household's spikes come at no fixed time, but within its waking hours. Measured in the replay
# (2_persons_over65, synthetic prices, the year): the whole day's highest quarter as the floor costs
# EUR 105.62, a window of 1 h 117.31 (the capacity bill rises by EUR 20), 2 h 112.56, 4 h 103.63,
# 5 h 102.64, 6 h 103.48, 8 h 103.21.
PEAK_WINDOW_QUARTERS = 20
# How much of the last quarter-hour's departure from its learned value the next quarter-hour keeps. A load
# stays up (an oven, a wash) or down (the house away) for a while: over the year's four households the next
# quarter's departure follows the last one's with a regression slope of 0.54-0.68 (the one after: 0.2-0.3,
# left out). Measured in the replay (2_persons_over65, synthetic prices): EUR 0.6-0.7 a year less energy cost.
LOAD_PERSISTENCE = 0.6

# A household's day in hourly shares (night low, breakfast, midday, evening peak), from 00:00; sums to 1.
# fmt: off
_DAY_SHAPE = np.array([
    2.6, 2.3, 2.2, 2.1, 2.1, 2.4, 3.4, 4.6, 4.8, 4.4, 4.2, 4.4,
    4.9, 4.6, 4.2, 4.1, 4.4, 5.3, 6.6, 7.1, 6.6, 5.6, 4.6, 3.5,
])
# fmt: on
_DAY_SHAPE = _DAY_SHAPE / _DAY_SHAPE.sum()


def fallback_profile(quarters_from_midnight: npt.NDArray[np.int64], daily_kwh: float) -> FloatArray:
    """Typical household power (kW) at these quarters of the day, for `daily_kwh` a day."""
    hours = (quarters_from_midnight % QUARTERS_PER_DAY) // 4
    return np.asarray(_DAY_SHAPE[hours] * daily_kwh, dtype=np.float64)  # kWh in an hour = mean kW


def pv_day_shape(day: date, latitude: float = 51.0) -> FloatArray:
    """A clear-sky day's PV per quarter-hour (local solar time), as shares summing to 1: the sine of the
    sun's height between sunrise and sunset. Used until the add-on has seen a day of the site's own PV."""
    declination = math.radians(23.44) * math.sin(2 * math.pi * (day.timetuple().tm_yday - 81) / 365)
    lat = math.radians(latitude)
    hours = (np.arange(96) + 0.5) / 4
    angle = np.radians(15 * (hours - 12))
    height = np.sin(lat) * np.sin(declination) + np.cos(lat) * np.cos(declination) * np.cos(angle)
    shape = np.maximum(height, 0.0)
    return np.asarray(shape / shape.sum(), dtype=np.float64)


def load_forecast(
    history_kw: Sequence[float] | FloatArray,
    steps: int,
    *,
    quarter_of_day: int,
    weeks: int = 6,
    recent_days: int = 14,
    weekday_weight: float = 0.4,
    wallbox_history_kw: Sequence[float] | FloatArray | None = None,
    floor: float | None = 0.0,
    persistence: float = LOAD_PERSISTENCE,
) -> FloatArray:
    """The load (kW) of the `steps` quarter-hours that follow the history.

    `history_kw[-1]` is the quarter that just ended; `quarter_of_day` is the index (0..95) of the first
    forecast quarter, so the fallback profile knows the time of day. The wallbox's history, when given, is
    taken out first: the car is forecast on its own. `floor=None` keeps negative values (a net flow, the
    house minus its PV, forecast as one series). The first quarter keeps `persistence` times the last
    quarter's departure from what was learned for it (with more than a day of history, the last quarter
    seen); 0 for a series that starts and stops on its own (a car's charging).
    """
    history = np.asarray(history_kw, dtype=np.float64)
    if wallbox_history_kw is not None:
        history = history - np.asarray(wallbox_history_kw, dtype=np.float64)[-len(history) :]
    known = len(history)
    targets = known + np.arange(steps)
    weekly = _mean_of_lags(history, targets, QUARTERS_PER_WEEK, weeks)
    daily = _mean_of_lags(history, targets, QUARTERS_PER_DAY, recent_days)
    recent = history[-min(known, 28 * QUARTERS_PER_DAY) :]
    seen_quarters = int(np.sum(~np.isnan(recent)))
    daily_kwh = float(np.nanmean(recent)) * 24 if seen_quarters >= QUARTERS_PER_DAY else DEFAULT_DAILY_KWH
    fallback = fallback_profile(quarter_of_day + np.arange(steps, dtype=np.int64), daily_kwh)
    blended = np.where(
        np.isnan(weekly),
        daily,
        np.where(np.isnan(daily), weekly, weekday_weight * weekly + (1 - weekday_weight) * daily),
    )
    forecast = np.where(np.isnan(blended), fallback, blended)
    if persistence and steps and known > QUARTERS_PER_DAY and not math.isnan(history[-1]):
        last = load_forecast(
            history[:-1],
            1,
            quarter_of_day=(quarter_of_day - 1) % QUARTERS_PER_DAY,
            weeks=weeks,
            recent_days=recent_days,
            weekday_weight=weekday_weight,
            floor=None,
            persistence=0.0,
        )[0]
        forecast[0] += persistence * (history[-1] - last)
    return forecast if floor is None else np.maximum(forecast, floor)


def load_high_forecast(
    history_kw: Sequence[float] | FloatArray,
    steps: int,
    *,
    quantile: float = 0.9,
    weeks: int = 6,
    recent_days: int = 14,
    spread: int = 4,
    daily_peak_quantile: float | None = 1.0,
    peak_days: int = 28,
    peak_window: int | None = PEAK_WINDOW_QUARTERS,
    wallbox_history_kw: Sequence[float] | FloatArray | None = None,
) -> FloatArray:
    """What the load of each coming quarter-hour could reach (kW): a high quantile of the same quarter on
    the same weekday and on the recent days. For the capacity tariff: a mean forecast does not see the
    kettle and the oven at once, and a month's peak is set by exactly that. Empty history: zeros (no
    reserve is asked for what was never seen).

    No quarter is forecast below the `daily_peak_quantile` of the last `peak_days` days' highest quarter-hours
    within `peak_window` quarter-hours of its time of day (by default the highest of them;
    `daily_peak_quantile=None`: no such floor; `peak_window=None`: each day's highest at any time). A
    household whose spikes come on many days but at no fixed time (a late oven, a heater at midnight) sets a
    month's peak exactly when a forecast by time of day says nothing is coming; with the floor, the capacity
    reserve is kept for the spike the household reached in the last four weeks around that time. In the
    replay this takes the year's capacity cost of a household with such spikes (2_persons_over65, synthetic
    prices) from EUR 161 to 132, the bound's being 131. The window is what keeps it from costing energy: a
    reserve held all night for a spike that only ever comes in the evening is energy the evening peak's price
    should have had (see PEAK_WINDOW_QUARTERS).
    """
    history = np.asarray(history_kw, dtype=np.float64)
    if wallbox_history_kw is not None:
        history = history - np.asarray(wallbox_history_kw, dtype=np.float64)[-len(history) :]
    floor = (
        None
        if daily_peak_quantile is None
        else _recent_peak(history, steps, daily_peak_quantile, peak_days, peak_window)
    )
    if len(history) > 2 * spread:
        # a spike comes around a time of day, not at its minute: each quarter counts the highest load
        # within `spread` quarter-hours of it
        padded = np.pad(history, spread, mode="edge")
        window = padded[: len(history)].copy()
        for shift in range(1, 2 * spread + 1):
            np.maximum(window, padded[shift : shift + len(history)], out=window)
        history = window
    targets = len(history) + np.arange(steps)
    lags = [k * QUARTERS_PER_WEEK for k in range(1, weeks + 1)] + [
        k * QUARTERS_PER_DAY for k in range(1, recent_days + 1) if k % 7
    ]
    seen = np.full((len(lags), steps), math.nan)
    for row, lag in enumerate(lags):
        index = targets - lag
        ok = (index >= 0) & (index < len(history))
        seen[row, ok] = history[index[ok]]
    high = _quantile_of_seen(seen, quantile)
    return high if floor is None else np.maximum(high, floor)


def _recent_peak(
    history: FloatArray, steps: int, quantile: float, days: int, window: int | None
) -> FloatArray:
    """Per coming quarter-hour, the quantile over the last `days` days of each day's highest quarter-hour
    within `window` quarter-hours of its time of day (None: the whole day); zeros under 3 days seen."""
    recent = history[-days * QUARTERS_PER_DAY :]
    # whole 24-hour spans, the last ending with the quarter that just ended: column c holds the quarters at
    # the time of day of the c-th quarter to come (and of c + 96, ...)
    by_day = recent[len(recent) % QUARTERS_PER_DAY :].reshape(-1, QUARTERS_PER_DAY)
    by_day = by_day[~np.all(np.isnan(by_day), axis=1)]
    if len(by_day) < 3:
        return np.zeros(steps)
    if window is None:
        return np.full(steps, float(np.quantile(np.nanmax(by_day, axis=1), quantile)))
    window = min(window, QUARTERS_PER_DAY // 2)  # from 12 h either side on, every window is the whole day
    if quantile >= 1.0:
        by_day = np.fmax.reduce(by_day, axis=0, keepdims=True)  # the highest of all days first: the same
    # each span's highest quarter within the window of each time of day, around the clock (NaN: not seen)
    around = np.concatenate([by_day[:, -window:], by_day, by_day[:, :window]], axis=1) if window else by_day
    by_day = np.fmax.reduce(sliding_window_view(around, 2 * window + 1, axis=1), axis=2)
    by_time = np.nan_to_num(by_day[0], nan=0.0) if quantile >= 1.0 else _quantile_of_seen(by_day, quantile)
    return np.asarray(by_time[np.arange(steps) % QUARTERS_PER_DAY], dtype=np.float64)


def _quantile_of_seen(seen: FloatArray, quantile: float) -> FloatArray:
    """Per column, the quantile (linear interpolation) of its non-NaN values; 0 where there are none.
    (numpy's nanquantile does the same a column at a time, a hundred times slower.)"""
    count = np.sum(~np.isnan(seen), axis=0)
    ordered = np.sort(np.where(np.isnan(seen), -np.inf, seen), axis=0)  # the missing ones first
    position = (len(seen) - count) + quantile * np.maximum(count - 1, 0)
    below = np.minimum(np.floor(position).astype(np.int64), len(seen) - 1)
    above = np.minimum(below + 1, len(seen) - 1)
    low = np.take_along_axis(ordered, below[None, :], axis=0)[0]
    high = np.take_along_axis(ordered, above[None, :], axis=0)[0]
    with np.errstate(invalid="ignore"):  # -inf - -inf where nothing was seen: masked below
        value = low + (position - below) * (high - low)
    return np.asarray(np.where(count > 0, np.nan_to_num(value, neginf=0.0), 0.0), dtype=np.float64)


def _mean_of_lags(history: FloatArray, targets: npt.NDArray[np.int64], lag: int, count: int) -> FloatArray:
    """Per target, the mean of history[target - k * lag] for k = 1..count that are in the past (NaN: none)."""
    index = targets[None, :] - lag * np.arange(1, count + 1)[:, None]
    ok = (index >= 0) & (index < len(history))
    seen = np.where(ok, history[np.where(ok, index, 0)] if len(history) else 0.0, math.nan)
    known = ~np.isnan(seen)  # a quarter the add-on did not see (it was stopped) is left out
    # row by row, k = 1 first: the same sums, to the bit, as adding the lags one at a time
    total = np.add.reduce(np.where(known, seen, 0.0), axis=0)
    found = np.count_nonzero(known, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(found > 0, total / np.maximum(found, 1), math.nan)


def pv_forecast_with_error(
    true_kw: Sequence[float] | FloatArray,
    *,
    seed: int = 1,
    sigma: float = 0.3,
    correlation: float = 0.3,
    smoothing_quarters: int = 8,
) -> FloatArray:
    """A whole series of day-by-day PV forecasts (kW) made from the truth with a realistic error.

    Each day's forecast keeps its energy through the smoothing and is then scaled by exp(sigma z - sigma^2/2)
    (mean 1), z an AR(1) series of standard normal draws with the given day-to-day correlation.
    """
    truth = np.asarray(true_kw, dtype=np.float64)
    days = math.ceil(len(truth) / QUARTERS_PER_DAY)
    padded = np.zeros(days * QUARTERS_PER_DAY)
    padded[: len(truth)] = truth
    by_day = padded.reshape(days, QUARTERS_PER_DAY)
    kernel = np.ones(smoothing_quarters) / smoothing_quarters
    smooth = np.array([np.convolve(day, kernel, mode="same") for day in by_day])
    smooth[by_day <= 0] = 0.0  # no PV forecast at night, however the smoothing spreads the edges
    energy, smoothed_energy = by_day.sum(axis=1), smooth.sum(axis=1)
    scale = np.where(smoothed_energy > 0, energy / np.where(smoothed_energy > 0, smoothed_energy, 1), 0.0)
    rng = np.random.default_rng(seed)
    z = np.empty(days)
    draws = rng.standard_normal(days)
    z[0] = draws[0]
    for d in range(1, days):
        z[d] = correlation * z[d - 1] + math.sqrt(1 - correlation**2) * draws[d]
    factor = np.exp(sigma * z - sigma**2 / 2)
    forecast = smooth * (scale * factor)[:, None]
    return np.asarray(forecast.reshape(-1)[: len(truth)], dtype=np.float64)


def pv_nowcast(
    forecast_kw: Sequence[float] | FloatArray,
    forecast_so_far_kw: Sequence[float] | FloatArray,
    actual_so_far_kw: Sequence[float] | FloatArray,
    rest_of_today: int,
) -> FloatArray:
    """Today's remaining PV forecast corrected by how today has gone so far (what the meter saw against
    what was forecast for those hours), the more so the more of the day's forecast is behind: a grey
    morning says more about the afternoon than a forecast made yesterday. Later days stay as forecast."""
    forecast = np.array(forecast_kw, dtype=np.float64)
    seen = float(np.sum(forecast_so_far_kw))
    if seen <= 0 or rest_of_today <= 0:
        return forecast
    ratio = min(3.0, max(0.3, float(np.sum(actual_so_far_kw)) / seen))
    weight = seen / (seen + float(np.sum(forecast[:rest_of_today])))
    forecast[:rest_of_today] *= 1 + weight * (ratio - 1)
    return forecast
