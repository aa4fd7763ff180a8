"""The suite in two processes, as scripts/test.sh runs it (tests/parallel.py): every test runs,
a file's tests run on one worker, and the container tests' files share one worker and go
first.

A real pytest-xdist run of a small suite made here, with the project's plugin, shows the
scheduling; a collection of the project's own suite shows that no two items share a node id
(xdist keeps one item per id and drops the rest without a word). With two workers starting
servers at once, a port picked free is taken before the server binds it more often: a server
started by the tests starts again on new ports then."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

import tests.conftest
from tests.conftest import COMMITTED_MODELS, ROOT, ServerProcess, free_port

RECORDING_TEST = '''
import os
from pathlib import Path

import pytest


@pytest.mark.parametrize("n", range({count}))
def test_records_its_worker(n, request):
    with open(os.environ["RAN_LOG"], "a") as log:
        log.write(f"{{request.node.nodeid}} {{os.environ['PYTEST_XDIST_WORKER']}}\\n")
'''

# three operations, which pytest 9.2 collects as three items of one node id
SCHEMATHESIS_TEST = '''
import os

import schemathesis
from hypothesis import settings

OPERATION = {"responses": {"200": {"description": "ok"}}}
schema = schemathesis.openapi.from_dict({
    "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
    "paths": {"/a": {"get": OPERATION}, "/b": {"get": OPERATION}, "/c": {"get": OPERATION}},
})


@schema.parametrize()
@settings(max_examples=1)
def test_operation(case):  # called once per example: the log has repeats
    with open(os.environ["RAN_LOG"], "a") as log:
        log.write(f"tests/test_fuzzing.py::{case.path} {os.environ['PYTEST_XDIST_WORKER']}\\n")
'''


def make_suite(root: Path) -> None:
    files = {
        "tests/test_alpha.py": RECORDING_TEST.format(count=6),
        "tests/test_beta.py": RECORDING_TEST.format(count=6),
        "tests/containers/test_image_one.py": RECORDING_TEST.format(count=1),
        "tests/containers/test_image_two.py": RECORDING_TEST.format(count=1),
        "tests/test_fuzzing.py": SCHEMATHESIS_TEST,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "conftest.py").write_text('pytest_plugins = ["tests.parallel"]\n')


def test_two_workers_run_every_test_and_keep_files_whole(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    make_suite(suite)
    log = tmp_path / "ran.log"
    env = {**os.environ, "RAN_LOG": str(log), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadfile", "-q",
         "-p", "no:cacheprovider", "--rootdir", str(suite), str(suite / "tests")],
        cwd=suite, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\b17 passed\b", result.stdout), result.stdout[-2000:]
    lines = [tuple(line.split(" ", 1)) for line in log.read_text().splitlines()]
    ran = set(lines)
    assert len(ran) == len({test for test, _ in ran}) == 17, sorted(ran)
    fuzzed = sorted(test for test, _ in ran if "test_fuzzing" in test)
    assert fuzzed == [f"tests/test_fuzzing.py::/{p}" for p in "abc"], fuzzed
    workers: dict[str, set[str]] = defaultdict(set)
    for nodeid, worker in ran:
        path = nodeid.split("::")[0]
        workers["containers" if "/containers/" in path else path].add(worker)
    assert all(len(used) == 1 for used in workers.values()), dict(workers)
    assert set().union(*workers.values()) == {"gw0", "gw1"}, dict(workers)  # both worked
    # the container tests went first: the first test their worker ran was one of them
    (container_worker,) = workers["containers"]
    first = next(test for test, worker in lines if worker == container_worker)
    assert "/containers/" in first, lines


def test_no_two_tests_of_the_suite_share_a_node_id() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    collected = re.search(r"(\d+) tests? collected", result.stdout)
    assert collected and int(collected.group(1)) == len(ids), result.stdout[-500:]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    assert not repeated, repeated
    assert sum("tests/http/test_fuzz.py::test_no_server_errors[" in i for i in ids) >= 20


def test_a_server_whose_grpc_port_was_taken_starts_again_on_new_ports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:  # what another worker's process holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = taken.getsockname()[1]
        picks = iter([held])  # the first port picked (the gRPC one) is the held one
        real = tests.conftest.free_port
        monkeypatch.setattr(tests.conftest, "free_port", lambda: next(picks, 0) or real())
        server = ServerProcess(["--models", str(COMMITTED_MODELS)], tmp_path / "server.log",
                               grpc=True)
        try:
            server.wait_ready()
            assert "address already in use" in server.log().lower()
            assert server.port_retries == 1 and server.grpc_port not in (0, held)
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                assert client.is_server_live()
        finally:
            server.stop()


def test_free_ports_are_drawn_below_the_range_outgoing_connections_use() -> None:
    lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(20)]
    assert all(10000 <= port < lowest_ephemeral for port in ports), ports
    assert len(set(ports)) > 10, ports  # drawn at random, not one port again and again
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # and free
