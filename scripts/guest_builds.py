"""What the C and Rust example builders share: finding sources, and `--check` (rebuild into a
temporary folder and compare with the committed modules)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class BuildError(Exception):
    pass


def sources_in(directory: Path, suffix: str) -> list[Path]:
    """The `*<suffix>` files of `directory` (relative to the repository), sorted; at least one."""
    found = sorted((ROOT / directory).glob(f"*{suffix}"))
    if not found:
        raise BuildError(f"no {suffix} files in {directory}")
    return [src.relative_to(ROOT) for src in found]


def report_stale(sources: list[Path], fresh: list[Path], committed_dir: Path, what: str, rebuild: str) -> int:
    """Compare freshly built modules with the committed ones in `committed_dir`; print the verdict
    and return the exit code (1 when one is missing or differs)."""
    stale = []
    for src, built in zip(sources, fresh):
        committed = ROOT / committed_dir / built.name
        if not committed.exists():
            stale.append(f"{committed_dir / built.name} (missing)")
        elif committed.read_bytes() != built.read_bytes():
            stale.append(f"{committed_dir / built.name} (differs from {src})")
    if stale:
        print(f"stale {what}; run `{rebuild}` and commit:")
        for line in stale:
            print(f"  {line}")
        return 1
    print(f"ok: {len(sources)} {what} match their sources")
    return 0
