"""`wasm-faas build [PATH]`: compile a function project (or one source file) into its module, then
say whether this host will run it (the `inspect` verdict)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from host.cli._common import EXIT_CODES_HELP, EXIT_FAILED, EXIT_OK, EXIT_TOOLCHAIN, EXIT_USAGE, error, progress
from host.cli.project import Project, ProjectError, load_project


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "build", help="compile a function project into its .wasm module",
        description="Compile the project in PATH (a folder with wasm-faas.toml, or one .c / .rs / .ts file): C "
                    "with zig cc, Rust with /usr/bin/rustc, AssemblyScript with the pinned asc. Compiler errors "
                    "are shown as file:line:col.", epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", type=Path, default=Path("."), metavar="PATH",
                        help="project folder or source file (default: here)")
    parser.add_argument("-v", "--verbose", action="store_true", help="on failure, print the whole compiler output")
    parser.set_defaults(handler=run)


def build_project(project: Project, verbose: bool = False) -> int:
    """Build and report; the exit code."""
    from host.cli.toolchains import BuildFailed, ToolchainMissing, build

    try:
        with progress(f"building {project.name} ({project.lang})"):
            output = build(project)
    except ToolchainMissing as failure:
        error(f"the {project.lang} toolchain is missing: {failure}")
        return EXIT_TOOLCHAIN
    except BuildFailed as failure:
        for line in failure.diagnostics:
            print(line, file=sys.stderr)
        if verbose or not failure.diagnostics:
            print(failure.output, file=sys.stderr)
        error(str(failure))
        return EXIT_FAILED
    return _verdict(output)


def _verdict(output: Path) -> int:
    from host.cli.inspect import inspect_module

    report, runs = inspect_module(output)
    size = output.stat().st_size
    if runs:
        print(f"built {output} ({size:,} bytes): runs on this host")
        return EXIT_OK
    print(report, file=sys.stderr)
    error(f"built {output} ({size:,} bytes), but this host cannot run it (see above)")
    return EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    try:
        project = load_project(args.path)
    except ProjectError as failure:
        error(str(failure))
        return EXIT_USAGE
    return build_project(project, args.verbose)
