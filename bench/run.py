#!/usr/bin/env python3
"""Benchmark cosmic.py against a hand-written floor and its peers.

    python bench/run.py [--quick] [--smoke] [--only SECTION[,SECTION]]
                        [--rounds N] [--loadgen auto|wrk|python]

Sections (``--only`` takes the number or the name):

1 ``inprocess``   WSGI apps called directly: POST /actions/divide, GET /City/1
2 ``validation``  a 200-record nested payload through several validators
3 ``http``        servers under 16 keep-alive clients; gunicorn; client calls
4 ``import``      ``python -X importtime -c "import cosmic"`` versus bottle

Every measurement runs in interleaved rounds (each contender once per round,
in a rotating order); the table shows the median across rounds, the ratio to
a baseline measured in the same run, and the target with a mark. Peers that
are not importable get a "not installed" row; nothing is installed here.
``--smoke`` runs everything with tiny counts to prove that it works and
exits 0 when every section ran; targets are never enforced (the marks are
information). See bench/README.md.
"""

import argparse
import gc
import importlib
import importlib.util
import io
import json
import os
import platform
import random
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for _path in (HERE, REPO):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import bench_apps  # noqa: E402
import loadgen  # noqa: E402

perf_counter_ns = time.perf_counter_ns


# -- settings -----------------------------------------------------------------

class Settings:
    """How long to measure; one instance per mode."""

    def __init__(self, mode, rounds, budget, http_rounds, http_duration,
                 client_calls, import_runs, concurrency=16):
        self.mode = mode
        self.rounds = rounds              # in-process and validation rounds
        self.budget = budget              # seconds per contender per round
        self.http_rounds = http_rounds
        self.http_duration = http_duration  # seconds per load run
        self.client_calls = client_calls  # sequential calls per round
        self.import_runs = import_runs
        self.concurrency = concurrency


MODES = {
    "full": Settings("full", rounds=7, budget=0.3, http_rounds=7,
                     http_duration=2.0, client_calls=500, import_runs=11),
    "quick": Settings("quick", rounds=5, budget=0.05, http_rounds=3,
                      http_duration=1.0, client_calls=100, import_runs=5),
    "smoke": Settings("smoke", rounds=2, budget=0.003, http_rounds=1,
                      http_duration=0.3, client_calls=5, import_runs=1),
}

SECTIONS = ["inprocess", "validation", "http", "import"]


# -- output -------------------------------------------------------------------

def _can_print(text):
    try:
        text.encode(sys.stdout.encoding or "ascii")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


if _can_print("✓✗≤≥µ±÷"):
    OK, BAD, LE, GE, MICRO, PM, DIV = "✓", "✗", "≤", "≥", "µ", "±", "÷"
else:  # pragma: no cover - a terminal without UTF-8
    OK, BAD, LE, GE, MICRO, PM, DIV = "ok", "MISS", "<=", ">=", "u", "+-", "/"


class Target:
    """A goal for one measured number: ``Target("<=", 1.6)``."""

    def __init__(self, op, value, unit="x"):
        self.op, self.value, self.unit = op, value, unit

    def met(self, measured):
        if measured != measured:  # nan
            return False
        if self.op == "<=":
            return measured <= self.value
        return measured >= self.value

    def text(self):
        op = LE if self.op == "<=" else GE
        if self.unit == "x":
            number = "%g" % self.value
            return "%s %s%sx" % (op, number, "" if "." in number else ".0")
        return "%s %g %s" % (op, self.value, self.unit)

    def mark(self, measured):
        return "%s %s" % (self.text(), OK if self.met(measured) else BAD)


SUMMARY = []   # (section, what, measured, paired, target text, met)
FAILURES = []  # (section, error text)


def paired(values, bases):
    """Median of per-round ratios (rounds paired in time): less sensitive
    to a machine whose background load drifts than the ratio of medians."""
    ratios = [v / b for v, b in zip(values, bases) if b]
    return statistics.median(ratios) if ratios else float("nan")


def record(section, what, measured, target, fmt="%.2fx", pair=None):
    met = target.met(measured)
    SUMMARY.append((section, what, fmt % measured,
                    "-" if pair is None else fmt % pair, target.text(), met))
    return target.mark(measured)


def print_table(header, rows, left=1):
    """Print rows of strings aligned; the first ``left`` columns to the
    left, the others to the right (the last one, a note, unpadded)."""
    table = [header] + rows
    widths = [max(len(row[i]) if i < len(row) else 0 for row in table)
              for i in range(len(header))]
    for n, row in enumerate(table):
        cells = []
        for i, cell in enumerate(row):
            if i < left:
                cells.append(cell.ljust(widths[i]))
            elif i == len(row) - 1 and i == len(header) - 1:
                cells.append(cell)
            else:
                cells.append(cell.rjust(widths[i]))
        print("  " + "  ".join(cells).rstrip())
        if n == 0:
            print("  " + "-" * (sum(widths) + 2 * (len(widths) - 1)))
    sys.stdout.flush()


def title(text):
    print()
    print("== %s ==" % text)
    sys.stdout.flush()


