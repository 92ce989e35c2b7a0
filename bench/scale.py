"""Optional benchmark section ``scale``: the places example on PostgreSQL,
two gunicorn instances behind nginx, next to one instance alone.

    python bench/run.py --only scale [--quick]

Starts a PostgreSQL server in a temporary directory (as the ``postgres``
user through runuser when run as root, since initdb refuses root), two
gunicorn instances of examples/places.py (gthread, 2 workers x 4 threads
each) on PLACES_DATABASE_URL, and nginx balancing them with the README's
configuration. Then, in interleaved rounds, 16 keep-alive clients run
reads (``GET /City/<id>``) and writes (``PUT /City/<id>``, a transaction
each, every client on its own row) through nginx and against one instance
directly. Prints req/s, p50 and p99 per row, as measured: the load
generator, nginx, both instances and PostgreSQL share this machine's
cores, so no scaling is expected or targeted. Needs psycopg, gunicorn,
nginx and PostgreSQL; says which is missing otherwise. Only 127.0.0.1.
"""

import glob
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LOCALHOST = "127.0.0.1"
CLIENTS = 16

NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    access_log off;
    upstream places {{
        server 127.0.0.1:{port_a} max_fails=1 fail_timeout=1s;
        server 127.0.0.1:{port_b} max_fails=1 fail_timeout=1s;
        keepalive 32;
        keepalive_timeout 5s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://places;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Request-ID $request_id;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 2;
        }}
    }}
}}
"""


def missing_tools():
    """What this section needs and does not find, as a list of names."""
    missing = []
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing.append("psycopg")
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        missing.append("gunicorn")
    if not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
        missing.append("nginx")
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        missing.append("PostgreSQL")
    return missing


def free_port():
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("%s did not come up in %d s" % (what, timeout))
        time.sleep(0.05)


def answers(port):
    try:
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=2)
        conn.request("GET", "/spec.json")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


class Stack:
    """PostgreSQL, two gunicorn instances and nginx; stop() ends them all,
    by pid."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cosmic-bench-scale-")
        os.chmod(self.dir, 0o755)
        self.procs = []
        self.pg_pid = None
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    def run(self, args):
        done = subprocess.run(args, capture_output=True, text=True,
                              timeout=120)
        if done.returncode:
            raise RuntimeError("%s: %s" % (args[0], done.stderr[-1000:]))

    def start(self):
        import psycopg
        bin_dir = os.path.dirname(sorted(
            glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1])
        pg_dir = os.path.join(self.dir, "pg")
        os.mkdir(pg_dir)
        prefix = []
        if os.geteuid() == 0:  # initdb refuses root
            import pwd
            user = pwd.getpwnam("postgres")
            os.chown(pg_dir, user.pw_uid, user.pw_gid)
            prefix = ["runuser", "-u", "postgres", "--"]
        pg_port = free_port()
        data = os.path.join(pg_dir, "data")
        self.run(prefix + [os.path.join(bin_dir, "initdb"), "-D", data,
                           "-U", "postgres", "--auth=trust", "--no-sync",
                           "-E", "UTF8", "--locale=C"])
        self.run(prefix + [
            os.path.join(bin_dir, "pg_ctl"), "-D", data, "-w", "-l",
            os.path.join(pg_dir, "log"), "-o",
            "-p %d -k %s -c listen_addresses=127.0.0.1" % (pg_port, pg_dir),
            "start"])
        with open(os.path.join(data, "postmaster.pid")) as f:
            self.pg_pid = int(f.readline())
        with psycopg.connect(host=pg_dir, port=pg_port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE ROLE places LOGIN")
            conn.execute("CREATE DATABASE places OWNER places")
        url = "postgresql://places@127.0.0.1:%d/places" % pg_port
        self.ports = [free_port() for _ in range(3)]
        env = dict(os.environ, PLACES_DATABASE_URL=url, PYTHONPATH=REPO)
        for port in self.ports[:2]:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w",
                 "2", "--threads", "4", "--keep-alive", "10",
                 "--log-level", "warning", "-b", "%s:%d" % (LOCALHOST, port),
                 "places:wsgi_app"], cwd=os.path.join(REPO, "examples"),
                env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))
            wait_until(lambda port=port: answers(port), 60, "gunicorn")
        nginx_dir = os.path.join(self.dir, "nginx")
        os.mkdir(nginx_dir)
        os.chmod(nginx_dir, 0o755)
        conf = os.path.join(nginx_dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(dir=nginx_dir, port=self.ports[2],
                                      port_a=self.ports[0],
                                      port_b=self.ports[1]))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.procs.append(subprocess.Popen(
            [nginx, "-c", conf, "-p", nginx_dir, "-e",
             os.path.join(nginx_dir, "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        wait_until(lambda: answers(self.ports[2]), 30, "nginx")

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait(10)
        self.procs = []
        if self.pg_pid is not None:
            os.kill(self.pg_pid, signal.SIGINT)  # fast shutdown
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(self.pg_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.kill(self.pg_pid, signal.SIGKILL)
            self.pg_pid = None
        shutil.rmtree(self.dir, ignore_errors=True)


def load(port, kind, cities, duration):
    """CLIENTS keep-alive clients for ``duration`` seconds: reads or writes,
    each client on its own city. Returns (req/s, p50 ms, p99 ms, errors)."""
    latencies, errors = [], [0]
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS + 1)
    stop = [0.0]

    def client(slot):
        path = "/City/%s" % cities[slot]
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=30)
        mine, failed = [], 0
        body = json.dumps({"population": slot})
        headers = {"Content-Type": "application/json"}
        barrier.wait()
        while time.perf_counter() < stop[0]:
            start = time.perf_counter()
            try:
                if kind == "read":
                    conn.request("GET", path)
                else:
                    conn.request("PUT", path, body, headers)
                res = conn.getresponse()
                res.read()
                if res.status != 200:
                    failed += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                failed += 1
                continue
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client, args=(n,), daemon=True)
               for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    stop[0] = started + duration
    barrier.wait()
    for thread in threads:
        thread.join(duration + 60)
    elapsed = time.perf_counter() - started
    latencies.sort()
    if not latencies:
        return 0.0, float("nan"), float("nan"), errors[0]
    pick = lambda f: latencies[min(len(latencies) - 1,  # noqa: E731
                                   int(f * len(latencies)))] * 1000
    return len(latencies) / elapsed, pick(0.5), pick(0.99), errors[0]


def section_scale(settings, title, print_table):
    """Run the section with run.py's settings and table printer."""
    title("5. scale-out: nginx + 2 x gunicorn (gthread, 2 workers x 4 "
          "threads) + PostgreSQL, %d clients, %g s x %d rounds"
          % (CLIENTS, settings.http_duration, settings.http_rounds))
    missing = missing_tools()
    if missing:
        print("  skipped: needs %s" % ", ".join(missing))
        return
    stack = Stack()
    try:
        cities = []
        for n in range(CLIENTS):
            conn = http.client.HTTPConnection(LOCALHOST, stack.ports[2], 10)
            conn.request("POST", "/City", json.dumps({"name": "B%d" % n}),
                         {"Content-Type": "application/json"})
            res = conn.getresponse()
            cities.append(json.loads(res.read())["_links"]["self"]["href"]
                          .rsplit("/", 1)[1])
            conn.close()
        targets = [("nginx -> 2 instances", stack.ports[2]),
                   ("1 instance direct", stack.ports[0])]
        results = {(label, kind): [] for label, _ in targets
                   for kind in ("read", "write")}
        order = [(label, port, kind) for label, port in targets
                 for kind in ("read", "write")]
        for r in range(settings.http_rounds):
            shift = r % len(order)
            for label, port, kind in order[shift:] + order[:shift]:
                results[label, kind].append(
                    load(port, kind, cities, settings.http_duration))
    finally:
        stack.stop()
    rows = []
    for label, _ in targets:
        for kind in ("read", "write"):
            runs = results[label, kind]
            rows.append([
                label, "GET /City/<id>" if kind == "read" else
                "PUT /City/<id>",
                "%.0f" % statistics.median(x[0] for x in runs),
                "%.2f" % statistics.median(x[1] for x in runs),
                "%.2f" % statistics.median(x[2] for x in runs),
                str(sum(x[3] for x in runs))])
    print_table(["setup", "request", "req/s", "p50 ms", "p99 ms", "errors"],
                rows, left=2)
    print("  writes: one transaction each, every client on its own row. "
          "Everything shares this machine's %d cores with the load "
          "generator: figures as measured, no scaling target"
          % (os.cpu_count() or 0))
