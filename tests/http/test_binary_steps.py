"""The binary body of the gateway's bulk steps, against a real server: float32 in with a JSON
header, float32 out with one, the same numbers as the JSON form; items fail alone (their rows
zeros, their errors listed by index); step ids replay; and every malformed body (header
missing or wrong, wrong datatype, too few or too many bytes, a shape that does not match) is
a 400 that says what is wrong and leaves every session as it was."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import ServerProcess

MODEL = "tiny-gru"
RNG = np.random.default_rng(17)


def sessions(server: ServerProcess, n: int) -> list[str]:
    r = httpx.post(f"{server.url}/v1/models/{MODEL}/sessions", json={"sessions": [{}] * n})
    assert r.status_code == 200, r.text
    return [x["session_id"] for x in r.json()["results"]]


def frame(header: dict[str, Any], data: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + data, {"content-type": "application/octet-stream",
                         "inference-header-content-length": str(len(head))}


def post_binary(server: ServerProcess, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{MODEL}/steps", content=body, headers=headers)


def binary_step(server: ServerProcess, ids: list[str], x: np.ndarray,
                **extra: Any) -> tuple[dict[str, Any], np.ndarray]:
    body, headers = frame({"session_ids": ids, "shape": list(x.shape), "datatype": "FP32",
                           **extra}, x.astype("<f4").tobytes())
    r = post_binary(server, body, headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    split = int(r.headers["inference-header-content-length"])
    header = orjson.loads(r.content[:split])
    outputs = np.frombuffer(r.content[split:], "<f4").reshape(header["shape"])
    return header, outputs


def steps_of(server: ServerProcess, sid: str) -> int:
    return int(httpx.get(f"{server.url}/v1/sessions/{sid}").json()["steps"])


def test_binary_steps_equal_json_steps(server: ServerProcess) -> None:
    by_json, by_binary = sessions(server, 5), sessions(server, 5)
    for _ in range(3):
        x = RNG.normal(size=(5, 2, 3)).astype(np.float32)
        r = httpx.post(f"{server.url}/v1/models/{MODEL}/steps", json={"steps": [
            {"session_id": sid, "inputs": xi.tolist()} for sid, xi in zip(by_json, x,
                                                                            strict=True)]})
        want = np.asarray([item["outputs"] for item in r.json()["results"]], np.float32)
        header, got = binary_step(server, by_binary, x)
        assert header["errors"] == [] and header["datatype"] == "FP32"
        assert header["steps"] == [item["steps"] for item in r.json()["results"]]
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_items_fail_alone_with_their_index(server: ServerProcess) -> None:
    ids = sessions(server, 3)
    x = RNG.normal(size=(4, 1, 3)).astype(np.float32)
    x[2, 0, 1] = np.nan
    header, outputs = binary_step(server, [ids[0], "no-such-session", ids[1], ids[2]], x)
    assert header["steps"] == [1, None, None, 1]
    assert [(e["index"], e["status"]) for e in header["errors"]] == [(1, 404), (2, 400)]
    assert header["errors"][0]["session_id"] == "no-such-session"
    assert "finite" in header["errors"][1]["error"]
    assert not outputs[1].any() and not outputs[2].any() and outputs[0].any()
    assert [steps_of(server, sid) for sid in ids] == [1, 0, 1]


def test_when_every_item_fails_the_reply_keeps_the_models_width(server: ServerProcess) -> None:
    """The reply's shape is [sessions, timesteps, the model's output size] whichever items
    failed (it was [n, t, 0] when all did, so a gateway that reads rows by shape broke)."""
    ids = sessions(server, 1)
    x = RNG.normal(size=(2, 3, 3)).astype(np.float32)
    x[1, 0, 0] = np.inf
    header, outputs = binary_step(server, ["no-such-session", ids[0]], x)
    size = httpx.get(f"{server.url}/v1/models/{MODEL}").json()["output_size"]
    assert header["shape"] == [2, 3, size] and outputs.shape == (2, 3, size) and size > 0
    assert header["steps"] == [None, None] and not outputs.any()
    assert steps_of(server, ids[0]) == 0


def test_a_repeated_step_id_is_replayed_not_applied_twice(server: ServerProcess) -> None:
    ids = sessions(server, 2)
    x = RNG.normal(size=(2, 1, 3)).astype(np.float32)
    first, out1 = binary_step(server, ids, x, step_ids=["a", None])
    again, out2 = binary_step(server, ids, x, step_ids=["a", None])
    assert first["steps"] == [1, 1] and again["steps"] == [1, 2]
    np.testing.assert_array_equal(out1[0], out2[0])
    later, _ = binary_step(server, ids, x, step_ids=["b", "c"])
    older, out3 = binary_step(server, ids, x, step_ids=["a", "c"])  # not the latest: still
    assert later["steps"] == [2, 3] and older["steps"] == [1, 3]  # replayed, both
    np.testing.assert_array_equal(out3[0], out1[0])
    assert [steps_of(server, sid) for sid in ids] == [2, 3]


def state_of(server: ServerProcess, sid: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/v1/sessions/{sid}/state")
    assert r.status_code == 200, r.text
    return {name: tensor["data"] for name, tensor in r.json()["state"].items()}


def test_a_gateways_large_batches_match_the_same_steps_in_small_ones(
        server: ServerProcess) -> None:
    """A gateway's batch of KEEP_ROWS or more sessions keeps its new states as they came
    from ONNX Runtime, and its next step of the same sessions is fed them as they are
    (state/slab.py). Twins stepped in batches too small for that, with a single step, a
    state read, a reset and a deleted session's slot taken again in between, must answer
    and hold exactly the same."""
    n, part = 300, 100
    kept, twins = sessions(server, n), sessions(server, n)
    order = np.random.default_rng(3).permutation(n)  # not their slots' order
    kept, twins = [kept[i] for i in order], [twins[i] for i in order]
    for number in range(5):
        x = RNG.normal(size=(n, 1, 3)).astype(np.float32)
        header, got = binary_step(server, kept, x)
        want = np.concatenate([binary_step(server, twins[i:i + part], x[i:i + part])[1]
                               for i in range(0, n, part)])
        assert header["errors"] == []
        np.testing.assert_array_equal(got, want)
        if number == 1:  # one session stepped alone
            for sid in (kept[7], twins[7]):
                r = httpx.post(f"{server.url}/v1/sessions/{sid}/step",
                               json={"inputs": x[7].tolist()})
                assert r.status_code == 200, r.text
            assert state_of(server, kept[11]) == state_of(server, twins[11])
        if number == 2:  # a reset, and a session deleted and its slot taken by a new one
            for ids in (kept, twins):
                assert httpx.post(f"{server.url}/v1/sessions/{ids[13]}/reset").status_code == 200
                assert httpx.delete(f"{server.url}/v1/sessions/{ids[5]}").status_code == 204
                ids[5] = sessions(server, 1)[0]
    for i in (5, 7, 11, 13, 200):
        assert state_of(server, kept[i]) == state_of(server, twins[i])
    assert steps_of(server, kept[7]) == steps_of(server, twins[7]) == 6


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("header missing", "no-header", "Inference-Header-Content-Length header is missing"),
    ("header length not a number", "length=abc", "must be the byte length"),
    ("header length past the body", "length=100000", "must be the byte length"),
    ("header not JSON", "not-json", "malformed JSON"),
    ("header not an object", {"list": True}, "must be an object"),
    ("wrong datatype", {"datatype": "FP64"}, "FP64"),
    ("one byte short", "short", "bytes after the JSON header"),
    ("one value too many", "long", "bytes after the JSON header"),
    ("float64 bytes", "float64", "bytes after the JSON header"),
    ("shape of other sessions", {"shape": [3, 1, 3]}, "one row per session id"),
    ("shape of two dimensions", {"shape": [2, 3]}, "[sessions, timesteps, features]"),
    ("unknown field", {"inputs": []}, "unknown field"),
    ("no session ids", {"session_ids": []}, "session_ids"),
    ("step ids of another length", {"step_ids": ["a"]}, "step_ids"),
]


@pytest.mark.parametrize(("case", "change", "says"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_a_bad_binary_body_is_a_clear_400_and_changes_nothing(
        server: ServerProcess, case: str, change: Any, says: str) -> None:
    ids = sessions(server, 2)
    x = RNG.normal(size=(2, 1, 3)).astype(np.float32)
    header: dict[str, Any] = {"session_ids": ids, "shape": [2, 1, 3], "datatype": "FP32"}
    data = x.astype("<f4").tobytes()
    if isinstance(change, dict) and "list" not in change:
        header.update(change)
    body, headers = frame(header, data)
    if change == "no-header":
        del headers["inference-header-content-length"]
    elif change == "length=abc":
        headers["inference-header-content-length"] = "abc"
    elif change == "length=100000":
        headers["inference-header-content-length"] = "100000"
    elif change == "not-json":
        body, headers = b"{nope" + data, {**headers, "inference-header-content-length": "5"}
    elif isinstance(change, dict) and "list" in change:
        body, headers = frame([1, 2], data)  # type: ignore[arg-type]
    elif change == "short":
        body = body[:-1]
    elif change == "long":
        body += np.float32(1).tobytes()
    elif change == "float64":
        body, headers = frame(header, x.astype("<f8").tobytes())
    r = post_binary(server, body, headers)
    assert r.status_code == 400, (case, r.status_code, r.text)
    assert says in r.json()["error"], r.json()["error"]
    assert [steps_of(server, sid) for sid in ids] == [0, 0]
