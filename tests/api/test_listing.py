"""Tests for gateway.api.listing: Traefik's filters, sort orders and pages."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.listing import Kind, QueryError, select

ROUTERS: list[dict[str, Any]] = [
    {"name": "b@file", "rule": "Host(`b.test`)", "priority": 5, "status": "enabled",
     "service": "svc", "middlewares": ["auth@file"], "entryPoints": ["web"], "provider": "file"},
    {"name": "a@kubernetes", "rule": "PathPrefix(`/x`)", "priority": 9, "status": "warning",
     "service": "svc@file", "middlewares": [], "entryPoints": ["web", "websecure"],
     "provider": "kubernetes"},
    {"name": "c@file", "rule": "Host(`c.test`)", "priority": 5, "status": "disabled",
     "service": "other", "entryPoints": [], "provider": "file"},
]  # fmt: skip

SERVICES: list[dict[str, Any]] = [
    {"name": "one@file", "type": "weighted", "status": "enabled", "provider": "file"},
    {"name": "two@file", "type": "loadbalancer", "status": "enabled", "provider": "file",
     "loadBalancer": {"servers": [{"url": "http://127.0.0.1:1"}, {"url": "http://127.0.0.1:2"}]}},
]  # fmt: skip


def names(kind: Kind, items: list[dict[str, Any]], query: dict[str, str]) -> list[str]:
    return [item["name"] for item in select(kind, items, query).items]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ["a@kubernetes", "b@file", "c@file"]),
        ({"direction": "desc"}, ["c@file", "b@file", "a@kubernetes"]),
        ({"status": "WARNING"}, ["a@kubernetes"]),
        ({"search": "c.TEST"}, ["c@file"]),
        ({"search": "kube"}, ["a@kubernetes"]),
        ({"serviceName": "svc@file"}, ["a@kubernetes", "b@file"]),
        ({"serviceName": "svc@kubernetes"}, ["b@file"]),
        ({"middlewareName": "auth@file"}, ["b@file"]),
        ({"sortBy": "priority"}, ["b@file", "c@file", "a@kubernetes"]),
        ({"sortBy": "entryPoints", "direction": "desc"}, ["a@kubernetes", "b@file", "c@file"]),
        ({"sortBy": "status"}, ["c@file", "b@file", "a@kubernetes"]),
        ({"sortBy": "bogus"}, ["a@kubernetes", "b@file", "c@file"]),
    ],
    ids=[
        "by-name",
        "by-name-desc",
        "status-any-case",
        "search-rule",
        "search-name",
        "service-qualified",
        "service-unqualified-router",
        "middleware",
        "priority-ties-by-name",
        "entrypoint-count-desc",
        "status-sort",
        "unknown-sort-is-name",
    ],
)
def test_routers(query: dict[str, str], expected: list[str]) -> None:
    """Router queries filter and sort as Traefik's API does."""
    assert names("routers", ROUTERS, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"sortBy": "servers", "direction": "desc"}, ["two@file", "one@file"]),
        ({"sortBy": "type"}, ["two@file", "one@file"]),
        ({"search": "rule-text-is-not-searched"}, []),
        ({"serviceName": "ignored-for-services"}, ["one@file", "two@file"]),
    ],
    ids=["server-count", "type", "search-name-only", "router-filters-ignored"],
)
def test_services(query: dict[str, str], expected: list[str]) -> None:
    """Service queries sort by server count and type; router-only filters do not apply."""
    assert names("services", SERVICES, query) == expected


@pytest.mark.parametrize(
    ("query", "expected", "next_page"),
    [
        ({"per_page": "2"}, ["a@kubernetes", "b@file"], 2),
        ({"per_page": "2", "page": "2"}, ["c@file"], 1),
        ({"per_page": "3"}, ["a@kubernetes", "b@file", "c@file"], 1),
    ],
    ids=["first-page", "last-page", "exact-fit"],
)
def test_pages(query: dict[str, str], expected: list[str], next_page: int) -> None:
    """Pages slice the sorted list and name the next page, 1 after the last."""
    page = select("routers", ROUTERS, query)
    assert [item["name"] for item in page.items] == expected
    assert page.next_page == next_page


def test_empty_list_first_page() -> None:
    """An empty list still has a first page."""
    page = select("middlewares", [], {})
    assert page.items == []
    assert page.next_page == 1


@pytest.mark.parametrize(
    "query",
    [{"page": "3", "per_page": "2"}, {"per_page": "-1"}, {"page": "x"}],
    ids=["past-end", "negative", "not-a-number"],
)
def test_bad_queries(query: dict[str, str]) -> None:
    """Out-of-range or malformed page parameters raise QueryError."""
    with pytest.raises(QueryError, match="invalid request"):
        select("routers", ROUTERS, query)
