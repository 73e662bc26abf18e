"""`python -m host` / `wasm-faas`: serve functions, with flags that override the config file."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from host.config import DEFAULT_CONFIG, ConfigError, HostConfig, load_config, validate_config

DESCRIPTION = """\
A WebAssembly FaaS host: drop proxy-wasm/Layotto .wasm functions in a folder, call them over HTTP
with the header `id: <function id>`.

  python -m host serve                           # embedded quickstart (memory state store)
  python -m host serve --config configs/redis.toml
  python -m host serve --workers 4               # 4 processes on one port, one admin API for all
  curl -H 'id: id_1' 'http://127.0.0.1:2045/?name=book1'
  python -m host inspect my_function.wasm        # will a module built elsewhere run here?

Developer loop (wasm-faas COMMAND --help for each):
  wasm-faas new hello --lang c && cd hello       # scaffold (c, rust, assemblyscript)
  wasm-faas build                                # compile; errors as file:line:col
  wasm-faas dev                                  # serve + rebuild on every save
  wasm-faas invoke hello -d you                  # -> hello, you from hello
  wasm-faas deploy build/hello.wasm --admin http://HOST:34998 --token T
  wasm-faas ls | describe ID | rm ID | logs ID -f

exit codes: 0 ok, 1 failed, 2 usage, 3 host unreachable, 4 no such function, 5 toolchain missing
"""


def build_parser(developer_verbs: bool = True) -> argparse.ArgumentParser:
    """`developer_verbs=False`: only `serve` and `inspect` (what `serve ...` needs; the verbs' modules
    cost ~4-5 ms to import, at every start of the host)."""
    parser = argparse.ArgumentParser(prog="python -m host", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the function listener and the admin listener",
                                description="Run the host. Flags override the config file.")
    serve.add_argument("--config", type=Path, default=None,
                       help=f"native .toml or Layotto .json config (default: {DEFAULT_CONFIG.name}, "
                            "the embedded quickstart: memory store, example functions)")
    serve.add_argument("--functions", action="append", metavar="DIR",
                       help="folder of .wasm functions (repeatable; replaces functions_dirs from the config)")
    serve.add_argument("--listen", metavar="HOST:PORT", help="function listener (default 127.0.0.1:2045)")
    serve.add_argument("--admin", metavar="HOST:PORT",
                       help="admin and actuator listener (default 127.0.0.1:34998)")
    serve.add_argument("--log-level", choices=["trace", "debug", "info", "warning", "error", "critical"])
    serve.add_argument("--log-format", choices=["text", "json"],
                       help="json: one object per line with function, request_id, trace_id (default: text)")
    serve.add_argument("--workers", type=_positive, metavar="N",
                       help="processes sharing the listen port (SO_REUSEPORT) under a supervisor; worker 0 "
                            "serves the admin port for all of them (default 1: a single process)")
    # Set by the supervisor when it starts a worker (host/supervisor.py); not for users.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--cluster-dir", type=Path, help=argparse.SUPPRESS)
    inspect = commands.add_parser(
        "inspect", help="show a module's ABI version, imports, exports, and whether it will run here",
        description="Print the module's proxy-wasm ABI version, its imports (and whether this host provides "
                    "each), its exports, and a verdict. Exits 1 when the module will not run here.")
    inspect.add_argument("module", type=Path, metavar="FILE.wasm", help="a .wasm (or .wat) module")
    if developer_verbs:
        _add_developer_verbs(commands)
    return parser


def _add_developer_verbs(commands: argparse._SubParsersAction) -> None:
    """Issue 14's verbs (host/cli/<verb>.py); each sets `handler`."""
    from host.cli import build, deploy, dev, invoke, logs, manage, new

    for module in (new, build, dev, invoke, deploy, logs):
        module.add_parser(commands)
    manage.add_parsers(commands)


def _inspect(path: Path) -> int:
    from host.cli.inspect import inspect_module

    if not path.is_file():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2
    report, runs = inspect_module(path)
    print(report)
    return 0 if runs else 1


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _load(args: argparse.Namespace) -> HostConfig:
    config = load_config(args.config)
    overrides = config.model_dump()
    if args.functions:
        overrides["functions_dirs"] = [str(Path(d).resolve()) for d in args.functions]
    for flag in ("listen", "admin", "log_level", "log_format", "workers"):
        value = getattr(args, flag)
        if value:
            overrides["server"][flag] = value
    config = validate_config(overrides, "command line")
    from host.tracing.setup import export_settings

    export_settings(config.tracing, config.app_id)  # issue 14: a wrong OTEL_* variable is a config error
    return config


def _configure_logging(config: HostConfig, worker: int | None = None) -> None:
    from host.logs import configure_logging

    configure_logging(config.server.log_level, config.server.log_format, worker=worker)


def _run_worker(args: argparse.Namespace, collector_paused: bool) -> int:
    """One of the supervisor's workers: the configuration comes from the cluster folder."""
    from host.process.cluster import WorkerRole
    from host.process.serve import run

    if args.worker_index is None or args.cluster_dir is None:
        print("error: --worker-index and --cluster-dir go together", file=sys.stderr)
        return 2
    try:
        role, config = WorkerRole.load(args.cluster_dir, args.worker_index)
    except (ConfigError, RuntimeError, KeyError, ValueError) as error:
        print(f"error: worker {args.worker_index}: {error}", file=sys.stderr)
        return 2
    _configure_logging(config, role.index)
    try:
        run(config, role, collector_paused=collector_paused)
    except Exception:  # noqa: BLE001 - reported on stderr; the supervisor sees the exit code
        logging.getLogger("host.worker").exception("worker %d failed", role.index)
        return 1
    finally:  # shut down: a late SIGINT / SIGTERM (forwarded by the supervisor) must not interrupt exiting
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return 0


def main(argv: Sequence[str] | None = None, *, collector_paused: bool = False) -> int:
    """`collector_paused`: `python -m host` paused the cyclic collector for its imports; it runs again
    from here (`serve`: once the host's modules are imported)."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    # `serve ...` is parsed by the serve subcommand alone: the developer verbs are not needed for it.
    args = build_parser(developer_verbs=arguments[:1] != ["serve"]).parse_args(arguments)
    if collector_paused and args.command != "serve":
        gc.enable()
    handler = getattr(args, "handler", None)
    if handler is not None:  # a developer verb
        result: int = handler(args)
        return result
    if args.command == "inspect":
        return _inspect(args.module)
    if args.cluster_dir is not None or args.worker_index is not None:
        return _run_worker(args, collector_paused)
    try:
        config = _load(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if config.server.workers > 1:
        from host.process.supervisor import Supervisor

        if collector_paused:
            gc.enable()
        _configure_logging(config)
        return Supervisor(config).run()
    _configure_logging(config)
    from host.process.serve import run

    run(config, collector_paused=collector_paused)
    return 0
