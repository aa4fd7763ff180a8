"""Native REST inputs treated alike everywhere: a gateway item is held to a single step's rules
(a step_id of 1 to 128 characters, no unknown field) and fails alone when it breaks one; a
model version is a number, never a JSON boolean, and a string of other digits names none; a
gzip or deflate body is read on every native route, as on the KServe v2 routes, within the
body size limit."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
RNG = np.random.default_rng(71)
STEP_ID_RULE = "step_id must be a string of 1 to 128 characters"


async def create(client: httpx.AsyncClient, model: str = "tiny-gru") -> str:
    r = await client.post(f"/v1/models/{model}/sessions")
    assert r.status_code == 201, r.text
    return str(r.json()["session_id"])


async def steps_of(client: httpx.AsyncClient, session_id: str) -> int:
    r = await client.get(f"/v1/sessions/{session_id}")
    assert r.status_code == 200, r.text
    return int(r.json()["steps"])


# -- the gateway holds each item to a single step's rules ----------------------------------------

BAD_ITEMS: list[tuple[dict[str, Any], str]] = [
    ({"step_id": ""}, STEP_ID_RULE),
    ({"step_id": 0}, STEP_ID_RULE),
    ({"step_id": False}, STEP_ID_RULE),
    ({"step_id": []}, STEP_ID_RULE),
    ({"step_id": "x" * 129}, STEP_ID_RULE),
    ({"step_id": 7}, STEP_ID_RULE),
    ({"wat": 1}, "unknown field(s) ['wat']"),
    ({"step_id": "ok-1", "stepid": "typo"}, "unknown field(s) ['stepid']"),
]


@pytest.mark.parametrize("ragged", [False, True], ids=["one-array", "item-by-item"])
async def test_a_gateway_item_a_single_step_would_refuse_fails_alone(
    client: httpx.AsyncClient, ragged: bool,
) -> None:
    """Every item a single step would refuse gets that step's 400, alone, and its session is
    unchanged; the other items are applied. With items of one shape the gateway converts
    them as one array; with ragged ones, item by item: the same answers either way."""
    n = len(BAD_ITEMS) + 3
    sids = [await create(client) for _ in range(n)]
    x = RNG.normal(size=(n, 2, 3)).astype(np.float32)
    items: list[dict[str, Any]] = [{"session_id": s, "inputs": x[i].tolist()}
                                   for i, s in enumerate(sids)]
    if ragged:
        items[-1]["inputs"] = x[-1, :1].tolist()
    items[-2]["step_id"] = "good-1"  # a valid step id among them still works
    for i, (extra, _) in enumerate(BAD_ITEMS):
        items[i].update(extra)
    r = await client.post("/v1/models/tiny-gru/steps", json={"steps": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [res["session_id"] for res in results] == sids
    for i, (extra, fragment) in enumerate(BAD_ITEMS):
        assert results[i]["status"] == 400 and fragment in results[i]["error"], extra
        assert "outputs" not in results[i]
        assert await steps_of(client, sids[i]) == 0, extra
        single = await client.post(f"/v1/sessions/{sids[i]}/step",
                                   json={k: v for k, v in items[i].items() if k != "session_id"})
        assert single.status_code == 400 and fragment in single.json()["error"], extra
    for i in range(len(BAD_ITEMS), n):
        assert results[i]["steps"] == len(items[i]["inputs"]), results[i]
    again = await client.post("/v1/models/tiny-gru/steps", json={"steps": [items[-2]]})
    assert again.json()["results"][0] == results[-2]  # replayed, not applied twice


async def test_a_gateway_items_unknown_field_is_named_with_the_item(
    client: httpx.AsyncClient,
) -> None:
    sid = await create(client)
    r = await client.post("/v1/models/tiny-gru/steps", json={"steps": [
        {"session_id": sid, "inputs": [[0.1, 0.2, 0.3]], "input": [[1, 2, 3]]}]})
    (result,) = r.json()["results"]
    assert result == {"session_id": sid, "status": 400, "error": (
        "unknown field(s) ['input']; steps[0] takes ['inputs', 'session_id', 'step_id']")}
    assert await steps_of(client, sid) == 0


# -- a model version is a number ----------------------------------------------------------------


@pytest.mark.parametrize("version", [True, False, 1.0, [1], {"v": 1}])
async def test_a_session_version_that_is_not_a_number_is_refused(
    client: httpx.AsyncClient, version: object,
) -> None:
    r = await client.post("/v1/models/tiny-lstm/sessions", json={"version": version})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith('"version" must be a version number like 1 or "1"')


async def test_a_session_version_given_as_a_number_or_its_digits(
    client: httpx.AsyncClient,
) -> None:
    for version in (1, "1", 2, "2"):
        r = await client.post("/v1/models/tiny-lstm/sessions", json={"version": version})
        assert r.status_code == 201 and r.json()["version"] == int(version), r.text


# ², an Arabic-Indic 1, a full-width 1: str.isdigit takes them for digits
@pytest.mark.parametrize("version", ["\u00b2", "\u0661", "\uff11"])
async def test_a_version_of_other_digits_names_no_version(
    client: httpx.AsyncClient, version: str,
) -> None:
    for method, route, body in (
        ("POST", "/v1/models/tiny-lstm/sessions", None),
        ("POST", "/v1/models/tiny-lstm/predict", {"inputs": [[[1, 2, 3]]]}),
        ("GET", "/v1/models/tiny-lstm", None),
    ):
        r = await client.request(method, route, params={"version": version}, json=body)
        assert r.status_code == 404, (route, r.text)
        assert f"model 'tiny-lstm' has no version {version!r}" in r.json()["error"]
    r = await client.post("/v1/models/tiny-lstm/sessions", json={"version": version})
    assert r.status_code == 404 and "has no version" in r.json()["error"]


# -- compressed bodies ---------------------------------------------------------------------------

CODINGS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "deflate": zlib.compress,
                                                "GZip": gzip.compress}


async def post_coded(client: httpx.AsyncClient, route: str, body: object, coding: str
                     ) -> httpx.Response:
    return await client.post(route, content=CODINGS[coding](orjson.dumps(body)),
                             headers={"content-type": "application/json",
                                      "content-encoding": coding})


@pytest.mark.parametrize("coding", list(CODINGS))
async def test_every_native_route_reads_a_compressed_body(
    client: httpx.AsyncClient, coding: str,
) -> None:
    seq = RNG.normal(size=(4, 3)).astype(np.float32)
    plain = await client.post("/v1/models/tiny-lstm/predict", json={"inputs": [seq.tolist()]})
    r = await post_coded(client, "/v1/models/tiny-lstm/predict", {"inputs": [seq.tolist()]},
                         coding)
    assert r.status_code == 200 and r.json() == plain.json(), r.text

    r = await post_coded(client, "/v1/models/tiny-lstm/sessions", {"version": 2}, coding)
    assert r.status_code == 201 and r.json()["version"] == 2, r.text
    sid = r.json()["session_id"]
    r = await post_coded(client, f"/v1/sessions/{sid}/step", {"inputs": seq[:2].tolist(),
                                                              "step_id": "z-1"}, coding)
    assert r.status_code == 200 and r.json()["steps"] == 2, r.text
    r = await post_coded(client, "/v1/models/tiny-lstm/steps",
                         {"steps": [{"session_id": sid, "inputs": seq[2:].tolist()}]}, coding)
    assert r.status_code == 200 and r.json()["results"][0]["steps"] == 4, r.text
    state = (await client.get(f"/v1/sessions/{sid}/state")).json()["state"]
    r = await post_coded(client, f"/v1/sessions/{sid}/reset", {"state": state}, coding)
    assert r.status_code == 200 and r.json()["steps"] == 0, r.text
    r = await post_coded(client, f"/v1/sessions/{sid}/reset", {}, coding)
    assert r.status_code == 200, r.text


async def test_bad_compressed_bodies_get_clear_errors(make_client: MakeClient) -> None:
    async with await make_client(max_body_bytes=4096) as client:
        route = "/v1/models/tiny-gru/predict"
        body = orjson.dumps({"inputs": [[[1, 2, 3]]]})
        cases = [
            ("br", body, 415, "Content-Encoding 'br' is not supported; use gzip, deflate"),
            ("gzip", body, 400, "not valid gzip data"),
            ("deflate", gzip.compress(body), 400, "not valid deflate data"),
            ("gzip", gzip.compress(body)[:-12], 400, "ends before the compressed stream"),
            ("gzip", gzip.compress(body[:-1] + b', "pad": "' + b" " * 8000 + b'"}'), 413,
             "decompressed body exceeds the limit of 4096 bytes"),
        ]
        for coding, content, status, fragment in cases:
            r = await client.post(route, content=content, headers={
                "content-type": "application/json", "content-encoding": coding})
            assert r.status_code == status and fragment in r.json()["error"], (coding, r.text)
        r = await client.post(route, content=gzip.compress(body), headers={
            "content-type": "application/json", "content-encoding": "gzip"})
        assert r.status_code == 200, r.text


# -- a session id longer than any the server makes is unknown, and not echoed back ----------------

LONG_ID = "q" * 20_000  # (httpx refuses URLs past 64 KiB)


@pytest.mark.parametrize("call", ["describe", "step", "state", "delete", "reset"])
async def test_a_very_long_session_id_is_unknown_and_not_echoed(
    client: httpx.AsyncClient, call: str,
) -> None:
    url = f"/v1/sessions/{LONG_ID}"
    request = {"describe": ("GET", url), "step": ("POST", url + "/step"),
               "state": ("GET", url + "/state"), "delete": ("DELETE", url),
               "reset": ("POST", url + "/reset")}[call]
    body = {"inputs": [[0.1, 0.2, 0.3]]} if call == "step" else None
    r = await client.request(*request, json=body)
    assert r.status_code == 404
    assert "20000 characters" in r.json()["error"] and len(r.content) < 500


async def test_a_gateway_item_with_a_very_long_session_id_fails_alone(
    client: httpx.AsyncClient,
) -> None:
    sid = await create(client)
    items = [{"session_id": sid, "inputs": [[0.1, 0.2, 0.3]]},
             {"session_id": LONG_ID, "inputs": [[0.1, 0.2, 0.3]]}]
    r = await client.post("/v1/models/tiny-gru/steps", json={"steps": items})
    assert r.status_code == 200
    ok, bad = r.json()["results"]
    assert ok["steps"] == 1 and bad["status"] == 404 and "20000 characters" in bad["error"]
    assert LONG_ID not in bad["error"]
