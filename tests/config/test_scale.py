"""Scale guard for the reload path: 10,000 Host routers from file to router table.

The acceptance target is a 10,000-router file served within 1 s of landing;
the bound here is looser, for noisy CI machines, but still fails if a stage
turns quadratic or the LibYAML fast path stops being used. The fast path
must also build exactly what the pure-Python path builds, errors included.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.config import yaml_nodes
from gateway.config.errors import ConfigError
from gateway.config.loader import load_dynamic_paths, parse_static
from gateway.config.merge import merge
from gateway.config.validate import validate
from gateway.runtime import Compiler
from middleware.contract import Headers, Request
from middleware.registry import load_registry

ROUTERS = 10_000
BOUND_S = 2.0


def dynamic_yaml(hosts: list[str]) -> str:
    """One router per host, as bench/scale.py writes them, all to one service."""
    lines = ["http:", "  routers:"]
    for i, host in enumerate(hosts):
        lines += [
            f"    r{i:05d}:",
            f'      rule: "Host(`{host}`)"',
            "      service: backend",
            "      entryPoints: [web]",
        ]
    lines += [
        "  services:",
        "    backend:",
        "      loadBalancer:",
        "        servers:",
        '          - url: "http://127.0.0.1:9"',
        "",
    ]
    return "\n".join(lines)


def request(host: str) -> Request:
    return Request(
        method="GET", raw_path="/", query="", headers=Headers(), host=host, client_ip="127.0.0.1"
    )


def test_ten_thousand_routers_load_and_compile_quickly(tmp_path: Path) -> None:
    """Load, merge, validate and compile of 10,000 routers finish in 2 s and route the last."""
    # Hosts no other test uses, so no cached rule parse helps.
    hosts = [f"h{i:05d}.scale-guard.test" for i in range(1, ROUTERS + 1)]
    path = tmp_path / "dynamic.yaml"
    path.write_text(dynamic_yaml(hosts), encoding="utf-8")
    static = parse_static('entryPoints:\n  web:\n    address: "127.0.0.1:0"\n', "static.yaml")
    compiler = Compiler(static, load_registry(plugins=False))

    started = time.perf_counter()
    merged = merge({"file": load_dynamic_paths([path])})
    errors = validate(merged, entry_points=static.entry_points.keys())
    compiled = compiler.compile(merged)
    elapsed = time.perf_counter() - started

    assert errors == []
    assert elapsed < BOUND_S, f"{ROUTERS} routers took {elapsed:.2f}s (bound {BOUND_S}s)"
    table = compiled.states["web"].table
    assert len(table.routes) == ROUTERS
    last = table.match(request(hosts[-1]))
    assert last is not None and last.name == f"r{ROUTERS - 1:05d}@file"
    assert merged.origins[f"http.routers.r{ROUTERS - 1:05d}@file.rule"].line == 4 * ROUTERS


FAST_PATH_CASES = {
    "anchor-and-alias": "a: &x {k: 1}\nb: *x\n",
    "merge-key": "a: &x {k: 1, j: 2}\nb: {<<: *x, k: 3}\n",
    "merge-list": "a: &x {k: 1}\nb: &y {k: 2, j: 2}\nc: {<<: [*x, *y], i: 3}\n",
    "merge-not-a-map": "a: &x 1\nb: {<<: *x}\n",
    "typed-scalars": "a: 0x10\nb: 1.5\nc: yes\nd: ~\ne: ''\nf: 2001-12-14\ng: !!str 3\n",
    "quoted-and-block": "a: '<<'\nb: \"q\"\nc: |\n  x\n  y\nd: >-\n  x\n  y\n",
    "duplicate-key": "a: {b: 1, b: 2}\n",
    "duplicate-then-syntax-error": "a: {b: 1, b: 2}\nc: [\n",
    "duplicate-then-undefined-alias": "a: {b: 1, b: 2}\nc: *u\n",
    "recursive-alias": "tcp: &a\n  x: *a\n",
    "unsupported-tag": "a: !!python/object:os.system {}\n",
    "undefined-alias": "a: *y\n",
    "duplicate-anchor": "a: &x 1\nb: &x 2\n",
    "complex-key": "? [a]\n: 1\n",
    "anchored-key": "&k a: 1\n",
    "several-documents": "a: 1\n---\nb: 2\n",
    "trailing-empty-document": "a: 1\n---\n",
    "empty": "# nothing\n",
    "syntax-error": "http:\n  routers:\n    api: [a\n    b: c\n",
    "top-level-list": "- a\n- b\n",
    "non-specific-tag": "a: ! 3\nb: !\n",
    "byte-order-mark-inside": "a: x\ufeffy\n",
    "tag-its-text-does-not-fit": "tcp: !!int abc\n",
    "empty-int": "tcp: !!int\n",
}


@pytest.mark.parametrize("text", FAST_PATH_CASES.values(), ids=FAST_PATH_CASES.keys())
def test_libyaml_fast_path_matches_pure_python(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Composing with LibYAML gives the same tree, or the same error, as pure-Python PyYAML."""

    def outcome() -> object:
        try:
            return yaml_nodes.compose(text, "d.yaml")
        except ConfigError as exc:
            return ("error", str(exc))

    fast = outcome()
    monkeypatch.setattr(yaml_nodes, "_CParser", None)  # PyYAML built without LibYAML
    assert fast == outcome()