def fmt_num(value, digits=0):
    if value != value:
        return "-"
    return "{:,.{}f}".format(value, digits)


def spread(values):
    """Half the range across rounds, relative to the median."""
    if len(values) < 2:
        return "-"
    med = statistics.median(values)
    if not med:
        return "-"
    return "%s%.1f%%" % (PM, 50.0 * (max(values) - min(values)) / med)


def installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def version_of(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        module = sys.modules.get(name)
        return getattr(module, "__version__", "?")


# -- in-process timing --------------------------------------------------------

def time_loop(fn, n):
    """Nanoseconds for n calls of fn, collector off (same for everyone)."""
    gc.collect()
    gc.disable()
    try:
        loop = range(n)
        start = perf_counter_ns()
        for _ in loop:
            fn()
        return perf_counter_ns() - start
    finally:
        gc.enable()


def calibrate(fn, budget):
    """Calls per round so that one round of fn takes about ``budget`` s."""
    fn()  # warm up caches and lazy set-up
    probe_target = min(0.02, budget) * 1e9
    n = 1
    while True:
        total = time_loop(fn, n)
        if total >= probe_target or n >= 1 << 22:
            break
        n *= 2 if total * 8 >= probe_target else 8
    per_call = total / n
    return max(1, int(budget * 1e9 / per_call))


def interleaved(contenders, settings):
    """{name: [ns per call, one per round]} for {name: fn}, interleaved."""
    names = list(contenders)
    counts = {name: calibrate(contenders[name], settings.budget)
              for name in names}
    samples = {name: [] for name in names}
    for r in range(settings.rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            total = time_loop(contenders[name], counts[name])
            samples[name].append(total / counts[name])
    return samples


# -- section 1: in-process WSGI -----------------------------------------------

def base_environ(method, path, content_type=None, body=b""):
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "cosmic-bench",
        "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ


def _ignore_start_response(status, headers, exc_info=None):
    return _ignore_write


def _ignore_write(data):
    pass


def make_caller(app, environ, body):
    """A no-argument function doing one full WSGI call of app.

    Every contender gets this same function: a copy of the prebuilt
    environ, a fresh BytesIO for wsgi.input, the body iterable joined and
    closed as a server would.
    """
    BytesIO = io.BytesIO

    def call():
        env = environ.copy()
        env["wsgi.input"] = BytesIO(body)
        result = app(env, _ignore_start_response)
        try:
            return b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return call


def call_once(app, environ, body):
    """(status code, headers dict, body) of one call, for the checks."""
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status
        seen["headers"] = {k.lower(): v for k, v in headers}
        return _ignore_write

    env = environ.copy()
    env["wsgi.input"] = io.BytesIO(body)
    result = app(env, start_response)
    try:
        data = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return int(seen["status"].split()[0]), seen["headers"], data


def inprocess_apps():
    """[(label, app or None)]; None for a peer that is not installed."""
    apps = [("cosmic", None), ("raw WSGI (floor)", bench_apps.raw_app)]
    for name, factory in bench_apps.PEER_FACTORIES.items():
        apps.append((name, factory() if installed(name) else None))
    return apps


DIVIDE_BAD_INPUTS = [
    ("bool numerator", "application/json",
     b'{"numerator": true, "denominator": 5}'),
    ("string denominator", "application/json",
     b'{"numerator": 10, "denominator": "5"}'),
    ("missing key", "application/json", b'{"numerator": 10}'),
    ("extra key", "application/json",
     b'{"numerator": 10, "denominator": 5, "x": 1}'),
    ("not an object", "application/json", b"[10, 5]"),
    ("zero denominator", "application/json",
     b'{"numerator": 10, "denominator": 0}'),
    ("invalid JSON", "application/json", b'{"numerator": 10,'),
    ("wrong Content-Type", "text/plain", bench_apps.DIVIDE_BODY),
]


def check_contender(label, app, environ, body, expected, bad_cases):
    status, headers, data = call_once(app, environ, body)
    assert status == 200, "%s answered %d: %r" % (label, status, data)
    assert data == expected, "%s body %r differs from cosmic's %r" % (
        label, data, expected)
    assert headers.get("content-type", "").startswith("application/json"), \
        "%s Content-Type %r" % (label, headers.get("content-type"))
    assert headers.get("content-length") == str(len(data)), \
        "%s Content-Length %r" % (label, headers.get("content-length"))
    for case, env, case_body, want in bad_cases:
        status = call_once(app, env, case_body)[0]
        assert status == want, "%s answered %d for %s (expected %d)" % (
            label, status, case, want)


def run_inprocess_case(key, what, cosmic_app, environ, body, bad_cases,
                       settings, notes, variants=()):
    """``variants``: more cosmic apps, ``(label, app, what, target)``,
    each also compared with the cosmic row (the ratio to it is recorded)."""
    apps = inprocess_apps()
    apps[0] = ("cosmic", cosmic_app)
    apps[1:1] = [(label, app) for label, app, _, _ in variants]
    versus_cosmic = {label: (text, target)
                     for label, _, text, target in variants}
    expected = call_once(cosmic_app, environ, body)[2]
    contenders = {}
    for label, app in apps:
        if app is None:
            continue
        check_contender(label, app, environ, body, expected, bad_cases)
        contenders[label] = make_caller(app, environ, body)
    title("1%s. in-process %s (%d rounds, ~%g s per contender per round)"
          % (key, what, settings.rounds, settings.budget))
    print("  body: %s" % expected.decode())
    samples = interleaved(contenders, settings)
    floor = statistics.median(samples["raw WSGI (floor)"])
    rows = []
    for label, app in apps:
        if app is None:
            rows.append([label, "-", "-", "-", "-", "not installed"])
            continue
        med = statistics.median(samples[label])
        ratio = med / floor
        if label == "cosmic":
            note = record("1%s in-process" % key,
                          "cosmic %s raw, %s" % (DIV, what), ratio,
                          Target("<=", 1.6), pair=paired(
                              samples[label], samples["raw WSGI (floor)"]))
        elif label in versus_cosmic:
            text, target = versus_cosmic[label]
            cosmic_med = statistics.median(samples["cosmic"])
            note = record("1%s in-process" % key, text, cosmic_med / med,
                          target, pair=paired(samples["cosmic"],
                                              samples[label]))
            note = "cosmic %s this: %.3fx, %s" % (DIV, cosmic_med / med, note)
        elif label.startswith("raw"):
            note = "baseline"
        else:
            note = notes.get(label, "")
        rows.append([label, "%.2f" % (med / 1000), fmt_num(1e9 / med),
                     spread(samples[label]), "%.2fx" % ratio, note])
    print_table(["contender", MICRO + "s/call", "calls/s",
                 "spread", DIV + " raw", "target"], rows)




def section_inprocess(settings):
    bad = []
    for case, ctype, case_body in DIVIDE_BAD_INPUTS:
        env = base_environ("POST", bench_apps.DIVIDE_PATH, ctype, case_body)
        bad.append((case, env, case_body, 400))
    environ = base_environ("POST", bench_apps.DIVIDE_PATH,
                           "application/json", bench_apps.DIVIDE_BODY)
    run_inprocess_case(
        "a", "POST /actions/divide", bench_apps.cosmic_divide_app, environ,
        bench_apps.DIVIDE_BODY, bad, settings,
        {"falcon": "ref: was 2.31x", "bottle": "ref: was 3.60x"})

    environ = base_environ("GET", bench_apps.CITY_PATH)
    missing = [("unknown id", base_environ("GET", "/City/999"), b"", 404)]
    # The ETag costs little: cosmic (ETags on) against the same server
    # with etags=False, in the same rounds.
    etags_off = ("cosmic, ETags off", bench_apps.cosmic_city_app_no_etags,
                 "cosmic ETags on %s off, GET /City/1" % DIV,
                 Target("<=", 1.05))
    run_inprocess_case("b", "GET /City/1", bench_apps.cosmic_city_app,
                       environ, b"", missing, settings, {},
                       variants=[etags_off])


# -- section 2: validation ----------------------------------------------------

def validation_type():
    from cosmic import (Array, Boolean, Float, Integer, String, Struct,
                        optional, required)
    location = Struct([required("lat", Float), required("lon", Float),
                       optional("label", String)])
    return Array(Struct([
        required("id", Integer),
        required("name", String),
        required("active", Boolean),
        required("score", Float),
        optional("note", String),
        required("samples", Array(Float)),
        required("location", location),
    ]))


def constrained_validation_type():
    """validation_type() with 8 constraints (bounds, lengths, item count):
    what the rules cost next to the same schema without them."""
    from cosmic import (Array, Boolean, Float, Integer, String, Struct,
                        optional, required)
    text = String(max_length=64)
    location = Struct([required("lat", Float(minimum=-90, maximum=90)),
                       required("lon", Float(minimum=-180, maximum=180)),
                       optional("label", text)])
    return Array(Struct([
        required("id", Integer(minimum=1)),
        required("name", text),
        required("active", Boolean),
        required("score", Float(minimum=0, maximum=100)),
        optional("note", text),
        required("samples", Array(Float, max_items=16)),
        required("location", location),
    ]))


def make_payload(n=200, seed=1234):
    rnd = random.Random(seed)
    records = []
    for i in range(n):
        record_ = {
            "id": i + 1,
            "name": "record-%d" % i,
            "active": i % 3 != 0,
            "score": round(rnd.uniform(0, 100), 3),
            "samples": [round(rnd.uniform(-1, 1), 6) for _ in range(8)],
            "location": {"lat": round(rnd.uniform(-90, 90), 5),
                         "lon": round(rnd.uniform(-180, 180), 5)},
        }
        if i % 2 == 0:
            record_["note"] = "note %d" % i
        if i % 4 == 1:
            record_["location"]["label"] = "site %d" % i
        records.append(record_)
    # as it would come off the wire
    return json.loads(json.dumps(records))


def _corrupt(payload, change):
    data = json.loads(json.dumps(payload))
    change(data)
    return data


def _set(path, value):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _delete(path):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return change


CORRUPTIONS = [
    ("id is a bool", _set([150, "id"], True)),
    ("name missing", _delete([77, "name"])),
    ("unexpected field", _set([3, "extra"], 1)),
    ("sample is a string", _set([199, "samples", 5], "0.5")),
    ("nested lat missing", _delete([10, "location", "lat"])),
    ("active is an int", _set([42, "active"], 1)),
    ("record is a list", _set([60], [])),
]


_HAND_KEYS = frozenset(("id", "name", "active", "score", "note", "samples",
                        "location"))
_HAND_LOCATION_KEYS = frozenset(("lat", "lon", "label"))


def hand_validate(data):
    """The floor: a pure-Python check written for exactly this shape.

    Same rules as the schema (exact types, bool is not a number, ints are
    numbers, required and optional fields, nothing else allowed); returns
    the data unchanged, as fastjsonschema does.
    """
    if type(data) is not list:
        raise ValueError("not a list")
    for rec in data:
        if type(rec) is not dict or not rec.keys() <= _HAND_KEYS:
            raise ValueError("bad record")
        try:
            ident = rec["id"]
            name = rec["name"]
            active = rec["active"]
            score = rec["score"]
            samples = rec["samples"]
            location = rec["location"]
        except KeyError:
            raise ValueError("missing field") from None
        if type(ident) is not int or type(name) is not str or \
                type(active) is not bool or \
                (type(score) is not float and type(score) is not int):
            raise ValueError("bad field")
        if "note" in rec and type(rec["note"]) is not str:
            raise ValueError("bad note")
        if type(samples) is not list:
            raise ValueError("bad samples")
        for x in samples:
            if type(x) is not float and type(x) is not int:
                raise ValueError("bad sample")
        if type(location) is not dict or \
                not location.keys() <= _HAND_LOCATION_KEYS:
            raise ValueError("bad location")
        try:
            lat = location["lat"]
            lon = location["lon"]
        except KeyError:
            raise ValueError("missing coordinate") from None
        if (type(lat) is not float and type(lat) is not int) or \
                (type(lon) is not float and type(lon) is not int):
            raise ValueError("bad coordinate")
        if "label" in location and type(location["label"]) is not str:
            raise ValueError("bad label")
    return data


def pydantic_validator():
    import pydantic

    strict = pydantic.ConfigDict(strict=True, extra="forbid")

    class Location(pydantic.BaseModel):
        model_config = strict
        lat: float
        lon: float
        label: str = ""

    class Record(pydantic.BaseModel):
        model_config = strict
        id: int
        name: str
        active: bool
        score: float
        note: str = ""
        samples: list[float]
        location: Location

    return pydantic.TypeAdapter(list[Record]).validate_python


def section_validation(settings):
    records_type = validation_type()
    schema = records_type.json_schema()
    schema = dict(schema, **{"$schema":
                             "https://json-schema.org/draft/2020-12/schema"})
    payload = make_payload()
    validators = [("cosmic Array(Struct).from_json", records_type.from_json),
                  ("constrained cosmic (8 rules)",
                   constrained_validation_type().from_json),
                  ("hand-written (floor)", hand_validate)]
    if installed("fastjsonschema"):
        import fastjsonschema
        validators.append(("fastjsonschema", fastjsonschema.compile(schema)))
    else:
        validators.append(("fastjsonschema", None))
    if installed("jsonschema"):
        import jsonschema
        validator = jsonschema.Draft202012Validator(schema)
        validators.append(("jsonschema Draft202012", validator.validate))
    else:
        validators.append(("jsonschema Draft202012", None))
    if installed("pydantic"):
        validators.append(("pydantic TypeAdapter (strict)",
                           pydantic_validator()))
    else:
        validators.append(("pydantic TypeAdapter (strict)", None))

    for label, fn in validators:
        if fn is None:
            continue
        fn(payload)  # accepts: raises otherwise
        for what, change in CORRUPTIONS:
            bad = _corrupt(payload, change)
            try:
                fn(bad)
            except Exception:
                continue
            raise AssertionError("%s accepted a payload with %s"
                                 % (label, what))
    native = records_type.from_json(payload)
    assert native == payload, "cosmic changed the payload"

    contenders = {label: (lambda fn=fn: fn(payload))
                  for label, fn in validators if fn is not None}
    title("2. validation of %d nested records (%d rounds, ~%g s per "
          "contender per round)" % (len(payload), settings.rounds,
                                    settings.budget))
    print("  every validator accepts the payload and rejects %d corrupted "
          "copies (%s)" % (len(CORRUPTIONS),
                           ", ".join(w for w, _ in CORRUPTIONS)))
    samples = interleaved(contenders, settings)
    base_label = "fastjsonschema"
    base = statistics.median(samples[base_label]) \
        if base_label in samples else None
    hand = statistics.median(samples["hand-written (floor)"])
    rows = []
    for label, fn in validators:
        if fn is None:
            rows.append([label, "-", "-", "-", "-", "-", "not installed"])
            continue
        med = statistics.median(samples[label])
        ratio = med / base if base else float("nan")
        note = ""
        if label.startswith("cosmic"):
            if base:
                note = record("2 validation", "cosmic %s fastjsonschema"
                              % DIV, ratio, Target("<=", 0.8), pair=paired(
                                  samples[label], samples[base_label]))
            else:
                note = "%s 0.8x (no baseline)" % LE
        elif label.startswith("hand"):
            note = "ref: %s0.58x" % ("~" if LE == "<=" else "≈")
        elif label == base_label:
            note = "baseline"
        rows.append([label, "%.1f" % (med / 1000),
                     fmt_num(len(payload) * 1e9 / med), spread(samples[label]),
                     "%.2fx" % ratio if base else "n/a",
                     "%.2fx" % (med / hand), note])
    print_table(["validator", MICRO + "s/payload", "records/s", "spread",
                 DIV + " fastjsonschema", DIV + " hand", "target"], rows)


# -- section 3: HTTP ----------------------------------------------------------

PROCESSES = []  # every subprocess started, stopped in main's finally


class ServerProcess:
    """A server in a subprocess (its own process group), on 127.0.0.1."""

    def __init__(self, name, argv, port=None, stop_signal=signal.SIGTERM):
        self.name = name
        self.argv = argv
        self.port = port
        self.stop_signal = stop_signal
        self.proc = None
        self.log = tempfile.TemporaryFile()

    def start(self, timeout=20.0):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [REPO, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                            else []))
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self.log, start_new_session=True)
        PROCESSES.append(self)
        if self.port is None:
            line = self._first_line(timeout)
            match = re.search(r"http://([0-9.]+):([0-9]+)/", line)
            if not match:
                raise RuntimeError("%s printed %r" % (self.name, line))
            self.port = int(match.group(2))
        threading.Thread(target=self._drain, daemon=True).start()
        self._wait_port(timeout)
        return self

    def _first_line(self, timeout):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                output = self.log_tail() or data.decode(errors="replace")
                raise RuntimeError("%s did not start: %s" % (self.name,
                                                             output))
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                data += chunk
        return data.split(b"\n", 1)[0].decode("utf-8", "replace")

    def _drain(self):
        try:
            while self.proc.stdout.read(65536):
                pass
        except (OSError, ValueError):
            pass

    def _wait_port(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited: %s" % (self.name,
                                                      self.log_tail()))
            try:
                socket.create_connection((loadgen.LOCALHOST, self.port),
                                         timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("%s does not listen on port %d"
                                       % (self.name, self.port)) from None
                time.sleep(0.05)

    def log_tail(self, size=2000):
        try:
            self.log.seek(0)
            return self.log.read().decode("utf-8", "replace")[-size:].strip()
        except (OSError, ValueError):
            return ""

    def url(self, path="/"):
        return "http://%s:%d%s" % (loadgen.LOCALHOST, self.port, path)

    def stop(self):
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, self.stop_signal)
            except OSError:
                pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the group (gunicorn workers)
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if proc.stdout is not None:
            proc.stdout.close()
        self.log.close()
        self.proc = None


