"""The bulk form of `POST /v1/models/{model}/sessions`: a body `{"sessions": [{"state"?,
"version"?}, ...]}` opens one session per item and answers 200 `{"results": [...]}` in the
same order, each item a session as a single create describes it, or that item's error
(`{"error", "status", "retry_after_s"?}`): an item fails alone, as its single create would
have failed. At most --max-sessions-per-request items (413 above, saying the limit)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from rnnserve.engine import NewSession, SessionRecord
from rnnserve.errors import InvalidInput, PayloadTooLarge, RnnServeError
from rnnserve.http.body import decode_state, only_fields
from rnnserve.http.common import client_of, engine_of, iso, owner_of, session_body
from rnnserve.http.errors import error_fields
from rnnserve.http.responses import FastJSONResponse

ITEM_FIELDS = frozenset({"state", "version"})


def is_bulk(body: dict[str, Any]) -> bool:
    return "sessions" in body


def check_version(version: Any, what: str) -> None:
    """A single create's rule for "version": a number or its digits, never a bool."""
    if version is not None and (isinstance(version, bool) or not isinstance(version, int | str)):
        raise InvalidInput(f'{what} must be a version number like 1 or "1", not '
                           f"{orjson.dumps(version).decode()[:40]}")


def parse_items(items: list[Any], default_version: str | int | None
                ) -> list[NewSession | RnnServeError]:
    """Each item as a NewSession, or the InvalidInput a single create's body would get. The
    common case (every item {}, zeros on the default version) takes no per-item checks."""
    if all(type(item) is dict and not item for item in items):
        return [NewSession(default_version)] * len(items)
    parsed: list[NewSession | RnnServeError] = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise InvalidInput(f'sessions[{i}] must be an object {{"state"?, "version"?}}')
            only_fields(item, ITEM_FIELDS, f"sessions[{i}]")
            version = item.get("version", default_version)
            check_version(version, f"sessions[{i}].version")
            parsed.append(NewSession(version, decode_state(item.get("state"),
                                                           f"sessions[{i}].state")))
        except RnnServeError as exc:
            parsed.append(exc)
    return parsed


class _Times:
    """ISO 8601 of the few distinct instants of one bulk answer (its sessions share their
    creation time), each formatted once (common.iso)."""

    def __init__(self) -> None:
        self._seen: dict[float, str] = {}

    def __call__(self, timestamp: float) -> str:
        text = self._seen.get(timestamp)
        if text is None:
            text = self._seen[timestamp] = iso(timestamp)
        return text


def result_item(outcome: SessionRecord | RnnServeError, times: _Times) -> dict[str, Any]:
    if isinstance(outcome, RnnServeError):
        return error_fields(outcome)
    return session_body(outcome, times)


async def create_many(request: Request, model: str, body: dict[str, Any],
                      version: str | int | None) -> FastJSONResponse:
    """The bulk create route's work, once the body is read (sessions.create_session)."""
    engine = engine_of(request)
    only_fields(body, {"sessions"}, "a bulk create")
    items = body["sessions"]
    if not isinstance(items, list) or not items:
        raise InvalidInput('"sessions" must be a non-empty list of {"state"?, "version"?} '
                           "(an empty object {} opens a session of zeros)")
    limit = engine.settings.max_sessions_per_request
    if len(items) > limit:
        raise PayloadTooLarge(f"{len(items)} sessions in one bulk create; the limit is {limit} "
                              "(--max-sessions-per-request): split the request")
    check_version(version, '"version"')
    outcomes = await engine.sessions.create_many(
        model, parse_items(items, version), owner=owner_of(request), client=client_of(request))
    times = _Times()
    return FastJSONResponse({"results": [result_item(o, times) for o in outcomes]})
