"""Service settings: the only place the service reads the environment (prefix ``RECSYS_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from recsys.stores.redis import RedisCallPolicy, RedisConfig, TLSOptions

# Secrets that must never be used; the validator refuses them everywhere.
PLACEHOLDER_SECRETS = frozenset({"changethis", "change-me", "changeme", "secret", "password"})
MIN_SECRET_CHARS = 16
# In production a key must be long enough not to be guessed (32 URL-safe characters: ~190 bits).
MIN_PRODUCTION_SECRET_CHARS = 32
# Keys a production deployment cannot run without: the admin paths' and the tracking tokens' (shared by all
# workers and restarts).
REQUIRED_IN_PRODUCTION = frozenset({"admin_api_key", "tracking_secret"})


class Settings(BaseSettings):
    """Settings of the recommend service. Every field can be set as ``RECSYS_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore", populate_by_name=True)

    # First: the secrets' validators read it.
    env: Literal["development", "production"] = Field(
        default="development",
        description="production: the service refuses to start unless RECSYS_ADMIN_API_KEY and "
        "RECSYS_TRACKING_SECRET are set and every key is at least "
        f"{MIN_PRODUCTION_SECRET_CHARS} characters.",
    )

    # --- storage ---------------------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("redis_url", "RECSYS_REDIS_URL", "REDIS_URL"),
        description="Redis for caps and the online member store; unset = embedded single-process stores.",
    )
    redis_mode: Literal["auto", "standalone", "cluster", "sentinel"] = Field(
        default="auto",
        description="auto: from the URL's scheme (redis+cluster://h1:p1,h2:p2 is a Cluster, "
        "redis+sentinel://h1:p1,h2:p2/service[/db] Sentinels); cluster: a redis:// URL names one "
        "start-up node of a Redis Cluster.",
    )
    redis_username: str | None = Field(default=None, description="Redis ACL user (overrides the URL's).")
    redis_password: SecretStr | None = Field(
        default=None, description="Redis password (overrides the URL's)."
    )
    redis_tls_certfile: Path | None = Field(default=None, description="Client certificate (rediss:// only).")
    redis_tls_keyfile: Path | None = Field(default=None, description="Client certificate's key (rediss://).")
    redis_tls_ca_certs: Path | None = Field(
        default=None, description="CA bundle verifying the server (rediss://)."
    )
    redis_tls_cert_reqs: Literal["required", "optional", "none"] = Field(
        default="required", description="Verification of the server's certificate (rediss://)."
    )
    redis_tls_check_hostname: bool = Field(
        default=True, description="Check the server certificate's host name (rediss://, cert_reqs=required)."
    )
    members_key_prefix: str = Field(default="members", description="Key prefix of the online member store.")
    caps_key_prefix: str = Field(default="caps", description="Key prefix of the cap counters.")
    redis_timeout_ms: float | None = Field(
        default=None, gt=0, description="Timeout of the cap store's Redis calls; unset = the cap policy's."
    )
    database_url: str = Field(
        default="sqlite:///var/events.db",
        validation_alias=AliasChoices("database_url", "RECSYS_DATABASE_URL", "DATABASE_URL"),
        description="Event log (SQLAlchemy URL): SQLite file by default, postgresql+psycopg://... in prod.",
    )
    database_schema: str | None = Field(default=None, description="PostgreSQL schema of the event log.")
    request_log_enabled: bool = Field(
        default=True,
        description="Log every recommend decision (candidates, slate, propensities) in the request log.",
    )
    request_log_url: str | None = Field(
        default=None, description="Request log (SQLAlchemy URL); unset = the event log's database."
    )
    request_log_schema: str | None = Field(
        default=None, description="PostgreSQL schema of the request log; unset = the event log's schema."
    )
    gc_young_threshold: int = Field(
        default=700,
        ge=100,
        le=1_000_000,
        description="Net allocations between young garbage collections (CPython's default is 700); "
        "higher values promote fewer of a request's short-lived objects (serving/heap.py).",
    )
    request_log_writer: Literal["process", "thread"] = Field(
        default="process",
        description="Who writes the request log: a child process per worker (process; the database work "
        "never holds the serving process's GIL) or a thread in the worker (thread).",
    )
    request_log_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Records written per transaction by the background writer."
    )
    request_log_flush_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Longest a record waits in memory before it is written (what a crash can lose).",
    )
    request_log_max_queue: int = Field(
        default=50_000,
        ge=1,
        description="Records held in memory while the database is slow or down; beyond it they are dropped "
        "(recsys_request_log_dropped_total).",
    )
    exploration_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Share of recommend requests whose slate is drawn uniformly at random from the "
        "candidates (logged with its propensities, for unbiased offline evaluation); 0 disables.",
    )
    exploration_seed: int | None = Field(
        default=None, description="Seed of the exploration draws (tests); unset = seeded from the OS."
    )

    # --- models ----------------------------------------------------------------------------------------
    mlflow_tracking_uri: str = Field(default="sqlite:///var/mlflow.db")
    model_name: str = Field(default="loyalty-offers", description="Registered model name.")
    model_alias: str = Field(default="champion", description="Registry alias served (models:/name@alias).")
    reload_interval_s: float = Field(
        default=30.0, ge=0, description="How often to check whether the alias moved; 0 disables the poll."
    )

    # --- ranking --------------------------------------------------------------------------------------
    ranking_objective: str = Field(
        default="expected_value",
        description="What candidates are ranked by: expected_value (p x margin), acceptance (p) or blend "
        "(p x margin^blend_exponent); one for every placement, and/or per placement: "
        "'expected_value,booking=acceptance,home=blend'.",
    )
    ranking_blend_exponent: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="The blend objective's exponent of the margin (1 = expected value).",
    )

    @field_validator("ranking_objective")
    @classmethod
    def _known_objectives(cls, value: str) -> str:
        from recsys.pipeline.types import parse_ranking_objectives

        parse_ranking_objectives(value)  # raises ValueError naming the bad part
        return value

    # --- member profiles --------------------------------------------------------------------------------
    data_dir: Path | None = Field(
        default=None, description="Dataset to build member profiles from when the member store is empty."
    )
    bootstrap_profiles: Literal["auto", "always", "never"] = Field(
        default="auto", description="auto: publish profiles from data_dir at start-up if the store has none."
    )

    # --- capping ---------------------------------------------------------------------------------------
    capping_enabled: bool = Field(default=True, description="Apply frequency caps in the recommend pipeline.")
    capping_policy_path: Path = Field(
        default=Path("config/caps.yaml"), description="Cap policy file (YAML), re-read when it changes."
    )
    capping_policy_poll_s: float = Field(default=5.0, ge=0, description="How often to check the policy file.")

    # --- API -------------------------------------------------------------------------------------------
    debug_token: SecretStr | None = Field(
        default=None,
        description="Internal callers send it as the X-Debug-Token header to get suppressed candidates; "
        "unset = debug output disabled. It opens no admin path (those need RECSYS_ADMIN_API_KEY).",
    )
    tracking_secret: SecretStr | None = Field(
        default=None,
        validate_default=True,
        description="HMAC key of tracking tokens, shared by all workers; unset = a random per-process key "
        "(fine for one worker in development; tokens do not survive a restart). Required in production.",
    )
    max_body_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        description="Largest accepted request body in bytes: a larger one is refused with 413 before it is "
        "read (500 events of the largest allowed fields fit).",
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins whose browser pages may call the API (comma-separated, e.g. "
        "'https://offers.example.com'; '*' for any); empty = no CORS headers (browsers then allow only "
        "this origin).",
    )
    rate_limit: str | None = Field(
        default=None,
        description="Per-client limit of POST /v1/recommendations, e.g. '600/minute', '20/second' or "
        "'1000/5 minutes'; over it the answer is 429 with Retry-After. Counted in Redis "
        "(RECSYS_REDIS_URL), so it holds across workers and replicas. Unset = no limit.",
    )
    rate_limit_client_header: str | None = Field(
        default=None,
        description="Header that names the client for the rate limit (e.g. X-Client-Id set by the gateway); "
        "unset or absent = the peer's IP address.",
    )
    rate_limit_key_prefix: str = Field(default="ratelimit", description="Key prefix of the rate counters.")
    events_max_batch: int = Field(default=500, ge=1, le=10_000, description="Largest accepted event batch.")
    events_max_future_skew_s: float = Field(
        default=300.0,
        ge=0,
        description="How far an event's event_time may be ahead of the server clock (device clocks drift); "
        "a batch with an event further in the future is rejected (422 event_time_in_future).",
    )
    events_max_age_days: float = Field(
        default=30.0,
        gt=0,
        description="How old an event's event_time may be (apps queue events while offline); a batch with "
        "an older event is rejected (422 event_time_too_old): such times are broken device clocks.",
    )

    pipeline_in_threadpool: bool = Field(
        default=False,
        description="Run the recommend pipeline in the threadpool with blocking Redis calls instead of on "
        "the event loop. On the loop (the default) the member-store read and the cap check are awaited "
        "through asyncio Redis clients, so a request waiting on Redis lets the others run, and the thread "
        "hop is saved (bench-serve: the threadpool served about 30 % fewer requests per second).",
    )

    # --- experiments -----------------------------------------------------------------------------------
    admin_api_key: SecretStr | None = Field(
        default=None,
        validate_default=True,
        description="Key of the admin and marketer paths: X-Api-Key header of /v1/admin/* and "
        "/v1/experiments*, login of the /experiments pages; unset = they answer 401. Required in production.",
    )
    experiments_database_url: str | None = Field(
        default=None, description="Experiment store (SQLAlchemy URL); unset = the event log's database."
    )
    experiments_poll_s: float = Field(
        default=2.0, ge=0, description="How often each worker checks the store for changed experiments."
    )

    # --- process ---------------------------------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False
    # json: one JSON object per line with the request id (serving/logs.py); text for a terminal.
    log_format: Literal["json", "text"] = "json"

    @field_validator("debug_token", "tracking_secret", "admin_api_key")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        production = info.data.get("env") == "production"
        if value is None:
            if production and info.field_name in REQUIRED_IN_PRODUCTION:
                raise ValueError("must be set in production (RECSYS_ENV=production)")
            return value
        secret = value.get_secret_value()
        if not secret.strip():
            raise ValueError("is empty; set a real secret" + ("" if production else " (or leave it unset)"))
        if secret.strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("is a placeholder; set a real secret")
        least = MIN_PRODUCTION_SECRET_CHARS if production else MIN_SECRET_CHARS
        if len(secret) < least:
            where = " in production" if production else ""
            raise ValueError(f"must be at least {least} characters{where}")
        return value

    def request_log_target(self) -> tuple[str, str | None]:
        """The request log's database URL and PostgreSQL schema: the event log's unless set apart."""
        return self.request_log_url or self.database_url, self.request_log_schema or self.database_schema

    def redis_config(self) -> RedisConfig | None:
        """The Redis deployment of the stores (None: embedded single-process stores)."""
        if not self.redis_url:
            return None
        password = self.redis_password.get_secret_value() if self.redis_password is not None else None
        policy = (
            RedisCallPolicy(timeout_ms=self.redis_timeout_ms) if self.redis_timeout_ms else RedisCallPolicy()
        )
        return RedisConfig(
            self.redis_url,
            mode=self.redis_mode,
            username=self.redis_username,
            password=password,
            tls=TLSOptions(
                certfile=str(self.redis_tls_certfile) if self.redis_tls_certfile else None,
                keyfile=str(self.redis_tls_keyfile) if self.redis_tls_keyfile else None,
                ca_certs=str(self.redis_tls_ca_certs) if self.redis_tls_ca_certs else None,
                cert_reqs=self.redis_tls_cert_reqs,
                check_hostname=self.redis_tls_check_hostname,
            ),
            policy=policy,
        )

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("rate_limit")
    @classmethod
    def _known_rate(cls, value: str | None) -> str | None:
        from serving.ratelimit import parse_rate

        if value is None or not value.strip():
            return None
        parse_rate(value)  # raises ValueError naming the problem
        return value

    @model_validator(mode="after")
    def _rate_limit_needs_redis(self) -> Settings:
        if self.rate_limit is not None and not self.redis_url:
            raise ValueError("RECSYS_RATE_LIMIT needs RECSYS_REDIS_URL: the count is shared through Redis")
        return self

    @field_validator("redis_url", "request_log_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value