def stop_all():
    while PROCESSES:
        server = PROCESSES.pop()
        try:
            server.stop()
        except Exception:  # keep stopping the others
            traceback.print_exc()


def free_port():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((loadgen.LOCALHOST, 0))
        return sock.getsockname()[1]
    finally:
        sock.close()


def cosmic_serve():
    target = os.path.join(HERE, "bench_apps.py") + ":mathy"
    return ServerProcess("python -m cosmic serve", [
        sys.executable, "-m", "cosmic", "serve", target, "--port", "0"])


def xmlrpc_serve(http11=False):
    argv = [sys.executable, os.path.join(HERE, "xmlrpc_server.py"),
            "--port", "0"]
    if http11:
        argv.append("--http11")
    return ServerProcess("xmlrpc server", argv)


def gunicorn_serve(app_name, workers=2, worker_class="sync"):
    last = None
    for _ in range(3):  # the free port may be taken in between
        port = free_port()
        server = ServerProcess("gunicorn %s" % app_name, [
            sys.executable, "-m", "gunicorn", "-w", str(workers),
            "-k", worker_class, "-b", "%s:%d" % (loadgen.LOCALHOST, port),
            "--chdir", HERE, "--log-level", "warning",
            "bench_apps:%s" % app_name], port=port, stop_signal=signal.SIGINT)
        try:
            return server.start(timeout=30)
        except RuntimeError as err:
            last = err
            server.stop()
            if server in PROCESSES:
                PROCESSES.remove(server)
    raise last


