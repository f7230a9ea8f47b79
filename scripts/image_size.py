"""Estimate the container image's size from the wheels installed here (no Docker engine needed).

The image holds the slim Python base, the package with its runtime and ML dependencies (not
the test tools, not torch unless built with WITH_TORCH=1) and the compiled kernel cache. This
sums the installed files of exactly those distributions in this environment, plus the cache,
and prints the figure; the base image adds its own (python:3.11-slim-bookworm, ~130 MB).

Usage: .venv/bin/python scripts/image_size.py [--with-torch]
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

BASE_IMAGE_MB = 130  # python:3.11-slim-bookworm, uncompressed (docker image ls)


def _name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def runtime_distributions(extras: tuple[str, ...]) -> set[str]:
    """precise-mrd's dependencies with ``extras``, transitively (markers of extras skipped)."""
    seen: set[str] = set()
    todo = [("precise-mrd", extras)]
    while todo:
        name, wanted = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            marker = requirement.split(";", 1)[1] if ";" in requirement else ""
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if extra and extra.group(1) not in wanted:
                continue
            todo.append((_name(requirement), ()))
    return seen


def installed_bytes(names: set[str]) -> int:
    total = 0
    for name in names:
        try:
            files = metadata.files(name) or []
        except metadata.PackageNotFoundError:
            continue
        for file in files:
            path = Path(str(file.locate()))
            if path.is_file():
                total += path.stat().st_size
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-torch", action="store_true")
    args = parser.parse_args()
    extras = ("ml", "dl") if args.with_torch else ("ml",)
    names = runtime_distributions(extras)
    packages = installed_bytes(names)
    cache = Path(sys.prefix) / "numba-cache"
    cache_bytes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    mb = (packages + cache_bytes) / 1e6
    package_mb, cache_mb = packages / 1e6, cache_bytes / 1e6
    print(f"{len(names)} distributions: {package_mb:,.0f} MB; kernel cache {cache_mb:,.0f} MB")
    print(f"estimated image: {mb + BASE_IMAGE_MB:,.0f} MB (with the {BASE_IMAGE_MB} MB base)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
