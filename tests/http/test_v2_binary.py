"""The binary tensor data extension at the byte level: what tritonclient never sends but a
hand-written client might. Each malformed body is a 400 naming the problem."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

INFER = "/v2/models/tiny-gru/infer"


def binary_body(header: dict, *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}


def tensor_header(shape: list[int], size: int | None = None) -> dict:
    params = {"binary_data_size": size if size is not None else int(np.prod(shape)) * 4}
    return {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                        "parameters": params}]}


async def test_binary_in_binary_out(client: httpx.AsyncClient) -> None:
    x = np.arange(12, dtype=np.float32).reshape(1, 4, 3) / 10
    header = tensor_header([1, 4, 3])
    header["outputs"] = [{"name": "output", "parameters": {"binary_data": True}},
                         {"name": "hn"}]
    body, headers = binary_body(header, x.tobytes())
    r = await client.post(INFER, content=body, headers=headers)
    assert r.status_code == 200, r.text
    length = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:length])
    out = np.frombuffer(r.content[length:], "<f4").reshape(head["outputs"][0]["shape"])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 16
    assert "data" in head["outputs"][1] and len(head["outputs"][1]["data"]) == 16
    json_reply = await client.post(INFER, json={"inputs": [
        {"name": "input", "shape": [1, 4, 3], "datatype": "FP32", "data": x.ravel().tolist()}]})
    np.testing.assert_allclose(out.ravel(), json_reply.json()["outputs"][0]["data"], atol=1e-6)


async def test_nested_json_data_is_accepted(client: httpx.AsyncClient) -> None:
    x = [[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]]
    r = await client.post(INFER, json={"inputs": [
        {"name": "input", "shape": [1, 2, 3], "datatype": "FP32", "data": x}]})
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 2, 1]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: binary_body(tensor_header([1, 2, 3], 20), b"\0" * 20), "binary_data_size 20"),
        (lambda: binary_body(tensor_header([1, 2, 3]), b"\0" * 10), "24 are needed"),
        (lambda: binary_body(tensor_header([1, 2, 3]), b"\0" * 30), "belong to no input"),
        (lambda: (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}),
         "Inference-Header-Content-Length"),
        (lambda: (b"{}", {}), '"inputs" must be a non-empty list'),
        (lambda: (json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 3],
                                          "datatype": "FP32", "data": [1, 2]}]}).encode(), {}),
         "has 2 values; shape [1, 1, 3] needs 3"),
        (lambda: (json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 3],
                                          "datatype": "FP32"}]}).encode(), {}), "has no data"),
        (lambda: (json.dumps({"inputs": [{"name": "input", "shape": [1, -1, 3],
                                          "datatype": "FP32", "data": [1]}]}).encode(), {}),
         "non-negative integers"),
        (lambda: (json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 3],
                                          "datatype": "WAT", "data": [1, 2, 3]}]}).encode(), {}),
         "unknown datatype"),
        (lambda: (json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 3],
                                          "datatype": "FP32", "data": ["a", "b", "c"]}]}).encode(),
                  {}), "numbers only"),
        (lambda: (json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                                          "data": [1, 2, 3]}] * 2}).encode(), {}), "twice"),
        (lambda: (json.dumps({"id": 5, "inputs": []}).encode(), {}), '"id" must be a string'),
        (lambda: (b"[1, 2]", {}), "JSON object"),
        (lambda: (b"{bad json", {}), "malformed JSON"),
    ],
)
async def test_malformed_infer_bodies(client: httpx.AsyncClient, make, fragment: str) -> None:  # type: ignore[no-untyped-def]
    body, headers = make()
    r = await client.post(INFER, content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]
    ok = await client.post(INFER, json={"inputs": [
        {"name": "input", "shape": [1, 1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    assert ok.status_code == 200


async def test_unsupported_content_encoding(client: httpx.AsyncClient) -> None:
    r = await client.post(INFER, content=b"xx", headers={"Content-Encoding": "br"})
    assert r.status_code == 415
    r = await client.post(INFER, content=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "gzip" in r.json()["error"]


async def test_gzip_bomb_is_refused(make_client) -> None:  # type: ignore[no-untyped-def]
    import gzip

    bomb = gzip.compress(b" " * 2_000_000)
    async with await make_client(max_body_bytes=100_000) as client:
        r = await client.post(INFER, content=bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413


async def test_not_ready_model_and_server_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).status_code == 200
    assert (await client.get("/v2/models/broken/ready")).status_code == 404
