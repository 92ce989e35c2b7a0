"""Load generators for the HTTP section: wrk when installed, else threads.

Both send the same request over ``concurrency`` keep-alive connections for
``duration`` seconds to a server on 127.0.0.1 and return a dict: ``rps``,
``p50_ms``, ``p99_ms``, ``requests``, ``errors`` (failed exchanges and
unexpected answers) and ``connections`` (TCP connections opened, None when
unknown). A server that closes after every answer (HTTP/1.0) makes the
clients reconnect, which ``connections`` shows.
"""

import http.client
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

LOCALHOST = "127.0.0.1"


def percentile(sorted_values, fraction):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1,
                max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class _CountingConnection(http.client.HTTPConnection):
    opened = 0

    def connect(self):
        self.opened += 1
        super().connect()


def python_load(port, method, path, body, headers, expected, *,
                concurrency=16, duration=3.0, warmup=2,
                max_requests_per_client=1_000_000, timeout=10.0):
    """Threaded load with http.client; latencies measured per request."""
    results = [None] * concurrency
    barrier = threading.Barrier(concurrency + 1)
    go = threading.Event()
    stop_at = [0.0]

    def client(slot):
        conn = _CountingConnection(LOCALHOST, port, timeout=timeout)
        latencies = []
        errors = 0
        try:
            for _ in range(warmup):
                try:
                    conn.request(method, path, body, headers)
                    conn.getresponse().read()
                except (OSError, http.client.HTTPException):
                    conn.close()
            conn.opened = 0
            barrier.wait(timeout=60)
            go.wait(timeout=60)
            deadline = stop_at[0]
            perf = time.perf_counter_ns
            now = time.perf_counter
            for _ in range(max_requests_per_client):
                if now() >= deadline:
                    break
                t0 = perf()
                try:
                    conn.request(method, path, body, headers)
                    response = conn.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    errors += 1
                    if errors > 1000:
                        break
                    continue
                latencies.append(perf() - t0)
                if response.status != 200 or data != expected:
                    errors += 1
        except threading.BrokenBarrierError:
            errors += 1
        finally:
            results[slot] = (latencies, errors, conn.opened)
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True)
               for i in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    stop_at[0] = started + duration
    go.set()
    for thread in threads:
        thread.join(duration + timeout + 30)
    elapsed = time.perf_counter() - started
    latencies = []
    errors = 0
    opened = 0
    for item in results:
        if item is None:
            errors += 1
            continue
        latencies.extend(item[0])
        errors += item[1]
        opened += item[2]
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) / 1e6,
        "p99_ms": percentile(latencies, 0.99) / 1e6,
        "requests": len(latencies),
        "errors": errors,
        "connections": opened,
    }


# -- wrk ----------------------------------------------------------------------

def wrk_path():
    return shutil.which("wrk")


def wrk_version():
    path = wrk_path()
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "wrk"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].split(" [")[0] if text else "wrk"


def _lua_string(text):
    level = "="
    while "]" + level + "]" in text:
        level += "="
    return "[%s[%s]%s]" % (level, text, level)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text):
    match = re.match(r"([0-9.]+)(us|ms|s|m)$", text.strip())
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk_load(port, method, path, body, headers, expected=None, *,
             concurrency=16, duration=3.0, threads=2, timeout=10.0):
    """Run wrk once; ``expected`` is not checked (wrk counts non-2xx)."""
    lines = ["wrk.method = %s" % _lua_string(method)]
    if body:
        lines.append("wrk.body = %s" % _lua_string(body.decode("utf-8")))
    for name, value in headers.items():
        lines.append("wrk.headers[ %s ] = %s"
                     % (_lua_string(name), _lua_string(value)))
    fd, script = tempfile.mkstemp(prefix="cosmic-bench-", suffix=".lua")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        seconds = max(1, int(round(duration)))
        command = [wrk_path(), "-t%d" % min(threads, concurrency),
                   "-c%d" % concurrency, "-d%ds" % seconds,
                   "--timeout", "%ds" % max(1, int(timeout)), "--latency",
                   "-s", script, "http://%s:%d%s" % (LOCALHOST, port, path)]
        out = subprocess.run(command, capture_output=True, text=True,
                             timeout=seconds + timeout + 30)
    finally:
        os.unlink(script)
    text = out.stdout
    if out.returncode != 0:
        raise RuntimeError("wrk failed: %s" % (out.stderr or text).strip())
    rps = re.search(r"Requests/sec:\s*([0-9.]+)", text)
    total = re.search(r"([0-9]+) requests in", text)
    p50 = re.search(r"^\s*50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", text, re.M)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*([0-9]+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect ([0-9]+), read ([0-9]+), "
                     r"write ([0-9]+), timeout ([0-9]+)", text)
    if sock:
        # A server that closes after each answer shows up as read errors
        # in some wrk builds; connect errors and timeouts are real failures.
        errors += int(sock.group(1)) + int(sock.group(4))
    if not (rps and p50 and p99):
        raise RuntimeError("cannot parse wrk output:\n" + text)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _ms(p50.group(1)),
        "p99_ms": _ms(p99.group(1)),
        "requests": int(total.group(1)) if total else 0,
        "errors": errors,
        "connections": None,
    }
