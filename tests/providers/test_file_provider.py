"""Tests for providers.file.provider: snapshots from YAML files, watched for changes."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path

import pytest

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError
from gateway.config.static import FileProviderConfig
from providers.base import Provider
from providers.file.provider import FileProvider, is_config_name

Snapshots = AsyncGenerator[DynamicConfig | ConfigError, None]


def router(name: str, host: str = "a.example") -> str:
    return f"http:\n  routers:\n    {name}:\n      rule: Host(`{host}`)\n      service: s\n"


def write(path: Path, text: str) -> None:
    path.write_text(text)


def replace_atomically(path: Path, text: str) -> None:
    """Write a temp file beside ``path`` and rename it over, as editors do."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


async def next_snapshot(snapshots: Snapshots) -> DynamicConfig | ConfigError:
    return await asyncio.wait_for(anext(snapshots), timeout=5)


async def next_config(snapshots: Snapshots) -> DynamicConfig:
    snapshot = await next_snapshot(snapshots)
    assert isinstance(snapshot, DynamicConfig), snapshot
    return snapshot


def provider(
    base: Path,
    *,
    filename: str = "",
    directory: str = "",
    watch: bool = True,
    poll_interval: float = 0.1,
    use_inotify: bool = True,
) -> FileProvider:
    config = FileProviderConfig(filename=filename, directory=directory, watch=watch)
    return FileProvider(config, base_dir=base, poll_interval=poll_interval, use_inotify=use_inotify)


def test_file_provider_is_a_provider(tmp_path: Path) -> None:
    """FileProvider satisfies the Provider protocol and is named "file"."""
    p: Provider = provider(tmp_path, filename="d.yaml")
    assert p.name == "file"


@pytest.mark.parametrize(
    ("filename", "directory"), [("", ""), ("a.yaml", "conf")], ids=["neither", "both"]
)
def test_needs_exactly_one_source(tmp_path: Path, filename: str, directory: str) -> None:
    """Exactly one of filename and directory must be configured."""
    with pytest.raises(ConfigError) as info:
        provider(tmp_path, filename=filename, directory=directory)
    assert info.value.path == "providers.file"


@pytest.mark.parametrize(
    ("name", "counts"),
    [
        ("a.yaml", True),
        ("b.yml", True),
        ("C.YAML", True),
        (".hidden.yaml", False),
        (".#a.yaml", False),
        ("#a.yaml#", False),
        ("a.yaml~", False),
        (".a.yaml.swp", False),
        ("a.json", False),
        ("4913", False),
    ],
    ids=str,
)
def test_config_names(name: str, counts: bool) -> None:
    """Only visible *.yml/*.yaml files count; editor leftovers do not."""
    assert is_config_name(name) is counts


async def test_without_watch_yields_once(tmp_path: Path) -> None:
    """With watch off, the provider yields the initial snapshot and stops."""
    write(tmp_path / "d.yaml", router("api"))
    async with aclosing(provider(tmp_path, filename="d.yaml", watch=False).snapshots()) as it:
        config = await next_config(it)
        assert set(config.http.routers) == {"api"}
        with pytest.raises(StopAsyncIteration):
            await next_snapshot(it)


async def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    """A relative filename is read from the static configuration's directory."""
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "d.yaml", router("api"))
    async with aclosing(provider(tmp_path, filename="conf/d.yaml", watch=False).snapshots()) as it:
        config = await next_config(it)
    assert config.origins["http.routers.api"].file == str(tmp_path / "conf" / "d.yaml")


async def test_missing_file_yields_an_error(tmp_path: Path) -> None:
    """A file that cannot be read yields a ConfigError naming it."""
    async with aclosing(provider(tmp_path, filename="nope.yaml", watch=False).snapshots()) as it:
        snapshot = await next_snapshot(it)
    assert isinstance(snapshot, ConfigError)
    assert snapshot.origin is not None and snapshot.origin.file == str(tmp_path / "nope.yaml")


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "polling"])
async def test_file_changes_yield_new_snapshots(tmp_path: Path, use_inotify: bool) -> None:
    """Writing the file, or renaming a new one over it, yields a fresh snapshot."""
    path = tmp_path / "d.yaml"
    write(path, router("one"))
    p = provider(tmp_path, filename="d.yaml", use_inotify=use_inotify)
    async with aclosing(p.snapshots()) as it:
        assert set((await next_config(it)).http.routers) == {"one"}
        write(path, router("two"))
        assert set((await next_config(it)).http.routers) == {"two"}
        replace_atomically(path, router("three"))
        assert set((await next_config(it)).http.routers) == {"three"}


async def test_invalid_then_fixed(tmp_path: Path) -> None:
    """A broken edit yields a ConfigError; fixing it yields a config again."""
    path = tmp_path / "d.yaml"
    write(path, router("one"))
    async with aclosing(provider(tmp_path, filename="d.yaml").snapshots()) as it:
        await next_config(it)
        write(path, "http:\n  routers: [\n")
        error = await next_snapshot(it)
        assert isinstance(error, ConfigError)
        assert error.origin is not None and error.origin.file == str(path)
        write(path, router("one"))
        assert set((await next_config(it)).http.routers) == {"one"}


