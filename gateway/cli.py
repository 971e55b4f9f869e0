"""The ``gateway`` command: run, check, whoami, version.

Static configuration comes from ``--config FILE`` and from Traefik-style
dotted flags that override it (``--entryPoints.web.address=:8080``,
``--log.level=DEBUG``); with neither, ``gateway run`` serves the embedded
quickstart (a demo backend behind one router, and the API).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.config.errors import ConfigError
from gateway.config.loader import load_dynamic_paths, load_static, parse_static
from gateway.config.static import StaticConfig

QUICKSTART = Path(__file__).with_name("quickstart")

EPILOG = """\
examples:
  gateway run                                  serve the embedded quickstart
  gateway run --config examples/quickstart/sluice.yml
  gateway run --config sluice.yml --entryPoints.web.address=:8081 --log.level=DEBUG
  gateway check --config sluice.yml            validate, like nginx -t
  gateway whoami --address 127.0.0.1:8081      the demo backend
"""


def _split_overrides(extra: Sequence[str]) -> list[tuple[str, str]]:
    """``--a.b.c=value`` / ``--a.b.c value`` / ``--flag`` → (key path, value) pairs."""
    out: list[tuple[str, str]] = []
    items = list(extra)
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or len(item) < 3:
            raise SystemExit(f"gateway: unexpected argument {item!r}")
        key, sep, value = item[2:].partition("=")
        if not sep:
            if i + 1 < len(items) and not items[i + 1].startswith("--"):
                value = items[i + 1]
                i += 1
            else:
                value = "true"
        out.append((key, value))
        i += 1
    return out


def load_static_config(
    config: str | None, overrides: list[tuple[str, str]], *, quickstart: bool = False
) -> tuple[StaticConfig, Path]:
    """The static configuration and the directory relative paths resolve against."""
    if config:
        return load_static(config, overrides), Path(config).resolve().parent
    if quickstart or not overrides:
        path = QUICKSTART / "sluice.yml"
        return load_static(path, overrides), QUICKSTART
    return parse_static("", "<command line>", overrides), Path.cwd()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Sluice: a Traefik-style HTTP gateway over an eBPF L3/L4 layer.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="serve traffic (default: the embedded quickstart)",
        description="Serve traffic. Extra --dotted.keys=value flags override "
        "the static configuration, as in Traefik.",
    )
    run.add_argument("--config", "-c", help="static configuration file (YAML)")
    run.add_argument(
        "--quickstart",
        action="store_true",
        help="serve the embedded quickstart with its demo backend",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the listeners (SO_REUSEPORT)",
    )
    check = sub.add_parser("check", help="validate static and dynamic configuration and exit")
    check.add_argument("--config", "-c", required=True, help="static configuration file (YAML)")
    who = sub.add_parser("whoami", help="run the demo backend")
    who.add_argument("--address", default="127.0.0.1:8081", help="host:port to listen on")
    who.add_argument("--name", default="", help="name reported in each answer")
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "version":
        print(f"sluice {__version__}")
        return 0
    if args.command == "whoami":
        from gateway.whoami import run_whoami

        run_whoami(args.address, args.name)
        return 0
    overrides = _split_overrides(extra)
    if args.command == "check":
        return check(args.config, overrides)
    try:
        static, base_dir = load_static_config(args.config, overrides, quickstart=args.quickstart)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    from gateway.process import run_process

    quick = args.quickstart or (not args.config and not overrides)
    return run_process(static, base_dir=base_dir, workers=args.workers, quickstart=quick)


def check(config: str, overrides: list[tuple[str, str]]) -> int:
    """``gateway check``: validate without serving; exit 1 on the first error."""
    from gateway.config.merge import merge
    from gateway.config.validate import validate

    try:
        static = load_static(config, overrides)
        base = Path(config).resolve().parent
        errors: list[ConfigError] = []
        fp = static.providers.file
        if fp is not None:
            paths = _file_provider_paths(fp.filename, fp.directory, base)
            merged = merge({"file": load_dynamic_paths(paths)})
            errors = validate(merged, entry_points=static.entry_points.keys())
            if not errors:
                from gateway.runtime import Compiler
                from middleware.registry import load_registry

                Compiler(static, load_registry()).compile(merged)
    except ConfigError as exc:
        errors = [exc]
    for error in errors:
        print(f"gateway: {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"gateway: configuration {config} is valid")
    return 0


def _file_provider_paths(filename: str, directory: str, base: Path) -> list[Path]:
    if filename:
        return [(base / filename).resolve()]
    folder = (base / directory).resolve()
    return sorted(
        p for p in folder.iterdir() if p.suffix in (".yml", ".yaml") and not p.name.startswith(".")
    )


def setup_logging(level: str, file_path: str = "") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=file_path or None,
    )


if __name__ == "__main__":
    sys.exit(main())
