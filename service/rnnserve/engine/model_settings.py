"""Per-model serving settings, declared in a model's `model.json` (issue 19, item 1).

The setting keys are named as the server's flags, with underscores: `max_batch`,
`max_delay_ms`, `session_ttl_s`, `max_sessions`, `inference_workers`, plus `warmup` (inputs
run once when an instance loads) and `rewarm_steps` (how many of a session's last inputs are
kept so that it can be migrated to another version; 0 = off). A setting a model does not
declare takes the server's flag (`SettingDefaults`, from `Settings`); every other key of
model.json is metadata and is kept as it is.

The keys are checked when the files are read (`declared_settings`): a bad value is refused
with the file and the field named, so the version is not served and the repository index and
`GET /v1/models` say why. Warmup inputs whose width does not match the model can only be
checked once the model is open (`Runner`), with the same file and field named
(`ModelSettings.where`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from rnnserve.settings import Settings

SETTING_KEYS = ("max_batch", "max_delay_ms", "session_ttl_s", "max_sessions",
                "inference_workers", "warmup", "rewarm_steps")
"""The model.json keys that are settings rather than metadata."""

MAX_WARMUP_SAMPLES = 16
MAX_WARMUP_BATCH = 1024
MAX_WARMUP_TIMESTEPS = 10_000
MAX_REWARM_STEPS = 10_000
"""Bounds that keep a typo in model.json from making a load run for minutes or a session
record hold megabytes."""

WarmupData = Literal["zeros", "random"]


class ModelSettingsError(ValueError):
    """A setting in a model.json that cannot be used: names the file and the field."""

    def __init__(self, where: str, key: str, problem: str) -> None:
        super().__init__(f"{where}: field {key!r} {problem}")
        self.where = where
        self.key = key


@dataclass(frozen=True)
class WarmupSample:
    """One warmup run: `batch` sequences of `timesteps` steps from a zero state, either
    generated (`data`: zeros or random in [-1, 1), seeded) or the given `inputs` (one sequence,
    [timesteps][features], repeated `batch` times)."""

    batch: int = 1
    timesteps: int = 1
    data: WarmupData = "zeros"
    inputs: tuple[tuple[float, ...], ...] | None = None


@dataclass(frozen=True)
class DeclaredSettings:
    """What a model's model.json files declare (None: not declared), and which file declared
    each (`origin`: key → file path, for messages)."""

    max_batch: int | None = None
    max_delay_ms: float | None = None
    session_ttl_s: float | None = None
    max_sessions: int | None = None
    inference_workers: int | None = None
    warmup: tuple[WarmupSample, ...] | None = None
    rewarm_steps: int | None = None
    origin: Mapping[str, str] = field(default_factory=dict)

    def over(self, shared: DeclaredSettings) -> DeclaredSettings:
        """These settings (a version's model.json) over `shared` (the model folder's)."""
        mine = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "origin" and getattr(self, f.name) is not None}
        return replace(shared, **mine, origin={**shared.origin, **self.origin})

    @property
    def keys(self) -> tuple[str, ...]:
        """The setting keys declared."""
        return tuple(k for k in SETTING_KEYS if getattr(self, k) is not None)


@dataclass(frozen=True)
class SettingDefaults:
    """The server's flags that a model's settings override (from `Settings`)."""

    max_batch: int = 1024
    max_delay_ms: float = 0.5
    session_ttl_s: float = 900.0
    max_sessions: int = 500_000
    inference_workers: int = 2

    @classmethod
    def of(cls, settings: Settings) -> SettingDefaults:
        return cls(settings.max_batch, settings.max_delay_ms, settings.session_ttl_s,
                   settings.max_sessions, settings.inference_workers)


@dataclass(frozen=True)
class ModelSettings:
    """The effective settings of one model version: declared in model.json, else the flag."""

    max_batch: int
    max_delay_ms: float
    session_ttl_s: float
    max_sessions: int
    inference_workers: int
    warmup: tuple[WarmupSample, ...] = ()
    rewarm_steps: int = 0
    declared: frozenset[str] = frozenset()
    """The keys model.json set (the others are the server's defaults)."""
    origin: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def effective(cls, declared: DeclaredSettings, defaults: SettingDefaults) -> ModelSettings:
        def pick(key: str) -> Any:
            value = getattr(declared, key)
            return getattr(defaults, key) if value is None else value
        return cls(
            max_batch=pick("max_batch"), max_delay_ms=pick("max_delay_ms"),
            session_ttl_s=pick("session_ttl_s"), max_sessions=pick("max_sessions"),
            inference_workers=pick("inference_workers"),
            warmup=declared.warmup or (), rewarm_steps=declared.rewarm_steps or 0,
            declared=frozenset(declared.keys), origin=dict(declared.origin))

    def is_declared(self, key: str) -> bool:
        return key in self.declared

    def where(self, key: str) -> str:
        """The file that declared `key` (for messages)."""
        return self.origin.get(key, "model.json")

    def describe(self) -> dict[str, Any]:
        """The settings as JSON for listings: each value, and which came from model.json."""
        return {
            "max_batch": self.max_batch, "max_delay_ms": self.max_delay_ms,
            "session_ttl_s": self.session_ttl_s, "max_sessions": self.max_sessions,
            "inference_workers": self.inference_workers,
            "warmup": [_describe_sample(s) for s in self.warmup],
            "rewarm_steps": self.rewarm_steps,
            "from_model_json": sorted(self.declared),
        }


def _describe_sample(sample: WarmupSample) -> dict[str, Any]:
    if sample.inputs is not None:
        return {"batch": sample.batch, "timesteps": sample.timesteps, "inputs": "given"}
    return {"batch": sample.batch, "timesteps": sample.timesteps, "data": sample.data}


# -- reading model.json ---------------------------------------------------------------------


def declared_settings(metadata: Mapping[str, Any], path: Path | str) -> DeclaredSettings:
    """The setting keys of one model.json's object, checked; raises ModelSettingsError naming
    `path` and the field. Keys that are not settings are left alone (metadata)."""
    where = str(path)
    values: dict[str, Any] = {}
    for key in SETTING_KEYS:
        if key not in metadata:
            continue
        value = metadata[key]
        if key == "warmup":
            values[key] = _warmup(value, where)
        elif key in ("max_delay_ms", "session_ttl_s"):
            values[key] = _number(value, where, key, positive=key == "session_ttl_s")
        else:
            values[key] = _integer(value, where, key, least=0 if key == "rewarm_steps" else 1,
                                   most=MAX_REWARM_STEPS if key == "rewarm_steps" else None)
    return DeclaredSettings(**values, origin={key: where for key in values})


def _integer(value: Any, where: str, key: str, least: int, most: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelSettingsError(where, key, f"must be a whole number, got {value!r}")
    if value < least:
        raise ModelSettingsError(where, key, f"must be at least {least}, got {value}")
    if most is not None and value > most:
        raise ModelSettingsError(where, key, f"must be at most {most}, got {value}")
    return value


def _number(value: Any, where: str, key: str, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelSettingsError(where, key, f"must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ModelSettingsError(where, key, f"must be greater than 0, got {value}")
    if value < 0:
        raise ModelSettingsError(where, key, f"must be 0 or more, got {value}")
    return float(value)


_SAMPLE_KEYS = {"batch", "timesteps", "data", "inputs"}
_WARMUP_FORM = ('a list of samples, each {"batch": B, "timesteps": T, "data": "zeros" or '
                '"random"} or {"batch": B, "inputs": [[x, ...], ...]} (one sequence of '
                'timesteps of the model\'s input features)')


def _warmup(value: Any, where: str) -> tuple[WarmupSample, ...]:
    if not isinstance(value, list):
        raise ModelSettingsError(where, "warmup", f"must be {_WARMUP_FORM}; got {value!r}")
    if len(value) > MAX_WARMUP_SAMPLES:
        raise ModelSettingsError(where, "warmup", f"has {len(value)} samples; at most "
                                                  f"{MAX_WARMUP_SAMPLES}")
    return tuple(_sample(item, where, f"warmup[{i}]") for i, item in enumerate(value))


def _sample(item: Any, where: str, key: str) -> WarmupSample:
    if not isinstance(item, dict):
        raise ModelSettingsError(where, key, f"must be an object: {_WARMUP_FORM}")
    unknown = sorted(set(item) - _SAMPLE_KEYS)
    if unknown:
        raise ModelSettingsError(where, key, f"has unknown keys {unknown}; "
                                             f"known: {sorted(_SAMPLE_KEYS)}")
    batch = _integer(item.get("batch", 1), where, f"{key}.batch", 1, MAX_WARMUP_BATCH)
    data = item.get("data", "zeros")
    if data not in ("zeros", "random"):
        raise ModelSettingsError(where, f"{key}.data", f"must be 'zeros' or 'random', "
                                                       f"got {data!r}")
    if "inputs" not in item:
        timesteps = _integer(item.get("timesteps", 1), where, f"{key}.timesteps", 1,
                             MAX_WARMUP_TIMESTEPS)
        return WarmupSample(batch, timesteps, data)
    if "data" in item:
        raise ModelSettingsError(where, key, "gives both 'inputs' and 'data'; give one")
    inputs = _inputs(item["inputs"], where, f"{key}.inputs")
    if "timesteps" in item and item["timesteps"] != len(inputs):
        raise ModelSettingsError(where, f"{key}.timesteps", f"is {item['timesteps']!r} but "
                                 f"'inputs' has {len(inputs)} timesteps")
    return WarmupSample(batch, len(inputs), "zeros", inputs)


def _inputs(value: Any, where: str, key: str) -> tuple[tuple[float, ...], ...]:
    form = "must be a non-empty list of timesteps, each a list of numbers (the features)"
    if not isinstance(value, list) or not value or len(value) > MAX_WARMUP_TIMESTEPS:
        raise ModelSettingsError(where, key, f"{form}; at most {MAX_WARMUP_TIMESTEPS} timesteps")
    rows: list[tuple[float, ...]] = []
    for t, row in enumerate(value):
        if not isinstance(row, list) or not row or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                for x in row):
            raise ModelSettingsError(where, f"{key}[{t}]", f"{form}; got {row!r}")
        rows.append(tuple(float(x) for x in row))
    if len({len(r) for r in rows}) > 1:
        raise ModelSettingsError(where, key, "has timesteps of different widths; every "
                                             "timestep needs the same number of features")
    return tuple(rows)
