"""Status merging rules (reference §3): conditions keyed by type, times, foreign entries kept."""

from __future__ import annotations

from typing import Any

import pytest

from providers.kubernetes.status import merge_conditions, merge_status

OLD, NOW = "2000-01-01T00:00:00Z", "2030-01-01T00:00:00Z"


def cond(type_: str, status: str, time: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "status": status, "reason": type_,
                           "observedGeneration": 1}
    if time is not None:
        out["lastTransitionTime"] = time
    return out


@pytest.mark.parametrize(
    ("held", "wanted", "expected"),
    [
        ([cond("Accepted", "True", OLD)], [cond("Accepted", "True")],
         [cond("Accepted", "True", OLD)]),
        ([cond("Accepted", "True", OLD)], [cond("Accepted", "False")],
         [cond("Accepted", "False", NOW)]),
        ([], [cond("Accepted", "True")], [cond("Accepted", "True", NOW)]),
        ([cond("Foreign", "True", OLD), cond("Accepted", "True", OLD)],
         [cond("Accepted", "True"), cond("ResolvedRefs", "True")],
         [cond("Foreign", "True", OLD), cond("Accepted", "True", OLD),
          cond("ResolvedRefs", "True", NOW)]),
    ],
    ids=["unchanged-keeps-time", "flip-sets-time", "new-condition", "foreign-kept-in-place"],
)
def test_merge_conditions(held: list[dict[str, Any]], wanted: list[dict[str, Any]],
                          expected: list[dict[str, Any]]) -> None:
    """lastTransitionTime changes only with status; foreign types stay where they were."""
    assert merge_conditions(held, wanted, NOW) == expected


def test_route_parents_of_other_controllers_survive() -> None:
    """Only our parents entries are replaced; a route we no longer serve loses only ours."""
    foreign = {"parentRef": {"name": "x"}, "controllerName": "example.com/x", "conditions": []}
    ours = {"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                          "namespace": "default", "name": "edge"},
            "controllerName": "sluice.dev/gateway-controller",
            "conditions": [cond("Accepted", "True", OLD)]}
    held = {"parents": [foreign, ours]}
    assert merge_status("HTTPRoute", held, {"parents": [ours]}, NOW) == held
    assert merge_status("HTTPRoute", held, None, NOW) == {"parents": [foreign]}


def test_gateway_listener_conditions_merge_by_name() -> None:
    """Listener conditions keep their times by listener name; dropped addresses go."""
    held = {"conditions": [], "addresses": [{"value": "10.0.0.1"}],
            "listeners": [{"name": "http", "conditions": [cond("Accepted", "True", OLD)]}]}
    wanted = {"conditions": [cond("Accepted", "True")],
              "listeners": [{"name": "http", "attachedRoutes": 0,
                             "conditions": [cond("Accepted", "True")]}]}
    merged = merge_status("Gateway", held, wanted, NOW)
    assert merged["listeners"][0]["conditions"] == [cond("Accepted", "True", OLD)]
    assert merged["conditions"] == [cond("Accepted", "True", NOW)]
    assert "addresses" not in merged
