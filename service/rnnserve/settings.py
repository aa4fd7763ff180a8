"""Typed server settings. Every field can be set on the command line (`rnnserve serve --help`)
or by an environment variable `RNNSERVE_<FIELD>` (e.g. RNNSERVE_PORT=9000); the command line
wins. Defaults are chosen for a 2-core machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rnnserve.keyfile import flag_keys, parse_keys
from rnnserve.state.redis_url import FORM as SENTINEL_FORM
from rnnserve.state.redis_url import is_sentinel_url, parse_sentinel_url, without_credentials


class Settings(BaseSettings):
    """Everything the server can be told; passed explicitly into the parts that use it."""

    model_config = SettingsConfigDict(env_prefix="RNNSERVE_", extra="ignore")

    models: Path = Field(Path("models"), description="Model repository directory.")
    model_control: Literal["none", "poll", "explicit"] = Field(
        "none", description="What may change the served models while serving, as in Triton: "
        "none (the repository as it was at start), poll (the repository read every "
        "--repository-poll-s: new models and versions load, changed files load as a new "
        "instance on which new sessions start, removed ones unload), explicit (only the "
        "--load-model models at start, then the repository API's load and unload)."
    )
    repository_poll_s: float = Field(
        15.0, gt=0, description="With --model-control poll: how often the model repository "
        "is read for changes (seconds)."
    )
    retire_grace_s: float = Field(
        600.0, ge=0, description="A model version unloaded or removed from the repository "
        "while it holds live sessions retires: no new sessions, and its sessions step on for "
        "at most this long (seconds; 0: cut off at once), then get 410 \"retired\"."
    )
    load_model: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="With --model-control explicit: a model to load at "
        "start (repeat the flag for more; '*' loads every model; RNNSERVE_LOAD_MODEL takes "
        "names separated by commas). Without it, explicit mode starts with no model loaded."
    )
    host: str = Field("127.0.0.1", description="Address to listen on for HTTP.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port.")
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port; 0 turns gRPC off.")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu",
        description="Execution provider: cuda fails loudly without a GPU; auto falls back to CPU.",
    )
    cuda_tf32: bool = Field(
        False,
        description="Let the CUDA provider use TF32 tensor-core math in matrix products: "
        "faster on large models, but outputs then differ from the CPU's by about 1e-3 (off: "
        "full float32, equal to the CPU's within 1e-5, and a session's outputs equal predict's).",
    )
    state_store: str = Field(
        "memory", description="Session state store: memory, redis://[:PASSWORD@]HOST:PORT/DB "
        "(one Redis), or redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB] "
        "(the master that those Redis Sentinels name, followed across failovers)."
    )
    redis_wait_replicas: int = Field(
        0, ge=0, description="With a Redis state store: acknowledge a step only once this many "
        "Redis replicas have it (Redis WAIT after each batch's write, on the same connection). "
        "If fewer acknowledge within --redis-wait-timeout-s the step is answered 503 'applied, "
        "not yet replicated': a retry with the same step_id replays it, never twice. A "
        "replica's acknowledgement means its memory, not its disk. 0: no WAIT."
    )
    redis_record_format: int = Field(
        1, ge=1, le=2, description="With a Redis state store: the record format this "
        "replica writes sessions in (it reads both). 1 is what every release reads; 2 keeps a "
        "session's state in one field (less Redis memory). Switch to 2 only once every replica on "
        "that Redis runs this release or newer: an older replica cannot step a format 2 "
        "session. Each write converts the record it writes."
    )
    redis_wait_timeout_s: float = Field(
        1.0, gt=0, description="How long a batch's write waits for --redis-wait-replicas "
        "replicas to acknowledge it (seconds, rounded up to whole ms)."
    )
    intra_op_threads: int = Field(
        1,
        ge=0,
        description="ONNX Runtime threads inside one run (0 = ORT's default). One per run "
        "beats two on a 2-core machine: spinning threads burn the other core.",
    )
    inference_workers: int = Field(
        2, ge=1, description="ONNX Runtime runs that may overlap (worker threads)."
    )
    all_cores_rows: int = Field(
        256,
        ge=0,
        description="A batch of at least this many rows runs on a second ONNX Runtime session "
        "of its model that uses every core, called from a thread of its own (one such run at "
        "a time), its threads sleeping between runs rather than spinning (0: never). Large "
        "batches (a gateway's bulk step) finish in about half the time; smaller ones keep one "
        "thread. CPU only, and only with --intra-op-threads 1.",
    )
    gil_switch_interval_ms: float = Field(
        1.0,
        gt=0,
        description="How long Python lets one thread hold the GIL while another waits "
        "(Python's default: 5). A worker thread whose ONNX Runtime run has finished waits this "
        "long at most for the busy event loop to hand it the GIL; shorter returns batches "
        "sooner.",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_sequences: int = Field(
        1024, ge=1, description="Most sequences in one predict or v2 infer request (413 above)."
    )
    max_timesteps: int = Field(
        10_000, ge=1, description="Most timesteps in one sequence (413 above)."
    )
    max_total_timesteps: int = Field(
        200_000,
        ge=1,
        description="Most timesteps summed over all sequences of one request (413 above).",
    )
    max_step_timesteps: int = Field(
        1_000, ge=1, description="Most timesteps in one session step (413 above)."
    )
    session_ttl_s: float = Field(
        900.0, gt=0, description="A session idle this long expires (seconds; default 15 min)."
    )
    max_sessions: int = Field(
        500_000, ge=1, description="Most live sessions (503 with Retry-After when full)."
    )
    max_sessions_per_request: int = Field(
        1024,
        ge=1,
        description="Most sessions one bulk create (POST /v1/models/{m}/sessions with "
        '{"sessions": [...]}) may open (413 above).',
    )
    when_full: Literal["reject", "lru"] = Field(
        "reject",
        description="At max_sessions: reject new sessions (503), or evict the least recently "
        "used one (lru).",
    )
    max_batch: int = Field(
        1024, ge=1, description="Most rows (sequences or session steps) in one ONNX Runtime "
        "call; a larger request runs as parts of this many rows side by side."
    )
    max_delay_ms: float = Field(
        0.5,
        ge=0,
        description="While a run is in flight, how long the batcher may wait for a batch to "
        "fill (a lone request on an idle model never waits).",
    )
    max_queue: int = Field(
        16_384, ge=1, description="Most rows waiting per model version (503 above)."
    )
    ws_max_queue: int = Field(
        16,
        ge=1,
        description="WebSocket messages in flight per connection (read, not yet answered) "
        "before the server stops reading from it (backpressure).",
    )
    step_history: int = Field(
        16,
        ge=1,
        le=1024,
        description="Step ids each session remembers with their outputs, so that a retried "
        "or re-sent step is replayed, not applied twice (at least --ws-max-queue are kept: a "
        "stream re-sends every step it had in flight after a reconnect).",
    )
    ws_compression: bool = Field(
        False,
        description="Accept permessage-deflate on WebSocket connections. Off by default: a "
        "step's messages are ~100 bytes of JSON, which compression makes slower (zlib on "
        "both sides) without making them much smaller, and the stream's own frame parser "
        "takes only uncompressed frames.",
    )
    api_keys: str = Field(
        "",
        description="Comma-separated API keys; when set (or api_keys_file), every route but "
        "health, metrics, docs and the console needs 'Authorization: Bearer <key>'.",
    )
    api_keys_file: Path | None = Field(
        None, description="A file with one API key per line (# comments allowed), added to "
        "api_keys. Re-read when it changes and on SIGHUP: removed keys stop working at once; "
        "once given, keys stay required even if the file becomes empty."
    )
    api_keys_poll_s: float = Field(
        1.0, ge=0, description="How often the API keys file is checked for changes (seconds; "
        "0: only on SIGHUP)."
    )
    rate_limit_per_s: float = Field(
        0.0, ge=0, description="Requests per second per API key (or client address without "
        "keys); 0 turns rate limiting off. Over it: 429 with Retry-After."
    )
    rate_burst: int = Field(100, ge=1, description="Requests a key may burst above the rate.")
    max_sessions_per_key: int = Field(
        0, ge=0, description="Most live sessions one API key may hold (0 = no per-key cap)."
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="A request (HTTP or gRPC) running longer gets 504 (gRPC: "
        "DEADLINE_EXCEEDED) when nothing it asked for was applied (HTTP: 408, and the "
        "connection closed, when its body was still to come from the client); a session step "
        "already running is answered with its real result instead."
    )
    max_sessions_per_client: int = Field(
        10_000, ge=0, description="Most live sessions one client address (IPv6: one /64) "
        "may hold while API keys are off (0 = no cap); behind a proxy named in "
        "--forwarded-allow-ips each forwarded address counts, the proxy's own requests do "
        "not. Over it: 429 with Retry-After (gRPC: RESOURCE_EXHAUSTED)."
    )
    forwarded_allow_ips: str = Field(
        "", description="Comma-separated addresses of trusted proxies (or *) whose "
        "X-Forwarded-For names the client; empty: trust none, the peer is the client."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="A connection whose request head (request line and headers) "
        "is not complete this long after it began is closed (slow-header clients)."
    )
    max_connections_per_client: int = Field(
        1024, ge=0, description="Most open HTTP/WebSocket connections from one client "
        "address (0 = no cap); trusted proxies are exempt."
    )
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed by CORS (off when empty; * for any)."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per line, with the request id."
    )
    shutdown_delay_s: float = Field(
        0.0, ge=0, description="On SIGTERM, report not-ready this long before closing the "
        "listeners, so load balancers stop sending first."
    )
    otel_endpoint: str = Field(
        "", description="OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces "
        "(tracing is off when empty; needs the otel extra)."
    )
    otel_service_name: str = Field("rnnserve", description="service.name of the traces.")
    strict_readiness: bool = Field(
        False,
        description="If true, /v2/health/ready is false while any model in the repository "
        "failed to load; by default it reflects only the models that loaded.",
    )
    address_file: Path | None = Field(
        None, description="Once listening, write the real HTTP and gRPC addresses as JSON "
        "({\"http\": \"http://127.0.0.1:8000\", \"grpc\": \"127.0.0.1:8001\", \"pid\": N}; "
        "a wildcard host as loopback; with --port 0 the port the system chose) to this file, "
        "replaced atomically and removed at shutdown; the container's health check reads it. Its "
        "folder is created; if it cannot be written the server warns and serves on. Unset "
        "or empty: no file."
    )
    store_unready_after_s: float = Field(
        15.0, ge=0, description="Readiness (/v2/health/ready, gRPC health and ServerReady) "
        "turns false once the state store has been unreachable this long without a break "
        "(seconds; longer than a Redis Sentinel failover); a shorter outage only fails the "
        "requests that need the store (503 with Retry-After). 0: readiness never depends on "
        "the store. Liveness never does."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")

    @field_validator("address_file", mode="before")
    @classmethod
    def _empty_means_no_file(cls, path: object) -> object:
        """RNNSERVE_ADDRESS_FILE= (empty) turns the file off rather than naming the cwd."""
        return None if isinstance(path, str) and not path.strip() else path

    @field_validator("load_model", mode="before")
    @classmethod
    def _model_names(cls, names: object) -> object:
        """RNNSERVE_LOAD_MODEL=a,b (and a flag given as a,b) names two models."""
        if isinstance(names, str):
            names = [names]
        if isinstance(names, list):
            return [n.strip() for name in names if isinstance(name, str)
                    for n in name.split(",") if n.strip()]
        return names

    @model_validator(mode="after")
    def _load_model_needs_explicit(self) -> Settings:
        if self.load_model and self.model_control != "explicit":
            raise ValueError("--load-model loads models at start in explicit mode only: add "
                             "--model-control explicit (the other modes load every model)")
        return self

    @field_validator("state_store")
    @classmethod
    def _known_state_store(cls, url: str) -> str:
        """The one check of --state-store: the factory trusts it and only dispatches."""
        if is_sentinel_url(url):
            parse_sentinel_url(url)  # BadSentinelUrl says what is wrong, without the password
            return url
        if url != "memory" and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"--state-store {without_credentials(url)!r}: use memory, "
                             f"redis://HOST:PORT/DB or {SENTINEL_FORM}")
        return url

    def key_set(self) -> frozenset[str]:
        """Every accepted API key, from api_keys and api_keys_file."""
        keys = flag_keys(self.api_keys)
        if self.api_keys_file is not None:
            keys |= parse_keys(self.api_keys_file.read_text(encoding="utf-8"))
        return keys

    def replay_window(self) -> int:
        """How many step ids each session keeps with their outputs (the stores' replay
        window): --step-history, and never fewer than a stream may have in flight."""
        return max(self.step_history, self.ws_max_queue)
