"""A 504 tells the truth about a step (REST, the gateway, KServe v2 over HTTP): at a tiny
--request-timeout-s, hundreds of long steps sent at once to one session are each either
applied and answered 200 (late, if their write had begun) or withdrawn and answered 504 saying
they were not applied (408, saying the same, when the limit ran out before the server had read
the whole body); the session counts exactly the 200s, then and later. KServe v2
sequence steps take a `step_id` with REST's replay rule."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess, serving

STEPS = 1000  # timesteps per step: --max-step-timesteps' default
CALLS = 300
MODEL = "tiny-lstm"
RNG = np.random.default_rng(53)
SAFE = "retrying it is safe"
NOT_DONE = {408, 504}  # timed out: before the whole body was read, or after


@pytest.fixture(scope="module")
def tight(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo), "--request-timeout-s", "0.02"],
                 tmp_path_factory.mktemp("tight") / "server.log") as proc:
        yield proc


def client(server: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=60,
                             limits=httpx.Limits(max_connections=CALLS))


async def until_ok(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Response:
    """Setup under a 20 ms limit: a 504 (or 408) here is "changed nothing" too, so send it
    again."""
    for _ in range(50):
        r = await http.post(url, json=body)
        if r.status_code not in NOT_DONE:
            assert r.status_code in (200, 201), r.text
            return r
    raise AssertionError(f"{url} kept timing out")


def assert_not_applied(r: httpx.Response) -> None:
    """Every 504 and 408 says that nothing was applied and that a retry is safe."""
    message = r.json()["error"]
    assert SAFE in message and ("not applied" in message or "no step was applied" in message), \
        message


async def steps_now(http: httpx.AsyncClient, session_id: str) -> int:
    for _ in range(50):  # (a describe can time out too under load)
        r = await http.get(f"/v1/sessions/{session_id}")
        if r.status_code == 200:
            return int(r.json()["steps"])
    raise AssertionError(r.text)


async def assert_counts_exactly(http: httpx.AsyncClient, session_id: str, applied: int) -> None:
    """Exactly the 200s, and still so a while later: no 504'd step lands afterwards."""
    assert await steps_now(http, session_id) == applied
    await asyncio.sleep(0.5)
    assert await steps_now(http, session_id) == applied


async def test_rest_steps_at_a_tiny_limit_are_applied_or_withdrawn(tight: ServerProcess) -> None:
    async with client(tight) as http:
        created = await until_ok(http, f"/v1/models/{MODEL}/sessions", {})
        sid = created.json()["session_id"]
        x = RNG.normal(size=(STEPS, 3)).round(3).tolist()
        answers = await asyncio.gather(*(http.post(f"/v1/sessions/{sid}/step", json={
            "inputs": x}) for _ in range(CALLS)))
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, *NOT_DONE} and 504 in codes
        ok = [r.json()["steps"] for r in answers if r.status_code == 200]
        # each 200 is one step applied once, in some order: 1000, 2000, ... with no gaps
        assert sorted(ok) == [STEPS * (i + 1) for i in range(len(ok))]
        for r in answers:
            if r.status_code in NOT_DONE:
                assert_not_applied(r)
        await assert_counts_exactly(http, sid, STEPS * len(ok))


