"""mypy over the package as installed: ``python scripts/typecheck.py [mypy args]``.

pyproject.toml maps the top-level folders ``workflows/``, ``activities/`` and
``watchdog/`` to ``swarmd.workflows``, ``swarmd.activities`` and
``swarmd.watchdog`` (setuptools ``package-dir``). Python follows that mapping
(setuptools' editable finder, or the files of a regular install), but mypy
derives a module's name from its path and cannot read it, so a plain ``mypy``
would report ``swarmd.workflows`` missing.

This runs mypy with its normal configuration ([tool.mypy]) and hands it every
source with the module name the mapping gives it: one path per module, the
real one, in every error message. Nothing is copied or linked. ``make lint``
calls it.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.find_sources import create_source_list
from mypy.fscache import FileSystemCache
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parents[1]


def mapping() -> dict[str, Path]:
    """package name -> its folder, for the packages whose folder is not their dotted path."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs: dict[str, str] = cfg["tool"]["setuptools"].get("package-dir", {})
    return {pkg: ROOT / d for pkg, d in dirs.items() if Path(*pkg.split(".")) != Path(d)}


def mapped_sources(fscache: FileSystemCache, options: object) -> list[BuildSource]:
    out: list[BuildSource] = []
    for pkg, folder in mapping().items():
        for src in create_source_list([str(folder)], options, fscache):  # type: ignore[arg-type]
            assert src.path is not None
            rel = Path(src.path).resolve().relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.append(BuildSource(src.path, ".".join([pkg, *parts]), None, src.base_dir))
    return out


def main(argv: list[str]) -> int:
    fscache = FileSystemCache()
    sources, options = process_options(argv, fscache=fscache)
    sources += mapped_sources(fscache, options)
    messages: list[str] = []

    def flush(filename: str | None, new: list[str], serious: bool) -> None:
        messages.extend(new)
        for m in new:
            print(m, file=sys.stderr if serious else sys.stdout)

    try:
        build.build(sources, options, None, flush, fscache, sys.stdout, sys.stderr)
    except CompileError as exc:
        for m in exc.messages:
            print(m, file=sys.stderr)
        return 2
    errors = [m for m in messages if ": error:" in m]
    if errors:
        files = len({m.split(":", 1)[0] for m in errors})
        print(f"Found {len(errors)} errors in {files} files (checked {len(sources)} source files)")
        return 1
    print(f"Success: no issues found in {len(sources)} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