DIVIDE_REQUEST = ("POST", bench_apps.DIVIDE_PATH, bench_apps.DIVIDE_BODY,
                  {"Content-Type": "application/json"})


def xmlrpc_request():
    import xmlrpc.client
    body = xmlrpc.client.dumps((10, 5), "divide").encode("utf-8")
    return ("POST", "/RPC2", body, {"Content-Type": "text/xml"})


def fetch(port, request):
    import http.client
    method, path, body, headers = request
    conn = http.client.HTTPConnection(loadgen.LOCALHOST, port, timeout=10)
    try:
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        return response.status, response.read(), \
            response.getheader("Connection", "")
    finally:
        conn.close()


def choose_loadgen(choice, settings):
    if choice == "wrk" or (choice == "auto" and settings.mode != "smoke"
                           and loadgen.wrk_path()):
        if not loadgen.wrk_path():
            raise RuntimeError("--loadgen wrk: wrk is not on PATH")
        return "wrk", loadgen.wrk_load, "%s (-t2 -c%d)" % (
            loadgen.wrk_version(), settings.concurrency)
    return "python", loadgen.python_load, (
        "Python threads + http.client keep-alive (%d clients, one process)"
        % settings.concurrency)


def run_load_rounds(targets, settings, load):
    """targets: [(label, port, request, expected)] -> {label: [results]}."""
    results = {label: [] for label, _, _, _ in targets}
    for r in range(settings.http_rounds):
        shift = r % len(targets)
        for label, port, request, expected in \
                targets[shift:] + targets[:shift]:
            method, path, body, headers = request
            results[label].append(load(
                port, method, path, body, headers, expected,
                concurrency=settings.concurrency,
                duration=settings.http_duration))
    return results