async def test_gateway_items_at_a_tiny_limit_are_applied_or_withdrawn(
        tight: ServerProcess) -> None:
    """Gateway requests all stepping the same two sessions: every item is applied (200 item)
    or not (a 504 item, or the whole request 504), and each session counts its 200 items."""
    async with client(tight) as http:
        sids = [(await until_ok(http, f"/v1/models/{MODEL}/sessions", {})).json()["session_id"]
                for _ in range(2)]
        x = RNG.normal(size=(STEPS, 3)).round(3).tolist()
        body = {"steps": [{"session_id": sid, "inputs": x} for sid in sids]}
        answers = await asyncio.gather(*(http.post(f"/v1/models/{MODEL}/steps", json=body)
                                         for _ in range(CALLS // 3)))
        applied = dict.fromkeys(sids, 0)
        timed_out = 0
        for r in answers:
            if r.status_code in NOT_DONE:
                assert_not_applied(r)
                timed_out += 1
                continue
            assert r.status_code == 200, r.text
            for item in r.json()["results"]:
                if "error" in item:
                    assert item["status"] == 504 and SAFE in item["error"], item
                    timed_out += 1
                else:
                    applied[item["session_id"]] += STEPS
        assert timed_out
        for sid in sids:
            await assert_counts_exactly(http, sid, applied[sid])


def v2_body(x: list[list[float]], **parameters: Any) -> dict[str, Any]:
    return {"parameters": parameters, "inputs": [
        {"name": "input", "shape": [1, len(x), 3], "datatype": "FP32",
         "data": [v for row in x for v in row]}]}


async def test_v2_sequence_steps_at_a_tiny_limit_are_applied_or_withdrawn(
        tight: ServerProcess) -> None:
    async with client(tight) as http:
        url = f"/v2/models/{MODEL}/infer"
        await until_ok(http, url, v2_body([[0.0, 0.0, 0.0]], sequence_id="tight-1",
                                          sequence_start=True))
        x = RNG.normal(size=(STEPS, 3)).round(3).tolist()
        answers = await asyncio.gather(*(http.post(url, json=v2_body(
            x, sequence_id="tight-1")) for _ in range(CALLS)))
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, *NOT_DONE} and 504 in codes
        for r in answers:
            if r.status_code in NOT_DONE:
                assert_not_applied(r)
        await assert_counts_exactly(http, f"v2.{MODEL}.s.tight-1",
                                    1 + STEPS * codes.count(200))


# -- step_id on KServe v2 sequences (a normal time limit) --------------------------------------


def infer(server: ServerProcess, x: np.ndarray, **parameters: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{MODEL}/infer",
                      json=v2_body(x.tolist(), **parameters))


def outputs(r: httpx.Response) -> dict[str, np.ndarray]:
    assert r.status_code == 200, r.text
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}


def sequence_steps(server: ServerProcess, sequence_id: str) -> int:
    return int(httpx.get(f"{server.url}/v1/sessions/v2.{MODEL}.s.{sequence_id}").json()["steps"])


def test_v2_step_id_replays_a_recent_step(server: ServerProcess) -> None:
    a, b = (RNG.normal(size=(4, 3)).astype(np.float32) for _ in range(2))
    first = outputs(infer(server, a, sequence_id="ids-1", sequence_start=True, step_id="a"))
    again = outputs(infer(server, a, sequence_id="ids-1", step_id="a"))  # a lost reply's retry
    assert sequence_steps(server, "ids-1") == 4  # not applied twice
    for name in first:  # the recorded outputs, and the state after that step
        np.testing.assert_array_equal(again[name], first[name])
    second = outputs(infer(server, b, sequence_id="ids-1", step_id="b"))
    assert sequence_steps(server, "ids-1") == 8
    replayed = outputs(infer(server, b, sequence_id="ids-1", step_id="b"))
    for name in second:
        np.testing.assert_array_equal(replayed[name], second[name])
    older = outputs(infer(server, a, sequence_id="ids-1", step_id="a"))  # in the window too:
    assert sequence_steps(server, "ids-1") == 8  # replayed, not applied
    np.testing.assert_array_equal(older["output"], first["output"])  # (states: the current)


def test_v2_step_id_after_the_sequence_ended_finds_it_not_active(server: ServerProcess) -> None:
    """An end step frees the sequence, so its retry is not replayed: documented."""
    x = np.ones((2, 3), np.float32)
    outputs(infer(server, x, sequence_id="ids-2", sequence_start=True, step_id="s"))
    outputs(infer(server, x, sequence_id="ids-2", sequence_end=True, step_id="e"))
    r = infer(server, x, sequence_id="ids-2", sequence_end=True, step_id="e")
    assert r.status_code == 400 and "not active" in r.json()["error"]


@pytest.mark.parametrize(("parameters", "fragment"), [
    ({"sequence_id": "ids-3", "sequence_start": True, "step_id": 5},
     "step_id must be a string of 1 to 128 characters"),
    ({"sequence_id": "ids-3", "sequence_start": True, "step_id": ""},
     "step_id must be a string of 1 to 128 characters"),
    ({"sequence_id": "ids-3", "sequence_start": True, "step_id": "x" * 129},
     "step_id must be a string of 1 to 128 characters"),
    ({"step_id": "a"}, "step_id is set without a sequence_id"),
])
def test_v2_bad_step_ids(server: ServerProcess, parameters: dict[str, Any],
                         fragment: str) -> None:
    r = infer(server, np.ones((1, 3), np.float32), **parameters)
    assert r.status_code == 400 and fragment in r.json()["error"]
    assert httpx.get(f"{server.url}/v1/sessions/v2.{MODEL}.s.ids-3").status_code == 404


# -- 503s say whether the step was applied -----------------------------------------------------


async def test_a_full_queue_says_not_applied_and_is_true(
        tiny_repo: Path, tmp_path: Path) -> None:
    """A queue of 2 rows and 60 sessions stepped at once: the steps past the queue's room are
    answered 503 saying nothing was applied, and their sessions did not move. Whether the
    queue overflows depends on how the 60 requests arrive (once in CI, all 60 were answered
    200): a burst without a 503 is checked alike, and another burst, of new sessions, is sent,
    five at most."""
    with serving(["--models", str(tiny_repo), "--max-queue", "2"],
                 tmp_path / "server.log") as small:
        async with client(small) as http:
            codes: list[int] = []
            for _ in range(5):
                sids = [(await http.post(f"/v1/models/{MODEL}/sessions")).json()["session_id"]
                        for _ in range(60)]
                x = RNG.normal(size=(STEPS, 3)).round(3).tolist()
                answers = await asyncio.gather(*(http.post(f"/v1/sessions/{sid}/step", json={
                    "inputs": x}) for sid in sids))
                codes = [r.status_code for r in answers]
                assert set(codes) <= {200, 503}
                for sid, r in zip(sids, answers, strict=True):
                    if r.status_code == 503:
                        assert "nothing was run or applied" in r.json()["error"]
                        assert r.headers["retry-after"]
                    assert await steps_now(http, sid) == (STEPS if r.status_code == 200 else 0)
                if 503 in codes:
                    break
            assert 503 in codes, "five bursts of 60 steps never overflowed a 2-row queue"
