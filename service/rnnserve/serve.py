"""`rnnserve serve`: settings from flags and RNNSERVE_* variables, then uvicorn.

The flags are the contract of README.md ("Command line and settings") plus the limits and
thread settings of Settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Literal, get_args, get_origin

import uvicorn
from pydantic import ValidationError

from rnnserve.address_file import AddressFile, addresses, bound_address
from rnnserve.engine import DeviceUnavailable, Engine
from rnnserve.http.app import create_app
from rnnserve.http.connections import ConnectionGuard
from rnnserve.http.direct_path import DirectPath
from rnnserve.http.http_protocols import server_protocols
from rnnserve.logs import configure_logging
from rnnserve.runtime import tune_for_serving
from rnnserve.settings import Settings


class DrainingServer(uvicorn.Server):
    """uvicorn, but on SIGTERM/SIGINT readiness goes false first: /v2/health/ready answers
    503 for `delay_s` while requests are still served, so load balancers stop routing here
    before the listeners close; then uvicorn finishes the in-flight requests as usual.
    `on_listening` hears the bound sockets once the listener is up (the address file)."""

    def __init__(self, config: uvicorn.Config, engine: Engine, delay_s: float,
                 on_listening: Callable[[Sequence[socket.socket]], None] | None = None) -> None:
        super().__init__(config)
        self.engine = engine
        self.delay_s = delay_s
        self.on_listening = on_listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # a port that cannot be bound exits here
        if self.started and self.on_listening is not None:
            self.on_listening([s for server in self.servers for s in server.sockets])

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.engine.draining or self.delay_s <= 0:
            self.engine.draining = True
            super().handle_exit(sig, frame)
            return
        self.engine.draining = True
        logging.getLogger("rnnserve").info("draining: not ready, closing in %.1f s",
                                           self.delay_s)
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(loop.call_later, self.delay_s, super().handle_exit, sig, frame)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnserve serve",
        description="Serve every model in a model repository over HTTP (REST, KServe v2, "
        "WebSocket) and gRPC (KServe v2). "
        "Each flag can also be set as RNNSERVE_<NAME> (e.g. RNNSERVE_PORT=9000).",
    )
    fields = Settings.model_fields
    for name, field in fields.items():
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": name, "default": None,
                                  "help": f"{field.description or ''} (default: {field.default})"}
        if field.annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(field.annotation) is Literal:
            kwargs["choices"] = list(get_args(field.annotation))
        elif get_origin(field.annotation) is list:  # a repeatable flag
            kwargs["action"] = "append"
        aliases = ["--api-key"] if name == "api_keys" else []  # one key reads naturally
        p.add_argument(flag, *aliases, **kwargs)
    return p


def load_settings(argv: list[str]) -> Settings:
    """Flags override environment variables, which override defaults."""
    args = _parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None}
    return Settings(**given)


def serve_main(argv: list[str]) -> int:
    try:
        settings = load_settings(argv)
    except ValidationError as exc:
        for err in exc.errors():
            if err["type"] == "value_error":  # a validator's own message names its flag
                print(f"rnnserve serve: {err['ctx']['error']}", file=sys.stderr)
                continue
            where = ".".join(str(p) for p in err["loc"])
            print(f"rnnserve serve: --{where.replace('_', '-')}: {err['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        settings.key_set()
    except (OSError, UnicodeDecodeError) as exc:
        what = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc  # no key bytes
        print(f"rnnserve serve: --api-keys-file: {what}", file=sys.stderr)
        return 2
    # SIGHUP re-reads the keys file once serving (_reload_keys_on_sighup); until then it must
    # not kill the process (its default), and the file is read at start anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if not settings.models.is_dir():
        print(f"rnnserve serve: --models {settings.models} is not a directory", file=sys.stderr)
        return 2
    try:
        engine = Engine(settings)
    except RuntimeError as exc:  # --otel-endpoint without the otel extra
        print(f"rnnserve serve: {exc}", file=sys.stderr)
        return 2
    try:
        engine.start()
    except DeviceUnavailable as exc:
        print(f"rnnserve serve: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_serve(engine, settings))
    finally:
        engine.close()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it): a cheaper event loop per message."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _reload_keys_on_sighup(engine: Engine) -> None:
    """SIGHUP re-reads --api-keys-file now (it is also polled: keyfile.py). Without a keys
    file there is nothing to re-read, and SIGHUP must still not kill the server."""
    log = logging.getLogger("rnnserve.keys")

    def on_sighup() -> None:
        if engine.key_file is None:
            log.info("SIGHUP: no --api-keys-file to re-read")
            return
        engine.key_file.reload("SIGHUP")

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)


async def _serve(engine: Engine, settings: Settings) -> int:
    """HTTP (uvicorn) and gRPC in one event loop over one engine. On SIGTERM/SIGINT uvicorn
    stops accepting and finishes in-flight requests; then gRPC drains, then the engine."""
    log = logging.getLogger("rnnserve")
    try:
        await engine.open()
    except Exception as exc:  # the state store is unreachable or misconfigured
        print(f"rnnserve serve: cannot open the state store: {exc}", file=sys.stderr)
        return 2
    grpc_server = None
    if settings.grpc_port:
        from rnnserve.grpc.server import start_grpc_server

        try:
            grpc_server = await start_grpc_server(engine, settings)
        except RuntimeError as exc:  # e.g. the port is taken
            print(f"rnnserve serve: gRPC: {exc}", file=sys.stderr)
            await engine.aclose()
            return 2
    app = create_app(engine, manage_engine=False)
    # uvicorn's protocols plus a request-head time limit and a per-client connection cap
    guard = ConnectionGuard(settings.header_timeout_s, settings.max_connections_per_client,
                            engine.proxies,
                            engine.metrics.connections_refused)
    # the hot routes answered from the protocol (http/direct_path.py)
    http_protocol, ws_protocol = server_protocols(guard, direct=DirectPath(app))
    _reload_keys_on_sighup(engine)
    config = uvicorn.Config(app, http=http_protocol, log_config=None,  # ours (logs.py): one
                            host=settings.host, port=settings.port,  # format, keys redacted
                            log_level=settings.log_level, access_log=False,  # ours: RequestContext
                            timeout_graceful_shutdown=10, ws_max_size=settings.max_body_bytes,
                            ws_max_queue=settings.ws_max_queue, lifespan="on",
                            ws_per_message_deflate=settings.ws_compression,
                            ws=ws_protocol,
                            # X-Forwarded-For only from the proxies named (uvicorn would trust
                            # 127.0.0.1 by default: any local client could claim any address)
                            proxy_headers=bool(settings.forwarded_allow_ips.strip()),
                            forwarded_allow_ips=settings.forwarded_allow_ips.strip() or None)
    # uvicorn re-raises the signal that stopped it once it has finished; with the default
    # handler that would kill the process before gRPC and the engine drain below.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    tune_for_serving(settings.gil_switch_interval_ms / 1000)
    address_file = AddressFile(settings.address_file) if settings.address_file else None

    def listening(sockets: Sequence[socket.socket]) -> None:
        """Both listeners are bound now (gRPC first, on the port asked for: 0 turns it off)."""
        bound = bound_address(sockets)
        if address_file is not None and bound is not None:
            address_file.write(addresses(bound, settings.grpc_port))

    try:
        await DrainingServer(config, engine, settings.shutdown_delay_s, listening).serve()
    finally:
        if address_file is not None:  # the HTTP listener is closed: the address is no more
            address_file.remove()
        if grpc_server is not None:
            log.info("stopping gRPC: in-flight calls finish (up to 10 s)")
            await grpc_server.stop(grace=10)
        await engine.aclose()
    return 0
