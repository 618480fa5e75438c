"""A sample week of the optimiser's replay as a PNG."""

from __future__ import annotations

from pathlib import Path

from .harness import Trace


def plot_week(trace: Trace, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt

    figure, (flows, batteries, socs) = plt.subplots(3, 1, figsize=(14, 9), sharex=True)
    kw = [w / 1000 for w in trace.grid]
    flows.plot(trace.at, [w / 1000 for w in trace.load], label="house load", linewidth=0.8, color="tab:red")
    flows.plot(trace.at, [w / 1000 for w in trace.pv], label="PV", linewidth=0.8, color="tab:orange")
    flows.plot(trace.at, kw, label="grid (+ import)", linewidth=0.8, color="tab:blue")
    flows.set_ylabel("kW")
    flows.legend(loc="upper right", fontsize="small")
    flows.axhline(0, color="black", linewidth=0.5)
    for index, (battery, powers) in enumerate(trace.battery_power.items(), start=1):
        batteries.plot(
            trace.at, [w / 1000 for w in powers], label=f"battery {index} ({battery[-4:]})", linewidth=0.8
        )
        socs.plot(trace.at, trace.soc[battery], label=f"battery {index}", linewidth=0.8)
    batteries.axhline(0, color="black", linewidth=0.5)
    batteries.set_ylabel("kW (+ discharge)")
    batteries.legend(loc="upper right", fontsize="small")
    socs.set_ylabel("SOC %")
    socs.set_ylim(0, 100)
    socs.legend(loc="upper right", fontsize="small")
    flows.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