async def test_equal_snapshots_are_not_repeated(tmp_path: Path) -> None:
    """Rewriting the same content, or only moving lines, yields nothing new."""
    path = tmp_path / "d.yaml"
    write(path, router("one"))
    async with aclosing(provider(tmp_path, filename="d.yaml").snapshots()) as it:
        await next_config(it)
        write(path, router("one"))
        replace_atomically(path, "# moved down\n\n" + router("one"))
        write(path, router("two"))
        assert set((await next_config(it)).http.routers) == {"two"}


async def test_burst_of_writes_gives_the_final_state(tmp_path: Path) -> None:
    """Several quick saves coalesce into a snapshot of the last one."""
    path = tmp_path / "d.yaml"
    write(path, router("zero"))
    async with aclosing(provider(tmp_path, filename="d.yaml").snapshots()) as it:
        await next_config(it)
        for name in ("one", "two", "three"):
            replace_atomically(path, router(name))
        assert set((await next_config(it)).http.routers) == {"three"}


async def test_other_files_beside_the_file_are_ignored(tmp_path: Path) -> None:
    """In filename mode, other files in the same directory never load."""
    write(tmp_path / "d.yaml", router("one"))
    async with aclosing(provider(tmp_path, filename="d.yaml").snapshots()) as it:
        await next_config(it)
        write(tmp_path / "other.yaml", router("other"))
        write(tmp_path / "d.yaml", router("two"))
        assert set((await next_config(it)).http.routers) == {"two"}


async def test_file_created_later(tmp_path: Path) -> None:
    """A file missing at start is an error, and loads once it appears."""
    path = tmp_path / "d.yaml"
    async with aclosing(provider(tmp_path, filename="d.yaml").snapshots()) as it:
        assert isinstance(await next_snapshot(it), ConfigError)
        replace_atomically(path, router("one"))
        assert set((await next_config(it)).http.routers) == {"one"}


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "polling"])
async def test_directory_add_remove_rename(tmp_path: Path, use_inotify: bool) -> None:
    """Files added, renamed into place and removed all change the snapshot."""
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf / "a.yaml", router("a"))
    p = provider(tmp_path, directory="conf", use_inotify=use_inotify)
    async with aclosing(p.snapshots()) as it:
        assert set((await next_config(it)).http.routers) == {"a"}
        write(conf / "b.yml", router("b", "b.example"))
        assert set((await next_config(it)).http.routers) == {"a", "b"}
        write(tmp_path / "c.yaml", router("c", "c.example"))
        os.rename(tmp_path / "c.yaml", conf / "c.yaml")
        assert set((await next_config(it)).http.routers) == {"a", "b", "c"}
        (conf / "a.yaml").unlink()
        assert set((await next_config(it)).http.routers) == {"b", "c"}
        os.rename(conf / "b.yml", conf / "b.yml.disabled")
        assert set((await next_config(it)).http.routers) == {"c"}


async def test_directory_ignores_hidden_and_temp_files(tmp_path: Path) -> None:
    """Hidden files and editor leftovers in the directory are never loaded."""
    write(tmp_path / "a.yaml", router("a"))
    async with aclosing(provider(tmp_path, directory=".").snapshots()) as it:
        await next_config(it)
        write(tmp_path / ".hidden.yaml", router("hidden", "h.example"))
        write(tmp_path / "a.yaml~", router("backup", "b.example"))
        write(tmp_path / ".a.yaml.swp", "not yaml: [")
        write(tmp_path / "b.yaml", router("b", "b.example"))
        assert set((await next_config(it)).http.routers) == {"a", "b"}


async def test_directory_duplicate_names_are_an_error(tmp_path: Path) -> None:
    """The same router in two files of the directory yields a ConfigError."""
    write(tmp_path / "a.yaml", router("api"))
    async with aclosing(provider(tmp_path, directory=".").snapshots()) as it:
        await next_config(it)
        write(tmp_path / "b.yaml", router("api"))
        error = await next_snapshot(it)
        assert isinstance(error, ConfigError)
        assert error.path == "http.routers.api"


async def test_directory_removed_and_recreated(tmp_path: Path) -> None:
    """Losing the watched directory yields an error; recreating it recovers."""
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf / "a.yaml", router("a"))
    p = provider(tmp_path, directory="conf", poll_interval=0.02)
    async with aclosing(p.snapshots()) as it:
        await next_config(it)
        shutil.rmtree(conf)
        error = await next_snapshot(it)
        assert isinstance(error, ConfigError)
        assert "cannot read directory" in error.message
        staging = tmp_path / "staging"
        staging.mkdir()
        write(staging / "b.yaml", router("b"))
        os.rename(staging, conf)
        assert set((await next_config(it)).http.routers) == {"b"}
        write(conf / "c.yaml", router("c", "c.example"))
        assert set((await next_config(it)).http.routers) == {"b", "c"}


async def test_symlink_swap_is_seen(tmp_path: Path) -> None:
    """A ConfigMap-style swap of a symlinked data directory is picked up."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    write(tmp_path / "v1" / "d.yaml", router("one"))
    write(tmp_path / "v2" / "d.yaml", router("two"))
    os.symlink(tmp_path / "v1", conf / "..data")
    os.symlink("..data/d.yaml", conf / "d.yaml")
    async with aclosing(provider(conf, filename="d.yaml").snapshots()) as it:
        assert set((await next_config(it)).http.routers) == {"one"}
        os.symlink(tmp_path / "v2", conf / "..data_tmp")
        os.replace(conf / "..data_tmp", conf / "..data")
        assert set((await next_config(it)).http.routers) == {"two"}
