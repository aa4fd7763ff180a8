"""How the suite runs in two processes (pytest-xdist; scripts/test.sh passes `-n 2 --dist
loadfile`). Most tests wait on servers they started, so two workers on two cores take about
60 % of one's time (693–737 s against 1,187 s for the suite on this kind of machine).

- Whole files to a worker, as `--dist loadfile` means: a file's module-scoped servers start
  once, not once per worker. The container tests' files go together, since they share the image
  that one session-scoped fixture builds (two workers would each build it, under one tag), and
  go first, with the files that build virtual environments (FIRST).
  xdist's own `--dist loadgroup` cannot say this under pytest 9.2: it marks an item's group in
  its node id through an attribute pytest no longer reads, and so spreads every file's items.
- Every item gets a node id of its own. xdist's scheduler keeps a file's items by node id, and
  pytest 9.2 gives schemathesis's 30 items of tests/http/test_fuzz.py (one per API operation)
  their function's id, so xdist ran one of them and said nothing. A repeated id becomes the
  file's id and the item's name, which names the operation. tests/ops/test_parallel.py checks
  that the ids stay distinct, so a change in pytest's internals fails loudly."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from _pytest.nodeid import NodeId
from xdist.scheduler import LoadScopeScheduling

TOGETHER = ("tests/containers/",)
"""Folders whose files run on one worker, one after another."""

FIRST = ("tests/containers/", "tests/ops/test_dependencies.py",
         "tests/client/test_client_install.py")
"""Units that take longest (images, Compose, new virtual environments: minutes), handed out
before the rest, so that none is left running alone at the end. xdist hands out units by their
count of tests, most first, so the container tests (twelve tests, about four minutes) would
start among the last."""


class WholeFiles(LoadScopeScheduling):
    """`--dist loadfile`, with each folder of TOGETHER as one unit."""

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return next((folder for folder in TOGETHER if path.startswith(folder)), path)

    def _assign_work_unit(self, node: Any) -> None:
        for scope in reversed(FIRST):
            if scope in self.workqueue:
                self.workqueue.move_to_end(scope, last=False)
        super()._assign_work_unit(node)


@pytest.hookimpl(tryfirst=True)  # ahead of xdist's own choice of scheduler
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> WholeFiles | None:
    return WholeFiles(config, log) if config.getvalue("dist") == "loadfile" else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    counts = Counter(item.nodeid for item in items)
    for item in items:
        if counts[item.nodeid] > 1 and item.parent is not None:
            item._id = NodeId.parse(f"{item.parent.nodeid}::{item.name}")
