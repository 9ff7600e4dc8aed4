"""The benchmark process's own memory (run.py and bench_engine.py share it)."""

from __future__ import annotations

import resource


def rss_mb() -> float:
    """The process's resident memory now (MB), from /proc; its peak so far elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
