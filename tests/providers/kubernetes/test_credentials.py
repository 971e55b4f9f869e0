"""Credentials resolution order: option, $KUBECONFIG, in-cluster service account, ~/.kube/config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config.errors import ConfigError
from providers.kubernetes.credentials import resolve_credentials


def kubeconfig(path: Path, server: str) -> str:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
    }))
    return str(path)


@pytest.fixture
def places(tmp_path: Path) -> dict[str, object]:
    """Every source present at once, each naming a different server."""
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("in-cluster-token")
    (account / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    return {
        "option": kubeconfig(tmp_path / "option.yaml", "http://127.0.0.1:1001"),
        "env": kubeconfig(tmp_path / "env.yaml", "http://127.0.0.1:1002"),
        "home_file": kubeconfig(home / ".kube" / "config", "http://127.0.0.1:1004"),
        "home": home,
        "account": account,
    }


@pytest.mark.parametrize(
    ("use_option", "use_env", "use_cluster", "expected"),
    [
        (True, True, True, "http://127.0.0.1:1001"),
        (False, True, True, "http://127.0.0.1:1002"),
        (False, False, True, "https://127.0.0.3:1003"),
        (False, False, False, "http://127.0.0.1:1004"),
    ],
    ids=["option-wins", "kubeconfig-env-next", "in-cluster-next", "home-config-last"],
)
def test_resolution_order(places: dict[str, object], use_option: bool, use_env: bool,
                          use_cluster: bool, expected: str) -> None:
    """The first available source wins, in controller-runtime's order."""
    environ = {}
    if use_env:
        environ["KUBECONFIG"] = str(places["env"])
    if use_cluster:
        environ |= {"KUBERNETES_SERVICE_HOST": "127.0.0.3", "KUBERNETES_SERVICE_PORT": "1003"}
    found = resolve_credentials(
        str(places["option"]) if use_option else "", environ=environ,
        service_account_dir=places["account"], home=places["home"],  # type: ignore[arg-type]
    )
    assert found.configuration.host == expected


def test_in_cluster_reads_the_service_account_token(places: dict[str, object]) -> None:
    """In-cluster credentials carry the token file's bearer token and the CA file."""
    account = places["account"]
    assert isinstance(account, Path)
    found = resolve_credentials(
        "", environ={"KUBERNETES_SERVICE_HOST": "127.0.0.3", "KUBERNETES_SERVICE_PORT": "1003"},
        service_account_dir=account,
    )
    assert found.configuration.api_key["BearerToken"] == "bearer in-cluster-token"
    assert found.configuration.ssl_ca_cert == str(account / "ca.crt")
    assert "in-cluster" in found.source


@pytest.mark.parametrize(
    ("environ", "expect"),
    [
        ({}, "no Kubernetes credentials: set providers.kubernetes.kubeconfig"),
        ({"KUBERNETES_SERVICE_HOST": "127.0.0.3", "KUBERNETES_SERVICE_PORT": "1"},
         "no Kubernetes credentials: in-cluster service account"),
        ({"KUBECONFIG": "/nonexistent/config"}, "no Kubernetes credentials: kubeconfig"),
    ],
    ids=["nothing-found", "service-account-files-missing", "kubeconfig-unreadable"],
)
def test_missing_credentials_are_a_clear_error(tmp_path: Path, environ: dict[str, str],
                                               expect: str) -> None:
    """Without usable credentials the error says so and names what was tried."""
    with pytest.raises(ConfigError) as caught:
        resolve_credentials("", environ=environ, service_account_dir=tmp_path / "none",
                            home=tmp_path)
    assert str(caught.value).startswith(expect)
