"""``python -m bench.peak -m module args…`` or ``python -m bench.peak script.py args…``: run it, then
print its peak resident memory (this process's, or a child's if larger) on stderr for the bench."""

from __future__ import annotations

import resource
import runpy
import sys

from bench.common import PEAK_MARK


def main() -> None:
    args = sys.argv[1:]
    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = args
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
    finally:
        # VmHWM is this process's own high-water mark (ru_maxrss would carry the parent's over fork
        # and exec); a child it ran, if any, counts by its own rusage.
        own = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        peak = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        print(f"{PEAK_MARK}{peak}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
