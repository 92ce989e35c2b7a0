"""Load test: many clients at once against `python -m cosmic serve`.

    python bench/load.py                     # 32 threads x 200 calls
    python bench/load.py --threads 8 --calls 50 --time-limit 30

Starts `python -m cosmic serve examples/places.py --port 0` on a temporary
SQLite file, then runs client threads, one `cosmic.connect(url)` client
each, that mix actions (stats, rename_city), creates (City, Address) and
reads (get_by_id, get_list). Prints the number of requests, errors,
latency percentiles and requests per second, then checks that every
created object can be read back and that the counts add up.

Bounded in time: the run stops after --time-limit seconds (120 by
default) and says it was aborted. Exit status 0 when every call succeeded
and the checks passed, 1 otherwise. Only 127.0.0.1 is used.
"""

import argparse
import collections
import math
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time


def find_root():
    """The nearest directory above this file that holds cosmic.py."""
    here = os.path.dirname(os.path.abspath(__file__))
    while not os.path.isfile(os.path.join(here, "cosmic.py")):
        parent = os.path.dirname(here)
        if parent == here:
            raise SystemExit("cosmic.py not found above %s" % __file__)
        here = parent
    return here


ROOT = find_root()
sys.path.insert(0, ROOT)

import cosmic  # noqa: E402

SERVING = re.compile(r"Serving \S+ on (http://127\.0\.0\.1:\d+)/ ")


def percentile(sorted_values, fraction):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


