"""`rlx cache info | clear`: the on-disk kernel cache seen from the command line.

`info` says where the cache is (the profile's ``cache_dir``, else
``$RLX_CACHE_DIR``, else ``~/.cache/rlx``), how big it is against its cap
(``cache_max_mb`` / ``$RLX_CACHE_MAX_MB``), and how many entries each backend
holds per device (the device and host CPU recorded in each entry's
fingerprint; the runtime's compiled plans show up as backend ``plan``), plus
what killed processes left behind. `clear` deletes the
entries (of one backend with ``--backend``); files under the root that are not
cache entries are never touched. The store itself is
`rlx.backends.common.kernel_store`.
"""

from __future__ import annotations

import json
from collections import defaultdict


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="where the cache is, its size and entries per backend/device",
                          description="where the kernel cache is, its size against the cap, "
                                      "entries per backend and device")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    clear = sub.add_parser("clear", help="delete the cached kernels",
                           description="delete every cached kernel (or one backend's)")
    clear.add_argument("--backend", help="only this backend's entries (e.g. llvm, numba)")
    for q in (info, clear):
        q.add_argument("--profile", "-p",
                       help="preset or profile file whose cache_dir / cache_max_mb to use "
                            "(default: the default preset, i.e. the environment)")


def _open(args):
    from rlx.backends.common.kernel_store import KernelCache
    from rlx.runtime.profile import resolve_profile

    profile = resolve_profile(args.profile or "default")
    return KernelCache(profile.resolved_cache_dir(), device=profile.device,
                       max_mb=profile.cache_max_mb)


def summary(cache) -> dict:
    """What `rlx cache info` shows, as a dict (also its --json output)."""
    groups: dict[tuple, dict] = defaultdict(lambda: {"entries": 0, "bytes": 0})
    incomplete = {"entries": 0, "bytes": 0}
    total = 0
    for e in cache.entries():
        total += e.bytes
        if not e.complete:
            incomplete["entries"] += 1
            incomplete["bytes"] += e.bytes
            continue
        fp = e.manifest().get("fingerprint") or {}
        g = groups[(e.namespace, str(fp.get("device", "?")), str(fp.get("cpu", "?")))]
        g["entries"] += 1
        g["bytes"] += e.bytes
    temps = list(cache.temp_files())
    return {
        "root": str(cache.root), "bytes": total, "max_mb": cache.max_mb,
        "entries": sum(g["entries"] for g in groups.values()),
        "groups": [{"backend": ns, "device": dev, "cpu": cpu, **g}
                   for (ns, dev, cpu), g in sorted(groups.items())],
        "incomplete": incomplete, "temp_files": len(temps),
    }


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB"


def run(args) -> int:
    cache = _open(args)
    if args.action == "clear":
        n, size = cache.clear(args.backend)
        what = f"{args.backend} entries" if args.backend else "entries"
        print(f"removed {n} {what} ({_mb(size)}) from {cache.root}")
        return 0
    s = summary(cache)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    cap = "no cap" if not s["max_mb"] else f"cap {s['max_mb']} MB"
    print(f"kernel cache: {s['root']}")
    print(f"size: {_mb(s['bytes'])} ({cap}; least recently used entries go first)")
    print(f"entries: {s['entries']}")
    if s["groups"]:
        print(f"  {'backend':<10} {'device':<12} {'host cpu':<16} {'entries':>8} {'size':>11}")
        for g in s["groups"]:
            print(f"  {g['backend']:<10} {g['device']:<12} {g['cpu']:<16} {g['entries']:>8} "
                  f"{_mb(g['bytes']):>11}")
    if s["incomplete"]["entries"] or s["temp_files"]:
        print(f"left by interrupted builds: {s['incomplete']['entries']} incomplete entries, "
              f"{s['temp_files']} temp files (later compiles sweep them; `rlx cache clear` "
              f"removes them now)")
    return 0
