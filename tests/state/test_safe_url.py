"""What a message or log line shows of a state store's URL: never its credentials, whatever
the form (a password with URL escapes, a user name, IPv6, a sentinel list of hosts)."""

from __future__ import annotations

import pytest
from rnnserve.redact import safe_url


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@redis:6379/0", "redis://redis:6379/0"),
    ("redis://default:s3cret@10.0.0.5:6379/2", "redis://10.0.0.5:6379/2"),
    ("rediss://:s3cret%40x@[::1]:6380/0?ssl_cert_reqs=none", "rediss://[::1]:6380/0"),
    ("redis+sentinel://:s3cret@s1:26379,s2:26379,s3:26379/mymaster/0",
     "redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/0"),
    ("redis+sentinel://s1:26379,s2:26379/mymaster", "redis+sentinel://s1:26379,s2:26379/mymaster"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ("memory", "memory"),
])
def test_safe_url_never_shows_credentials(url: str, shown: str) -> None:
    assert safe_url(url) == shown
    assert "s3cret" not in safe_url(url)
