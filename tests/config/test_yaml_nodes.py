"""Tests for gateway.config.yaml_nodes: YAML and plain data into located trees."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError, Origin
from gateway.config.loader import parse_dynamic
from gateway.config.yaml_nodes import (
    COMMAND_LINE,
    Map,
    Scalar,
    Seq,
    compose,
    from_python,
    scalar_from_text,
    to_raw,
)


def error_of(text: str, file: str = "d.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_dynamic(text, file)
    return info.value


ROUTER = """\
http:
  routers:
    api:
      rule: Host(`a`)
      service: s
"""


@pytest.mark.parametrize(
    "text", ["", "\n\n", "# only a comment\n", "---\n", "---\n...\n"], ids=repr
)
def test_empty_file_is_empty_config(text: str) -> None:
    """A file with no content is an empty DynamicConfig."""
    assert parse_dynamic(text, "d.yaml") == DynamicConfig()


def test_yaml_syntax_error_names_file_line_and_problem() -> None:
    """A syntax error carries the file, 1-based line and PyYAML's problem text."""
    err = error_of("http:\n  routers:\n    api: [a\n    b: c\n")
    assert err.origin is not None and err.origin.file == "d.yaml"
    assert err.origin.line == 4
    assert "invalid YAML" in err.message and "expected ','" in err.message


def test_several_documents_are_refused() -> None:
    """A second YAML document is an error pointing at its line."""
    err = error_of("http: {}\n---\ntls: {}\n")
    assert err.origin == Origin("d.yaml", 3)
    assert "several YAML documents" in err.message


def test_trailing_empty_document_is_ignored() -> None:
    """A trailing '---' does not count as a second document."""
    assert parse_dynamic(ROUTER + "---\n", "d.yaml").http.routers["api"].service == "s"


def test_top_level_must_be_a_mapping() -> None:
    """A file whose top level is a list is an error."""
    err = error_of("- a\n- b\n")
    assert "expected a mapping, got a list" in str(err)


def test_duplicate_keys_are_errors() -> None:
    """The same key twice in one mapping is an error naming both lines."""
    err = error_of(ROUTER + "      service: t\n")
    assert err.origin == Origin("d.yaml", 6)
    assert 'duplicate key "service" (first at line 5)' in err.message


def test_unsupported_tags_are_errors() -> None:
    """Python object tags and custom tags are never constructed."""
    err = error_of("http: !!python/object:os.system {}\n")
    assert "unsupported YAML tag" in err.message


def test_recursive_alias_is_an_error() -> None:
    """An alias pointing into its own anchor is reported, not expanded forever."""
    err = error_of("tcp: &a\n  x: *a\n")
    assert "recursive YAML alias" in err.message


def test_merge_keys_expand_with_explicit_keys_winning() -> None:
    """YAML merge keys work, and keys written beside them override merged ones."""
    # The anchor lives in the raw tcp section, which takes any keys.
    config = parse_dynamic(
        "tcp:\n  base: &base\n    rule: Host(`a`)\n    service: s\n"
        "http:\n  routers:\n    api:\n      <<: *base\n      service: t\n",
        "d.yaml",
    )
    router = config.http.routers["api"]
    assert (router.rule, router.service) == ("Host(`a`)", "t")


def test_compose_locates_every_node() -> None:
    """Each key and value carries its file and 1-based line."""
    tree = compose("a:\n  - x\n  - 2\nb: true\n", "f.yaml")
    assert isinstance(tree, Map)
    a, b = tree.entries
    assert (a.key, a.origin, b.origin) == ("a", Origin("f.yaml", 1), Origin("f.yaml", 4))
    assert isinstance(a.value, Seq)
    assert [item.origin for item in a.value.items] == [Origin("f.yaml", 2), Origin("f.yaml", 3)]
    assert b.value == Scalar(True, "true", Origin("f.yaml", 4))


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("0x10", 16), ("1.5", 1.5), ("true", True), ("", None), (":80", ":80")],
    ids=repr,
)
def test_scalar_from_text_types_like_yaml(text: str, value: object) -> None:
    """A bare string is typed the way YAML types a plain scalar."""
    scalar = scalar_from_text(text, COMMAND_LINE, flag=True)
    assert (scalar.value, scalar.text, scalar.flag) == (value, text, True)


def test_plain_data_round_trips_frozen() -> None:
    """Plain data becomes a tree and back into read-only maps and tuples."""
    raw = to_raw(from_python({"a": [1, {"b": None}], "c": "x"}, None))
    assert isinstance(raw, MappingProxyType)
    assert raw == {"a": (1, {"b": None}), "c": "x"}
    assert isinstance(raw["a"][1], MappingProxyType)


def test_plain_data_of_other_types_is_refused() -> None:
    """Objects that are not plain data are an error at the given origin."""
    with pytest.raises(ConfigError) as info:
        from_python({"a": object()}, Origin("x.yaml", 2))
    assert info.value.origin == Origin("x.yaml", 2)
    assert info.value.message == "unsupported value of type object"
