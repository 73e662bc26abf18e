"""`wasm-faas new NAME --lang c|rust|assemblyscript`: a function project from the templates in
sdk-guest/templates/<lang>/ that builds and answers at once."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from host.cli._common import EXIT_CODES_HELP, EXIT_OK, EXIT_USAGE, error
from host.cli.project import LANGUAGES
from host.config.model import REPO_ROOT

TEMPLATES = REPO_ROOT / "sdk-guest" / "templates"
# A C identifier and a Rust crate name at once; it is also the function id.
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
PLACEHOLDER = "{{name}}"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "new", help="scaffold a function project (C, Rust or AssemblyScript)",
        description="Write NAME/ with a function that answers `hello, <body> from NAME`, and its "
                    "wasm-faas.toml. Then: cd NAME && wasm-faas build && wasm-faas dev.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", metavar="NAME", help="the function's name and id (lower case, digits, '_')")
    parser.add_argument("--lang", choices=LANGUAGES, default="c", help="the language (default: %(default)s)")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where to create NAME/ (default: here)")
    parser.add_argument("--force", action="store_true", help="write into an existing NAME/ folder")
    parser.set_defaults(handler=run)


def scaffold(name: str, lang: str, parent: Path, force: bool = False) -> list[Path]:
    """Copy the template; the files written. Raises FileExistsError, ValueError."""
    if not NAME.fullmatch(name):
        raise ValueError(f"invalid name {name!r}: use lower-case letters, digits and '_', starting with a letter")
    template = TEMPLATES / lang
    if not template.is_dir():
        raise ValueError(f"no template for {lang!r} in {TEMPLATES}")
    target = parent / name
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (pass --force to write into it)")
    written = []
    for source in sorted(template.rglob("*")):
        if not source.is_file():
            continue
        relative = Path(str(source.relative_to(template)).replace(PLACEHOLDER, name))
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(source.read_text().replace(PLACEHOLDER, name))
        written.append(destination)
    return written


def run(args: argparse.Namespace) -> int:
    try:
        written = scaffold(args.name, args.lang, args.dir, args.force)
    except (ValueError, FileExistsError) as failure:
        error(str(failure))
        return EXIT_USAGE
    root = args.dir / args.name
    for path in written:
        print(f"  wrote {path}")
    print(f"created {args.lang} function {args.name!r} in {root}\n"
          f"next: cd {root} && wasm-faas build && wasm-faas dev   (then: wasm-faas invoke {args.name} -d you)")
    return EXIT_OK
