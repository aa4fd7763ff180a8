"""Write the console's static/weeks.json: real observed test weeks for the console's live
forecast, with the baselines' forecasts of the same hours. It lives with the training code (it
needs the train extra: pandas, pvlib), not in the server, which never imports the training
package:

    python -m rnnserve.export.console_weeks

A week is 168 hours of a test month (the same months and rule as `rnnserve train`, the same week
as each model's forecast.png): rows 24..191, after the month's first day, which `warmup` holds:
the console feeds it in one message first, so the session's state is warm when drawing starts,
exactly as the evaluation runs a month from a zero state and scores it from row 24 on. Weeks come
from Greensboro's test months and from the first test month of each site the models never
trained on. Values are float32, written with the shortest decimal that reads back to the same
float32, so the browser and the tests send the server exactly the inputs the file holds.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from rnnserve.console import STATIC

WEEK_HOURS = 168
OUT = STATIC / "weeks.json"


def _f32(value: float) -> float:
    """The shortest decimal that is the same float32."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


def _rows(x: np.ndarray) -> list[list[float]]:
    return [[_f32(v) for v in row] for row in x]


def build() -> dict[str, Any]:
    from rnnserve.export import data as D
    from rnnserve.export.baselines import same_hour_yesterday
    from rnnserve.export.scoring import prepare
    from rnnserve.export.train import TrainConfig

    cfg = TrainConfig()
    ds = prepare(cfg.data, tuple(cfg.features), tuple(cfg.val_months), tuple(cfg.test_months),
                 cfg.window, cfg.stride)
    picks = [(ds.site, m) for m in ds.split.test]
    picks += [(site, ds.split.test[0]) for site in ds.others.values()]
    weeks = []
    for site, number in picks:
        month = site.months[number]
        week = slice(D.WARMUP_HOURS, min(D.WARMUP_HOURS + WEEK_HOURS, len(month.y)))
        when = pd.Timestamp(month.times[week.start])
        weeks.append({
            "id": f"{site.name}-{number:02d}",
            "label": f"{D.site_label(site.name)}, {when:%B %Y}"
                     + ("" if site is ds.site else " (never trained on)"),
            # row t's inputs predict the temperature one hour later
            "timestamps": [pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M") for t in month.times[week]],
            "temperature_f": [_f32(v) for v in month.x[week, 0]],
            "inputs": _rows(month.x[week]),
            "target_f": [_f32(v) for v in month.y[week]],
            "warmup": _rows(month.x[: week.start]),
            "baselines_f": {
                "same_hour_yesterday": [_f32(v) for v in same_hour_yesterday(month)[week]],
                "linear_ar": [_f32(v) for v in ds.ridge.forecast(month)[week]],
            },
        })
    return {
        "source": "hourly observations from typical-meteorological-year files in the pvlib "
                  "package (each month one real observed month)",
        "features": list(cfg.features),
        "note": "inputs[t] = the features at timestamps[t] (local standard time), in the order "
                "of 'features'; target_f[t] = the dry-bulb temperature one hour later; "
                "warmup = the month's first 24 hours, fed before the week; baselines_f = the "
                "same-hour-yesterday and linear AR forecasts of target_f (persistence is "
                "temperature_f)",
        "cities": weeks,
    }


def main() -> None:
    OUT.write_text(json.dumps(build(), separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
