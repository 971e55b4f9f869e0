"""Tests for gateway.api.redact: which values are secrets, and the shape kept."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from gateway.api.redact import REDACTED, is_secret_key, redact
from gateway.config.errors import Origin

PEM_KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----"
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"basicAuth": {"users": ["a:$apr1$x$y", "b:$2y$05$z"], "usersFile": "/etc/users"}},
            {"basicAuth": {"users": [REDACTED, REDACTED], "usersFile": "/etc/users"}},
        ),
        (
            {"digestAuth": {"users": ["test:traefik:a2688e031edb4be6a3797f3882655c05"]}},
            {"digestAuth": {"users": [REDACTED]}},
        ),
        (
            {"forwardAuth": {"tls": {"ca": "/ca.pem", "cert": PEM_CERT, "key": "/k.pem"}}},
            {"forwardAuth": {"tls": {"ca": "/ca.pem", "cert": PEM_CERT, "key": REDACTED}}},
        ),
        (
            {"plugin": {"oidc": {"clientId": "gw", "clientSecret": "s3", "apiKey": "k"}}},
            {"plugin": {"oidc": {"clientId": "gw", "clientSecret": REDACTED, "apiKey": REDACTED}}},
        ),
        (
            {"jwt": {"signingSecret": "hunter2", "keys": [{"kty": "oct", "k": "AAAA"}]}},
            {"jwt": {"signingSecret": REDACTED, "keys": [{"kty": REDACTED, "k": REDACTED}]}},
        ),
        (
            {"headers": {"customRequestHeaders": {"Authorization": "Basic Zm9v", "X-A": "1"}}},
            {"headers": {"customRequestHeaders": {"Authorization": REDACTED, "X-A": "1"}}},
        ),
        (
            {"plugin": {"x": {"access_token": "t", "db-password": "p", "X-Api-Key": "k"}}},
            {
                "plugin": {
                    "x": {"access_token": REDACTED, "db-password": REDACTED, "X-Api-Key": REDACTED}
                }
            },
        ),
        (
            {"certificates": [{"certFile": "/c.pem", "keyFile": PEM_KEY}]},
            {"certificates": [{"certFile": "/c.pem", "keyFile": REDACTED}]},
        ),
        (
            {"anything": {"note": f"inline {PEM_KEY}"}, "lines": ["bob:{SHA}abcdef"]},
            {"anything": {"note": REDACTED}, "lines": [REDACTED]},
        ),
        (
            {"secret": "", "token": None, "password": True, "users": []},
            {"secret": "", "token": None, "password": True, "users": []},
        ),
        (
            {"rateLimit": {"average": 100, "burst": 50}, "sticky": {"cookie": {"name": "lb"}}},
            {"rateLimit": {"average": 100, "burst": 50}, "sticky": {"cookie": {"name": "lb"}}},
        ),
    ],
    ids=[
        "basic-auth-users",
        "digest-auth-users",
        "forward-auth-tls-key",
        "plugin-secrets",
        "jwt-secret-and-keys",
        "authorization-header",
        "spellings",
        "inline-key-file",
        "secrets-anywhere",
        "empty-values-kept",
        "no-secrets",
    ],
)
def test_redact(data: dict[str, Any], expected: dict[str, Any]) -> None:
    """Secret values are replaced and everything else is kept as is."""
    assert redact(data) == expected


def test_redact_makes_plain_json_data() -> None:
    """Read-only mappings and tuples come out as dicts and lists; other objects as text."""
    data = MappingProxyType({"a": (1, 2), "b": MappingProxyType({"c": Origin("f.yaml", 3)})})
    assert redact(data) == {"a": [1, 2], "b": {"c": "f.yaml:3"}}


def test_redact_counts_hidden_numbers() -> None:
    """Numbers under a secret key are hidden too (a numeric PIN is still a secret)."""
    assert redact({"password": 1234, "port": 1234}) == {"password": REDACTED, "port": 1234}


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("users", True),
        ("signing_secret", True),
        ("Proxy-Authorization", True),
        ("bearerToken", True),
        ("usersFile", False),
        ("keyFile", False),
        ("tokenFile", False),
        ("headerField", False),
        ("secure", False),
    ],
    ids=lambda v: str(v),
)
def test_is_secret_key(key: str, secret: bool) -> None:
    """Key names are matched across spellings; file-path keys are not secrets."""
    assert is_secret_key(key) is secret