def load_row(label, runs, base_rps, note):
    rps = statistics.median([x["rps"] for x in runs])
    p50 = statistics.median([x["p50_ms"] for x in runs])
    p99 = statistics.median([x["p99_ms"] for x in runs])
    errors = sum(x["errors"] for x in runs)
    conns = [x["connections"] for x in runs]
    requests = sum(x["requests"] for x in runs)
    conn_text = "-" if None in conns else "%d/%d" % (sum(conns), requests)
    ratio = rps / base_rps if base_rps else float("nan")
    if errors:
        note = (note + " " if note else "") + "[errors!]"
    return [label, fmt_num(rps), spread([x["rps"] for x in runs]),
            "%.2f" % p50, "%.2f" % p99, str(errors), conn_text,
            "%.2fx" % ratio, note], (rps, p50, p99)


LOAD_HEADER = ["server", "req/s", "spread", "p50 ms", "p99 ms", "errors",
               "conns/reqs", DIV + " base", "target"]


def http_serve_vs_xmlrpc(settings, load, load_name):
    cosmic_srv = cosmic_serve().start()
    xml_srv = xmlrpc_serve().start()
    xml11_srv = xmlrpc_serve(http11=True).start()
    xml_req = xmlrpc_request()
    status, xml_expected, _ = fetch(xml_srv.port, xml_req)
    import xmlrpc.client
    assert status == 200 and xmlrpc.client.loads(
        xml_expected.decode())[0] == (2,), xml_expected
    status, body, _ = fetch(cosmic_srv.port, DIVIDE_REQUEST)
    assert status == 200 and body == b"2", (status, body)
    assert fetch(xml11_srv.port, xml_req)[:2] == (200, xml_expected)

    targets = [
        ("xmlrpc ThreadingMixIn (stock)", xml_srv.port, xml_req,
         xml_expected),
        ("xmlrpc, handler on HTTP/1.1", xml11_srv.port, xml_req,
         xml_expected),
        ("python -m cosmic serve", cosmic_srv.port, DIVIDE_REQUEST, b"2"),
    ]
    title("3a. HTTP POST divide, %d concurrent keep-alive clients, %g s x "
          "%d rounds" % (settings.concurrency, settings.http_duration,
                         settings.http_rounds))
    print("  load generator: %s" % load_name)
    results = run_load_rounds(targets, settings, load)
    base_rps = statistics.median(
        [x["rps"] for x in results[targets[0][0]]])
    rows = []
    for label, _, _, _ in targets:
        if label.startswith("python -m cosmic"):
            row, (rps, p50, p99) = load_row(label, results[label], base_rps,
                                            "")
            note = record("3a HTTP", "cosmic serve %s xmlrpc req/s" % DIV,
                          rps / base_rps, Target(">=", 2.0), pair=paired(
                              [x["rps"] for x in results[label]],
                              [x["rps"] for x in results[targets[0][0]]]))
            note += ", p99 " + record("3a HTTP", "cosmic serve p99",
                                      p99, Target("<=", 20, "ms"),
                                      "%.2f ms")
            row[-1] = note + (" [errors!]" if row[5] != "0" else "")
        else:
            note = "baseline" if label == targets[0][0] else "context"
            row, _ = load_row(label, results[label], base_rps, note)
        rows.append(row)
    print_table(LOAD_HEADER, rows)
    print("  conns/reqs: TCP connections opened / requests sent (Python load "
          "generator only; equal numbers: the server closes after every "
          "answer). errors: failed exchanges and answers other than the "
          "expected 200 (wrk: non-2xx, connect errors and timeouts)")
    return cosmic_srv, xml_srv


