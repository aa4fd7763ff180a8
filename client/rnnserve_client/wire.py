"""What goes over the wire: arrays as JSON lists and back, states, step ids, model info."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ArrayLike = np.ndarray | Sequence[Any]
State = dict[str, np.ndarray]

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "RNNSERVE_URL"
KEY_ENV = "RNNSERVE_API_KEY"


def server_url(url: str | None) -> str:
    """The server's base URL: given, else $RNNSERVE_URL, else the server's default address."""
    return (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def key_from_env(key: str | None) -> str | None:
    return key if key is not None else (os.environ.get(KEY_ENV) or None)


def timesteps(x: ArrayLike) -> np.ndarray:
    """One step's inputs as float32 [time, features]: a 1-D reading is one timestep."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"a step's inputs are [time, features] or one reading [features]; "
                         f"got shape {arr.shape}")
    return arr


def outputs(raw: Any) -> np.ndarray:
    """A reply's outputs [time, out] as float32."""
    return np.asarray(raw, dtype=np.float32)


def encode_state(state: Mapping[str, ArrayLike]) -> dict[str, dict[str, Any]]:
    """A state as create and reset take it: {"name": {"shape", "data"}}."""
    encoded = {}
    for name, value in state.items():
        arr = np.asarray(value, dtype=np.float32)
        encoded[name] = {"shape": list(arr.shape), "data": arr.ravel().tolist()}
    return encoded


def decode_state(raw: Mapping[str, Any]) -> State:
    return {name: np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
            for name, t in raw.items()}


class StepIds:
    """Step ids made by the client: a random prefix per session object and a counter, so a
    retry re-sends the same id and no two steps of a session share one."""

    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:16]
        self._counter = itertools.count()

    def __next__(self) -> str:
        return f"{self.prefix}-{next(self._counter)}"


@dataclass(frozen=True)
class ModelInfo:
    """A served model as GET /v1/models/{m} describes it (`raw`: the whole description)."""

    name: str
    version: int
    versions: list[int]
    input_size: int
    output_size: int
    streamable: bool
    features: list[Any] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ModelInfo:
        return cls(name=body["name"], version=int(body["version"]),
                   versions=[int(v) for v in body.get("versions", [])],
                   input_size=int(body["input_size"]), output_size=int(body["output_size"]),
                   streamable=bool(body.get("streamable", True)),
                   features=list(body.get("features", [])), raw=body)
