"""Where a gateway process's resident memory goes before it serves anything.

    python bench/imports.py [MODULE ...] [--top 25]

Imports MODULE (default: what a worker imports, ``shardstream.daemon.worker``;
the supervisor is ``twisted.scripts.twistd`` plus ``shardstream.daemon.cli``)
under an import hook that reads VmRSS before and after each module's body
runs, and prints the modules that added the most, by their own share (what
their body added, not counting the modules it imported) and in all. The
kit's S3 row sums VmRSS over the supervisor and its workers, so this is the
profile behind that figure: a worker at rest is most of its peak.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import sys
from typing import Any


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


class _Measured(importlib.abc.Loader):
    def __init__(self, real: Any, hook: "_Hook") -> None:
        self.real, self.hook = real, hook

    def create_module(self, spec: Any) -> Any:
        return self.real.create_module(spec)

    def exec_module(self, module: Any) -> None:
        frame = [module.__name__, rss_mb(), 0.0]
        self.hook.stack.append(frame)
        try:
            self.real.exec_module(module)
        finally:
            self.hook.stack.pop()
            total = rss_mb() - frame[1]
            self.hook.added[module.__name__] = (total, total - frame[2])
            if self.hook.stack:
                self.hook.stack[-1][2] += total


class _Hook(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.stack: list[list[Any]] = []
        self.added: dict[str, tuple[float, float]] = {}  # name -> (in all, own)

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Measured(spec.loader, self)
                return spec
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", default=["shardstream.daemon.worker"])
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    start = rss_mb()
    hook = _Hook()
    sys.meta_path.insert(0, hook)
    for name in a.modules:
        importlib.import_module(name)
    sys.meta_path.remove(hook)
    end = rss_mb()
    print(f"VmRSS {start:.1f} MB before, {end:.1f} MB after importing {' '.join(a.modules)}")
    groups: dict[str, float] = {}
    for name, (_, own) in hook.added.items():
        top = name.split(".")[0]
        groups[top] = groups.get(top, 0.0) + own
    print("by top-level package (own shares summed):")
    for top, mb in sorted(groups.items(), key=lambda g: -g[1])[:12]:
        print(f"  {mb:6.1f} MB  {top}")
    print(f"modules, by own share (MB own / MB in all), top {a.top}:")
    for name, (total, own) in sorted(hook.added.items(), key=lambda m: -m[1][1])[:a.top]:
        print(f"  {own:6.2f} / {total:6.2f}  {name}")


if __name__ == "__main__":
    main()