def http_gunicorn(settings, load, load_name):
    title("3c. gunicorn -w 2 -k sync, POST divide, %d clients, %g s x %d "
          "rounds" % (settings.concurrency, settings.http_duration,
                      settings.http_rounds))
    if not installed("gunicorn"):
        print("  gunicorn: not installed")
        return
    print("  load generator: %s" % load_name)
    raw_srv = gunicorn_serve("raw_app")
    cosmic_srv = gunicorn_serve("cosmic_divide_app")
    for srv in (raw_srv, cosmic_srv):
        status, body, _ = fetch(srv.port, DIVIDE_REQUEST)
        assert status == 200 and body == b"2", (srv.name, status, body)
    targets = [("raw WSGI under gunicorn", raw_srv.port, DIVIDE_REQUEST,
                b"2"),
               ("cosmic Server(api).wsgi_app", cosmic_srv.port,
                DIVIDE_REQUEST, b"2")]
    try:
        results = run_load_rounds(targets, settings, load)
    finally:
        raw_srv.stop()
        cosmic_srv.stop()
    base_rps = statistics.median([x["rps"] for x in results[targets[0][0]]])
    rows = []
    row, _ = load_row(targets[0][0], results[targets[0][0]], base_rps,
                      "baseline")
    rows.append(row)
    row, (rps, _, _) = load_row(targets[1][0], results[targets[1][0]],
                                base_rps, "")
    row[-1] = record("3c gunicorn", "cosmic %s raw req/s under gunicorn"
                     % DIV, rps / base_rps, Target(">=", 0.9), pair=paired(
                         [x["rps"] for x in results[targets[1][0]]],
                         [x["rps"] for x in results[targets[0][0]]])) + (
                         " [errors!]" if row[5] != "0" else "")
    rows.append(row)
    print_table(LOAD_HEADER, rows)


