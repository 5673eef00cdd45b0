"""What the rollout controller's lease costs a replica: the holder's renewal (a locked
compare-and-swap of the lease file) and another replica's look at it (a read), in a directory
registry on this machine's disk.

    python benchmarks/bench_lease.py [--repeat 9]      (pin it: taskset -c 1 python ...)

Each replica does one of these three times per lease time to live (every 5 s with the default
15 s lease), in a thread; the figures are the best of --repeat runs, in microseconds per call.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serving.lifecycle.leadership import Leadership
from serving.registry.lease import FileLeaseStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as registry:
        holder = Leadership(FileLeaseStore(registry), "http://holder:8000")
        other = Leadership(FileLeaseStore(registry), "http://other:8000")
        assert holder.renew_now() and not other.renew_now()
        for name, call in (("holder renews", holder.renew_now), ("other replica looks",
                                                                 other.renew_now)):
            timer = timeit.Timer(call)
            n, _ = timer.autorange()
            best = min(timer.repeat(args.repeat, n)) / n
            print(f"{name:<22} {best * 1e6:8.1f} us per call")


if __name__ == "__main__":
    main()
