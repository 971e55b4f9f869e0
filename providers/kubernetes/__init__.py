"""Sluice's Kubernetes provider: Gateway API objects from a cluster, status written back.

``provider.KubernetesProvider`` is the entry point; the other modules each own
one job: ``credentials`` (finding the cluster), ``resources`` (which kinds in
which versions, discovered, and the RBAC they need), ``watcher`` (list+watch
threads), ``watches`` (the running watchers, following discovery), ``cache``
(the raw objects), ``snapshot`` (objects -> configuration and status),
``status`` (status merged and patched), ``lease`` (who writes status).
"""
