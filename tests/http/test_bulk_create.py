"""Sessions created in bulk over REST, against real servers: `POST /v1/models/{m}/sessions`
with `{"sessions": [...]}` answers 200 with one result per item in order; each item follows a
single create's rules (its state, its version, --max-sessions, the per-address and per-key
caps) and fails alone; the sessions made are real (they step, export their given state, count
in the metrics); over --max-sessions-per-request the whole request is refused with the limit
said; the single form answers 201 as before. The store-level part (Redis too) is
tests/state/test_bulk_create_store.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess, serving
from tests.http.test_sessions import metric_value

MAX_SESSIONS = 6


@pytest.fixture(scope="module")
def small(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that holds at most MAX_SESSIONS sessions, 4 a request."""
    with serving(["--models", str(tiny_repo), "--max-sessions", str(MAX_SESSIONS),
                  "--max-sessions-per-request", "4", "--max-sessions-per-client", "0"],
                 tmp_path_factory.mktemp("bulk") / "server.log") as proc:
        yield proc


@pytest.fixture
def fresh(small: ServerProcess) -> Iterator[str]:
    """The small server's URL, with every session deleted afterwards."""
    yield small.url
    for sid in _live(small.url):
        httpx.delete(f"{small.url}/v1/sessions/{sid}")


_made: list[str] = []


def _live(url: str) -> list[str]:
    ids = list(_made)
    _made.clear()
    return ids


def bulk(url: str, items: list[Any], model: str = "tiny-lstm", query: str = "",
         headers: dict[str, str] | None = None) -> httpx.Response:
    r = httpx.post(f"{url}/v1/models/{model}/sessions{query}", json={"sessions": items},
                   headers=headers)
    if r.status_code == 200:
        _made.extend(x["session_id"] for x in r.json()["results"] if "session_id" in x)
    return r


def a_state(url: str) -> dict[str, Any]:
    """A valid tiny-lstm state, every value 0.25 (names and shapes from an exported one)."""
    sid = httpx.post(f"{url}/v1/models/tiny-lstm/sessions").json()["session_id"]
    _made.append(sid)
    exported = httpx.get(f"{url}/v1/sessions/{sid}/state").json()["state"]
    return {name: {"shape": t["shape"], "data": [0.25] * len(t["data"])}
            for name, t in exported.items()}


def test_bulk_results_come_in_order_and_each_item_fails_alone(fresh: str) -> None:
    state = a_state(fresh)  # one session now
    bad_shape = {name: {"shape": [1, 1, 1], "data": [0.0]} for name in state}
    r = bulk(fresh, [{}, {"state": state, "version": 1}, {"version": 99}, {"state": bad_shape}])
    assert r.status_code == 200, r.text
    ok, given, unknown_version, wrong_state = r.json()["results"]
    assert ok["model"] == "tiny-lstm" and ok["version"] == 2 and ok["steps"] == 0
    assert given["version"] == 1
    assert unknown_version["status"] == 404 and "99" in unknown_version["error"]
    assert wrong_state["status"] == 400 and "sessions[3].state" in wrong_state["error"]
    exported = httpx.get(f"{fresh}/v1/sessions/{given['session_id']}/state").json()["state"]
    for name, tensor in exported.items():
        assert tensor["data"] == state[name]["data"]
    zeros = httpx.get(f"{fresh}/v1/sessions/{ok['session_id']}/state").json()["state"]
    assert all(not any(t["data"]) for t in zeros.values())
    step = httpx.post(f"{fresh}/v1/sessions/{ok['session_id']}/step",
                      json={"inputs": [[0.1, 0.2, 0.3]]})
    assert step.status_code == 200 and step.json()["steps"] == 1


def test_malformed_items_fail_alone_and_the_single_form_is_unchanged(fresh: str) -> None:
    r = bulk(fresh, [{"stat": {}}, 7, {"version": True}, {}])
    assert r.status_code == 200, r.text
    unknown_field, not_object, bool_version, ok = r.json()["results"]
    assert unknown_field["status"] == 400 and "stat" in unknown_field["error"]
    assert not_object["status"] == 400 and "sessions[1]" in not_object["error"]
    assert bool_version["status"] == 400 and "version" in bool_version["error"]
    assert "session_id" in ok
    single = httpx.post(f"{fresh}/v1/models/tiny-lstm/sessions")
    assert single.status_code == 201 and "session_id" in single.json()
    _made.append(single.json()["session_id"])


