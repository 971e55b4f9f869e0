"""Who may refer to what: hostname intersection, label selectors, route admission, ReferenceGrants.

Pure decisions over ``objects`` values; nothing here reads files or the API.
The rules are the Gateway API's (/work/notes/gatewayapi-spec.md):

* §2.3 hostname intersection of a listener and a route, wildcard ``*.d``
  matching one or more labels in front of ``d`` and never ``d`` itself;
* Kubernetes label selectors (``matchLabels`` AND ``matchExpressions``);
* §2.2 ``allowedRoutes.namespaces`` (Same, All, Selector on Namespace labels);
* §2.11 ReferenceGrants for cross-namespace references;
* §2.1 which route kinds a listener supports.

Hostnames compare case-insensitively and come back lower-cased, so two
spellings of one host never yield two routers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from providers.gatewayapi.objects import LabelSelector, Listener, ObjectSet, RouteKind

# The API server stamps this immutable label on every Namespace (Kubernetes
# 1.22+); selectors such as ``kubernetes.io/metadata.name In [a, b]`` rely on it,
# and in file mode a namespace may have no Namespace object at all.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# Spec §2.1: the kinds each Core protocol carries when ``allowedRoutes.kinds``
# is empty. GRPCRoute is left out because Sluice does not implement it, so a
# listener naming it reports InvalidRouteKinds rather than a kind it cannot serve.
PROTOCOL_KINDS: Mapping[str, tuple[RouteKind, ...]] = {
    "HTTP": (RouteKind("HTTPRoute"),),
    "HTTPS": (RouteKind("HTTPRoute"),),
    "TLS": (RouteKind("TLSRoute"),),
    "TCP": (RouteKind("TCPRoute"),),
    "UDP": (RouteKind("UDPRoute"),),
}


# --- hostnames ------------------------------------------------------------------------


def host_matches(pattern: str, host: str) -> bool:
    """Whether ``host`` (exact or itself a wildcard) lies within ``pattern``.

    ``*.d`` covers ``a.d``, ``a.b.d`` and ``*.a.d`` but not ``d``: the wildcard
    stands for one or more whole labels [GW Listener.hostname].
    """
    pattern, host = pattern.lower(), host.lower()
    if pattern == host:
        return True
    if not pattern.startswith("*."):
        return False
    suffix = pattern[1:]  # ".d"
    return host.endswith(suffix) and len(host) > len(suffix)


def _intersect_one(listener: str, route: str) -> str | None:
    if host_matches(listener, route):
        return route  # equal, or the route is the narrower of the two
    if host_matches(route, listener):
        return listener
    return None


def hostname_intersection(listener: str, route: Sequence[str]) -> tuple[str, ...] | None:
    """The hostnames a route serves on a listener (spec §2.3), or None when they are disjoint.

    ``listener`` is ``""`` for a listener without hostname; ``route`` is empty
    for a route without hostnames. The result is ``()`` for "every host"
    (neither side narrows), otherwise the intersections in route order without
    repeats. None means the route does not attach to this listener
    (``NoMatchingListenerHostname``, spec §2.2 step 5).
    """
    listener, hosts = listener.lower(), [host.lower() for host in route]
    if not listener:
        return _unique(hosts)
    if not hosts:
        return (listener,)
    found = _unique(
        hit for hit in (_intersect_one(listener, host) for host in hosts) if hit is not None
    )
    return found or None


def _unique(hosts: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(hosts))


# --- label selectors and namespaces ---------------------------------------------------


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes ``metav1.LabelSelector`` semantics: every term must hold.

    An empty selector matches everything. ``In`` needs the key present with one
    of the values; ``NotIn`` holds when the key is absent or its value is not
    listed; ``Exists`` / ``DoesNotExist`` test the key only. An operator the
    API server would have rejected matches nothing, so a bad selector admits no
    namespace instead of all of them.
    """
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for key, operator, values in selector.match_expressions:
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            ok = False
        if not ok:
            return False
    return True


def namespace_labels(objects: ObjectSet, namespace: str) -> Mapping[str, str]:
    """The labels of a namespace, with the name label the API server always sets."""
    found = objects.namespaces.get(namespace)
    labels = dict(found.meta.labels) if found is not None else {}
    labels[NAMESPACE_NAME_LABEL] = namespace
    return labels


def namespace_allowed(
    listener: Listener, gateway_ns: str, route_ns: str, objects: ObjectSet
) -> bool:
    """Whether ``allowedRoutes.namespaces`` of a listener admits routes from ``route_ns`` (§2.2).

    ``Selector`` without a selector admits nothing, as Kubernetes reads a nil
    selector (``labels.Nothing()``); parse rejects that combination anyway.
    """
    origin = listener.namespaces_from
    if origin == "All":
        return True
    if origin == "Same":
        return route_ns == gateway_ns
    if origin == "Selector" and listener.namespace_selector is not None:
        return selector_matches(listener.namespace_selector, namespace_labels(objects, route_ns))
    return False


# --- ReferenceGrant ---------------------------------------------------------------------


def reference_permitted(
    objects: ObjectSet,
    *,
    from_group: str,
    from_kind: str,
    from_namespace: str,
    to_group: str,
    to_kind: str,
    to_namespace: str,
    to_name: str,
) -> bool:
    """Whether a reference is allowed (spec §2.11).

    Same-namespace references always are. A cross-namespace one needs a
    ReferenceGrant in the *target* namespace with a ``from`` entry naming the
    referrer's group, kind and namespace and, in the same grant, a ``to`` entry
    naming the target's group and kind, with no name or the target's name.
    The core group is ``""``. Route-to-Gateway parentRefs are not governed by
    grants (``allowedRoutes`` is); callers do not ask for those.
    """
    if from_namespace == to_namespace:
        return True
    for (grant_ns, _), grant in objects.grants.items():
        if grant_ns != to_namespace:
            continue
        if not any(
            entry.group == from_group
            and entry.kind == from_kind
            and entry.namespace == from_namespace
            for entry in grant.from_
        ):
            continue
        if any(
            entry.group == to_group and entry.kind == to_kind and entry.name in ("", to_name)
            for entry in grant.to
        ):
            return True
    return False


# --- route kinds ------------------------------------------------------------------------


def listener_kinds(listener: Listener) -> tuple[tuple[RouteKind, ...], tuple[RouteKind, ...]]:
    """(supported kinds for ``status.supportedKinds``, invalid kinds) of a listener (§2.1).

    With ``allowedRoutes.kinds`` empty, the protocol's kinds are supported and
    none is invalid. Otherwise each listed kind is supported if the protocol
    carries it and invalid if not (``ResolvedRefs=False InvalidRouteKinds``);
    both lists keep the written order without repeats. An unsupported protocol
    supports nothing (``supportedKinds: []``), so every listed kind is invalid.
    """
    carried = PROTOCOL_KINDS.get(listener.protocol, ())
    if not listener.kinds:
        return carried, ()
    supported: dict[RouteKind, None] = {}
    invalid: dict[RouteKind, None] = {}
    for kind in listener.kinds:
        (supported if kind in carried else invalid).setdefault(kind, None)
    return tuple(supported), tuple(invalid)
