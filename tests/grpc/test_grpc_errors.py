"""gRPC statuses carry the KServe v2 advice for an error's remedy, never the REST one."""

from __future__ import annotations

import grpc
from rnnserve.errors import InvalidInput, SequenceNotActive, SessionQuotaExceeded, UnknownSession
from rnnserve.grpc.errors import status_of


def test_status_of_adds_the_v2_advice() -> None:
    code, message = status_of(SequenceNotActive("sequence 'a' of model 'm' is not active"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == ("sequence 'a' of model 'm' is not active; the first request of a "
                       "sequence must set sequence_start=true")
    code, message = status_of(SessionQuotaExceeded("this API key holds its maximum of 2 live "
                                                   "sessions"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert message.endswith("; end some sequences (sequence_end=true)")
    assert "/v1/" not in status_of(UnknownSession("unknown session 'x'"))[1]
    assert status_of(InvalidInput("plain"))[1] == "plain"  # no remedy, no advice