def test_over_max_sessions_only_the_items_past_it_are_refused(fresh: str) -> None:
    first = bulk(fresh, [{}] * 4)
    assert [x.get("status") for x in first.json()["results"]] == [None] * 4
    r = bulk(fresh, [{}] * 4)  # room for MAX_SESSIONS - 4 = 2
    results = r.json()["results"]
    assert [("session_id" in x) for x in results] == [True, True, False, False]
    assert results[3]["status"] == 503
    assert f"maximum of {MAX_SESSIONS} live sessions" in results[3]["error"]


def test_more_items_than_the_limit_is_413_saying_it(fresh: str) -> None:
    r = bulk(fresh, [{}] * 5)
    assert r.status_code == 413
    assert "the limit is 4" in r.json()["error"]
    assert "--max-sessions-per-request" in r.json()["error"]
    assert httpx.get(f"{fresh}/metrics").status_code == 200
    for body in ({"sessions": []}, {"sessions": {}}, {"sessions": [{}], "extra": 1}):
        r = httpx.post(f"{fresh}/v1/models/tiny-lstm/sessions", json=body)
        assert r.status_code == 400, body
    assert httpx.post(f"{fresh}/v1/models/nope/sessions",
                      json={"sessions": [{}]}).status_code == 404


def test_created_sessions_count_in_the_metrics(fresh: str) -> None:
    before = metric_value(httpx.get(f"{fresh}/metrics").text, "rnnserve_sessions_total",
                          'event="created"')
    r = bulk(fresh, [{}, {}, {"version": 99}])
    assert r.status_code == 200
    after = metric_value(httpx.get(f"{fresh}/metrics").text, "rnnserve_sessions_total",
                         'event="created"')
    assert after - before == 2


def test_the_per_key_and_per_address_caps_hold_per_item(
        start_server: Callable[..., ServerProcess], tiny_repo: Path) -> None:
    keyed = start_server("--models", str(tiny_repo), "--api-keys", "k1,k2",
                         "--max-sessions-per-key", "3")
    auth = {"Authorization": "Bearer k1"}
    results = bulk(keyed.url, [{}] * 5, headers=auth).json()["results"]
    assert ["session_id" in x for x in results] == [True] * 3 + [False] * 2
    assert results[4]["status"] == 429 and "maximum of 3" in results[4]["error"]
    other = {"Authorization": "Bearer k2"}
    sid = results[0]["session_id"]
    assert httpx.get(f"{keyed.url}/v1/sessions/{sid}", headers=other).status_code == 404
    assert httpx.get(f"{keyed.url}/v1/sessions/{sid}", headers=auth).status_code == 200
    capped = start_server("--models", str(tiny_repo), "--max-sessions-per-client", "2")
    results = bulk(capped.url, [{}] * 3).json()["results"]
    assert ["session_id" in x for x in results] == [True, True, False]
    assert results[2]["status"] == 429 and "127.0.0.1" in results[2]["error"]


def test_a_large_bulk_create_makes_distinct_working_sessions(
        start_server: Callable[..., ServerProcess], tiny_repo: Path) -> None:
    server = start_server("--models", str(tiny_repo))
    results = bulk(server.url, [{}] * 1000, model="tiny-gru").json()["results"]
    ids = [x["session_id"] for x in results]
    assert len(set(ids)) == 1000
    steps = {"steps": [{"session_id": sid, "inputs": [[0.5, 0.5, 0.5]]} for sid in ids]}
    r = httpx.post(f"{server.url}/v1/models/tiny-gru/steps", json=steps)
    outs = np.asarray([x["outputs"] for x in r.json()["results"]])
    assert outs.shape == (1000, 1, 1)
    np.testing.assert_allclose(outs, np.broadcast_to(outs[:1], outs.shape), atol=1e-6)
