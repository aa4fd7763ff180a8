"""`--state-store redis+sentinel://...`: what the URL names, and a clear refusal of a bad one
(rnnserve serve exits 2 saying what is wrong and the expected form), never showing its
password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rnnserve.redact import safe_url
from rnnserve.state.redis_url import (
    FORM,
    BadSentinelUrl,
    SentinelTarget,
    parse_sentinel_url,
)

from tests.conftest import ROOT

SECRET = "s3cret-pw"


def test_the_url_names_sentinels_master_db_and_credentials() -> None:
    target = parse_sentinel_url(
        f"redis+sentinel://:{SECRET}@10.0.0.1:26379,[::1]:26380,redis-s3/mymaster/2")
    assert target == SentinelTarget(
        sentinels=(("10.0.0.1", 26379), ("::1", 26380), ("redis-s3", 26379)),
        master_name="mymaster", db=2, password=SECRET)
    assert SECRET not in repr(target)
    assert target.safe() == "redis+sentinel://10.0.0.1:26379,[::1]:26380,redis-s3:26379/mymaster/2"
    plain = parse_sentinel_url("redis+sentinel://s1:5000/m")
    assert (plain.db, plain.password, plain.username) == (0, None, None)
    user = parse_sentinel_url("redis+sentinel://app:p%40ss@s1:5000/m/")
    assert (user.username, user.password, user.db) == ("app", "p@ss", 0)


@pytest.mark.parametrize(("url", "why"), [
    ("redis+sentinel://:PW@s1:26379", "master's name is missing"),
    ("redis+sentinel://:PW@s1:26379/", "master's name is missing"),
    ("redis+sentinel://:PW@s1:0/m", "valid port"),
    ("redis+sentinel://:PW@s1:port/m", "valid port"),
    ("redis+sentinel://:PW@s1,,s2/m", "has no host"),
    ("redis+sentinel://:PW@s1/m/zero", "must be a number"),
    ("redis+sentinel://:PW@s1/m/0/extra", "must be a number"),
    ("redis+sentinel://:PW@s1/my master", "only letters"),
    ("redis+sentinel://PW@s1/m", "':PASSWORD'"),
    ("redis+sentinel://:PW@s1/m?db=1", "'?'"),
    ("redis+sentinel://:PW@[::1/m", "[IPV6]:PORT"),
])
def test_a_bad_url_says_what_is_wrong_without_the_password(url: str, why: str) -> None:
    with pytest.raises(BadSentinelUrl) as raised:
        parse_sentinel_url(url)
    message = str(raised.value)
    assert why in message and FORM in message
    assert "PW" not in message


def test_tls_to_sentinel_is_refused_clearly() -> None:
    with pytest.raises(BadSentinelUrl, match="not supported"):
        parse_sentinel_url(f"rediss+sentinel://:{SECRET}@s1/m")


def test_safe_url_drops_the_password_of_a_sentinel_url() -> None:
    url = f"redis+sentinel://:{SECRET}@127.0.0.1:1,127.0.0.1:2/m/0"
    assert safe_url(url) == "redis+sentinel://127.0.0.1:1,127.0.0.1:2/m/0"


def test_serve_exits_2_on_a_bad_sentinel_url(tiny_repo: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rnnserve", "serve", "--models", str(tiny_repo),
         "--state-store", f"redis+sentinel://:{SECRET}@127.0.0.1:26379"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert "master's name is missing" in result.stderr and FORM in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_serve_names_the_sentinels_it_cannot_reach_without_the_password(
        tiny_repo: Path) -> None:
    """A good URL whose sentinels are not there: the server refuses to start and says where
    it looked (the store's start-up PING), never the password."""
    from tests.conftest import free_port

    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "rnnserve", "serve", "--models", str(tiny_repo), "--port", "0",
         "--state-store", f"redis+sentinel://:{SECRET}@127.0.0.1:{port}/m/0"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode != 0
    assert f"redis+sentinel://127.0.0.1:{port}/m/0" in result.stderr
    assert SECRET not in result.stderr + result.stdout
