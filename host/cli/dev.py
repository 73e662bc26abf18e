"""`wasm-faas dev [PATH]`: build the project, serve it, and rebuild whenever a source changes. The
host's own watcher then hot-reloads the new module (the old version drains). A build error is
shown as file:line:col and the last good module keeps serving."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from host.cli._common import EXIT_CODES_HELP, EXIT_OK, EXIT_USAGE, error
from host.cli.project import Project, ProjectError, load_project

SOURCE_SUFFIXES = (".c", ".h", ".rs", ".ts", ".toml")
DEBOUNCE_S = 0.3


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "dev", help="build, serve and rebuild on every source change",
        description="Build the project in PATH, serve its module (hot reload), and rebuild when a source file "
                    "changes. Ctrl-C stops.", epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", type=Path, default=Path("."), metavar="PATH",
                        help="project folder or source file (default: here)")
    parser.add_argument("--config", type=Path, help="a host config to serve with (its functions_dirs get the "
                                                    "project's build folder added); default: a minimal one")
    parser.add_argument("--listen", default="127.0.0.1:2045", metavar="HOST:PORT")
    parser.add_argument("--admin", default="127.0.0.1:34998", metavar="HOST:PORT")
    parser.add_argument("--log-level", default="info", choices=["trace", "debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    parser.set_defaults(handler=run)


def _config(args: argparse.Namespace, project: Project) -> Any:
    from host.config import load_config, validate_config

    folder = str(project.output.parent)
    if args.config is not None:
        raw = load_config(args.config).model_dump()
        raw["functions_dirs"] = [*raw["functions_dirs"], folder]
    else:
        raw = {"functions_dirs": [folder], "state": {"statestore": {"type": "memory"}}}
    raw.setdefault("server", {})
    raw["server"].update({"listen": args.listen, "admin": args.admin, "log_level": args.log_level,
                          "log_format": args.log_format, "watch": True, "watch_debounce_ms": 100})
    if args.config is None:  # the application runtime APIs (gRPC, Dapr HTTP) only with a --config
        from host.config import ServerConfig

        raw["server"].update({key: "" for key in ("grpc", "dapr_http") if key in ServerConfig.model_fields})
    return validate_config(raw, "wasm-faas dev")


class _Rebuilder:
    """Watches the project (not its build output) and rebuilds after a quiet moment."""

    def __init__(self, project: Project, loop: asyncio.AbstractEventLoop):
        self.project = project
        self.loop = loop
        self.timer: asyncio.TimerHandle | None = None
        self.lock = asyncio.Lock()
        self.again = False

    def changed(self, path: Path) -> None:  # in the watchdog thread
        output_dir = self.project.output.parent
        if path.name.startswith(".") or path.suffix not in SOURCE_SUFFIXES or output_dir in path.parents:
            return
        self.loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(DEBOUNCE_S, lambda: asyncio.ensure_future(self.rebuild()))

    async def rebuild(self) -> None:
        if self.lock.locked():
            self.again = True
            return
        async with self.lock:
            from host.cli.build import build_project

            print(f"change detected: rebuilding {self.project.name}", file=sys.stderr, flush=True)
            await asyncio.to_thread(build_project, self.project)
        if self.again:
            self.again = False
            await self.rebuild()


async def _serve(args: argparse.Namespace, project: Project) -> int:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    from host.process.serve import start_server

    config = _config(args, project)
    project.output.parent.mkdir(parents=True, exist_ok=True)
    server = await start_server(config)
    loop = asyncio.get_running_loop()
    rebuilder = _Rebuilder(project, loop)

    class Events(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in ("opened", "closed_no_write") or event.is_directory:
                return
            for raw in (event.src_path, getattr(event, "dest_path", "")):
                if raw:
                    rebuilder.changed(Path(raw if isinstance(raw, str) else raw.decode()))

    observer = Observer()
    observer.schedule(Events(), str(project.root), recursive=True)
    observer.daemon = True
    observer.start()
    print(f"serving {project.name} on http://127.0.0.1:{server.listen_port} (admin port {server.admin_port}); "
          f"watching {project.root} for changes - Ctrl-C stops", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    observer.stop()
    await asyncio.to_thread(observer.join, 2)
    await server.stop()
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    from host.cli.build import build_project
    from host.config import ConfigError
    from host.logs import configure_logging

    try:
        project = load_project(args.path)
    except ProjectError as failure:
        error(str(failure))
        return EXIT_USAGE
    configure_logging(args.log_level, args.log_format)
    build_project(project)  # a failed first build still serves: the next good save deploys
    try:
        return asyncio.run(_serve(args, project))
    except ConfigError as failure:
        error(str(failure))
        return EXIT_USAGE
    except OSError as failure:  # the listen or admin address is taken
        error(f"cannot serve: {failure}")
        return EXIT_USAGE
