"""Where the Kubernetes API is and how to authenticate: credentials resolved like the tools do.

Order (controller-runtime's ``GetConfig``, which kubectl-style tools share):

1. ``providers.kubernetes.kubeconfig`` when set: the operator named a file, so
   it wins even inside a pod;
2. the ``KUBECONFIG`` environment variable (a ``:``-separated list, merged as
   kubectl merges it);
3. the in-cluster service account (``KUBERNETES_SERVICE_HOST``/``_PORT`` and the
   token and CA files of the pod's service account);
4. ``~/.kube/config``.

The environment is read on every call, not at import time (the client's own
``KUBE_CONFIG_DEFAULT_LOCATION`` is frozen when it is imported), so tests and
restarts see the current value. Every failure is a ``ConfigError`` starting
"no Kubernetes credentials: " that names what was tried.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.config import incluster_config as _incluster_config
from kubernetes.config import kube_config as _kube_config
from kubernetes.config.config_exception import ConfigException

from gateway.config.errors import ConfigError

# The client is untyped; these names keep ``Any`` out of the signatures below.
incluster_config: Any = _incluster_config
kube_config: Any = _kube_config

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A client configuration and a phrase saying where it came from (for the log)."""

    configuration: client.Configuration
    source: str


def resolve_credentials(
    kubeconfig: str = "",
    *,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    home: Path | None = None,
) -> Credentials:
    """The first usable credentials in the order of the module docstring."""
    env = os.environ if environ is None else environ
    if kubeconfig:
        return _from_kubeconfig(kubeconfig, "providers.kubernetes.kubeconfig")
    if env.get("KUBECONFIG"):
        return _from_kubeconfig(env["KUBECONFIG"], "$KUBECONFIG")
    tried = []
    if env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT"):
        configuration = client.Configuration()
        loader = incluster_config.InClusterConfigLoader(
            token_filename=str(service_account_dir / "token"),
            cert_filename=str(service_account_dir / "ca.crt"),
            environ=env,
        )
        try:
            loader.load_and_set(configuration)
        except ConfigException as exc:
            raise ConfigError(
                f"no Kubernetes credentials: in-cluster service account ({service_account_dir}): "
                f"{exc}"
            ) from None
        return Credentials(configuration, f"in-cluster service account ({configuration.host})")
    tried.append("in-cluster service account (KUBERNETES_SERVICE_HOST is not set)")
    default = (home if home is not None else Path.home()) / ".kube" / "config"
    if default.is_file():
        return _from_kubeconfig(str(default), str(default))
    tried.append(f"{default} (no such file)")
    raise ConfigError(
        "no Kubernetes credentials: set providers.kubernetes.kubeconfig or $KUBECONFIG; tried "
        + ", ".join(tried)
    )


def _from_kubeconfig(path: str, named_by: str) -> Credentials:
    configuration = client.Configuration()
    try:
        kube_config.load_kube_config(
            config_file=path, client_configuration=configuration, persist_config=False
        )
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"no Kubernetes credentials: kubeconfig {path} ({named_by}): {exc}") \
            from None
    return Credentials(configuration, f"kubeconfig {path} ({named_by}, {configuration.host})")
