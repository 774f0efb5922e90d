"""One settings model for every service and the CLI, read from the environment only."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.credits import PriceTable, parse_price_table

SERVICES = ("projections", "identity", "ledger", "payments", "media")
DEFAULT_PORTS = {"projections": 8000, "identity": 8001, "ledger": 8002, "payments": 8003, "media": 8004}
# Processes that serve no API of their own (a health port only), by name: their app.
WORKERS = {"media-worker": "services.media.worker:create_app"}
WORKER_PORTS = {"media-worker": 8005}
DEV_ISSUER = "creditstream-dev"
DEV_AUTHORIZED_PARTY = "http://localhost:8000"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # No default: a config that forgets AUTH_MODE must not come up with the dev door open.
    auth_mode: Literal["dev", "clerk"]
    database_url: str
    nats_url: str
    # This process's NATS user (shared/bus/users.py) and password; the TLS files of its connection.
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"

    projections_port: int = DEFAULT_PORTS["projections"]
    identity_port: int = DEFAULT_PORTS["identity"]
    ledger_port: int = DEFAULT_PORTS["ledger"]
    payments_port: int = DEFAULT_PORTS["payments"]
    media_port: int = DEFAULT_PORTS["media"]

    clerk_jwks_url: str | None = None
    clerk_issuer: str | None = None
    clerk_authorized_parties: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_clerk_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Origins besides projections' own that may call the APIs from a browser (a front end elsewhere).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    clerk_webhook_secret: SecretStr | None = None
    # The PEM public key service tokens are verified with (shared/service_tokens.py). There is no private
    # key setting: a service never signs, only the CLI does (with SERVICE_JWT_PRIVATE_KEY, its own env).
    service_jwt_public_key: str | None = None

    # Stripe: the API base (unset: api.stripe.com; `make up` and the tests point it at localstripe).
    stripe_api_base: str | None = None
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None

    stream_replicas: int = 1
    max_deliver: int = 5
    # Unacknowledged this long, a message is delivered again: how soon work of a dead consumer resumes.
    # A live handler keeps its message with progress beats, however long it works.
    ack_wait_seconds: float = Field(default=30.0, ge=1.0, le=3600.0)
    reservation_ttl_seconds: int = 900
    # Dev mode only: how far the calendar clock (shared/clock.py) runs ahead, so a test can step into next month.
    clock_offset_seconds: float = 0.0
    # Per-user limits (shared/limits.py): requests per minute of each route class, and what is open at once.
    rate_media_jobs_per_minute: int = Field(default=30, ge=1)
    rate_media_jobs_burst: int = Field(default=10, ge=1)
    rate_checkouts_per_minute: int = Field(default=10, ge=1)
    rate_promo_redemptions_per_minute: int = Field(default=10, ge=1)
    # Custom top-ups (POST /api/checkout {"credits": N}): the bounds of N, and the price table (shared/credits.py).
    topup_min_credits: int = Field(default=20, ge=1)
    topup_max_credits: int = Field(default=10_000, ge=1)
    topup_price_table: str = "20:19.98,150:16.66,500:16"
    # How long after an automatic purchase auto-recharge buys nothing more (a burst of crossings buys once).
    recharge_cooldown_seconds: float = Field(default=300.0, ge=0.0)
    rate_ledger_commands_per_minute: int = Field(default=600, ge=1)
    rate_stream_tickets_per_minute: int = Field(default=10, ge=1)
    max_open_streams: int = Field(default=3, ge=1)
    # Uploads one media process receives at once; more are answered 503 at once, their bodies unread.
    media_max_uploads: int = Field(default=4, ge=1)
    # ledger.rpc requests one ledger process works on at once; more are answered 503 at once.
    ledger_rpc_max_in_flight: int = Field(default=256, ge=1)
    otel_service_namespace: str = "creditstream"

    @field_validator("clerk_authorized_parties", "admin_clerk_ids", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator(
        "clerk_jwks_url",
        "clerk_issuer",
        "nats_user",
        "nats_password",
        "nats_tls_ca",
        "nats_tls_cert",
        "nats_tls_key",
        "clerk_webhook_secret",
        "service_jwt_public_key",
        "stripe_api_base",
        "stripe_secret_key",
        "stripe_webhook_secret",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # Compose's `${VAR:-}` passes "": an empty issuer would refuse every token, an empty secret match none.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _dev_mode_stays_on_loopback(self) -> Settings:
        # Dev mode hands anyone who can reach identity an admin token (/dev/token): never on a network.
        if self.auth_mode == "dev" and not _is_loopback(self.host):
            raise ValueError(
                f"AUTH_MODE=dev serves unauthenticated /dev/token: HOST must be a loopback address"
                f" (127.0.0.0/8, ::1 or localhost), not {self.host!r}; use AUTH_MODE=clerk on a network"
            )
        return self

    @model_validator(mode="after")
    def _clock_moves_in_dev_mode_only(self) -> Settings:
        if self.clock_offset_seconds and self.auth_mode != "dev":
            raise ValueError("CLOCK_OFFSET_SECONDS is for tests in dev mode: the real calendar decides otherwise")
        return self

    @model_validator(mode="after")
    def _clerk_mode_needs_jwks(self) -> Settings:
        if self.auth_mode == "clerk" and not self.clerk_jwks_url:
            raise ValueError("AUTH_MODE=clerk needs CLERK_JWKS_URL")
        # Without an allow-list any site holding a session token of the Clerk instance could call us.
        if self.auth_mode == "clerk" and not self.clerk_authorized_parties:
            raise ValueError("AUTH_MODE=clerk needs CLERK_AUTHORIZED_PARTIES (comma-separated origins)")
        return self

    @property
    def topup_prices(self) -> PriceTable:
        return parse_price_table(self.topup_price_table)

    @model_validator(mode="after")
    def _topups_are_priced(self) -> Settings:
        self.topup_prices  # noqa: B018  # a malformed table stops the service at start, not a checkout
        if self.topup_min_credits > self.topup_max_credits:
            raise ValueError("TOPUP_MIN_CREDITS is above TOPUP_MAX_CREDITS")
        return self

    @property
    def page_origins(self) -> list[str]:
        """Where the pages come from (projections, by address and by name) and any origin CORS_ORIGINS adds."""
        port = self.port("projections")
        return [self.url("projections"), f"http://localhost:{port}", f"http://127.0.0.1:{port}", *self.cors_origins]

    def port(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    def url(self, service: str) -> str:
        return f"http://{self.host}:{self.port(service)}"

    @cached_property
    def jwks_url(self) -> str:
        if self.auth_mode == "dev":
            return f"{self.url('identity')}/.well-known/jwks.json"
        assert self.clerk_jwks_url
        return self.clerk_jwks_url

    @property
    def issuer(self) -> str | None:
        return DEV_ISSUER if self.auth_mode == "dev" else self.clerk_issuer

    @property
    def authorized_parties(self) -> list[str]:
        if self.auth_mode == "dev" and not self.clerk_authorized_parties:
            return [DEV_AUTHORIZED_PARTY]
        return self.clerk_authorized_parties


def _is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False
