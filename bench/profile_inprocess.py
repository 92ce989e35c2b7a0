#!/usr/bin/env python3
"""Where cosmic's time goes on the in-process paths of bench/run.py.

    python bench/profile_inprocess.py [--calls 50000] [--top 25]
                                      [--only action|get] [--sort tottime]

Runs cProfile over ``--calls`` direct WSGI calls of cosmic's
``POST /actions/divide`` and ``GET /City/1`` (same environ and BytesIO set-up
as section 1 of run.py) and prints the top functions by ``--sort``. The
profiler's own overhead inflates small functions; read it for proportions.
"""

import argparse
import cProfile
import os
import pstats
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (HERE, os.path.dirname(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import bench_apps  # noqa: E402
from run import base_environ, call_once, make_caller  # noqa: E402

CASES = {
    "action": ("POST /actions/divide", bench_apps.cosmic_divide_app,
               base_environ("POST", bench_apps.DIVIDE_PATH,
                            "application/json", bench_apps.DIVIDE_BODY),
               bench_apps.DIVIDE_BODY),
    "get": ("GET /City/1", bench_apps.cosmic_city_app,
            base_environ("GET", bench_apps.CITY_PATH), b""),
}


def profile(name, calls, top, sort):
    what, app, environ, body = CASES[name]
    status, _, data = call_once(app, environ, body)
    assert status == 200, (status, data)
    call = make_caller(app, environ, body)
    for _ in range(1000):  # warm up
        call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    print("== cosmic %s: %d calls, top %d by %s ==" % (what, calls, top, sort))
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python bench/profile_inprocess.py")
    parser.add_argument("--calls", type=int, default=50000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--only", choices=sorted(CASES))
    parser.add_argument("--sort", default="tottime",
                        help="pstats key: tottime, cumulative, ncalls, ...")
    args = parser.parse_args(argv)
    for name in [args.only] if args.only else ["action", "get"]:
        profile(name, max(1, args.calls), args.top, args.sort)
    return 0


if __name__ == "__main__":
    sys.exit(main())