class ServeProcess:
    """The places example under `python -m cosmic serve`, stderr to a file."""

    def __init__(self, db_path, start_timeout=30):
        self.log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, PLACES_DB=db_path)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cosmic", "serve", "examples/places.py",
             "--port", "0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log,
            universal_newlines=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()),
                         daemon=True).start()
        try:
            line = lines.get(timeout=start_timeout)
        except queue.Empty:
            self.stop()
            raise SystemExit("the server printed nothing in %d s"
                             % start_timeout)
        match = SERVING.match(line)
        if match is None:
            self.stop()
            raise SystemExit("unexpected first line from the server: %r"
                             % line)
        self.url = match.group(1)

    def stop(self):
        """Stop the server; return (exit code, stderr text)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        return self.proc.returncode, text


class Worker(threading.Thread):
    """One client thread: ``calls`` calls in a fixed mix, each timed."""

    def __init__(self, index, url, calls, gate, deadline, timeout):
        super().__init__(name="load-%d" % index, daemon=True)
        self.index = index
        self.url = url
        self.calls = calls
        self.gate = gate
        self.deadline = deadline
        self.timeout = timeout
        self.latencies = collections.defaultdict(list)  # kind -> seconds
        self.errors = []
        self.cities = []  # (id, name)
        self.addresses = []  # (id, city id)
        self.renamed = {}  # city id -> current name
        self.done = 0

    def run(self):
        try:
            client = cosmic.connect(self.url, retries=0,
                                    timeout=self.timeout)
        except Exception as exc:
            self.errors.append(("connect", repr(exc)))
            return
        try:
            self.gate.wait()
            for i in range(self.calls):
                if time.monotonic() >= self.deadline:
                    return
                self.call(client, i)
                self.done += 1
        except threading.BrokenBarrierError:
            self.errors.append(("start", "barrier broken"))
        finally:
            client.close()

    def call(self, client, i):
        City = client.models.City
        Address = client.models.Address
        kind = ("stats", "create City", "get City", "list City",
                "rename_city", "stats", "create City", "get City",
                "create Address", "list Address")[i % 10]
        if not self.cities and kind in ("get City", "rename_city",
                                        "create Address", "list Address"):
            kind = "create City"
        start = time.perf_counter()
        try:
            if kind == "stats":
                result = client.actions.stats()
                ok = sorted(result) == ["addresses", "cities"]
            elif kind == "create City":
                name = "Load%dx%d" % (self.index, i)
                ident, rep = City.create(name=name, country="Benchland")
                ok = rep == {"name": name, "country": "Benchland"}
                self.cities.append((ident, name))
            elif kind == "get City":
                ident, name = self.cities[-1]
                rep = City.get_by_id(ident)
                ok = rep["name"] == self.renamed.get(ident, name)
            elif kind == "list City":
                items, meta = City.get_list(country="Benchland", limit=10)
                ok = bool(items) and meta["total_count"] >= len(self.cities)
            elif kind == "rename_city":
                ident, name = self.cities[0]
                new = "Renamed%dx%d" % (self.index, i)
                old = client.actions.rename_city(id=ident, name=new)
                ok = old == self.renamed.get(ident, name)
                self.renamed[ident] = new
            elif kind == "create Address":
                city = self.cities[-1][0]
                ident, rep = Address.create(number=i + 1, street="Load Street",
                                            city=city)
                ok = rep["city"] == city
                self.addresses.append((ident, city))
            else:
                city = self.cities[-1][0]
                items, meta = Address.get_list(city=city)
                ok = meta["total_count"] == sum(
                    1 for _, c in self.addresses if c == city)
        except Exception as exc:
            self.latencies[kind].append(time.perf_counter() - start)
            self.errors.append((kind, repr(exc)))
            return
        self.latencies[kind].append(time.perf_counter() - start)
        if not ok:
            self.errors.append((kind, "unexpected answer"))


def verify(url, workers, timeout):
    """Read back every created object; compare the totals. Problems."""
    problems = []
    client = cosmic.connect(url, retries=0, timeout=timeout)
    try:
        cities = addresses = 0
        for worker in workers:
            for ident, name in worker.cities:
                cities += 1
                rep = client.models.City.get_by_id(ident)
                if rep["name"] != worker.renamed.get(ident, name):
                    problems.append("City %s reads back as %r" % (ident, rep))
            for ident, city in worker.addresses:
                addresses += 1
                rep = client.models.Address.get_by_id(ident)
                if rep["city"] != city:
                    problems.append("Address %s reads back as %r"
                                    % (ident, rep))
        stats = client.actions.stats()
        if stats != {"cities": cities, "addresses": addresses}:
            problems.append("stats %r, expected %d cities and %d addresses"
                            % (stats, cities, addresses))
        _, meta = client.models.City.get_list(country="Benchland", limit=1)
        if meta["total_count"] != cities:
            problems.append("total_count %r, expected %d"
                            % (meta["total_count"], cities))
    finally:
        client.close()
    return problems, cities, addresses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--calls", type=int, default=200,
                        help="calls per thread")
    parser.add_argument("--time-limit", type=float, default=120.0,
                        help="abort the run after this many seconds")
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.time_limit
    timeout = min(30.0, args.time_limit)
    with tempfile.TemporaryDirectory(prefix="cosmic_load_") as folder:
        server = ServeProcess(os.path.join(folder, "places.db"))
        try:
            print("cosmic.py load: %d threads x %d calls, %s"
                  % (args.threads, args.calls, server.url), flush=True)
            gate = threading.Barrier(args.threads + 1, timeout=60)
            workers = [Worker(n, server.url, args.calls, gate, deadline,
                              timeout) for n in range(args.threads)]
            for worker in workers:
                worker.start()
            gate.wait()  # every client has fetched the spec
            begin = time.perf_counter()
            for worker in workers:
                worker.join(max(0.0, deadline - time.monotonic()) + timeout)
            elapsed = time.perf_counter() - begin
            stuck = [w.name for w in workers if w.is_alive()]
            aborted = time.monotonic() >= deadline or bool(stuck)
            report(workers, elapsed, aborted, stuck)
            errors = sum(len(w.errors) for w in workers)
            problems = []
            if not aborted:
                problems, cities, addresses = verify(server.url, workers,
                                                     timeout)
                print("verified: %d cities and %d addresses read back, "
                      "stats and total_count agree%s"
                      % (cities, addresses,
                         "" if not problems else " -- NO: %d problems"
                         % len(problems)))
                for problem in problems[:10]:
                    print("  " + problem)
        finally:
            code, log = server.stop()
        tracebacks = log.count("Traceback")
        print("server: exit code %s, %d tracebacks in its log, "
              "%.1f s in all" % (code, tracebacks,
                                 time.monotonic() - started))
    return 0 if not (errors or problems or aborted or tracebacks) else 1


def report(workers, elapsed, aborted, stuck):
    """Print counts, latency percentiles and throughput."""
    by_kind = collections.defaultdict(list)
    for worker in workers:
        for kind, values in worker.latencies.items():
            by_kind[kind].extend(values)
    everything = sorted(v for values in by_kind.values() for v in values)
    errors = [e for w in workers for e in w.errors]
    requests = len(everything)
    print("requests: %d  errors: %d  elapsed: %.2f s  req/s: %.1f%s"
          % (requests, len(errors), elapsed,
             requests / elapsed if elapsed else float("nan"),
             "  ABORTED (time limit)" if aborted else ""))
    if stuck:
        print("threads still running: %s" % ", ".join(stuck))
    print("latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f"
          % tuple(1000 * percentile(everything, f)
                  for f in (0.50, 0.90, 0.99, 1.0)))
    for kind in sorted(by_kind):
        values = sorted(by_kind[kind])
        print("  %-15s %5d calls  p50 %6.2f ms  p99 %6.2f ms"
              % (kind, len(values), 1000 * percentile(values, 0.5),
                 1000 * percentile(values, 0.99)))
    for kind, message in errors[:10]:
        print("  error in %s: %s" % (kind, message))


if __name__ == "__main__":
    sys.exit(main())
