"""Write the console's static/weeks.json: one test week per city from the REAL training data,
for the console's live forecast. It lives with the training code (it needs the train extra:
pandas, vega_datasets), not in the server, which never imports the training package:

    python -m rnnserve.export.console_weeks

Each city's week is the first 168 hours of its test part (the same split as `rnnserve train`,
the same week as each model's forecast.png). `warmup` holds the 48 hours before the week: the
console feeds them in one message first, so the session's state is warm when drawing starts, as
in training's evaluation (which runs the whole year through the model). Values are float32,
written with the shortest decimal that reads back to the same float32, so the browser and the
test send the server exactly the inputs the file holds.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from rnnserve.console import STATIC

WEEK_HOURS = 168
WARMUP_HOURS = 48
OUT = STATIC / "weeks.json"
LABELS = {"seattle": "Seattle", "san_francisco": "San Francisco"}


def _f32(value: float) -> float:
    """The shortest decimal that is the same float32."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


def _rows(x: np.ndarray) -> list[list[float]]:
    return [[_f32(v) for v in row] for row in x]


def build() -> dict[str, Any]:
    from rnnserve.export import data as D

    cities = []
    for city in D.load_cities():
        split = D.chronological_split(len(city.y))
        start = split.test[0]
        stop = min(start + WEEK_HOURS, split.test[1])
        week = slice(start, stop)
        warm = slice(max(0, start - WARMUP_HOURS), start)
        cities.append({
            "id": city.name,
            "label": LABELS.get(city.name, city.name),
            # hour t's inputs predict the temperature at t + 1 h, the "target" timestamp
            "timestamps": [d.strftime("%Y-%m-%dT%H:%M") for d in city.dates[week]],
            "temperature_f": [_f32(v) for v in city.x[week, 0]],
            "inputs": _rows(city.x[week]),
            "target_f": [_f32(v) for v in city.y[week]],
            "warmup": _rows(city.x[warm]),
        })
    return {
        "source": D.DATA_SOURCE,
        "features": [name for name, _ in D.FEATURES],
        "note": "test part of each city (chronological 70/15/15 split); inputs[t] = "
                "[temperature_f, hour_sin, hour_cos] at timestamps[t]; target_f[t] = the "
                "temperature one hour later",
        "cities": cities,
    }


def main() -> None:
    OUT.write_text(json.dumps(build(), separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
