"""Token rules of shared/auth.py, one refusal per test, against a JWKS served on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from shared.auth import AuthError, KeySetUnavailableError, TokenVerifier, user_id_for
from shared.scopes import Scope
from shared.service_tokens import ServiceKey
from tests.unit.auth_keys import ISSUER, PARTY, JwksServer, SigningKey, hs256_with, session_claims, unsigned


@pytest.fixture(scope="module")
def clerk_key() -> SigningKey:
    return SigningKey("clerk")


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey("other")


@pytest.fixture(scope="module")
def service_key() -> ServiceKey:
    return ServiceKey.of_private(SigningKey("svc").private)


@pytest.fixture
def jwks(clerk_key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer(clerk_key).running() as server:
        yield server


@pytest.fixture
def verifier(jwks: JwksServer, service_key: ServiceKey) -> TokenVerifier:
    return TokenVerifier(
        jwks.url,
        audience="ledger",
        issuer=ISSUER,
        authorized_parties=[PARTY],
        admin_clerk_ids=["user_boss"],
        service_key=service_key,
        refresh_cooldown=0,
    )


def refused(verifier: TokenVerifier, token: str, reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        verifier.verify(token)


def test_a_valid_session_token_names_its_clerk_user(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    principal = verifier.verify(clerk_key.sign({"sub": "user_ada"}))
    assert (principal.clerk_id, principal.user_id, principal.role) == ("user_ada", user_id_for("user_ada"), "user")


def test_an_expired_token_is_refused(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    now = int(time.time())
    refused(verifier, clerk_key.sign({}, iat=now - 120, nbf=now - 120, exp=now - 60), "expired")


def test_a_token_expired_within_the_leeway_is_accepted(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    assert verifier.verify(clerk_key.sign({}, exp=int(time.time()) - 2)).clerk_id == "user_test"


def test_a_token_not_yet_valid_is_refused(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    refused(verifier, clerk_key.sign({}, nbf=int(time.time()) + 60, exp=int(time.time()) + 120), "not yet valid")


def test_a_token_with_a_wrong_signature_is_refused(
    verifier: TokenVerifier, clerk_key: SigningKey, other_key: SigningKey
) -> None:
    refused(verifier, other_key.sign({}, kid=clerk_key.kid), "Signature verification failed")


def test_a_token_with_an_unknown_kid_is_refused(verifier: TokenVerifier, other_key: SigningKey) -> None:
    refused(verifier, other_key.sign({}), "unknown signing key")


def test_an_unsigned_alg_none_token_is_refused(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    refused(verifier, unsigned(session_claims(), {"alg": "none", "typ": "JWT", "kid": clerk_key.kid}), "'none'")


def test_hs256_signed_with_the_public_key_is_refused(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    refused(verifier, hs256_with(clerk_key.public_pem(), session_claims(), clerk_key.kid), "'HS256'")


def test_a_token_of_another_issuer_is_refused(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    refused(verifier, clerk_key.sign({}, iss="https://evil.example.test"), "issuer")


def test_a_token_for_another_authorized_party_is_refused(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    refused(verifier, clerk_key.sign({}, azp="https://evil.example.test"), "authorized party")


def test_a_token_without_an_authorized_party_is_refused(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    refused(verifier, clerk_key.sign({}, azp=None), "authorized party")


def test_a_token_without_expiry_is_refused(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    refused(verifier, clerk_key.sign({}, exp=None), "exp")


def test_a_token_without_subject_is_refused(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    refused(verifier, clerk_key.sign({}, sub=None), "sub")


def test_garbage_is_refused(verifier: TokenVerifier) -> None:
    refused(verifier, "not-a-jwt", "malformed")


def test_admin_comes_from_public_metadata_or_the_admin_list(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    assert verifier.verify(clerk_key.sign({"public_metadata": {"role": "admin"}})).role == "admin"
    assert verifier.verify(clerk_key.sign({"sub": "user_boss"})).role == "admin"
    assert verifier.verify(clerk_key.sign({"public_metadata": {"role": "superuser"}})).role == "user"
    assert verifier.verify(clerk_key.sign({"public_metadata": "admin"})).role == "user"


@pytest.mark.parametrize(
    "claims",
    [
        {"role": "admin"},  # a top-level claim: a session-token template may fill it from unsafe metadata
        {"metadata": {"role": "admin"}},
        {"unsafe_metadata": {"role": "admin"}},
    ],
)
def test_admin_never_comes_from_a_claim_the_user_can_write(
    verifier: TokenVerifier, clerk_key: SigningKey, claims: dict[str, Any]
) -> None:
    assert verifier.verify(clerk_key.sign(claims)).role == "user"


def test_a_user_token_can_never_claim_the_service_role(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    assert verifier.verify(clerk_key.sign({"role": "service"})).role == "user"
    refused(verifier, clerk_key.sign({"sub": "service:ledger"}), "service subject")


def test_a_service_token_signed_with_the_service_key_is_a_service_holding_its_scopes(
    verifier: TokenVerifier, service_key: ServiceKey
) -> None:
    principal = verifier.verify(service_key.sign("creditstream-cli", audience="ledger", scopes=[Scope.LEDGER_READ]))
    assert (principal.role, principal.clerk_id) == ("service", "service:creditstream-cli")
    assert principal.scopes == {Scope.LEDGER_READ}
    assert principal.holds(Scope.LEDGER_READ) and not principal.holds(Scope.LEDGER_ADJUST)


def test_a_service_token_for_another_service_is_refused(verifier: TokenVerifier, service_key: ServiceKey) -> None:
    refused(verifier, service_key.sign("cli", audience="payments", scopes=[Scope.PAYMENTS_REFUND]), "[Aa]udience")


def service_claims(**overrides: Any) -> dict[str, Any]:
    """What ServiceKey.sign puts in a token for the ledger, changed in the ways a test says (None: left out)."""
    now = int(time.time())
    claims = {"iss": "creditstream-service", "sub": "service:cli", "aud": "ledger", "scope": ["ledger:read"],
              "iat": now, "nbf": now, "exp": now + 60}  # fmt: skip
    return {k: v for k, v in {**claims, **overrides}.items() if v is not None}


def signed_as_service(service_key: ServiceKey, claims: dict[str, Any]) -> str:
    assert service_key.private is not None
    return jwt.encode(claims, service_key.private, algorithm="RS256", headers={"kid": service_key.kid})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"aud": None}, "aud"),
        ({"aud": ["ledger", "payments"]}, "claim format"),
        ({"aud": "ledger-but-not-quite"}, "[Aa]udience"),
        ({"scope": None}, "scopes as a list"),
        ({"scope": "ledger:read"}, "scopes as a list"),
        ({"scope": [1]}, "scopes as a list"),
        ({"scope": ["payments:refund"]}, "not ledger's"),
        ({"scope": ["ledger:everything"]}, "not ledger's"),
    ],
)
def test_a_service_token_without_one_audience_or_with_malformed_scopes_is_refused(
    verifier: TokenVerifier, service_key: ServiceKey, change: dict[str, Any], reason: str
) -> None:
    assert verifier.verify(signed_as_service(service_key, service_claims())).role == "service"  # the control
    refused(verifier, signed_as_service(service_key, service_claims(**change)), reason)


def test_a_service_key_signs_only_scopes_of_the_audience_it_addresses(service_key: ServiceKey) -> None:
    with pytest.raises(ValueError, match="not ledger's"):
        service_key.sign("cli", audience="ledger", scopes=[Scope.PAYMENTS_REFUND])
    with pytest.raises(ValueError, match="no service"):
        service_key.sign("cli", audience="everyone", scopes=[])


def test_a_service_token_signed_with_another_key_is_refused(
    verifier: TokenVerifier, service_key: ServiceKey, other_key: SigningKey
) -> None:
    forged = other_key.sign({"sub": "service:payments"}, kid=service_key.kid, iss="creditstream-service", azp=None)
    refused(verifier, forged, "Signature verification failed")


def test_a_clerk_key_cannot_mint_service_tokens(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    refused(verifier, clerk_key.sign({"sub": "service:payments"}, iss="creditstream-service"), "issuer")


def test_a_rotated_key_is_fetched_once_on_its_first_unknown_kid(
    verifier: TokenVerifier, jwks: JwksServer, clerk_key: SigningKey
) -> None:
    verifier.verify(clerk_key.sign({}))
    verifier.verify(clerk_key.sign({}))
    assert jwks.fetches == 1, "the key set is cached"
    rotated = SigningKey("rotated")
    jwks.keys.append(rotated)
    assert verifier.verify(rotated.sign({"sub": "user_new"})).clerk_id == "user_new"
    assert jwks.fetches == 2


def test_unknown_kids_do_not_refetch_the_key_set_during_the_cooldown(
    jwks: JwksServer, clerk_key: SigningKey, other_key: SigningKey
) -> None:
    verifier = TokenVerifier(
        jwks.url, audience="ledger", issuer=ISSUER, authorized_parties=[PARTY], refresh_cooldown=60
    )
    verifier.verify(clerk_key.sign({}))
    for _ in range(5):
        refused(verifier, other_key.sign({}), "unknown signing key")
    assert jwks.fetches == 1


def test_an_unreachable_key_set_is_not_blamed_on_the_token(clerk_key: SigningKey) -> None:
    verifier = TokenVerifier(
        "http://127.0.0.1:9/jwks.json", audience="ledger", issuer=ISSUER, authorized_parties=[PARTY]
    )
    with pytest.raises(KeySetUnavailableError):
        verifier.verify(clerk_key.sign({}))


def test_a_verified_token_is_trusted_until_it_expires_and_no_longer(
    verifier: TokenVerifier, clerk_key: SigningKey
) -> None:
    now = int(time.time())
    token = clerk_key.sign({"sub": "user_ada"})
    assert verifier.cached(token) is None  # never verified: never trusted
    verifier.remember(token, verifier.verify(token))
    cached = verifier.cached(token)
    assert cached is not None and cached.clerk_id == "user_ada"
    assert verifier.cached(clerk_key.sign({"sub": "user_eve"})) is None

    ending = clerk_key.sign({"sub": "user_bob"}, exp=now + 1)
    verifier.remember(ending, verifier.verify(ending))
    assert verifier.cached(ending) is not None
    time.sleep(1.1)  # the token's own lifetime, not a wait for the system under test
    assert verifier.cached(ending) is None


def test_a_token_without_an_active_organization_has_none(verifier: TokenVerifier, clerk_key: SigningKey) -> None:
    assert verifier.verify(clerk_key.sign({"sub": "user_ada"})).org is None


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"org_id": "org_2abc", "org_role": "org:admin", "org_slug": "acme"}, ("org_2abc", "org:admin", "acme")),
        ({"org_id": "org_2abc", "org_role": "org:member"}, ("org_2abc", "org:member", None)),
        ({"o": {"id": "org_2abc", "rol": "admin", "slg": "acme"}}, ("org_2abc", "org:admin", "acme")),  # v2
        ({"o": {"id": "org_2abc", "rol": "member"}}, ("org_2abc", "org:member", None)),
        ({"org_id": "org_2abc", "org_role": "org:billing_viewer"}, ("org_2abc", "org:member", None)),  # custom
    ],
)
def test_the_active_organization_is_read_from_either_claim_version(
    verifier: TokenVerifier, clerk_key: SigningKey, claims: dict[str, Any], expected: tuple[str, str, str | None]
) -> None:
    org = verifier.verify(clerk_key.sign({"sub": "user_ada", **claims})).org
    assert org is not None and (org.id, org.role, org.slug) == expected


@pytest.mark.parametrize("org_id", ["acme", "org_", "org_a/../b", 42, "org_" + "x" * 101])
def test_a_token_naming_no_real_organization_is_refused(
    verifier: TokenVerifier, clerk_key: SigningKey, org_id: object
) -> None:
    refused(verifier, clerk_key.sign({"sub": "user_ada", "org_id": org_id}), "not a Clerk organization id")