def http_clients(settings, cosmic_srv, xml_srv):
    import cosmic
    import xmlrpc.client

    title("3b. client round trip, sequential calls (%d per round x %d "
          "rounds)" % (settings.client_calls, settings.http_rounds))
    client = cosmic.connect(cosmic_srv.url())
    proxy = xmlrpc.client.ServerProxy(xml_srv.url("/RPC2"))
    try:
        assert client.actions.divide(numerator=10, denominator=5) == 2
        assert proxy.divide(10, 5) == 2
        calls = {
            "xmlrpc.client.ServerProxy(url).divide(10, 5)":
                lambda: proxy.divide(10, 5),
            "cosmic.connect(url).actions.divide(...)":
                lambda: client.actions.divide(numerator=10, denominator=5),
        }
        names = list(calls)
        p50s = {name: [] for name in names}
        means = {name: [] for name in names}
        for r in range(settings.http_rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                fn = calls[name]
                lat = []
                for _ in range(settings.client_calls):
                    t0 = perf_counter_ns()
                    fn()
                    lat.append(perf_counter_ns() - t0)
                lat.sort()
                p50s[name].append(loadgen.percentile(lat, 0.5) / 1e6)
                means[name].append(statistics.mean(lat) / 1e6)
    finally:
        client.close()
        proxy("close")()
    base = statistics.median(p50s[names[0]])
    rows = []
    for name in names:
        p50 = statistics.median(p50s[name])
        if name.startswith("cosmic"):
            note = record("3b client", "cosmic client p50 %s xmlrpc" % DIV,
                          p50 / base, Target("<=", 0.8),
                          pair=paired(p50s[name], p50s[names[0]]))
        else:
            note = "baseline"
        rows.append([name, "%.3f" % p50, spread(p50s[name]),
                     "%.3f" % statistics.median(means[name]),
                     "%.2fx" % (p50 / base), note])
    print_table(["client call", "p50 ms", "spread", "mean ms",
                 DIV + " xmlrpc", "target"], rows)


def section_http(settings, loadgen_choice):
    _, load, load_name = choose_loadgen(loadgen_choice, settings)
    try:
        cosmic_srv, xml_srv = http_serve_vs_xmlrpc(settings, load, load_name)
        http_clients(settings, cosmic_srv, xml_srv)
    finally:
        stop_all()
    try:
        http_gunicorn(settings, load, load_name)
    finally:
        stop_all()


# -- section 4: import time ---------------------------------------------------

def import_time_us(module, cache_dir):
    """Cumulative import time of the top-level module, in microseconds.

    Bytecode is cached in ``cache_dir`` (PYTHONPYCACHEPREFIX) for every
    module alike, so that a PYTHONDONTWRITEBYTECODE environment does not
    make cosmic.py compile from source each time while site-packages have
    their .pyc files from pip.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = cache_dir
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import " + module],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError("import %s failed: %s" % (module,
                                                     out.stderr[-500:]))
    for line in reversed(out.stderr.splitlines()):
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() == module and \
                not parts[2].startswith("  "):
            return int(parts[1])
    raise RuntimeError("no import time line for %s" % module)


def section_import(settings):
    modules = [("cosmic", True), ("bottle", installed("bottle")),
               ("falcon", installed("falcon")), ("flask", installed("flask"))]
    present = [m for m, ok in modules if ok]
    samples = {m: [] for m in present}
    with tempfile.TemporaryDirectory(prefix="cosmic-bench-pyc-") as cache:
        for module in present:
            import_time_us(module, cache)  # warm-up: write the bytecode
        for r in range(settings.import_runs):
            shift = r % len(present)
            for module in present[shift:] + present[:shift]:
                samples[module].append(import_time_us(module, cache))
    title("4. import time: python -X importtime -c \"import X\", cumulative "
          "time of the top-level module, median of %d runs"
          % settings.import_runs)
    print("  bytecode cached for all (warm-up run, PYTHONPYCACHEPREFIX in a "
          "temporary directory)")
    base = statistics.median(samples["bottle"]) if "bottle" in samples \
        else None
    rows = []
    for module, ok in modules:
        if not ok:
            rows.append([module, "-", "-", "-", "not installed"])
            continue
        med = statistics.median(samples[module])
        ratio = med / base if base else float("nan")
        if module == "cosmic":
            note = record("4 import", "import cosmic %s import bottle" % DIV,
                          ratio, Target("<=", 0.5), pair=paired(
                              samples["cosmic"], samples["bottle"])) \
                if base else \
                "%s 0.5x (bottle not installed)" % LE
        elif module == "bottle":
            note = "baseline"
        else:
            note = "context"
        rows.append([module, "%.1f" % (med / 1000), spread(samples[module]),
                     "%.2fx" % ratio if base else "n/a", note])
    print_table(["module", "ms", "spread", DIV + " bottle", "target"], rows)


# -- main ---------------------------------------------------------------------

def parse_sections(text):
    if not text:
        return list(SECTIONS)
    chosen = []
    for part in text.split(","):
        part = part.strip().lower()
        if part.isdigit() and 1 <= int(part) <= len(SECTIONS):
            part = SECTIONS[int(part) - 1]
        if part not in SECTIONS:
            raise SystemExit("run.py: unknown section %r; choose from %s or "
                             "1-%d" % (part, ", ".join(SECTIONS),
                                       len(SECTIONS)))
        if part not in chosen:
            chosen.append(part)
    return chosen


def print_header(settings, sections):
    import cosmic
    peers = []
    for name in ("bottle", "falcon", "flask", "fastjsonschema", "jsonschema",
                 "pydantic", "gunicorn"):
        peers.append("%s %s" % (name, version_of(name)) if installed(name)
                     else "%s not installed" % name)
    print("cosmic.py %s benchmark, mode %s, sections %s" % (
        cosmic.__version__, settings.mode, ", ".join(sections)))
    print("Python %s (%s) on %s, %d CPUs" % (
        platform.python_version(), platform.python_implementation(),
        platform.platform(terse=True), os.cpu_count() or 0))
    print("peers: " + ", ".join(peers))
    print("wrk: %s" % (loadgen.wrk_version() or "not installed"))
    sys.stdout.flush()


def print_summary():
    title("summary (targets are information; nothing is enforced)")
    rows = [[section, what, measured, pair, target, OK if met else BAD]
            for section, what, measured, pair, target, met in SUMMARY]
    if rows:
        print_table(["section", "measure", "measured", "paired", "target",
                     ""], rows, left=2)
        print("  measured: ratio of the medians (the tables' figure, marked);"
              " paired: median of the per-round ratios, for comparison")
    met = sum(1 for row in SUMMARY if row[5])
    print("  %d of %d targets met" % (met, len(SUMMARY)))
    for section, error in FAILURES:
        print("  section %s FAILED: %s" % (section, error))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark cosmic.py against a floor and its peers.")
    parser.add_argument("--quick", action="store_true",
                        help="shorter runs (under a minute in all)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny counts, just prove every section runs")
    parser.add_argument("--only", metavar="SECTION",
                        help="comma-separated sections: %s (or 1-%d)"
                        % (", ".join(SECTIONS), len(SECTIONS)))
    parser.add_argument("--rounds", type=int,
                        help="override the number of rounds")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"],
                        default="auto", help="HTTP load generator (auto: wrk "
                        "when on PATH, except with --smoke)")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    base = MODES[mode]
    settings = Settings(mode, base.rounds, base.budget, base.http_rounds,
                        base.http_duration, base.client_calls,
                        base.import_runs)
    if args.rounds:
        settings.rounds = settings.http_rounds = settings.import_runs = \
            max(1, args.rounds)
    sections = parse_sections(args.only)
    started = time.monotonic()
    print_header(settings, sections)
    runners = {
        "inprocess": lambda: section_inprocess(settings),
        "validation": lambda: section_validation(settings),
        "http": lambda: section_http(settings, args.loadgen),
        "import": lambda: section_import(settings),
    }
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        for name in sections:
            try:
                runners[name]()
            except KeyboardInterrupt:
                raise
            except Exception as err:
                traceback.print_exc()
                FAILURES.append((name, "%s: %s" % (type(err).__name__, err)))
    finally:
        stop_all()
        signal.signal(signal.SIGTERM, previous)
    print_summary()
    print("  total %.1f s" % (time.monotonic() - started))
    return 1 if FAILURES else 0


def _terminate(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
