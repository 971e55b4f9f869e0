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
from gateway.config.errors import ConfigError, Origin
from gateway.config.l4_checks import check_all
from gateway.config.loader import load_static, parse_static
from gateway.config.static import StaticConfig, split_address

QUICKSTART = Path(__file__).with_name("quickstart")

EPILOG = """\
examples:
  gateway run                                  serve the embedded quickstart
  gateway run --config examples/quickstart/sluice.yml
  gateway run --config sluice.yml --entryPoints.web.address=:8081 --log.level=DEBUG
  gateway run --config examples/tcp-udp/sluice.yml     TCP (SNI, PROXY) and UDP routing
  gateway run --config examples/gatewayapi/sluice.yml  Gateway API manifests from files
  gateway check --config sluice.yml            validate, like nginx -t
  gateway whoami --address 127.0.0.1:8081      the demo backend
"""


OVERRIDES_HELP = """\
static configuration overrides (Traefik's key names, dotted):
  --entryPoints.web.address=127.0.0.1:8080       listen address of entry point "web"
  --entryPoints.web.transport.lifeCycle.graceTimeOut=5s
                                                 drain time on SIGTERM
  --api.address=127.0.0.1:9000                   API, dashboard and /metrics
  --providers.file.filename=dynamic.yml          dynamic configuration file
  --log.level=DEBUG
A flag without a value means true (--api.insecure); --key value works too.
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


def address_errors(
    static: StaticConfig, file: str, overrides: Sequence[tuple[str, str]] = ()
) -> list[ConfigError]:
    """Listening addresses that cannot be bound as written, found before serving starts.

    The loader checks types, not address syntax; without this a typo would
    surface as a traceback from ``bind`` after the providers had started.
    """
    flagged = {key.lower() for key, _ in overrides}
    checks = [(f"entryPoints.{n}.address", ep.address) for n, ep in static.entry_points.items()]
    if static.api is not None:
        checks.append(("api.address", static.api.address))
    errors = []
    for path, address in checks:
        host_port, protocol = split_address(address)
        if protocol not in ("tcp", "udp") or (protocol == "udp" and path == "api.address"):
            problem = f'invalid address "{address}": the protocol must be tcp or udp'
        else:
            problem = _address_problem(host_port)
        if problem:
            origin = Origin("<command line>" if path.lower() in flagged else file)
            errors.append(ConfigError(problem, origin=origin, path=path))
    return errors


def _address_problem(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return f'invalid address "{address}": expected [host]:port'
    if int(port) > 65535:
        return f'invalid address "{address}": port {port} is out of range'
    if host.startswith("[") != host.endswith("]"):
        return f'invalid address "{address}": unbalanced brackets'
    return ""


def _source_name(config: str | None, overrides: Sequence[object], quickstart: bool) -> str:
    """What ``load_static_config`` read, for error messages."""
    if config:
        return config
    if quickstart or not overrides:
        return str(QUICKSTART / "sluice.yml")
    return "<command line>"


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of workers, got {text!r}")
    return count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description=(
            "Sluice: a Traefik-style HTTP, TCP and UDP gateway and Gateway API "
            "controller over an eBPF L3/L4 layer."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="serve traffic (default: the embedded quickstart)",
        description="Serve traffic until SIGTERM or SIGINT, then drain. Extra\n"
        "--dotted.keys=value flags override the static configuration, as in Traefik.",
        usage="gateway run [-h] [--config FILE] [--quickstart] [--workers N] "
        "[--dotted.key=value ...]",
        epilog=OVERRIDES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    run.add_argument("--config", "-c", metavar="FILE", help="static configuration file (YAML)")
    run.add_argument(
        "--quickstart",
        action="store_true",
        help="serve the embedded quickstart with its demo backend",
    )
    run.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="worker processes sharing the listeners (SO_REUSEPORT)",
    )
    check = sub.add_parser(
        "check",
        help="validate static and dynamic configuration and exit",
        description="Validate the static configuration and the file provider's dynamic\n"
        "configuration, then exit: 0 when valid, 1 with file:line errors otherwise.\n"
        "Extra --dotted.keys=value flags override the static configuration.",
        usage="gateway check [-h] --config FILE [--dotted.key=value ...]",
        epilog=OVERRIDES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    check.add_argument(
        "--config", "-c", metavar="FILE", required=True, help="static configuration file (YAML)"
    )
    who = sub.add_parser("whoami", help="run the demo backend", allow_abbrev=False)
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
    if extra and args.command not in ("run", "check"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "version":
        print(f"sluice {__version__}")
        return 0
    if args.command == "whoami":
        return whoami(args.address, args.name)
    overrides = _split_overrides(extra)
    if args.command == "check":
        return check(args.config, overrides)
    try:
        static, base_dir = load_static_config(args.config, overrides, quickstart=args.quickstart)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    source = _source_name(args.config, overrides, args.quickstart)
    problems = address_errors(static, source, overrides)
    for problem in problems:
        print(f"gateway: {problem}", file=sys.stderr)
    if problems:
        return 1
    from gateway.process import run_process

    quick = args.quickstart or (not args.config and not overrides)
    return run_process(static, base_dir=base_dir, workers=args.workers, quickstart=quick)


def check(config: str, overrides: list[tuple[str, str]]) -> int:
    """``gateway check``: validate without serving; exit 1 on the first error."""
    from gateway.config.merge import merge
    from providers.file.provider import FileProvider

    try:
        static = load_static(config, overrides)
        base = Path(config).resolve().parent
        errors = address_errors(static, config, overrides)
        fp = static.providers.file
        if fp is not None and not errors:
            # The provider's own loading (files and manifests), so check reads what run would.
            snapshot = FileProvider(fp, base_dir=base).load()
            if isinstance(snapshot, ConfigError):
                raise snapshot
            merged = merge({"file": snapshot})
            from gateway.app import with_dynamic_entry_points

            static = with_dynamic_entry_points(static, merged)
            protocols = {n: ep.protocol for n, ep in static.entry_points.items()}
            l4_config, errors = check_all(merged, entry_points=protocols)
            if not errors and l4_config is not None:
                from gateway.l4.compile import L4Compiler
                from gateway.runtime import Compiler
                from middleware.registry import load_registry

                compiled = Compiler(static, load_registry()).compile(merged)
                if compiled.context is not None:
                    compiled.context.close()
                L4Compiler(static).compile(merged, l4_config)
                if merged.tls.certificates:
                    from gateway.http.tls import build_server_tls

                    build_server_tls(merged.tls)  # reads the certificate files, as run does
    except ConfigError as exc:
        errors = [exc]
    for error in errors:
        print(f"gateway: {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"gateway: configuration {config} is valid")
    return 0


def whoami(address: str, name: str) -> int:
    """``gateway whoami``: the demo backend, until SIGTERM or SIGINT."""
    from gateway.whoami import run_whoami

    problem = _address_problem(address)
    if problem:
        print(f"gateway: --address: {problem}", file=sys.stderr)
        return 1
    setup_logging("INFO")
    try:
        run_whoami(address, name)
    except OSError as exc:
        print(f"gateway: whoami: cannot listen on {address}: {exc}", file=sys.stderr)
        return 1
    return 0


def setup_logging(level: str, file_path: str = "") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=file_path or None,
    )


if __name__ == "__main__":
    sys.exit(main())
