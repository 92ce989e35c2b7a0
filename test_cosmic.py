"""Tests for cosmic.py: python -m unittest -v

The file reads top to bottom: the shared fixtures (the repository, the
skip-if-missing helper, servers in a thread, in-process WSGI calls, raw
HTTP, `python -m cosmic serve` in a subprocess), then the fixtures of each
topic, then one TestCase class per feature in the order of cosmic.py's
sections (exceptions, request-scoped globals, strict JSON, schema types,
tools, API and models, the WSGI application, the development server, the
client, OpenAPI, the docs page, the contract diff, the testing helpers and
the import paths, the command line), then the examples, the hardening, fuzzing
and load suites, and the README. Tests that need a test-only package (see
the "test" extra in setup.cfg), a Debian package or Chromium skip without
it, and fail instead when COSMIC_REQUIRE_EXTRAS=1 (as .ci/run sets).
"""

import ast
import asyncio
import base64
import collections
import contextlib
import copy
import datetime
import decimal
import errno
import glob
import hashlib
import html
import html.parser
import http.client
import importlib
import importlib.util
import io
import itertools
import json
import logging
import os
import pickle
import pwd
import queue
import random
import re
import select
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import types
import typing
import unittest
import urllib.request
import uuid
import warnings
import wsgiref.util
import wsgiref.validate
from collections import OrderedDict
from socketserver import ThreadingMixIn
from unittest import mock
from urllib.parse import quote, unquote_to_bytes, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import cosmic
import cosmic as httpserver
from cosmic import (_DOCS_CSS, _docs_example, _docs_html, _DOCS_JS,
                    _docs_type_html, _docs_type_text, docs_html, openapi)
from cosmic.api import API
from cosmic.client import (APIClient, BaseAPIClient, ClientLoggingMixin,
                           WsgiAPIClient)
from cosmic.exceptions import (HTTPError, NotFound, RemoteHTTPError, SpecError,
                               ThreadLocalMissing)
from cosmic.globals import (SwappableDict, ThreadLocalDict, cosmos,
                            ensure_thread_local, storage, thread_local,
                            thread_local_middleware)
from cosmic.http import Server, error_response
from cosmic.models import BaseModel
from cosmic.testing import served_api
from cosmic.tools import (args_to_datum, assert_is_compatible,
                          deserialize_json, get_args, is_string_type,
                          serialize_json, string_to_json,
                          validate_underscore_identifier)
from cosmic.types import (APISpec, Array, Binary, Boolean, Box, DateTime,
                          Decimal, Float, Integer, JSON, Link, Map, Model,
                          OrderedMap, UUID,
                          Patch, Representation, Schema, String, Struct,
                          UnicodeDecodeValidationError,
                          UnknownTypeValidationError, URLParams,
                          ValidationError, optional, optional_link, required,
                          required_link)

try:
    import jsonschema as _jsonschema
except ImportError:  # pragma: no cover - depends on the environment
    _jsonschema = None
try:
    import hypothesis as _hypothesis
    from hypothesis import strategies as _hypothesis_st
except ImportError:  # pragma: no cover - depends on the environment
    _hypothesis = _hypothesis_st = None
try:
    import psycopg as _psycopg
except ImportError:  # pragma: no cover - depends on the environment
    _psycopg = None


# -- Shared fixtures ----------------------------------------------------------
# What many test classes use: the repository, the optional test-only
# packages, and (below) the servers and clients the tests talk to.

# The repository: this file lives next to cosmic.py.
_ROOT = os.path.dirname(os.path.abspath(__file__))
_THIS_FILE = os.path.abspath(__file__)
_REQUIRE_EXTRAS = os.environ.get("COSMIC_REQUIRE_EXTRAS") == "1"
_MISSING = object()
_JSON = ("Content-Type", "application/json")
if _ROOT not in sys.path:  # the examples import as modules
    sys.path.insert(0, _ROOT)


def _need(name, found=_MISSING):
    """Skip the test without an optional tool; with COSMIC_REQUIRE_EXTRAS=1,
    fail instead.

    Without ``found``, import the test-only package ``name`` and return it;
    with it, ``found`` is what was looked up (a module, a path, ...) and a
    false value means missing.
    """
    if found is _MISSING:
        try:
            return importlib.import_module(name)
        except ImportError:
            found = None
    if found:
        return found
    _need_missing(name)


def _need_missing(name):
    """Skip (COSMIC_REQUIRE_EXTRAS=1: fail) because ``name`` is missing."""
    message = ("%s is not installed (a test extra: pip install -e '.[test]', "
               "or a Debian package)" % name)
    if _REQUIRE_EXTRAS:
        raise AssertionError(message + ", but COSMIC_REQUIRE_EXTRAS=1")
    raise unittest.SkipTest(message + "; COSMIC_REQUIRE_EXTRAS=1 makes this "
                            "a failure")


# -- Waiting and subprocesses -------------------------------------------------

def _wait(predicate, timeout, what=None, step=0.02):
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its
    last value. With ``what``, a timeout fails the test instead."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            if what is not None:
                raise AssertionError("timed out after %s s waiting for %s"
                                     % (timeout, what))
            return value
        pause.wait(step)


def _python(args, cwd=None, pythonpath=True, timeout=60):
    """Run the current Python in a fresh process (PYTHONPATH: the
    repository, or unset with ``pythonpath=False``); the CompletedProcess
    with text output."""
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    if pythonpath:
        env["PYTHONPATH"] = _ROOT
    else:
        env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable] + list(args), cwd=cwd or _ROOT,
                          env=env, capture_output=True, text=True,
                          timeout=timeout)


# -- Servers in a thread ------------------------------------------------------

class _WsgirefHandler(WSGIRequestHandler):
    """wsgiref's request handler without its access log. It keeps the
    request's own Content-Type as ``environ["test.content_type"]``
    (wsgiref fills CONTENT_TYPE with "text/plain" when it is absent)."""

    def log_message(self, *args):
        pass

    def get_environ(self):
        environ = super().get_environ()
        environ["test.content_type"] = self.headers.get("Content-Type", "")
        return environ


class _WsgirefThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadServer:
    """Serve a WSGI app on 127.0.0.1 (a free port) in a thread: cosmic's
    development server (``limits`` are its keyword arguments), or with
    ``wsgiref=True`` the standard library's. ``url``, ``port``,
    ``server``; ``close()`` (alias ``stop()``) shuts it down."""

    def __init__(self, app, wsgiref=False, **limits):
        if wsgiref:
            self.server = make_server(
                "127.0.0.1", 0, app, server_class=_WsgirefThreadingServer,
                handler_class=_WsgirefHandler)
        else:
            limits.setdefault("log", False)
            self.server = cosmic._make_server(app, "127.0.0.1", 0, **limits)
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    stop = close


# -- In-process WSGI calls ----------------------------------------------------

class _Answer(collections.namedtuple("_Answer", "status headers body")):
    """An answer: ``(status, headers, body)``, the status an int and the
    headers a dict with lower-case names; ``status_line`` ("200 OK"),
    ``pairs`` (the headers as sent) and ``elapsed`` (seconds) beside."""

    @classmethod
    def of(cls, status_line, pairs, body, elapsed=0.0):
        status_line = str(status_line)
        answer = cls(int(status_line[:3]),
                     {name.lower(): value for name, value in pairs}, body)
        answer.status_line, answer.pairs = status_line, list(pairs)
        answer.elapsed = elapsed
        return answer


def _wsgi_environ(method, path, body=b"", headers=(), query="", environ=None):
    """A PEP 3333 environ: ``path`` is PATH_INFO as a server hands it over
    (already decoded); ``headers`` a dict or (name, value) pairs (repeated
    names joined with ", "); ``environ`` entries override (None removes)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    env = {"REQUEST_METHOD": method, "PATH_INFO": path,
           "QUERY_STRING": query, "SCRIPT_NAME": "",
           "wsgi.input": io.BytesIO(body)}
    if body:
        env["CONTENT_LENGTH"] = str(len(body))
    if isinstance(headers, dict):
        headers = headers.items()
    for name, value in headers or ():
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        env[key] = env[key] + ", " + value if key in env else value
    for key, value in (environ or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    setup_testing_defaults(env)
    return env


def _wsgi_run(app, env, validate=True):
    """Run a WSGI app on an environ, through wsgiref.validate unless
    ``validate=False`` (for environs it refuses, and in threads: its
    warning filter is not thread-safe); the ``_Answer``, checked for
    duplicate headers."""
    seen = {}

    def start_response(status, pairs, exc_info=None):
        seen["status"], seen["pairs"] = status, list(pairs)
        return lambda data: None

    start = time.perf_counter()
    if validate:
        # The validator warns about methods outside RFC 9110 (FOO, get).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wsgiref.validate.WSGIWarning)
            result = validator(app)(env, start_response)
    else:
        result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    names = [name.lower() for name, _ in seen["pairs"]]
    if len(names) != len(set(names)):
        raise AssertionError("duplicate headers: %r" % seen["pairs"])
    return _Answer.of(seen["status"], seen["pairs"], body,
                      time.perf_counter() - start)


def _wsgi(app, method, path, body=b"", headers=(), query="", environ=None,
          validate=True):
    """Call a WSGI app in-process: the ``_Answer`` (status, headers, body)."""
    return _wsgi_run(app, _wsgi_environ(method, path, body, headers, query,
                                        environ), validate)


def _wsgi_json(app, method, path, datum, headers=None, **kwargs):
    """Like _wsgi, with a JSON body and Content-Type."""
    all_headers = dict({"Content-Type": "application/json"},
                       **(headers or {}))
    return _wsgi(app, method, path, json.dumps(datum), all_headers, **kwargs)


# -- Raw HTTP over a socket ---------------------------------------------------

class _Raw:
    """A raw client connection to ``address`` (or a port on 127.0.0.1):
    send bytes, read whole responses (``response()``: an ``_Answer``) or
    what has arrived (``recv``). No single read waits longer than
    ``timeout`` seconds."""

    def __init__(self, address, timeout=10.0):
        if isinstance(address, int):
            address = ("127.0.0.1", address)
        self.timeout = timeout
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buf = b""

    def sendall(self, data):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    send = sendall

    def settimeout(self, timeout):
        self.timeout = timeout
        self.sock.settimeout(timeout)

    def recv(self, size):
        """Up to ``size`` bytes of what has arrived; b"" at EOF."""
        if self.buf:
            data, self.buf = self.buf[:size], self.buf[size:]
            return data
        self.sock.settimeout(self.timeout)
        return self.sock.recv(size)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no complete response in %.1f s"
                                 % self.timeout)
        self.sock.settimeout(left)
        data = self.sock.recv(262144)
        if not data:
            raise EOFError("connection closed mid-response")
        self.buf += data

    def _take(self, size, deadline):
        while len(self.buf) < size:
            self._fill(deadline)
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def response(self, head_only=False):
        """The next response: ``_Answer`` (elapsed: time to read it)."""
        start = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        pairs = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            pairs.append((name, value.strip()))
        headers = {name.lower(): value for name, value in pairs}
        if head_only or status in (204, 304) or status < 200:
            body = b""
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]), deadline)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self._line(deadline).split(b";")[0], 16)
                if not size:
                    while self._line(deadline):
                        pass
                    break
                parts.append(self._take(size, deadline))
                self._take(2, deadline)
            body = b"".join(parts)
        else:
            try:
                while True:
                    self._fill(deadline)
            except EOFError:
                pass
            body, self.buf = self.buf, b""
        return _Answer.of(status, pairs, body, time.perf_counter() - start)

    def closed_within(self, timeout):
        """Whether the server closes (EOF or reset) within ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _request_bytes(method, target, headers=(), body=b"", close=True,
                   length=True):
    """The bytes of one HTTP/1.1 request (Host always, Connection optional)."""
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: 127.0.0.1"]
    lines += ["%s: %s" % pair for pair in headers]
    if body and length:
        lines.append("Content-Length: %d" % len(body))
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _exchange(address, data, head_only=False, timeout=10.0,
              half_close=False):
    """Send raw request bytes on a new connection; read one response.

    Returns ``(answer or None, seconds)``: None when the server closed the
    connection without answering.
    """
    conn = _Raw(address, timeout)
    start = time.perf_counter()
    try:
        conn.send(data)
        if half_close:
            conn.sock.shutdown(socket.SHUT_WR)
        try:
            answer = conn.response(head_only)
        except (EOFError, ConnectionError):
            if conn.buf:
                raise
            answer = None
        return answer, time.perf_counter() - start
    finally:
        conn.close()


def _http(address, method, target, headers=(), body=b"", head_only=None,
          timeout=10.0, close=True):
    """One request on a new connection to ``address`` (a port on 127.0.0.1,
    (host, port) or a URL): the ``_Answer``. ``close=False`` leaves out
    "Connection: close" (the server may keep the connection open)."""
    if isinstance(address, str):
        parts = urlsplit(address)
        address = (parts.hostname, parts.port)
    if head_only is None:
        head_only = method == "HEAD"
    answer, _ = _exchange(
        address, _request_bytes(method, target, headers, body, close),
        head_only, timeout)
    if answer is None:
        raise ConnectionError("%s %s: connection closed without an answer"
                             % (method, target[:80]))
    return answer


def _http_json(address, method, target, datum=None, timeout=10.0):
    """_http with ``datum`` (unless None) as a JSON body, on a connection
    the server may keep open."""
    if datum is None:
        return _http(address, method, target, timeout=timeout, close=False)
    return _http(address, method, target, [_JSON],
                 json.dumps(datum).encode("utf-8"), timeout=timeout,
                 close=False)


# -- `python -m cosmic serve` in a subprocess ---------------------------------

_SERVING = re.compile(
    r"Serving (\S+) on (http://([^/:]+):(\d+))/ \(Ctrl-C to stop\)\n\Z")


class _Serve:
    """``python -m cosmic serve TARGET --port 0 ARGS`` in a subprocess.

    Its first stdout line announces it: ``first_line``, then ``name``,
    ``url``, ``host``, ``port`` and ``address``. A server that does not
    announce itself within ``timeout`` seconds fails the test (with
    ``check=False`` those stay None). ``env`` adds environment variables;
    PYTHONPATH starts with the repository, then ``path``. stderr goes to a
    file (``stderr_text()``). ``nofile`` lowers the open-files limit;
    ``session=True`` runs it in a session of its own, all of whose
    processes ``stop()`` kills, with Ctrl-C (SIGINT) handled as in a
    terminal. With ``test``, ``close()`` runs at its
    cleanup.
    """

    def __init__(self, target, *args, env=None, cwd=None, path=(),
                 test=None, timeout=30, nofile=None, session=False,
                 check=True):
        argv = ["serve", target, "--port", "0"] + list(args)
        if nofile or session:
            # Ctrl-C reaches it as it reaches a server in a terminal, even
            # when this process ignores SIGINT (a background job's does).
            code = ("import runpy, signal, sys\n"
                    "signal.signal(signal.SIGINT, "
                    "signal.default_int_handler)\n")
            if nofile:
                code += ("import resource\nresource.setrlimit("
                         "resource.RLIMIT_NOFILE, (%d, %d))\n"
                         % (nofile, nofile))
            code += ("sys.argv = %r\nrunpy.run_module('cosmic', "
                     "run_name='__main__', alter_sys=True)\n"
                     % (["cosmic"] + argv))
            command = [sys.executable, "-c", code]
        else:
            command = [sys.executable, "-m", "cosmic"] + argv
        full_env = dict(os.environ, **(env or {}))
        full_env["PYTHONPATH"] = os.pathsep.join(
            [_ROOT] + list(path) +
            [p for p in [full_env.get("PYTHONPATH")] if p])
        self.session = session
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            command, cwd=cwd or _ROOT, env=full_env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self.log, text=True, start_new_session=session)
        self.pid = self.proc.pid
        if test is not None:
            test.addCleanup(self.close)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        self.first_line = self.proc.stdout.readline() if ready else ""
        match = _SERVING.match(self.first_line)
        self.name = self.url = self.host = self.port = self.address = None
        if match is not None:
            self.name, self.url, self.host = match.group(1, 2, 3)
            self.port = int(match.group(4))
            self.address = (self.host, self.port)
        elif check:
            _, err = self.close()
            raise AssertionError("cosmic serve %s did not start within "
                                 "%s s: %r\n%s" % (target, timeout,
                                                    self.first_line, err))

    def stderr_text(self):
        self.log.seek(0)
        return self.log.read()

    def rss_kib(self):
        """Resident memory of the server process (VmRSS), in KiB."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.pid)

    def stop(self, grace=30):
        """SIGTERM, SIGKILL after ``grace`` seconds; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.session:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # any worker left
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.stdout.close()
        return self.proc.returncode

    def close(self):
        """Stop it; (exit code, stderr text)."""
        code = self.stop()
        if self.log.closed:
            return code, ""
        text = self.stderr_text()
        self.log.close()
        return code, text


# -- The shipped examples -----------------------------------------------------

_EXAMPLES = itertools.count(1)


def _load_example(name, env=None):
    """Import examples/<name>.py afresh under a private module name, its
    API in a registry of its own, with ``env`` in os.environ while it
    imports (a None value: the variable unset).

    The API keeps working after the registry is restored: its models are
    bound to it at registration.
    """
    path = os.path.join(_ROOT, "examples", name + ".py")
    spec = importlib.util.spec_from_file_location(
        "_example_%s_%d" % (name, next(_EXAMPLES)), path)
    module = importlib.util.module_from_spec(spec)
    saved = {key: os.environ.get(key) for key in env or {}}
    for key, value in (env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        with cosmic.cosmos.swap({}):
            spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return module


def _load_places(db_or_env):
    """examples/places.py afresh on a SQLite file (or with an environment
    naming its database: PLACES_DB or PLACES_DATABASE_URL)."""
    env = {"PLACES_DB": None, "PLACES_DATABASE_URL": None}
    if isinstance(db_or_env, str):
        env["PLACES_DB"] = db_or_env
    else:
        env.update(db_or_env)
    return _load_example("places", env)


def _close_places(module):
    """Close the database connection the calling thread opened in a places
    module, if any."""
    conn = getattr(module._local, "conn", None)
    if conn is not None:
        conn.close()
        module._local.conn = None


# -- Fixtures: schema types ---------------------------------------------------
# Tests of the type system (docs/protocol.md#types), URLParams
# (docs/protocol.md#query-strings) and the import paths.

_TY_UTC = datetime.timezone.utc


def _ty_error(func, *args):
    """The ValidationError (or subclass) that func(*args) raises."""
    try:
        result = func(*args)
    except ValidationError as err:
        return err
    raise AssertionError("no ValidationError; returned %r" % (result,))


def _ty_message(func, *args):
    return str(_ty_error(func, *args))


def _ty_tz(hours, minutes=0):
    return datetime.timezone(datetime.timedelta(hours=hours, minutes=minutes))


_TY_TYPES_ALL = (
    "Integer Float Boolean String Binary DateTime JSON Array Map OrderedMap "
    "Struct Schema Model Link Representation Patch APISpec URLParams Box "
    "required optional required_link optional_link ValidationError "
    "BasicWrapper ParametrizedWrapper BasicPrimitive ParametrizedPrimitive "
    "standard_types UUID Decimal").split()

_TY_PATHS = {
    "api": ["API", "BaseAPI", "Object"],
    "models": ["BaseModel"],
    "types": _TY_TYPES_ALL,
    "exceptions": ["SpecError", "NotFound", "HTTPError", "RemoteHTTPError",
                   "ThreadLocalMissing"],
    "http": ["Server", "error_response", "Endpoint", "SpecEndpoint",
             "ActionEndpoint", "GetByIdEndpoint", "CreateEndpoint",
             "UpdateEndpoint", "DeleteEndpoint", "GetListEndpoint"],
    "client": ["BaseAPIClient", "APIClient", "WsgiAPIClient",
               "ClientLoggingMixin"],
    "globals": ["ThreadLocalDict", "SwappableDict", "thread_local",
                "thread_local_middleware", "ensure_thread_local", "storage",
                "cosmos"],
    "tools": ["get_args", "args_to_datum", "assert_is_compatible",
              "serialize_json", "deserialize_json", "string_to_json",
              "validate_underscore_identifier", "is_string_type"],
    "testing": ["DBModel", "db", "served_api", "Wildcard"],
    "legacy_teleport": [],
}

_TY_LAZY = ["urllib.request", "http.client", "http.server",
            "wsgiref.simple_server", "argparse", "inspect", "logging",
            "socket", "ssl"]


#
# Random schemas and values; cosmic's accept/reject decision must equal that
# of jsonschema's Draft 2020-12 validator on schema.json_schema(). The values
# stay inside what JSON Schema can express: calendar-valid dates (it cannot
# say "no February 30th"), OrderedMap orders that list each key of the map at
# most once (it cannot say "a permutation of the keys"), and ints that fit a
# float. No string ends in "\n": Python's re, which jsonschema uses for
# "pattern", lets "$" match before a final newline, which ECMA 262 does not.

_TY_CASES = 1000
_TY_SEED = 20131004
_TY_KEYS = ("a", "b", "id", "name", "x_y", "map", "order", "a/b", "~1",
            "caf\u00e9", "")
_TY_CITY = Link(Model("places.City"))
_TY_LEAVES = (Integer, Float, Boolean, String, Binary, DateTime, JSON,
              Model, _TY_CITY)
_TY_SCALARS = (None, True, False, 0, -3, 10 ** 20, 2.5, 1.0, -0.0, "", "x",
               "caf\u00e9", "YWJj", "2014-01-01T00:00:00", "a.B", "/City/3")
_TY_BAD = {
    "Integer": [True, False, 1.5, "1", None, [], {}, 2.0, 10 ** 20, 1e2],
    "Float": [True, False, "1.5", None, [1.0], {}, 3, 10 ** 20],
    "Boolean": [0, 1, 0.0, "true", None, [], {}],
    "String": [1, None, True, 1.5, ["a"], {"a": "b"}],
    "Binary": ["YWJ", "YW Jj", "YWJj!", "Y===", "YW-_", "YQ=", "YWJj====",
               "=", "YQ==YQ==", " YQ==", "\u0661\u0662\u0663\u0664", 12,
               None, [], "YQ==", ""],
    "DateTime": ["2013-10-04 13:05:25", "2013-10-04", "2013-10-04t13:05:25",
                 "2014-13-01T00:00:00", "2014-00-10T00:00", "2014-10-00T00:00",
                 "2013-10-04T24:00:00", "2013-10-04T13:60",
                 "2013-10-04T13:05:60", "2013-10-04T13:05:25.1234567",
                 "2013-10-04T13:05:25.", "2013-10-04T13", "20131004T130525",
                 "2013-10-04T13:05:25+24:00", "2013-10-04T13:05:25+05:60",
                 "2013-10-04T13:05:25+5", "2013-10-04T13:05:25 Z",
                 "2013-10-04T13:05:25z", "2013-10-04T13:05:25x",
                 "x2013-10-04T13:05:25", "13-10-04T13:05:25",
                 "2013-1-04T13:05:25", "\u0662\u0660\u0661\u0663-10-04T13:05",
                 "", 20131004, None, "2013-10-04T13:05:25+05:00"],
    "cosmic.Model": ["nodot", ".x", "x.", ".", "", 3, None, "a.b.c"],
    "cosmic.Link": ["7", "City/3", "/City/", "/Address/3", "", "/City/3/",
                    "/city/3", 3, None, "http://h/x/City/3"],
}


def _ty_random_json(rng, depth=2):
    roll = rng.random()
    if depth <= 0 or roll < 0.6:
        return rng.choice(_TY_SCALARS)
    if roll < 0.8:
        return [_ty_random_json(rng, depth - 1)
                for _ in range(rng.randint(0, 3))]
    return {key: _ty_random_json(rng, depth - 1)
            for key in rng.sample(_TY_KEYS, rng.randint(0, 3))}


def _ty_random_schema(rng, depth=0):
    """A random type, containers nested at most 3 deep."""
    if depth >= 3 or rng.random() < 0.35:
        return rng.choice(_TY_LEAVES)
    kind = rng.choice(("Array", "Map", "OrderedMap", "Struct", "Struct"))
    if kind == "Struct":
        fields = []
        for name in rng.sample(_TY_KEYS, rng.randint(0, 4)):
            helper = required if rng.random() < 0.6 else optional
            fields.append(helper(name, _ty_random_schema(rng, depth + 1),
                                 rng.choice((None, "Doc of %s." % name))))
        return Struct(fields)
    container = {"Array": Array, "Map": Map, "OrderedMap": OrderedMap}[kind]
    return container(_ty_random_schema(rng, depth + 1))


def _ty_datetime_text(rng):
    """An ISO 8601 text of a real date, in one of the accepted forms."""
    day = datetime.date.fromordinal(
        rng.randint(1, datetime.date.max.toordinal()))
    text = "%04d-%02d-%02dT%02d:%02d" % (day.year, day.month, day.day,
                                         rng.randrange(24), rng.randrange(60))
    if rng.random() < 0.8:
        text += ":%02d" % rng.randrange(60)
        if rng.random() < 0.5:
            text += "." + "".join(str(rng.randrange(10))
                                  for _ in range(rng.randint(1, 6)))
    return text + rng.choice(("", "", "Z", "+05:00", "-03:30", "+0545",
                              "-11", "+00:00", "+23:59", "-00:00"))


def _ty_valid_value(rng, schema):
    """A JSON value that schema accepts."""
    if schema is Integer:
        return rng.choice((0, 1, -7, 2 ** 31, 10 ** 20, -(10 ** 20), 3.0,
                           1e2))
    if schema is Float:
        return rng.choice((0.0, 1.5, -2.25, 1e300, 7, 10 ** 20, -0.0))
    if schema is Boolean:
        return rng.random() < 0.5
    if schema is String:
        return rng.choice(("", "abc", "caf\u00e9", "a b", "1", "null",
                           "\u2603", "a\nb"))
    if schema is Binary:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 7)))
        return base64.b64encode(data).decode("ascii")
    if schema is DateTime:
        return _ty_datetime_text(rng)
    if schema is JSON:
        return _ty_random_json(rng)
    if schema is Model:
        return rng.choice(("a.B", "places.City", "x.y.z", "a.."))
    if schema is _TY_CITY:
        return rng.choice(("/City/3", "http://h/x/City/abc",
                           "/City/caf\u00e9", "x/City/a b"))
    if isinstance(schema, Array):
        return [_ty_valid_value(rng, schema.param)
                for _ in range(rng.randint(0, 3))]
    if isinstance(schema, Map):
        return {key: _ty_valid_value(rng, schema.param)
                for key in rng.sample(_TY_KEYS, rng.randint(0, 3))}
    if isinstance(schema, OrderedMap):
        mapping = {key: _ty_valid_value(rng, schema.param)
                   for key in rng.sample(_TY_KEYS, rng.randint(0, 3))}
        order = list(mapping)
        rng.shuffle(order)
        return {"map": mapping, "order": order}
    if isinstance(schema, Struct):
        items = [(name, _ty_valid_value(rng, f["schema"]))
                 for name, f in schema.param.items()
                 if f["required"] or rng.random() < 0.5]
        rng.shuffle(items)
        return dict(items)
    raise AssertionError("no generator for %r" % (schema,))


def _ty_break(rng, schema, value):
    """A replacement for value, usually (not always) invalid for schema."""
    if isinstance(schema, Array):
        roll = rng.random()
        if roll < 0.3:
            return rng.choice(("x", {}, None, 1))
        if roll < 0.6 or not value:
            item = _ty_valid_value(rng, schema.param)
            return value + [_ty_break(rng, schema.param, item)]
        value[rng.randrange(len(value))] = rng.choice(_TY_SCALARS)
        return value
    if isinstance(schema, Map):
        roll = rng.random()
        if roll < 0.3:
            return rng.choice(([], "x", None, 2.5))
        key = rng.choice(_TY_KEYS)
        value[key] = _ty_break(rng, schema.param,
                               _ty_valid_value(rng, schema.param))
        return value
    if isinstance(schema, OrderedMap):
        ops = ["scalar", "no order", "no map", "extra", "order type",
               "map type", "value"]
        if value["order"]:
            ops += ["duplicate", "item type"]
        op = rng.choice(ops)
        if op == "scalar":
            return rng.choice(([], "x", None, 1))
        if op == "no order":
            del value["order"]
        elif op == "no map":
            del value["map"]
        elif op == "extra":
            value[rng.choice(("x", "maps", "Order"))] = 1
        elif op == "order type":
            value["order"] = rng.choice(("ab", None, {}))
        elif op == "map type":
            value["map"] = rng.choice(([], "ab", None))
        elif op == "duplicate":
            value["order"].append(rng.choice(value["order"]))
        elif op == "item type":
            value["order"][0] = rng.choice((1, None, ["a"]))
        else:
            key = rng.choice(_TY_KEYS)
            value["map"][key] = _ty_break(
                rng, schema.param, _ty_valid_value(rng, schema.param))
            if key not in value["order"]:
                value["order"].append(key)
        return value
    if isinstance(schema, Struct):
        ops = ["scalar", "extra"]
        if value:
            ops += ["drop", "null", "field"]
        op = rng.choice(ops)
        if op == "scalar":
            return rng.choice(([], "x", None, 1))
        if op == "extra":
            value[rng.choice(("zz", "extra") + _TY_KEYS)] = \
                _ty_random_json(rng, 1)
            return value
        name = rng.choice(list(value))
        if op == "drop":
            del value[name]
        elif op == "null":
            value[name] = None
        else:
            value[name] = _ty_break(rng, schema.param[name]["schema"],
                                    value[name])
        return value
    if schema is JSON:
        return _ty_random_json(rng)
    return rng.choice(_TY_BAD[schema.type_name])


def _ty_mutate(rng, schema, value):
    """value with one part (perhaps the whole) broken."""
    if isinstance(schema, Array):
        children = [(i, schema.param) for i in range(len(value))]
    elif isinstance(schema, Map):
        children = [(k, schema.param) for k in value]
    elif isinstance(schema, OrderedMap):
        # Into one value of the map, so that "order" stays consistent.
        if value["map"] and rng.random() >= 0.4:
            key = rng.choice(list(value["map"]))
            value["map"][key] = _ty_mutate(rng, schema.param,
                                           value["map"][key])
            return value
        children = []
    elif isinstance(schema, Struct):
        children = [(k, schema.param[k]["schema"]) for k in value]
    else:
        children = []
    if not children or rng.random() < 0.4:
        return _ty_break(rng, schema, value)
    key, child = rng.choice(children)
    value[key] = _ty_mutate(rng, child, value[key])
    return value


def _ty_verdict(schema, value):
    try:
        schema.from_json(value)
    except ValidationError:
        return False
    return True


def _ty_compare(schema, value, checked):
    """None when cosmic and jsonschema agree on value, else a description.

    Also checks that the exported JSON Schema is valid (once per schema
    text, cached in checked), that from_json leaves its input alone, and
    that accepted values round-trip through to_json.
    """
    validators = _jsonschema.Draft202012Validator
    js = schema.json_schema()
    key = json.dumps(js, sort_keys=True)
    if key not in checked:
        validators.check_schema(js)
        checked[key] = validators(js, format_checker=None)
    expected = checked[key].is_valid(value)
    before = json.dumps(value, sort_keys=True)
    got = _ty_verdict(schema, value)
    if json.dumps(value, sort_keys=True) != before:
        return "from_json changed its input: %r %s" % (schema, before)
    if got != expected:
        return "%r on %r: cosmic %s, jsonschema %s" % (
            schema, value, "accepts" if got else "rejects",
            "accepts" if expected else "rejects")
    if got:
        native = schema.from_json(value)
        again = schema.from_json(schema.to_json(native))
        if again != native:
            return "%r: %r does not round-trip (%r)" % (schema, native, again)
    return None


def _ty_case(rng, mutate_rate=0.6):
    schema = _ty_random_schema(rng)
    value = _ty_valid_value(rng, schema)
    if rng.random() < mutate_rate:
        value = _ty_mutate(rng, schema, value)
    return schema, json.loads(json.dumps(value))


# -- Fixtures: the WSGI application -------------------------------------------
# Tests of the server, actions, spec, models and globals of cosmic.py.

_SV_JSON = {"Content-Type": "application/json"}
_SV_SANE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,200}\Z")


def _sv_err(message):
    """The exact bytes of an error body."""
    return json.dumps({"error": message}).encode()


def _sv_isolate(test):
    """Give a test an empty API registry, restored afterwards."""
    swap = cosmos.swap({})
    swap.__enter__()
    test.addCleanup(swap.__exit__, None, None, None)


def _sv_allow(headers):
    """The methods of an Allow header, as a set."""
    return {m.strip() for m in headers["allow"].split(",")}


class _sv_NoRead:
    """A wsgi.input that records every attempt to read it."""

    def __init__(self):
        self.touched = []

    def read(self, *args):
        self.touched.append("read")
        return b""

    def readline(self, *args):
        self.touched.append("readline")
        return b""

    def readlines(self, *args):
        self.touched.append("readlines")
        return []

    def __iter__(self):
        self.touched.append("iter")
        return iter(())


_SV_SHOP_SPEC = """
{
  "name": "shop",
  "homepage": "http://shop.example.com",
  "actions": {
    "map": {
      "quote": {
        "accepts": {"type": "Struct", "param": {
          "map": {
            "item_id":  {"schema": {"type": "String"},  "required": true},
            "quantity": {"schema": {"type": "Integer"}, "required": false}
          },
          "order": ["item_id", "quantity"]}},
        "returns": {"type": "Float"},
        "doc": "Price for a quantity of an item."
      },
      "ping": {}
    },
    "order": ["quote", "ping"]
  },
  "models": {
    "map": {
      "Category": {
        "properties": {"map": {"name": {"schema": {"type": "String"},
                                        "required": true}},
                       "order": ["name"]},
        "links": {"map": {}, "order": []},
        "query_fields": {"map": {}, "order": []},
        "methods": {"get_by_id": true, "get_list": false, "create": false,
                    "update": false, "delete": false},
        "list_metadata": {"map": {}, "order": []}
      },
      "Item": {
        "properties": {
          "map": {
            "title": {"schema": {"type": "String"}, "required": true},
            "price": {"schema": {"type": "Float"}, "required": false,
                      "doc": "Unit price in EUR"}
          },
          "order": ["title", "price"]
        },
        "links": {"map": {"category": {"model": "shop.Category",
                                       "required": true}},
                  "order": ["category"]},
        "query_fields": {
          "map": {
            "category":  {"schema": {"type": "String"}, "required": false},
            "max_price": {"schema": {"type": "Float"},  "required": false}
          },
          "order": ["category", "max_price"]
        },
        "methods": {"get_by_id": true, "get_list": true, "create": true,
                    "update": false, "delete": false},
        "list_metadata": {"map": {"total": {"schema": {"type": "Integer"},
                                            "required": true}},
                          "order": ["total"]}
      }
    },
    "order": ["Category", "Item"]
  }
}
"""


def _sv_shop():
    """The shop of docs/protocol.md#spec-example, with handlers;
    (api, calls)."""
    calls = []
    shop = API('shop', homepage='http://shop.example.com')

    @shop.model
    class Category(BaseModel):
        methods = ['get_by_id']
        properties = [required('name', String)]

    @shop.model
    class Item(BaseModel):
        methods = ['get_by_id', 'get_list', 'create']
        properties = [required('title', String),
                      optional('price', Float, 'Unit price in EUR')]
        links = [required_link('category', Model('shop.Category'))]
        query_fields = [optional('category', String),
                        optional('max_price', Float)]
        list_metadata = [required('total', Integer)]

        @classmethod
        def get_list(cls, **query):
            calls.append(("get_list", query))
            return ([("1", {"title": "Hammer", "price": 9.5,
                            "category": "3"})], {"total": 1})

        @classmethod
        def create(cls, **patch):
            calls.append(("create", patch))
            return "2", dict(patch)

    @shop.action(accepts=Struct([required('item_id', String),
                                 optional('quantity', Integer)]),
                 returns=Float)
    def quote(item_id, quantity=1):
        """Price for a quantity of an item."""
        calls.append(("quote", item_id, quantity))
        return 2.5 * quantity

    @shop.action()
    def ping():
        pass

    return shop, calls


def _sv_mathy():
    """The seed's mathy API (actions add and divide)."""
    mathy = API("mathy")

    @mathy.action(accepts=Array(Integer), returns=Integer)
    def add(numbers):
        return sum(numbers)

    @mathy.action(accepts=Struct([
        required(u'numerator', Integer),
        required(u'denominator', Integer),
    ]), returns=Integer)
    def divide(numerator, denominator):
        return numerator / denominator

    return mathy


def _sv_cookbook():
    """Actions of the original tests' cookbook API, plus pluralize."""
    cookbook = API("cookbook")

    @cookbook.action(accepts=Struct([required("spicy", Boolean)]),
                     returns=String)
    def cabbage(spicy):
        return "kimchi" if spicy else "sauerkraut"

    @cookbook.action()
    def noop():
        pass

    @cookbook.action(accepts=String, returns=String)
    def pluralize(word):
        if word.endswith('y'):
            return word[:-1] + 'ies'
        return word + 's'

    return cookbook


def _sv_things(log=None):
    """An API with actions and models of every kind of route.

    ``Thing`` has every method, ``Recipe`` only get_list. Every handler
    appends to ``log``.
    """
    log = log if log is not None else []
    api = API("rt")

    @api.action()
    def noop():
        log.append(("noop",))

    @api.action(accepts=JSON, returns=JSON)
    def echo(value):
        log.append(("echo", value))
        return value

    @api.action(accepts=String)
    def takes(value):
        log.append(("takes", value))

    @api.model
    class Thing(BaseModel):
        methods = ["get_by_id", "get_list", "create", "update", "delete"]
        properties = [optional("name", String)]

        @classmethod
        def get_by_id(cls, id):
            log.append(("get_by_id", id))
            if id == "missing":
                raise NotFound
            return {"name": id}

        @classmethod
        def get_list(cls):
            log.append(("get_list",))
            return [("1", {"name": "one"})]

        @classmethod
        def create(cls, **patch):
            log.append(("create", patch))
            return "9", patch

        @classmethod
        def update(cls, id, **patch):
            log.append(("update", id, patch))
            return patch

        @classmethod
        def delete(cls, id):
            log.append(("delete", id))

    @api.model
    class Recipe(BaseModel):
        methods = ["get_list"]
        properties = [optional("name", String)]

        @classmethod
        def get_by_id(cls, id):
            log.append(("Recipe.get_by_id", id))
            return {}

        @classmethod
        def get_list(cls):
            log.append(("Recipe.get_list",))
            return []

    return api, log


def _sv_errors_api(log=None):
    """Actions and models whose handlers misbehave on purpose."""
    log = log if log is not None else []
    api = API("errs")

    @api.action(returns=Integer)
    def wrong_type():
        return "secret-text"

    @api.action(returns=Integer)
    def returns_none():
        return None

    @api.action()
    def returns_data():
        return "secret-text"

    @api.action()
    def crash():
        raise ValueError("secret-text")

    @api.action()
    def teapot():
        raise HTTPError(418, "teapot")

    @api.action()
    def lost():
        raise NotFound

    @api.action()
    def invalid_inside():
        raise ValidationError("secret-text")

    @api.action(accepts=Struct([required("a", Integer),
                                required("b", String),
                                optional("c", Array(Boolean))]))
    def strict(a, b, c=None):
        log.append(("strict", a, b, c))

    @api.model
    class Lost(BaseModel):
        methods = ["get_by_id", "get_list", "create", "update", "delete"]
        properties = [optional("name", String)]
        query_fields = [optional("n", Integer)]

        @classmethod
        def get_by_id(cls, id):
            raise NotFound

        @classmethod
        def get_list(cls, **query):
            raise NotFound

        @classmethod
        def create(cls, **patch):
            raise NotFound

        @classmethod
        def update(cls, id, **patch):
            raise NotFound

        @classmethod
        def delete(cls, id):
            raise NotFound

    return api


def _sv_places(log=None):
    """The seed's places API: City, seed-style handlers; (api, cities)."""
    log = log if log is not None else []
    cities = {"0": {"name": "Toronto"}, "1": {"name": "San Francisco"}}
    places = API("places")

    @places.model
    class City(BaseModel):
        methods = ["get_by_id", "create", "update", "delete", "get_list"]
        properties = [
            optional(u"name", String)
        ]
        query_fields = [
            optional(u"country", String)
        ]

        @classmethod
        def validate_patch(cls, datum):
            if "name" in datum and datum["name"][0].islower():
                raise ValidationError("Name must be capitalized",
                                      datum["name"])

        @classmethod
        def get_by_id(cls, id):
            log.append(("get_by_id", id))
            try:
                return cities[id]
            except KeyError:
                raise NotFound

        @classmethod
        def create(cls, patch):
            log.append(("create", patch))
            new_id = str(len(cities))
            cities[new_id] = patch
            return new_id, cities[new_id]

        @classmethod
        def update(cls, id, patch):
            log.append(("update", id, patch))
            if id not in cities:
                raise NotFound
            cities[id] = patch
            return cities[id]

        @classmethod
        def delete(cls, id):
            log.append(("delete", id))
            if id not in cities:
                raise NotFound
            del cities[id]

        @classmethod
        def get_list(cls, country=None):
            log.append(("get_list", country))
            if country is None:
                return cities.items()
            elif country == "Canada":
                return [("0", cities["0"])]
            elif country == "USA":
                return [("1", cities["1"])]
            else:
                return []

    @places.model
    class Address(BaseModel):
        methods = ["create"]
        properties = [
            required(u"number", Integer),
            required(u"street", String),
        ]
        links = [
            required(u"city", City)
        ]

        @classmethod
        def create(cls, **patch):
            log.append(("Address.create", patch))
            return "7", patch

    return places, cities


def _sv_planetarium():
    """Spheres, as in docs/protocol.md#representation; (api, log)."""
    log = []
    spheres = {
        "0": {"name": "Sun", "temperature": 3000.0},
        "1": {"name": "Earth", "temperature": 30.0, "revolves_around": "0"},
        "2": {"name": "Moon", "temperature": -50.0, "revolves_around": "1"},
    }
    planetarium = API("planetarium")

    @planetarium.model
    class Sphere(BaseModel):
        methods = ["get_by_id", "get_list"]
        properties = [required("name", String),
                      optional("temperature", Float)]
        links = [optional_link("revolves_around",
                               Model("planetarium.Sphere"))]
        query_fields = [optional("name", String)]
        list_metadata = [required("last_updated", DateTime)]

        @classmethod
        def get_by_id(cls, id):
            return spheres[id]

        @classmethod
        def get_list(cls, **query):
            log.append(query)
            items = [(k, v) for k, v in spheres.items()
                     if v["name"] == query.get("name", v["name"])]
            return items, {"last_updated": datetime.datetime(2014, 1, 1)}

    return planetarium, log


_SV_SERVING = re.compile(
    r"Serving (\S+) on http://([^/:]+):(\d+)/ \(Ctrl-C to stop\)\n\Z")


def _sv_cli(*args):
    """``python -m cosmic ARGS`` from the repository root: (code, err)."""
    proc = _python(["-m", "cosmic"] + list(args), timeout=30)
    return proc.returncode, proc.stderr


# -- Fixtures: the development server -----------------------------------------
# Tests of the development server: serve_wsgi and _make_server.

_HS_TIMEOUT = 0.5  # server socket timeout used by the shared test server


def _hs_json_response(start_response, status, obj, extra=()):
    body = json.dumps(obj).encode("utf-8")
    headers = [("Content-Type", "application/json"),
               ("Content-Length", str(len(body)))]
    start_response(status, headers + list(extra))
    return [body]


class _hs_Tracked:
    """A response iterable that records whether close() was called."""

    closed = threading.Event()

    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        _hs_Tracked.closed.set()


def _hs_simple_app(environ, start_response):
    """Well behaved app used behind wsgiref.validate.validator."""
    body = b""
    if environ["REQUEST_METHOD"] == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(size)
    out = b"validated:" + body
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(out)))])
    return [out]


_hs_validated = validator(_hs_simple_app)


def _hs_app(environ, start_response):
    """Test application: dispatch on PATH_INFO."""
    path = environ["PATH_INFO"]
    if path.startswith("/validated"):
        return _hs_validated(environ, start_response)
    if path == "/limited":
        if int(environ.get("CONTENT_LENGTH") or 0) > 1024:
            return _hs_json_response(start_response, "413 Payload Too Large",
                                  {"error": "too big"}, [("Connection", "close")])
        body = environ["wsgi.input"].read()
        return _hs_json_response(start_response, "200 OK", {"size": len(body)})
    if path == "/read-some":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(size)
        more = environ["wsgi.input"].read(size)
        return _hs_json_response(start_response, "200 OK",
                              {"got": len(data), "more": len(more)})
    if path == "/lines":
        lines = [line.decode("latin-1") for line in environ["wsgi.input"]]
        return _hs_json_response(start_response, "200 OK", {"lines": lines})
    if path == "/boom":
        raise RuntimeError("secret detail 42")
    if path == "/bad-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["not bytes"]
    if path == "/bad-header":
        start_response("200 OK", [("X-Bad", "a\r\nInjected: yes")])
        return [b"x"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (chunk for chunk in (b"one,", b"", b"two,", b"three"))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written,")
        return [b"returned"]
    if path == "/fixed":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fixed", b" body"]
    if path == "/tracked":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _hs_Tracked([b"tracked"])
    if path == "/late-error":
        try:
            raise ValueError("handled")
        except ValueError:
            start_response("200 OK", [("Content-Type", "text/plain")])
            start_response("503 Service Unavailable",
                           [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced"]
    body = environ["wsgi.input"].read()
    info = {
        "method": environ["REQUEST_METHOD"],
        "path": path,
        "script_name": environ["SCRIPT_NAME"],
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "content_length": environ.get("CONTENT_LENGTH"),
        "content_type": environ.get("CONTENT_TYPE"),
        "remote_addr": environ["REMOTE_ADDR"],
        "remote_port": environ.get("REMOTE_PORT"),
        "server_port": environ["SERVER_PORT"],
        "body": body.decode("latin-1"),
        "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
        "url_scheme": environ["wsgi.url_scheme"],
        "multithread": environ["wsgi.multithread"],
        "version": list(environ["wsgi.version"]),
    }
    return _hs_json_response(start_response, "200 OK", info)


def _hs_start(application, **limits):
    """Run serve_wsgi in a thread; return the server once it is ready."""
    ready = threading.Event()
    holder = []

    def on_ready(server):
        holder.append(server)
        ready.set()

    limits.setdefault("log", False)
    thread = threading.Thread(
        target=httpserver.serve_wsgi,
        args=(application, "127.0.0.1", 0),
        kwargs=dict(limits, ready=on_ready),
        daemon=True,
    )
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("server did not start")
    server = holder[0]
    server.test_thread = thread
    return server


class _hs_nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- Fixtures: the client -----------------------------------------------------
# Client tests: APIClient, WsgiAPIClient, ClientLoggingMixin
# (docs/protocol.md#client-behaviour).

_CL_API_NAME = "clapi"
_CL_TORONTO = {"name": "Toronto", "population": 2800000, "country": "ca"}
_CL_PARIS = {"name": "Paris"}


def _cl_make_api(name=_CL_API_NAME):
    """The client tests' API: actions of every shape and two models.

    Its state lives in ``api.cl_state`` (reset by the ``reset`` action);
    ``_cl_CountingServer`` counts requests there.
    """
    api = API(name)
    state = api.cl_state = {"cities": {}, "next": 0, "notes": [],
                            "requests": 0}

    @api.action()
    def reset():
        state["cities"] = {"0": dict(_CL_TORONTO), "1": dict(_CL_PARIS)}
        state["next"] = 2
        state["notes"] = []

    @api.action(accepts=Array(Integer), returns=Integer)
    def add(numbers):
        return sum(numbers)

    @api.action(accepts=Struct([required("numerator", Integer),
                                required("denominator", Integer)]),
                returns=Integer)
    def divide(numerator, denominator):
        return numerator / denominator

    @api.action(returns=Integer)
    def answer():
        return 42

    @api.action(accepts=String)
    def remember(note):
        state["notes"].append(note)

    @api.action(returns=Array(String))
    def notes():
        return list(state["notes"])

    @api.action(accepts=String, returns=String)
    def refuse(word):
        raise HTTPError(400, "Word not allowed: %r" % word)

    @api.action(returns=String)
    def broken():
        return 3

    @api.action(returns=Integer)
    def request_count():
        return state["requests"]

    @api.model
    class Country(BaseModel):
        methods = ["get_by_id"]
        properties = [required("name", String)]

        @classmethod
        def get_by_id(cls, id):
            if id == "ca":
                return {"name": "Canada"}
            raise NotFound

    @api.model
    class City(BaseModel):
        methods = ["get_by_id", "get_list", "create", "update", "delete"]
        properties = [required("name", String),
                      optional("population", Integer)]
        links = [optional_link("country", Country)]
        query_fields = [optional("name", String),
                        optional("min_population", Integer)]
        list_metadata = [required("total", Integer)]

        @classmethod
        def validate_patch(cls, patch):
            name = patch.get("name")
            if name is not None and not name[:1].isupper():
                raise ValidationError("Name must be capitalized", name)

        @classmethod
        def get_by_id(cls, id):
            try:
                return dict(state["cities"][id])
            except KeyError:
                raise NotFound from None

        @classmethod
        def get_list(cls, name=None, min_population=None):
            cities = state["cities"]
            items = [(i, dict(rep)) for i, rep in cities.items()
                     if (name is None or rep["name"] == name) and
                     (min_population is None or
                      rep.get("population", 0) >= min_population)]
            return items, {"total": len(cities)}

        @classmethod
        def create(cls, **patch):
            new_id = str(state["next"])
            state["next"] += 1
            state["cities"][new_id] = dict(patch)
            return new_id, dict(patch)

        @classmethod
        def update(cls, id, **patch):
            if id not in state["cities"]:
                raise NotFound
            state["cities"][id].update(patch)
            return dict(state["cities"][id])

        @classmethod
        def delete(cls, id):
            if state["cities"].pop(id, None) is None:
                raise NotFound

    state["cities"] = {"0": dict(_CL_TORONTO), "1": dict(_CL_PARIS)}
    state["next"] = 2
    return api


class _cl_CountingServer(Server):
    """A Server that counts every request it routes in ``cl_state``."""

    def dispatch_request(self, request):
        self.api.cl_state["requests"] += 1
        return super().dispatch_request(request)


def _cl_isolated_api(name=_CL_API_NAME):
    """A fresh test API built without touching the global registry."""
    with cosmos.swap({}):
        return _cl_make_api(name)


def _cl_spec_json(api):
    return json.loads(json.dumps(APISpec.to_json(api.spec)))


def _cl_counting(app):
    """Wrap a WSGI app; ``wrapper.calls`` lists the (method, path) seen."""
    def wrapper(environ, start_response):
        wrapper.calls.append((environ["REQUEST_METHOD"],
                              environ["PATH_INFO"]))
        return app(environ, start_response)
    wrapper.calls = []
    return wrapper


def _cl_canned(status, body=b"", content_type=None):
    """A WSGI app that answers every request with the same response."""
    def app(environ, start_response):
        headers = [("Content-Length", str(len(body)))]
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        start_response(status, headers)
        return [body]
    return app


_CL_HTML_502 = (b"<html><head><title>502 Bad Gateway</title></head>"
                b"<body><h1>502 Bad Gateway</h1></body></html>")


_CL_LAUNCHER = '''\
import importlib.util
_spec = importlib.util.spec_from_file_location("_cl_served_tests", %r)
_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tests)
server = _tests._cl_CountingServer(_tests._cl_make_api())
'''
class _cl_LiveServer(_Serve):
    """``python -m cosmic serve <launcher>:server --port 0`` in a subprocess.

    The launcher imports this file and serves ``_cl_make_api()`` behind
    ``_cl_CountingServer``.
    """

    def __init__(self, env=None):
        self.folder = tempfile.mkdtemp(prefix="cosmic-client-test-")
        launcher = os.path.join(self.folder, "cl_launcher.py")
        with open(launcher, "w") as f:
            f.write(_CL_LAUNCHER % _THIS_FILE)
        try:
            super().__init__(launcher + ":server", env=env)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def close(self):
        try:
            return super().close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class _cl_Request:
    """One request as a raw server read it."""

    def __init__(self, method, target, headers, body):
        self.method = method
        self.target = target
        self.headers = headers  # lower-cased names
        self.body = body

    def __repr__(self):
        return "<%s %s>" % (self.method, self.target)


def _cl_read_request(stream):
    """Read one HTTP/1.1 request from a binary file; None at EOF."""
    line = stream.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        line = stream.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return _cl_Request(method, target, headers, body)


def _cl_http(status, body=b"", headers=()):
    """The bytes of an HTTP/1.1 response with a Content-Length."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines = ["HTTP/1.1 %s" % status, "Content-Length: %d" % len(body)]
    lines += ["%s: %s" % pair for pair in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _cl_json_http(datum, status="200 OK"):
    return _cl_http(status, json.dumps(datum),
                    [("Content-Type", "application/json")])


class _cl_RawServer:
    """A socket server on 127.0.0.1 (free port) for transport tests.

    Each connection runs ``handler(server, conn, stream, index)`` in its
    own thread (``index`` counts connections from 0). ``requests`` lists
    every request read with ``server.read(stream)``; ``stop`` is set by
    ``close()``, so a handler can hold a connection with ``stop.wait()``.
    """

    family, host, url_host = socket.AF_INET, "127.0.0.1", "127.0.0.1"

    def __init__(self, handler):
        self.handler = handler
        self.requests = []
        self.connections = 0
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.closed_one = threading.Event()
        self._open = []
        self._threads = []
        self.sock = socket.socket(self.family, socket.SOCK_STREAM)
        self.sock.bind((self.host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = "http://%s:%d" % (self.url_host, self.port)
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()
        self.ready.wait(5)

    def _accept(self):
        self.ready.set()
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                index = self.connections
                self.connections += 1
                self._open.append(conn)
            thread = threading.Thread(target=self._serve,
                                      args=(conn, index), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn, index):
        stream = conn.makefile("rb")
        try:
            self.handler(self, conn, stream, index)
        except OSError:
            pass
        finally:
            stream.close()
            conn.close()
            self.closed_one.set()

    def read(self, stream):
        request = _cl_read_request(stream)
        if request is not None:
            with self.lock:
                self.requests.append(request)
        return request

    def seen(self):
        with self.lock:
            return [(r.method, r.target) for r in self.requests]

    def close(self):
        self.stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)


def _cl_answer_add(server, conn, stream, index):
    """Keep-alive handler: answers POST /actions/add with the sum."""
    while True:
        request = server.read(stream)
        if request is None:
            return
        conn.sendall(_cl_json_http(sum(json.loads(request.body))))


def _cl_answer_city(server, conn, stream, index):
    """Keep-alive handler: answers GET /City/<id> with a Toronto."""
    while True:
        request = server.read(stream)
        if request is None:
            return
        ident = request.target.rsplit("/", 1)[1]
        conn.sendall(_cl_json_http({
            "_links": {"self": {"href": "/City/" + ident}},
            "name": "Toronto"}))


def _cl_drop_first(server, conn, stream, index):
    """Connection 0 reads a request and hangs up without answering."""
    if index == 0:
        server.read(stream)
        return
    _cl_answer_city(server, conn, stream, index)


def _cl_drop_all(server, conn, stream, index):
    """Every connection reads one request and hangs up."""
    server.read(stream)


def _cl_never_answer(server, conn, stream, index):
    """Read one request, then keep the connection open, silent."""
    server.read(stream)
    server.stop.wait(30)


def _cl_answer_once_then_close(server, conn, stream, index):
    """Answer one request (keep-alive headers) and close the socket."""
    request = server.read(stream)
    if request is not None:
        conn.sendall(_cl_json_http(sum(json.loads(request.body))))


def _cl_answer_then_hang(server, conn, stream, index):
    """Answer the first request (keep-alive), then fall silent."""
    _cl_answer_once_then_close(server, conn, stream, index)
    _cl_never_answer(server, conn, stream, index)


def _cl_html_502(server, conn, stream, index):
    """A broken proxy: every request gets an HTML 502."""
    while True:
        request = server.read(stream)
        if request is None:
            return
        conn.sendall(_cl_http("502 Bad Gateway", _CL_HTML_502,
                              [("Content-Type", "text/html")]))


class _cl_AuthClient(APIClient):
    """Adds the seed's ``Authorization: secret`` to every request."""

    def build_request(self, endpoint, *args, **kwargs):
        request = super().build_request(endpoint, *args, **kwargs)
        request.headers["Authorization"] = "secret"
        return request


class _cl_ClientBody:
    """Tests shared by the server API object and both kinds of client.

    Subclasses set ``api_obj`` (in setUpClass) and ``local``: local calls
    are plain Python calls, so the HTTP-error tests are skipped there.
    """

    local = False
    api_obj = None

    def setUp(self):
        self.api_obj.actions.reset()

    def test_action_with_single_input(self):
        self.assertEqual(self.api_obj.actions.add([1, 2, 3]), 6)

    def test_action_with_struct_input(self):
        result = self.api_obj.actions.divide(numerator=10, denominator=5)
        self.assertEqual(result, 2)
        # The server sends 2.0; Integer.from_json gives the client an int.
        self.assertIs(type(result), float if self.local else int)

    def test_action_without_input(self):
        self.assertEqual(self.api_obj.actions.answer(), 42)

    def test_action_without_return(self):
        self.assertIsNone(self.api_obj.actions.remember("milk"))
        self.assertIsNone(self.api_obj.actions.remember("eggs"))
        self.assertEqual(self.api_obj.actions.notes(), ["milk", "eggs"])

    def test_action_raising_http_error(self):
        with self.assertRaises(HTTPError) as cm:
            self.api_obj.actions.refuse("boo")
        self.assertEqual(cm.exception.code, 400)
        self.assertEqual(cm.exception.message, "Word not allowed: 'boo'")
        self.assertIs(type(cm.exception),
                      HTTPError if self.local else RemoteHTTPError)

    def test_action_returning_wrong_type_is_500(self):
        with self.assertRaises(RemoteHTTPError) as cm:
            self.api_obj.actions.broken()
        self.assertEqual(cm.exception.args, (500, "Internal Server Error"))

    def test_get_by_id(self):
        self.assertEqual(self.api_obj.models.City.get_by_id("0"), _CL_TORONTO)
        self.assertEqual(self.api_obj.models.Country.get_by_id("ca"),
                         {"name": "Canada"})

    def test_get_by_id_missing_raises_not_found(self):
        with self.assertRaises(NotFound):
            self.api_obj.models.City.get_by_id("99")
        with self.assertRaises(NotFound):
            self.api_obj.models.Country.get_by_id("zz")

    def test_create(self):
        City = self.api_obj.models.City
        self.assertEqual(City.create(name="Moscow", population=12600000),
                         ("2", {"name": "Moscow", "population": 12600000}))
        self.assertEqual(City.get_by_id("2"),
                         {"name": "Moscow", "population": 12600000})

    def test_create_with_link(self):
        City = self.api_obj.models.City
        self.assertEqual(City.create(name="Ottawa", country="ca"),
                         ("2", {"name": "Ottawa", "country": "ca"}))
        self.assertEqual(City.get_by_id("2"),
                         {"name": "Ottawa", "country": "ca"})

    def test_update(self):
        City = self.api_obj.models.City
        self.assertEqual(City.update("1", population=2100000),
                         {"name": "Paris", "population": 2100000})
        self.assertEqual(City.get_by_id("1"),
                         {"name": "Paris", "population": 2100000})

    def test_update_missing_raises_not_found(self):
        with self.assertRaises(NotFound):
            self.api_obj.models.City.update("99", name="Nowhere")

    def test_delete(self):
        City = self.api_obj.models.City
        self.assertIsNone(City.delete("1"))
        with self.assertRaises(NotFound):
            City.get_by_id("1")
        self.assertEqual(City.get_list(), ([("0", _CL_TORONTO)], {"total": 1}))

    def test_delete_missing_raises_not_found(self):
        with self.assertRaises(NotFound):
            self.api_obj.models.City.delete("99")

    def test_get_list_with_metadata(self):
        self.assertEqual(self.api_obj.models.City.get_list(),
                         ([("0", _CL_TORONTO), ("1", _CL_PARIS)],
                          {"total": 2}))

    def test_get_list_with_query(self):
        City = self.api_obj.models.City
        self.assertEqual(City.get_list(name="Paris"),
                         ([("1", _CL_PARIS)], {"total": 2}))
        self.assertEqual(City.get_list(min_population=1000000),
                         ([("0", _CL_TORONTO)], {"total": 2}))
        self.assertEqual(City.get_list(name="Oslo"), ([], {"total": 2}))

    def test_validate_patch_refusal_is_400(self):
        City = self.api_obj.models.City
        with self.assertRaises(RemoteHTTPError) as cm:
            City.create(name="moscow")
        self.assertEqual(cm.exception.args,
                         (400, "Name must be capitalized: 'moscow'"))
        with self.assertRaises(RemoteHTTPError) as cm:
            City.update("0", name="toronto")
        self.assertEqual(cm.exception.args,
                         (400, "Name must be capitalized: 'toronto'"))
        self.assertEqual(City.get_list(),
                         ([("0", _CL_TORONTO), ("1", _CL_PARIS)],
                          {"total": 2}))

    def test_disabled_methods_are_405(self):
        Country = self.api_obj.models.Country
        calls = [("create", lambda: Country.create(name="France")),
                 ("update", lambda: Country.update("ca", name="Kanada")),
                 ("delete", lambda: Country.delete("ca")),
                 ("get_list", lambda: Country.get_list())]
        for method, call in calls:
            with self.subTest(method=method):
                with self.assertRaises(RemoteHTTPError) as cm:
                    call()
                self.assertEqual(cm.exception.args,
                                 (405, "Method Not Allowed"))

    def test_client_builds_all_five_methods(self):
        for model in ("City", "Country"):
            namespace = getattr(self.api_obj.models, model)
            for method in cosmic.MODEL_METHODS:
                with self.subTest(model=model, method=method):
                    self.assertEqual(getattr(namespace, method).__name__,
                                     method)


class _cl_LoggingWsgiClient(ClientLoggingMixin, WsgiAPIClient):
    pass


class _cl_LoggingClient(ClientLoggingMixin, APIClient):
    pass


_CL_BAD_CALLS = [
    ("add('x')", lambda c: c.actions.add("x"),
     ValidationError, "Invalid Array: 'x'"),
    ("add([1, True])", lambda c: c.actions.add([1, True]),
     ValidationError, "Item at [1] Invalid Integer: True"),
    ("add()", lambda c: c.actions.add(),
     ValidationError, "Expected data, found None"),
    ("add([1], [2])", lambda c: c.actions.add([1], [2]),
     SpecError, "Action must be called either with one argument or with "
                "one or more keyword arguments"),
    ("answer(1)", lambda c: c.actions.answer(1),
     ValidationError, "Expected None, found data"),
    ("divide(numerator=1.5, ...)",
     lambda c: c.actions.divide(numerator=1.5, denominator=2),
     ValidationError, "Item at ['numerator'] Invalid Integer: 1.5"),
    ("create(name=3)", lambda c: c.models.City.create(name=3),
     ValidationError, "Item at ['name'] Invalid String: 3"),
    ("update('0', population='many')",
     lambda c: c.models.City.update("0", population="many"),
     ValidationError, "Item at ['population'] Invalid Integer: 'many'"),
    ("get_list(min_population='x')",
     lambda c: c.models.City.get_list(min_population="x"),
     ValidationError, "Item at ['min_population'] Invalid Integer: 'x'"),
    ("Country.get_list(name='x')",
     lambda c: c.models.Country.get_list(name="x"),
     SpecError, "Country has no query fields, got ['name']"),
]

# Wrong keywords and a wrong id type: the exception (ValidationError,
# SpecError or TypeError) and its wording are not specified, but it must
# name the culprit, and nothing may be sent.
_CL_WRONG_KEYWORDS = [
    ("create(nme='Oslo')", lambda c: c.models.City.create(nme="Oslo"),
     "nme"),
    ("update('0', nme='Oslo')",
     lambda c: c.models.City.update("0", nme="Oslo"), "nme"),
    ("divide(..., extra=3)",
     lambda c: c.actions.divide(numerator=4, denominator=2, extra=3),
     "extra"),
    ("get_list(nmae='Oslo')", lambda c: c.models.City.get_list(nmae="Oslo"),
     "nmae"),
    ("get_by_id(3)", lambda c: c.models.City.get_by_id(3), "3"),
]
_CL_LOCAL_ERRORS = (ValidationError, SpecError, TypeError)


class _cl_PlanetariumServer(Server):
    """The seed's server: 401 unless ``Authorization: secret``."""

    def view(self, endpoint, request, **url_args):
        if request.headers.get('Authorization', None) != 'secret':
            return error_response("Unauthorized", 401)
        # The seed's spelling of super().
        return super(_cl_PlanetariumServer, self).view(  # noqa: UP008
            endpoint, request, **url_args)


# -- Fixtures: OpenAPI --------------------------------------------------------
# Tests of openapi(): the OpenAPI 3.1 document (to merge into test_cosmic.py).

_OA_EXAMPLES = {}


def _oa_example(name, env=None):
    """Import examples/<name>.py once, under a private module name.

    Its API registers in a throw-away registry; the API keeps working
    because its models are bound to it at registration.
    """
    if name not in _OA_EXAMPLES:
        _OA_EXAMPLES[name] = _load_example(name, env)
    return _OA_EXAMPLES[name]


def _oa_example_api(name, env=None):
    module = _oa_example(name, env)
    return module.wsgi_app.__self__.api


def _oa_zoo():
    """An API using every type, every field kind, links and docstrings."""
    with cosmic.cosmos.swap({}):
        zoo = API("zoo", homepage="http://zoo.example.com")

        @zoo.model
        class Keeper(BaseModel):
            methods = ["get_by_id"]
            properties = [required("name", String, "Full name")]

        @zoo.model
        class Animal(BaseModel):
            methods = ["get_by_id", "get_list", "create", "update"]
            properties = [
                required("name", String, "The animal's name"),
                optional("age", Integer),
                optional("weight", Float),
                optional("tame", Boolean),
                optional("photo", Binary),
                optional("born", DateTime),
                optional("extra", JSON),
                optional("tags", Array(String)),
                optional("scores", Map(Float)),
                optional("meals", OrderedMap(Struct([
                    required("food", String),
                    optional("grams", Integer, "Portion size")]))),
                optional("shape", Schema),
                optional("kind", Model),
                optional("friend", Link(Model("zoo.Animal"))),
                optional("keeper_rep", Representation(Model("zoo.Keeper"))),
                optional("keeper_patch", Patch(Model("zoo.Keeper"))),
            ]
            links = [
                required_link("keeper", Model("zoo.Keeper"), "Who feeds it"),
                optional_link("mother", Model("zoo.Animal")),
            ]
            query_fields = [
                required("name", String, "Exact name"),
                optional("born_after", DateTime),
                optional("kind", Model),
                optional("keeper", Link(Model("zoo.Keeper"))),
                optional("min_age", Integer),
                optional("weight", Float),
                optional("tame", Boolean),
                optional("photo", Binary),
                optional("tags", Array(String)),
                optional("extra", JSON),
                optional("box", Struct([optional("a", Integer)])),
            ]
            list_metadata = [
                required("total", Integer, "All matches"),
                optional("updated", DateTime),
            ]

        @zoo.model
        class Cage(BaseModel):
            properties = [required("size", Integer)]

        @zoo.action(accepts=Struct([required("a", Integer, "First"),
                                    optional("b", Float)]), returns=Float)
        def add(a, b=0.0):
            """Add two numbers.

            The result is a Float."""
            return a + b

        @zoo.action()
        def ping():
            """Do nothing."""

        @zoo.action(accepts=Representation(Model("zoo.Animal")),
                    returns=Patch(Model("zoo.Animal")))
        def echo(rep):
            return rep

        @zoo.action(accepts=Array(Representation(Model("zoo.Keeper"))),
                    returns=JSON)
        def count(keepers):
            return len(keepers)

    return zoo


def _oa_clash():
    """An API whose names collide with the document's derived names."""
    with cosmic.cosmos.swap({}):
        clash = API("clash")

        @clash.model
        class Error(BaseModel):
            methods = ["get_by_id", "get_list"]

        @clash.model
        class ErrorPatch(BaseModel):
            methods = ["get_by_id"]

        @clash.model
        class ErrorList(BaseModel):
            methods = []

        @clash.action(returns=String)
        def spec():
            return "x"

        @clash.action()
        def Error_get_by_id():
            pass

    return clash


def _oa_refs(node):
    """Every "$ref" value in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _oa_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _oa_refs(item)


def _oa_strip(node, key):
    """A copy of a JSON document without ``key`` in any object."""
    if isinstance(node, dict):
        return {k: _oa_strip(v, key) for k, v in node.items() if k != key}
    if isinstance(node, list):
        return [_oa_strip(item, key) for item in node]
    return node


def _oa_operations(doc):
    """(METHOD, path, operation) for every operation of a document."""
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                yield method.upper(), path, op


# -- Fixtures: the docs page --------------------------------------------------
# Tests of the documentation page of cosmic.py (``GET /`` and ``GET /docs``).

_DC_CHROMIUM = "/usr/bin/chromium"
_DC_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# Sample spec and expectations

def _dc_om(pairs):
    """OrderedMap JSON from (key, value) pairs."""
    return {"map": dict(pairs), "order": [k for k, _ in pairs]}


def _dc_field(schema, required=False, doc=None):
    entry = {"schema": schema, "required": required}
    if doc is not None:
        entry["doc"] = doc
    return entry


def _dc_methods(*enabled):
    return {m: m in enabled
            for m in ("get_by_id", "get_list", "create", "update", "delete")}


_DC_S = {"type": "String"}
_DC_I = {"type": "Integer"}
_DC_F = {"type": "Float"}
_DC_DT = {"type": "DateTime"}

_DC_XSS_DOC = ("Echo the input back.\n\n"
               "Not a tag: <script>alert(1)</script> & </script> too.")

# A shop API: actions with and without input, a model with every method, a
# DateTime query field, links, list metadata and a hostile docstring.
_DC_SPEC = {
    "name": "shop",
    "homepage": "http://shop.example.com",
    "actions": _dc_om([
        ("quote", {
            "accepts": {"type": "Struct", "param": _dc_om([
                ("item_id", _dc_field(_DC_S, True)),
                ("quantity", _dc_field(_DC_I))])},
            "returns": _DC_F,
            "doc": "Price for a quantity of an item.",
        }),
        ("ping", {}),
        ("echo", {"accepts": {"type": "JSON"}, "returns": {"type": "JSON"},
                  "doc": _DC_XSS_DOC}),
    ]),
    "models": _dc_om([
        ("Category", {
            "properties": _dc_om([("name", _dc_field(_DC_S, True))]),
            "links": _dc_om([]),
            "query_fields": _dc_om([]),
            "methods": _dc_methods("get_by_id"),
            "list_metadata": _dc_om([]),
        }),
        ("Item", {
            "properties": _dc_om([
                ("title", _dc_field(_DC_S, True)),
                ("price", _dc_field(_DC_F, False, "Unit price in EUR"))]),
            "links": _dc_om([("category", {"model": "shop.Category",
                                           "required": True})]),
            "query_fields": _dc_om([("category", _dc_field(_DC_S)),
                                    ("max_price", _dc_field(_DC_F))]),
            "methods": _dc_methods("get_by_id", "get_list", "create"),
            "list_metadata": _dc_om([("total", _dc_field(_DC_I, True))]),
        }),
        ("City", {
            "properties": _dc_om([
                ("name", _dc_field(_DC_S, True, "Capitalised <b>name</b>")),
                ("population", _dc_field(_DC_I)),
                ("founded", _dc_field(_DC_DT)),
                ("tags", _dc_field({"type": "Array", "param": _DC_S})),
                ("location", _dc_field({"type": "Struct", "param": _dc_om([
                    ("lat", _dc_field(_DC_F, True)),
                    ("lon", _dc_field(_DC_F, True))])})),
            ]),
            "links": _dc_om([
                ("hub", {"model": "shop.City", "required": False,
                         "doc": "Nearest hub city"}),
                ("featured", {"model": "shop.Item", "required": False})]),
            "query_fields": _dc_om([
                ("name", _dc_field(_DC_S)),
                ("founded_after", _dc_field(_DC_DT)),
                ("min_population", _dc_field(_DC_I)),
                ("tags", _dc_field({"type": "Array", "param": _DC_S}))]),
            "methods": _dc_methods("get_by_id", "get_list", "create",
                                   "update", "delete"),
            "list_metadata": _dc_om([("total", _dc_field(_DC_I, True)),
                                     ("last_updated", _dc_field(_DC_DT))]),
        }),
    ]),
}

_DC_CITY_PATCH_EXAMPLE = {
    "_links": {"hub": {"href": "/City/1"}, "featured": {"href": "/Item/1"}},
    "name": "string", "population": 1, "founded": "2014-01-01T00:00:00",
    "tags": ["string"], "location": {"lat": 1.5, "lon": 1.5},
}

# (Schema JSON, its description, its example) for every type.
_DC_TYPE_CASES = [
    ({"type": "Integer"}, "Integer", 1),
    ({"type": "Float"}, "Float", 1.5),
    ({"type": "Boolean"}, "Boolean", True),
    ({"type": "String"}, "String", "string"),
    ({"type": "Binary"}, "Binary", "aGVsbG8="),
    ({"type": "DateTime"}, "DateTime", "2014-01-01T00:00:00"),
    ({"type": "JSON"}, "JSON", {"any": "JSON value"}),
    ({"type": "Array", "param": _DC_I}, "Array of Integer", [1]),
    ({"type": "Map", "param": _DC_S}, "Map of String", {"key": "string"}),
    ({"type": "OrderedMap", "param": _DC_F}, "OrderedMap of Float",
     {"map": {"key": 1.5}, "order": ["key"]}),
    ({"type": "Struct", "param": _dc_om([
        ("numerator", _dc_field(_DC_I, True)),
        ("denominator", _dc_field(_DC_I))])},
     "Struct {numerator: Integer (required), denominator: Integer (optional)}",
     {"numerator": 1, "denominator": 1}),
    ({"type": "Schema"}, "Schema", {"type": "String"}),
    ({"type": "cosmic.Model"}, "Model name", "shop.Category"),
    ({"type": "cosmic.Link", "param": "shop.City"}, "Link to shop.City",
     "/City/1"),
    ({"type": "cosmic.Representation", "param": "shop.City"},
     "Representation of shop.City",
     dict(_DC_CITY_PATCH_EXAMPLE, _links=dict(
         self={"href": "/City/1"}, **_DC_CITY_PATCH_EXAMPLE["_links"]))),
    ({"type": "cosmic.Patch", "param": "shop.City"}, "Patch of shop.City",
     _DC_CITY_PATCH_EXAMPLE),
    ({"type": "cosmic.APISpec"}, "API spec",
     {"name": "example", "actions": {"map": {}, "order": []},
      "models": {"map": {}, "order": []}}),
]


def _dc_csp_sources(directive):
    """The sources of one directive of the page's CSP, or None."""
    for part in cosmic._docs_csp().split(";"):
        words = part.split()
        if words and words[0] == directive:
            return words[1:]
    return None


def _dc_sha256(text):
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-%s'" % base64.b64encode(digest).decode("ascii")


class _dc_TagChecker(html.parser.HTMLParser):
    """Collects start tags and checks that non-void elements are balanced."""

    _VOID = {"meta", "input", "br", "hr", "img", "link"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tags, self.problems = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self._VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append("unexpected </%s> (open: %s)"
                                 % (tag, self.stack[-3:]))
        else:
            self.stack.pop()


def _dc_shop_api():
    """A real cosmic API whose action has a hostile docstring."""
    api = API("shop", homepage="http://shop.example.com")

    def echo(data):
        return data

    echo.__doc__ = _DC_XSS_DOC
    api.action(accepts=JSON, returns=JSON)(echo)

    def quote(item_id, quantity=None):
        """Price for a quantity of an item."""
        return 2.5 * (quantity or 1)

    api.action(accepts=Struct([required("item_id", String),
                               optional("quantity", Integer)]),
               returns=JSON)(quote)
    return api


# Headless Chromium over the DevTools protocol (standard library only)

class _dc_BrowserError(Exception):
    """Anything that went wrong while driving the browser."""


class _dc_BrowserTimeout(_dc_BrowserError, TimeoutError):
    """A wait ran past its deadline."""


def _dc_unmask(data, mask):
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 5.3)."""
    if not data:
        return b""
    repeated = (mask * (len(data) // 4 + 1))[:len(data)]
    value = int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(data), "big")


class _dc_WebSocket:
    """Blocking RFC 6455 client: text frames out (masked), any frames in."""

    def __init__(self, url, timeout):
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise _dc_BrowserError("Unsupported websocket URL: %r" % url)
        self._buffer = b""
        self._fragments = None  # parts of a fragmented message
        self.closed = False
        port = parts.port or 80
        self._sock = socket.create_connection((parts.hostname, port),
                                              timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n"
                   % (path, parts.hostname, port, key))
        self._sock.sendall(request.encode("ascii"))
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._buffer:
            self._fill(deadline)
            if len(self._buffer) > 65536:
                raise _dc_BrowserError("Websocket handshake answer too large")
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if not re.match(r"HTTP/1\.1 101\b", lines[0]):
            raise _dc_BrowserError("Websocket handshake refused: %s"
                                   % lines[0])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(
            (key + _DC_WS_GUID).encode("ascii")).digest()).decode("ascii")
        if headers.get("sec-websocket-accept") != expected:
            raise _dc_BrowserError("Websocket handshake: bad "
                                   "Sec-WebSocket-Accept")

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _dc_BrowserTimeout("Timed out waiting for the browser")
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(65536)
        except socket.timeout:
            raise _dc_BrowserTimeout(
                "Timed out waiting for the browser") from None
        except OSError as exc:
            self.closed = True
            raise _dc_BrowserError("Websocket connection failed: %s"
                                   % exc) from None
        if not chunk:
            self.closed = True
            raise _dc_BrowserError("The browser closed the DevTools "
                                   "connection")
        self._buffer += chunk

    def _send_frame(self, opcode, payload):
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        self._sock.settimeout(10)
        try:
            self._sock.sendall(header + mask + _dc_unmask(payload, mask))
        except OSError as exc:
            self.closed = True
            raise _dc_BrowserError("Websocket send failed: %s" % exc) from None

    def send_text(self, text):
        self._send_frame(0x1, text.encode("utf-8"))

    def _parse_frame(self):
        """(fin, opcode, payload) of the first whole frame buffered, or None.

        Nothing is consumed until a whole frame is there, so a timeout in
        the middle of a frame loses no data."""
        buf = self._buffer
        if len(buf) < 2:
            return None
        fin, opcode = buf[0] & 0x80, buf[0] & 0x0F
        length, pos = buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, pos = struct.unpack("!H", buf[2:4])[0], 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, pos = struct.unpack("!Q", buf[2:10])[0], 10
        mask = None
        if buf[1] & 0x80:
            if len(buf) < pos + 4:
                return None
            mask, pos = buf[pos:pos + 4], pos + 4
        if len(buf) < pos + length:
            return None
        payload = buf[pos:pos + length]
        self._buffer = buf[pos + length:]
        if mask:
            payload = _dc_unmask(payload, mask)
        return fin, opcode, payload

    def recv_text(self, deadline):
        """The next whole text message (fragments joined, pings answered)."""
        while True:
            frame = self._parse_frame()
            if frame is None:
                self._fill(deadline)
                continue
            fin, opcode, payload = frame
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:  # pong
                continue
            if opcode == 0x8:  # close
                self.closed = True
                raise _dc_BrowserError("The browser closed the DevTools "
                                       "connection")
            if opcode in (0x1, 0x2):
                if self._fragments is not None:
                    raise _dc_BrowserError("Websocket: unfinished message")
                self._fragments = []
            elif opcode == 0x0:
                if self._fragments is None:
                    raise _dc_BrowserError("Websocket: stray continuation")
            else:
                raise _dc_BrowserError("Websocket: opcode %d" % opcode)
            self._fragments.append(payload)
            if fin:
                message, self._fragments = b"".join(self._fragments), None
                return message.decode("utf-8")

    def close(self):
        if not self.closed:
            try:
                self._send_frame(0x8, struct.pack("!H", 1000))
            except _dc_BrowserError:
                pass
        self.closed = True
        try:
            self._sock.close()
        except OSError:
            pass


class _dc_Browser:
    """One headless Chromium with one page, driven over DevTools.

        browser = _dc_Browser()
        try:
            browser.open("http://127.0.0.1:8000/")
            browser.evaluate("document.title")
        finally:
            browser.close()
    """

    def __init__(self, executable=_DC_CHROMIUM, timeout=20.0):
        self.timeout = timeout
        self._errors = []
        self._csp = []
        self._requests = []
        self._events = []
        self._next_id = 0
        self._session = None
        self._ws = None
        self._proc = None
        self._stderr_lines = []
        self._ws_url = None
        self._ws_ready = threading.Event()
        self._tmp = tempfile.mkdtemp(prefix="cosmic-chromium-")
        args = [executable, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-quic", "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps",
                "--disable-breakpad", "--disable-dev-shm-usage",
                "--no-proxy-server", "--mute-audio", "--password-store=basic",
                "--remote-debugging-port=0", "--user-data-dir=" + self._tmp,
                "about:blank"]
        env = dict(os.environ, HOME=self._tmp)
        try:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env=env, start_new_session=True)
        except OSError as exc:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise _dc_BrowserError("Cannot start %s: %s"
                                   % (executable, exc)) from None
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    # -- process and connection ------------------------------------------

    def _read_stderr(self):
        for raw in iter(self._proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr_lines.append(line)
            del self._stderr_lines[:-60]
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match and self._ws_url is None:
                self._ws_url = match.group(1)
                self._ws_ready.set()
        self._ws_ready.set()  # the process ended: wake the waiter

    def _connect(self):
        if not self._ws_ready.wait(self.timeout) or self._ws_url is None:
            raise _dc_BrowserError(
                "Chromium gave no DevTools URL within %.0f s; exit code %r; "
                "last stderr lines:\n%s" % (
                    self.timeout, self._proc.poll(),
                    "\n".join(self._stderr_lines[-20:])))
        self._ws = _dc_WebSocket(self._ws_url, self.timeout)
        target = self.call("Target.createTarget", {"url": "about:blank"},
                           session=False)
        attached = self.call("Target.attachToTarget", {
            "targetId": target["targetId"], "flatten": True}, session=False)
        self._session = attached["sessionId"]
        for method in ("Page.enable", "Runtime.enable", "Log.enable",
                       "Network.enable", "Audits.enable"):
            self.call(method)

    def close(self):
        """Stop Chromium (gracefully, then by force); remove its profile."""
        if self._ws is not None and not self._ws.closed:
            try:
                self._ws.send_text(json.dumps({"id": -1,
                                               "method": "Browser.close"}))
            except _dc_BrowserError:
                pass
            self._ws.close()
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            # Chromium leads its own process group (start_new_session), so
            # its helpers (zygote, renderers) stop with it, and only they.
            for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
                if not self._signal_group(proc, sig, grace):
                    break
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                pass
            self._reader.join(2)  # stderr ends once the group is gone
            if not self._reader.is_alive():
                proc.stderr.close()
        deadline = time.monotonic() + 2
        while True:
            shutil.rmtree(self._tmp, ignore_errors=True)
            if not os.path.exists(self._tmp) or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # a straggler may still be writing the profile

    @staticmethod
    def _signal_group(proc, sig, grace):
        """Signal the group; True if members remain after ``grace`` s."""
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader
            try:
                os.killpg(proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return False
            time.sleep(0.05)
        return True

    # -- protocol ----------------------------------------------------------

    def _deadline(self, timeout):
        return time.monotonic() + (self.timeout if timeout is None
                                   else timeout)

    def _pump(self, deadline):
        """Read one message; record it if it is an event; return it."""
        message = json.loads(self._ws.recv_text(deadline))
        if "method" in message:
            self._on_event(message["method"], message.get("params", {}))
            self._events.append(message)
        return message

    def call(self, method, params=None, session=True, timeout=None):
        """Send a DevTools command; return its result (raise on error)."""
        if self._ws is None or self._ws.closed:
            raise _dc_BrowserError("The browser is not connected")
        self._next_id += 1
        message = {"id": self._next_id, "method": method,
                   "params": params or {}}
        if session:
            message["sessionId"] = self._session
        self._ws.send_text(json.dumps(message))
        deadline = self._deadline(timeout)
        while True:
            try:
                reply = self._pump(deadline)
            except _dc_BrowserTimeout:
                raise _dc_BrowserTimeout("No answer to %s in time"
                                         % method) from None
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise _dc_BrowserError("%s failed: %s"
                                           % (method, reply["error"]))
                return reply.get("result", {})

    def wait_event(self, method, since=0, timeout=None):
        """Params of the first event ``method`` at or after index ``since``."""
        deadline = self._deadline(timeout)
        index = since
        while True:
            while index < len(self._events):
                event = self._events[index]
                index += 1
                if (event["method"] == method
                        and event.get("sessionId") == self._session):
                    return event.get("params", {})
            try:
                self._pump(deadline)
            except _dc_BrowserTimeout:
                raise _dc_BrowserTimeout("Event %s did not arrive in time"
                                         % method) from None

    def pump_until(self, predicate, timeout=None):
        """Process events until ``predicate()`` is true (or time runs out)."""
        deadline = self._deadline(timeout)
        while not predicate():
            self._pump(deadline)

    def _on_event(self, method, params):
        if method == "Runtime.consoleAPICalled" and params.get("type") in (
                "error", "assert"):
            texts = [str(arg.get("value", arg.get("description", "")))
                     for arg in params.get("args", [])]
            self._errors.append("console.%s: %s" % (params.get("type"),
                                                    " ".join(texts)))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exc = details.get("exception") or {}
            self._errors.append("exception: %s" % (
                exc.get("description") or details.get("text")))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                text = "log(%s): %s %s" % (entry.get("source"),
                                           entry.get("text"),
                                           entry.get("url", ""))
                self._errors.append(text.rstrip())
                if "Content Security Policy" in str(entry.get("text")):
                    self._csp.append(text.rstrip())
        elif method == "Audits.issueAdded":
            issue = params.get("issue", {})
            if issue.get("code") == "ContentSecurityPolicyIssue":
                details = issue.get("details", {}).get(
                    "contentSecurityPolicyIssueDetails", {})
                text = "CSP violation: %s %s" % (
                    details.get("violatedDirective"),
                    details.get("blockedURL", ""))
                self._csp.append(text.rstrip())
                self._errors.append(text.rstrip())
        elif method == "Network.requestWillBeSent":
            self._requests.append(params.get("request", {}).get("url"))
        elif method == "Page.javascriptDialogOpening":
            self._errors.append("dialog(%s): %s" % (params.get("type"),
                                                    params.get("message")))
            self._ws.send_text(json.dumps({
                "id": -2, "method": "Page.handleJavaScriptDialog",
                "params": {"accept": False}, "sessionId": self._session}))

    # -- public API --------------------------------------------------------

    def open(self, url, timeout=None):
        """Navigate to ``url`` and wait for its load event."""
        since = len(self._events)
        result = self.call("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            raise _dc_BrowserError("Navigation to %s failed: %s"
                                   % (url, result["errorText"]))
        self.wait_event("Page.loadEventFired", since=since, timeout=timeout)

    def evaluate(self, expression, timeout=None):
        """Value of a JS expression (promises awaited, returned by value)."""
        limit = self.timeout if timeout is None else timeout
        result = self.call("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True,
            "returnByValue": True, "userGesture": True,
            "timeout": int(1000 * limit)}, timeout=limit)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            exc = details.get("exception") or {}
            raise _dc_BrowserError("JS error in %r: %s" % (
                expression[:200],
                exc.get("description") or details.get("text")))
        return result.get("result", {}).get("value")

    def wait_for(self, expression, timeout=None, interval=0.05):
        """Evaluate ``expression`` until it is truthy; return its value."""
        deadline = self._deadline(timeout)
        while True:
            left = max(deadline - time.monotonic(), 0.1)
            value = self.evaluate(expression, timeout=left)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise _dc_BrowserTimeout("%r stayed falsy (last value %r)"
                                         % (expression[:200], value))
            self.drain(interval)  # take in events meanwhile

    def set_viewport(self, width, height, mobile=False, scale=1):
        self.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": scale,
            "mobile": mobile})

    def reset_viewport(self):
        self.call("Emulation.clearDeviceMetricsOverride")

    def drain(self, seconds=0.2):
        """Process the events that arrive within ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._pump(deadline)
            except _dc_BrowserTimeout:
                return

    def console_errors(self, settle=0.2):
        """Errors so far: console.error, exceptions, error logs, CSP, dialogs.

        ``settle`` seconds of late events are taken in first."""
        self.drain(settle)
        return list(self._errors)

    def csp_violations(self, settle=0.2):
        """Content-Security-Policy violations so far (also errors)."""
        self.drain(settle)
        return list(self._csp)

    def requested_urls(self, settle=0.2):
        """URLs of every request the page started."""
        self.drain(settle)
        return list(self._requests)

    def clear(self):
        """Forget the errors and requests collected so far."""
        self._errors.clear()
        self._csp.clear()
        self._requests.clear()


class _dc_BrowserMixin:
    """Helpers of the browser test cases; ``cls.browser`` and
    ``cls.origin`` are set by their setUpClass."""

    @classmethod
    def start_browser(cls):
        cls.browser = _dc_Browser()
        cls.addClassCleanup(cls.browser.close)

    def setUp(self):
        self.browser.reset_viewport()
        self.browser.clear()

    def load(self, path="/"):
        self.browser.open(self.origin + path)
        self.assertEqual(self.browser.evaluate("document.readyState"),
                         "complete")

    def assert_clean(self):
        """No errors, no CSP violations, no request to another origin."""
        self.browser.drain(0.2)
        self.assertEqual(self.browser.console_errors(settle=0), [])
        self.assertEqual(self.browser.csp_violations(settle=0), [])
        for url in self.browser.requested_urls(settle=0):
            self.assertTrue(url == self.origin
                            or url.startswith(self.origin + "/"), url)

    def try_it(self, section, kind, body=None, ident=None, query=None):
        """Fill a try-it form, click Send, return the result text."""
        form = "#%s form.try[data-kind=\"%s\"]" % (section, kind)
        script = """(() => {
          const f = document.querySelector(%s);
          f.closest('details').open = true;
          const body = %s, id = %s, query = %s;
          if (body !== null) f.querySelector('.f-body').value = body;
          if (id !== null) f.querySelector('.f-id').value = id;
          if (query !== null) {
            for (const el of f.querySelectorAll('.f-q')) {
              el.value = query[el.dataset.field] || '';
            }
          }
          f.querySelector('.out').textContent = '';
          f.querySelector('button[type=submit]').click();
          return true;
        })()""" % (json.dumps(form), json.dumps(body), json.dumps(ident),
                   json.dumps(query))
        self.assertTrue(self.browser.evaluate(script))
        return self.browser.wait_for("""(() => {
          const f = document.querySelector(%s);
          const o = f.querySelector('.out'), t = o.textContent;
          const done = new RegExp('HTTP \\\\d{3}|Request failed|' +
            'not valid JSON|Enter an id|needs a JSON');
          return !o.hidden && !f.querySelector('button').disabled
            && done.test(t) ? t : '';
        })()""" % json.dumps(form))


# Browser tests against a throwaway app (canned answers, every request logged)

class _dc_FakeAPI:
    """WSGI app: the docs page of a spec plus canned API answers."""

    def __init__(self, spec):
        self.page = _docs_html(spec).encode("utf-8")
        self.spec = json.dumps(spec).encode("utf-8")
        self.log = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"].encode("latin-1").decode("utf-8",
                                                              "replace")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length).decode("utf-8") \
            if length else ""
        query = environ.get("QUERY_STRING", "")
        with self.lock:
            self.log.append({"method": method, "path": path, "query": query,
                             "content_type": environ["test.content_type"],
                             "body": body})
        status, headers, payload = self.route(method, path, query, body)
        if isinstance(payload, bytes):
            data = payload
        elif payload is None:
            data = b""
        else:
            data = json.dumps(payload).encode("utf-8")
            headers = [("Content-Type", "application/json")] + headers
        start_response(status, headers + [("Content-Length", str(len(data)))])
        return [data]

    def route(self, method, path, query, body):
        if method == "GET" and path in ("/", "/docs"):
            return "200 OK", [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Security-Policy", cosmic._docs_csp()),
                ("X-Content-Type-Options", "nosniff")], self.page
        if method == "GET" and path == "/spec.json":
            return "200 OK", [("Content-Type", "application/json")], self.spec
        data = json.loads(body) if body else None
        if method == "POST" and path == "/actions/quote":
            return "200 OK", [], 2.5 * data.get("quantity", 1)
        if method == "POST" and path == "/actions/ping":
            return "204 No Content", [], None
        if method == "POST" and path == "/actions/echo":
            return "200 OK", [], data
        match = re.match(r"^/City(?:/(.+))?$", path)
        if match:
            ident = match.group(1)
            if method == "POST" and ident is None:
                rep = dict(data)
                rep["_links"] = dict(rep.get("_links", {}),
                                     self={"href": "/City/7"})
                return "201 Created", [("Location", "/City/7")], rep
            if method == "GET" and ident is None:
                return "200 OK", [], {
                    "_links": {"self": {"href": "/City?" + query}},
                    "_embedded": {"City": []}, "total": 0}
            if method == "GET":
                return "200 OK", [], {
                    "_links": {"self": {"href": "/City/" + ident}},
                    "name": "Paris"}
            if method == "PUT":
                rep = dict(data)
                rep["_links"] = dict(rep.get("_links", {}),
                                     self={"href": "/City/" + ident})
                return "200 OK", [], rep
            if method == "DELETE":
                return "204 No Content", [], None
        return "404 Not Found", [], {"error": "Not Found"}


class _dc_FakeAppMixin(_dc_BrowserMixin):
    spec = _DC_SPEC

    @classmethod
    def setUpClass(cls):
        _need("chromium", os.path.exists(_DC_CHROMIUM) and _DC_CHROMIUM)
        cls.app = _dc_FakeAPI(cls.spec)
        cls.server = _ThreadServer(cls.app, wsgiref=True)
        cls.addClassCleanup(cls.server.close)
        cls.origin = cls.server.url
        cls.start_browser()

    def setUp(self):
        super().setUp()
        with self.app.lock:
            del self.app.log[:]

    def api_requests(self):
        with self.app.lock:
            return [r for r in self.app.log if r["path"] not in ("/", "/docs")]


# -- Fixtures: hardening ------------------------------------------------------
# Hardening: hostile input, faults in user code, load and concurrency,
# production servers, CORS and fuzzing. Module-level names start with _hd_.
#
# Each hostile-input case runs in-process (Server(api).wsgi_app wrapped in
# wsgiref.validate.validator, unless the validator itself refuses the
# environ) and over real HTTP against `python -m cosmic serve
# examples/places.py`. Every answer is recorded in _HD_TABLE; the last
# class (TestHardeningZReport) writes the table to
# /tmp/cosmic_hostile_table.txt and fails if a client mistake ever got a
# 5xx anywhere in this part.
#
# Fuzzing runs a bounded number of examples; for a longer run set
# COSMIC_FUZZ_EXAMPLES (default 300), e.g. COSMIC_FUZZ_EXAMPLES=20000: about
# two minutes, 20,000 requests and 20,000 values through 21 types.

_HD_NET_TIMEOUT = 10.0  # bound on any single network wait, in seconds
_HD_INTERNAL = b'{"error": "Internal Server Error"}'
_HD_COUNTER = itertools.count(1)

# (case, where, status or None for a clean close, body bytes, seconds)
_HD_TABLE = []
# The same, for every 5xx answer to a client mistake (must stay empty).
_HD_5XX = []
# Lines summarising tables too long for _HD_TABLE (405 matrix, fuzzing).
_HD_SUMMARY = []
# 5xx codes that HTTP itself prescribes for a client's request: 501 for a
# transfer coding the server does not implement (RFC 9112 6.1,
# docs/protocol.md#framing-and-limits) and 505 for an unsupported major
# version (RFC 9110 15.6.6).
# Any other 5xx for a client mistake is a failure.
_HD_PROTOCOL_5XX = {501, 505}


def _hd_note(case, where, status, body, elapsed):
    """Record one answer to a client mistake in the hostile-input table."""
    row = (case, where, status, body, elapsed)
    _HD_TABLE.append(row)
    if status is not None and status >= 500 and \
            status not in _HD_PROTOCOL_5XX:
        _HD_5XX.append(row)


def _hd_environ(method, target, headers=(), body=b"", extra=None):
    """The environ a server builds from a request line: the target's path
    percent-decoded (bytes carried as latin-1 text), its query split off,
    over HTTP/1.1. ``extra`` overrides keys (None removes one)."""
    path, _, query = target.partition("?")
    environ = dict({"SERVER_PROTOCOL": "HTTP/1.1"}, **(extra or {}))
    return _wsgi_environ(method, unquote_to_bytes(path).decode("latin-1"),
                         body, headers, query, environ)


def _hd_call(app, method, target, headers=(), body=b"", extra=None,
             validate=True):
    """_wsgi with a request target as sent on the wire."""
    return _wsgi_run(app, _hd_environ(method, target, headers, body, extra),
                     validate)


def _hd_serve(target, db_path):
    """`python -m cosmic serve <target> --port 0` on the database db_path."""
    return _Serve(target, env={"PLACES_DB": db_path})


def _hd_child_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _hd_free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _hd_answers(port, path="/spec.json"):
    """Whether something answers HTTP 200 on 127.0.0.1:port right now."""
    try:
        answer, _ = _exchange(port, _request_bytes("GET", path),
                                 timeout=2)
    except OSError:
        return False
    return answer is not None and answer.status == 200


def _hd_error(answer):
    """The message of a JSON error body; fails on anything else."""
    if answer.headers.get("content-type") != "application/json":
        raise AssertionError("not a JSON error: %r %r"
                             % (answer.status, answer.headers))
    datum = json.loads(answer.body.decode("utf-8"))
    if not (isinstance(datum, dict) and list(datum) == ["error"]
            and isinstance(datum["error"], str)):
        raise AssertionError("not an error body: %r" % answer.body[:200])
    return datum["error"]


def _hd_places_tmp(test_class):
    """A temporary directory and a places module on a DB in it."""
    test_class.tmp = tempfile.TemporaryDirectory(prefix="cosmic_hd_")
    test_class.places = _load_places(
        os.path.join(test_class.tmp.name, "inproc.db"))
    test_class.app = test_class.places.wsgi_app


def _hd_case(name, method, target, body=b"", headers=(_JSON,), status=400,
             message=None, raw=None, inproc=True, validate=True,
             inproc_status=None, inproc_message=None, extra=None,
             half_close=False, http=True, max_seconds=None, max_body=None):
    """One hostile-input case (see TestHardeningHostileInput).

    ``status`` may be a tuple of acceptable codes; ``raw`` replaces the
    request bytes sent over HTTP; ``extra`` adjusts the in-process environ.
    """
    return {"name": name, "method": method, "target": target, "body": body,
            "headers": tuple(headers), "status": status, "message": message,
            "raw": raw, "inproc": inproc, "validate": validate, "http": http,
            "inproc_status": status if inproc_status is None
            else inproc_status,
            "inproc_message": message if inproc_message is None
            else inproc_message,
            "extra": extra, "half_close": half_close,
            "max_seconds": max_seconds, "max_body": max_body}


_HD_BAD_JSON = "Invalid JSON"
_HD_DEEP = b"[" * 100000 + b"]" * 100000
_HD_DEEP_OBJ = b'{"a": ' * 100000 + b"1" + b"}" * 100000
_HD_LONG_INT = b'{"name": "Paris", "population": 1' + b"0" * 10000 + b"}"
_HD_CT_MSG = 'Content-Type must be "application/json" got "%s" instead'
_HD_SHORT = (b"POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
             b"application/json\r\nContent-Length: 100\r\n\r\n"
             b'{"name": ')
# 101 brackets (past the depth pre-check) then escaped quotes that never
# close a string: 16 KB that a JSON parser refuses in microseconds.
_HD_QUOTES = b"[" * 101 + b'\\"' * 8000
_HD_CHUNKED = (b"POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
               b"application/json\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n"
               b"5\r\n{\"nam\r\n11\r\ne\": \"Chunkville\"}\r\n0\r\n\r\n")


def _hd_raw(head, body=b""):
    return head.encode("latin-1") + body


_HD_HOSTILE = [
    # Bodies that are not the JSON they claim to be.
    _hd_case("malformed JSON", "POST", "/City", b"{name: 'Paris'}",
             message=_HD_BAD_JSON),
    _hd_case("truncated JSON", "POST", "/City", b'{"name": "Par',
             message=_HD_BAD_JSON),
    _hd_case("trailing garbage after JSON", "POST", "/City",
             b'{"name": "Paris"} x', message=_HD_BAD_JSON),
    _hd_case("two JSON documents", "POST", "/City",
             b'{"name": "Paris"}{"name": "Lyon"}', message=_HD_BAD_JSON),
    _hd_case("Content-Type text/plain", "POST", "/City", b'{"name": "Paris"}',
             headers=[("Content-Type", "text/plain")],
             message=_HD_CT_MSG % "text/plain"),
    _hd_case("Content-Type absent", "POST", "/City", b'{"name": "Paris"}',
             headers=[], message=_HD_CT_MSG % ""),
    _hd_case("Content-Type application/jsonx", "POST", "/City",
             b'{"name": "Paris"}',
             headers=[("Content-Type", "application/jsonx")],
             message=_HD_CT_MSG % "application/jsonx"),
    _hd_case("Content-Type ;;;== (garbage)", "POST", "/City",
             b'{"name": "Paris"}', headers=[("Content-Type", ";;;==")],
             message=_HD_CT_MSG % ""),
    _hd_case("charset latin-1", "POST", "/City", b'{"name": "Paris"}',
             headers=[("Content-Type", "application/json; charset=latin-1")],
             message='Content-Type charset must be "utf-8" got latin-1 '
                     'instead'),
    _hd_case("charset utf-16", "POST", "/City",
             '{"name": "Paris"}'.encode("utf-16"),
             headers=[("Content-Type", "application/json; charset=utf-16")],
             message='Content-Type charset must be "utf-8" got utf-16 '
                     'instead'),
    _hd_case("odd but valid Content-Type", "POST", "/City",
             b'{"name": "Oddtown"}',
             headers=[("Content-Type", 'APPLICATION/Json ; Charset="UTF-8"')],
             status=201),
    _hd_case("Content-Type with extra parameters", "POST", "/City",
             b'{"name": "Paramville"}',
             headers=[("Content-Type",
                       "application/json; foo=bar; charset=utf-8")],
             status=201),
    _hd_case("invalid UTF-8", "POST", "/City", b'{"name": "Par\xffis"}',
             message="Unicode Decode Error"),
    _hd_case("UTF-8-encoded surrogate", "POST", "/City",
             b'{"name": "\xed\xa0\x80"}', message="Unicode Decode Error"),
    _hd_case("lone surrogate escape", "POST", "/City",
             b'{"name": "\\ud800"}', message=_HD_BAD_JSON),
    _hd_case("UTF-8 BOM", "POST", "/City", b'\xef\xbb\xbf{"name": "Paris"}',
             message=_HD_BAD_JSON),
    _hd_case("NaN", "POST", "/City", b'{"name": "Paris", "population": NaN}',
             message=_HD_BAD_JSON),
    _hd_case("Infinity", "POST", "/City",
             b'{"name": "Paris", "population": Infinity}',
             message=_HD_BAD_JSON),
    _hd_case("-Infinity", "POST", "/City",
             b'{"name": "Paris", "population": -Infinity}',
             message=_HD_BAD_JSON),
    _hd_case("1e999", "POST", "/City",
             b'{"name": "Paris", "population": 1e999}', message=_HD_BAD_JSON),
    _hd_case("10,001-digit integer", "POST", "/City", _HD_LONG_INT,
             message="Invalid JSON: integer with more than 1000 digits"),
    _hd_case("integer beyond 64 bits", "POST", "/City",
             b'{"name": "Paris", "population": 1' + b"0" * 30 + b"}",
             message="Item at ['population'] Must be at most "
                     "9007199254740991: 1" + "0" * 30),
    _hd_case("array nested 100,000 deep", "POST", "/City", _HD_DEEP,
             message="Invalid JSON: nested deeper than 100 levels"),
    _hd_case("object nested 100,000 deep", "POST", "/City", _HD_DEEP_OBJ,
             message="Invalid JSON: nested deeper than 100 levels"),
    _hd_case("action body nested 100,000 deep", "POST",
             "/actions/rename_city", _HD_DEEP,
             message="Invalid JSON: nested deeper than 100 levels"),
    _hd_case("16 KB of escaped quotes after 101 brackets", "POST", "/City",
             _HD_QUOTES, message=_HD_BAD_JSON, max_seconds=0.25),
    _hd_case("900 KB name is not echoed back", "POST", "/City",
             b'{"name": "' + b"x" * 900000 + b'"}',
             message="Item at ['name'] Name must be capitalized: '"
                     + "x" * 199 + "...",
             max_body=300),
    _hd_case("300,000-item array is not echoed back", "POST", "/City",
             b'{"name": [' + b"0, " * 299999 + b"0]}", max_body=300),
    _hd_case("JSON body on GET", "GET", "/City/1", b'{"a": 1}',
             message="Invalid data"),
    _hd_case("body on an action without accepts", "POST", "/actions/stats",
             b"null", message="Expected None, found Box"),
    # Framing: Content-Length and Transfer-Encoding.
    _hd_case("Content-Length larger than the body (half-close)", "POST",
             "/City", b'{"name": ', raw=_HD_SHORT, half_close=True,
             message="Incomplete body: expected 100 bytes, got 9",
             extra={"CONTENT_LENGTH": "100"}),
    _hd_case("negative Content-Length", "POST", "/City", validate=False,
             raw=_hd_raw("POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                         "application/json\r\nContent-Length: -5\r\n\r\n"),
             message="Invalid Content-Length",
             extra={"CONTENT_LENGTH": "-5"}),
    _hd_case("non-numeric Content-Length", "POST", "/City", validate=False,
             raw=_hd_raw("POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                         "application/json\r\nContent-Length: abc\r\n\r\n"),
             message="Invalid Content-Length",
             extra={"CONTENT_LENGTH": "abc"}),
    _hd_case("Content-Length +17", "POST", "/City", validate=False,
             raw=_hd_raw("POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                         "application/json\r\nContent-Length: +17\r\n\r\n",
                         b'{"name": "Paris"}'),
             message="Invalid Content-Length",
             extra={"CONTENT_LENGTH": "+17"}),
    _hd_case("20-digit Content-Length", "POST", "/City",
             raw=_hd_raw("POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                         "application/json\r\nContent-Length: "
                         "99999999999999999999\r\n\r\n"),
             message="Invalid Content-Length", inproc_status=413,
             inproc_message="Request Entity Too Large",
             extra={"CONTENT_LENGTH": "99999999999999999999"}),
    _hd_case("Content-Length: 17, 17 (same value twice)", "POST", "/City",
             inproc=False, status=201,
             raw=_hd_raw("POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                         "application/json\r\nContent-Length: 17, 17\r\n"
                         "Connection: close\r\n\r\n", b'{"name": "Twice"}')),
    _hd_case("two different Content-Lengths", "POST", "/City", inproc=False,
             raw=_hd_raw("POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                         "application/json\r\nContent-Length: 17\r\n"
                         "Content-Length: 3\r\n\r\n", b'{"name": "Paris"}'),
             message="Conflicting Content-Length"),
    _hd_case("chunked body without Content-Length", "POST", "/City",
             raw=_HD_CHUNKED, status=201, body=b'{"name": "Chunkville"}',
             extra={"CONTENT_LENGTH": None,
                    "HTTP_TRANSFER_ENCODING": "chunked",
                    "wsgi.input_terminated": True}),
    _hd_case("chunked body, server cannot terminate input", "POST", "/City",
             body=b'{"name": "Chunkville"}', status=411,
             message="Length Required", http=False,
             extra={"CONTENT_LENGTH": None,
                    "HTTP_TRANSFER_ENCODING": "chunked"}),
    _hd_case("invalid chunk size", "POST", "/City", inproc=False,
             raw=_hd_raw("POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                         "application/json\r\nTransfer-Encoding: chunked"
                         "\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
             message="Invalid chunk size"),
    _hd_case("chunked and Content-Length together", "POST", "/City",
             inproc=False,
             raw=_hd_raw("POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                         "application/json\r\nTransfer-Encoding: chunked\r\n"
                         "Content-Length: 5\r\n\r\n0\r\n\r\n"),
             message="Invalid Transfer-Encoding"),
    _hd_case("Transfer-Encoding: gzip", "POST", "/City", status=501,
             message="Unsupported Transfer-Encoding",
             inproc_message="Unsupported Transfer-Encoding",
             raw=_hd_raw("POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                         "application/json\r\nTransfer-Encoding: gzip"
                         "\r\n\r\n"),
             extra={"HTTP_TRANSFER_ENCODING": "gzip"}),
    _hd_case("space before the colon of Transfer-Encoding", "POST", "/City",
             inproc=False, message="Malformed header",
             raw=_hd_raw("POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                         "application/json\r\nTransfer-Encoding : chunked"
                         "\r\nContent-Length: 2\r\n\r\n", b"{}")),
    _hd_case("obs-fold continuation line", "GET", "/City/1", inproc=False,
             raw=b"GET /City/1 HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n",
             message="Malformed header"),
    _hd_case("Expect: something-else", "POST", "/City", inproc=False,
             raw=_hd_raw("POST /City HTTP/1.1\r\nHost: h\r\nExpect: "
                         "teapot\r\nContent-Length: 2\r\n\r\n", b"{}"),
             status=417, message="Expectation Failed"),
    # Ids and paths.
    _hd_case("id ..%2F..%2Fetc%2Fpasswd", "GET",
             "/City/..%2F..%2Fetc%2Fpasswd",
             headers=(), status=404, message="Not Found"),
    _hd_case("raw ../ in the path", "GET", "/City/../City/1", headers=(),
             status=404, message="Not Found"),
    _hd_case("id %2E%2E", "GET", "/City/%2E%2E", headers=(), status=400,
             message="Invalid City id: .. (a dot segment)"),
    _hd_case("id with %2F", "GET", "/City/1%2F2", headers=(), status=404,
             message="Not Found"),
    _hd_case("id %00", "GET", "/City/%00", headers=(), status=404,
             message="Not Found"),
    _hd_case("id 1%00", "DELETE", "/City/1%00", headers=(), status=404,
             message="Not Found"),
    _hd_case("id with CR/LF", "GET", "/City/1%0D%0ASet-Cookie:%20x=1",
             headers=(), status=404, message="Not Found"),
    _hd_case("update of id with CR/LF", "PUT", "/Address/%0D%0A",
             b'{"number": 3}', status=404, message="Not Found"),
    _hd_case("id %FF (not UTF-8)", "GET", "/City/%FF", headers=(),
             message="Invalid UTF-8 in URL path"),
    _hd_case("id %C3%28 (bad UTF-8)", "DELETE", "/Address/%C3%28",
             headers=(), message="Invalid UTF-8 in URL path"),
    _hd_case("action name %FF", "POST", "/actions/%FF", headers=(),
             message="Invalid UTF-8 in URL path"),
    _hd_case("bad percent escape %zz", "GET", "/City/%zz", headers=(),
             status=404, message="Not Found"),
    _hd_case("id of 19 digits", "GET", "/City/9999999999999999999",
             headers=(), status=404, message="Not Found"),
    _hd_case("bad query value", "GET", "/City?limit=x", headers=(),
             message="Item at ['limit'] Invalid JSON: 'x'"),
    _hd_case("query value %FF", "GET", "/City?name=%FF", headers=(),
             status=(200, 400)),
    _hd_case("100 KB path", "GET", "/City/" + "a" * 100000, headers=(),
             status=414, message="URI Too Long"),
    _hd_case("20 KB path (app limit, under the server's)", "GET",
             "/City/" + "a" * 20000, headers=(), status=414,
             message="URI Too Long"),
    _hd_case("100 KB query string", "GET", "/City?name=" + "a" * 100000,
             headers=(), status=414, message="URI Too Long"),
    # Request heads.
    _hd_case("200 repeated headers", "GET", "/City/1",
             headers=[("X-Repeat", "v")] * 200, status=431,
             message="Request Header Fields Too Large", inproc_status=200),
    _hd_case("one 100 KB header", "GET", "/City/1",
             headers=[("X-Big", "b" * 100000)], status=431,
             message="Request Header Fields Too Large", inproc_status=200),
    _hd_case("100 KB X-Request-ID", "GET", "/City/1",
             headers=[("X-Request-ID", "r" * 100000)], status=431,
             message="Request Header Fields Too Large", inproc_status=200),
    _hd_case("header without a colon", "GET", "/City/1", inproc=False,
             raw=b"GET /City/1 HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
             message="Malformed header"),
    _hd_case("NUL in a header", "GET", "/City/1", inproc=False,
             raw=b"GET /City/1 HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n",
             message="Invalid character in request"),
    _hd_case("bare CR in a header", "GET", "/City/1", inproc=False,
             raw=b"GET /City/1 HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
             message="Invalid line ending"),
    _hd_case("garbage request line", "GET", "/", inproc=False,
             raw=b"\x16\x03\x01garbage\r\n\r\n",
             message="Malformed request line"),
    _hd_case("request target without a leading slash", "GET", "City/1",
             inproc=False, raw=b"GET City/1 HTTP/1.1\r\nHost: h\r\n\r\n",
             message="Invalid request target"),
    _hd_case("OPTIONS *", "OPTIONS", "*", inproc=False, status=(204, 404),
             raw=b"OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: close"
                 b"\r\n\r\n"),
    _hd_case("absolute-form target", "GET", "/City/1", inproc=False,
             status=200, raw=b"GET http://evil.example/City/1 HTTP/1.1\r\n"
                             b"Host: h\r\nConnection: close\r\n\r\n"),
    _hd_case("HTTP/2.0 request line", "GET", "/", inproc=False,
             raw=b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", status=505,
             message="HTTP Version Not Supported"),
    _hd_case("HTTP/1.1 without Host", "GET", "/spec.json", inproc=False,
             raw=b"GET /spec.json HTTP/1.1\r\n\r\n",
             message="Missing Host header"),
    _hd_case("two Host headers", "GET", "/spec.json", inproc=False,
             raw=b"GET /spec.json HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
             message="Duplicate Host header"),
    # Methods.
    _hd_case("OPTIONS /City", "OPTIONS", "/City", headers=(), status=204),
    _hd_case("unknown method FOO", "FOO", "/City", headers=(), status=405,
             message="Method Not Allowed"),
    _hd_case("TRACE", "TRACE", "/City/1", headers=[("X-Secret", "s3cr3t")],
             status=405, message="Method Not Allowed"),
    _hd_case("PROPFIND", "PROPFIND", "/City", headers=(), status=405,
             message="Method Not Allowed"),
    _hd_case("lowercase get", "get", "/City/1", headers=(), status=405,
             message="Method Not Allowed"),
    _hd_case("CONNECT to a path", "CONNECT", "/City", headers=(), status=405,
             message="Method Not Allowed"),
]


_HD_MEMORY = []  # (case, VmRSS before, after in KiB, body bytes sent)


def _hd_injection_api():
    """An API whose create returns the id the client asks for."""
    with cosmic.cosmos.swap({}):
        api = API("hdinject")
        things = {}

        @api.model
        class Thing(BaseModel):
            methods = ["get_by_id", "create"]
            properties = [required("key", String)]

            @classmethod
            def create(cls, **patch):
                things[patch["key"]] = patch
                return patch["key"], patch

            @classmethod
            def get_by_id(cls, id):
                try:
                    return things[id]
                except KeyError:
                    raise NotFound from None

    return api


class _hd_Secret(Exception):
    """A user exception whose text must never reach a client."""


_HD_SECRET = "s3cr3t-7f3a"


def _hd_faults_api(release):
    """Handlers that fail in every way a handler can (hangs wait on
    ``release``)."""
    with cosmic.cosmos.swap({}):
        api = API("hdfaults")

        @api.action(returns=String)
        def value_error():
            raise ValueError("bad value " + _HD_SECRET)

        @api.action(returns=String)
        def key_error():
            return {}["key " + _HD_SECRET]

        @api.action(returns=String)
        def custom():
            raise _hd_Secret("password=" + _HD_SECRET)

        @api.action(returns=Integer)
        def wrong_type():
            return "not an int " + _HD_SECRET

        @api.action(returns=JSON)
        def set_in_json():
            return Box({"a": {1, 2}, "s": _HD_SECRET})

        @api.action(returns=JSON)
        def set_unboxed():
            return {"a": {_HD_SECRET}}

        @api.action(returns=JSON)
        def nan_in_box():
            return Box({"x": float("nan"), "s": _HD_SECRET})

        @api.action(returns=String)
        def hang():
            release.wait(30)
            return "late"

        @api.action()
        def returns_data():
            return _HD_SECRET

        @api.action(returns=String)
        def returns_none():
            return None

        @api.action(accepts=Integer, returns=String)
        def ok(n):
            return "ok %d" % n

        @api.model
        class Thing(BaseModel):
            methods = ["get_by_id", "get_list", "create", "update", "delete"]
            properties = [required("name", String)]

            @classmethod
            def get_by_id(cls, id):
                raise RuntimeError("get " + _HD_SECRET)

            @classmethod
            def get_list(cls):
                return 42

            @classmethod
            def create(cls, **patch):
                return "not a pair " + _HD_SECRET

            @classmethod
            def update(cls, id, **patch):
                return {"name": 5}

            @classmethod
            def delete(cls, id):
                return 1 // 0

    return api


_HD_FAULTS = [
    ("POST", "/actions/value_error", b"", ValueError),
    ("POST", "/actions/key_error", b"", KeyError),
    ("POST", "/actions/custom", b"", _hd_Secret),
    ("POST", "/actions/wrong_type", b"", ValidationError),
    ("POST", "/actions/set_in_json", b"", TypeError),
    ("POST", "/actions/set_unboxed", b"", TypeError),
    ("POST", "/actions/nan_in_box", b"", ValueError),
    ("POST", "/actions/hang", b"", TimeoutError),
    ("POST", "/actions/returns_data", b"", ValidationError),
    ("POST", "/actions/returns_none", b"", ValidationError),
    ("GET", "/Thing/1", b"", RuntimeError),
    ("GET", "/Thing", b"", ValidationError),
    ("POST", "/Thing", b'{"name": "x"}', ValidationError),
    ("PUT", "/Thing/1", b'{"name": "x"}', ValidationError),
    ("DELETE", "/Thing/1", b"", ZeroDivisionError),
]


def _hd_places_client_body(test, url):
    """The places example end to end through cosmic.connect and raw HTTP."""
    client = cosmic.connect(url, timeout=_HD_NET_TIMEOUT)
    test.addCleanup(client.close)
    City, Address = client.models.City, client.models.Address
    before = client.actions.stats()
    ident, rep = City.create(name="Moscow", country="Russia")
    test.assertEqual(rep, {"name": "Moscow", "country": "Russia"})
    test.assertEqual(City.get_by_id(ident), rep)
    items, meta = City.get_list(name="Moscow", country="Russia", limit=100)
    test.assertIn((ident, rep), items)
    test.assertEqual(meta["total_count"], len(items))
    test.assertEqual(City.update(ident, population=13000000),
                     {"name": "Moscow", "country": "Russia",
                      "population": 13000000})
    with test.assertRaises(ValidationError) as cm:  # before sending
        City.create(name="moscow")
    test.assertEqual(str(cm.exception),
                     "Item at ['name'] Name must be capitalized: 'moscow'")
    with test.assertRaises(NotFound):
        City.get_by_id("987654321")
    with test.assertRaises(NotFound):
        City.update("987654321", name="Nowhere")
    aid, arep = Address.create(number=7, street="Tverskaya", city=ident)
    test.assertEqual(arep, {"number": 7, "street": "Tverskaya",
                            "city": ident})
    test.assertEqual(Address.get_by_id(aid), arep)
    test.assertEqual(Address.get_list(city=ident),
                     ([(aid, arep)], {"total_count": 1}))
    test.assertEqual(Address.update(aid, street="Tverskaya Ulitsa")["street"],
                     "Tverskaya Ulitsa")
    with test.assertRaises(RemoteHTTPError) as cm:
        City.delete(ident)
    test.assertEqual((cm.exception.code, cm.exception.message),
                     (409, "City has addresses"))
    test.assertEqual(client.actions.rename_city(id=ident, name="Moskva"),
                     "Moscow")
    test.assertEqual(client.actions.stats(),
                     {"cities": before["cities"] + 1,
                      "addresses": before["addresses"] + 1})
    test.assertIsNone(Address.delete(aid))
    with test.assertRaises(NotFound):
        Address.get_by_id(aid)
    with test.assertRaises(NotFound):
        Address.delete(aid)
    test.assertIsNone(City.delete(ident))
    with test.assertRaises(NotFound):
        City.get_by_id(ident)
    test.assertEqual(client.actions.stats(), before)
    port = int(url.rsplit(":", 1)[1])
    for method, target, status, message in [
            ("PUT", "/City", 405, "Method Not Allowed"),
            ("POST", "/City/1", 405, "Method Not Allowed"),
            ("GET", "/actions/stats", 405, "Method Not Allowed"),
            ("GET", "/Nope", 404, "Not Found"),
            ("GET", "/City/%FF", 400, "Invalid UTF-8 in URL path")]:
        answer = _http(port, method, target)
        test.assertEqual((answer.status, _hd_error(answer)),
                         (status, message), (method, target))
    answer = _http(port, "POST", "/City", [_JSON], b"{bad")
    test.assertEqual((answer.status, _hd_error(answer)),
                     (400, "Invalid JSON"))
    answer = _http(port, "GET", "/spec.json")
    test.assertEqual(json.loads(answer.body)["name"], "places")


_HD_ORIGIN = "https://app.example"
_HD_EVIL = "https://evil.example"


_HD_FUZZ_EXAMPLES = int(os.environ.get("COSMIC_FUZZ_EXAMPLES", "300"))
_HD_TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFXYZ"


def _hd_json_strategy(st, keys=None):
    """Arbitrary JSON values (no NaN or infinities: JSON has none)."""
    text = st.text(max_size=12)
    if keys is not None:
        text = st.sampled_from(keys) | text
    leaves = (st.none() | st.booleans()
              | st.integers(-(2 ** 70), 2 ** 70)
              | st.floats(allow_nan=False, allow_infinity=False) | text)
    return st.recursive(
        leaves, lambda inner: (st.lists(inner, max_size=4)
                               | st.dictionaries(text, inner, max_size=4)),
        max_leaves=12)


def _hd_mutations(st, seed_values, values):
    """Valid JSON values with one spot replaced by an arbitrary value."""

    def mutate(pair):
        (seed, value), choices = pair
        datum = json.loads(json.dumps(seed))
        spots = []

        def walk(node):
            if isinstance(node, dict):
                for key in node:
                    spots.append((node, key))
                    walk(node[key])
            elif isinstance(node, list):
                for index in range(len(node)):
                    spots.append((node, index))
                    walk(node[index])

        walk(datum)
        if not spots:
            return value
        container, key = spots[choices % len(spots)]
        if isinstance(container, dict) and choices % 3 == 0:
            del container[key]  # a missing field
        else:
            container[key] = value
        return datum

    return st.tuples(st.tuples(st.sampled_from(seed_values), values),
                     st.integers(0, 10 ** 6)).map(mutate)


# -- Fixtures: the command line -----------------------------------------------
# `python -m cosmic call/spec/openapi` against a live server.

def _cli_api():
    api = API("cli_words")
    cities = {}

    @api.action(accepts=String, returns=String)
    def pluralize(word):
        return word + "s"

    @api.action(accepts=Array(Integer), returns=Integer)
    def add(numbers):
        return sum(numbers)

    @api.action()
    def ping():
        pass

    @api.model
    class City(BaseModel):
        methods = ["get_by_id", "get_list", "create", "update", "delete"]
        properties = [required("name", String)]
        query_fields = [optional("name", String)]
        list_metadata = [required("total", Integer)]

        @classmethod
        def get_by_id(cls, id):
            try:
                return cities[id]
            except KeyError:
                raise NotFound from None

        @classmethod
        def get_list(cls, name=None):
            items = [(i, c) for i, c in sorted(cities.items())
                     if name is None or c["name"] == name]
            return items, {"total": len(items)}

        @classmethod
        def create(cls, patch):
            ident = str(len(cities) + 1)
            cities[ident] = dict(patch)
            return ident, cities[ident]

        @classmethod
        def update(cls, id, patch):
            cities[id].update(patch)
            return cities[id]

        @classmethod
        def delete(cls, id):
            del cities[id]

    return api


class _cli_AuthServer(Server):
    def view(self, endpoint, request, **url_args):
        if request.headers.get("Authorization") != "secret":
            return error_response("Unauthorized", 401)
        return super().view(endpoint, request, **url_args)


# -- Fixtures: the development server, round two ------------------------------
# development server, round two: event loop, framing, shutdown, workers

_HS_APP = '''
import os
import time

from cosmic import API, Float, Integer

api = API("s2")
MARKS = os.environ.get("S2_MARKS", "")


@api.action(accepts=Float, returns=Integer)
def slow(seconds):
    """Sleep, then answer the worker's pid; leaves a mark when it starts."""
    if MARKS:
        name = "%d-%d" % (os.getpid(), time.monotonic_ns())
        open(os.path.join(MARKS, name), "w").close()
    time.sleep(seconds)
    return os.getpid()


@api.action(returns=Integer)
def pid():
    return os.getpid()


def body_length(environ, start_response):
    """A plain WSGI app: reads the whole body, answers its length."""
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(len(body)).encode()]
'''


def _hs_app_dir(test):
    """A temporary folder holding s2app.py (and a marks folder)."""
    tmp = tempfile.TemporaryDirectory(prefix="cosmic_s2_")
    test.addCleanup(tmp.cleanup)
    with open(os.path.join(tmp.name, "s2app.py"), "w") as f:
        f.write(_HS_APP)
    os.mkdir(os.path.join(tmp.name, "marks"))
    return tmp.name


def _hs_proc_stat(pid):
    """(CPU seconds, threads, RSS KiB, peak RSS KiB) of a process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            name, _, value = line.partition(":")
            status[name] = value.split()[0] if value.split() else ""
    return cpu, int(status["Threads"]), int(status["VmRSS"]), \
        int(status["VmHWM"])


def _hs_children(pid):
    """The pids of a process's children (Linux)."""
    path = "/proc/%d/task/%d/children" % (pid, pid)
    with open(path) as f:
        return {int(p) for p in f.read().split()}


def _hs_serve(test, folder, target, *args, nofile=None):
    """``python -m cosmic serve`` of s2app.py in its own session (stopped
    at cleanup), optionally with a lowered open-files limit."""
    marks = os.path.join(folder, "marks")
    return _Serve(target, *args, env={"S2_MARKS": marks}, cwd=folder,
                  path=[folder], test=test, nofile=nofile, session=True)


def _hs_exchange(address, data, timeout=10):
    """Send raw bytes; everything the server sends until it closes (or is
    quiet for ``timeout``)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            chunks.append(b"<still open>")
        return b"".join(chunks)


def _hs_recording_app(seen):
    """A WSGI app that records (method, target, body) of each request."""
    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        seen.append((environ["REQUEST_METHOD"], environ["REQUEST_URI"], body))
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return app


def _hs_h11_requests(data):
    """Feed ``data`` to h11 as a server: ([(method, target, body)], error)."""
    h11 = _need("h11")
    version = tuple(int(p) for p in h11.__version__.split(".")[:2])
    if version < (0, 16):  # earlier ones had a chunked leniency of their own
        raise AssertionError("h11 0.16 or later is the reference, not %s"
                             % h11.__version__)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")  # then the client closes
    found, current = [], None
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                current = [event.method.decode(), event.target.decode(), b""]
            elif isinstance(event, h11.Data):
                current[2] += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                found.append(tuple(current))
                conn.send(h11.Response(status_code=200,
                                       headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            elif event is h11.NEED_DATA or isinstance(
                    event, h11.ConnectionClosed) or event is h11.PAUSED:
                return found, None
    except h11.RemoteProtocolError as exc:
        return found, str(exc)


# Each framing vector: (name, bytes sent, what the server must do:
# "same" = the request boundaries h11 sees, "refuse" = 400 and close).
_HS_HEAD = b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
_HS_NEXT = b"DELETE /next HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
_HS_VECTORS = [
    ("chunked body", _HS_HEAD + b"5\r\nhello\r\n0\r\n\r\n" + _HS_NEXT, "same"),
    ("chunk extension", _HS_HEAD + b"5;a=b;c\r\nhello\r\n0\r\n\r\n", "same"),
    ("upper-case hex, leading zeros",
     _HS_HEAD + b"00A\r\n0123456789\r\n0\r\n\r\n", "same"),
    ("valid trailer field",
     _HS_HEAD + b"2\r\nhi\r\n0\r\nX-Sum: 1\r\n\r\n" + _HS_NEXT, "same"),
    ("trailer smuggles a request",
     _HS_HEAD + b"2\r\nhi\r\n0\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
     + _HS_NEXT, "refuse"),
    ("bare LF after chunk size",
     _HS_HEAD + b"5\nhello\r\n0\r\n\r\n" + _HS_NEXT, "refuse"),
    ("bare LF after chunk data",
     _HS_HEAD + b"5\r\nhello\n0\r\n\r\n" + _HS_NEXT, "refuse"),
    ("bare LF after last chunk", _HS_HEAD + b"5\r\nhello\r\n0\n\r\n", "refuse"),
    ("bare LF ends the trailer", _HS_HEAD + b"5\r\nhello\r\n0\r\n\n", "refuse"),
    ("whitespace before chunk size",
     _HS_HEAD + b" 5\r\nhello\r\n0\r\n\r\n" + _HS_NEXT, "refuse"),
    ("whitespace after chunk size",
     _HS_HEAD + b"5 \r\nhello\r\n0\r\n\r\n" + _HS_NEXT, "refuse"),
    ("chunk size not hex", _HS_HEAD + b"5g\r\nhello\r\n0\r\n\r\n", "refuse"),
    ("negative chunk size", _HS_HEAD + b"-5\r\nhello\r\n0\r\n\r\n", "refuse"),
    ("chunk longer than its size",
     _HS_HEAD + b"3\r\nhello\r\n0\r\n\r\n", "refuse"),
    ("last header line ends in bare LF, then CRLF",
     b"GET /a HTTP/1.1\r\nHost: x\n\r\n" + _HS_NEXT, "refuse"),
    ("Content-Length and Transfer-Encoding",
     b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "refuse"),
    ("Transfer-Encoding: chunked twice",
     b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "refuse"),
    ("Transfer-Encoding: chunked, chunked",
     b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked"
     b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "refuse"),
    ("obs-fold", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n",
     "refuse"),
    ("whitespace before the colon",
     b"GET /a HTTP/1.1\r\nHost : x\r\n\r\n", "refuse"),
    ("absolute-form", b"GET http://x/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
     + _HS_NEXT, "same"),
    ("three pipelined requests",
     b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
     b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
     + _HS_HEAD.replace(b"/p", b"/3") + b"1\r\nz\r\n0\r\n\r\n", "same"),
    ("conflicting Content-Length",
     b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
     b"Content-Length: 4\r\n\r\nabcd", "refuse"),
    ("bare LF head (all lines)",
     b"GET /lf HTTP/1.1\nHost: x\n\n" + _HS_NEXT, "same"),
]


def _hs_framing_table(address, seen):
    """Send every vector; [(name, h11 result, server result, verdict)]."""
    rows = []
    for name, data, expected in _HS_VECTORS:
        del seen[:]
        answer = _hs_exchange(address, data, timeout=5)
        h11_found, h11_error = _hs_h11_requests(data)
        statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
        refused = bool(statuses) and statuses[-1] == 400 and \
            not answer.endswith(b"<still open>")
        if h11_error is None:
            h11_text = "%d request(s): %s" % (
                len(h11_found), ", ".join("%s %s" % r[:2] for r in h11_found))
        else:
            h11_text = "%d request(s), then error: %s" % (len(h11_found),
                                                           h11_error)
        if refused:
            server_text = "%d served, then 400 and close" % (len(seen) if
                                                              seen else 0)
        else:
            server_text = "%d request(s): %s" % (
                len(seen), ", ".join("%s %s" % r[:2] for r in seen))
        same = [(m, b) for m, _, b in seen] == \
            [(m, b) for m, _, b in h11_found]
        rows.append((name, expected, h11_text, server_text, refused, same,
                     list(seen), h11_found, h11_error))
    return rows


class _hs_FailingAccept:
    """A listening socket whose accept() fails with EMFILE."""

    def __init__(self, sock):
        self.sock = sock
        self.calls = 0

    def fileno(self):
        return self.sock.fileno()

    def accept(self):
        self.calls += 1
        raise OSError(errno.EMFILE, "Too many open files")

    def close(self):
        self.sock.close()


def _hs_tricklers(address, count):
    """Open ``count`` connections that each send a blank line (what a slow
    client trickles); return the sockets (closed by the caller)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(address)
        socks.append(sock)
    _, writable, _ = select.select([], socks, [], 10)
    for sock in writable:
        try:
            sock.send(b"\r\n")
        except OSError:
            pass
    return socks


def _hs_fresh_request(address):
    """Seconds until a fresh client's GET /spec.json is answered 200."""
    started = time.monotonic()
    status, _, _ = _http(address, "GET", "/spec.json", timeout=30,
                         close=False)
    elapsed = time.monotonic() - started
    return status, elapsed


# -- Fixtures: the WSGI application, round two --------------------------------
# WSGI application, round two: return values, limits, scopes, HTTP details,
# conditional requests

def _sv_towns(etag=None, log=None, slow=None):
    """A Town model for conditional requests; (api, towns, log).

    ``etag``: a version-based ``etag`` classmethod when true, and update
    and delete then check ``if_match()`` against the version themselves.
    ``slow``: an Event the update waits on (to widen a race).
    """
    log = log if log is not None else []
    towns = {"1": {"name": "Lund", "version": 1},
             "2": {"name": "Malmo", "version": 1}}
    api = API("towns")

    class Town(BaseModel):
        methods = ["get_by_id", "get_list", "create", "update", "delete"]
        properties = [required("name", String)]

        @classmethod
        def get_by_id(cls, id):
            try:
                return dict(towns[id])
            except KeyError:
                raise NotFound from None

        @classmethod
        def get_list(cls):
            return [(k, dict(v)) for k, v in towns.items()]

        @classmethod
        def create(cls, patch):
            new_id = str(len(towns) + 1)
            towns[new_id] = dict(patch, version=1)
            return new_id, dict(towns[new_id])

        @classmethod
        def update(cls, id, patch):
            log.append(("update", id, cosmic.if_match()))
            if id not in towns:
                raise NotFound
            if slow is not None:
                slow.wait(0.05)
            if etag:
                cls.check(id)
            towns[id] = dict(towns[id], **patch)
            towns[id]["version"] += 1
            return dict(towns[id])

        @classmethod
        def delete(cls, id):
            log.append(("delete", id, cosmic.if_match()))
            if id not in towns:
                raise NotFound
            if etag:
                cls.check(id)
            del towns[id]

        @classmethod
        def check(cls, id):
            tag = cosmic.if_match()
            if tag not in (None, "*") and tag != "v%d" % towns[id]["version"]:
                raise cosmic.PreconditionFailed("Town %s changed" % id)

    if etag:
        Town.etag = classmethod(
            lambda cls, id, rep: "v%d" % rep["version"])
    api.model(Town)
    return api, towns, log


class _sv_ClientETags:
    """The same conditional calls through each client."""

    def make_client(self, api):
        raise NotImplementedError

    def setUp(self):
        _sv_isolate(self)
        self.api, self.towns, self.log = _sv_towns()
        self.client = self.make_client(self.api)
        self.Town = self.client.models.Town

    def test_get_with_etag(self):
        rep, tag = self.Town.get_by_id("1", _with_etag=True)
        self.assertEqual(rep, {"name": "Lund"})
        self.assertRegex(tag, r"\A[0-9a-f]{32}\Z")
        self.assertEqual(self.Town.get_by_id("1"), {"name": "Lund"})

    def test_update_and_delete_with_if_match(self):
        rep, tag = self.Town.get_by_id("1", _with_etag=True)
        rep, new_tag = self.Town.update("1", {"name": "Lund N"},
                                        _if_match=tag, _with_etag=True)
        self.assertEqual(rep, {"name": "Lund N"})
        self.assertEqual(self.log, [("update", "1", tag)])
        self.assertEqual(self.Town.get_by_id("1", _with_etag=True)[1],
                         new_tag)
        with self.assertRaises(cosmic.PreconditionFailed) as cm:
            self.Town.update("1", name="Lund X", _if_match=tag)
        self.assertIsInstance(cm.exception, RemoteHTTPError)
        self.assertEqual(cm.exception.code, 412)
        self.assertIn("has changed", cm.exception.message)
        with self.assertRaises(cosmic.PreconditionFailed):
            self.Town.delete("1", _if_match=tag)
        self.assertIsNone(self.Town.delete("1", _if_match=new_tag))
        self.assertNotIn("1", self.towns)
        self.assertIsNone(self.Town.delete("2", _if_match="*"))

    def test_bad_tags_are_refused_before_sending(self):
        for bad in ('a"b', 3, "a b"):
            with self.subTest(bad=bad):
                with self.assertRaises(ValidationError):
                    self.Town.update("1", name="X", _if_match=bad)
        self.assertEqual(self.log, [])


def _sv_returns(values):
    """Actions and models that return ``values[name]``: an API whose
    handlers send what their clients would refuse."""
    api = API("rets")
    point = Struct([required("x", Integer), optional("label", String)])

    @api.action(returns=point)
    def one():
        return values["one"]

    @api.action(returns=Array(point))
    def many():
        return values["many"]

    @api.action(returns=Map(Struct([required("inner", point)])))
    def nested():
        return values["nested"]

    @api.action(returns=Integer)
    def number():
        return values["number"]

    @api.action(accepts=Struct([required("a", Integer),
                                required("b", Integer)]), returns=Integer)
    def add(a, b):
        return a + b

    @api.action(returns=JSON)
    def anything():
        return values["anything"]

    @api.action(returns=DateTime)
    def when():
        return values["when"]

    @api.action()
    def raises():
        raise ValidationError("from the handler")

    @api.model
    class Spot(BaseModel):
        methods = ["get_by_id", "get_list", "create", "update"]
        properties = [required("name", String), optional("at", point)]
        list_metadata = [required("total", Integer)]

        @classmethod
        def get_by_id(cls, id):
            return values["get_by_id"]

        @classmethod
        def get_list(cls):
            return values["get_list"]

        @classmethod
        def create(cls, patch):
            return values["create"]

        @classmethod
        def update(cls, id, patch):
            return values["update"]

    return api


def _sv_limits(max_json_depth=None):
    api = API("limits")

    @api.action(accepts=Struct([required("a", Integer),
                                required("b", Integer)]), returns=Integer)
    def add(a, b):
        return a + b

    @api.action(accepts=Integer, returns=Integer)
    def power(n):
        return 10 ** n

    @api.action(accepts=JSON, returns=JSON)
    def echo(value):
        return value

    @api.action(returns=JSON)
    def deep():
        value = []
        for _ in range(100000):
            value = [value]
        return Box(value)

    @api.model
    class Tag(BaseModel):
        methods = ["get_list"]
        properties = [optional("name", String)]
        query_fields = [optional("filter", JSON)]

        @classmethod
        def get_list(cls, filter=None):
            return [("1", {"name": "t"})]

    options = {} if max_json_depth is None else \
        {"max_json_depth": max_json_depth}
    return api, Server(api, **options).wsgi_app


def _sv_nest(depth, kinds="[", inner=b"1"):
    head, tail = b"", b""
    for i in range(depth):
        if kinds[i % len(kinds)] == "[":
            head, tail = head + b"[", b"]" + tail
        else:
            head, tail = head + b'{"a": ', b"}" + tail
    return head + inner + tail


_sv_g = ThreadLocalDict()


def _sv_scoped_apis():
    """An outer API whose action calls an inner one in-process."""
    inner = API("inner")
    outer = API("outer")
    seen = []

    @inner.action(returns=String)
    def whoami():
        seen.append(("inner sees", _sv_g.get("user")))
        _sv_g["user"] = "inner"
        return "inner"

    @outer.action(accepts=String, returns=String)
    def relay(how):
        _sv_g["user"] = "outer"
        if how == "client":
            WsgiAPIClient.for_api(inner).actions.whoami()
        else:
            app = Server(inner).wsgi_app
            status, _, _ = _wsgi(app, "POST", "/actions/whoami")
            seen.append(("status", status))
        return _sv_g["user"]

    return outer, inner, seen


def _sv_ids(next_id):
    api = API("ids2")
    things = {}

    @api.model
    class Thing(BaseModel):
        methods = ["get_by_id", "create", "get_list", "delete"]
        properties = [optional("name", String)]
        links = [optional_link("other", Model("ids2.Thing"))]

        @classmethod
        def get_by_id(cls, id):
            try:
                return things[id]
            except KeyError:
                raise NotFound from None

        @classmethod
        def create(cls, patch):
            things[next_id[0]] = patch
            return next_id[0], patch

        @classmethod
        def get_list(cls):
            return list(things.items())

        @classmethod
        def delete(cls, id):
            things.pop(id)

    @api.action()
    def noop():
        pass

    return api, things


# -- Fixtures: the client, round two ------------------------------------------
# client and command line, round two: fork safety, bounded answers,
# deadlines, retries, URLs

class _cl_Raw6(_cl_RawServer):
    """``_cl_RawServer`` listening on [::1] (IPv6 loopback)."""

    family, host, url_host = socket.AF_INET6, "::1", "[::1]"


def _cl_head(status="200 OK", headers=()):
    lines = ["HTTP/1.1 %s" % status] + ["%s: %s" % h for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _cl_flood(conn, total, chunked):
    """Send ``total`` bytes of JSON-ish filler; stop when the peer goes."""
    piece = b"7" * 65536
    sent = 0
    while sent < total:
        data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
        conn.sendall(data)
        sent += len(piece)
    if chunked:
        conn.sendall(b"0\r\n\r\n")


def _cl_hostile(kind, total=10 ** 9):
    """A handler answering every request with a body too big: ``declared``
    (Content-Length: 10**12 and nothing), ``declared_stream`` (the
    declared length, then ``total`` bytes), ``chunked`` or ``close``
    (no length: the body ends when the connection does)."""
    def handler(server, conn, stream, index):
        request = server.read(stream)
        if request is None:
            return
        if kind == "declared":
            conn.sendall(_cl_head(headers=[
                ("Content-Type", "application/json"),
                ("Content-Length", str(10 ** 12))]))
            conn.settimeout(30)
            conn.recv(1)  # b"" when the client hangs up
        elif kind == "declared_stream":
            conn.sendall(_cl_head(headers=[
                ("Content-Type", "application/json"),
                ("Content-Length", str(total))]))
            _cl_flood(conn, total, False)
        elif kind == "chunked":
            conn.sendall(_cl_head(headers=[
                ("Content-Type", "application/json"),
                ("Transfer-Encoding", "chunked")]))
            _cl_flood(conn, total, True)
        else:
            conn.sendall(_cl_head(headers=[
                ("Content-Type", "application/json"),
                ("Connection", "close")]))
            _cl_flood(conn, total, False)
    return handler


def _cl_drip(where, interval=0.25):
    """A handler that drips its answer one byte per ``interval`` seconds,
    in the ``head`` or in the ``body`` (50 bytes declared)."""
    def handler(server, conn, stream, index):
        if server.read(stream) is None:
            return
        head = _cl_head(headers=[("Content-Type", "application/json"),
                                      ("Content-Length", "50")])
        body = b"1" * 50
        if where == "head":
            slow, fast = head, b""
        else:
            conn.sendall(head)
            slow, fast = body, b""
        for i in range(len(slow)):
            if server.stop.wait(interval):
                return
            conn.sendall(slow[i:i + 1])
        conn.sendall(fast)
    return handler


def _cl_act_then_drop(server, conn, stream, index):
    """Connection 0 acts on its request (it is recorded) and hangs up
    without an answer; later connections answer 404, as the object is
    gone."""
    while True:
        request = server.read(stream)
        if request is None or index == 0:
            return
        conn.sendall(_cl_http("404 Not Found", b'{"error": "Not Found"}',
                              [("Content-Type", "application/json")]))


class _cl_Case(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.spec = _cl_spec_json(_cl_isolated_api())

    def setUp(self):
        swap = cosmos.swap({})
        swap.__enter__()
        self.addCleanup(swap.__exit__, None, None, None)

    def raw(self, handler, cls=_cl_RawServer):
        server = cls(handler)
        self.addCleanup(server.close)
        return server

    def client(self, url, **options):
        client = APIClient.from_spec(self.spec, url, **options)
        self.addCleanup(client.close)
        return client


def _cl_names_api():
    with cosmos.swap({}):
        api = API("client2names")
        names = ["endpoint", "self", "cls", "args", "kwargs", "query",
                 "fields", "patch", "request"]

        @api.action(accepts=Struct([required(n, Integer) for n in names]),
                    returns=Array(Integer))
        def collide(endpoint, self, cls, args, kwargs, query, fields, patch,
                    request):
            return [endpoint, self, cls, args, kwargs, query, fields, patch,
                    request]

        @api.model
        class Thing(cosmic.DBModel):
            table_name = "client2_things"
            methods = ["get_by_id", "get_list", "create", "update",
                       "delete"]
            properties = [optional(n, String) for n in names]
            query_fields = [optional(n, String) for n in names]

    return api, names


_CL_PY39 = "/root/.pyenv/versions/3.9.18/bin/python"


# -- Fixtures: constraints, hints and custom types ----------------------------
# Constraints, enums, create_requires, custom types, type hints, and what
# third-party tools (jsonschema, openapi-python-client, schemathesis) make
# of the places example. TestRulesHints runs on Python 3.9 with the
# standard library only:
#   python3.9 -m unittest test_cosmic.TestRulesHints

def _ru_api(name="rules"):
    """An API with constrained types everywhere, in a private registry."""
    with cosmos.swap({}):
        api = API(name)

        @api.action(accepts=Struct([
            optional("limit", Integer(minimum=1, maximum=100)),
            optional("ratio", Float(exclusive_minimum=0, exclusive_maximum=1)),
            optional("code", String(min_length=2, max_length=3,
                                    pattern="^[A-Z]+$")),
            optional("color", String(enum=["red", "green"])),
            optional("level", Integer(enum=[1, 2, 3])),
            optional("tags", Array(String(min_length=1), min_items=1,
                                   max_items=2)),
            optional("scores", Map(Integer, max_items=1)),
            optional("name", String(pattern="^[^a-z]",
                                    message="Name must be capitalized")),
        ]), returns=Integer)
        def check(limit=None, ratio=None, code=None, color=None, level=None,
                  tags=None, scores=None, name=None):
            given = (limit, ratio, code, color, level, tags, scores, name)
            return len([g for g in given if g is not None])

        @api.model
        class Item(BaseModel):
            methods = ["get_by_id", "get_list", "create"]
            properties = [required("name", String(min_length=1)),
                          optional("size", Integer(minimum=0))]
            query_fields = [optional("limit", Integer(minimum=1, maximum=10)),
                            optional("tags", Array(String, max_items=2))]
            create_requires = ["name"]

            @classmethod
            def get_by_id(cls, id):
                return {"name": "x"}

            @classmethod
            def get_list(cls, **query):
                return [("1", {"name": "x", "size": len(query)})]

            @classmethod
            def create(cls, patch):
                return "1", patch
    return api


class _ru_Recording(WsgiAPIClient):
    """An in-process client that counts the requests it sends."""

    sent = 0

    def make_request(self, endpoint, request):
        type(self).sent += 1
        return super().make_request(endpoint, request)


_RU_UNCONSTRAINED_SPECS = {
    # sha256 and length of GET /spec.json of the examples before
    # constraints existed: an API without them serialises as it did.
    "mathy": ("93b4c3eb2c7184cb13be9276fd4c842106d25c7ae597a5fcf1383127dd342bad",
              1233),
    "planetarium": (
        "682055d2764321c70ddabc19b5cb0ba87096b9c370de1ab515e8af3afb9b5509",
        885),
    "words": ("47f72d4b69bbff4b7a8761920d0f4c6821d4bf037b630950d712d03f8a6452f1",
              236),
}


def _ru_module(source, name="_ru_hinted"):
    """Run source as a module (registered while it runs and after, so that
    typing can resolve its string annotations); return the module."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    with cosmos.swap({}):
        exec(compile(textwrap.dedent(source), name, "exec"), vars(module))
    return module


def _ru_spec(api):
    spec = APISpec.to_json(api.spec)
    spec["name"] = "x"
    return spec


# What schemathesis may not hold against places, each with its reason. The
# rest of its checks (all of them) and phases (stateful included) must pass.
_RU_SCHEMATHESIS_TOML = '''
[generation]
allow-extra-parameters = true

# 1. A refusal that depends on stored state, which no document can state:
#    a link to a City that does not exist is refused with 400 ("No City
#    with id '0'"), although the link is schema-valid. (An id in the path
#    that does not exist is a 404, which schemathesis already expects.)
[[operations]]
include-name = ["POST /Address"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404"]

# 3. Conditional requests: If-Match and If-None-Match are schema-valid
#    whatever tags they name, and the answer depends on the object's
#    current ETag: 412 when If-Match names another tag (or If-None-Match
#    the current one, on PUT and DELETE), 304 on a GET whose If-None-Match
#    names the current one. (PUT /Address/{id} also has the 400 of 1.)
[[operations]]
include-name = ["PUT /Address/{id}"]
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "304", "400", "404", "412"]

[[operations]]
include-name = ["GET /City/{id}", "PUT /City/{id}", "DELETE /City/{id}",
                "GET /Address/{id}", "DELETE /Address/{id}"]
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "304", "404", "409", "412"]

# 2. Undeclared query parameters are ignored, as in the original Cosmic,
#    so a request whose only fault is an extra parameter succeeds.
#    allow-extra-parameters above makes schemathesis send them; it counts
#    such a request as acceptable when answered 2xx, so this exception
#    needs no override here.
'''


# -- Fixtures: the contract diff ----------------------------------------------
# contract changes: cosmic diff and pinned clients

_DF_API = "dft"
_DF_I, _DF_F, _DF_S = {"type": "Integer"}, {"type": "Float"}, {"type": "String"}
_DF_B, _DF_JSON = {"type": "Boolean"}, {"type": "JSON"}


def _df_fields(items):
    """An OrderedMap JSON of field entries from (name, schema, required)."""
    return {"map": {n: {"schema": s, "required": r} for n, s, r in items},
            "order": [n for n, _, _ in items]}


def _df_model(properties=(), links=(), query_fields=(), list_metadata=(),
              methods=tuple(cosmic.MODEL_METHODS), create_requires=None):
    """A model entry; links are (name, target model, required)."""
    entry = {
        "properties": _df_fields(properties),
        "links": {"map": {n: {"model": "%s.%s" % (_DF_API, m),
                              "required": r} for n, m, r in links},
                  "order": [n for n, _, _ in links]},
        "query_fields": _df_fields(query_fields),
        "methods": {m: m in methods for m in cosmic.MODEL_METHODS},
        "list_metadata": _df_fields(list_metadata),
    }
    if create_requires is not None:
        entry["create_requires"] = list(create_requires)
    return entry


def _df_spec(actions=None, models=None, name=_DF_API):
    """A spec JSON; a model Other (get_by_id) is there for links to name."""
    actions = dict(actions or {})
    models = dict(models or {})
    models.setdefault("Other", _df_model(methods=("get_by_id",)))
    return {"name": name,
            "actions": {"map": actions, "order": list(actions)},
            "models": {"map": models, "order": list(models)}}


def _df_action(accepts=None, returns=None, doc=None):
    """A spec with one action f."""
    entry = {}
    if accepts is not None:
        entry["accepts"] = accepts
    if returns is not None:
        entry["returns"] = returns
    if doc is not None:
        entry["doc"] = doc
    return _df_spec({"f": entry})


def _df_thing(**parts):
    """A spec with one model Thing."""
    return _df_spec(models={"Thing": _df_model(**parts)})


def _df_struct(*items):
    return {"type": "Struct", "param": _df_fields(items)}


def _df_key(value):
    return json.dumps(value, sort_keys=True)


def _df_unique(values):
    seen, out = set(), []
    for value in values:
        if _df_key(value) not in seen:
            seen.add(_df_key(value))
            out.append(value)
    return out


_DF_BASE = {
    "Integer": [0, 1, -1, 2, 100],
    "Float": [0.5, 1.5, -2.25, 3.0],
    "Boolean": [True, False],
    "String": ["a", "", "Hello", "ABC", "2014-01-01T00:00:00", "YWJj", "x y"],
    "DateTime": ["2014-01-01T00:00:00", "2013-10-04T13:05:25+05:00"],
    "Binary": ["YWJj", ""],
    "JSON": [None, 1, "x", [1, 2], {"a": True}],
    "Schema": [{"type": "Integer"}],
    "cosmic.Model": ["%s.Other" % _DF_API],
    "UUID": ["f81d4fae-7dec-11d0-a765-00a0c91e6bf6"],
}


def _df_struct_values(items):
    """Struct values: the minimal one, the full one, and each value of
    each field in both (every value that could show a break)."""
    firsts = {}
    options = {}
    for name, schema, _ in items:
        options[name] = _df_values(schema)
        if options[name]:
            firsts[name] = options[name][0]
    minimal = {n: firsts[n] for n, _, r in items if r and n in firsts}
    full = dict(firsts)
    out = [minimal, full]
    for name, _, _ in items:
        for value in options[name]:
            out.append(dict(minimal, **{name: value}))
            out.append(dict(full, **{name: value}))
    return out


def _df_values(schema):
    """Valid JSON values of a schema JSON, bounds and enum values first."""
    kind = schema["type"]
    extra = list(schema.get("enum", ()))
    for key in ("minimum", "maximum", "exclusiveMinimum",
                "exclusiveMaximum"):
        if key in schema:
            bound = schema[key]
            extra += [bound, bound - 1, bound + 1]
            if kind == "Float":
                extra += [bound - 0.5, bound + 0.5]
    for key in ("minLength", "maxLength"):
        if key in schema:
            extra += ["a" * max(schema[key] + d, 0) for d in (0, -1, 1)]
    param = schema.get("param")
    if kind == "Struct":
        items = [(n, param["map"][n]["schema"], param["map"][n]["required"])
                 for n in param["order"]]
        base = _df_struct_values(items)
    elif kind in ("Array", "Map", "OrderedMap"):
        items = _df_values(param)[:8]
        if kind == "Array":
            base = [[]] + [[v] for v in items] + [items[:2]]
            for key in ("minItems", "maxItems"):
                if key in schema and items:
                    base += [items[:1] * max(schema[key] + d, 0)
                             for d in (0, -1, 1)]
        elif kind == "Map":
            base = [{}] + [{"k": v} for v in items]
        else:
            base = [{"map": {}, "order": []}] + [
                {"map": {"k": v}, "order": ["k"]} for v in items]
    elif kind == "cosmic.Link":
        base = ["/%s/1" % param.partition(".")[2]]
    else:
        base = list(_DF_BASE[kind])
    schema_type = Schema.from_json(copy.deepcopy(schema))
    out = []
    for value in _df_unique(extra + base):
        try:
            schema_type.from_json(copy.deepcopy(value))
        except ValidationError:
            continue
        out.append(value)
    return out


def _df_natives(schema):
    """Native values for the JSON values of _df_values."""
    schema_type = Schema.from_json(copy.deepcopy(schema))
    return [schema_type.from_json(copy.deepcopy(v)) for v in _df_values(schema)]


def _df_rep_items(model, writing=False):
    """A model's properties and links as fields; all optional in patches."""
    items = []
    for name in model["properties"]["order"]:
        field = model["properties"]["map"][name]
        items.append((name, field["schema"],
                      field["required"] and not writing))
    for name in model["links"]["order"]:
        link = model["links"]["map"][name]
        items.append((name, {"type": "cosmic.Link", "param": link["model"]},
                      link["required"] and not writing))
    return items


def _df_server(spec, state):
    """A WSGI app serving ``spec``: handlers record what they get and
    return ``state``'s values (set by the caller, valid for ``spec``)."""
    native = APISpec.from_json(copy.deepcopy(spec))
    api = API(spec["name"])
    for name, entry in native["actions"].items():
        func = _df_action_func(state, entry.get("accepts") is not None,
                               entry.get("returns") is not None)
        func.__name__ = name
        api.action(accepts=entry.get("accepts"),
                   returns=entry.get("returns"))(func)
    for name, model in native["models"].items():
        api.model(_df_model_class(name, model, state))
    return Server(api).wsgi_app


def _df_action_func(state, takes_input, gives_result):
    """An action's function: records its input, returns state's result."""
    if takes_input:
        def func(x):
            state["got"].append(x)
            return state["result"] if gives_result else None
    else:
        def func():
            state["got"].append(None)
            return state["result"] if gives_result else None
    return func


def _df_model_class(name, model, state):
    has_meta = bool(model["list_metadata"])

    def get_by_id(cls, id):
        return state["rep"]

    def get_list(cls, **query):
        state["got"].append(query)
        items = [("1", state["rep"])]
        return (items, state["meta"]) if has_meta else items

    def create(cls, patch):
        state["got"].append(patch)
        return "1", state["rep"]

    def update(cls, id, patch):
        state["got"].append(patch)
        return state["rep"]

    def delete(cls, id):
        return None

    attrs = {
        "methods": [m for m in cosmic.MODEL_METHODS if model["methods"][m]],
        "properties": list(model["properties"].items()),
        "links": list(model["links"].items()),
        "query_fields": list(model["query_fields"].items()),
        "list_metadata": list(model["list_metadata"].items()),
    }
    if model.get("create_requires"):
        attrs["create_requires"] = list(model["create_requires"])
    for func in (get_by_id, get_list, create, update, delete):
        attrs[func.__name__] = classmethod(func)
    return type(name, (BaseModel,), attrs)


class _df_Probe:
    """Calls generated from OLD's spec, by a client built from OLD, to a
    server built from NEW's spec whose handlers return NEW's values."""

    def __init__(self, old, new):
        self.old, self.new = old, new
        self.state = {"got": [], "result": None, "rep": {}, "meta": {}}
        with cosmos.swap({}):
            self.app = _df_server(new, self.state)
            self.client = WsgiAPIClient(self.app, spec=copy.deepcopy(old))
        self.failed = set()

    def run(self):
        """The directions in which OLD's callers fail: request (the server
        refuses or drops what they send), response (they refuse or miss
        what it answers)."""
        with cosmos.swap({}):
            for name, entry in self.old["actions"]["map"].items():
                self.action(name, entry)
            for name, model in self.old["models"]["map"].items():
                self.model(name, model)
        return self.failed

    def send(self, call, *args, **kwargs):
        """Make one call; True when the server took it."""
        try:
            call(*args, **kwargs)
        except (RemoteHTTPError, NotFound) as err:
            if getattr(err, "code", 404) >= 500:
                raise AssertionError("the server failed: %s" % err)
            self.failed.add("request")
            return False
        except (ValidationError, SpecError):
            pass  # what came back: checked by answer()
        return True

    def answer(self, call, *args, expect=True, **kwargs):
        """Make one call whose request the server takes; note a response
        failure when OLD's client refuses the answer or gets nothing."""
        try:
            result = call(*args, **kwargs)
        except (ValidationError, SpecError):
            self.failed.add("response")
            return
        if expect and result is None:
            self.failed.add("response")

    def new_entry(self, kind, name):
        return self.new[kind]["map"].get(name)

    def action(self, name, entry):
        func = getattr(self.client.actions, name)
        new = self.new_entry("actions", name) or {}
        new_returns = new.get("returns")
        self.state["result"] = _df_natives(new_returns)[0] \
            if new_returns else None
        accepts = entry.get("accepts")
        inputs = [(v,) for v in _df_natives(accepts)] if accepts else [()]
        taken = [args for args in inputs if self.send(func, *args)]
        if not taken:
            return  # nothing reaches the server: no answer to check
        for result in (_df_natives(new_returns) if new_returns else [None]):
            self.state["result"] = result
            self.answer(func, *taken[0], expect="returns" in entry)

    def model(self, name, model):
        namespace = getattr(self.client.models, name)
        methods = [m for m in cosmic.MODEL_METHODS if model["methods"][m]]
        new = self.new_entry("models", name)
        reps, metas = [{}], [{}]
        if new is not None:
            reps = _df_struct_natives(_df_rep_items(new)) or [{}]
            metas = _df_struct_natives(_df_field_items(
                new["list_metadata"])) or [{}]
        self.state["rep"], self.state["meta"] = reps[-1], metas[-1]
        patches = _df_struct_natives(_df_rep_items(model, writing=True))
        if "get_by_id" in methods and self.send(namespace.get_by_id, "1"):
            for rep in reps:
                self.state["rep"] = rep
                self.answer(namespace.get_by_id, "1")
            self.state["rep"] = reps[-1]
        if "delete" in methods:
            self.send(namespace.delete, "1")
        for method in ("create", "update"):
            if method in methods:
                call = getattr(namespace, method)
                args = ("1",) if method == "update" else ()
                for patch in patches:
                    self.state["got"][:] = []
                    self.send(call, *args, **patch)
        if "get_list" in methods:
            self.get_list(namespace.get_list, model, metas)

    def get_list(self, call, model, metas):
        queries = _df_struct_natives(_df_field_items(model["query_fields"]))
        taken = []
        for query in queries:
            self.state["got"][:] = []
            if self.send(call, **query):
                taken.append(query)
                if self.state["got"] != [query]:
                    self.failed.add("request")  # a parameter was dropped
        if taken:
            for meta in metas:
                self.state["meta"] = meta
                self.answer(call, **taken[0])


def _df_field_items(fields):
    """(name, schema, required) from an OrderedMap JSON of field entries."""
    return [(n, fields["map"][n]["schema"], fields["map"][n]["required"])
            for n in fields["order"]]


def _df_struct_natives(items):
    """Native values of a Struct of these fields (links become ids)."""
    struct = Struct([(n, {"schema": Schema.from_json(copy.deepcopy(s)),
                          "required": r}) for n, s, r in items])
    out = []
    for value in _df_struct_values(items):
        try:
            out.append(struct.from_json(copy.deepcopy(value)))
        except ValidationError:
            pass
    return out


def _df_practice(old, new):
    """Where calls from OLD fail against NEW: a set of directions."""
    return _df_Probe(old, new).run()


# Every kind of change, as (label, old, new, kind, verdict, direction):
# direction is where the change breaks callers of OLD (empty when it does
# not). Each is checked by diff() and in practice by _df_practice.
_DF_ARRAY_I = {"type": "Array", "param": _DF_I}
_DF_CASES = [
    # the API and actions
    ("name changed", _df_action(returns=_DF_I),
     dict(_df_action(returns=_DF_I), name="dft2"),
     "name-changed", "info", ""),
    ("action doc changed", _df_action(returns=_DF_I, doc="One"),
     _df_action(returns=_DF_I, doc="Two"), "doc-changed", "info", ""),
    ("action added", _df_spec(), _df_action(returns=_DF_I),
     "action-added", "compatible", ""),
    ("action removed", _df_action(returns=_DF_I), _df_spec(),
     "action-removed", "breaking", "request"),
    ("accepts added", _df_action(returns=_DF_I),
     _df_action(accepts=_DF_I, returns=_DF_I),
     "accepts-added", "breaking", "request"),
    ("accepts removed", _df_action(accepts=_DF_I, returns=_DF_I),
     _df_action(returns=_DF_I), "accepts-removed", "breaking", "request"),
    ("returns added", _df_action(accepts=_DF_I),
     _df_action(accepts=_DF_I, returns=_DF_I),
     "returns-added", "compatible", ""),
    ("returns removed", _df_action(accepts=_DF_I, returns=_DF_I),
     _df_action(accepts=_DF_I), "returns-removed", "breaking", "response"),
    # models and their methods
    ("model added", _df_spec(), _df_thing(properties=[("a", _DF_I, True)]),
     "model-added", "compatible", ""),
    ("model removed", _df_thing(properties=[("a", _DF_I, True)]),
     _df_spec(), "model-removed", "breaking", "request"),
    ("method enabled",
     _df_thing(properties=[("a", _DF_I, True)], methods=["get_by_id"]),
     _df_thing(properties=[("a", _DF_I, True)],
               methods=["get_by_id", "delete"]),
     "method-enabled", "compatible", ""),
    ("method disabled",
     _df_thing(properties=[("a", _DF_I, True)],
               methods=["get_by_id", "delete"]),
     _df_thing(properties=[("a", _DF_I, True)], methods=["get_by_id"]),
     "method-disabled", "breaking", "request"),
    # properties (in patches and representations)
    ("property added, optional", _df_thing(properties=[("a", _DF_I, True)]),
     _df_thing(properties=[("a", _DF_I, True), ("b", _DF_S, False)]),
     "property-added", "compatible", ""),
    ("property added, required", _df_thing(properties=[("a", _DF_I, True)]),
     _df_thing(properties=[("a", _DF_I, True), ("b", _DF_S, True)]),
     "property-added", "compatible", ""),
    ("property removed, required",
     _df_thing(properties=[("a", _DF_I, True), ("b", _DF_S, True)]),
     _df_thing(properties=[("a", _DF_I, True)]),
     "property-removed-required", "breaking", "request,response"),
    ("property removed, optional",
     _df_thing(properties=[("a", _DF_I, True), ("b", _DF_S, False)]),
     _df_thing(properties=[("a", _DF_I, True)]),
     "property-removed-optional", "breaking", "request"),
    ("property made optional", _df_thing(properties=[("a", _DF_I, True)]),
     _df_thing(properties=[("a", _DF_I, False)]),
     "property-made-optional", "breaking", "response"),
    ("property made required", _df_thing(properties=[("a", _DF_I, False)]),
     _df_thing(properties=[("a", _DF_I, True)]),
     "property-made-required", "compatible", ""),
    ("property type narrowed", _df_thing(properties=[("a", _DF_F, True)]),
     _df_thing(properties=[("a", _DF_I, True)]),
     "type-narrowed", "breaking", "request"),
    ("property type widened", _df_thing(properties=[("a", _DF_I, True)]),
     _df_thing(properties=[("a", _DF_F, True)]),
     "type-widened", "breaking", "response"),
    ("property type widened, read only",
     _df_thing(properties=[("a", _DF_I, True)], methods=["get_by_id"]),
     _df_thing(properties=[("a", _DF_F, True)], methods=["get_by_id"]),
     "type-widened", "breaking", "response"),
    ("property type narrowed, read only",
     _df_thing(properties=[("a", _DF_F, True)], methods=["get_by_id"]),
     _df_thing(properties=[("a", _DF_I, True)], methods=["get_by_id"]),
     "type-narrowed", "compatible", ""),
    # links
    ("link added", _df_thing(properties=[("a", _DF_I, True)]),
     _df_thing(properties=[("a", _DF_I, True)],
               links=[("o", "Other", False)]),
     "link-added", "compatible", ""),
    ("link removed, required",
     _df_thing(links=[("o", "Other", True)]), _df_thing(),
     "link-removed-required", "breaking", "request,response"),
    ("link removed, optional",
     _df_thing(links=[("o", "Other", False)]), _df_thing(),
     "link-removed-optional", "breaking", "request"),
    ("link made optional", _df_thing(links=[("o", "Other", True)]),
     _df_thing(links=[("o", "Other", False)]),
     "link-made-optional", "breaking", "response"),
    ("link made required", _df_thing(links=[("o", "Other", False)]),
     _df_thing(links=[("o", "Other", True)]),
     "link-made-required", "compatible", ""),
    ("link to another model", _df_thing(links=[("o", "Other", True)]),
     _df_thing(links=[("o", "Thing", True)]),
     "link-model-changed", "breaking", "request,response"),
    # query fields
    ("query field added, optional", _df_thing(),
     _df_thing(query_fields=[("q", _DF_I, False)]),
     "query-field-added-optional", "compatible", ""),
    ("query field added, required", _df_thing(),
     _df_thing(query_fields=[("q", _DF_I, True)]),
     "query-field-added-required", "breaking", "request"),
    ("query field removed", _df_thing(query_fields=[("q", _DF_I, False)]),
     _df_thing(),
     "query-field-removed", "breaking", "request"),
    ("query field made required",
     _df_thing(query_fields=[("q", _DF_I, False)]),
     _df_thing(query_fields=[("q", _DF_I, True)]),
     "query-field-made-required", "breaking", "request"),
    ("query field made optional",
     _df_thing(query_fields=[("q", _DF_I, True)]),
     _df_thing(query_fields=[("q", _DF_I, False)]),
     "query-field-made-optional", "compatible", ""),
    ("query field narrowed", _df_thing(query_fields=[("q", _DF_F, False)]),
     _df_thing(query_fields=[("q", _DF_I, False)]),
     "type-narrowed", "breaking", "request"),
    # list metadata
    ("metadata added", _df_thing(list_metadata=[("n", _DF_I, True)]),
     _df_thing(list_metadata=[("n", _DF_I, True), ("m", _DF_S, False)]),
     "metadata-added", "compatible", ""),
    ("metadata removed, required",
     _df_thing(list_metadata=[("n", _DF_I, True), ("m", _DF_S, True)]),
     _df_thing(list_metadata=[("n", _DF_I, True)]),
     "metadata-removed-required", "breaking", "response"),
    ("metadata removed, optional",
     _df_thing(list_metadata=[("n", _DF_I, True), ("m", _DF_S, False)]),
     _df_thing(list_metadata=[("n", _DF_I, True)]),
     "metadata-removed-optional", "compatible", ""),
    ("metadata made optional", _df_thing(list_metadata=[("n", _DF_I, True)]),
     _df_thing(list_metadata=[("n", _DF_I, False)]),
     "metadata-made-optional", "breaking", "response"),
    ("metadata made required",
     _df_thing(list_metadata=[("n", _DF_I, False)]),
     _df_thing(list_metadata=[("n", _DF_I, True)]),
     "metadata-made-required", "compatible", ""),
    ("metadata widened", _df_thing(list_metadata=[("n", _DF_I, True)]),
     _df_thing(list_metadata=[("n", _DF_F, True)]),
     "type-widened", "breaking", "response"),
]


def _df_type_cases():
    """Type changes, each in what clients send (an action's accepts) and
    in what they receive (its returns)."""
    s = _df_struct
    pairs = [
        ("Integer to String", _DF_I, _DF_S, "type-changed", "both"),
        ("Integer to Float", _DF_I, _DF_F, "type-widened", "response"),
        ("Float to Integer", _DF_F, _DF_I, "type-narrowed", "request"),
        ("DateTime to String", {"type": "DateTime"}, _DF_S,
         "type-widened", "response"),
        ("String to DateTime", _DF_S, {"type": "DateTime"},
         "type-narrowed", "request"),
        ("Binary to String", {"type": "Binary"}, _DF_S,
         "type-widened", "response"),
        ("UUID to String", {"type": "UUID"}, _DF_S,
         "type-widened", "response"),
        ("String to UUID", _DF_S, {"type": "UUID"},
         "type-narrowed", "request"),
        ("Integer to JSON", _DF_I, {"type": "JSON"},
         "type-widened", "response"),
        ("JSON to Integer", {"type": "JSON"}, _DF_I,
         "type-narrowed", "request"),
        ("Boolean to Integer", _DF_B, _DF_I, "type-changed", "both"),
        ("Array item widened", _DF_ARRAY_I, {"type": "Array", "param": _DF_F},
         "type-widened", "response"),
        ("Map item narrowed", {"type": "Map", "param": _DF_F},
         {"type": "Map", "param": _DF_I}, "type-narrowed", "request"),
        ("OrderedMap item changed", {"type": "OrderedMap", "param": _DF_I},
         {"type": "OrderedMap", "param": _DF_B}, "type-changed", "both"),
        ("Array to Map", _DF_ARRAY_I, {"type": "Map", "param": _DF_I},
         "type-changed", "both"),
        ("Link to another model",
         {"type": "cosmic.Link", "param": "dft.Other"},
         {"type": "cosmic.Link", "param": "dft.Thing"},
         "model-changed", "both"),
        ("Struct field added, required", s(("a", _DF_I, True)),
         s(("a", _DF_I, True), ("b", _DF_S, True)),
         "field-added-required", "request"),
        ("Struct field added, optional", s(("a", _DF_I, True)),
         s(("a", _DF_I, True), ("b", _DF_S, False)),
         "field-added-optional", ""),
        ("Struct field removed, required",
         s(("a", _DF_I, True), ("b", _DF_S, True)), s(("a", _DF_I, True)),
         "field-removed-required", "both"),
        ("Struct field removed, optional",
         s(("a", _DF_I, True), ("b", _DF_S, False)), s(("a", _DF_I, True)),
         "field-removed-optional", "request"),
        ("Struct field made optional", s(("a", _DF_I, True)),
         s(("a", _DF_I, False)), "field-made-optional", "response"),
        ("Struct field made required", s(("a", _DF_I, False)),
         s(("a", _DF_I, True)), "field-made-required", "request"),
        ("nested Struct field added, required",
         {"type": "Array", "param": s(("a", _DF_I, True))},
         {"type": "Array", "param": s(("a", _DF_I, True),
                                      ("b", _DF_I, True))},
         "field-added-required", "request"),
        ("Struct field narrowed", s(("a", _DF_F, True)),
         s(("a", _DF_I, True)), "type-narrowed", "request"),
    ]
    cases = []
    for label, before, after, kind, breaks in pairs:
        for key, flow in (("accepts", "request"), ("returns", "response")):
            direction = flow if breaks in ("both", flow) else ""
            cases.append(("%s, in %s" % (label, key),
                          _df_action(**{key: before}),
                          _df_action(**{key: after}), kind,
                          "breaking" if direction else "compatible",
                          direction))
    return cases


def _df_constraint_cases():
    """Constraints and enums (spec JSON keys of the schema system)."""
    def with_(schema, **keys):
        return dict(schema, **keys)
    pairs = [
        ("minimum added", _DF_I, with_(_DF_I, minimum=1),
         "constraint-added", "request"),
        ("minimum raised", with_(_DF_I, minimum=0), with_(_DF_I, minimum=1),
         "constraint-tightened", "request"),
        ("minimum lowered", with_(_DF_I, minimum=1), with_(_DF_I, minimum=0),
         "constraint-loosened", "response"),
        ("maximum removed", with_(_DF_I, maximum=1), _DF_I,
         "constraint-removed", "response"),
        ("maximum lowered", with_(_DF_F, maximum=2), with_(_DF_F, maximum=1),
         "constraint-tightened", "request"),
        ("maximum raised", with_(_DF_I, maximum=1), with_(_DF_I, maximum=2),
         "constraint-loosened", "response"),
        ("exclusiveMinimum raised", with_(_DF_F, exclusiveMinimum=0),
         with_(_DF_F, exclusiveMinimum=1), "constraint-tightened",
         "request"),
        ("exclusiveMaximum raised", with_(_DF_I, exclusiveMaximum=1),
         with_(_DF_I, exclusiveMaximum=3), "constraint-loosened",
         "response"),
        ("minLength raised", with_(_DF_S, minLength=0),
         with_(_DF_S, minLength=2), "constraint-tightened", "request"),
        ("maxLength lowered", with_(_DF_S, maxLength=5),
         with_(_DF_S, maxLength=1), "constraint-tightened", "request"),
        ("maxLength raised", with_(_DF_S, maxLength=1),
         with_(_DF_S, maxLength=5), "constraint-loosened", "response"),
        ("minItems added", _DF_ARRAY_I, with_(_DF_ARRAY_I, minItems=1),
         "constraint-added", "request"),
        ("maxItems lowered", with_(_DF_ARRAY_I, maxItems=2),
         with_(_DF_ARRAY_I, maxItems=1), "constraint-tightened", "request"),
        ("pattern added", _DF_S, with_(_DF_S, pattern="^[a-z]+$"),
         "constraint-added", "request"),
        ("pattern removed", with_(_DF_S, pattern="^[a-z]+$"), _DF_S,
         "constraint-removed", "response"),
        ("pattern changed", with_(_DF_S, pattern="^[a-z]*$"),
         with_(_DF_S, pattern="^[A-Z]*$"), "pattern-changed", "both"),
        ("enum added", _DF_S, with_(_DF_S, enum=["a", "b"]),
         "enum-added", "request"),
        ("enum removed", with_(_DF_S, enum=["a", "b"]), _DF_S,
         "enum-removed", "response"),
        ("enum value added", with_(_DF_S, enum=["a"]),
         with_(_DF_S, enum=["a", "b"]), "enum-value-added", "response"),
        ("enum value removed", with_(_DF_I, enum=[1, 2]),
         with_(_DF_I, enum=[1]), "enum-value-removed", "request"),
        ("message changed", with_(_DF_I, minimum=0, message="Too small"),
         with_(_DF_I, minimum=0, message="Must be positive"),
         "message-changed", ""),
    ]
    cases = []
    for label, before, after, kind, breaks in pairs:
        for key, flow in (("accepts", "request"), ("returns", "response")):
            direction = flow if breaks in ("both", flow) else ""
            verdict = "info" if kind == "message-changed" else \
                "breaking" if direction else "compatible"
            cases.append(("%s, in %s" % (label, key),
                          _df_action(**{key: before}),
                          _df_action(**{key: after}), kind, verdict,
                          direction))
    return cases


def _df_create_cases():
    """Fields a create must carry (the model key create_requires)."""
    props = [("a", _DF_I, True), ("b", _DF_S, False)]
    return [
        ("create requires a field", _df_thing(properties=props),
         _df_thing(properties=props, create_requires=["a"]),
         "create-required-added", "breaking", "request"),
        ("create requires another field",
         _df_thing(properties=props, create_requires=["a"]),
         _df_thing(properties=props, create_requires=["a", "b"]),
         "create-required-added", "breaking", "request"),
        ("create requires a field no more",
         _df_thing(properties=props, create_requires=["a", "b"]),
         _df_thing(properties=props, create_requires=["a"]),
         "create-required-removed", "compatible", ""),
    ]


_DF_ALL_CASES = (_DF_CASES + _df_type_cases() + _df_constraint_cases() +
                 _df_create_cases())


def _df_has_constraints():
    """Whether this cosmic's schemas carry constraints (the rules issue)."""
    try:
        Schema.from_json({"type": "Integer", "minimum": 1})
    except ValidationError:
        return False
    return True


def _df_has_create_requires():
    """Whether this cosmic's specs carry create_requires (the rules issue)."""
    try:
        APISpec.from_json(_df_thing(properties=[("a", _DF_I, True)],
                                    create_requires=["a"]))
    except ValidationError:
        return False
    return True


def _df_tolerance_api():
    """NEW: an action and a model whose answers carry more than OLD's."""
    api = API("dftol")
    item = Struct([required("a", Integer), optional("b", String)])

    @api.action(accepts=item, returns=Array(item))
    def echo(x):
        return [{"a": x["a"], "b": "extra"}]

    @api.model
    class Other(BaseModel):
        methods = ["get_by_id"]
        properties = [required("a", Integer)]

    @api.model
    class Thing(BaseModel):
        methods = ["get_by_id", "get_list"]
        properties = [required("a", Integer), optional("b", String)]
        links = [optional_link("o", Model("dftol.Other"))]
        list_metadata = [required("n", Integer), optional("m", Integer)]

        @classmethod
        def get_by_id(cls, id):
            return {"a": 1, "b": "extra", "o": "7"}

        @classmethod
        def get_list(cls):
            return [("1", cls.get_by_id("1"))], {"n": 1, "m": 2}

    return api


def _df_old_spec(api):
    """The spec of _df_tolerance_api before b, o and m were added."""
    old = APISpec.to_json(api.spec)
    for fields in (
            old["actions"]["map"]["echo"]["accepts"]["param"],
            old["actions"]["map"]["echo"]["returns"]["param"]["param"],
            old["models"]["map"]["Thing"]["properties"],
            old["models"]["map"]["Thing"]["links"],
            old["models"]["map"]["Thing"]["list_metadata"]):
        for name in ("b", "o", "m"):
            if name in fields["map"]:
                del fields["map"][name]
                fields["order"].remove(name)
    return old


def _df_cli(*args, cwd=_ROOT):
    """``python -m cosmic diff ARGS``: (exit code, stdout, stderr)."""
    proc = _python(["-m", "cosmic", "diff"] + list(args), cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def _df_places_v2(folder):
    """A second version of examples/places.py in ``folder``: a create of a
    City requires its country, City's query drops country, City gains an
    optional area."""
    with open(os.path.join(_ROOT, "examples", "places.py"),
              encoding="utf-8") as f:
        text = f.read()
    edits = [
        ('    create_requires = ["name"]\n',
         '    create_requires = ["name", "country"]\n'),
        ('        optional("country", String, "Only cities in this '
         'country"),\n', ''),
        ('        optional("country", String),\n',
         '        optional("country", String),\n'
         '        optional("area", Integer),\n'),
    ]
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = os.path.join(folder, "places.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _df_places_api():
    """examples/places.py's API, imported under a private name."""
    name = "_df_places_example"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(_ROOT, "examples", "places.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return module.places


# -- Fixtures: authentication -------------------------------------------------
# authentication: schemes, requirements, OpenAPI security, the Authorize box

_AU_TOKEN = "tok-alice-5f1c2e9a"
_AU_USERS = {
    _AU_TOKEN: {"name": "alice", "scopes": ["admin"]},
    "tok-bob-77aa01d3": {"name": "bob"},
}


def _au_api(schemes=None, requires=True, protect_spec=False):
    """An API with bearer, API-key and Basic schemes over one user table;
    actions and a model with open reads and protected writes."""
    if schemes is None:
        schemes = [
            cosmic.BearerAuth(_AU_USERS.get),
            cosmic.APIKeyAuth(_AU_USERS.get, header="X-Key"),
            cosmic.BasicAuth(lambda user, password: _AU_USERS.get(password)
                             if user == "alice" else None),
        ]
    notes = {}
    with cosmos.swap({}):
        api = API("au_zoo", auth=schemes, requires=requires,
                  protect_spec=protect_spec)

        @api.action(returns=String, requires=False)
        def hello():
            identity = cosmic.current_identity()
            return "hi " + (identity["name"] if identity else "anonymous")

        @api.action(returns=String)
        def whoami():
            return cosmic.current_identity()["name"]

        @api.action(returns=String, requires="admin")
        def admin():
            return "ok"

        @api.action(accepts=String, returns=String, requires=False)
        def crash(text):
            raise ValueError("failed for %s" % text)

        @api.model
        class Note(BaseModel):
            methods = ["get_by_id", "get_list", "create", "delete"]
            properties = [required("text", String)]
            requires = {"get_by_id": False, "get_list": False}

            @classmethod
            def get_by_id(cls, id):
                if id not in notes:
                    raise NotFound
                return notes[id]

            @classmethod
            def get_list(cls):
                return sorted(notes.items())

            @classmethod
            def create(cls, patch):
                ident = str(len(notes) + 1)
                notes[ident] = dict(patch)
                return ident, notes[ident]

            @classmethod
            def delete(cls, id):
                notes.pop(id)

    return api


def _au_basic(user, password):
    return "Basic " + base64.b64encode(
        ("%s:%s" % (user, password)).encode("utf-8")).decode("ascii")


class _au_Recorder:
    """A WSGI app that records each request's headers, and redirects."""

    def __init__(self, location=None):
        self.location = location
        self.seen = []

    def __call__(self, environ, start_response):
        self.seen.append((environ["PATH_INFO"], {
            key: value for key, value in environ.items()
            if key.startswith("HTTP_") and key != "HTTP_HOST"}))
        if self.location is not None and \
                environ["PATH_INFO"].startswith("/actions/"):
            start_response("307 Temporary Redirect", [
                ("Location", self.location + environ["PATH_INFO"]),
                ("Content-Length", "0")])
            return [b""]
        body = json.dumps({"error": "gone"}).encode()
        start_response("410 Gone", [("Content-Type", "application/json"),
                                    ("Content-Length", str(len(body)))])
        return [body]


# -- Fixtures: the examples at scale ------------------------------------------
# scale-out: PostgreSQL, gunicorn and nginx

# The places example on both back ends (one test body), and the deployment
# users are told to run: two gunicorn instances of places on a real
# PostgreSQL behind nginx, driven, broken and restarted. The tools are
# Debian packages (postgresql, nginx) and test extras (psycopg, gunicorn);
# without them these tests skip, and fail with COSMIC_REQUIRE_EXTRAS=1.

_SC_PG_BINS = sorted(
    (os.path.dirname(path) for path in glob.glob(
        "/usr/lib/postgresql/*/bin/initdb")),
    key=lambda path: int(path.split("/")[-2]) if
    path.split("/")[-2].isdigit() else 0)
_SC_NGINX = shutil.which("nginx") or (
    "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def _sc_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _sc_Postgres:
    """A PostgreSQL server in a temporary directory, on a free port of
    127.0.0.1, with a role and database ``places`` for the app.

    initdb refuses to run as root: then the directory is given to the
    ``postgres`` user and the server's programs run through runuser.
    ``stop()`` stops the server by the pid in its postmaster.pid.
    """

    PASSWORD = "places-secret"

    def __init__(self):
        _need("psycopg", _psycopg)
        bin_dir = _need("PostgreSQL (initdb)", _SC_PG_BINS and _SC_PG_BINS[-1])
        self.dir = tempfile.mkdtemp(prefix="cosmic-sc-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = _hd_free_port()
        self.pid = None
        prefix = []
        if os.geteuid() == 0:
            runuser = _need("runuser", shutil.which("runuser"))
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            prefix = [runuser, "-u", "postgres", "--"]
        try:
            self._run(prefix + [
                os.path.join(bin_dir, "initdb"), "-D", self.data,
                "-U", "postgres", "--auth-local=trust",
                "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8",
                "--locale=C"])
            # fsync off: a test cluster need not survive a power cut.
            options = ("-p %d -k %s -c listen_addresses=127.0.0.1 "
                       "-c fsync=off -c full_page_writes=off "
                       "-c max_connections=200" % (self.port, self.dir))
            self._run(prefix + [
                os.path.join(bin_dir, "pg_ctl"), "-D", self.data, "-l",
                os.path.join(self.dir, "server.log"), "-w", "-t", "60",
                "-o", options, "start"])
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                self.pid = int(f.readline())
            with self.admin() as conn:
                conn.execute("CREATE ROLE places LOGIN PASSWORD '%s'"
                             % self.PASSWORD)
                conn.execute("CREATE DATABASE places OWNER places")
        except BaseException:
            self.stop()
            raise
        self.url = "postgresql://places:%s@127.0.0.1:%d/places" % (
            self.PASSWORD, self.port)

    def _run(self, args):
        done = subprocess.run(args, cwd=self.dir, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            name = [os.path.basename(arg) for arg in args
                    if os.path.basename(arg) in ("initdb", "pg_ctl")]
            raise AssertionError("%s failed (%d): %s%s" % (
                name[0], done.returncode, done.stdout[-1500:],
                done.stderr[-1500:]))

    def admin(self, dbname="postgres"):
        """A superuser connection over the Unix socket (autocommit)."""
        return _psycopg.connect(host=self.dir, port=self.port,
                                   user="postgres", dbname=dbname,
                                   autocommit=True)

    def query(self, sql, params=()):
        """Rows of one query in the app's database, as the superuser."""
        with self.admin("places") as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def stop(self):
        """Fast shutdown (SIGINT to the postmaster), SIGKILL if it hangs."""
        if self.pid is not None and _sc_alive(self.pid):
            os.kill(self.pid, signal.SIGINT)
            try:
                _wait(lambda: not _sc_alive(self.pid), 30, "postgres")
            except AssertionError:
                os.kill(self.pid, signal.SIGKILL)
        self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)


_SC_COUNTER = itertools.count()


@contextlib.contextmanager
def _sc_if_match(tag):
    """Run model code as if the request carried ``If-Match: "tag"``."""
    with mock.patch.object(cosmic, "if_match", lambda: tag):
        yield


class _sc_PlacesBody:
    """One test body for places, run on each back end.

    Subclasses set ``env`` in setUpClass (and ``pg`` for PostgreSQL);
    ``rows(sql)`` reads the database behind the app's back.
    """

    @classmethod
    def load(cls, env):
        cls.places = _load_places(env)
        cls.client = WsgiAPIClient(cls.places.wsgi_app)
        cls.client.actions.stats()  # the tables exist from here on
        _close_places(cls.places)

    def setUp(self):
        self.reset()
        self.addCleanup(_close_places, self.places)

    def run_threads(self, count, work):
        """Run work(n) in ``count`` threads at once; the exceptions."""
        errors = []
        barrier = threading.Barrier(count, timeout=30)

        def run(n):
            try:
                barrier.wait()
                work(n)
            except BaseException as exc:  # reported by the caller
                errors.append(exc)
            finally:
                _close_places(self.places)

        threads = [threading.Thread(target=run, args=(n,))
                   for n in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        return errors

    def test_crud_filters_and_paging(self):
        City = self.client.models.City
        ids = [City.create(name="C%02d" % n, country="AB"[n % 2],
                           population=n)[0] for n in range(25)]
        self.assertEqual(ids, [str(n) for n in range(1, 26)])
        self.assertEqual(City.get_by_id("3"),
                         {"name": "C02", "country": "A", "population": 2})
        items, meta = City.get_list(country="B", limit=5, offset=10)
        self.assertEqual(meta, {"total_count": 12})
        self.assertEqual([ident for ident, _ in items], ["22", "24"])
        items, meta = City.get_list()
        self.assertEqual((len(items), meta), (20, {"total_count": 25}))
        self.assertEqual(City.get_list(name="C07", country="B"),
                         ([("8", {"name": "C07", "country": "B",
                                  "population": 7})], {"total_count": 1}))
        self.assertEqual(City.get_list(offset=2 ** 62), ([],
                                                         {"total_count": 25}))
        self.assertEqual(City.get_list(name="No\x00where"),
                         ([], {"total_count": 0}))
        self.assertEqual(City.update("3", population=2 ** 53 - 1),
                         {"name": "C02", "country": "A",
                          "population": 2 ** 53 - 1})
        with self.assertRaises(RemoteHTTPError) as caught:
            City.update("3", name="Nul\x00")
        self.assertEqual((caught.exception.code, caught.exception.message),
                         (400, "Name must not contain NUL characters"))
        City.delete("25")
        self.assertEqual(City.create(name="Next")[0], "26")  # never reused
        with self.assertRaises(NotFound):
            City.get_by_id("25")
        with self.assertRaises(NotFound):
            City.delete("25")
        self.assertEqual(self.client.actions.rename_city(id="1", name="D"),
                         "C00")
        self.assertEqual(self.client.actions.stats(),
                         {"cities": 25, "addresses": 0})

    def test_addresses_link_to_existing_cities(self):
        City, Address = self.client.models.City, self.client.models.Address
        city, _ = City.create(name="Lyon")
        other, _ = City.create(name="Nice")
        ident, rep = Address.create(number=3, street="Rue", city=city)
        self.assertEqual(rep, {"number": 3, "street": "Rue", "city": city})
        for bad in ("99", "0"):
            with self.subTest(city=bad):
                with self.assertRaises(RemoteHTTPError) as caught:
                    Address.create(number=1, street="X", city=bad)
                self.assertEqual((caught.exception.code,
                                  caught.exception.message),
                                 (400, "No City with id %r" % bad))
                with self.assertRaises(RemoteHTTPError) as caught:
                    Address.update(ident, city=bad)
                self.assertEqual(caught.exception.code, 400)
        self.assertEqual(Address.update(ident, city=other)["city"], other)
        self.assertEqual(Address.get_list(city=other),
                         ([(ident, {"number": 3, "street": "Rue",
                                    "city": other})], {"total_count": 1}))
        with self.assertRaises(RemoteHTTPError) as caught:
            City.delete(other)
        self.assertEqual((caught.exception.code, caught.exception.message),
                         (409, "City has addresses"))
        City.delete(city)
        Address.delete(ident)
        City.delete(other)
        self.assertEqual(self.client.actions.stats(),
                         {"cities": 0, "addresses": 0})

    def test_concurrent_creates_get_distinct_ids(self):
        created = []

        def work(n):
            client = WsgiAPIClient(self.places.wsgi_app)
            for i in range(20):
                created.append(client.models.City.create(
                    name="T%d_%d" % (n, i))[0])

        self.assertEqual(self.run_threads(8, work), [])
        self.assertEqual(len(set(created)), 160)
        self.assertEqual(self.rows("SELECT COUNT(*) FROM city"), [(160,)])

    def test_delete_city_races_address_creates(self):
        # Each round: one thread deletes a city while three add addresses
        # to it. Whatever the order, no address may outlive its city, and
        # each answer must agree with what the database holds.
        City = self.client.models.City
        outcomes = []
        for round_ in range(6):
            city, _ = City.create(name="R%d" % round_)

            def work(n, city=city):
                client = WsgiAPIClient(self.places.wsgi_app)
                try:
                    if n == 0:
                        client.models.City.delete(city)
                        outcomes.append(("deleted", city))
                    else:
                        ident, _ = client.models.Address.create(
                            number=n, street="S", city=city)
                        outcomes.append(("address", ident))
                except RemoteHTTPError as err:
                    outcomes.append((err.code, city))

            self.assertEqual(self.run_threads(4, work), [])
        orphans = self.rows("SELECT COUNT(*) FROM address WHERE city_id NOT "
                            "IN (SELECT id FROM city)")
        self.assertEqual(orphans, [(0,)])
        deleted = {c for kind, c in outcomes if kind == "deleted"}
        refused = {c for kind, c in outcomes if kind == 409}
        self.assertEqual(len(deleted) + len(refused), 6)
        for kind, value in outcomes:
            if kind == "address":
                self.assertEqual(len(self.rows(
                    "SELECT id FROM address WHERE id = %d" % int(value))), 1)
            if kind == 400:  # the city was gone first
                self.assertIn(value, deleted)

    @unittest.skipUnless(hasattr(os, "fork"), "needs fork()")
    def test_a_forked_process_opens_its_own_connection(self):
        # What a server that forks its workers after the import does: the
        # child must not use (or close) the parent's connection.
        self.client.actions.stats()
        parent = self.places._local.conn
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self.places.City.create({"name": "Forked"})
                code = 0 if self.places._local.conn is not parent else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertIs(self.places._local.conn, parent)
        self.assertEqual(self.client.actions.stats(),  # still works
                         {"cities": 1, "addresses": 0})

    def test_client_conditional_requests(self):
        City, actions = self.client.models.City, self.client.actions
        ident, _ = City.create(name="Faro")
        rep, tag = City.get_by_id(ident, _with_etag=True)
        self.assertEqual((rep, tag), ({"name": "Faro"}, "1"))
        City.update(ident, {"population": 1}, _if_match=tag)
        with self.assertRaises(cosmic.PreconditionFailed) as caught:
            City.update(ident, {"population": 2}, _if_match=tag)
        self.assertEqual(caught.exception.code, 412)
        with self.assertRaises(cosmic.PreconditionFailed):
            City.delete(ident, _if_match=tag)
        rep, tag = City.get_by_id(ident, _with_etag=True)
        self.assertEqual((rep, tag), ({"name": "Faro", "population": 1},
                                      "2"))
        actions.rename_city(id=ident, name="Lagos")  # a write: new version
        with self.assertRaises(cosmic.PreconditionFailed):
            City.update(ident, {"population": 3}, _if_match=tag)
        rep, tag = City.get_by_id(ident, _with_etag=True)
        self.assertEqual((rep["name"], tag), ("Lagos", "3"))
        City.delete(ident, _if_match=tag)
        with self.assertRaises(NotFound):
            City.delete(ident, _if_match=tag)
        self.assertEqual(self.rows("SELECT COUNT(*) FROM city"), [(0,)])

    def test_if_match_is_checked_in_the_write(self):
        City = self.places.City
        ident, _ = City.create({"name": "Vigo"})
        City.get_by_id(ident)
        tag = City.etag(ident, {"name": "Vigo", "country": None,
                                "population": None})
        self.assertEqual(tag, "1")
        with _sc_if_match("1"):
            rep = City.update(ident, {"population": 1})
        self.assertEqual(City.etag(ident, rep), "2")
        for stale in ("1", "x", "99"):
            with self.subTest(tag=stale), _sc_if_match(stale):
                with self.assertRaises(cosmic.PreconditionFailed) as caught:
                    City.update(ident, {"population": 5})
                self.assertEqual(caught.exception.code, 412)
                with self.assertRaises(cosmic.PreconditionFailed):
                    City.delete(ident)
        with _sc_if_match("*"):
            City.update(ident, {})
        with _sc_if_match("2"), self.assertRaises(NotFound):
            City.update("999", {"population": 5})
        self.assertEqual(City.get_by_id(ident)["population"], 1)
        # A representation that is no longer current never gets the
        # current version as its tag.
        self.assertEqual(City.etag(ident, {"name": "Old", "country": None,
                                           "population": None}), "0")
        with _sc_if_match("2"):
            City.delete(ident)
        self.assertEqual(self.rows("SELECT COUNT(*) FROM city"), [(0,)])

    def test_if_match_contest_has_one_winner_per_version(self):
        City = self.places.City
        ident, _ = City.create({"name": "Gijon", "population": 0})
        wins, refusals = [], []
        for version in (1, 2, 3):

            def work(n, version=version):
                try:
                    City.update(ident, {"population": n})
                    wins.append((version, n))
                except cosmic.PreconditionFailed:
                    refusals.append(version)

            with _sc_if_match(str(version)):  # every thread sends this tag
                self.assertEqual(self.run_threads(6, work), [])
        self.assertEqual([v for v, _ in wins], [1, 2, 3])
        self.assertEqual(len(refusals), 15)
        row = self.rows("SELECT version, population FROM city")
        self.assertEqual(row, [(4, wins[-1][1])])


# nginx on one port balancing two gunicorn instances of places (gthread, two
# workers each) that share one PostgreSQL. The nginx configuration is the
# README's, with paths and ports filled in.

_SC_NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # Keep the client's request id, or make one: the app logs it, and the
    # client and nginx's access log show it, whichever instance answered.
    map $http_x_request_id $places_request_id {{
        "" $request_id;
        default $http_x_request_id;
    }}
    log_format places '$places_request_id $status "$upstream_addr" '
                      '"$upstream_status" $request_method $request_time';
    access_log {dir}/access.log places;
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
            proxy_set_header X-Request-ID $places_request_id;
            # Try the other instance when one cannot be reached or fails
            # before answering; never resend a POST that reached one
            # (no non_idempotent): a create is not repeated.
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 2;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
            client_max_body_size 1m;
        }}
    }}
}}
"""


def _sc_listening(port):
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except OSError:
        return False
    return True


class _sc_Gunicorn:
    """`python -m gunicorn` serving places on a port, in its own session
    (so os.killpg reaches the master and its workers)."""

    def __init__(self, port, url, log_path):
        self.port = port
        self.log = open(log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "2",
             "--threads", "4", "--keep-alive", "10", "--graceful-timeout",
             "5", "-b", "127.0.0.1:%d" % port, "places:wsgi_app"],
            cwd=os.path.join(_ROOT, "examples"),
            env=_hd_child_env(PLACES_DATABASE_URL=url),
            stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            _wait(lambda: self.proc.poll() is not None or
                     _hd_answers(port), 60, "gunicorn on %d" % port)
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            self.stop()
            with open(log_path) as f:
                raise AssertionError("gunicorn did not start: %s"
                                     % f.read()[-3000:])

    def kill(self):
        """SIGKILL to the whole process group: master and workers."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        try:  # workers left behind by a killed master
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


class _sc_Nginx:
    """nginx in the foreground with the configuration above."""

    def __init__(self, folder, port, port_a, port_b):
        self.dir = os.path.join(folder, "nginx")
        os.mkdir(self.dir)
        os.chmod(folder, 0o755)  # nginx's workers may run as nobody
        os.chmod(self.dir, 0o755)
        self.port = port
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_SC_NGINX_CONF.format(dir=self.dir, port=port,
                                          port_a=port_a, port_b=port_b))
        self.log = open(os.path.join(self.dir, "stderr.log"), "w")
        self.proc = subprocess.Popen(
            [_SC_NGINX, "-c", conf, "-p", self.dir, "-e",
             os.path.join(self.dir, "nginx-error.log")],
            stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            _wait(lambda: self.proc.poll() is not None or
                     _hd_answers(port), 30, "nginx")
            if self.proc.poll() is not None:
                raise AssertionError("nginx did not start: %s"
                                     % self.errors())
        except BaseException:
            self.stop()
            raise

    def errors(self):
        with open(os.path.join(self.dir, "nginx-error.log")) as f:
            return f.read()[-3000:]

    def access(self):
        """The access log: request id -> (status, upstreams, their
        statuses, method)."""
        lines = {}
        with open(os.path.join(self.dir, "access.log")) as f:
            for line in f:
                rid, status, rest = line.split(" ", 2)
                _, upstreams, _, statuses, rest = rest.split('"')
                lines[rid] = (int(status), upstreams, statuses,
                              rest.split()[0])
        return lines

    def line(self, rid):
        """The access log line of one request (nginx writes it just after
        the answer)."""
        found = {}
        _wait(lambda: found.update(self.access()) or rid in found, 10,
                 "nginx's log line for %s" % rid)
        return found[rid]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def _sc_tag(res):
    """The opaque tag in an ETag header (strong, quoted)."""
    value = res.getheader("ETag")
    if value is None or not (value.startswith('"') and value.endswith('"')):
        raise AssertionError("no strong ETag: %r" % value)
    return value[1:-1]


def _sc_percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(fraction * len(values)))]


class _sc_Client:
    """One load client: a keep-alive connection to nginx, its own cities
    (so that every answer can be predicted), and a record of each call."""

    def __init__(self, load, n):
        self.load, self.n = load, n
        self.rng = random.Random(n)
        self.conn = None
        self.seq = 0
        self.cities = {}  # id -> {"tag", "population", "pinned"}
        self.doubtful = False  # a write of unknown outcome happened
        self.explained = []
        self.failed = []

    def call(self, op, method, path, body=None, tag=None):
        self.seq += 1
        rid = "%s-%d-%d" % (self.load.prefix, self.n, self.seq)
        headers = {"X-Request-ID": rid}
        if body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body)
        if tag is not None:
            headers["If-Match"] = '"%s"' % tag
        start = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1",
                                                       self.load.port, 30)
            self.conn.request(method, path, body, headers)
            res = self.conn.getresponse()
            data = res.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = None
            res, data = None, repr(exc).encode()
        end = time.perf_counter()
        self.load.record(op, res and res.status, end - start)
        return rid, start, res, data

    def expect(self, answer, status, op):
        rid, start, res, data = answer
        if res is not None and res.status == status:
            return json.loads(data) if data else None
        if res is None or res.status in (502, 504):
            # 502: nginx could not get an answer and did not resend the
            # request; None: the instance died while nginx was relaying
            # its answer, so nginx cut the connection.
            self.failed.append((op, rid, start, res and res.status))
            return False
        raise AssertionError("%s: %s %r" % (op, res and res.status,
                                            data[:300]))

    def refresh(self, ident):
        """Read a city again (after a write of unknown outcome); None when
        it is gone. A read cut short is read again."""
        for _ in range(3):
            answer = self.call("get", "GET", "/City/%s" % ident)
            if answer[2] is not None and answer[2].status == 404:
                return None
            rep = self.expect(answer, 200, "get")
            if rep is not False:
                self.cities[ident]["tag"] = _sc_tag(answer[2])
                return rep
        raise AssertionError("City/%s cannot be read" % ident)

    def step(self, i):
        ops = ["create"] * 5 + ["get"] * 4 + ["list"] * 3 + \
            ["update"] * 4 + ["delete", "address", "address", "stats",
                              "rename"]
        op = self.rng.choice(ops) if self.cities else "create"
        ident = self.rng.choice(sorted(self.cities)) if self.cities else None
        city = self.cities.get(ident)
        if op == "create":
            name = "L%s_%d_%d" % (self.load.prefix, self.n, i)
            answer = self.call(op, "POST", "/City", {
                "name": name, "country": "K%s%d" % (self.load.prefix,
                                                    self.n),
                "population": 0})
            rep = self.expect(answer, 201, op)
            if rep is False:
                self.load.unknown_creates.append(name)
                self.doubtful = True
                return
            new = rep["_links"]["self"]["href"].rsplit("/", 1)[1]
            self.load.created.append((new, name))
            self.cities[new] = {"tag": None, "population": 0,
                                "pinned": False}
        elif op == "get":
            rep = self.refresh(ident)
            if rep is not None and rep["population"] != city["population"] \
                    and not self.doubtful:
                raise AssertionError("lost update on City/%s" % ident)
        elif op == "list":
            answer = self.call(op, "GET", "/City?country=K%s%d&limit=5" % (
                self.load.prefix, self.n))
            rep = self.expect(answer, 200, op)
            if rep and not self.doubtful:
                assert rep["total_count"] == len(self.cities), rep
        elif op == "update":
            if city["tag"] is None and self.refresh(ident) is None:
                raise AssertionError("City/%s vanished" % ident)
            value = self.n * 100000 + i
            answer = self.call(op, "PUT", "/City/%s" % ident,
                               {"population": value}, tag=city["tag"])
            res = answer[2]
            if res is not None and res.status == 412:
                # nginx resent the PUT after the first attempt changed
                # the city: the write must be there.
                rep = self.refresh(ident)
                assert rep["population"] == value, (rep, value)
                self.explained.append(("update", answer[0], 412))
                city["population"] = value
                return
            rep = self.expect(answer, 200, op)
            if rep is False:
                self.doubtful = True
                city["tag"] = None
                city["population"] = self.refresh(ident)["population"]
                return
            city["population"] = value
            # The answer's tag, when it carries one; else read it next time.
            city["tag"] = res.getheader("ETag") and _sc_tag(res)
        elif op == "delete":
            if city["pinned"]:
                return
            if city["tag"] is None and self.refresh(ident) is None:
                raise AssertionError("City/%s vanished" % ident)
            answer = self.call(op, "DELETE", "/City/%s" % ident,
                               tag=city["tag"])
            res = answer[2]
            if res is not None and res.status == 404:
                assert self.refresh(ident) is None  # resent: it is gone
                self.explained.append(("delete", answer[0], 404))
            elif self.expect(answer, 204, op) is False:
                self.doubtful = True
                if self.refresh(ident) is not None:
                    return
            self.load.deleted.append(ident)
            del self.cities[ident]
        elif op == "address":
            street = "S%s_%d_%d" % (self.load.prefix, self.n, i)
            answer = self.call(op, "POST", "/Address", {
                "number": i + 1, "street": street,
                "_links": {"city": {"href": "/City/%s" % ident}}})
            city["pinned"] = True  # never deleted: it has addresses
            if self.expect(answer, 201, op) is False:
                self.load.unknown_addresses.append(street)
            else:
                self.load.addresses.append(street)
        elif op == "stats":
            self.expect(self.call(op, "POST", "/actions/stats"), 200, op)
        else:
            name = "R%s_%d_%d" % (self.load.prefix, self.n, i)
            answer = self.call(op, "POST", "/actions/rename_city", {
                "id": ident, "name": name})
            city["tag"] = None  # the version moved on
            if self.expect(answer, 200, op) is False:
                self.load.unknown_renames.append(name)


class _sc_Load:
    """``threads`` clients x ``calls`` mixed calls through nginx."""

    def __init__(self, port, prefix, threads=16, calls=100):
        self.port, self.prefix = port, prefix
        self.lock = threading.Lock()
        self.latencies = collections.defaultdict(list)
        self.statuses = collections.Counter()
        self.created, self.deleted, self.addresses = [], [], []
        self.unknown_creates, self.unknown_addresses = [], []
        self.unknown_renames = []
        self.done = 0
        self.progress = threading.Condition(self.lock)
        self.clients = [_sc_Client(self, n) for n in range(threads)]
        self.calls = calls

    def record(self, op, status, elapsed):
        with self.lock:
            self.latencies[op].append(elapsed)
            self.statuses[status] += 1
            self.done += 1
            self.progress.notify_all()

    def wait_for(self, count, timeout=120):
        with self.lock:
            if not self.progress.wait_for(lambda: self.done >= count,
                                          timeout):
                raise AssertionError("the load stalled at %d" % self.done)

    def run(self):
        errors = []

        def work(client):
            try:
                for i in range(self.calls):
                    client.step(i)
            except BaseException as exc:
                errors.append("client %d: %r" % (client.n, exc))
            finally:
                if client.conn is not None:
                    client.conn.close()

        threads = [threading.Thread(target=work, args=(client,))
                   for client in self.clients]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        self.elapsed = time.perf_counter() - start
        return errors

    def failed(self):
        return [f for client in self.clients for f in client.failed]

    def explained(self):
        return [e for client in self.clients for e in client.explained]

    def summary(self):
        every = [v for values in self.latencies.values() for v in values]
        return ("%d requests in %.1f s (%.0f req/s), statuses %s, p50 %.1f "
                "ms, p99 %.1f ms" % (
                    len(every), self.elapsed, len(every) / self.elapsed,
                    dict(sorted(self.statuses.items(), key=str)),
                    _sc_percentile(every, 0.50) * 1000,
                    _sc_percentile(every, 0.99) * 1000))


# -- Fixtures: the repository's structure -------------------------------------
# the protocol document: references from code, tests and README resolve

_ST_REF = re.compile(r"docs/protocol\.md#([A-Za-z0-9_-]+)")


def _st_read(name):
    with open(os.path.join(_ROOT, name), encoding="utf-8") as f:
        return f.read()


def _st_anchors(markdown):
    """The anchors GitHub gives the headings of a Markdown text."""
    anchors, counts, fenced = set(), {}, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"#{1,6} +(.*?) *#* *$", line)
        if fenced or match is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower())
        slug = slug.replace(" ", "-")
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        anchors.add(slug if n == 0 else "%s-%d" % (slug, n))
    return anchors


def _st_library():
    """The library API of docs/protocol.md#spec-example, with handlers."""
    lib = API("library", homepage="https://library.example.org")

    @lib.model
    class Author(BaseModel):
        methods = ["get_by_id"]
        properties = [required("name", String)]

    @lib.model
    class Book(BaseModel):
        methods = ["get_by_id", "get_list", "create"]
        properties = [required("title", String),
                      optional("year", Integer, "Year of first print"),
                      optional("rating", Float)]
        links = [required_link("author", Model("library.Author"))]
        query_fields = [optional("author", String),
                        optional("min_rating", Float)]
        list_metadata = [required("total", Integer)]

        @classmethod
        def get_by_id(cls, id):
            return {"title": "Emma", "year": 1815, "rating": 4.5,
                    "author": "2"}

        @classmethod
        def get_list(cls, **query):
            return [("7", cls.get_by_id("7"))], {"total": 1}

        @classmethod
        def create(cls, patch):
            return "8", patch

    @lib.action(accepts=Struct([required("book_id", String),
                                optional("days", Integer)]),
                returns=DateTime)
    def lend(book_id, days=14):
        """When the book is due back."""
        return datetime.datetime(2026, 12, 19, 10)

    @lib.action()
    def ping():
        pass

    return lib

# -- A raw client that reads like a file ------------------------------------
# _Raw with ``read``/``readline`` on a ``file`` attribute, for tests that read
# an answer piece by piece.

def _hs_read_response(raw, head_only=False):
    return raw.response(head_only)


class _hs_Raw(_Raw):
    """_Raw with the ``file`` the old helper had (``read``, ``readline``)."""

    @property
    def file(self):
        return self

    def _more(self):
        self.sock.settimeout(self.timeout)
        data = self.sock.recv(65536)
        self.buf += data
        return data

    def read(self, size=-1):
        """``size`` bytes (fewer at EOF); all until EOF without it."""
        while (size is None or size < 0 or len(self.buf) < size) and \
                self._more():
            pass
        if size is None or size < 0:
            size = len(self.buf)
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def readline(self):
        while b"\n" not in self.buf and self._more():
            pass
        line, sep, self.buf = self.buf.partition(b"\n")
        return line + sep


# -- Exceptions ---------------------------------------------------------------
# ValidationError and the other exceptions.


class TestValidationError(unittest.TestCase):
    def test_message_table(self):
        struct = Struct([required("a", Integer), optional("b", Integer)])
        for datum, schema, message in [
                (1, String, "Invalid String: 1"),
                ([1, 2, True], Array(Integer),
                 "Item at [2] Invalid Integer: True"),
                ({"b": "x", "a": 1}, struct,
                 "Item at ['b'] Invalid Integer: 'x'"),
                ({"a": 1, "b": None}, struct,
                 "Item at ['b'] Invalid Integer: None"),
                ({"b": 2}, struct, "Missing fields: ['a']"),
                ({"a": 1, "c": 2}, struct, "Unexpected fields: ['c']"),
                ([{"foo": True, "bar": False}],
                 Array(Struct([required("foo", Boolean),
                               optional("bar", Integer)])),
                 "Item at [0]['bar'] Invalid Integer: False"),
                ({"map": {"foo": [1, 2.1]}, "order": ["foo"]},
                 OrderedMap(Array(Integer)),
                 "Item at ['map']['foo'][1] Invalid Integer: 2.1"),
                (True, Schema, "Invalid Schema: True")]:
            with self.subTest(message=message):
                self.assertEqual(_ty_message(schema.from_json, datum), message)

    def test_patch_row(self):
        with cosmos.swap({}):
            api = API("t")

            @api.model
            class Thing(BaseModel):
                properties = [optional("name", String)]
                links = [optional_link("parent", Model("t.Thing"))]

            patch = Patch(Model("t.Thing"))
            self.assertEqual(
                _ty_message(patch.from_json,
                            {"_links": {"parent": {"href": "/Other/7"}}}),
                "Item at ['_links']['parent']['href'] Invalid url for Thing "
                "link: /Other/7")
            self.assertEqual(
                patch.from_json({"_links": {"parent": {"href": "/Thing/7"}}}),
                (None, {"parent": "7"}))

    def test_str_parts(self):
        self.assertEqual(str(ValidationError("Missing fields")),
                         "Missing fields")
        self.assertEqual(str(ValidationError("Invalid String", 1)),
                         "Invalid String: 1")
        self.assertEqual(str(ValidationError("Invalid Integer", None)),
                         "Invalid Integer: None")
        err = ValidationError("Invalid Integer", "x")
        err.stack.extend(["b", 0])
        self.assertEqual(str(err), "Item at [0]['b'] Invalid Integer: 'x'")

    def test_attributes(self):
        schema = Array(Struct([required("foo", Boolean),
                               optional("bar", Integer)]))
        err = _ty_error(schema.from_json, [{"foo": True, "bar": False}])
        self.assertEqual(err.message, "Invalid Integer")
        self.assertIs(err.obj, False)
        self.assertEqual(err.stack, ["bar", 0])
        self.assertEqual(err.path, [0, "bar"])
        self.assertEqual(err.args[0], "Invalid Integer")

    def test_repr_is_capped(self):
        self.assertEqual(str(ValidationError("Invalid String", "x" * 10000)),
                         "Invalid String: '" + "x" * 199 + "...")
        self.assertEqual(_ty_message(String.from_json, [1] * 10000),
                         "Invalid String: " + repr([1] * 10000)[:200] + "...")
        key = "k" * 1000
        self.assertEqual(_ty_message(Map(Integer).from_json, {key: "x"}),
                         "Item at [" + repr(key)[:200] + "...] Invalid "
                         "Integer: 'x'")

    def test_pickles(self):
        for err in [ValidationError("Missing fields"),
                    ValidationError("Invalid String", 1),
                    UnknownTypeValidationError("Unknown type", "string"),
                    _ty_error(Integer.from_json, "x")]:
            with self.subTest(err=str(err)):
                copy = pickle.loads(pickle.dumps(err))
                self.assertIs(type(copy), type(err))
                self.assertEqual(str(copy), str(err))
                self.assertEqual(copy.message, err.message)

    def test_container_error_pickles_with_its_path(self):
        err = _ty_error(Array(Struct([required("a", Integer)])).from_json,
                        [{"a": 1}, {"a": "x"}])
        copy = pickle.loads(pickle.dumps(err))
        self.assertEqual(str(copy), "Item at [1]['a'] Invalid Integer: 'x'")
        self.assertEqual(copy.path, [1, "a"])
        self.assertEqual(copy.errors, [{"path": [1, "a"], "pointer": "/1/a",
                                        "message": "Invalid Integer: 'x'"}])

    def test_errors_list_every_problem(self):
        schema = Struct([required("a", Integer), required("b", Integer),
                         optional("c", Array(String))])
        err = _ty_error(schema.from_json, {"b": "x", "z": 1, "c": [1, "y", 2]})
        self.assertEqual(str(err), "Missing fields: ['a']")
        self.assertEqual(err.errors, [
            {"path": [], "pointer": "", "message": "Missing fields: ['a']"},
            {"path": [], "pointer": "", "message": "Unexpected fields: ['z']"},
            {"path": ["b"], "pointer": "/b", "message": "Invalid Integer: 'x'"},
            {"path": ["c", 0], "pointer": "/c/0",
             "message": "Invalid String: 1"},
            {"path": ["c", 2], "pointer": "/c/2",
             "message": "Invalid String: 2"}])

    def test_pointers_escape_tilde_and_slash(self):
        err = _ty_error(Map(Integer).from_json,
                        {"a/b": "x", "c~d": 1.5, "~1": True, "ok": 1, "": None})
        self.assertEqual([e["pointer"] for e in err.errors],
                         ["/a~1b", "/c~0d", "/~01", "/"])
        self.assertEqual([e["path"] for e in err.errors],
                         [["a/b"], ["c~d"], ["~1"], [""]])

    def test_errors_are_capped_at_100(self):
        err = _ty_error(Array(Integer).from_json, ["x"] * 1000)
        self.assertEqual(len(err.errors), 100)
        self.assertEqual(err.errors[0], {"path": [0], "pointer": "/0",
                                         "message": "Invalid Integer: 'x'"})
        self.assertEqual(err.errors[99]["pointer"], "/99")

    def test_errors_of_a_plain_error(self):
        self.assertEqual(ValidationError("Boom").errors,
                         [{"path": [], "pointer": "", "message": "Boom"}])

    def test_path_outermost_first(self):
        err = _ty_error(OrderedMap(Array(Integer)).from_json,
                        {"map": {"foo": [1, 2.1]}, "order": ["foo"]})
        self.assertEqual(err.path, ["map", "foo", 1])
        self.assertEqual(err.stack, [1, "foo", "map"])
        self.assertEqual(err.errors, [{"path": ["map", "foo", 1],
                                       "pointer": "/map/foo/1",
                                       "message": "Invalid Integer: 2.1"}])

    def test_subclasses(self):
        self.assertTrue(issubclass(UnicodeDecodeValidationError,
                                   ValidationError))
        self.assertTrue(issubclass(UnknownTypeValidationError,
                                   ValidationError))
        self.assertEqual(str(UnknownTypeValidationError("Unknown type", "x")),
                         "Unknown type: 'x'")


# -- Request-scoped globals ---------------------------------------------------
# thread_local, ensure_thread_local, the request scope.


class TestGlobals(unittest.TestCase):
    def setUp(self):
        _sv_isolate(self)
        self.assertEqual(storage, {})
        self.addCleanup(lambda: self.assertEqual(storage, {}))

    def test_unbound_thread_local_dict(self):
        g = ThreadLocalDict()
        self.assertEqual(repr(g), "<unbound ThreadLocalDict>")
        uses = [lambda: g.__setitem__("foo", 1), lambda: g["foo"],
                lambda: len(g), lambda: list(g), lambda: "foo" in g,
                lambda: g.get("foo"), lambda: g.__delitem__("foo"),
                lambda: g.update(a=1), lambda: g.keys() and list(g.keys())]
        for index, use in enumerate(uses):
            with self.subTest(use=index):
                with self.assertRaises(ThreadLocalMissing):
                    use()

    def test_thread_local_block(self):
        g = ThreadLocalDict()
        with thread_local() as local:
            self.assertIs(storage[threading.get_ident()], local)
            g["foo"] = 1
            self.assertEqual(g["foo"], 1)
            self.assertEqual(repr(g), "{'foo': 1}")
            g.update(bar=2)
            self.assertEqual((len(g), list(g), sorted(g.keys())),
                             (2, ["foo", "bar"], ["bar", "foo"]))
            self.assertEqual((g.get("nope", 3), "bar" in g), (3, True))
            del g["foo"]
            self.assertEqual(dict(g), {"bar": 2})
            with self.assertRaises(KeyError):
                g["foo"]
        self.assertEqual(repr(g), "<unbound ThreadLocalDict>")
        with thread_local():
            self.assertEqual(dict(g), {})

    def test_instances_do_not_share_keys(self):
        first, second = ThreadLocalDict(), ThreadLocalDict()
        with thread_local():
            first["k"] = 1
            second["k"] = 2
            self.assertEqual((dict(first), dict(second)), ({"k": 1},
                                                           {"k": 2}))

    def test_nesting_restores_the_outer_dict(self):
        g = ThreadLocalDict()
        with thread_local() as outer:
            g["a"] = 1
            with thread_local() as inner:
                self.assertIsNot(inner, outer)
                self.assertIs(storage[threading.get_ident()], inner)
                self.assertEqual(dict(g), {})
                g["b"] = 2
            self.assertIs(storage[threading.get_ident()], outer)
            self.assertEqual(dict(g), {"a": 1})
        self.assertEqual(repr(g), "<unbound ThreadLocalDict>")

    def test_exception_inside_restores(self):
        g = ThreadLocalDict()
        with self.assertRaises(KeyError):
            with thread_local():
                g["a"] = 1
                raise KeyError("boom")
        self.assertEqual(storage, {})
        self.assertEqual(repr(g), "<unbound ThreadLocalDict>")
        with thread_local() as outer:
            g["a"] = 1
            with self.assertRaises(ValueError):
                with thread_local():
                    g["b"] = 2
                    raise ValueError
            self.assertIs(storage[threading.get_ident()], outer)
            self.assertEqual(dict(g), {"a": 1})

    def test_ensure_thread_local(self):
        g = ThreadLocalDict()
        with thread_local() as outer:
            g["a"] = 1
            with ensure_thread_local() as local:
                self.assertIs(local, outer)
                self.assertEqual(dict(g), {"a": 1})
            self.assertEqual(dict(g), {"a": 1})
        with ensure_thread_local() as local:
            self.assertIs(storage[threading.get_ident()], local)
            g["b"] = 2
        self.assertEqual(repr(g), "<unbound ThreadLocalDict>")

    def test_swap_standalone(self):
        g = ThreadLocalDict()

        def current_user():
            return g['current_user']

        with g.swap({'current_user': 'bob@example.com'}):
            assert g['current_user'] == 'bob@example.com'
            self.assertEqual(current_user(), 'bob@example.com')
            self.assertEqual(dict(g), {'current_user': 'bob@example.com'})
        self.assertEqual(repr(g), "<unbound ThreadLocalDict>")
        self.assertEqual(storage, {})

    def test_swap_inside_a_block(self):
        g, other = ThreadLocalDict(), ThreadLocalDict()
        with thread_local():
            g["x"] = 1
            other["o"] = 0
            with g.swap({"y": 2}):
                self.assertEqual(dict(g), {"y": 2})
                self.assertEqual(dict(other), {"o": 0})
                g["z"] = 3
                with g.swap({"w": 4}):
                    self.assertEqual(dict(g), {"w": 4})
                self.assertEqual(dict(g), {"y": 2, "z": 3})
            self.assertEqual(dict(g), {"x": 1})
        with thread_local():
            with g.swap({"y": 2}):
                self.assertEqual(dict(g), {"y": 2})
            self.assertEqual(dict(g), {})

    def test_swap_restores_on_exception(self):
        g = ThreadLocalDict()
        with self.assertRaises(RuntimeError):
            with g.swap({"a": 1}):
                raise RuntimeError
        self.assertEqual(repr(g), "<unbound ThreadLocalDict>")
        self.assertEqual(storage, {})
        with thread_local():
            g["x"] = 1
            with self.assertRaises(RuntimeError):
                with g.swap({"a": 1}):
                    raise RuntimeError
            self.assertEqual(dict(g), {"x": 1})

    def test_swappable_dict(self):
        d = SwappableDict()
        self.assertEqual((d.data, len(d)), ({}, 0))
        d["a"] = 1
        new = {"b": 2}
        with d.swap(new):
            self.assertIs(d.data, new)
            self.assertEqual(dict(d), {"b": 2})
            d["c"] = 3
        self.assertEqual(new, {"b": 2, "c": 3})
        self.assertEqual(dict(d), {"a": 1})
        with self.assertRaises(ZeroDivisionError):
            with d.swap({"z": 0}):
                1 / 0  # noqa: B018
        self.assertEqual(dict(d), {"a": 1})
        d.data = {"direct": True}
        self.assertEqual((d["direct"], "direct" in d, list(d)),
                         (True, True, ["direct"]))
        del d["direct"]
        self.assertEqual(d.data, {})

    def test_cosmos_swap_isolates_the_registry(self):
        self.assertIsInstance(cosmos, SwappableDict)
        with cosmos.swap({}):
            api = API("isolated")
            self.assertIs(cosmos["isolated"], api)
        self.assertNotIn("isolated", cosmos)

    def test_server_provides_a_thread_local(self):
        api = API("glob")
        g = ThreadLocalDict()

        @api.action(returns=Map(Integer))
        def count():
            g["n"] = g.get("n", 0) + 1
            return dict(g)

        app = Server(api).wsgi_app
        for _ in range(2):
            status, _, body = _wsgi(app, "POST", "/actions/count")
            self.assertEqual((status, body), (200, b'{"n": 1}'))
        self.assertEqual(storage, {})
        self.assertEqual(repr(g), "<unbound ThreadLocalDict>")

    def test_thread_local_middleware(self):
        g = ThreadLocalDict()
        seen = []

        def app(environ, start_response):
            seen.append(dict(g))
            g["path"] = environ["PATH_INFO"]
            start_response("200 OK", [("Content-Type", "text/plain"),
                                      ("Content-Length", "2")])
            return [b"ok"]

        wrapped = thread_local_middleware(app)
        for path in ("/one", "/two"):
            status, _, body = _wsgi(wrapped, "GET", path)
            self.assertEqual((status, body), (200, b"ok"))
        self.assertEqual(seen, [{}, {}])
        self.assertEqual(storage, {})

    def test_server_reuses_the_middleware_local(self):
        api = API("outer")
        g = ThreadLocalDict()

        @api.action(returns=String)
        def user():
            return g["user"]

        server_app = Server(api).wsgi_app

        def auth(environ, start_response):
            g["user"] = environ.get("HTTP_AUTHORIZATION", "anonymous")
            return server_app(environ, start_response)

        app = thread_local_middleware(auth)
        status, _, body = _wsgi(app, "POST", "/actions/user",
                                   headers={"Authorization": "bob"})
        self.assertEqual((status, body), (200, b'"bob"'))
        self.assertEqual(storage, {})

    def test_concurrent_requests_see_their_own_values(self):
        api = API("concurrent")
        g = ThreadLocalDict()
        barrier = threading.Barrier(12, timeout=10)

        @api.action(accepts=String, returns=String)
        def remember(value):
            g["value"] = value
            barrier.wait()
            return g["value"]

        app = Server(api).wsgi_app
        results = {}

        def worker(index):
            for round_ in range(3):
                value = "t%d-r%d" % (index, round_)
                results[value] = _wsgi_json(app, "POST", "/actions/remember",
                                          value)

        threads = [threading.Thread(target=worker, args=(i,))
                   for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertFalse(any(t.is_alive() for t in threads))
        self.assertEqual(len(results), 36)
        for value, (status, _, body) in results.items():
            with self.subTest(value=value):
                self.assertEqual((status, body),
                                 (200, json.dumps(value).encode()))
        self.assertEqual(storage, {})


class TestRequestScopesNest(unittest.TestCase):
    def setUp(self):
        _sv_isolate(self)
        self.outer, self.inner, self.seen = _sv_scoped_apis()

    def test_an_inner_request_gets_a_fresh_scope(self):
        for how in ("client", "wsgi_app"):
            with self.subTest(how=how):
                del self.seen[:]
                status, _, body = _wsgi_json(Server(self.outer).wsgi_app,
                                           "POST", "/actions/relay", how)
                self.assertEqual((status, body), (200, b'"outer"'))
                self.assertEqual(self.seen[0], ("inner sees", None))
                self.assertEqual(storage, {})

    def test_with_a_handler_timeout(self):
        app = Server(self.outer, handler_timeout=10).wsgi_app
        status, _, body = _wsgi_json(app, "POST", "/actions/relay", "client")
        self.assertEqual((status, body), (200, b'"outer"'))
        self.assertEqual(self.seen[0], ("inner sees", None))

    def test_a_scope_around_the_server_is_reused(self):
        api = API("authy")

        @api.action(returns=String)
        def me():
            return _sv_g["user"]

        def auth(app):
            def middleware(environ, start_response):
                _sv_g["user"] = environ.get("HTTP_AUTHORIZATION", "nobody")
                return app(environ, start_response)
            return thread_local_middleware(middleware)

        app = auth(Server(api).wsgi_app)
        status, _, body = _wsgi(app, "POST", "/actions/me",
                                   headers={"Authorization": "bob"})
        self.assertEqual((status, body), (200, b'"bob"'))
        with thread_local():
            _sv_g["user"] = "carol"
            status, _, body = _wsgi(Server(api).wsgi_app, "POST",
                                       "/actions/me")
            self.assertEqual((status, body), (200, b'"carol"'))
            self.assertEqual(_sv_g["user"], "carol")
            # And the scope is not left marked as serving a request.
            status, _, body = _wsgi(Server(api).wsgi_app, "POST",
                                       "/actions/me")
            self.assertEqual((status, body), (200, b'"carol"'))
        self.assertEqual(storage, {})

    def test_over_http(self):
        with served_api(self.outer) as url:
            client = APIClient(url)
            self.addCleanup(client.close)
            self.assertEqual(client.actions.relay("client"), "outer")
        self.assertEqual(self.seen[0], ("inner sees", None))


# -- Strict JSON --------------------------------------------------------------
# The decoder's limits and the encoder.


class TestJSONLimits(unittest.TestCase):
    """Valid input never gives a 500: limits checked when parsing."""

    def setUp(self):
        _sv_isolate(self)
        self.api, self.app = _sv_limits()

    def post(self, name, body, app=None):
        return _wsgi(app or self.app, "POST", "/actions/" + name, body,
                        _SV_JSON)

    def test_integer_digits(self):
        big = "9" * 1000
        status, _, body = self.post(
            "add", ('{"a": %s, "b": -%s}' % (big, big)).encode())
        self.assertEqual((status, body), (200, b"0"))
        status, _, body = self.post(
            "add", ('{"a": %s, "b": %s}' % (big, big)).encode())
        self.assertEqual((status, body), (200, str(2 * int(big)).encode()))
        for text in ("9" * 1001, "-" + "9" * 1001, "1" + "0" * 4300):
            with self.subTest(digits=len(text)):
                status, _, body = self.post(
                    "add", ('{"a": %s, "b": 1}' % text).encode())
                self.assertEqual((status, body), (400, _sv_err(
                    "Invalid JSON: integer with more than 1000 digits")))

    def test_sums_of_accepted_values_can_be_written(self):
        status, _, body = self.post("echo", ("[%s]" % ("9" * 1000)).encode())
        self.assertEqual(status, 200)

    def test_a_return_value_past_the_output_limit_is_a_logged_500(self):
        with self.assertLogs("cosmic", "ERROR") as cm:
            status, _, body = self.post("power", b"5000")
        self.assertEqual((status, body), (500, _sv_err(
            "Internal Server Error")))
        self.assertIn("Return value of action power cannot be written as "
                      "JSON: an integer has more digits than Python writes",
                      cm.records[0].getMessage())
        status, _, body = self.post("power", b"4299")
        self.assertEqual(status, 200)

    def test_a_return_value_nested_too_deep_is_a_logged_500(self):
        with self.assertLogs("cosmic", "ERROR") as cm:
            status, _, _ = self.post("deep", b"")
        self.assertEqual(status, 500)
        self.assertIn("Return value of action deep cannot be written as "
                      "JSON: nested too deep", cm.records[0].getMessage())

    def test_depth_is_exact_for_any_mix_of_brackets(self):
        for kinds in ("[", "{", "[{", "{[", "[[{"):
            for depth, want in ((100, 200), (101, 400), (150, 400),
                                (199, 400), (201, 400)):
                with self.subTest(kinds=kinds, depth=depth):
                    status, _, body = self.post("echo", _sv_nest(depth,
                                                                  kinds))
                    self.assertEqual(status, want, body)
                    if want == 400:
                        self.assertEqual(body, _sv_err(
                            "Invalid JSON: nested deeper than 100 levels"))

    def test_brackets_in_strings_do_not_count(self):
        text = json.dumps({"s": "[{" * 500, "t": ["]}" * 500]}).encode()
        status, _, _ = self.post("echo", text)
        self.assertEqual(status, 200)

    def test_query_json_is_depth_checked(self):
        for depth, want in ((100, 200), (101, 400), (1000, 400),
                            (150, 400)):
            with self.subTest(depth=depth):
                query = "filter=" + quote(_sv_nest(depth, "[{").decode())
                status, _, body = _wsgi(self.app, "GET", "/Tag",
                                           query=query)
                self.assertEqual(status, want, body[:200])
                if want == 400:
                    self.assertEqual(body, _sv_err(
                        "Item at ['filter'] Invalid JSON: nested deeper "
                        "than 100 levels"))

    def test_query_json_integer_digits(self):
        query = "filter=" + "9" * 1001
        status, _, body = _wsgi(self.app, "GET", "/Tag", query=query)
        self.assertEqual((status, body), (400, _sv_err(
            "Item at ['filter'] Invalid JSON: integer with more than 1000 "
            "digits")))

    def test_the_servers_own_depth(self):
        _, app = _sv_limits(max_json_depth=5)
        for depth, want in ((5, 200), (6, 400)):
            with self.subTest(depth=depth):
                status, _, _ = self.post("echo", _sv_nest(depth, "{["),
                                         app=app)
                self.assertEqual(status, want)
                query = "filter=" + quote(_sv_nest(depth, "[{").decode())
                status, _, _ = _wsgi(app, "GET", "/Tag", query=query)
                self.assertEqual(status, want)

    def test_over_http(self):
        with served_api(self.api) as url:
            client = APIClient(url)
            self.addCleanup(client.close)
            with self.assertRaises(RemoteHTTPError) as raised:
                client.models.Tag.get_list(filter=Box(json.loads(
                    _sv_nest(150, "[{"))))
            self.assertEqual(raised.exception.code, 400)
            self.assertIn("nested deeper than 100 levels",
                          raised.exception.message)
            big = int("9" * 1000)
            self.assertEqual(client.actions.add(a=big, b=big), 2 * big)


# -- Schema types -------------------------------------------------------------
# Simple types, containers, Schema, the Cosmic types, URLParams;
# constraints, type hints and custom types; cosmic against jsonschema.


class TestInteger(unittest.TestCase):
    def test_accepts_ints_and_integral_floats(self):
        for datum, native in [(1, 1), (0, 0), (-5, -5), (1.0, 1), (1e2, 100),
                              (-0.0, 0), (10 ** 20, 10 ** 20),
                              (1e20, 10 ** 20), (-(10 ** 30), -(10 ** 30))]:
            with self.subTest(datum=datum):
                value = Integer.from_json(datum)
                self.assertEqual(value, native)
                self.assertIs(type(value), int)

    def test_rejects_bools_fractions_and_other_values(self):
        for datum in [True, False, 1.5, -0.25, "1", None, [], {},
                      float("nan"), float("inf")]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(Integer.from_json, datum),
                                 "Invalid Integer: %r" % (datum,))

    def test_to_json_accepts_integral_floats(self):
        self.assertEqual(Integer.to_json(7), 7)
        value = Integer.to_json(10 / 5)
        self.assertEqual(value, 2)
        self.assertIs(type(value), int)

    def test_to_json_checks_the_type(self):
        for value in ["x", True, 2.5, None]:
            with self.subTest(value=value):
                self.assertEqual(_ty_message(Integer.to_json, value),
                                 "Invalid Integer: %r" % (value,))


class TestFloat(unittest.TestCase):
    def test_accepts_floats_and_ints(self):
        for datum, native in [(1, 1.0), (2.5, 2.5), (-0.0, -0.0),
                              (1e300, 1e300), (10 ** 20, 1e20), (0, 0.0)]:
            with self.subTest(datum=datum):
                value = Float.from_json(datum)
                self.assertEqual(value, native)
                self.assertIs(type(value), float)

    def test_rejects_bools_and_other_values(self):
        for datum in [True, False, "1.0", None, [1.0], {},
                      float("nan"), float("inf"), float("-inf")]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(Float.from_json, datum),
                                 "Invalid Float: %r" % (datum,))

    def test_an_int_too_big_for_a_float_is_refused_with_a_capped_repr(self):
        self.assertEqual(_ty_message(Float.from_json, 10 ** 400),
                         "Invalid Float: " + "1" + "0" * 199 + "...")

    def test_to_json(self):
        value = Float.to_json(1)
        self.assertEqual(value, 1.0)
        self.assertIs(type(value), float)
        self.assertEqual(Float.to_json(0.5), 0.5)
        for bad in [True, "1", None]:
            with self.subTest(value=bad):
                self.assertEqual(_ty_message(Float.to_json, bad),
                                 "Invalid Float: %r" % (bad,))


class TestBoolean(unittest.TestCase):
    def test_accepts_only_real_booleans(self):
        self.assertIs(Boolean.from_json(True), True)
        self.assertIs(Boolean.from_json(False), False)

    def test_rejects_everything_else(self):
        for datum in [0, 1, 0.0, "true", "false", None, [], {}]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(Boolean.from_json, datum),
                                 "Invalid Boolean: %r" % (datum,))

    def test_to_json(self):
        self.assertIs(Boolean.to_json(False), False)
        self.assertEqual(_ty_message(Boolean.to_json, 1), "Invalid Boolean: 1")


class TestString(unittest.TestCase):
    def test_accepts_any_string(self):
        for datum in ["", "abc", "caf\u00e9", "\x00", "a\nb", "1"]:
            with self.subTest(datum=datum):
                self.assertEqual(String.from_json(datum), datum)

    def test_rejects_everything_else(self):
        for datum in [1, 1.5, True, None, ["a"], {"a": "b"}, b"x"]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(String.from_json, datum),
                                 "Invalid String: %r" % (datum,))

    def test_tutorial_message(self):
        self.assertEqual(_ty_message(String.from_json, 1), "Invalid String: 1")

    def test_to_json(self):
        self.assertEqual(String.to_json("x"), "x")
        self.assertEqual(_ty_message(String.to_json, 3), "Invalid String: 3")


class TestBinary(unittest.TestCase):
    def test_accepts_standard_padded_base64(self):
        for datum, native in [("YWJj", b"abc"), ("", b""), ("YQ==", b"a"),
                              ("YWI=", b"ab"), ("+/+/", b"\xfb\xff\xbf"),
                              ("AAAA", b"\x00\x00\x00")]:
            with self.subTest(datum=datum):
                self.assertEqual(Binary.from_json(datum), native)

    def test_rejects_bad_base64(self):
        for datum in ["YW Jj!", "YWJ", "YQ", "YQ=", "Y===", "====", "YW-_",
                      "YWJj====", "YQ==YQ==", " YWJj", "YWJj\n", "Y\nWJj",
                      "\u0661\u0662\u0663\u0664"]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(Binary.from_json, datum),
                                 "Invalid base64 encoding: %r" % (datum,))

    def test_rejects_non_strings(self):
        for datum in [1, None, True, [], {"a": 1}]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(Binary.from_json, datum),
                                 "Invalid Binary data: %r" % (datum,))

    def test_to_json(self):
        self.assertEqual(Binary.to_json(b"abc"), "YWJj")
        self.assertEqual(Binary.to_json(bytearray(b"a")), "YQ==")
        self.assertEqual(Binary.to_json(b""), "")
        self.assertEqual(_ty_message(Binary.to_json, "abc"),
                         "Invalid Binary data: 'abc'")

    def test_round_trip_of_every_length(self):
        for n in range(8):
            data = bytes(range(250, 250 - n, -1))
            with self.subTest(n=n):
                self.assertEqual(Binary.from_json(Binary.to_json(data)), data)


class TestJSON(unittest.TestCase):
    def test_from_json_boxes_anything(self):
        for datum in [None, 0, "", [], {}, False, {"a": [1, None]}]:
            with self.subTest(datum=datum):
                box = JSON.from_json(datum)
                self.assertIs(type(box), Box)
                self.assertEqual(box.datum, datum)

    def test_null_is_a_box_not_none(self):
        box = JSON.from_json(None)
        self.assertIsNot(box, None)
        self.assertIsNone(box.datum)

    def test_box_compares_its_datum(self):
        self.assertTrue(Box(1) == 1)
        self.assertTrue(Box([1, 2]) == [1, 2])
        self.assertTrue(Box(None) == None)  # noqa: E711 (8.3: compares x, y)
        self.assertTrue(Box(1) == Box(1))
        self.assertFalse(Box(1) == 2)
        self.assertFalse(Box(1) == Box(2))
        self.assertTrue(Box(1) != Box(2))
        self.assertFalse(Box(1) != 1)

    def test_box_is_always_truthy(self):
        for datum in [0, None, "", [], {}, False, 0.0]:
            with self.subTest(datum=datum):
                self.assertIs(bool(Box(datum)), True)

    def test_box_hash(self):
        self.assertEqual(hash(Box(1)), hash(json.dumps(1)))
        self.assertEqual(hash(Box("a")), hash(json.dumps("a")))
        self.assertEqual(hash(Box([1, None])), hash("[1, null]"))
        # Equal boxes hash equal, whatever the key order of their objects.
        self.assertEqual(hash(Box({"a": 1, "b": 2})),
                         hash(Box({"b": 2, "a": 1})))
        self.assertEqual(len({Box(1), Box(1), Box(2)}), 2)

    def test_to_json(self):
        self.assertEqual(JSON.to_json(Box([1])), [1])
        self.assertIsNone(JSON.to_json(Box(None)))
        self.assertEqual(JSON.to_json(5), 5)
        self.assertEqual(JSON.to_json({"a": None}), {"a": None})


class TestArray(unittest.TestCase):
    def test_accepts_lists(self):
        self.assertEqual(Array(Integer).from_json([]), [])
        self.assertEqual(Array(Integer).from_json([1, 2.0]), [1, 2])
        self.assertEqual(Array(String).from_json(["a", "b"]), ["a", "b"])
        self.assertEqual(Array(Binary).from_json(["YWJj"]), [b"abc"])

    def test_returns_a_new_list(self):
        datum = [1, 2]
        out = Array(Integer).from_json(datum)
        out.append(3)
        self.assertEqual(datum, [1, 2])

    def test_rejects_non_lists(self):
        for datum in [{}, "ab", None, 1]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(Array(Integer).from_json, datum),
                                 "Invalid Array: %r" % (datum,))

    def test_error_names_the_index(self):
        with self.assertRaises(ValidationError) as cm:
            Array(Integer).from_json([1, 2, True])
        self.assertEqual(str(cm.exception), "Item at [2] Invalid Integer: True")

    def test_nested_index_path(self):
        self.assertEqual(
            _ty_message(Array(Array(Integer)).from_json, [[1], [2, "x"]]),
            "Item at [1][1] Invalid Integer: 'x'")

    def test_to_json(self):
        self.assertEqual(Array(Integer).to_json((1, 2.0)), [1, 2])
        self.assertEqual(Array(Binary).to_json([b"a"]), ["YQ=="])
        self.assertEqual(_ty_message(Array(Integer).to_json, "x"),
                         "Invalid Array: 'x'")
        self.assertEqual(_ty_message(Array(Integer).to_json, [1, "x"]),
                         "Item at [1] Invalid Integer: 'x'")

    def test_every_error_has_a_pointer(self):
        schema = Struct([required("rows", Array(Struct([
            required("id", Integer), optional("name", String)])))])
        err = _ty_error(schema.from_json, {"rows": [
            {"id": 1}, {"id": "x"}, {"id": 2, "name": 3}]})
        self.assertEqual(
            [(e["pointer"], e["message"]) for e in err.errors],
            [("/rows/1/id", "Invalid Integer: 'x'"),
             ("/rows/2/name", "Invalid String: 3")])


class TestMap(unittest.TestCase):
    def test_accepts_objects(self):
        self.assertEqual(Map(Integer).from_json({}), {})
        self.assertEqual(Map(Integer).from_json({"a": 1.0, "b": 2}),
                         {"a": 1, "b": 2})

    def test_rejects_non_objects(self):
        for datum in [[], "ab", None, 1]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(Map(Integer).from_json, datum),
                                 "Invalid Map: %r" % (datum,))

    def test_error_names_the_key(self):
        self.assertEqual(
            _ty_message(Map(Integer).from_json, {"a": 1, "b": "x"}),
            "Item at ['b'] Invalid Integer: 'x'")

    def test_to_json(self):
        self.assertEqual(Map(Binary).to_json({"a": b"abc"}), {"a": "YWJj"})
        self.assertEqual(_ty_message(Map(Integer).to_json, {1: 2}),
                         "Invalid Map key: 1")
        self.assertEqual(_ty_message(Map(Integer).to_json, [1]),
                         "Invalid Map: [1]")


class TestOrderedMap(unittest.TestCase):
    def test_native_form_is_an_ordered_dict_in_order(self):
        value = OrderedMap(Integer).from_json(
            {"map": {"a": 1, "b": 2.0}, "order": ["b", "a"]})
        self.assertIs(type(value), OrderedDict)
        self.assertEqual(list(value.items()), [("b", 2), ("a", 1)])
        self.assertEqual(OrderedMap(Integer).from_json(
            {"map": {}, "order": []}), OrderedDict())

    def test_order_must_be_a_permutation_of_the_keys(self):
        for mapping, order in [({"a": 1, "b": 2}, ["b", "b"]),
                               ({"a": 1, "b": 2}, ["b"]),
                               ({"a": 1, "b": 2}, ["b", "a", "c"]),
                               ({"a": 1, "b": 2}, ["a", "b", "b"]),
                               ({"a": 1}, ["a", "a"]),
                               ({"a": 1}, []),
                               ({}, ["a"])]:
            datum = {"map": mapping, "order": order}
            with self.subTest(order=order):
                self.assertEqual(
                    _ty_message(OrderedMap(Integer).from_json, datum),
                    "Invalid OrderedMap: %r" % (datum,))

    def test_structural_errors_are_struct_messages(self):
        schema = OrderedMap(Integer)
        for datum, message in [
                ([], "Invalid Struct: []"),
                ({"map": {}}, "Missing fields: ['order']"),
                ({}, "Missing fields: ['map', 'order']"),
                ({"map": {}, "order": [], "x": 1}, "Unexpected fields: ['x']"),
                ({"map": [], "order": []}, "Item at ['map'] Invalid Map: []"),
                ({"map": {}, "order": "ab"},
                 "Item at ['order'] Invalid Array: 'ab'"),
                ({"map": {"a": 1}, "order": [1]},
                 "Item at ['order'][0] Invalid String: 1")]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(schema.from_json, datum), message)

    def test_value_error_path(self):
        self.assertEqual(
            _ty_message(OrderedMap(Array(Integer)).from_json,
                        {"map": {"foo": [1, 2.1]}, "order": ["foo"]}),
            "Item at ['map']['foo'][1] Invalid Integer: 2.1")

    def test_to_json_keeps_the_order(self):
        schema = OrderedMap(Integer)
        self.assertEqual(schema.to_json(OrderedDict([("b", 1), ("a", 2.0)])),
                         {"map": {"b": 1, "a": 2}, "order": ["b", "a"]})
        self.assertEqual(schema.to_json({"z": 1, "y": 2})["order"], ["z", "y"])
        self.assertEqual(_ty_message(schema.to_json, [1]),
                         "Invalid OrderedMap: [1]")

    def test_round_trip(self):
        value = OrderedDict([("c", 3), ("a", 1), ("b", 2)])
        schema = OrderedMap(Integer)
        self.assertEqual(list(schema.from_json(schema.to_json(value)).items()),
                         list(value.items()))


class TestStruct(unittest.TestCase):
    S = Struct([required("a", Integer), optional("b", Integer)])

    def test_native_form_has_only_the_present_fields(self):
        self.assertEqual(self.S.from_json({"a": 1}), {"a": 1})
        self.assertEqual(self.S.from_json({"b": 2.0, "a": 1}),
                         {"a": 1, "b": 2})

    def test_null_is_a_value_not_absence(self):
        self.assertEqual(_ty_message(self.S.from_json, {"a": 1, "b": None}),
                         "Item at ['b'] Invalid Integer: None")
        schema = Struct([optional("j", JSON)])
        value = schema.from_json({"j": None})
        self.assertEqual(list(value), ["j"])
        self.assertIs(type(value["j"]), Box)
        self.assertIsNone(value["j"].datum)
        self.assertEqual(schema.from_json({}), {})

    def test_rejects_non_objects(self):
        for datum in [[], None, "x", 1]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(self.S.from_json, datum),
                                 "Invalid Struct: %r" % (datum,))

    def test_missing_fields_in_declaration_order(self):
        schema = Struct([required("c", Integer), required("a", Integer),
                         optional("d", Integer), required("b", Integer)])
        self.assertEqual(_ty_message(schema.from_json, {}),
                         "Missing fields: ['c', 'a', 'b']")
        self.assertEqual(_ty_message(schema.from_json, {"a": 1}),
                         "Missing fields: ['c', 'b']")

    def test_unexpected_fields_in_input_order(self):
        datum = {"z": 1, "a": 1, "y": 2, "b": 3, "x": 4}
        self.assertEqual(_ty_message(self.S.from_json, datum),
                         "Unexpected fields: ['z', 'y', 'x']")

    def test_missing_before_unexpected_before_field_errors(self):
        for datum, message in [
                ({"b": "x"}, "Missing fields: ['a']"),
                ({"z": 1}, "Missing fields: ['a']"),
                ({"a": "x", "c": 2}, "Unexpected fields: ['c']"),
                ({"c": 2, "a": "x"}, "Unexpected fields: ['c']"),
                ({"a": 1, "b": "x", "c": 2}, "Unexpected fields: ['c']")]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(self.S.from_json, datum), message)

    def test_fields_validated_in_declaration_order(self):
        schema = Struct([required("a", Integer), required("b", Integer)])
        self.assertEqual(_ty_message(schema.from_json, {"b": "x", "a": "y"}),
                         "Item at ['a'] Invalid Integer: 'y'")

    def test_fields_from_an_ordered_dict(self):
        schema = Struct(OrderedDict([required("a", Integer),
                                     optional("b", String)]))
        self.assertEqual(list(schema.param), ["a", "b"])
        self.assertEqual(schema.from_json({"a": 1}), {"a": 1})

    def test_to_json_is_lenient_but_type_checked(self):
        self.assertEqual(self.S.to_json({"a": 1, "b": None, "c": 3}), {"a": 1})
        self.assertEqual(self.S.to_json({"b": 2}), {"b": 2})
        self.assertEqual(self.S.to_json({"a": 2.0}), {"a": 2})
        self.assertEqual(_ty_message(self.S.to_json, {"a": "x"}),
                         "Item at ['a'] Invalid Integer: 'x'")
        self.assertEqual(_ty_message(self.S.to_json, []), "Invalid Struct: []")

    def test_bad_field_declarations_are_spec_errors(self):
        for param, message in [
                ([required("a", "x")], "Not a cosmic type: 'x'"),
                ([required("a", Integer), required("a", String)],
                 "Duplicate field name: a"),
                ([1], "A field must be a (name, spec) pair, as required() "
                      "gives: 1"),
                ([(1, {"schema": Integer})], "Field name must be a string: 1"),
                ([("a", Integer)], "Field a must be a dict with a schema, as "
                                   "required() gives: Integer"),
                ([("a", {})], "Field a must be a dict with a schema, as "
                              "required() gives: {}")]:
            with self.subTest(param=param):
                with self.assertRaises(SpecError) as cm:
                    Struct(param)
                self.assertEqual(str(cm.exception), message)


class TestDateTime(unittest.TestCase):
    def test_accepted_forms(self):
        for text, native in [
                ("2013-10-04T13:05:25.354952",
                 datetime.datetime(2013, 10, 4, 13, 5, 25, 354952)),
                ("2013-10-04T13:05", datetime.datetime(2013, 10, 4, 13, 5)),
                ("2013-10-04T13:05:25",
                 datetime.datetime(2013, 10, 4, 13, 5, 25)),
                ("2013-10-04T13:05:25.5",
                 datetime.datetime(2013, 10, 4, 13, 5, 25, 500000)),
                ("2013-10-04T13:05:25Z",
                 datetime.datetime(2013, 10, 4, 13, 5, 25, tzinfo=_TY_UTC)),
                ("2013-10-04T13:05:25+05:00",
                 datetime.datetime(2013, 10, 4, 13, 5, 25, tzinfo=_ty_tz(5))),
                ("2013-10-04T13:05:25+0500",
                 datetime.datetime(2013, 10, 4, 13, 5, 25, tzinfo=_ty_tz(5))),
                ("2013-10-04T13:05:25+05",
                 datetime.datetime(2013, 10, 4, 13, 5, 25, tzinfo=_ty_tz(5))),
                ("2013-10-04T13:05-03:30",
                 datetime.datetime(2013, 10, 4, 13, 5,
                                   tzinfo=_ty_tz(-3, -30))),
                ("2016-02-29T00:00:00",
                 datetime.datetime(2016, 2, 29))]:
            with self.subTest(text=text):
                value = DateTime.from_json(text)
                self.assertEqual(value, native)
                self.assertEqual(value.utcoffset(), native.utcoffset())

    def test_z_is_utc_and_no_offset_is_naive(self):
        self.assertIs(DateTime.from_json("2013-10-04T13:05:25Z").tzinfo,
                      _TY_UTC)
        self.assertIsNone(DateTime.from_json("2013-10-04T13:05:25").tzinfo)

    def test_refused_forms(self):
        for text in [
                "2013-10-04 13:05:25",          # space separator
                "2013-10-04",                   # date only
                "2013-10-04t13:05:25",          # lower-case t
                "2014-13-01T00:00:00",          # month 13
                "2014-02-30T00:00:00",          # no such day
                "2015-02-29T00:00:00",          # not a leap year
                "0000-01-01T00:00:00",          # no year 0
                "\u0662\u0660\u0661\u0663-\u0661\u0660-\u0660\u0664T"
                "\u0661\u0663:\u0660\u0665",    # Arabic-Indic digits
                "\uff12\uff10\uff11\uff13-10-04T13:05",  # full-width digits
                "2013-10-04T13:05:25x",         # trailing garbage
                "2013-10-04T13:05:25 ",
                "2013-10-04T13:05:25\n",
                "x2013-10-04T13:05:25",
                "2013-10-04T24:00:00",
                "2013-10-04T13:60",
                "2013-10-04T13:05:60",
                "2013-10-04T13:05:25.1234567",
                "2013-10-04T13:05:25.",
                "2013-10-04T13",
                "2013-10-04T13:05:25+24:00",
                "2013-10-04T13:05:25+05:60",
                "2013-10-04T13:05:25+5",
                "2013-10-04T13:05:25z",
                "2013-1-04T13:05:25",
                ""]:
            with self.subTest(text=text):
                self.assertEqual(_ty_message(DateTime.from_json, text),
                                 "Invalid DateTime: %r" % (text,))

    def test_non_strings_are_invalid_strings(self):
        for datum in [20131004, None, ["2013-10-04T13:05"]]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(DateTime.from_json, datum),
                                 "Invalid String: %r" % (datum,))

    def test_to_json_is_isoformat(self):
        for native, text in [
                (datetime.datetime(2014, 1, 1), "2014-01-01T00:00:00"),
                (datetime.datetime(2013, 10, 18, 1, 58, 24, 904349),
                 "2013-10-18T01:58:24.904349"),
                (datetime.datetime(2013, 10, 18, 1, 58, 24, tzinfo=_TY_UTC),
                 "2013-10-18T01:58:24+00:00"),
                (datetime.datetime(2013, 10, 18, 1, 58, 24, 1,
                                   tzinfo=_ty_tz(-5, -30)),
                 "2013-10-18T01:58:24.000001-05:30")]:
            with self.subTest(text=text):
                self.assertEqual(DateTime.to_json(native), text)

    def test_canonical_strings_round_trip(self):
        for text in ["2014-01-01T00:00:00", "2013-10-18T01:58:24.904349",
                     "2013-10-18T01:58:24+00:00", "2013-10-18T01:58:24+05:45",
                     "2013-10-18T01:58:24.000001-05:30",
                     "0001-01-01T00:00:00", "9999-12-31T23:59:59.999999"]:
            with self.subTest(text=text):
                self.assertEqual(DateTime.to_json(DateTime.from_json(text)),
                                 text)

    def test_values_round_trip(self):
        for native in [
                datetime.datetime(2013, 10, 18, 1, 58, 24, 904349),
                datetime.datetime(2013, 10, 18, 1, 58, 24, 904349,
                                  tzinfo=_TY_UTC),
                datetime.datetime(2000, 2, 29, 23, 59, 59, 1,
                                  tzinfo=_ty_tz(14)),
                datetime.datetime(1991, 8, 12)]:
            with self.subTest(native=native):
                value = DateTime.from_json(DateTime.to_json(native))
                self.assertEqual(value, native)
                self.assertEqual(value.utcoffset(), native.utcoffset())
                self.assertEqual(value.microsecond, native.microsecond)

    def test_to_json_checks_the_type(self):
        self.assertEqual(_ty_message(DateTime.to_json, "x"),
                         "Invalid DateTime: 'x'")
        self.assertEqual(_ty_message(DateTime.to_json, datetime.date(2014, 1, 1)),
                         "Invalid DateTime: datetime.date(2014, 1, 1)")

    def test_error_inside_a_struct(self):
        schema = Struct([required("when", DateTime)])
        self.assertEqual(_ty_message(schema.from_json, {"when": "soon"}),
                         "Item at ['when'] Invalid DateTime: 'soon'")


class TestDateTimeOffsetsWithSeconds(unittest.TestCase):
    """to_json never writes an offset from_json refuses."""

    def zones(self):
        zones = [datetime.timezone(datetime.timedelta(minutes=19,
                                                      seconds=32)),
                 datetime.timezone(-datetime.timedelta(hours=4, seconds=1)),
                 datetime.timezone(datetime.timedelta(
                     minutes=1, microseconds=5))]
        try:
            import zoneinfo
            zones.append(zoneinfo.ZoneInfo("Europe/Amsterdam"))
        except Exception:  # no zoneinfo (3.8) or no time zone data
            pass
        return zones

    def test_the_same_instant_in_utc(self):
        for zone in self.zones():
            value = datetime.datetime(1850, 6, 1, 12, 0, 7, tzinfo=zone)
            with self.subTest(zone=zone):
                text = DateTime.to_json(value)
                self.assertTrue(text.endswith("+00:00"), text)
                again = DateTime.from_json(text)
                self.assertEqual(again, value)
                self.assertEqual(again.utcoffset(), datetime.timedelta(0))

    def test_minute_offsets_are_kept(self):
        zone = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
        value = datetime.datetime(2014, 1, 1, tzinfo=zone)
        self.assertEqual(DateTime.to_json(value),
                         "2014-01-01T00:00:00+05:30")
        naive = datetime.datetime(2014, 1, 1)
        self.assertEqual(DateTime.to_json(naive), "2014-01-01T00:00:00")

    def test_out_of_range_is_refused(self):
        zone = datetime.timezone(datetime.timedelta(seconds=30))
        with self.assertRaises(ValidationError):
            DateTime.to_json(datetime.datetime(1, 1, 1, tzinfo=zone))

    def test_server_sends_it_and_the_client_reads_it(self):
        _sv_isolate(self)
        values = {"when": datetime.datetime(1850, 1, 1, 12, tzinfo=(
            datetime.timezone(datetime.timedelta(minutes=19, seconds=32))))}
        client = WsgiAPIClient.for_api(_sv_returns(values))
        self.assertEqual(client.actions.when(), values["when"])


class TestSchema(unittest.TestCase):
    def test_to_json_of_every_type(self):
        fields = [required("a", Integer, "The a."), optional("b", String)]
        for schema, expected in [
                (Integer, {"type": "Integer"}),
                (Float, {"type": "Float"}),
                (Boolean, {"type": "Boolean"}),
                (String, {"type": "String"}),
                (Binary, {"type": "Binary"}),
                (DateTime, {"type": "DateTime"}),
                (JSON, {"type": "JSON"}),
                (Schema, {"type": "Schema"}),
                (Model, {"type": "cosmic.Model"}),
                (APISpec, {"type": "cosmic.APISpec"}),
                (Array(Integer), {"type": "Array", "param": {"type": "Integer"}}),
                (Map(String), {"type": "Map", "param": {"type": "String"}}),
                (OrderedMap(Binary),
                 {"type": "OrderedMap", "param": {"type": "Binary"}}),
                (Struct(fields), {"type": "Struct", "param": {
                    "map": {"a": {"schema": {"type": "Integer"},
                                  "required": True, "doc": "The a."},
                            "b": {"schema": {"type": "String"},
                                  "required": False}},
                    "order": ["a", "b"]}}),
                (Link(Model("places.City")),
                 {"type": "cosmic.Link", "param": "places.City"}),
                (Representation(Model("places.City")),
                 {"type": "cosmic.Representation", "param": "places.City"}),
                (Patch(Model("places.City")),
                 {"type": "cosmic.Patch", "param": "places.City"})]:
            with self.subTest(schema=schema):
                self.assertEqual(Schema.to_json(schema), expected)

    def test_simple_types_come_back_as_themselves(self):
        for name, schema in [("Integer", Integer), ("Float", Float),
                             ("Boolean", Boolean), ("String", String),
                             ("Binary", Binary), ("DateTime", DateTime),
                             ("JSON", JSON), ("Schema", Schema),
                             ("cosmic.Model", Model),
                             ("cosmic.APISpec", APISpec)]:
            with self.subTest(name=name):
                self.assertIs(Schema.from_json({"type": name}), schema)

    def test_parametrized_types_are_built(self):
        array = Schema.from_json({"type": "Array", "param": {"type": "Integer"}})
        self.assertIsInstance(array, Array)
        self.assertIs(array.param, Integer)
        self.assertEqual(array.from_json([1.0]), [1])
        struct = Schema.from_json({"type": "Struct", "param": {
            "map": {"b": {"schema": {"type": "String"}, "required": False},
                    "a": {"schema": {"type": "Integer"}, "required": True}},
            "order": ["a", "b"]}})
        self.assertIsInstance(struct, Struct)
        self.assertEqual(list(struct.param), ["a", "b"])
        self.assertEqual(_ty_message(struct.from_json, {}),
                         "Missing fields: ['a']")
        link = Schema.from_json({"type": "cosmic.Link", "param": "a.b.c"})
        self.assertEqual(link.param, Model("a.b.c"))
        self.assertEqual(link.from_json("/b.c/7"), "7")

    def test_errors(self):
        for datum, message in [
                (True, "Invalid Schema: True"),
                ("Integer", "Invalid Schema: 'Integer'"),
                ([], "Invalid Schema: []"),
                ({}, "Invalid Schema: {}"),
                ({"param": {"type": "Integer"}},
                 "Invalid Schema: {'param': {'type': 'Integer'}}"),
                ({"type": 1}, "Invalid Schema: {'type': 1}"),
                ({"type": []}, "Invalid Schema: {'type': []}"),
                ({"type": {"a": 1}}, "Invalid Schema: {'type': {'a': 1}}"),
                ({"type": None}, "Invalid Schema: {'type': None}"),
                ({"type": "Array"}, "Missing param for Array schema"),
                ({"type": "Map"}, "Missing param for Map schema"),
                ({"type": "OrderedMap"}, "Missing param for OrderedMap schema"),
                ({"type": "Struct"}, "Missing param for Struct schema"),
                ({"type": "cosmic.Link"},
                 "Missing param for cosmic.Link schema"),
                ({"type": "cosmic.Representation"},
                 "Missing param for cosmic.Representation schema"),
                ({"type": "cosmic.Patch"},
                 "Missing param for cosmic.Patch schema"),
                ({"type": "Integer", "param": 1},
                 "Unexpected param for Integer schema"),
                ({"type": "Schema", "param": None},
                 "Unexpected param for Schema schema"),
                ({"type": "cosmic.Model", "param": "a.B"},
                 "Unexpected param for cosmic.Model schema"),
                ({"type": "cosmic.APISpec", "param": {}},
                 "Unexpected param for cosmic.APISpec schema"),
                ({"type": "Integer", "x": 1}, "Unexpected fields: ['x']"),
                ({"type": "Array", "param": {"type": "Integer"}, "x": 1},
                 "Unexpected fields: ['x']"),
                ({"type": "Array", "param": 5},
                 "Item at ['param'] Invalid Schema: 5"),
                ({"type": "Array", "param": {"type": "string"}},
                 "Item at ['param'] Unknown type: 'string'"),
                ({"type": "cosmic.Link", "param": "nodot"},
                 "Item at ['param'] Invalid Model: nodot"),
                ({"type": "cosmic.Link", "param": 3},
                 "Item at ['param'] Invalid String: 3"),
                ({"type": "Struct", "param": {
                    "map": {"a": {"schema": {"type": "Integer"}}},
                    "order": ["a"]}},
                 "Item at ['param']['map']['a'] Missing fields: ['required']"),
                ({"type": "Struct", "param": {
                    "map": {"a": {"schema": {"type": "Integer"},
                                  "required": True, "doc": None}},
                    "order": ["a"]}},
                 "Item at ['param']['map']['a']['doc'] Invalid String: None"),
                ({"type": "Struct", "param": {"map": {}, "order": ["a"]}},
                 "Item at ['param'] Invalid OrderedMap: "
                 "{'map': {}, 'order': ['a']}")]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(Schema.from_json, datum),
                                 message)

    def test_unknown_type(self):
        for name in ["string", "integer", "cosmic.Thing", "Link", "APISpec",
                     "URLParams", ""]:
            with self.subTest(name=name):
                err = _ty_error(Schema.from_json, {"type": name})
                self.assertIs(type(err), UnknownTypeValidationError)
                self.assertIsInstance(err, ValidationError)
                self.assertEqual(str(err), "Unknown type: %r" % name)
                self.assertEqual(err.message, "Unknown type")
                self.assertEqual(err.obj, name)

    def test_round_trip(self):
        integer = {"type": "Integer"}
        for j in [
                integer, {"type": "JSON"}, {"type": "Schema"},
                {"type": "cosmic.Model"}, {"type": "cosmic.APISpec"},
                {"type": "Array", "param": {"type": "Map", "param": {
                    "type": "OrderedMap", "param": {"type": "DateTime"}}}},
                {"type": "Struct", "param": {"map": {}, "order": []}},
                {"type": "Struct", "param": {
                    "map": {
                        "name": {"schema": {"type": "String"},
                                 "required": True, "doc": "The name."},
                        "tags": {"schema": {"type": "Array", "param": {
                            "type": "String"}}, "required": False},
                        "inner": {"schema": {"type": "Struct", "param": {
                            "map": {"x": {"schema": integer,
                                          "required": False, "doc": ""}},
                            "order": ["x"]}}, "required": True},
                        "city": {"schema": {"type": "cosmic.Link",
                                            "param": "places.City"},
                                 "required": False}},
                    "order": ["tags", "name", "inner", "city"]}},
                {"type": "OrderedMap", "param": {"type": "Binary"}},
                {"type": "cosmic.Link", "param": "api.Model"},
                {"type": "cosmic.Representation", "param": "api.Model"},
                {"type": "cosmic.Patch", "param": "api.Model"},
                {"type": "Map", "param": {"type": "cosmic.Patch",
                                          "param": "a.b.c"}}]:
            with self.subTest(j=j):
                out = Schema.to_json(Schema.from_json(j))
                self.assertEqual(out, j)
                self.assertEqual(json.dumps(out, sort_keys=True),
                                 json.dumps(j, sort_keys=True))

    def test_struct_order_comes_from_order(self):
        j = {"type": "Struct", "param": {
            "map": {"b": {"schema": {"type": "Integer"}, "required": True},
                    "a": {"schema": {"type": "Integer"}, "required": True}},
            "order": ["a", "b"]}}
        out = Schema.to_json(Schema.from_json(j))
        self.assertEqual(list(out["param"]["map"]), ["a", "b"])
        self.assertEqual(out["param"]["order"], ["a", "b"])

    def test_to_json_of_a_non_type(self):
        for value in [5, None, "Integer", int]:
            with self.subTest(value=value):
                self.assertEqual(_ty_message(Schema.to_json, value),
                                 "Invalid Schema: %r" % (value,))

    def test_url_params_cannot_be_described(self):
        params = URLParams([required("a", Integer)])
        for schema in [params, Array(params)]:
            with self.subTest(schema=schema):
                with self.assertRaises(SpecError) as cm:
                    Schema.to_json(schema)
                self.assertEqual(str(cm.exception),
                                 "URLParams cannot be described in a spec")


class TestModel(unittest.TestCase):
    def test_attributes(self):
        model = Model("places.City")
        self.assertEqual((model.full_name, model.api_name, model.model_name),
                         ("places.City", "places", "City"))

    def test_splits_at_the_first_dot(self):
        model = Model("a.b.c")
        self.assertEqual((model.api_name, model.model_name), ("a", "b.c"))
        self.assertEqual(Model.from_json("a.b.c").model_name, "b.c")

    def test_json_forms(self):
        self.assertEqual(Model.to_json(Model("places.City")), "places.City")
        value = Model.from_json("places.City")
        self.assertIsInstance(value, Model)
        self.assertEqual(value, Model("places.City"))
        self.assertEqual(hash(value), hash(Model("places.City")))
        self.assertNotEqual(value, Model("places.Town"))

    def test_from_json_errors(self):
        for datum, message in [("nodot", "Invalid Model: nodot"),
                               (".x", "Invalid Model: .x"),
                               ("x.", "Invalid Model: x."),
                               (".", "Invalid Model: ."),
                               ("", "Invalid Model: "),
                               ("x" * 300, "Invalid Model: " + "x" * 200
                                + "..."),
                               (3, "Invalid String: 3"),
                               (None, "Invalid String: None")]:
            with self.subTest(datum=datum):
                self.assertEqual(_ty_message(Model.from_json, datum), message)

    def test_constructor_raises_validation_error(self):
        for text in ["nodot", "", ".x", "x.", "."]:
            with self.subTest(text=text):
                self.assertEqual(_ty_message(Model, text),
                                 "Invalid Model: " + text)
        self.assertEqual(_ty_message(Model, 3), "Invalid Model: 3")

    def test_any_text_after_the_first_dot_is_the_model_name(self):
        for text, model_name in [("a..", "."), ("a.b.", "b."),
                                 ("a. b", " b")]:
            with self.subTest(text=text):
                self.assertEqual(Model(text).model_name, model_name)
                self.assertEqual(Model.from_json(text).model_name, model_name)

    def test_to_json_checks_the_type(self):
        self.assertEqual(_ty_message(Model.to_json, "a.B"),
                         "Invalid Model: 'a.B'")

    def test_unknown_model_spec(self):
        with cosmos.swap({}):
            with self.assertRaises(RuntimeError) as cm:
                Model("ty_nowhere.Thing").model_spec  # noqa: B018
        self.assertEqual(str(cm.exception),
                         "Model does not exist: ty_nowhere.Thing")


class TestLink(unittest.TestCase):
    L = Link(Model("places.City"))

    def test_to_and_from_json(self):
        self.assertEqual(self.L.to_json("3"), "/City/3")
        self.assertEqual(self.L.from_json("/City/3"), "3")
        self.assertEqual(self.L.from_json("http://host/x/City/3"), "3")

    def test_ids_are_not_percent_encoded(self):
        self.assertEqual(self.L.to_json("a b"), "/City/a b")
        self.assertEqual(self.L.from_json("/City/caf\u00e9"), "caf\u00e9")

    def test_strict_hrefs(self):
        for href in ["7", "City/3", "/City/", "/Address/3", "", "/City/3/",
                     "/city/3", "/City"]:
            with self.subTest(href=href):
                self.assertEqual(_ty_message(self.L.from_json, href),
                                 "Invalid url for City link: " + href)

    def test_non_string(self):
        self.assertEqual(_ty_message(self.L.from_json, 3), "Invalid String: 3")

    def test_to_json_checks_the_id(self):
        self.assertEqual(_ty_message(self.L.to_json, 3), "Invalid City id: 3")

    def test_model_given_by_name(self):
        self.assertEqual(Link("places.City").param, Model("places.City"))

    def test_error_path_in_a_struct(self):
        schema = Struct([required("city", self.L)])
        self.assertEqual(_ty_message(schema.from_json, {"city": "/Address/3"}),
                         "Item at ['city'] Invalid url for City link: "
                         "/Address/3")


class TestFieldHelpers(unittest.TestCase):
    def test_helpers(self):
        city = Model("places.City")
        self.assertEqual(required("a", Integer),
                         ("a", {"schema": Integer, "required": True,
                                "doc": None}))
        self.assertEqual(optional("a", String, "Doc."),
                         ("a", {"schema": String, "required": False,
                                "doc": "Doc."}))
        self.assertEqual(required_link("city", city),
                         ("city", {"model": city, "required": True,
                                   "doc": None}))
        self.assertEqual(optional_link("city", city, "Where."),
                         ("city", {"model": city, "required": False,
                                   "doc": "Where."}))


class TestURLParams(unittest.TestCase):
    def test_encoding_examples(self):
        for fields, value, query in [
                ([optional("foo", Boolean), optional("bar", Integer)],
                 {"foo": True, "bar": 3}, "foo=true&bar=3"),
                ([optional("birthday", DateTime)],
                 {"birthday": datetime.datetime(1991, 8, 12)},
                 "birthday=1991-08-12T00%3A00%3A00"),
                ([optional("country", String)], {"country": "3"}, "country=3"),
                ([optional("name", String)], {"name": "a b"}, "name=a+b"),
                ([optional("tags", Array(String))], {"tags": ["a", "b c"]},
                 "tags=%5B%22a%22%2C%22b+c%22%5D"),
                ([optional("bin", Binary)], {"bin": b"abc"}, "bin=%22YWJj%22"),
                ([optional("m", Map(Integer))], {"m": {"x": 1}},
                 "m=%7B%22x%22%3A1%7D"),
                ([optional("f", Float)], {"f": 2.5}, "f=2.5"),
                ([optional("city", Link(Model("places.City")))],
                 {"city": "3"}, "city=%2FCity%2F3"),
                ([optional("model", Model)], {"model": Model("a.B")},
                 "model=a.B"),
                ([optional("a", Integer), optional("b", Integer)], {}, ""),
                ([optional("a", Integer), optional("b", Integer)],
                 {"a": None, "b": 1}, "b=1"),
                ([optional("b", Integer), optional("a", Integer)],
                 {"a": 1, "b": 2}, "b=2&a=1")]:
            with self.subTest(query=query):
                self.assertEqual(URLParams(fields).to_json(value), query)

    def test_decoding(self):
        params = URLParams([optional("tags", Array(String)),
                            optional("name", String), optional("n", Integer),
                            optional("bin", Binary),
                            optional("when", DateTime),
                            optional("city", Link(Model("places.City")))])
        for query, value in [
                ("tags=%5B%22a%22%2C+%22b+c%22%5D", {"tags": ["a", "b c"]}),
                ("tags=%5B%22a%22%2C%22b+c%22%5D", {"tags": ["a", "b c"]}),
                ("name=a+b", {"name": "a b"}),
                ("name=caf%C3%A9", {"name": "caf\u00e9"}),
                ("name=", {"name": ""}),
                ('name="q"', {"name": '"q"'}),
                ("name=3", {"name": "3"}),
                ("n=3&other=x&other=y", {"n": 3}),
                ("bin=%22YWJj%22", {"bin": b"abc"}),
                ("when=2013-10-04T13%3A05%3A25",
                 {"when": datetime.datetime(2013, 10, 4, 13, 5, 25)}),
                ("city=%2FCity%2F3", {"city": "3"}),
                ("", {})]:
            with self.subTest(query=query):
                self.assertEqual(params.from_json(query), value)

    def test_decoding_errors(self):
        params = URLParams([optional("name", String), optional("n", Integer),
                            optional("bin", Binary),
                            optional("flag", Boolean)])
        for query, message in [
                ("name=a&name=b",
                 "Repeating query parameters not allowed: name"),
                ("n=1&n=1", "Repeating query parameters not allowed: n"),
                ("n=x", "Item at ['n'] Invalid JSON: 'x'"),
                ("n=", "Item at ['n'] Invalid JSON: ''"),
                ("n=NaN", "Item at ['n'] Invalid JSON: 'NaN'"),
                ("n=%22x%22", "Item at ['n'] Invalid Integer: 'x'"),
                ("flag=1", "Item at ['flag'] Invalid Boolean: 1"),
                ("bin=YWJj", "Item at ['bin'] Invalid JSON: 'YWJj'")]:
            with self.subTest(query=query):
                self.assertEqual(_ty_message(params.from_json, query), message)

    def test_required_fields(self):
        params = URLParams([required("n", Integer)])
        self.assertEqual(_ty_message(params.from_json, ""),
                         "Missing fields: ['n']")
        self.assertEqual(_ty_message(params.from_json, "m=1"),
                         "Missing fields: ['n']")

    def test_round_trip(self):
        params = URLParams([optional("tags", Array(String)),
                            optional("name", String),
                            optional("when", DateTime),
                            optional("bin", Binary),
                            optional("j", JSON)])
        value = {"tags": ["a&b", "c=d", "e f", "caf\u00e9"], "name": '"q" +',
                 "when": datetime.datetime(2013, 10, 4, 13, 5, 25, 1,
                                           tzinfo=_ty_tz(5, 30)),
                 "bin": b"\xff\x00", "j": Box({"x": [None]})}
        self.assertEqual(params.from_json(params.to_json(value)), value)

    def test_string_based_types(self):
        for schema, expected in [(String, True), (DateTime, True),
                                 (Model, True),
                                 (Link(Model("places.City")), True),
                                 (Binary, False), (Integer, False),
                                 (JSON, False), (Array(String), False)]:
            with self.subTest(schema=schema):
                self.assertIs(is_string_type(schema), expected)


class TestRulesConstraints(unittest.TestCase):
    """Constraints are checked by from_json, the server and the client."""

    def setUp(self):
        self.api = _ru_api()
        self.app = Server(self.api).wsgi_app

    def post(self, body):
        status, headers, payload = _wsgi(
            self.app, "POST", "/actions/check", json.dumps(body),
            headers={"Content-Type": "application/json"})
        return status, json.loads(payload)

    def test_server_refuses_with_the_usual_message(self):
        table = [
            ({"limit": 250}, "Item at ['limit'] Must be at most 100: 250"),
            ({"limit": 0}, "Item at ['limit'] Must be at least 1: 0"),
            ({"ratio": 0}, "Item at ['ratio'] Must be greater than 0: 0.0"),
            ({"ratio": 1}, "Item at ['ratio'] Must be less than 1: 1.0"),
            ({"code": "A"}, "Item at ['code'] Must have at least 2 "
                            "characters: 'A'"),
            ({"code": "ABCD"}, "Item at ['code'] Must have at most 3 "
                               "characters: 'ABCD'"),
            ({"code": "ab"}, "Item at ['code'] Must match the pattern "
                             "'^[A-Z]+$': 'ab'"),
            ({"color": "blue"}, "Item at ['color'] Must be one of "
                                "['red', 'green']: 'blue'"),
            ({"level": 4}, "Item at ['level'] Must be one of [1, 2, 3]: 4"),
            ({"tags": []}, "Item at ['tags'] Must have at least 1 items: []"),
            ({"tags": ["a", "b", "c"]},
             "Item at ['tags'] Must have at most 2 items: ['a', 'b', 'c']"),
            ({"tags": ["a", ""]},
             "Item at ['tags'][1] Must have at least 1 characters: ''"),
            ({"scores": {"a": 1, "b": 2}},
             "Item at ['scores'] Must have at most 1 items: "
             "{'a': 1, 'b': 2}"),
            ({"name": "moscow"},
             "Item at ['name'] Name must be capitalized: 'moscow'"),
        ]
        for body, message in table:
            with self.subTest(body=body):
                self.assertEqual(self.post(body), (400, {"error": message}))
        good = {"limit": 100, "ratio": 0.5, "code": "AB", "color": "red",
                "level": 1.0, "tags": ["a"], "scores": {"a": 1},
                "name": "Moscow"}
        self.assertEqual(self.post(good), (200, 8))

    def test_errors_lists_every_broken_rule(self):
        schema = self.api.spec["actions"]["check"]["accepts"]
        with self.assertRaises(ValidationError) as cm:
            schema.from_json({"limit": 250, "code": "a", "tags": ["", ""]})
        self.assertEqual([(e["pointer"], e["message"])
                          for e in cm.exception.errors], [
            ("/limit", "Must be at most 100: 250"),
            ("/code", "Must have at least 2 characters: 'a'"),
            ("/tags/0", "Must have at least 1 characters: ''"),
            ("/tags/1", "Must have at least 1 characters: ''")])

    def test_client_refuses_before_sending(self):
        _ru_Recording.sent = 0
        client = _ru_Recording(self.app)
        sent = _ru_Recording.sent  # the spec
        with self.assertRaises(ValidationError) as cm:
            client.actions.check(limit=250)
        self.assertEqual(str(cm.exception),
                         "Item at ['limit'] Must be at most 100: 250")
        with self.assertRaises(ValidationError) as cm:
            client.models.Item.get_list(limit=11)
        self.assertEqual(str(cm.exception),
                         "Item at ['limit'] Must be at most 10: 11")
        with self.assertRaises(ValidationError) as cm:
            client.models.Item.create(name="")
        self.assertEqual(str(cm.exception),
                         "Item at ['name'] Must have at least 1 "
                         "characters: ''")
        self.assertEqual(_ru_Recording.sent, sent)
        self.assertEqual(client.actions.check(limit=5, color="green"), 2)
        self.assertEqual(client.models.Item.get_list(limit=10, tags=["a"]),
                         [("1", {"name": "x", "size": 2})])

    def test_query_fields_are_checked_by_the_server(self):
        status, headers, body = _wsgi(self.app, "GET", "/Item",
                                         query="limit=11")
        self.assertEqual((status, json.loads(body)), (400, {
            "error": "Item at ['limit'] Must be at most 10: 11"}))

    def test_pattern_is_a_search_compiled_once(self):
        word = String(pattern="[0-9]")  # unanchored, as in JSON Schema
        self.assertEqual(word.from_json("abc1def"), "abc1def")
        with self.assertRaises(ValidationError):
            word.from_json("abc")
        with mock.patch.object(re, "compile", side_effect=AssertionError):
            with mock.patch.object(re, "search", side_effect=AssertionError):
                self.assertEqual(word.from_json("x9"), "x9")
                with self.assertRaises(ValidationError):
                    word.from_json("x")

    def test_bad_constraints_are_refused_at_definition(self):
        table = [
            (lambda: String(pattern="(a"), "Invalid pattern '(a': "),
            (lambda: String(pattern=3), "pattern must be a string"),
            (lambda: Integer(minimum="1"), "minimum must be a finite number"),
            (lambda: Float(maximum=float("inf")),
             "maximum must be a finite number"),
            (lambda: String(min_length=-1),
             "min_length must be an integer of 0 or more"),
            (lambda: Integer(enum=["a"]), "enum value is not a valid Integer"),
            (lambda: Integer(enum=[]), "enum must list at least one value"),
            (lambda: String(enum="ab"), "enum must be a list of values"),
            (lambda: Integer(min_length=1),
             "Integer takes no constraint 'min_length'"),
            (lambda: Binary(min_length=1), "Binary takes no constraints"),
            (lambda: Array(Integer, minimum=1),
             "Array takes no constraint 'minimum'"),
            (lambda: Integer(message=""),
             "message must be a non-empty string"),
        ]
        for make, message in table:
            with self.subTest(message=message):
                with self.assertRaises(SpecError) as cm:
                    make()
                self.assertIn(message, str(cm.exception))

    def test_constraints_combine_and_dump_checks(self):
        small = Integer(minimum=0)(maximum=9)
        self.assertEqual(repr(small), "Integer(minimum=0, maximum=9)")
        self.assertEqual(small.to_json(9), 9)
        with self.assertRaises(ValidationError):
            small.to_json(10)
        self.assertEqual(Struct([required("n", small)]).to_json({"n": 3}),
                         {"n": 3})
        with self.assertRaises(ValidationError):
            Struct([required("n", small)]).to_json({"n": 30})
        # A kept native value is still checked (no fast path around rules).
        with self.assertRaises(ValidationError):
            Array(small).from_json([1, 20])
        self.assertTrue(is_string_type(String(max_length=3)))
        self.assertFalse(is_string_type(Integer(maximum=3)))


class TestRulesSpec(unittest.TestCase):
    """Constraints travel in /spec.json; other specs are unchanged."""

    def test_unconstrained_specs_are_unchanged_byte_for_byte(self):
        for name, (digest, length) in _RU_UNCONSTRAINED_SPECS.items():
            with self.subTest(example=name):
                module = _oa_example(name)
                api = [v for v in vars(module).values()
                       if isinstance(v, API)][0]
                status, headers, body = _wsgi(Server(api).wsgi_app, "GET",
                                                 "/spec.json")
                self.assertEqual(status, 200)
                self.assertEqual((hashlib.sha256(body).hexdigest(),
                                  len(body)), (digest, length))

    def test_schema_json_form(self):
        table = [
            (Integer(minimum=1, maximum=100),
             {"type": "Integer", "minimum": 1, "maximum": 100}),
            (Float(exclusive_minimum=0.5),
             {"type": "Float", "exclusiveMinimum": 0.5}),
            (String(pattern="^a", max_length=5, message="No"),
             {"type": "String", "maxLength": 5, "pattern": "^a",
              "message": "No"}),
            (String(enum=["a", "b"]), {"type": "String", "enum": ["a", "b"]}),
            (Array(Integer(enum=[1]), min_items=1), {
                "type": "Array", "param": {"type": "Integer", "enum": [1]},
                "minItems": 1}),
            (Map(String, max_items=2),
             {"type": "Map", "param": {"type": "String"}, "maxItems": 2}),
            (Boolean(enum=[True]), {"type": "Boolean", "enum": [True]}),
            (Array(Integer), {"type": "Array", "param": {"type": "Integer"}}),
        ]
        for schema, datum in table:
            with self.subTest(datum=datum):
                self.assertEqual(Schema.to_json(schema), datum)
                again = Schema.from_json(json.loads(json.dumps(datum)))
                self.assertEqual(Schema.to_json(again), datum)

    def test_bad_constraints_in_a_spec_are_validation_errors(self):
        table = [
            ({"type": "Integer", "minimum": "1"},
             "Item at ['minimum'] Invalid minimum: '1'"),
            ({"type": "String", "pattern": "("}, "Invalid pattern '(': "),
            ({"type": "Integer", "pattern": "a"}, "Unexpected fields"),
            ({"type": "Boolean", "minimum": 1}, "Unexpected fields"),
            ({"type": "Array", "param": {"type": "Integer"}, "minItems": -1},
             "min_items must be an integer of 0 or more"),
            ({"type": "String", "enum": [1]},
             "enum value is not a valid String"),
        ]
        for datum, message in table:
            with self.subTest(datum=datum):
                with self.assertRaises(ValidationError) as cm:
                    Schema.from_json(datum)
                self.assertIn(message, str(cm.exception))

    def test_client_built_from_the_spec_enforces_them(self):
        api = _ru_api()
        spec = json.loads(json.dumps(APISpec.to_json(api.spec)))
        with cosmos.swap({}):
            client = APIClient.from_spec(spec, "http://127.0.0.1:9")
        with self.assertRaises(ValidationError) as cm:
            client.actions.check(name="moscow")  # nothing listens on :9
        self.assertEqual(str(cm.exception),
                         "Item at ['name'] Name must be capitalized: 'moscow'")
        with self.assertRaises(ValidationError) as cm:
            client.models.Item.create(size=1)
        self.assertEqual(str(cm.exception), "Missing fields: ['name']")
        client.close()


class TestRulesHints(unittest.TestCase):
    """Type hints as a shorthand; stdlib only, runs on Python 3.9 too."""

    def tearDown(self):
        sys.modules.pop("_ru_hinted", None)

    def test_hinted_and_explicit_specs_are_equal(self):
        module = _ru_module('''
            import dataclasses, datetime
            from typing import Annotated, Dict, List, Optional, TypedDict
            from cosmic import *

            hinted, explicit = API("hinted"), API("explicit")

            @hinted.action
            def divide(numerator: int, denominator: int) -> int:
                """Divide."""
                return numerator // denominator

            @explicit.action(accepts=Struct([
                required("numerator", Integer),
                required("denominator", Integer)]), returns=Integer)
            def divide(numerator, denominator):
                """Divide."""
                return numerator // denominator

            @hinted.action()
            def shout(word: str) -> str:
                return word.upper()

            @explicit.action(accepts=String, returns=String)
            def shout(word):
                return word.upper()

            class Point(TypedDict, total=False):
                x: float
                y: Optional[float]

            @hinted.action
            def every(a: bool, b: bytes, c: datetime.datetime,
                      d: List[int], e: list[str], f: Dict[str, float],
                      g: dict[str, List[bool]], p: Point,
                      h: Annotated[int, {"minimum": 1, "maximum": 9}],
                      i: Annotated[str, String(max_length=3)],
                      j: Optional[int] = None, k: JSON = None) -> None:
                pass

            @explicit.action(accepts=Struct([
                required("a", Boolean), required("b", Binary),
                required("c", DateTime), required("d", Array(Integer)),
                required("e", Array(String)), required("f", Map(Float)),
                required("g", Map(Array(Boolean))),
                required("p", Struct([optional("x", Float),
                                      optional("y", Float)])),
                required("h", Integer(minimum=1, maximum=9)),
                required("i", String(max_length=3)),
                optional("j", Integer), optional("k", JSON)]))
            def every(a, b, c, d, e, f, g, p, h, i, j=None, k=None):
                pass

            @hinted.model
            class City(BaseModel):
                methods = ["get_by_id"]
                name: str
                population: Optional[int]

            @explicit.model
            class City(BaseModel):
                methods = ["get_by_id"]
                properties = [required("name", String),
                              optional("population", Integer)]
        ''')
        self.assertEqual(_ru_spec(module.hinted), _ru_spec(module.explicit))

    def test_future_annotations_and_dataclasses(self):
        module = _ru_module('''
            from __future__ import annotations
            import dataclasses
            from typing import List, Optional
            from cosmic import *

            api = API("dc")

            @dataclasses.dataclass
            class Point:
                x: int
                y: int = 0
                label: Optional[str] = None

            @api.action
            def shift(p: Point, by: int) -> Point:
                assert isinstance(p, Point)
                return Point(p.x + by, p.y + by, p.label)

            @api.action
            def total(points: List[Point]) -> int:
                return sum(p.x for p in points)
        ''')
        app = Server(module.api).wsgi_app
        status, headers, body = _wsgi(
            app, "POST", "/actions/shift",
            json.dumps({"p": {"x": 1, "label": "a"}, "by": 2}),
            headers={"Content-Type": "application/json"})
        self.assertEqual((status, json.loads(body)),
                         (200, {"x": 3, "y": 2, "label": "a"}))
        status, headers, body = _wsgi(
            app, "POST", "/actions/total", json.dumps([{"x": 1}, {"x": 5}]),
            headers={"Content-Type": "application/json"})
        self.assertEqual((status, body), (200, b"6"))
        self.assertEqual(Schema.to_json(
            module.api.spec["actions"]["shift"]["accepts"]),
            Schema.to_json(Struct([
                required("p", Struct([required("x", Integer),
                                      optional("y", Integer),
                                      optional("label", String)])),
                required("by", Integer)])))
        status, headers, body = _wsgi(
            app, "POST", "/actions/shift", json.dumps({"p": {}, "by": 1}),
            headers={"Content-Type": "application/json"})
        self.assertEqual(json.loads(body),
                         {"error": "Item at ['p'] Missing fields: ['x']"})

    def test_pipe_none_in_a_string_annotation(self):
        source = '''
            from __future__ import annotations
            from cosmic import *

            api = API("pipe")

            @api.model
            class City(BaseModel):
                name: str
                population: int | None
        '''
        if sys.version_info >= (3, 10):
            module = _ru_module(source)
            self.assertFalse(module.api.spec["models"]["City"]["properties"][
                "population"]["required"])
        else:
            with self.assertRaises(SpecError) as cm:
                _ru_module(source)
            self.assertIn("model City of API pipe: cannot read the type hint "
                          "'int | None' of 'population'", str(cm.exception))
            self.assertIn("write Optional[X]", str(cm.exception))

    def test_unmappable_hints_name_function_parameter_and_hint(self):
        table = [
            ("def f(a: int, b: set) -> int: pass",
             "action f of API bad: cannot map the type hint 'set' of 'b'"),
            ("def g(a: int, b) -> int: pass",
             "action g of API bad: parameter 'b' has no type hint"),
            ("def h(a: Dict[int, str]) -> int: pass",
             "action h of API bad: cannot map the type hint "
             "'typing.Dict[int, str]' of 'a'"),
            ("def i(a: int) -> Union[int, str]: pass",
             "of 'return'"),
            ("def j(a: 'Nope') -> int: pass",
             "action j of API bad: cannot read the type hint 'Nope' of 'a' "
             "(NameError"),
        ]
        for source, message in table:
            with self.subTest(source=source):
                with self.assertRaises(SpecError) as cm:
                    _ru_module('''
                        from typing import Dict, Union
                        from cosmic import *
                        api = API("bad")
                        @api.action
                        %s
                    ''' % source)
                self.assertIn(message, str(cm.exception))

    def test_hints_are_read_once(self):
        module = _ru_module('''
            from cosmic import *
            api = API("once")

            @api.action
            def add(a: int, b: int) -> int:
                return a + b
        ''')
        app = Server(module.api).wsgi_app
        with mock.patch.object(typing, "get_type_hints",
                               side_effect=AssertionError("per request")):
            status, headers, body = _wsgi(
                app, "POST", "/actions/add", json.dumps({"a": 1, "b": 2}),
                headers={"Content-Type": "application/json"})
        self.assertEqual((status, body), (200, b"3"))

    def test_model_annotations_that_are_not_properties(self):
        module = _ru_module('''
            from typing import ClassVar, Optional
            from cosmic import *
            api = API("notes")

            @api.model
            class Note(BaseModel):
                methods: ClassVar[list] = ["get_by_id"]
                _cache: dict = {}
                count: ClassVar[int] = 0
                text: str
                stars: Optional[int]

            @api.model
            class Plain(BaseModel):
                properties = [required("a", Integer)]
                note: str = "an attribute, not a field"
        ''')
        models = module.api.spec["models"]
        self.assertEqual(list(models["Note"]["properties"]),
                         ["text", "stars"])
        self.assertTrue(models["Note"]["methods"]["get_by_id"])
        self.assertEqual(list(models["Plain"]["properties"]), ["a"])

    def test_explicit_forms_and_unannotated_functions_unchanged(self):
        module = _ru_module('''
            from cosmic import *
            api = API("plain")

            @api.action()
            def ping():
                return None

            @api.action(accepts=Integer)
            def echo(x: str) -> str:  # explicit accepts wins over hints
                return x
        ''')
        actions = module.api.spec["actions"]
        self.assertIsNone(actions["ping"]["accepts"])
        self.assertIs(actions["echo"]["accepts"], Integer)
        self.assertIsNone(actions["echo"]["returns"])


class TestRulesCustomTypes(unittest.TestCase):
    """Teleport 0.2's custom types, its own test cases unchanged."""

    @classmethod
    def setUpClass(cls):
        from cosmic.legacy_teleport import (BasicWrapper, String,
                                            ValidationError, Array)

        class Suit(BasicWrapper):
            schema = String

            @staticmethod
            def assemble(datum):
                if datum not in ["hearts", "spades", "clubs", "diamonds"]:
                    raise ValidationError("Invalid Suit", datum)
                return datum

        class SuitArray(BasicWrapper):
            schema = Array(Suit)

        def getter(t):
            if t == "Suit":
                return Suit
            raise UnknownTypeValidationError(t)

        cls.Suit, cls.SuitArray = Suit, SuitArray
        cls.getter = staticmethod(getter)

    def test_teleport_suits(self):
        suits = ["hearts", "clubs", "clubs"]
        self.assertEqual(self.SuitArray.from_json(suits), suits)
        with self.assertRaisesRegex(ValidationError, "Invalid Suit"):
            self.SuitArray.from_json(["hearts", "clubs", "clubz"])
        self.assertEqual(self.Suit.to_json("hearts"), "hearts")

    def test_teleport_type_map(self):
        from cosmic.types import standard_types
        suit_types = standard_types(self.getter, include=["Array", "Schema"])
        schema, array = suit_types["Schema"], suit_types["Array"]
        self.assertEqual(schema.from_json({"type": "Suit"}), self.Suit)
        self.assertEqual(schema.from_json(
            {"type": "Array", "param": {"type": "Suit"}}).__class__, array)
        with self.assertRaises(UnknownTypeValidationError):
            schema.from_json({"type": "Integer"})
        with self.assertRaises(UnknownTypeValidationError):
            schema.from_json({"type": "Array", "param": {"type": "Integer"}})
        every = standard_types()
        self.assertIs(every["Integer"], Integer)
        self.assertIs(every["Struct"], Struct)
        self.assertEqual(every["Schema"].from_json({"type": "Integer"}),
                         Integer)
        with self.assertRaises(UnknownTypeValidationError):
            every["Schema"].from_json({"type": "Suit"})

    def test_import_paths(self):
        import cosmic.legacy_teleport
        import cosmic.types
        for module in (cosmic.types, cosmic.legacy_teleport):
            for name in ("BasicWrapper", "ParametrizedWrapper",
                         "BasicPrimitive", "ParametrizedPrimitive",
                         "standard_types"):
                with self.subTest(module=module.__name__, name=name):
                    self.assertIs(getattr(module, name), getattr(cosmic, name))
                    self.assertIn(name, module.__all__)

    def test_in_an_api_spec_json_schema_and_clients(self):
        from cosmic.legacy_teleport import (BasicPrimitive,
                                            ParametrizedWrapper)

        class Upper(BasicPrimitive):
            type_name = "text.Upper"

            @staticmethod
            def from_json(datum):
                if type(datum) is not str or datum != datum.upper():
                    raise ValidationError("Invalid Upper", datum)
                return datum

            @staticmethod
            def to_json(datum):
                return datum

            @staticmethod
            def json_schema():
                return {"type": "string", "pattern": "^[^a-z]*$"}

        class Pair(ParametrizedWrapper):
            param_schema = Schema

            def __init__(self, param):
                self.param = param
                self.schema = Array(param, min_items=2, max_items=2)

            def assemble(self, datum):
                return tuple(datum)

            def disassemble(self, datum):
                return list(datum)

        with cosmos.swap({}):
            api = API("cards")

            @api.action(accepts=Struct([required("hand", self.SuitArray),
                                        required("pair", Pair(self.Suit))]),
                        returns=Upper)
            def deal(hand, pair):
                assert isinstance(pair, tuple)
                return (hand[0] + pair[1]).upper()
        spec = APISpec.to_json(api.spec)
        accepts = spec["actions"]["map"]["deal"]["accepts"]["param"]["map"]
        self.assertEqual(accepts["hand"]["schema"], {"type": "SuitArray"})
        self.assertEqual(accepts["pair"]["schema"],
                         {"type": "Pair", "param": {"type": "Suit"}})
        self.assertEqual(spec["actions"]["map"]["deal"]["returns"],
                         {"type": "text.Upper"})
        schema = api.spec["actions"]["deal"]["accepts"].json_schema()
        self.assertEqual(schema["properties"]["hand"],
                         {"type": "array", "items": {"type": "string"}})
        self.assertEqual(schema["properties"]["pair"]["maxItems"], 2)
        app = Server(api).wsgi_app
        status, headers, body = _wsgi(
            app, "POST", "/actions/deal",
            json.dumps({"hand": ["clubs"], "pair": ["hearts", "spades"]}),
            headers={"Content-Type": "application/json"})
        self.assertEqual((status, json.loads(body)), (200, "CLUBSSPADES"))
        status, headers, body = _wsgi(
            app, "POST", "/actions/deal",
            json.dumps({"hand": ["clubz"], "pair": ["hearts", "spades"]}),
            headers={"Content-Type": "application/json"})
        self.assertEqual(json.loads(body),
                         {"error": "Item at ['hand'][0] Invalid Suit: 'clubz'"})
        # A client refuses a spec naming types it does not know...
        with self.assertRaises(ValidationError) as cm:
            WsgiAPIClient(app)
        self.assertIn("Unknown type: 'SuitArray'", str(cm.exception))
        # ... and uses them when its type getter knows them.
        known = {"Suit": self.Suit, "SuitArray": self.SuitArray,
                 "Pair": Pair, "text.Upper": Upper}

        class CardsClient(WsgiAPIClient):
            type_getter = staticmethod(known.__getitem__)

        with cosmos.swap({}):
            client = CardsClient(app)
        self.assertEqual(client.actions.deal(hand=["spades"],
                                             pair=("clubs", "hearts")),
                         "SPADESHEARTS")
        with self.assertRaises(ValidationError) as cm:
            client.actions.deal(hand=["joker"], pair=("clubs", "hearts"))
        self.assertEqual(str(cm.exception),
                         "Item at ['hand'][0] Invalid Suit: 'joker'")
        with cosmos.swap({}):
            http_client = APIClient.from_spec(spec, "http://127.0.0.1:9",
                                              type_getter=known.get)
        returns = http_client.spec["actions"]["deal"]["returns"]
        self.assertEqual((repr(returns), returns.from_json("AB")),
                         ("text.Upper", "AB"))
        http_client.close()

    def test_mistakes_are_clear(self):
        from cosmic.legacy_teleport import BasicWrapper

        class Empty(BasicWrapper):
            pass

        with self.assertRaises(SpecError) as cm:
            Array(Empty)
        self.assertIn("Custom type Empty wraps no schema", str(cm.exception))
        schema = cosmic.standard_types(lambda name: object())["Schema"]
        with self.assertRaises(ValidationError) as cm:
            schema.from_json({"type": "Odd"})
        self.assertIn("Type Odd: Not a cosmic type", str(cm.exception))

    def test_a_custom_name_may_not_shadow_a_built_in(self):
        from cosmic.legacy_teleport import BasicWrapper

        class Integer_(BasicWrapper):
            type_name = "Integer"
            schema = String

        with self.assertRaises(SpecError):
            Array(Integer_)


class TestRulesStdlibTypes(unittest.TestCase):
    """UUID and Decimal: JSON strings, native uuid.UUID and Decimal."""

    def test_round_trip_errors_and_json_schema(self):
        jsonschema = _jsonschema
        cases = [
            (UUID, [("f81d4fae-7dec-11d0-a765-00a0c91e6bf6", True),
                    ("F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6", True),
                    ("f81d4fae7dec11d0a76500a0c91e6bf6", False),
                    ("{f81d4fae-7dec-11d0-a765-00a0c91e6bf6}", False),
                    ("f81d4fae-7dec-11d0-a765-00a0c91e6bf6\n", False),
                    (1, False)]),
            (Decimal, [("12.50", True), ("-0.001", True), ("1E+2", True),
                       ("0", True), ("1.", False), ("01", False),
                       ("NaN", False), ("Infinity", False), (12, False),
                       (" 1", False), ("1" * 1001, False)]),
        ]
        for schema, data in cases:
            validator = None
            if jsonschema is not None:
                validator = jsonschema.Draft202012Validator(
                    schema.json_schema())
            for datum, ok in data:
                with self.subTest(schema=repr(schema), datum=datum):
                    if ok:
                        value = schema.from_json(datum)
                        self.assertEqual(schema.to_json(value).lower(),
                                         datum.lower())
                    else:
                        with self.assertRaises(ValidationError):
                            schema.from_json(datum)
                    if validator is not None:
                        self.assertEqual(validator.is_valid(datum), ok)
        self.assertEqual(Decimal.from_json("12.50"), decimal.Decimal("12.50"))
        self.assertIsInstance(UUID.from_json(
            "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"), uuid.UUID)
        with self.assertRaises(ValidationError):
            Decimal.to_json(decimal.Decimal("NaN"))
        with self.assertRaises(ValidationError):
            UUID.to_json("f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
        self.assertEqual(Schema.from_json({"type": "UUID"}), UUID)
        self.assertTrue(is_string_type(Decimal))

    def test_in_query_strings_and_hints(self):
        with cosmos.swap({}):
            api = API("money")

            @api.action
            def pay(amount: decimal.Decimal, to: uuid.UUID) -> str:
                return "%s to %s" % (amount + 1, to)

        app = Server(api).wsgi_app
        status, headers, body = _wsgi(
            app, "POST", "/actions/pay", json.dumps({
                "amount": "0.10", "to": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"}),
            headers={"Content-Type": "application/json"})
        self.assertEqual(json.loads(body),
                         "1.10 to f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
        query = URLParams([optional("amount", Decimal)])
        self.assertEqual(query.to_json({"amount": decimal.Decimal("2.5")}),
                         "amount=2.5")


class TestDifferential(unittest.TestCase):
    def test_cosmic_agrees_with_jsonschema(self):
        _need("jsonschema", _jsonschema)
        rng = random.Random(_TY_SEED)
        checked = {}
        problems = []
        accepted = 0
        for _ in range(_TY_CASES):
            schema, value = _ty_case(rng)
            problem = _ty_compare(schema, value, checked)
            if problem:
                problems.append(problem)
            accepted += _ty_verdict(schema, value)
        self.assertEqual(problems[:10], [])
        # Both outcomes are well represented.
        self.assertGreater(accepted, _TY_CASES * 0.3)
        self.assertGreater(_TY_CASES - accepted, _TY_CASES * 0.3)
        self.assertGreater(len(checked), 100)

    def test_exported_json_schemas_are_valid(self):
        _need("jsonschema", _jsonschema)
        for schema in [Integer, Float, Boolean, String, Binary, DateTime, JSON,
                       Schema, Model, APISpec, _TY_CITY, Array(Binary),
                       Map(DateTime), OrderedMap(Struct([])),
                       Struct([required("a", Integer, "The a."),
                               optional("b/c", Array(JSON))]),
                       URLParams([required("a", Integer)])]:
            with self.subTest(schema=schema):
                self.assertIsNone(
                    _jsonschema.Draft202012Validator.check_schema(
                        schema.json_schema()))

    def test_trailing_newline_is_refused_by_both(self):
        # The exported patterns end with (?![\s\S]), not "$", which Python's
        # re (used by jsonschema) would let match before a final newline.
        _need("jsonschema", _jsonschema)
        for schema, text in [(Binary, "YWJj\n"),
                             (DateTime, "2013-10-04T13:05:25\n")]:
            with self.subTest(text=text):
                validator = _jsonschema.Draft202012Validator(
                    schema.json_schema(), format_checker=None)
                self.assertEqual((_ty_verdict(schema, text),
                                  validator.is_valid(text),
                                  validator.is_valid(text[:-1])),
                                 (False, False, True))

    def test_hypothesis_variant(self):
        _need("jsonschema", _jsonschema)
        _need("hypothesis", _hypothesis)
        st = _hypothesis_st
        text = st.text(max_size=8)
        leaves = (st.none() | st.booleans()
                  | st.integers(-(10 ** 20), 10 ** 20)
                  | st.floats(allow_nan=False, allow_infinity=False) | text)
        json_values = st.recursive(
            leaves, lambda inner: (st.lists(inner, max_size=3)
                                   | st.dictionaries(text, inner, max_size=3)),
            max_leaves=8)
        checked = {}

        @_hypothesis.settings(max_examples=200, deadline=None,
                                 database=None, derandomize=True)
        @_hypothesis.given(st.randoms(use_true_random=False),
                              st.sampled_from(("valid", "mutated", "any")),
                              json_values)
        def check(rng, mode, arbitrary):
            schema = _ty_random_schema(rng)
            if mode == "any":
                value = arbitrary
            else:
                value = _ty_valid_value(rng, schema)
                if mode == "mutated":
                    value = _ty_mutate(rng, schema, value)
                value = json.loads(json.dumps(value))
            self.assertIsNone(_ty_compare(schema, value, checked))

        check()


# -- Tools --------------------------------------------------------------------
# cosmic.tools.


class TestTools(unittest.TestCase):
    def test_string_to_json(self):
        self.assertIsNone(string_to_json(""))
        self.assertEqual(string_to_json("[1, null]"), Box([1, None]))
        self.assertEqual(string_to_json("null"), Box(None))
        for text in ["NaN", "1e400", "[", "{'a': 1}", "[" * 100000]:
            with self.subTest(text=text[:10]):
                self.assertEqual(_ty_message(string_to_json, text),
                                 "Invalid JSON")

    def test_serialize_and_deserialize(self):
        self.assertEqual(serialize_json(Integer, 2.0), Box(2))
        self.assertIsNone(serialize_json(None, None))
        self.assertEqual(deserialize_json(Integer, Box(1.0)), 1)
        self.assertIsNone(deserialize_json(None, None))
        for func, args, message in [
                (serialize_json, (Integer, None), "Expected data, found None"),
                (serialize_json, (None, 1), "Expected None, found data"),
                (deserialize_json, (Integer, None), "Expected Box, found None"),
                (deserialize_json, (None, Box(1)), "Expected None, found Box")]:
            with self.subTest(message=message):
                self.assertEqual(_ty_message(func, *args), message)

    def test_args_to_datum(self):
        self.assertEqual(args_to_datum(1), 1)
        self.assertEqual(args_to_datum(a=1, b=2), {"a": 1, "b": 2})
        self.assertIsNone(args_to_datum())
        for args, kwargs in [((1, 2), {}), ((1,), {"a": 2})]:
            with self.subTest(args=args, kwargs=kwargs):
                with self.assertRaises(SpecError) as cm:
                    args_to_datum(*args, **kwargs)
                self.assertEqual(str(cm.exception),
                                 "Action must be called either with one "
                                 "argument or with one or more keyword "
                                 "arguments")

    def test_get_args(self):
        def func(a, b, c=1, *, d, e=2):
            pass
        self.assertEqual(get_args(func), (("a", "b", "d"), ("c", "e")))
        for splat in [lambda *a: 0, lambda **k: 0]:
            with self.assertRaises(SpecError) as cm:
                get_args(splat)
            self.assertEqual(str(cm.exception),
                             "Cannot define action with splats (* or **)")

    def test_validate_underscore_identifier(self):
        for name in ["a", "a_b", "A1", "", "1a"]:
            with self.subTest(name=name):
                self.assertIsNone(validate_underscore_identifier(name))
        for name, message in [
                ("a-b", "Identifier must consist of [a-zA-Z0-9_] characters "
                        "only: a-b"),
                ("caf\u00e9", "Identifier must consist of [a-zA-Z0-9_] "
                              "characters only: caf\u00e9"),
                ("_a", "Identifier cannot start or end with an underscore: "
                       "_a"),
                ("a_", "Identifier cannot start or end with an underscore: "
                       "a_"),
                ("a__b", "Identifier cannot have consecutive underscores: "
                         "a__b")]:
            with self.subTest(name=name):
                with self.assertRaises(SpecError) as cm:
                    validate_underscore_identifier(name)
                self.assertEqual(str(cm.exception), message)

    def test_assert_is_compatible(self):
        struct = Struct([required("a", Integer), optional("b", Integer)])
        self.assertIsNone(assert_is_compatible(Integer, ("a",), ()))
        self.assertIsNone(assert_is_compatible(struct, ("a",), ("b",)))
        for schema, req, opt, message in [
                (Integer, (), (), "Function needs to accept arguments"),
                (Integer, ("a", "b"), (),
                 "Function accepts multiple arguments, so its accepts "
                 "schema is expected to be a Struct"),
                (struct, ("a", "b"), (),
                 "Action argument 'b' must have a corresponding required "
                 "field in the accepts schema"),
                (Struct([required("a", Integer), optional("c", Integer)]),
                 ("a",), ("b",),
                 "The 'c' field must have a corresponding function argument")]:
            with self.subTest(message=message):
                with self.assertRaises(SpecError) as cm:
                    assert_is_compatible(schema, req, opt)
                self.assertEqual(str(cm.exception), message)


# -- API and models -----------------------------------------------------------
# Declaring an API: actions, models, the spec, return values,
# authentication schemes and requirements.


class TestAPI(unittest.TestCase):
    def setUp(self):
        _sv_isolate(self)

    def test_trivia_spec(self):
        trivia = API("trivia", homepage="")
        expected = {"name": "trivia", "homepage": "",
                    "actions": {"map": {}, "order": []},
                    "models": {"map": {}, "order": []}}
        self.assertEqual(APISpec.to_json(trivia.spec), expected)
        status, headers, body = _wsgi(Server(trivia).wsgi_app, "GET",
                                         "/spec.json")
        self.assertEqual((status, headers["content-type"], body),
                         (200, "application/json",
                          json.dumps(expected).encode()))

    def test_homepage_none_is_left_out(self):
        api = API("bare")
        self.assertEqual(APISpec.to_json(api.spec),
                         {"name": "bare", "actions": {"map": {}, "order": []},
                          "models": {"map": {}, "order": []}})

    def test_shop_spec_json_byte_for_byte(self):
        shop, _ = _sv_shop()
        expected = json.dumps(json.loads(_SV_SHOP_SPEC)).encode()
        status, headers, body = _wsgi(Server(shop).wsgi_app, "GET",
                                         "/spec.json")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(body, expected)
        self.assertEqual(headers["content-length"], str(len(expected)))

    def test_spec_round_trips_through_apispec(self):
        shop, _ = _sv_shop()
        expected = json.loads(_SV_SHOP_SPEC)
        self.assertEqual(APISpec.to_json(APISpec.from_json(expected)),
                         expected)

    def test_namespaces_hold_exactly_the_registered_names(self):
        shop, _ = _sv_shop()
        self.assertEqual(set(shop.actions.__dict__), {"quote", "ping"})
        self.assertEqual(set(shop.models.__dict__), {"Category", "Item"})
        self.assertEqual(list(shop.spec["actions"]), ["quote", "ping"])
        self.assertEqual(list(shop.spec["models"]), ["Category", "Item"])

    def test_model_namespace_exposes_every_method(self):
        shop, _ = _sv_shop()
        names = {"get_by_id", "get_list", "create", "update", "delete",
                 "validate_patch"}
        self.assertTrue(names <= set(dir(shop.models.Category)))
        with self.assertRaises(NotImplementedError):
            shop.models.Category.delete("1")

    def test_registration_adds_to_cosmos(self):
        api = API("registered")
        self.assertIs(cosmos["registered"], api)

    def test_two_apis_with_one_name_coexist_last_wins(self):
        first = API("dup")
        second = API("dup")
        self.assertIs(cosmos["dup"], second)

        @first.action(returns=String)
        def which():
            return "first"

        def which_two():
            return "second"
        which_two.__name__ = "which"
        second.action(returns=String)(which_two)

        for api, answer in ((first, b'"first"'), (second, b'"second"')):
            with self.subTest(api=api):
                status, _, body = _wsgi(Server(api).wsgi_app, "POST",
                                           "/actions/which")
                self.assertEqual((status, body), (200, answer))

    def test_same_named_apis_keep_their_own_models(self):
        first = API("twin")

        @first.model
        class Thing(BaseModel):
            methods = ["create"]
            properties = [optional("a", String)]

            @classmethod
            def create(cls, **patch):
                return "1", patch

        second = API("twin")

        @second.model
        class Thing(BaseModel):  # noqa: F811
            methods = ["create"]
            properties = [optional("a", String), optional("b", Integer)]

            @classmethod
            def validate_patch(cls, patch):
                raise ValidationError("second refuses")

        self.assertIs(cosmos["twin"], second)
        status, _, body = _wsgi_json(Server(first).wsgi_app, "POST", "/Thing",
                                   {"a": "x"})
        self.assertEqual((status, body),
                         (201, b'{"_links": {"self": {"href": "/Thing/1"}}, '
                               b'"a": "x"}'))
        status, _, body = _wsgi_json(Server(first).wsgi_app, "POST", "/Thing",
                                   {"b": 1})
        self.assertEqual((status, body),
                         (400, _sv_err("Unexpected fields: ['b']")))
        status, _, body = _wsgi_json(Server(second).wsgi_app, "POST", "/Thing",
                                   {"a": "x"})
        self.assertEqual((status, body), (400, _sv_err("second refuses")))


class TestActions(unittest.TestCase):
    def setUp(self):
        _sv_isolate(self)

    def test_identifier_errors(self):
        table = [
            ("a-b", "Identifier must consist of [a-zA-Z0-9_] characters "
                    "only: a-b"),
            ("caf\u00e9", "Identifier must consist of [a-zA-Z0-9_] "
                          "characters only: caf\u00e9"),
            ("_a", "Identifier cannot start or end with an underscore: _a"),
            ("a_", "Identifier cannot start or end with an underscore: a_"),
            ("a__b", "Identifier cannot have consecutive underscores: a__b"),
        ]
        for name, message in table:
            with self.subTest(name=name):
                with self.assertRaises(SpecError) as cm:
                    validate_underscore_identifier(name)
                self.assertEqual(str(cm.exception), message)
                api = API("ids")

                def func():
                    pass
                func.__name__ = name
                with self.assertRaises(SpecError) as cm:
                    api.action()(func)
                self.assertEqual(str(cm.exception).split("): ", 1)[1],
                                 message)
                self.assertEqual(dict(api.spec["actions"]), {})
                self.assertEqual(api.actions.__dict__, {})

    def test_identifiers_that_pass(self):
        for name in ("", "1a", "a_b", "A1_b2", "x"):
            with self.subTest(name=name):
                self.assertIsNone(validate_underscore_identifier(name))

    def test_get_args(self):
        def plain(a, b, c=1):
            pass

        def kwonly(a, *, b, c=2):
            pass

        def nothing():
            pass
        table = [(plain, (("a", "b"), ("c",))),
                 (kwonly, (("a", "b"), ("c",))),
                 (nothing, ((), ()))]
        for func, expected in table:
            with self.subTest(func=func.__name__):
                self.assertEqual(get_args(func), expected)

    def test_splats_refused(self):
        def star(*args):
            pass

        def stars(**kwargs):
            pass

        def mixed(a, *rest):
            pass
        for func in (star, stars, mixed):
            with self.subTest(func=func.__name__):
                with self.assertRaises(SpecError) as cm:
                    get_args(func)
                self.assertEqual(str(cm.exception),
                                 "Cannot define action with splats (* or **)")
                api = API("splat")
                with self.assertRaises(SpecError) as cm:
                    api.action()(func)
                self.assertEqual(str(cm.exception).split("): ", 1)[1],
                                 "Cannot define action with splats (* or **)")
                self.assertEqual(api.actions.__dict__, {})

    def test_assert_is_compatible(self):
        two = Struct([required("a", Integer), optional("b", Integer)])
        table = [
            (Integer, (), (), "Function needs to accept arguments"),
            (Integer, ("a", "b"), (),
             "Function accepts multiple arguments, so its accepts schema is "
             "expected to be a Struct"),
            (two, ("a", "b"), (),
             "Action argument 'b' must have a corresponding required field "
             "in the accepts schema"),
            (Struct([required("a", Integer)]), ("a",), ("c",), None),
            (Struct([required("a", Integer), required("c", Integer)]),
             ("a", "b"), (),
             "Action argument 'b' must have a corresponding required field "
             "in the accepts schema"),
            (Struct([required("a", Integer), optional("c", Integer)]),
             ("a",), ("b",),
             "The 'c' field must have a corresponding function argument"),
        ]
        for schema, req, opt, message in table:
            with self.subTest(schema=schema, req=req, opt=opt):
                if message is None:
                    self.assertIsNone(assert_is_compatible(schema, req, opt))
                    continue
                with self.assertRaises(SpecError) as cm:
                    assert_is_compatible(schema, req, opt)
                self.assertEqual(str(cm.exception), message)

    def test_compatible_shapes(self):
        table = [(Integer, ("x",), ()), (Integer, (), ("x",)),
                 (Struct([required("a", Integer)]), ("whole",), ()),
                 (Struct([required("a", Integer), optional("b", Integer)]),
                  ("a",), ("b",)),
                 (Struct([required("a", Integer), required("b", Integer)]),
                  (), ("a", "b"))]
        for schema, req, opt in table:
            with self.subTest(schema=schema, req=req, opt=opt):
                self.assertIsNone(assert_is_compatible(schema, req, opt))

    def test_decorator_checks_compatibility(self):
        api = API("compat")
        with self.assertRaises(SpecError) as cm:
            @api.action(accepts=Integer)
            def none():
                pass
        self.assertEqual(str(cm.exception).split("): ", 1)[1],
                         "Function needs to accept arguments")
        self.assertEqual(api.actions.__dict__, {})

    def test_docstring_becomes_doc(self):
        api = API("docs")

        @api.action(returns=Integer)
        def answer():
            """The answer.

            Detail.
                Indented detail.
            """
            return 42

        @api.action()
        def bare():
            pass
        self.assertEqual(api.spec["actions"]["answer"]["doc"],
                         "The answer.\n\nDetail.\n    Indented detail.")
        self.assertEqual(APISpec.to_json(api.spec)["actions"]["map"],
                         {"answer": {"returns": {"type": "Integer"},
                                     "doc": "The answer.\n\nDetail.\n    "
                                            "Indented detail."},
                          "bare": {}})

    def test_local_calls_are_plain_calls(self):
        mathy = _sv_mathy()
        self.assertEqual(mathy.actions.add([1, 2, 3]), 6)
        self.assertEqual(mathy.actions.divide(numerator=10, denominator=5), 2)
        self.assertFalse(hasattr(mathy.actions, "sum"))

    def test_decorator_returns_the_function(self):
        api = API("same")

        def add(numbers):
            return sum(numbers)
        self.assertIs(api.action(accepts=Array(Integer))(add), add)
        self.assertIs(api.actions.add, add)

    def test_mathy_over_http(self):
        app = Server(_sv_mathy()).wsgi_app
        table = [("/actions/add", [1, 2, 3], b"6"),
                 ("/actions/divide", {"numerator": 10, "denominator": 5},
                  b"2")]
        for path, datum, expected in table:
            with self.subTest(path=path):
                status, headers, body = _wsgi_json(app, "POST", path, datum)
                self.assertEqual((status, body), (200, expected))
                self.assertEqual(headers["content-type"], "application/json")

    def test_cookbook_exchanges(self):
        app = Server(_sv_cookbook()).wsgi_app
        status, headers, body = _wsgi_json(app, "POST", "/actions/cabbage",
                                         {"spicy": True})
        self.assertEqual((status, body, headers["content-length"]),
                         (200, b'"kimchi"', "8"))
        status, headers, body = _wsgi(app, "POST", "/actions/noop")
        self.assertEqual((status, body), (204, b""))
        self.assertNotIn("content-length", headers)  # RFC 9110 8.6
        self.assertNotIn("content-type", headers)
        status, headers, body = _wsgi(app, "POST", "/actions/pluralize",
                                         b"1", _SV_JSON)
        self.assertEqual((status, body), (400, b'{"error": "Invalid String: '
                                               b'1"}'))

    def test_single_parameter_with_default_gets_the_value(self):
        api = API("b7")

        @api.action(accepts=Integer, returns=Integer)
        def double(x=1):
            return 2 * x
        status, _, body = _wsgi_json(Server(api).wsgi_app, "POST",
                                   "/actions/double", 21)
        self.assertEqual((status, body), (200, b"42"))

    def test_single_parameter_gets_the_whole_struct(self):
        api = API("whole")
        seen = []

        @api.action(accepts=Struct([required("a", Integer),
                                    optional("b", Integer)]))
        def take(data):
            seen.append(data)
        status, _, body = _wsgi_json(Server(api).wsgi_app, "POST",
                                   "/actions/take", {"a": 1})
        self.assertEqual((status, body, seen), (204, b"", [{"a": 1}]))

    def test_struct_fields_as_keywords_defaults_for_missing(self):
        shop, calls = _sv_shop()
        app = Server(shop).wsgi_app
        table = [({"item_id": "a"}, b"2.5", ("quote", "a", 1)),
                 ({"item_id": "b", "quantity": 4}, b"10.0",
                  ("quote", "b", 4))]
        for datum, expected, call in table:
            with self.subTest(datum=datum):
                del calls[:]
                status, _, body = _wsgi_json(app, "POST", "/actions/quote",
                                           datum)
                self.assertEqual((status, body, calls),
                                 (200, expected, [call]))

    def test_keyword_only_parameters(self):
        api = API("kwonly")

        @api.action(accepts=Struct([required("a", Integer),
                                    optional("b", Integer)]),
                    returns=Array(Integer))
        def pair(*, a, b=7):
            return [a, b]
        status, _, body = _wsgi_json(Server(api).wsgi_app, "POST",
                                   "/actions/pair", {"a": 1})
        self.assertEqual((status, body), (200, b"[1, 7]"))

    def test_struct_errors_are_400(self):
        shop, calls = _sv_shop()
        app = Server(shop).wsgi_app
        table = [({}, "Missing fields: ['item_id']"),
                 ({"item_id": "a", "x": 1}, "Unexpected fields: ['x']"),
                 ({"item_id": "a", "quantity": "2"},
                  "Item at ['quantity'] Invalid Integer: '2'"),
                 ([1], "Invalid Struct: [1]")]
        for datum, message in table:
            with self.subTest(datum=datum):
                status, _, body = _wsgi_json(app, "POST", "/actions/quote",
                                           datum)
                self.assertEqual((status, body), (400, _sv_err(message)))
        self.assertEqual(calls, [])


class TestSpec(unittest.TestCase):
    def setUp(self):
        _sv_isolate(self)

    def _refuse(self, api, cls, error, message):
        before = json.dumps(APISpec.to_json(api.spec))
        with self.assertRaises(error) as cm:
            api.model(cls)
        if message is not None:
            text = str(cm.exception)
            if error is SpecError:  # after "API 'x', model 'Y' (file...): "
                text = text.split("): ", 1)[1]
            self.assertEqual(text, message)
        self.assertNotIn(cls.__name__, api.spec["models"])
        self.assertNotIn(cls.__name__, api.models.__dict__)
        self.assertEqual(json.dumps(APISpec.to_json(api.spec)), before)
        path = ("/" + cls.__name__).encode().decode("latin-1")
        status, _, body = _wsgi(Server(api).wsgi_app, "GET", path)
        self.assertEqual((status, body), (404, _sv_err("Not Found")))
        return cm.exception

    def _model(self, name, **attrs):
        attrs.setdefault("methods", ["get_list"])
        return type(name, (BaseModel,), attrs)

    def test_refused_model_leaves_no_trace(self):
        api = API("b11")
        table = [
            (self._model("Bad", properties=[required("x", String)],
                         links=[required_link("x", Model("b11.Good"))]),
             ValidationError,
             "Model cannot contain a field and link with the same name: Bad"),
            (self._model("Bad", properties=[required("id", String)]),
             ValidationError, "'id' is a reserved name."),
            (self._model("Bad", links=[required_link("id",
                                                     Model("b11.Good"))]),
             ValidationError, "'id' is a reserved name."),
            (self._model("Bad", properties=[required("_x", String)]),
             SpecError,
             "Identifier cannot start or end with an underscore: _x"),
            (self._model("Bad", links=[optional_link("_x",
                                                     Model("b11.Good"))]),
             SpecError,
             "Identifier cannot start or end with an underscore: _x"),
            (self._model("Bad", query_fields=[optional("a-b", String)]),
             SpecError, "Identifier must consist of [a-zA-Z0-9_] characters "
                        "only: a-b"),
            (self._model("Bad", list_metadata=[required("_total", Integer)]),
             SpecError,
             "Identifier cannot start or end with an underscore: _total"),
        ]
        api.model(self._model("Good"))
        for cls, error, message in table:
            with self.subTest(message=message):
                self._refuse(api, cls, error, message)

    def test_model_name_refused(self):
        api = API("names")
        table = [("Bad_", "Identifier cannot start or end with an "
                          "underscore: Bad_"),
                 ("Ba__d", "Identifier cannot have consecutive underscores: "
                           "Ba__d"),
                 ("Caf\u00e9", "Identifier must consist of [a-zA-Z0-9_] "
                               "characters only: Caf\u00e9"),
                 ("actions", None)]
        for name, message in table:
            with self.subTest(name=name):
                self._refuse(api, self._model(name), SpecError, message)

    def test_unknown_method_name_refused(self):
        api = API("methods")
        for methods in (["get_by_id", "patch"], ["GET"], ["get_by_id "]):
            with self.subTest(methods=methods):
                err = self._refuse(api, self._model("Bad", methods=methods),
                                   SpecError, None)
                self.assertIn(repr(methods[-1]), str(err))

    def test_links_by_class_string_or_model_give_one_spec(self):
        def build(kind):
            with cosmos.swap({}):
                places = API("places")

                @places.model
                class City(BaseModel):
                    properties = [optional(u"name", String)]

                target = {"class": City, "model": Model("places.City"),
                          "string": "places.City"}[kind]
                link_list = [required_link(u"city", target)
                             if kind == "model" else
                             required(u"city", target)]

                @places.model
                class Address(BaseModel):
                    properties = [required(u"number", Integer),
                                  required(u"street", String)]
                    links = link_list
                return json.dumps(APISpec.to_json(places.spec))

        expected = build("model")
        self.assertIn('"links": {"map": {"city": {"model": "places.City", '
                      '"required": true}}, "order": ["city"]}', expected)
        for kind in ("class", "string"):
            with self.subTest(kind=kind):
                self.assertEqual(build(kind), expected)

    def test_link_by_class_serves_hal(self):
        places = API("places")

        @places.model
        class City(BaseModel):
            properties = [optional(u"name", String)]

        @places.model
        class Address(BaseModel):
            methods = ["get_by_id"]
            properties = [required(u"number", Integer)]
            links = [required(u"city", City)]

            @classmethod
            def get_by_id(cls, id):
                return {"number": 31, "city": "0"}

        status, _, body = _wsgi(Server(places).wsgi_app, "GET",
                                   "/Address/5")
        self.assertEqual((status, body), (200, (
            b'{"_links": {"self": {"href": "/Address/5"}, '
            b'"city": {"href": "/City/0"}}, "number": 31}')))

    def test_unregistered_class_as_link_target(self):
        api = API("stray")

        class Stray(BaseModel):
            pass

        err = self._refuse(api, self._model(
            "Home", links=[required("stray", Stray)]), SpecError, None)
        self.assertIn("Stray", str(err))

    def test_link_to_unregistered_model_object_is_lazy(self):
        api = API("later")

        @api.model
        class First(BaseModel):
            links = [optional_link("second", Model("later.Second"))]

        @api.model
        class Second(BaseModel):
            pass
        self.assertEqual(list(api.spec["models"]), ["First", "Second"])

    def test_subclass_of_registered_model_registers(self):
        api = API("inherit")

        @api.model
        class Base(BaseModel):
            properties = [required("name", String)]

        @api.model
        class Child(Base):
            pass
        self.assertEqual(
            APISpec.to_json(api.spec)["models"]["map"]["Child"]["properties"],
            {"map": {"name": {"schema": {"type": "String"},
                              "required": True}},
             "order": ["name"]})


class TestModels(unittest.TestCase):
    def setUp(self):
        _sv_isolate(self)
        self.log = []
        self.places, self.cities = _sv_places(self.log)
        self.app = Server(self.places).wsgi_app

    def test_word_get_by_id(self):
        api = API("dictionary")

        @api.model
        class Word(BaseModel):
            methods = ["get_by_id"]
            properties = [required("letters", String)]

            @classmethod
            def get_by_id(cls, id):
                if id == "0":
                    return {"letters": "hello"}
                raise NotFound

        app = Server(api).wsgi_app
        status, headers, body = _wsgi(app, "GET", "/Word/0")
        self.assertEqual((status, body), (200, (
            b'{"_links": {"self": {"href": "/Word/0"}}, "letters": "hello"}')))
        self.assertEqual(headers["content-type"], "application/json")
        status, _, body = _wsgi(app, "GET", "/Word/1")
        self.assertEqual((status, body), (404, b'{"error": "Not Found"}'))

    def test_output_is_lenient_about_undeclared_keys(self):
        # Keys that are not fields are left out; a missing required field
        # is a 500, as the client would refuse the answer.
        api = API("lenient")
        rep = {}

        @api.model
        class Word(BaseModel):
            methods = ["get_by_id"]
            properties = [required("letters", String),
                          optional("note", String)]
            links = [optional_link("root", Model("lenient.Word"))]

            @classmethod
            def get_by_id(cls, id):
                return rep

        app = Server(api).wsgi_app
        internal = b'{"error": "Internal Server Error"}'
        table = [({}, 500, internal),
                 ({"letters": "a", "secret": "s", "note": None,
                   "root": None}, 200,
                  b'{"_links": {"self": {"href": "/Word/0"}}, "letters": '
                  b'"a"}'),
                 ({"root": "1", "note": "n"}, 500, internal),
                 ({"root": "1", "note": "n", "letters": "b"}, 200,
                  b'{"_links": {"self": {"href": "/Word/0"}, "root": {"href":'
                  b' "/Word/1"}}, "letters": "b", "note": "n"}')]
        for value, code, expected in table:
            with self.subTest(value=value):
                rep.clear()
                rep.update(value)
                with contextlib.ExitStack() as stack:
                    if code == 500:
                        stack.enter_context(self.assertLogs("cosmic"))
                    status, _, body = _wsgi(app, "GET", "/Word/0")
                self.assertEqual((status, body), (code, expected))

    def test_create_moscow(self):
        status, headers, body = _wsgi_json(self.app, "POST", "/City",
                                         {"name": "Moscow"})
        self.assertEqual((status, body), (201, (
            b'{"_links": {"self": {"href": "/City/2"}}, "name": "Moscow"}')))
        self.assertEqual(headers["location"], "/City/2")
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(self.log, [("create", {"name": "Moscow"})])
        self.assertEqual(self.cities["2"], {"name": "Moscow"})

    def test_create_ignores_self_link(self):
        status, headers, body = _wsgi_json(
            self.app, "POST", "/City",
            {"_links": {"self": {"href": "/City/99"}}, "name": "Paris"})
        self.assertEqual((status, headers["location"]), (201, "/City/2"))
        self.assertEqual(self.log, [("create", {"name": "Paris"})])

    def test_update_takes_the_id_from_the_url(self):
        status, headers, body = _wsgi_json(
            self.app, "PUT", "/City/0",
            {"_links": {"self": {"href": "/City/1"}}, "name": "Paris"})
        self.assertEqual((status, body), (200, (
            b'{"_links": {"self": {"href": "/City/0"}}, "name": "Paris"}')))
        self.assertNotIn("location", headers)
        self.assertEqual(self.log, [("update", "0", {"name": "Paris"})])
        self.assertEqual(self.cities, {"0": {"name": "Paris"},
                                       "1": {"name": "San Francisco"}})

    def test_update_and_delete_not_found(self):
        status, _, body = _wsgi_json(self.app, "PUT", "/City/9",
                                   {"name": "Oslo"})
        self.assertEqual((status, body), (404, _sv_err("Not Found")))
        status, _, body = _wsgi(self.app, "DELETE", "/City/9")
        self.assertEqual((status, body), (404, _sv_err("Not Found")))

    def test_delete(self):
        status, headers, body = _wsgi(self.app, "DELETE", "/City/1")
        self.assertEqual((status, body), (204, b""))
        self.assertNotIn("content-length", headers)
        self.assertNotIn("content-type", headers)
        self.assertEqual(self.cities, {"0": {"name": "Toronto"}})
        status, _, body = _wsgi(self.app, "GET", "/City/1")
        self.assertEqual((status, body), (404, _sv_err("Not Found")))

    def test_get_list(self):
        table = [
            ("", b'{"_links": {"self": {"href": "/City"}}, "_embedded": '
                 b'{"City": [{"_links": {"self": {"href": "/City/0"}}, '
                 b'"name": "Toronto"}, {"_links": {"self": {"href": '
                 b'"/City/1"}}, "name": "San Francisco"}]}}', None),
            ("country=Canada", b'{"_links": {"self": {"href": '
                               b'"/City?country=Canada"}}, "_embedded": '
                               b'{"City": [{"_links": {"self": {"href": '
                               b'"/City/0"}}, "name": "Toronto"}]}}',
             "Canada"),
            ("country=Mars&x=1", b'{"_links": {"self": {"href": '
                                 b'"/City?country=Mars"}}, "_embedded": '
                                 b'{"City": []}}', "Mars"),
            ("country=New+York%21", b'{"_links": {"self": {"href": '
                                    b'"/City?country=New+York%21"}}, '
                                    b'"_embedded": {"City": []}}',
             "New York!"),
            ('country="3"', b'{"_links": {"self": {"href": '
                            b'"/City?country=%223%22"}}, '
                            b'"_embedded": {"City": []}}', '"3"'),
        ]
        for query, expected, country in table:
            with self.subTest(query=query):
                del self.log[:]
                status, headers, body = _wsgi(self.app, "GET", "/City",
                                                 query=query)
                self.assertEqual((status, body), (200, expected))
                self.assertEqual(self.log, [("get_list", country)])

    def test_local_calls_are_plain(self):
        City = self.places.models.City
        self.assertEqual(City.get_by_id("1"), {"name": "San Francisco"})
        self.assertEqual(City.create({"name": "lowercase"}),
                         ("2", {"name": "lowercase"}))

    def test_validate_patch_is_400(self):
        for method, path in (("POST", "/City"), ("PUT", "/City/0")):
            with self.subTest(method=method):
                status, _, body = _wsgi_json(self.app, method, path,
                                           {"name": "moscow"})
                self.assertEqual((status, body), (400, _sv_err(
                    "Name must be capitalized: 'moscow'")))
        self.assertEqual(self.log, [])
        self.assertEqual(len(self.cities), 2)

    def test_patch_errors_are_400(self):
        table = [
            ("/City", {"name": 1}, "Item at ['name'] Invalid String: 1"),
            ("/City", {"nope": 1}, "Unexpected fields: ['nope']"),
            ("/City", [], "Invalid Struct: []"),
            ("/City", {"_links": {"self": {"href": "/Town/1"}}},
             "Item at ['_links']['self']['href'] Invalid url for City link: "
             "/Town/1"),
            ("/City", {"_links": {"self": {"href": "7"}}},
             "Item at ['_links']['self']['href'] Invalid url for City link: "
             "7"),
            ("/City", {"_links": {"self": {"href": "/City/1", "x": 1}}},
             "Item at ['_links']['self'] Unexpected fields: ['x']"),
            ("/Address", {"_links": {"city": {"href": "/Other/7"}}},
             "Item at ['_links']['city']['href'] Invalid url for City link: "
             "/Other/7"),
            ("/Address", {"_links": {"town": {"href": "/City/7"}}},
             "Item at ['_links'] Unexpected fields: ['town']"),
        ]
        for path, datum, message in table:
            with self.subTest(datum=datum):
                status, _, body = _wsgi_json(self.app, "POST", path, datum)
                self.assertEqual((status, body), (400, _sv_err(message)))
        self.assertEqual(self.log, [])

    def test_link_values_reach_the_handler_as_ids(self):
        datum = {"number": 31, "street": "Sesame",
                 "_links": {"city": {"href": "/City/0"}}}
        status, headers, body = _wsgi_json(self.app, "POST", "/Address", datum)
        self.assertEqual((status, headers["location"]), (201, "/Address/7"))
        self.assertEqual(body, (
            b'{"_links": {"self": {"href": "/Address/7"}, "city": {"href": '
            b'"/City/0"}}, "number": 31, "street": "Sesame"}'))
        self.assertEqual(self.log, [("Address.create", {
            "number": 31, "street": "Sesame", "city": "0"})])

    def test_patch_quirk_links_are_optional(self):
        # A patch ignores required flags: no _links, or _links without
        # the required link, both pass. (This create returns the patch as
        # the new object, which lacks required fields: the answer is a
        # logged 500, as the client would refuse it.)
        for datum in ({"number": 1}, {"number": 1, "_links": {}}):
            with self.subTest(datum=datum):
                del self.log[:]
                with self.assertLogs("cosmic", "ERROR") as cm:
                    status, _, _ = _wsgi_json(self.app, "POST", "/Address",
                                            datum)
                self.assertEqual(status, 500)
                self.assertIn("Return value of Address.create failed "
                              "validation: Missing fields: ['city', "
                              "'street']", cm.output[0])
                self.assertEqual(self.log,
                                 [("Address.create", {"number": 1})])

    def test_representation_quirk(self):
        rep = Representation(Model("places.Address"))
        self.assertEqual(rep.from_json({"number": 1, "street": "S"}),
                         (None, {"number": 1, "street": "S"}))
        with self.assertRaises(ValidationError) as cm:
            rep.from_json({"number": 1, "street": "S", "_links": {
                "self": {"href": "/Address/1"}}})
        self.assertEqual(str(cm.exception),
                         "Item at ['_links'] Missing fields: ['city']")
        self.assertEqual(
            rep.from_json({"number": 1, "street": "S", "_links": {
                "self": {"href": "/Address/1"},
                "city": {"href": "/City/0"}}}),
            ("1", {"number": 1, "street": "S", "city": "0"}))
        patch = Patch(Model("places.Address"))
        self.assertEqual(patch.from_json({"_links": {}}), (None, {}))
        self.assertEqual(
            rep.to_json((None, {"number": 31, "street": "Sesame"})),
            {"number": 31, "street": "Sesame"})

    def test_location_is_percent_encoded(self):
        api = API("ids")
        next_id = []

        @api.model
        class Thing(BaseModel):
            methods = ["create"]
            properties = [optional("name", String)]

            @classmethod
            def create(cls, **patch):
                return next_id[0], patch

        app = Server(api).wsgi_app
        # hrefs keep ids as they are but for "%", "/", "?" and "#"
        # (docs/protocol.md#link), escaped so that an id holding a slash
        # is still one href segment, and a "?" or "#" does not end it.
        table = [("a b/\u00e9", "/Thing/a%20b%2F%C3%A9",
                  b'"/Thing/a b%2F\\u00e9"'),
                 ("x\r\nSet-Cookie: a=b",
                  "/Thing/x%0D%0ASet-Cookie%3A%20a%3Db",
                  b'"/Thing/x\\r\\nSet-Cookie: a=b"'),
                 ("\u2603?#", "/Thing/%E2%98%83%3F%23",
                  b'"/Thing/\\u2603%3F%23"')]
        for ident, location, href in table:
            with self.subTest(ident=ident):
                next_id[:] = [ident]
                status, headers, body = _wsgi_json(app, "POST", "/Thing", {})
                self.assertEqual(status, 201)
                self.assertEqual(headers["location"], location)
                self.assertNotIn("set-cookie", headers)
                self.assertEqual(body, b'{"_links": {"self": {"href": ' +
                                 href + b'}}}')

    def test_both_handler_signatures(self):
        api = API("styles")
        calls = []

        @api.model
        class DictStyle(BaseModel):
            methods = ["create", "update"]
            properties = [optional("name", String),
                          optional("size", Integer)]

            @classmethod
            def create(cls, patch):
                calls.append(("create", patch))
                return "1", patch

            @classmethod
            def update(cls, id, patch):
                calls.append(("update", id, patch))
                return patch

        @api.model
        class KwStyle(BaseModel):
            methods = ["create", "update"]
            properties = [optional("name", String),
                          optional("size", Integer)]

            @classmethod
            def create(cls, **patch):
                calls.append(("create", patch))
                return "1", patch

            @classmethod
            def update(cls, id, **patch):
                calls.append(("update", id, patch))
                return patch

        @api.model
        class NamedStyle(BaseModel):
            methods = ["create", "update"]
            properties = [optional("name", String),
                          optional("size", Integer)]

            @classmethod
            def create(cls, name=None, size=None):
                patch = {k: v for k, v in (("name", name), ("size", size))
                         if v is not None}
                calls.append(("create", patch))
                return "1", patch

            @classmethod
            def update(cls, id, name=None, size=None):
                patch = {k: v for k, v in (("name", name), ("size", size))
                         if v is not None}
                calls.append(("update", id, patch))
                return patch

        @api.model
        class OneField(BaseModel):
            methods = ["create", "update"]
            properties = [optional("name", String)]

            @classmethod
            def create(cls, name):
                calls.append(("create", {"name": name}))
                return "1", {"name": name}

            @classmethod
            def update(cls, id, name):
                calls.append(("update", id, {"name": name}))
                return {"name": name}

        app = Server(api).wsgi_app
        for model in ("DictStyle", "KwStyle", "NamedStyle", "OneField"):
            with self.subTest(model=model):
                del calls[:]
                datum = {"name": "A"} if model == "OneField" else \
                    {"name": "A", "size": 2}
                status, headers, body = _wsgi_json(app, "POST", "/" + model,
                                                 datum)
                self.assertEqual((status, headers["location"]),
                                 (201, "/%s/1" % model))
                self.assertEqual(json.loads(body), dict(datum, _links={
                    "self": {"href": "/%s/1" % model}}))
                status, _, body = _wsgi_json(app, "PUT", "/%s/5" % model,
                                             datum)
                self.assertEqual(status, 200)
                self.assertEqual(json.loads(body), dict(datum, _links={
                    "self": {"href": "/%s/5" % model}}))
                self.assertEqual(calls, [("create", datum),
                                         ("update", "5", datum)])

    def test_sphere_list_and_representation(self):
        planetarium, log = _sv_planetarium()
        app = Server(planetarium).wsgi_app
        status, headers, body = _wsgi(app, "GET", "/Sphere",
                                         query="name=Sun")
        self.assertEqual((status, body), (200, (
            b'{"_links": {"self": {"href": "/Sphere?name=Sun"}}, '
            b'"_embedded": {"Sphere": [{"_links": {"self": {"href": '
            b'"/Sphere/0"}}, "name": "Sun", "temperature": 3000.0}]}, '
            b'"last_updated": "2014-01-01T00:00:00"}')))
        self.assertEqual(log, [{"name": "Sun"}])
        status, _, body = _wsgi(app, "GET", "/Sphere/2")
        self.assertEqual((status, body), (200, (
            b'{"_links": {"self": {"href": "/Sphere/2"}, "revolves_around": '
            b'{"href": "/Sphere/1"}}, "name": "Moon", "temperature": -50.0}')))

    def test_shop_item_list_and_create(self):
        shop, calls = _sv_shop()
        app = Server(shop).wsgi_app
        status, _, body = _wsgi(app, "GET", "/Item",
                                   query="max_price=10&category=3")
        self.assertEqual((status, body), (200, (
            b'{"_links": {"self": {"href": "/Item?category=3&max_price=10.0"'
            b'}}, "_embedded": {"Item": [{"_links": {"self": {"href": '
            b'"/Item/1"}, "category": {"href": "/Category/3"}}, "title": '
            b'"Hammer", "price": 9.5}]}, "total": 1}')))
        self.assertEqual(calls, [("get_list",
                                  {"category": "3", "max_price": 10.0})])
        self.assertIs(type(calls[0][1]["max_price"]), float)
        del calls[:]
        status, headers, body = _wsgi_json(app, "POST", "/Item", {
            "title": "Saw", "_links": {"category": {"href": "/Category/3"}}})
        self.assertEqual((status, headers["location"], body), (
            201, "/Item/2",
            b'{"_links": {"self": {"href": "/Item/2"}, "category": {"href": '
            b'"/Category/3"}}, "title": "Saw"}'))
        self.assertEqual(calls, [("create", {"title": "Saw",
                                             "category": "3"})])

    def test_query_decoding_errors(self):
        api = API("query")
        calls = []

        @api.model
        class Item(BaseModel):
            methods = ["get_list"]
            query_fields = [required("n", Integer),
                            optional("name", String),
                            optional("tags", Array(String))]

            @classmethod
            def get_list(cls, **query):
                calls.append(query)
                return []

        app = Server(api).wsgi_app
        table = [("n=1&n=2", "Repeating query parameters not allowed: n"),
                 ("n=1&name=a&name=b",
                  "Repeating query parameters not allowed: name"),
                 ("n=x", "Item at ['n'] Invalid JSON: 'x'"),
                 ("n=", "Item at ['n'] Invalid JSON: ''"),
                 ("n=NaN", "Item at ['n'] Invalid JSON: 'NaN'"),
                 ("n=1.5", "Item at ['n'] Invalid Integer: 1.5"),
                 ("n=%221%22", "Item at ['n'] Invalid Integer: '1'"),
                 ("", "Missing fields: ['n']"),
                 ("name=a", "Missing fields: ['n']"),
                 ("n=1&tags=a", "Item at ['tags'] Invalid JSON: 'a'"),
                 ("n=1&tags=[1]", "Item at ['tags'][0] Invalid String: 1")]
        for query, message in table:
            with self.subTest(query=query):
                status, _, body = _wsgi(app, "GET", "/Item", query=query)
                self.assertEqual((status, body), (400, _sv_err(message)))
        self.assertEqual(calls, [])
        status, _, body = _wsgi(
            app, "GET", "/Item",
            query="zz=1&zz=2&n=3&other=x&tags=%5B%22a%22%2C+%22b+c%22%5D")
        self.assertEqual((status, body), (200, (
            b'{"_links": {"self": {"href": "/Item?n=3&tags=%5B%22a%22%2C%22b'
            b'+c%22%5D"}}, "_embedded": {"Item": []}}')))
        self.assertEqual(calls, [{"n": 3, "tags": ["a", "b c"]}])
        status, _, body = _wsgi(app, "GET", "/Item", b"{}", _SV_JSON,
                                   query="n=x")
        self.assertEqual((status, body), (400, _sv_err("Invalid data")))
        status, _, body = _wsgi(app, "GET", "/Item", query="n=1&name=%ff")
        self.assertEqual(status, 400)
        self.assertEqual(list(json.loads(body)), ["error"])

    def test_no_query_fields_ignores_the_query(self):
        api = API("noquery")
        calls = []

        @api.model
        class Word(BaseModel):
            methods = ["get_list"]
            properties = [required("letters", String)]

            @classmethod
            def get_list(cls):
                calls.append(())
                return {"0": {"letters": "hi"}}.items()

        status, _, body = _wsgi(Server(api).wsgi_app, "GET", "/Word",
                                   query="a=1&a=2&b=%ZZ&c")
        self.assertEqual((status, body), (200, (
            b'{"_links": {"self": {"href": "/Word"}}, "_embedded": {"Word": '
            b'[{"_links": {"self": {"href": "/Word/0"}}, "letters": '
            b'"hi"}]}}')))
        self.assertEqual(calls, [()])

    def test_list_metadata_is_merged_at_the_top_level(self):
        api = API("meta")

        @api.model
        class Page(BaseModel):
            methods = ["get_list"]
            list_metadata = [required("total", Integer),
                             optional("next", String),
                             optional("when", DateTime)]

            @classmethod
            def get_list(cls):
                return [], {"total": 0, "next": None,
                            "when": datetime.datetime(
                                2013, 10, 18, 1, 58, 24, 904349,
                                tzinfo=datetime.timezone.utc)}

        status, _, body = _wsgi(Server(api).wsgi_app, "GET", "/Page")
        self.assertEqual((status, body), (200, (
            b'{"_links": {"self": {"href": "/Page"}}, "_embedded": {"Page": '
            b'[]}, "total": 0, "when": "2013-10-18T01:58:24.904349+00:00"}')))

    def test_wrong_handler_results_are_500(self):
        api = API("shapes")
        result = []

        @api.model
        class Thing(BaseModel):
            methods = ["get_by_id", "get_list", "create", "update"]
            properties = [optional("name", String)]
            links = [optional_link("parent", Model("shapes.Thing"))]

            @classmethod
            def get_by_id(cls, id):
                return result[0]

            @classmethod
            def get_list(cls):
                return result[0]

            @classmethod
            def create(cls, **patch):
                return result[0]

            @classmethod
            def update(cls, id, **patch):
                return result[0]

        @api.model
        class Paged(BaseModel):
            methods = ["get_list"]
            list_metadata = [required("total", Integer)]

            @classmethod
            def get_list(cls):
                return result[0]

        app = Server(api).wsgi_app
        table = [("GET", "/Thing/1", "x"), ("GET", "/Thing/1", None),
                 ("GET", "/Thing/1", {"name": 5}),
                 ("GET", "/Thing/1", {"parent": 5}),
                 ("PUT", "/Thing/1", ["name"]),
                 ("POST", "/Thing", "x"), ("POST", "/Thing", ("1",)),
                 ("POST", "/Thing", (1, {})),
                 ("POST", "/Thing", ("1", {"name": b"x"})),
                 ("GET", "/Thing", 5), ("GET", "/Thing", [("1",)]),
                 ("GET", "/Thing", [("1", "rep")]),
                 ("GET", "/Thing", [(1, {})]),
                 ("GET", "/Paged", [("1", {})]),
                 ("GET", "/Paged", ([], {"total": "x"})),
                 ("GET", "/Paged", ([], 5))]
        for method, path, value in table:
            with self.subTest(method=method, path=path, value=value):
                result[:] = [value]
                with self.assertLogs("cosmic", "ERROR"):
                    status, _, body = _wsgi(
                        app, method, path,
                        b"{}" if method in ("PUT", "POST") else b"", _SV_JSON)
                self.assertEqual((status, body),
                                 (500, _sv_err("Internal Server Error")))


class TestReturnValues(unittest.TestCase):
    """What the server sends passes the schema its client checks; a value
    that does not is a 500 whose log names the handler and the path."""

    CASES = [
        ("POST", "/actions/one", "one", {},
         "Return value of action one failed validation: Missing fields: "
         "['x']"),
        ("POST", "/actions/one", "one", {"label": "no x"},
         "Return value of action one failed validation: Missing fields: "
         "['x']"),
        ("POST", "/actions/many", "many", [{"x": 1}, {"x": 2}, {"y": 3}],
         "Return value of action many failed validation: Item at [2] "
         "Missing fields: ['x']"),
        ("POST", "/actions/nested", "nested", {"a": {"inner": {}}},
         "Return value of action nested failed validation: Item at "
         "['a']['inner'] Missing fields: ['x']"),
        ("POST", "/actions/number", "number", "7",
         "Return value of action number failed validation: Invalid "
         "Integer: '7'"),
        ("GET", "/Spot/1", "get_by_id", {},
         "Return value of Spot.get_by_id failed validation: Missing "
         "fields: ['name']"),
        ("GET", "/Spot/1", "get_by_id", {"name": None},
         "Return value of Spot.get_by_id failed validation: Missing "
         "fields: ['name']"),
        ("GET", "/Spot/1", "get_by_id", {"name": "n", "at": {}},
         "Return value of Spot.get_by_id failed validation: Item at "
         "['at'] Missing fields: ['x']"),
        ("GET", "/Spot", "get_list",
         ([("1", {"name": "a"}), ("2", {})], {"total": 2}),
         "Return value of Spot.get_list failed validation: Item at [1] "
         "Missing fields: ['name']"),
        ("GET", "/Spot", "get_list", ([("1", {"name": "a"})], {}),
         "Return value of Spot.get_list failed validation: Missing "
         "fields: ['total']"),
        ("POST", "/Spot", "create", ("9", {}),
         "Return value of Spot.create failed validation: Missing fields: "
         "['name']"),
        ("PUT", "/Spot/1", "update", {"at": {"x": 1}},
         "Return value of Spot.update failed validation: Missing fields: "
         "['name']"),
    ]

    def setUp(self):
        _sv_isolate(self)
        self.values = {}
        self.api = _sv_returns(self.values)
        self.app = Server(self.api).wsgi_app

    def call(self, method, path):
        body = b"{}" if method in ("POST", "PUT") and \
            not path.startswith("/actions") else b""
        return _wsgi(self.app, method, path, body, _SV_JSON)

    def test_a_missing_field_is_a_logged_500(self):
        for method, path, name, value, line in self.CASES:
            with self.subTest(path=path, value=value):
                self.values[name] = value
                with self.assertLogs("cosmic", "ERROR") as cm:
                    status, _, body = self.call(method, path)
                self.assertEqual((status, body), (500, _sv_err(
                    "Internal Server Error")))
                self.assertEqual(len(cm.records), 1)
                message = cm.records[0].getMessage()
                self.assertTrue(message.startswith(line + " in %s %s "
                                                   % (method, path)),
                                message)

    def test_valid_values_still_pass(self):
        self.values.update(
            one={"x": 1, "label": None, "extra": "dropped"},
            many=[{"x": 1}], nested={"a": {"inner": {"x": 2}}},
            get_by_id={"name": "n", "at": {"x": 1}, "version": 3},
            get_list=([("1", {"name": "a"})], {"total": 1}),
            create=("9", {"name": "c"}), update={"name": "u"})
        client = WsgiAPIClient.for_api(self.api)
        self.assertEqual(client.actions.one(), {"x": 1})
        self.assertEqual(client.actions.many(), [{"x": 1}])
        self.assertEqual(client.actions.nested(), {"a": {"inner": {"x": 2}}})
        self.assertEqual(client.models.Spot.get_by_id("1"),
                         {"name": "n", "at": {"x": 1}})
        self.assertEqual(client.models.Spot.get_list(),
                         ([("1", {"name": "a"})], {"total": 1}))
        self.assertEqual(client.models.Spot.create(name="c"),
                         ("9", {"name": "c"}))
        self.assertEqual(client.models.Spot.update("1", name="u"),
                         {"name": "u"})

    def test_a_handlers_own_validation_error_is_not_its_return_value(self):
        with self.assertLogs("cosmic", "ERROR") as cm:
            status, _, _ = self.call("POST", "/actions/raises")
        self.assertEqual(status, 500)
        self.assertTrue(cm.records[0].getMessage().startswith(
            "Unhandled exception in POST /actions/raises"))

    def test_client_arguments_keep_their_to_json(self):
        point = Struct([required("x", Integer)])
        self.assertEqual(point.to_json({}), {})
        self.assertEqual(Representation(Model("rets.Spot")).to_json(
            (None, {})), {})

    def test_over_http_the_client_gets_a_500(self):
        self.values["one"] = {}
        with served_api(self.api) as url:
            client = APIClient(url)
            self.addCleanup(client.close)
            with self.assertLogs("cosmic", "ERROR") as cm:
                with self.assertRaises(RemoteHTTPError) as raised:
                    client.actions.one()
        self.assertEqual(raised.exception.code, 500)
        self.assertIn("Return value of action one failed validation",
                      cm.output[0])


class TestRulesCreateRequires(unittest.TestCase):
    """create_requires: the framework refuses a create without them."""

    def test_server_and_client_refuse(self):
        api = _ru_api()
        app = Server(api).wsgi_app
        status, headers, body = _wsgi(
            app, "POST", "/Item", json.dumps({"size": 1}),
            headers={"Content-Type": "application/json"})
        self.assertEqual((status, json.loads(body)),
                         (400, {"error": "Missing fields: ['name']"}))
        _ru_Recording.sent = 0
        client = _ru_Recording(app)
        with self.assertRaises(ValidationError) as cm:
            client.models.Item.create(size=1)
        self.assertEqual(str(cm.exception), "Missing fields: ['name']")
        self.assertEqual(_ru_Recording.sent, 1)  # the spec only
        self.assertEqual(client.models.Item.create(name="a")[0], "1")
        self.assertEqual(APISpec.to_json(api.spec)["models"]["map"]["Item"][
            "create_requires"], ["name"])

    def test_a_link_can_be_required_and_names_are_checked(self):
        with cosmos.swap({}):
            api = API("req")

            @api.model
            class A(BaseModel):
                methods = ["create"]
                properties = [optional("x", Integer)]

                @classmethod
                def create(cls, patch):
                    return "1", patch

            @api.model
            class B(BaseModel):
                methods = ["create"]
                links = [optional_link("a", A)]
                create_requires = ["a"]

                @classmethod
                def create(cls, patch):
                    return "1", patch

            with self.assertRaises(ValidationError) as cm:
                @api.model
                class C(BaseModel):
                    properties = [optional("x", Integer)]
                    create_requires = ["y"]
        self.assertEqual(str(cm.exception),
                         "create_requires names no field or link of C: ['y']")
        status, headers, body = _wsgi(
            Server(api).wsgi_app, "POST", "/B", "{}",
            headers={"Content-Type": "application/json"})
        self.assertEqual(json.loads(body), {"error": "Missing fields: ['a']"})


class TestAuthSchemes(unittest.TestCase):
    def setUp(self):
        self.app = Server(_au_api()).wsgi_app

    def call(self, path, headers=None, method="POST"):
        status, out, body = _wsgi(self.app, method, path,
                                     headers=headers or {})
        return status, out, json.loads(body) if body else None

    def test_no_credential_is_401_naming_every_scheme(self):
        status, headers, body = self.call("/actions/whoami")
        self.assertEqual(status, 401)
        self.assertEqual(headers["www-authenticate"],
                         'Bearer realm="au_zoo", APIKey realm="au_zoo", '
                         'header="X-Key", Basic realm="au_zoo", '
                         'charset="UTF-8"')
        self.assertEqual(body, {"error": "Missing credentials: send "
                                "Authorization: Bearer <token> or X-Key: "
                                "<key> or Authorization: Basic <base64 of "
                                "user:password>"})
        self.assertEqual(headers["content-type"], "application/json")

    def test_each_scheme_accepts_its_credential(self):
        for headers in ({"Authorization": "Bearer " + _AU_TOKEN},
                        {"Authorization": "bearer  " + _AU_TOKEN},
                        {"X-Key": _AU_TOKEN},
                        {"Authorization": _au_basic("alice", _AU_TOKEN)}):
            with self.subTest(headers=headers):
                self.assertEqual(self.call("/actions/whoami", headers)[::2],
                                 (200, "alice"))

    def test_refused_credentials_are_401_without_echo(self):
        for headers in ({"Authorization": "Bearer tok-nobody-0000"},
                        {"Authorization": "Bearer "},
                        {"X-Key": "tok-nobody-0000"},
                        {"Authorization": _au_basic("bob", _AU_TOKEN)},
                        {"Authorization": "Basic !!notbase64!!"},
                        {"Authorization": "Basic " + base64.b64encode(
                            b"\xff\xfe:x").decode()}):
            with self.subTest(headers=headers):
                status, out, body = self.call("/actions/whoami", headers)
                self.assertEqual((status, body),
                                 (401, {"error": "Invalid credentials"}))
                self.assertIn('error="invalid_token"',
                              out["www-authenticate"])
                for value in headers.values():
                    secret = value.partition(" ")[2].strip() or value
                    if secret != value:
                        self.assertNotIn(secret, json.dumps(body) + str(out))

    def test_problem_details_401(self):
        status, headers, body = self.call(
            "/actions/whoami", {"Accept": "application/problem+json"})
        self.assertEqual(status, 401)
        self.assertEqual(headers["content-type"], "application/problem+json")
        self.assertIn("Bearer", headers["www-authenticate"])
        self.assertEqual((body["title"], body["status"]),
                         ("Unauthorized", 401))
        self.assertTrue(body["detail"].startswith("Missing credentials"))

    def test_a_valid_identity_without_the_scope_is_403(self):
        status, _, body = self.call(
            "/actions/admin", {"Authorization": "Bearer tok-bob-77aa01d3"})
        self.assertEqual((status, body), (403, {
            "error": "Forbidden: this call needs the scope admin"}))
        self.assertEqual(self.call("/actions/admin", {
            "Authorization": "Bearer " + _AU_TOKEN})[::2], (200, "ok"))
        self.assertEqual(self.call("/actions/admin")[0], 401)

    def test_identity_is_request_scoped(self):
        self.assertIsNone(cosmic.current_identity())
        self.assertEqual(self.call("/actions/hello")[::2],
                         (200, "hi anonymous"))
        self.assertEqual(self.call("/actions/hello", {
            "Authorization": "Bearer tok-bob-77aa01d3"})[::2], (200, "hi bob"))
        # An open call takes a refused credential as no one.
        self.assertEqual(self.call("/actions/hello", {
            "Authorization": "Bearer wrong"})[::2], (200, "hi anonymous"))
        self.assertIsNone(cosmic.current_identity())

    def test_identity_reaches_a_handler_run_with_a_timeout(self):
        app = Server(_au_api(), handler_timeout=5).wsgi_app
        status, _, body = _wsgi(app, "POST", "/actions/whoami", headers={
            "Authorization": "Bearer " + _AU_TOKEN})
        self.assertEqual((status, body), (200, b'"alice"'))

    def test_compare_secret(self):
        self.assertTrue(cosmic.compare_secret("s3cret", "s3cret"))
        self.assertTrue(cosmic.compare_secret("ключ", "ключ".encode()))
        self.assertFalse(cosmic.compare_secret("s3cret", "s3creT"))
        self.assertFalse(cosmic.compare_secret("", "x"))

    def test_names_are_public(self):
        from cosmic.api import APIKeyAuth, BasicAuth, BearerAuth, \
            compare_secret
        from cosmic.globals import current_identity
        self.assertIs(current_identity, cosmic.current_identity)
        self.assertIs(compare_secret, cosmic.compare_secret)
        for cls in (APIKeyAuth, BasicAuth, BearerAuth):
            self.assertIn(cls.__name__, cosmic.__all__)

    def test_bad_declarations(self):
        def act():
            pass

        with cosmos.swap({}):
            table = [
                (lambda: API("x", requires=True),
                 "API x requires credentials, but the API declares no "
                 "scheme: pass auth= to API()"),
                (lambda: API("x", protect_spec=True),
                 "protect_spec needs a scheme: pass auth="),
                (lambda: API("x", auth="token"),
                 "auth takes BearerAuth, APIKeyAuth and BasicAuth objects, "
                 "got 'token'"),
                (lambda: API("x", auth=[cosmic.BearerAuth(len)] * 2),
                 "auth declares two bearer schemes"),
                (lambda: cosmic.APIKeyAuth(len, header="Authorization"),
                 "APIKeyAuth header must be a header name such as "
                 "'X-API-Key', got 'Authorization'"),
                (lambda: cosmic.BearerAuth("nope"),
                 "BearerAuth needs a verify function, got 'nope'"),
                (lambda: API("x").action(requires=True)(act),
                 "API 'x', action 'act' (%s, line N): This action requires "
                 "credentials, but the API declares no scheme: pass auth= "
                 "to API()" % __file__),
                (lambda: API("x", auth=cosmic.BearerAuth(len),
                             requires=3),
                 "API x: requires must be True, False, a scope or a list "
                 "of scopes, got 3"),
            ]
            for make, message in table:
                with self.subTest(message=message):
                    with self.assertRaises(SpecError) as cm:
                        make()
                    self.assertEqual(re.sub(r"line \d+", "line N",
                                            str(cm.exception)), message)

            class M(BaseModel):
                methods = ["get_by_id"]
                requires = {"fetch": True}

            with self.assertRaises(SpecError) as cm:
                API("x", auth=cosmic.BearerAuth(len)).model(M)
            self.assertTrue(str(cm.exception).endswith(
                "): requires must map model methods (get_by_id, get_list, "
                "create, update, delete) to requirements"), str(cm.exception))


class TestAuthRequirements(unittest.TestCase):
    def test_model_reads_open_writes_protected(self):
        app = Server(_au_api(requires=False)).wsgi_app
        bearer = {"Authorization": "Bearer tok-bob-77aa01d3",
                  "Content-Type": "application/json"}
        # requires=False by default, but Note.create/delete inherit it:
        status, _, _ = _wsgi(app, "POST", "/Note", b'{"text": "a"}',
                                {"Content-Type": "application/json"})
        self.assertEqual(status, 201)
        app = Server(_au_api()).wsgi_app
        status, headers, _ = _wsgi(app, "POST", "/Note", b'{"text": "a"}',
                                      {"Content-Type": "application/json"})
        self.assertEqual(status, 401)
        self.assertEqual(_wsgi(app, "POST", "/Note", b'{"text": "a"}',
                                  bearer)[0], 201)
        self.assertEqual(_wsgi(app, "GET", "/Note/1")[0], 200)
        self.assertEqual(_wsgi(app, "GET", "/Note")[0], 200)
        self.assertEqual(_wsgi(app, "HEAD", "/Note/1")[0], 200)
        self.assertEqual(_wsgi(app, "DELETE", "/Note/1")[0], 401)
        self.assertEqual(_wsgi(app, "DELETE", "/Note/1", headers=bearer)[0],
                         204)

    def test_every_model_method_can_be_protected(self):
        with cosmos.swap({}):
            api = API("au_vault", auth=cosmic.BearerAuth(_AU_USERS.get),
                      requires=True)

            @api.model
            class Box(BaseModel):
                methods = ["get_by_id", "get_list", "create", "update",
                           "delete"]
                properties = [required("text", String)]

                @classmethod
                def get_by_id(cls, id):
                    return {"text": "secret"}

                @classmethod
                def get_list(cls):
                    return [("1", {"text": "secret"})]

                @classmethod
                def create(cls, patch):
                    return "1", patch

                @classmethod
                def update(cls, id, patch):
                    return patch

                @classmethod
                def delete(cls, id):
                    pass

        bearer = {"Authorization": "Bearer " + _AU_TOKEN,
                  "Content-Type": "application/json"}
        for etags in (True, False):
            app = Server(api, etags=etags).wsgi_app
            for method, path, body in (
                    ("GET", "/Box/1", b""), ("HEAD", "/Box/1", b""),
                    ("GET", "/Box", b""), ("POST", "/Box", b'{"text": "a"}'),
                    ("PUT", "/Box/1", b'{"text": "b"}'),
                    ("DELETE", "/Box/1", b"")):
                with self.subTest(method=method, path=path, etags=etags):
                    status, _, answer = _wsgi(
                        app, method, path, body,
                        {"Content-Type": "application/json"} if body else {})
                    self.assertEqual(status, 401)
                    self.assertNotIn(b"secret", answer)
                    self.assertEqual(_wsgi(app, method, path, body,
                                              bearer)[0] // 100, 2)

    def test_401_comes_before_the_body_is_read(self):
        app = Server(_au_api()).wsgi_app
        status, _, body = _wsgi(app, "POST", "/Note", b"not json",
                                   {"Content-Type": "text/plain"})
        self.assertEqual(status, 401)

    def test_spec_open_by_default_and_docs_always_open(self):
        app = Server(_au_api()).wsgi_app
        for path in ("/spec.json", "/openapi.json", "/", "/docs"):
            with self.subTest(path=path):
                self.assertEqual(_wsgi(app, "GET", path)[0], 200)
        app = Server(_au_api(protect_spec=True)).wsgi_app
        for path in ("/spec.json", "/openapi.json"):
            with self.subTest(path=path):
                self.assertEqual(_wsgi(app, "GET", path)[0], 401)
                self.assertEqual(_wsgi(app, "GET", path, headers={
                    "X-Key": _AU_TOKEN})[0], 200)
        for path in ("/", "/docs"):
            self.assertEqual(_wsgi(app, "GET", path)[0], 200)
        # OPTIONS (and so CORS preflights) never need credentials.
        self.assertEqual(_wsgi(app, "OPTIONS", "/actions/whoami")[0], 204)

    def test_an_api_without_schemes_keeps_bare_endpoints(self):
        with cosmos.swap({}):
            api = API("au_plain")

            @api.action(returns=String)
            def hello():
                return "hi"

        routes = Server(api)._get_routes()
        endpoint = routes.actions["hello"].methods["POST"]
        self.assertNotIn("_serve", vars(endpoint))
        routes = Server(_au_api())._get_routes()
        endpoint = routes.actions["hello"].methods["POST"]
        self.assertIn("_serve", vars(endpoint))

    def test_view_override_and_schemes_together(self):
        """The original's way (a view override) runs beside the schemes."""
        class GateServer(Server):
            def view(self, endpoint, request, **url_args):
                if request.headers.get("X-Gate") != "open":
                    return error_response("Unauthorized", 401)
                return super().view(endpoint, request, **url_args)

        app = GateServer(_au_api()).wsgi_app
        bearer = {"Authorization": "Bearer " + _AU_TOKEN}
        self.assertEqual(_wsgi(app, "POST", "/actions/whoami",
                                  headers=bearer)[0], 401)
        self.assertEqual(_wsgi(app, "POST", "/actions/whoami",
                                  headers={"X-Gate": "open"})[0], 401)
        status, _, body = _wsgi(app, "POST", "/actions/whoami",
                                   headers=dict(bearer, **{"X-Gate": "open"}))
        self.assertEqual((status, body), (200, b'"alice"'))


    def test_seed_snippets_beside_schemes(self):
        """The user guide's CustomServer (a view override filling a
        ThreadLocalDict) and PlanetariumClient (a build_request override)
        keep working on an API that declares schemes."""
        g = ThreadLocalDict()
        seen = []

        class CustomServer(Server):
            def view(self, endpoint, request, **url_args):
                secret = request.headers.get('X-Seed', None)
                if secret == '12345':
                    g['current_user'] = 'bob'
                elif secret == 'qwert':
                    return error_response("Unauthorized", 401)
                return super(CustomServer, self).view(endpoint, request,
                                                      **url_args)

        api = _au_api()

        @api.action(returns=String)
        def both():
            seen.append((g.get('current_user'),
                         cosmic.current_identity()["name"]))
            return "ok"

        class SeedClient(WsgiAPIClient):
            wsgi_app = CustomServer(api).wsgi_app

            def build_request(self, endpoint, *args, **kwargs):
                request = super(SeedClient, self).build_request(
                    endpoint, *args, **kwargs)
                request.headers["X-Seed"] = "12345"
                return request

        client = SeedClient(auth=_AU_TOKEN)
        self.assertEqual(client.actions.both(), "ok")
        self.assertEqual(seen, [("bob", "alice")])
        with self.assertRaises(RemoteHTTPError) as cm:
            SeedClient().actions.both()
        self.assertEqual(cm.exception.code, 401)


# -- WSGI application ---------------------------------------------------------
# Routing, bodies, responses, errors, hooks; conditional requests.


class TestRouting(unittest.TestCase):
    def setUp(self):
        _sv_isolate(self)
        self.api, self.log = _sv_things()
        self.app = Server(self.api).wsgi_app

    def test_not_found(self):
        table = [("GET", "/a/b/c"), ("GET", "/a/b/c/d"),
                 ("POST", "/actions/nope"), ("GET", "/Nope/1"),
                 ("GET", "/Nope"), ("POST", "/Nope"), ("DELETE", "/Nope/1"),
                 ("GET", "/Thing/"), ("GET", "/Thing/1/"),
                 ("POST", "/actions/"), ("POST", "/actions/noop/"),
                 ("GET", "//Thing"), ("GET", "/spec.json/"),
                 ("GET", "/Thing/a/b"), ("OPTIONS", "/nope/a/b"),
                 ("OPTIONS", "/actions/nope"), ("HEAD", "/Nope")]
        for method, path in table:
            with self.subTest(method=method, path=path):
                status, headers, body = _wsgi(self.app, method, path)
                expected = b"" if method == "HEAD" else _sv_err("Not Found")
                self.assertEqual((status, body), (404, expected))
                self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(self.log, [])

    def test_root_is_not_found_without_docs(self):
        app = Server(self.api, docs=False).wsgi_app
        for path in ("/", ""):
            with self.subTest(path=path):
                status, _, body = _wsgi(app, "GET", path)
                self.assertEqual((status, body), (404, _sv_err("Not Found")))

    def test_encoded_slash_adds_a_segment(self):
        # %2F arrives decoded in PATH_INFO: /Thing/a/b, no such route
        status, _, body = _wsgi(self.app, "GET", "/Thing/a/b")
        self.assertEqual((status, body), (404, _sv_err("Not Found")))

    def test_either_404_or_405(self):
        for method, path, allow in (("GET", "/actions/noop", {"POST"}),
                                    ("POST", "/spec.json", {"GET"})):
            with self.subTest(method=method, path=path):
                status, headers, body = _wsgi(self.app, method, path)
                self.assertIn(status, (404, 405))
                if status == 404:
                    self.assertEqual(body, _sv_err("Not Found"))
                else:
                    self.assertEqual(body, _sv_err("Method Not Allowed"))
                    self.assertTrue(allow <= _sv_allow(headers))
        self.assertEqual(self.log, [])

    def test_wrong_method_is_405_with_allow(self):
        spec = {"GET", "HEAD", "OPTIONS"}
        item = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
        items = {"GET", "HEAD", "POST", "OPTIONS"}
        action = {"POST", "OPTIONS"}
        table = [("PUT", "/spec.json", spec), ("DELETE", "/spec.json", spec),
                 ("PATCH", "/spec.json", spec),
                 ("POST", "/Thing/1", item), ("PATCH", "/Thing/1", item),
                 ("PUT", "/Thing", items), ("DELETE", "/Thing", items),
                 ("PATCH", "/Thing", items),
                 ("PUT", "/actions/noop", action),
                 ("DELETE", "/actions/noop", action),
                 ("PATCH", "/actions/echo", action)]
        for method, path, allow in table:
            with self.subTest(method=method, path=path):
                status, headers, body = _wsgi(self.app, method, path)
                self.assertEqual((status, body),
                                 (405, _sv_err("Method Not Allowed")))
                self.assertEqual(_sv_allow(headers), allow)
        self.assertEqual(self.log, [])

    def test_disabled_model_method_is_405(self):
        table = [("GET", "/Recipe/1", {"OPTIONS"}),
                 ("PUT", "/Recipe/1", {"OPTIONS"}),
                 ("DELETE", "/Recipe/1", {"OPTIONS"}),
                 ("POST", "/Recipe", {"GET", "HEAD", "OPTIONS"})]
        for method, path, allow in table:
            with self.subTest(method=method, path=path):
                status, headers, body = _wsgi_json(self.app, method, path,
                                                   {}) \
                    if method in ("PUT", "POST") else \
                    _wsgi(self.app, method, path)
                self.assertEqual((status, body),
                                 (405, _sv_err("Method Not Allowed")))
                self.assertEqual(_sv_allow(headers), allow)
        self.assertEqual(self.log, [])
        status, _, body = _wsgi(self.app, "GET", "/Recipe")
        self.assertEqual((status, body), (200, (
            b'{"_links": {"self": {"href": "/Recipe"}}, '
            b'"_embedded": {"Recipe": []}}')))

    def test_options_is_204_with_allow(self):
        table = [("/spec.json", {"GET", "HEAD", "OPTIONS"}),
                 ("/Thing/1", {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}),
                 ("/Thing", {"GET", "HEAD", "POST", "OPTIONS"}),
                 ("/actions/noop", {"POST", "OPTIONS"})]
        for path, allow in table:
            with self.subTest(path=path):
                status, headers, body = _wsgi(self.app, "OPTIONS", path)
                self.assertEqual((status, body), (204, b""))
                self.assertEqual(_sv_allow(headers), allow)
                self.assertNotIn("content-type", headers)
                self.assertNotIn("content-length", headers)
        self.assertEqual(self.log, [])

    def test_head_is_get_without_body(self):
        for path in ("/spec.json", "/Thing/1", "/Thing"):
            with self.subTest(path=path):
                _, get_headers, get_body = _wsgi(self.app, "GET", path)
                status, headers, body = _wsgi(self.app, "HEAD", path)
                self.assertEqual((status, body), (200, b""))
                self.assertEqual(headers["content-type"], "application/json")
                self.assertEqual(headers["content-length"],
                                 str(len(get_body)))
                self.assertEqual(get_headers["content-length"],
                                 str(len(get_body)))

    def test_unknown_methods_run_nothing(self):
        table = [("FOO", "/Thing/1"), ("TRACE", "/Thing/1"),
                 ("PROPFIND", "/Thing"), ("TRACE", "/actions/noop"),
                 ("FOO", "/spec.json"), ("CONNECT", "/actions/echo")]
        for method, path in table:
            with self.subTest(method=method, path=path):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    status, headers, body = _wsgi(
                        self.app, method, path, b'"echo me"', _SV_JSON)
                self.assertIn(status, (405, 501))
                message = "Method Not Allowed" if status == 405 \
                    else "Not Implemented"
                self.assertEqual(body, _sv_err(message))
        self.assertEqual(self.log, [])

    def test_ids_are_decoded_path_segments(self):
        table = [("/Thing/a b", "a b", b'"/Thing/a b"'),
                 ("/Thing/caf\u00e9", "caf\u00e9", b'"/Thing/caf\\u00e9"'),
                 ("/Thing/%41", "%41", b'"/Thing/%2541"'),
                 ("/Thing/0", "0", b'"/Thing/0"')]
        for path, ident, href in table:
            with self.subTest(path=path):
                del self.log[:]
                raw = path.encode("utf-8").decode("latin-1")
                status, _, body = _wsgi(self.app, "GET", raw)
                self.assertEqual(status, 200)
                self.assertEqual(self.log, [("get_by_id", ident)])
                self.assertEqual(body, b'{"_links": {"self": {"href": ' +
                                 href + b'}}, "name": ' +
                                 json.dumps(ident).encode() + b'}')

    def test_non_utf8_path_is_400(self):
        for raw in (b"/Thing/\xff", b"/Thing/caf\xe9", b"/\xc3"):
            with self.subTest(raw=raw):
                status, headers, body = _wsgi(self.app, "GET",
                                                 raw.decode("latin-1"))
                self.assertEqual(status, 400)
                self.assertEqual(list(json.loads(body)), ["error"])
                self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(self.log, [])

    def test_query_string_is_not_routing(self):
        status, _, body = _wsgi(self.app, "GET", "/Thing/1",
                                   query="x=/a/b")
        self.assertEqual(status, 200)
        self.assertEqual(self.log, [("get_by_id", "1")])

    def test_routes_follow_later_registrations(self):
        server = Server(self.api)

        @self.api.action(returns=Integer)
        def late():
            return 7
        status, _, body = _wsgi(server.wsgi_app, "POST", "/actions/late")
        self.assertEqual((status, body), (200, b"7"))


class TestBodies(unittest.TestCase):
    def setUp(self):
        _sv_isolate(self)
        self.api, self.log = _sv_things()
        self.app = Server(self.api).wsgi_app

    def echo(self, body, content_type="application/json", app=None,
             **kwargs):
        headers = {} if content_type is None else \
            {"Content-Type": content_type}
        return _wsgi(app or self.app, "POST", "/actions/echo", body,
                        headers, **kwargs)

    def test_media_type(self):
        ok = ["application/json", "APPLICATION/JSON", "Application/Json",
              "application/json; charset=utf-8",
              "application/json;charset=UTF-8",
              "application/json ; charset=Utf-8", "application/json; x=y"]
        for content_type in ok:
            with self.subTest(content_type=content_type):
                status, _, body = self.echo(b'{"a": [1]}', content_type)
                self.assertEqual((status, body), (200, b'{"a": [1]}'))
        refused = [("application/jsonx", "application/jsonx"),
                   ("text/json", "text/json"),
                   ("application", "application"),
                   ("text/plain", "text/plain"),
                   ("Text/Plain; charset=utf-8", "text/plain"),
                   ("", ""), (None, "")]
        for content_type, media in refused:
            with self.subTest(content_type=content_type):
                status, _, body = self.echo(b'{"a": 1}', content_type)
                self.assertEqual((status, body), (400, _sv_err(
                    'Content-Type must be "application/json" got "%s" '
                    'instead' % media)))

    def test_charset(self):
        status, _, body = self.echo(b'"x"', "application/json; "
                                             "charset=latin-1")
        self.assertEqual((status, body), (400, _sv_err(
            'Content-Type charset must be "utf-8" got latin-1 instead')))
        status, _, body = self.echo(b'"x"', "application/json; "
                                             "charset=UTF-8")
        self.assertEqual((status, body), (200, b'"x"'))

    def test_checks_run_in_order(self):
        table = [  # each body fails several checks; the first one is named
            (b'"\xff', "text/plain; charset=latin-1",
             'Content-Type must be "application/json" got "text/plain" '
             'instead'),
            (b'"\xff', "application/json; charset=latin-1",
             'Content-Type charset must be "utf-8" got latin-1 instead'),
            (b'"\xff', "application/json", "Unicode Decode Error"),
            (b'"x', "application/json", "Invalid JSON"),
        ]
        for data, content_type, message in table:
            with self.subTest(content_type=content_type, data=data):
                status, _, body = self.echo(data, content_type)
                self.assertEqual((status, body), (400, _sv_err(message)))

    def test_invalid_utf8(self):
        for data in (b'"\xff"', b'"\xc3"', b'"\xed\xa0\x80"'):
            with self.subTest(data=data):
                status, _, body = self.echo(data)
                self.assertEqual((status, body),
                                 (400, _sv_err("Unicode Decode Error")))

    def test_invalid_json(self):
        table = [b"{", b"{'a': 1}", b"NaN", b"Infinity", b"-Infinity",
                 b"[NaN]", b'{"a": Infinity}', b"1e999", b"-1e999",
                 b"[1e400]", b"\xef\xbb\xbf\"x\"", b"undefined", b"1 2",
                 b'"a" x', b"[1,]", b"01"]
        for data in table:
            with self.subTest(data=data):
                status, _, body = self.echo(data)
                self.assertEqual((status, body),
                                 (400, _sv_err("Invalid JSON")))
        self.assertEqual(self.log, [])

    def test_json_that_passes(self):
        table = [(b"1e2", b"100.0"), (b"1.5e300", b"1.5e+300"),
                 (b'"\\u00e9"', b'"\\u00e9"'), (b' [1, 2] ', b"[1, 2]"),
                 (b"-0", b"0"), (b"null", b"null"),
                 ('"caf\u00e9"'.encode(), b'"caf\\u00e9"')]
        for data, expected in table:
            with self.subTest(data=data):
                status, _, body = self.echo(data)
                self.assertEqual((status, body), (200, expected))

    def test_huge_integer_is_400(self):
        status, _, body = self.echo(b"9" * 10000)
        self.assertEqual(status, 400)
        self.assertEqual(body, _sv_err(
            "Invalid JSON: integer with more than 1000 digits"))
        self.assertEqual(self.log, [])

    def test_deep_nesting_is_400_without_recursion_error(self):
        table = [b"[" * 100000 + b"]" * 100000,
                 b'{"a": ' * 100000 + b"1" + b"}" * 100000,
                 b"[" * 100000]
        for data in table:
            with self.subTest(size=len(data)):
                status, _, body = self.echo(data)
                self.assertEqual(status, 400)
                self.assertTrue(
                    json.loads(body)["error"].startswith("Invalid JSON"),
                    body)
        self.assertEqual(self.log, [])

    def test_default_depth_limit_is_100(self):
        deep = b"[" * 101 + b"]" * 101
        status, _, body = self.echo(deep)
        self.assertEqual(status, 400)
        self.assertTrue(json.loads(body)["error"].startswith("Invalid JSON"))
        for depth in (99, 100):
            with self.subTest(depth=depth):
                data = b"[" * depth + b"]" * depth
                status, _, body = self.echo(data)
                self.assertEqual((status, body),
                                 (200, json.dumps(json.loads(data)).encode()))

    def test_brackets_inside_strings_and_wide_arrays_are_not_deep(self):
        table = [json.dumps("[" * 500).encode(),
                 json.dumps(["{[" * 200, {"k[": "]}" * 200}]).encode(),
                 json.dumps([[] for _ in range(1000)]).encode(),
                 json.dumps([[[1]] for _ in range(500)]).encode()]
        for data in table:
            with self.subTest(data=data[:20]):
                status, _, body = self.echo(data)
                self.assertEqual((status, body), (200, data))

    def test_max_json_depth_option(self):
        app = Server(self.api, max_json_depth=3).wsgi_app
        status, _, body = self.echo(b"[[[1]]]", app=app)
        self.assertEqual((status, body), (200, b"[[[1]]]"))
        status, _, body = self.echo(b"[[[[1]]]]", app=app)
        self.assertEqual(status, 400)
        self.assertTrue(json.loads(body)["error"].startswith("Invalid JSON"))

    def test_empty_body_rules(self):
        table = [
            ("POST", "/actions/echo", b"", "Expected Box, found None"),
            ("POST", "/actions/takes", b"", "Expected Box, found None"),
            ("POST", "/actions/noop", b"null", "Expected None, found Box"),
            ("POST", "/actions/noop", b"{}", "Expected None, found Box"),
            ("POST", "/actions/noop", b'""', "Expected None, found Box"),
            ("GET", "/Thing/1", b"{}", "Invalid data"),
            ("GET", "/Thing/1", b"null", "Invalid data"),
            ("POST", "/Thing", b"", "Invalid data"),
            ("PUT", "/Thing/1", b"", "Invalid data"),
            ("DELETE", "/Thing/1", b"{}", "Invalid data"),
            ("GET", "/Thing", b"null", "Invalid data"),
        ]
        for method, path, data, message in table:
            with self.subTest(method=method, path=path, data=data):
                status, _, body = _wsgi(self.app, method, path, data,
                                           _SV_JSON)
                self.assertEqual((status, body), (400, _sv_err(message)))
        self.assertEqual(self.log, [])

    def test_empty_body_needs_no_content_type(self):
        table = [("POST", "/actions/noop", {}, 204),
                 ("GET", "/Thing/1", _SV_JSON, 200),
                 ("GET", "/Thing", {"Content-Type": "text/plain"}, 200),
                 ("DELETE", "/Thing/1", {}, 204)]
        for method, path, headers, code in table:
            with self.subTest(method=method, path=path):
                status, _, _ = _wsgi(self.app, method, path, b"", headers)
                self.assertEqual(status, code)

    def test_body_is_decoded_before_the_emptiness_rule(self):
        for method, path in (("GET", "/Thing/1"), ("DELETE", "/Thing/1"),
                             ("GET", "/Thing"), ("POST", "/actions/noop")):
            with self.subTest(method=method, path=path):
                status, _, body = _wsgi(self.app, method, path, b"hello",
                                           {"Content-Type": "text/plain"})
                self.assertEqual((status, body), (400, _sv_err(
                    'Content-Type must be "application/json" got '
                    '"text/plain" instead')))
        self.assertEqual(self.log, [])

    def test_spec_ignores_the_body(self):
        status, _, body = _wsgi(self.app, "GET", "/spec.json", b"\xff{",
                                   {"Content-Type": "text/plain"})
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["name"], "rt")

    def test_null_is_a_boxed_value(self):
        status, _, body = self.echo(b"null")
        self.assertEqual((status, body), (200, b"null"))
        (name, value), = self.log
        self.assertIsInstance(value, Box)
        self.assertIsNone(value.datum)
        del self.log[:]
        status, _, body = _wsgi(self.app, "POST", "/actions/takes",
                                   b"null", _SV_JSON)
        self.assertEqual((status, body),
                         (400, _sv_err("Invalid String: None")))
        self.assertEqual(self.log, [])

    def test_too_large_is_413_without_reading(self):
        app = Server(self.api, max_content_length=100).wsgi_app
        for length in ("101", "1000000000000"):
            with self.subTest(length=length):
                stream = _sv_NoRead()
                status, headers, body = _wsgi(
                    app, "POST", "/actions/echo", b"", _SV_JSON,
                    environ={"CONTENT_LENGTH": length, "wsgi.input": stream})
                self.assertEqual((status, body), (413, _sv_err(
                    "Request Entity Too Large")))
                self.assertEqual(headers["content-type"], "application/json")
                self.assertEqual(stream.touched, [])
        self.assertEqual(self.log, [])

    def test_body_at_the_limit_is_read(self):
        app = Server(self.api, max_content_length=100).wsgi_app
        data = json.dumps("x" * 98).encode()
        self.assertEqual(len(data), 100)
        status, _, body = self.echo(data, app=app)
        self.assertEqual((status, body), (200, data))

    def test_default_limit_refuses_a_huge_length(self):
        stream = _sv_NoRead()
        status, _, body = _wsgi(
            self.app, "POST", "/actions/echo", b"", _SV_JSON,
            environ={"CONTENT_LENGTH": str(10 ** 12), "wsgi.input": stream})
        self.assertEqual((status, body),
                         (413, _sv_err("Request Entity Too Large")))
        self.assertEqual(stream.touched, [])

    def test_bad_content_length_is_400(self):
        for length in ("abc", "-1", "1.5", "0x10", "\u0661", "5 5"):
            with self.subTest(length=length):
                status, headers, body = _wsgi(
                    self.app, "POST", "/actions/echo", b"", _SV_JSON,
                    environ={"CONTENT_LENGTH": length,
                             "wsgi.input": io.BytesIO(b'"abcde"')},
                    validate=False)
                self.assertEqual(status, 400)
                self.assertEqual(list(json.loads(body)), ["error"])
                self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(self.log, [])

    def test_input_shorter_than_content_length_is_400(self):
        status, _, body = _wsgi(
            self.app, "POST", "/actions/echo", b"", _SV_JSON,
            environ={"CONTENT_LENGTH": "10",
                     "wsgi.input": io.BytesIO(b'"abc"')})
        self.assertEqual(status, 400)
        self.assertEqual(list(json.loads(body)), ["error"])
        self.assertEqual(self.log, [])

    def test_input_is_read_only_up_to_content_length(self):
        status, _, body = _wsgi(
            self.app, "POST", "/actions/echo", b"", _SV_JSON,
            environ={"CONTENT_LENGTH": "5",
                     "wsgi.input": io.BytesIO(b'"abc"garbage')})
        self.assertEqual((status, body), (200, b'"abc"'))

    def test_empty_content_length_means_no_body(self):
        stream = _sv_NoRead()
        status, _, body = _wsgi(
            self.app, "POST", "/actions/noop", b"",
            environ={"CONTENT_LENGTH": "", "wsgi.input": stream})
        self.assertEqual((status, body), (204, b""))
        status, _, body = _wsgi(
            self.app, "POST", "/actions/noop", b"",
            environ={"CONTENT_LENGTH": "0", "wsgi.input": io.BytesIO(b"x")})
        self.assertEqual((status, body), (204, b""))

    def test_chunked_without_length(self):
        stream = _sv_NoRead()
        status, _, body = _wsgi(
            self.app, "POST", "/actions/echo", b"", _SV_JSON,
            environ={"HTTP_TRANSFER_ENCODING": "chunked",
                     "wsgi.input": stream})
        self.assertIn(status, (411,))
        self.assertEqual(body, _sv_err("Length Required"))
        self.assertEqual(stream.touched, [])
        status, _, body = _wsgi(
            self.app, "POST", "/actions/echo", b"", _SV_JSON,
            environ={"HTTP_TRANSFER_ENCODING": "chunked",
                     "wsgi.input_terminated": True,
                     "wsgi.input": io.BytesIO(b'{"k": "v"}')})
        self.assertEqual((status, body), (200, b'{"k": "v"}'))

    def test_unknown_transfer_coding_is_501(self):
        stream = _sv_NoRead()
        status, _, body = _wsgi(
            self.app, "POST", "/actions/echo", b"", _SV_JSON,
            environ={"HTTP_TRANSFER_ENCODING": "gzip", "wsgi.input": stream})
        self.assertEqual(status, 501)
        self.assertEqual(list(json.loads(body)), ["error"])
        self.assertEqual(stream.touched, [])


class TestResponses(unittest.TestCase):
    def setUp(self):
        _sv_isolate(self)
        self.api, self.log = _sv_things()
        self.app = Server(self.api).wsgi_app

    def test_pencils(self):
        app = Server(_sv_cookbook()).wsgi_app
        status, headers, body = _wsgi_json(app, "POST", "/actions/pluralize",
                                         "pencil")
        self.assertEqual((status, body), (200, b'"pencils"'))
        self.assertEqual(headers["content-length"], "9")
        self.assertEqual(headers["content-type"], "application/json")

    def test_tutorial_error_body(self):
        app = Server(_sv_cookbook()).wsgi_app
        status, headers, body = _wsgi(app, "POST", "/actions/pluralize",
                                         b"1", _SV_JSON)
        self.assertEqual((status, body),
                         (400, b'{"error": "Invalid String: 1"}'))
        self.assertEqual(headers["content-length"], "30")

    def test_every_response_has_content_length(self):
        table = [("GET", "/spec.json", b"", 200),
                 ("POST", "/actions/echo", b'{"a": "\\u00e9"}', 200),
                 ("POST", "/actions/noop", b"", 204),
                 ("GET", "/Thing/1", b"", 200),
                 ("GET", "/Thing", b"", 200),
                 ("POST", "/Thing", b'{"name": "x"}', 201),
                 ("PUT", "/Thing/1", b'{"name": "y"}', 200),
                 ("DELETE", "/Thing/1", b"", 204),
                 ("GET", "/Thing/missing", b"", 404),
                 ("GET", "/nope/a/b", b"", 404),
                 ("PUT", "/spec.json", b"", 405),
                 ("OPTIONS", "/Thing", b"", 204),
                 ("POST", "/actions/echo", b"{", 400)]
        for method, path, data, code in table:
            with self.subTest(method=method, path=path):
                status, headers, body = _wsgi(self.app, method, path,
                                                 data, _SV_JSON)
                self.assertEqual(status, code)
                if code == 204:  # no body, so no length (RFC 9110 8.6)
                    self.assertEqual(body, b"")
                    self.assertNotIn("content-type", headers)
                    self.assertNotIn("content-length", headers)
                    continue
                self.assertEqual(headers["content-length"], str(len(body)))
                self.assertEqual(headers["content-type"], "application/json")

    def test_json_output_uses_default_dumps(self):
        status, _, body = _wsgi_json(self.app, "POST", "/actions/echo",
                                   {"b": ["caf\u00e9", 1.5], "a": None})
        self.assertEqual((status, body),
                         (200, b'{"b": ["caf\\u00e9", 1.5], "a": null}'))

    def test_error_bodies_have_exactly_one_key(self):
        table = [("GET", "/nope/a/b", b""), ("PUT", "/spec.json", b""),
                 ("POST", "/actions/echo", b"{"),
                 ("POST", "/actions/echo", b""),
                 ("GET", "/Thing/missing", b""),
                 ("POST", "/Thing", b'{"nope": 1}')]
        for method, path, data in table:
            with self.subTest(method=method, path=path, data=data):
                status, headers, body = _wsgi(self.app, method, path,
                                                 data, _SV_JSON)
                self.assertGreaterEqual(status, 400)
                error = json.loads(body)
                self.assertEqual(list(error), ["error"])
                self.assertIsInstance(error["error"], str)


class TestErrors(unittest.TestCase):
    def setUp(self):
        _sv_isolate(self)
        self.app = Server(_sv_errors_api()).wsgi_app

    def assert_500(self, method, path, data=b"", exc_type=None):
        with self.assertLogs("cosmic", "ERROR") as cm:
            status, headers, body = _wsgi(self.app, method, path, data,
                                             _SV_JSON)
        self.assertEqual((status, body),
                         (500, b'{"error": "Internal Server Error"}'))
        self.assertEqual(headers["content-type"], "application/json")
        self.assertNotIn(b"secret", body)
        self.assertEqual(len(cm.records), 1)
        self.assertIsNotNone(cm.records[0].exc_info)
        if exc_type is not None:
            self.assertIs(cm.records[0].exc_info[0], exc_type)
        self.assertIn("Traceback", cm.output[0])
        return cm

    def test_wrong_return_value_is_500_and_logged(self):
        for name in ("wrong_type", "returns_none", "returns_data"):
            with self.subTest(name=name):
                self.assert_500("POST", "/actions/" + name,
                                exc_type=ValidationError)

    def test_unhandled_exception_is_500_and_logged(self):
        cm = self.assert_500("POST", "/actions/crash", exc_type=ValueError)
        self.assertIn("secret-text", cm.output[0])

    def test_validation_error_from_a_handler_is_500(self):
        self.assert_500("POST", "/actions/invalid_inside",
                        exc_type=ValidationError)

    def test_http_error_from_a_handler(self):
        status, headers, body = _wsgi(self.app, "POST", "/actions/teapot")
        self.assertEqual((status, body), (418, b'{"error": "teapot"}'))
        self.assertEqual(headers["content-type"], "application/json")

    def test_http_error_codes_and_default_messages(self):
        api = API("codes")
        raised = []

        @api.action()
        def fail():
            raise raised[0]

        app = Server(api).wsgi_app
        table = [(HTTPError(403), 403, "Forbidden"),
                 (HTTPError(409, "City has addresses"), 409,
                  "City has addresses"),
                 (HTTPError(499, "odd"), 499, "odd"),
                 (HTTPError(503, "later"), 503, "later")]
        for exc, code, message in table:
            with self.subTest(code=code):
                raised[:] = [exc]
                status, headers, body = _wsgi(app, "POST", "/actions/fail")
                self.assertEqual((status, body), (code, _sv_err(message)))
                self.assertEqual(headers["content-type"], "application/json")

    def test_not_found_from_model_items_is_404(self):
        table = [("GET", "/Lost/1", b""), ("PUT", "/Lost/1", b"{}"),
                 ("DELETE", "/Lost/1", b"")]
        for method, path, data in table:
            with self.subTest(method=method):
                status, headers, body = _wsgi(self.app, method, path, data,
                                                 _SV_JSON)
                self.assertEqual((status, body), (404, b'{"error": "Not '
                                                       b'Found"}'))
                self.assertEqual(headers["content-type"], "application/json")

    def test_not_found_elsewhere_is_500(self):
        table = [("POST", "/actions/lost", b""), ("POST", "/Lost", b"{}"),
                 ("GET", "/Lost", b"")]
        for method, path, data in table:
            with self.subTest(method=method, path=path):
                self.assert_500(method, path, data, exc_type=NotFound)

    def test_debug_propagates(self):
        app = Server(_sv_errors_api(), debug=True).wsgi_app
        with self.assertRaises(ValueError) as cm:
            _wsgi(app, "POST", "/actions/crash")
        self.assertEqual(str(cm.exception), "secret-text")
        with self.assertRaises(ValidationError):
            _wsgi(app, "POST", "/actions/wrong_type")
        self.assertEqual(storage, {})

    def test_debug_keeps_client_errors(self):
        app = Server(_sv_errors_api(), debug=True).wsgi_app
        status, _, body = _wsgi(app, "POST", "/actions/strict", b"{",
                                   _SV_JSON)
        self.assertEqual((status, body), (400, _sv_err("Invalid JSON")))
        status, _, body = _wsgi(app, "GET", "/Lost/1")
        self.assertEqual((status, body), (404, _sv_err("Not Found")))

    def test_unhandled_exception_hook_override(self):
        seen = []

        class OopsServer(Server):
            def unhandled_exception_hook(self, exc, request):
                seen.append((type(exc), request.path))
                return error_response("Oops", 503)

        app = OopsServer(_sv_errors_api()).wsgi_app
        status, headers, body = _wsgi(app, "POST", "/actions/crash")
        self.assertEqual((status, body), (503, b'{"error": "Oops"}'))
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(seen, [(ValueError, "/actions/crash")])

    def test_request_id(self):
        status, headers, _ = _wsgi(self.app, "GET", "/Lost/1",
                                      headers={"X-Request-ID": "abc-123"})
        self.assertEqual((status, headers["x-request-id"]), (404, "abc-123"))
        for insane in ("a b", "x" * 300, "<script>", "", "caf\u00e9",
                       "a,b"):
            with self.subTest(insane=insane):
                status, headers, _ = _wsgi(
                    self.app, "GET", "/Lost/1",
                    headers={"X-Request-ID": insane})
                self.assertEqual(status, 404)
                got = headers["x-request-id"]
                self.assertNotEqual(got, insane)
                self.assertRegex(got, _SV_SANE_ID)
        _, first, _ = _wsgi(self.app, "GET", "/Lost/1")
        _, second, _ = _wsgi(self.app, "GET", "/Lost/1")
        self.assertRegex(first["x-request-id"], _SV_SANE_ID)
        self.assertNotEqual(first["x-request-id"], second["x-request-id"])


class TestProblemDetails(unittest.TestCase):
    PROBLEM = {"Accept": "application/problem+json"}

    def setUp(self):
        _sv_isolate(self)
        self.log = []
        self.app = Server(_sv_errors_api(self.log)).wsgi_app

    def problem(self, method, path, data=b"", headers=None, query=""):
        all_headers = dict(_SV_JSON, **self.PROBLEM)
        all_headers.update(headers or {})
        status, headers, body = _wsgi(self.app, method, path, data,
                                         all_headers, query=query)
        self.assertEqual(headers["content-type"], "application/problem+json")
        self.assertEqual(headers["content-length"], str(len(body)))
        problem = json.loads(body)
        instance = problem.pop("instance", None)
        self.assertIn(type(instance), (str, type(None)))
        return status, headers, problem

    def test_default_error_body_is_unchanged(self):
        for accept in (None, "application/json", "*/*", "text/html"):
            with self.subTest(accept=accept):
                headers = {} if accept is None else {"Accept": accept}
                status, headers, body = _wsgi(self.app, "GET", "/Lost/1",
                                                 headers=headers)
                self.assertEqual((status, body), (404, _sv_err("Not Found")))
                self.assertEqual(headers["content-type"], "application/json")

    def test_not_found_as_problem(self):
        status, _, problem = self.problem("GET", "/Lost/1")
        self.assertEqual((status, problem), (404, {
            "type": "about:blank", "title": "Not Found", "status": 404,
            "detail": "Not Found"}))

    def test_method_not_allowed_keeps_allow(self):
        status, headers, problem = self.problem("PUT", "/spec.json")
        self.assertEqual((status, problem), (405, {
            "type": "about:blank", "title": "Method Not Allowed",
            "status": 405, "detail": "Method Not Allowed"}))
        self.assertEqual(_sv_allow(headers), {"GET", "HEAD", "OPTIONS"})

    def test_http_error_as_problem(self):
        status, _, problem = self.problem("POST", "/actions/teapot",
                                          headers={"Accept": "application/"
                                                   "problem+json, */*"})
        self.assertEqual((status, problem["status"], problem["detail"]),
                         (418, 418, "teapot"))
        self.assertEqual(problem["type"], "about:blank")
        self.assertIsInstance(problem["title"], str)

    def test_validation_failure_lists_every_problem(self):
        data = json.dumps({"a": "x", "b": 1, "c": [True, 0, "no"]})
        status, _, problem = self.problem("POST", "/actions/strict", data)
        self.assertEqual((status, problem), (400, {
            "type": "about:blank", "title": "Bad Request", "status": 400,
            "detail": "Item at ['a'] Invalid Integer: 'x'",
            "errors": [
                {"detail": "Invalid Integer: 'x'", "pointer": "/a"},
                {"detail": "Invalid String: 1", "pointer": "/b"},
                {"detail": "Invalid Boolean: 0", "pointer": "/c/1"},
                {"detail": "Invalid Boolean: 'no'", "pointer": "/c/2"}]}))
        self.assertEqual(self.log, [])

    def test_structure_problems(self):
        data = json.dumps({"b": 2, "z": 1})
        status, _, problem = self.problem("POST", "/actions/strict", data)
        self.assertEqual(status, 400)
        self.assertEqual(problem["errors"], [
            {"detail": "Missing fields: ['a']", "pointer": ""},
            {"detail": "Unexpected fields: ['z']", "pointer": ""},
            {"detail": "Invalid String: 2", "pointer": "/b"}])

    def test_query_problem(self):
        status, _, problem = self.problem("GET", "/Lost", query="n=x")
        self.assertEqual((status, problem["detail"]),
                         (400, "Item at ['n'] Invalid JSON: 'x'"))
        self.assertEqual(problem["errors"],
                         [{"detail": "Invalid JSON: 'x'", "pointer": "/n"}])

    def test_body_problem_has_no_errors_list(self):
        status, _, problem = self.problem("POST", "/actions/strict", b"{")
        self.assertEqual((status, problem), (400, {
            "type": "about:blank", "title": "Bad Request", "status": 400,
            "detail": "Invalid JSON"}))

    def test_server_error_as_problem(self):
        with self.assertLogs("cosmic", "ERROR"):
            status, _, problem = self.problem("POST", "/actions/crash")
        self.assertEqual((status, problem), (500, {
            "type": "about:blank", "title": "Internal Server Error",
            "status": 500, "detail": "Internal Server Error"}))

    def test_success_is_unaffected(self):
        status, headers, body = _wsgi(self.app, "GET", "/spec.json",
                                         headers=self.PROBLEM)
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/json")


class TestServerHooks(unittest.TestCase):
    def setUp(self):
        _sv_isolate(self)

    def test_planetarium_auth_view(self):
        planetarium = API("planetarium")

        @planetarium.action(returns=String)
        def hello():
            return "hi"

        class PlanetariumServer(Server):

            def view(self, endpoint, request, **url_args):
                if request.headers.get('Authorization', None) != 'secret':
                    return error_response("Unauthorized", 401)
                return super(PlanetariumServer, self).view(
                    endpoint, request, **url_args)

        wsgi_app = PlanetariumServer(planetarium).wsgi_app
        for path, method in (("/spec.json", "GET"),
                             ("/actions/hello", "POST")):
            with self.subTest(path=path):
                status, headers, body = _wsgi(wsgi_app, method, path)
                self.assertEqual((status, body),
                                 (401, b'{"error": "Unauthorized"}'))
                self.assertEqual(headers["content-type"], "application/json")
                status, _, body = _wsgi(wsgi_app, method, path,
                                           headers={"Authorization": "wrong"})
                self.assertEqual(status, 401)
        status, _, body = _wsgi(wsgi_app, "POST", "/actions/hello",
                                   headers={"Authorization": "secret"})
        self.assertEqual((status, body), (200, b'"hi"'))
        status, _, body = _wsgi(wsgi_app, "GET", "/spec.json",
                                   headers={"authorization": "secret"})
        self.assertEqual((status, json.loads(body)["name"]),
                         (200, "planetarium"))

    def test_parse_request_may_raise_http_error(self):
        api, log = _sv_things()

        class StrictServer(Server):
            def parse_request(self, endpoint, request, **url_args):
                if request.headers.get("Authorization") != "secret":
                    raise HTTPError(401, "Unauthorized")
                return super().parse_request(endpoint, request, **url_args)

        app = StrictServer(api).wsgi_app
        status, _, body = _wsgi_json(app, "POST", "/actions/echo", [1])
        self.assertEqual((status, body), (401, _sv_err("Unauthorized")))
        self.assertEqual(log, [])
        status, _, body = _wsgi_json(app, "POST", "/actions/echo", [1],
                                   headers={"Authorization": "secret"})
        self.assertEqual((status, body), (200, b"[1]"))

    def test_view_may_raise_http_error(self):
        api, log = _sv_things()

        class Locked(Server):
            def view(self, endpoint, request, **url_args):
                raise HTTPError(403, "Locked")

        status, _, body = _wsgi(Locked(api).wsgi_app, "GET", "/Thing/1")
        self.assertEqual((status, body), (403, _sv_err("Locked")))
        self.assertEqual(log, [])

    def test_view_gets_endpoint_request_and_url_args(self):
        api, _ = _sv_things()
        seen = []

        class Spy(Server):
            def view(self, endpoint, request, **url_args):
                seen.append((type(endpoint).__name__, endpoint.method,
                             request.method, request.path, url_args,
                             request.args.get("q"), request.mimetype,
                             request.data))
                return super().view(endpoint, request, **url_args)

        app = Spy(api).wsgi_app
        _wsgi(app, "GET", "/Thing/caf\u00e9".encode().decode("latin-1"),
                 query="q=1")
        _wsgi(app, "POST", "/actions/echo", b"[2]",
                 {"Content-Type": "Application/JSON; charset=utf-8"})
        self.assertEqual(seen, [
            ("GetByIdEndpoint", "GET", "GET", "/Thing/caf\u00e9",
             {"id": "caf\u00e9"}, "1", "", b""),
            ("ActionEndpoint", "POST", "POST", "/actions/echo", {}, None,
             "application/json", b"[2]")])

    def test_custom_server_stores_the_current_user(self):
        api = API("users")
        g = ThreadLocalDict()

        @api.action(returns=String)
        def whoami():
            return g['current_user']

        class CustomServer(Server):

            def view(self, endpoint, request, **url_args):
                secret = request.headers.get('Authorization', None)
                if secret == '12345':
                    g['current_user'] = 'bob@example.com'
                elif secret == 'qwert':
                    g['current_user'] = 'alice@example.com'
                else:
                    return error_response("Unauthorized", 401)
                return super(CustomServer, self).view(endpoint, request,
                                                      **url_args)

        app = CustomServer(api).wsgi_app
        table = [("12345", 200, b'"bob@example.com"'),
                 ("qwert", 200, b'"alice@example.com"'),
                 (None, 401, b'{"error": "Unauthorized"}')]
        for secret, code, expected in table:
            with self.subTest(secret=secret):
                headers = {} if secret is None else {"Authorization": secret}
                status, _, body = _wsgi(app, "POST", "/actions/whoami",
                                           headers=headers)
                self.assertEqual((status, body), (code, expected))
        self.assertEqual(storage, {})
        self.assertEqual(repr(g), "<unbound ThreadLocalDict>")
        with g.swap({'current_user': 'carol@example.com'}):
            self.assertEqual(api.actions.whoami(), 'carol@example.com')


class TestHTTPDetails(unittest.TestCase):
    """No length on 204; OPTIONS *; ids in hrefs and Location."""

    def setUp(self):
        _sv_isolate(self)
        self.next_id = ["1"]
        self.api, self.things = _sv_ids(self.next_id)
        self.app = Server(self.api).wsgi_app

    def test_no_content_length_on_204(self):
        status, headers, body = _wsgi(self.app, "POST", "/actions/noop")
        self.assertEqual((status, body), (204, b""))
        self.assertNotIn("content-length", headers)
        response = cosmic.Response(b"ignored", 204)
        seen = {}
        body = response({"REQUEST_METHOD": "GET"},
                        lambda status, headers: seen.update(headers))
        self.assertEqual((body, seen), ([b""], {}))
        seen.clear()
        body = cosmic.Response(b"", 304, {"ETag": '"a"'})(
            {"REQUEST_METHOD": "GET"},
            lambda status, headers: seen.update(headers))
        self.assertEqual((body, seen), ([b""], {"ETag": '"a"'}))

    def test_options_asterisk(self):
        for environ in ({"PATH_INFO": "*"}, {"REQUEST_URI": "*"},
                        {"PATH_INFO": "", "RAW_URI": "*"}):
            with self.subTest(environ=environ):
                status, headers, body = _wsgi(self.app, "OPTIONS", "/",
                                                 environ=environ,
                                                 validate=False)
                self.assertEqual((status, body), (204, b""))
                self.assertEqual(_sv_allow(headers), {
                    "DELETE", "GET", "HEAD", "OPTIONS", "POST"})
                self.assertNotIn("content-length", headers)
        status, _, _ = _wsgi(self.app, "GET", "*", validate=False)
        self.assertEqual(status, 404)

    def test_over_http(self):
        with served_api(self.api) as url:
            parts = urlsplit(url)
            with socket.create_connection((parts.hostname, parts.port),
                                          timeout=10) as sock:
                sock.sendall(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"POST /actions/noop HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: 0\r\n\r\n"
                             b"GET /Thing/zz HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        answers = data.split(b"HTTP/1.1 ")[1:]
        self.assertEqual([a[:3] for a in answers], [b"204", b"204", b"404"])
        for answer in answers[:2]:
            head = answer.lower()
            self.assertNotIn(b"content-length", head)
            self.assertTrue(head.endswith(b"\r\n\r\n"), head)
        self.assertIn(b"allow: delete, get, head, options, post",
                      answers[0].lower())

    def test_ids_over_http(self):
        self.next_id[0] = "a?admin=1"
        _wsgi_json(self.app, "POST", "/Thing", {"name": "q"})
        self.next_id[0] = "admin"
        _wsgi_json(self.app, "POST", "/Thing", {"name": "other"})
        with served_api(self.api) as url:
            client = APIClient(url)
            self.addCleanup(client.close)
            Thing = client.models.Thing
            self.assertEqual(Thing.get_by_id("a?admin=1"), {"name": "q"})
            self.assertEqual(dict(Thing.get_list())["a?admin=1"],
                             {"name": "q"})
            conn = http.client.HTTPConnection(urlsplit(url).hostname,
                                              urlsplit(url).port, timeout=10)
            self.addCleanup(conn.close)
            conn.request("GET", "/Thing/a%3Fadmin%3D1")
            body = json.loads(conn.getresponse().read())
            self.assertEqual(body["_links"]["self"]["href"],
                             "/Thing/a%3Fadmin=1")
            conn.request("GET", "/Thing/%2E%2E")
            res = conn.getresponse()
            self.assertEqual((res.status, res.read()), (400, _sv_err(
                "Invalid Thing id: .. (a dot segment)")))
            with self.assertRaises(ValidationError):
                Thing.get_by_id("..")

    def test_hrefs_escape_question_marks_and_hashes(self):
        table = [("a?admin=1", "/Thing/a%3Fadmin=1", "/Thing/a%3Fadmin%3D1"),
                 ("x#y", "/Thing/x%23y", "/Thing/x%23y"),
                 ("%3F", "/Thing/%253F", "/Thing/%253F"),
                 ("caf\u00e9 1", "/Thing/caf\u00e9 1", "/Thing/caf%C3%A9%201"),
                 ("a/b?c#d%", "/Thing/a%2Fb%3Fc%23d%25",
                  "/Thing/a%2Fb%3Fc%23d%25")]
        client = WsgiAPIClient.for_api(self.api)
        for ident, href, location in table:
            with self.subTest(ident=ident):
                self.next_id[0] = ident
                status, headers, body = _wsgi_json(self.app, "POST", "/Thing",
                                                 {"name": "n"})
                self.assertEqual(status, 201)
                self.assertEqual(headers["location"], location)
                self.assertEqual(json.loads(body)["_links"]["self"]["href"],
                                 href)
                self.assertEqual(Link(Model("ids2.Thing")).to_json(ident),
                                 href)
                self.assertEqual(Link(Model("ids2.Thing")).from_json(href),
                                 ident)
                self.assertEqual(client.models.Thing.get_by_id(ident),
                                 {"name": "n"})
                # The href resolves to this object, not to another one.
                resolved = urlsplit("http://h" + href)
                self.assertEqual((resolved.query, resolved.fragment),
                                 ("", ""))
        listed = dict(client.models.Thing.get_list())
        self.assertEqual(sorted(listed), sorted(i for i, _, _ in table))

    def test_dot_ids_are_refused(self):
        for ident in (".", ".."):
            with self.subTest(ident=ident):
                for path in ("/Thing/" + ident,
                             "/Thing/" + ident.replace(".", "%2E")):
                    status, _, body = _wsgi(
                        self.app, "GET", unquote_to_bytes(path).decode(),
                        environ={"REQUEST_URI": path})
                    self.assertEqual((status, body), (400, _sv_err(
                        "Invalid Thing id: %s (a dot segment)" % ident)))
                link = Link(Model("ids2.Thing"))
                with self.assertRaises(ValidationError):
                    link.to_json(ident)
                with self.assertRaises(ValidationError):
                    link.from_json("/Thing/" + ident)
                status, _, _ = _wsgi_json(self.app, "POST", "/Thing", {
                    "_links": {"other": {"href": "/Thing/" + ident}}})
                self.assertEqual(status, 400)
                client = WsgiAPIClient.for_api(self.api)
                for call in (client.models.Thing.get_by_id,
                             client.models.Thing.delete):
                    with self.assertRaises(ValidationError):
                        call(ident)
                self.next_id[0] = ident
                with self.assertLogs("cosmic", "ERROR") as cm:
                    status, _, _ = _wsgi_json(self.app, "POST", "/Thing", {})
                self.assertEqual(status, 500)
                self.assertIn("Return value of Thing.create failed "
                              "validation", cm.output[0])
        self.assertEqual(_wsgi(self.app, "GET", "/Thing/.x")[0], 404)


class TestServerShape(unittest.TestCase):
    """The WSGI application reads in small pieces (no body over 200
    lines); Server keeps its hooks, in the order a request meets them."""

    NAMES = ("Response", "Request", "Endpoint", "ActionEndpoint",
             "_ModelEndpoint", "GetByIdEndpoint", "CreateEndpoint",
             "_WriteEndpoint", "UpdateEndpoint", "DeleteEndpoint",
             "GetListEndpoint", "_Routes", "_ServerCORS", "_ServerRoutes",
             "Server")

    def test_no_body_over_200_lines(self):
        with open(cosmic.__file__, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        found = {}
        for node in tree.body:
            if getattr(node, "name", None) in self.NAMES:
                found[node.name] = node.end_lineno - node.lineno + 1
                for inner in ast.walk(node):
                    if isinstance(inner, ast.FunctionDef):
                        self.assertLessEqual(
                            inner.end_lineno - inner.lineno + 1, 200,
                            "%s.%s" % (node.name, inner.name))
        self.assertEqual(sorted(found), sorted(self.NAMES))
        for name, size in found.items():
            with self.subTest(name=name):
                self.assertLessEqual(size, 200)

    def test_hooks_in_request_order(self):
        hooks = ["wsgi_app", "dispatch_request", "view", "parse_request",
                 "build_response", "unhandled_exception_hook"]
        own = [name for name in vars(Server) if name in hooks]
        self.assertEqual(own, hooks)
        order = []

        class Traced(Server):
            def dispatch_request(self, request):
                order.append("dispatch_request")
                return super().dispatch_request(request)

            def view(self, endpoint, request, **url_args):
                order.append("view")
                return super().view(endpoint, request, **url_args)

            def parse_request(self, endpoint, request, **url_args):
                order.append("parse_request")
                return super().parse_request(endpoint, request, **url_args)

            def build_response(self, endpoint, func_input, func_output):
                order.append("build_response")
                raise ValueError("boom")

            def unhandled_exception_hook(self, exc, request):
                order.append("unhandled_exception_hook")
                return super().unhandled_exception_hook(exc, request)

        _sv_isolate(self)
        api, _, _ = _sv_towns()
        with self.assertLogs("cosmic", "ERROR"):
            status, _, _ = _wsgi(Traced(api).wsgi_app, "GET", "/Town/1")
        self.assertEqual(status, 500)
        self.assertEqual(order, hooks[1:])


class TestConditionalRequests(unittest.TestCase):
    """ETag on GET /<Model>/<id>; If-None-Match, If-Match (RFC 9110 13)."""

    def setUp(self):
        _sv_isolate(self)
        self.api, self.towns, self.log = _sv_towns()
        self.app = Server(self.api).wsgi_app

    def tag(self, path="/Town/1"):
        status, headers, _ = _wsgi(self.app, "GET", path)
        self.assertEqual(status, 200)
        return headers["etag"]

    def test_get_has_a_strong_tag_from_the_representation(self):
        status, headers, body = _wsgi(self.app, "GET", "/Town/1")
        self.assertEqual(status, 200)
        tag = headers["etag"]
        self.assertRegex(tag, r'\A"[0-9a-f]{32}"\Z')
        self.assertEqual(tag, '"%s"' % hashlib.blake2b(
            body, digest_size=16).hexdigest())
        self.assertEqual(self.tag(), tag)  # the same for the same object
        self.assertNotEqual(self.tag("/Town/2"), tag)
        status, head, _ = _wsgi(self.app, "HEAD", "/Town/1")
        self.assertEqual(head["etag"], tag)
        self.towns["1"]["name"] = "Lund C"
        self.assertNotEqual(self.tag(), tag)
        # Only what is sent counts: the version is not a property.
        self.towns["1"] = {"name": "Lund C", "version": 7}
        self.assertEqual(self.tag(), self.tag())

    def test_if_none_match_gives_304_without_body_or_length(self):
        tag = self.tag()
        for header in (tag, "W/" + tag, '"other", ' + tag, "*",
                       ' %s ,"x"' % tag):
            for method in ("GET", "HEAD"):
                with self.subTest(header=header, method=method):
                    status, headers, body = _wsgi(
                        self.app, method, "/Town/1",
                        headers={"If-None-Match": header})
                    self.assertEqual((status, body), (304, b""))
                    self.assertNotIn("content-length", headers)
                    self.assertNotIn("content-type", headers)
                    self.assertEqual(headers["etag"], tag)
        for header in ('"other"', tag[:-2] + '"', 'W/"x"'):
            with self.subTest(header=header):
                status, headers, body = _wsgi(
                    self.app, "GET", "/Town/1",
                    headers={"If-None-Match": header})
                self.assertEqual(status, 200)
                self.assertEqual(headers["etag"], tag)
                self.assertEqual(json.loads(body)["name"], "Lund")

    def test_if_match_on_get(self):
        tag = self.tag()
        status, _, _ = _wsgi(self.app, "GET", "/Town/1",
                             headers={"If-Match": tag})
        self.assertEqual(status, 200)
        status, _, body = _wsgi(self.app, "GET", "/Town/1",
                                headers={"If-Match": '"stale"'})
        self.assertEqual(status, 412)
        self.assertIn("Precondition Failed", json.loads(body)["error"])

    def test_put_with_if_match(self):
        tag = self.tag()
        patch = {"name": "Lund N"}
        status, headers, body = _wsgi_json(self.app, "PUT", "/Town/1", patch,
                                         {"If-Match": tag})
        self.assertEqual(status, 200)
        new_tag = headers["etag"]
        self.assertNotEqual(new_tag, tag)
        self.assertEqual(new_tag, self.tag())  # what a GET says next
        self.assertEqual(self.log, [("update", "1", tag[1:-1])])
        # The old tag no longer matches: 412, and nothing changes.
        status, headers, body = _wsgi_json(self.app, "PUT", "/Town/1",
                                         {"name": "Lund X"},
                                         {"If-Match": tag})
        self.assertEqual((status, headers["content-type"]),
                         (412, "application/json"))
        self.assertEqual(json.loads(body), {"error": (
            "Precondition Failed: Town '1' has changed since the ETag in "
            "If-Match")})
        self.assertEqual(self.towns["1"]["name"], "Lund N")
        self.assertEqual(len(self.log), 1)
        status, headers, body = _wsgi_json(
            self.app, "PUT", "/Town/1", {"name": "Lund X"},
            {"If-Match": tag, "Accept": "application/problem+json"})
        self.assertEqual(headers["content-type"], "application/problem+json")
        problem = json.loads(body)
        self.assertEqual((problem["status"], problem["title"]),
                         (412, "Precondition Failed"))
        self.assertIn("has changed", problem["detail"])

    def test_if_match_forms(self):
        tag = self.tag()
        table = [('"a", %s' % tag, 200), ("*", 200), ("W/" + tag, 412),
                 ('"a"', 412), ("", 412), (tag[1:-1], 412)]
        for header, want in table:
            with self.subTest(header=header):
                status, _, _ = _wsgi_json(self.app, "PUT", "/Town/1",
                                        {"name": "Lund"}, {"If-Match": header})
                self.assertEqual(status, want)

    def test_without_if_match_nothing_changes(self):
        status, headers, _ = _wsgi_json(self.app, "PUT", "/Town/1",
                                      {"name": "Lund Y"})
        self.assertEqual(status, 200)
        self.assertIn("etag", headers)
        self.assertEqual(self.log, [("update", "1", None)])
        status, _, _ = _wsgi(self.app, "DELETE", "/Town/2")
        self.assertEqual(status, 204)

    def test_put_if_none_match_star_is_412(self):
        status, _, _ = _wsgi_json(self.app, "PUT", "/Town/1", {"name": "Lu"},
                                {"If-None-Match": "*"})
        self.assertEqual(status, 412)
        self.assertEqual(self.towns["1"]["name"], "Lund")

    def test_delete_with_if_match(self):
        tag = self.tag()
        self.towns["1"]["name"] = "Changed"
        status, headers, body = _wsgi(self.app, "DELETE", "/Town/1",
                                         headers={"If-Match": tag})
        self.assertEqual(status, 412)
        self.assertIn("1", self.towns)
        status, headers, body = _wsgi(self.app, "DELETE", "/Town/1",
                                         headers={"If-Match": self.tag()})
        self.assertEqual((status, body), (204, b""))
        self.assertNotIn("content-length", headers)
        self.assertNotIn("1", self.towns)

    def test_missing_object_is_404_with_if_match(self):
        for method in ("PUT", "DELETE"):
            with self.subTest(method=method):
                status, _, body = _wsgi_json(self.app, method, "/Town/9",
                                           {"name": "X"}, {"If-Match": "*"}) \
                    if method == "PUT" else _wsgi(
                        self.app, method, "/Town/9",
                        headers={"If-Match": "*"})
                self.assertEqual((status, body), (404, _sv_err("Not Found")))

    def test_invalid_body_is_400_before_the_condition(self):
        status, _, _ = _wsgi_json(self.app, "PUT", "/Town/1", {"name": 3},
                                {"If-Match": '"stale"'})
        self.assertEqual(status, 400)

    def test_create_answers_the_new_tag(self):
        status, headers, body = _wsgi_json(self.app, "POST", "/Town",
                                         {"name": "Ystad"})
        self.assertEqual(status, 201)
        self.assertEqual(headers["etag"], self.tag(headers["location"]))

    def test_etags_off(self):
        app = Server(self.api, etags=False).wsgi_app
        status, headers, _ = _wsgi(app, "GET", "/Town/1")
        self.assertEqual(status, 200)
        self.assertNotIn("etag", headers)
        status, _, _ = _wsgi(app, "GET", "/Town/1",
                             headers={"If-None-Match": "*"})
        self.assertEqual(status, 200)
        status, headers, _ = _wsgi_json(app, "PUT", "/Town/1", {"name": "Lu"},
                                      {"If-Match": '"stale"'})
        self.assertEqual(status, 200)
        self.assertNotIn("etag", headers)
        self.assertEqual(self.log, [("update", "1", None)])

    def test_hooks_keep_the_tag(self):
        class Hooked(Server):
            def build_response(self, endpoint, func_input, func_output):
                response = super().build_response(endpoint, func_input,
                                                  func_output)
                response.headers["X-Hooked"] = "1"
                return response

        app = Hooked(self.api).wsgi_app
        status, headers, _ = _wsgi(app, "GET", "/Town/1")
        self.assertEqual((status, headers["x-hooked"]), (200, "1"))
        tag = headers["etag"]
        self.assertEqual(tag, self.tag())
        status, headers, body = _wsgi(app, "GET", "/Town/1",
                                      headers={"If-None-Match": tag})
        self.assertEqual((status, body), (304, b""))
        app = Server(self.api, handler_timeout=5).wsgi_app
        status, headers, body = _wsgi(app, "GET", "/Town/1",
                                      headers={"If-None-Match": tag})
        self.assertEqual((status, body), (304, b""))

    def test_one_process_lets_one_writer_win(self):
        # Eight PUTs with the same tag at once: the comparison and the
        # write hold one lock, so exactly one matches.
        slow = threading.Event()
        api, towns, log = _sv_towns(slow=slow)
        app = Server(api).wsgi_app
        tag = _wsgi(app, "GET", "/Town/1")[1]["etag"]
        barrier = threading.Barrier(8)
        results = []

        def put(i):
            barrier.wait()
            results.append(_wsgi_json(app, "PUT", "/Town/1",
                                    {"name": "T%d" % i},
                                    {"If-Match": tag})[0])

        threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(sorted(results), [200] + [412] * 7)
        self.assertEqual(towns["1"]["version"], 2)

    def test_cors_exposes_and_allows_the_headers(self):
        app = Server(self.api, cors_origins="https://a.example").wsgi_app
        status, headers, _ = _wsgi(app, "GET", "/Town/1",
                                   headers={"Origin": "https://a.example"})
        self.assertIn("ETag", [h.strip() for h in headers[
            "access-control-expose-headers"].split(",")])
        status, headers, _ = _wsgi(app, "OPTIONS", "/Town/1", headers={
            "Origin": "https://a.example",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "If-Match, If-None-Match"})
        self.assertEqual(status, 204)
        self.assertEqual(headers["access-control-allow-headers"],
                         "If-Match, If-None-Match")


class TestModelETags(unittest.TestCase):
    """A model's own ``etag`` and its atomic check through ``if_match()``."""

    def setUp(self):
        _sv_isolate(self)
        self.api, self.towns, self.log = _sv_towns(etag=True)
        self.app = Server(self.api).wsgi_app

    def test_the_models_tag_is_quoted(self):
        status, headers, _ = _wsgi(self.app, "GET", "/Town/1")
        self.assertEqual(headers["etag"], '"v1"')
        status, headers, _ = _wsgi_json(self.app, "PUT", "/Town/1",
                                      {"name": "L"}, {"If-Match": '"v1"'})
        self.assertEqual((status, headers["etag"]), (200, '"v2"'))
        self.assertEqual(self.log, [("update", "1", "v1")])
        status, headers, _ = _wsgi(self.app, "GET", "/Town/1",
                                   headers={"If-None-Match": '"v2"'})
        self.assertEqual(status, 304)
        status, _, _ = _wsgi(self.app, "DELETE", "/Town/1",
                                headers={"If-Match": "*"})
        self.assertEqual(status, 204)
        self.assertEqual(self.log[-1], ("delete", "1", "*"))

    def test_the_model_refuses_a_write_the_server_let_through(self):
        # Another process wrote between the server's comparison and the
        # model's own check: the model raises PreconditionFailed.
        real = self.api._model_classes["Town"].get_by_id.__func__

        def stale_read(cls, id):
            rep = real(cls, id)
            self.towns[id]["version"] += 1  # the write of someone else
            return rep

        self.api._model_classes["Town"].get_by_id = classmethod(stale_read)
        self.api.models.Town.get_by_id = \
            self.api._model_classes["Town"].get_by_id
        app = Server(self.api).wsgi_app
        status, _, body = _wsgi_json(app, "PUT", "/Town/1", {"name": "L"},
                                   {"If-Match": '"v1"'})
        self.assertEqual((status, body), (412, _sv_err("Town 1 changed")))
        self.assertEqual(self.towns["1"]["name"], "Lund")

    def test_if_match_outside_a_request_is_none(self):
        self.assertIsNone(cosmic.if_match())
        _wsgi_json(self.app, "PUT", "/Town/1", {"name": "L"},
                 {"If-Match": '"v1"'})
        self.assertIsNone(cosmic.if_match())

    def test_a_bad_tag_from_the_model_is_a_logged_500(self):
        for bad in (3, 'has"quote', "sp ace", None):
            with self.subTest(bad=bad):
                self.api._model_classes["Town"].etag = classmethod(
                    lambda cls, id, rep: bad)
                app = Server(self.api).wsgi_app
                with self.assertLogs("cosmic", "ERROR") as cm:
                    status, _, _ = _wsgi(app, "GET", "/Town/1")
                self.assertEqual(status, 500)
                self.assertIn("Town.etag must return a str", cm.output[0])

    def test_model_without_get_by_id(self):
        api = API("bare")

        @api.model
        class Note(BaseModel):
            methods = ["update"]
            properties = [optional("text", String)]

            @classmethod
            def update(cls, id, patch):
                return patch

        app = Server(api).wsgi_app
        status, _, body = _wsgi_json(app, "PUT", "/Note/1", {"text": "a"},
                                   {"If-Match": '"x"'})
        self.assertEqual(status, 412)
        self.assertIn("no get_by_id", json.loads(body)["error"])
        status, _, _ = _wsgi_json(app, "PUT", "/Note/1", {"text": "a"})
        self.assertEqual(status, 200)


class TestPreconditionFailed(unittest.TestCase):
    def test_names(self):
        import cosmic.exceptions
        import cosmic.globals
        import cosmic.http
        self.assertIs(cosmic.exceptions.PreconditionFailed,
                      cosmic.PreconditionFailed)
        self.assertIs(cosmic.http.PreconditionFailed,
                      cosmic.PreconditionFailed)
        self.assertIs(cosmic.globals.if_match, cosmic.if_match)
        self.assertIs(cosmic.http.if_match, cosmic.if_match)
        self.assertIn("if_match", cosmic.__all__)
        self.assertIn("PreconditionFailed", cosmic.__all__)

    def test_it_is_an_http_error_412(self):
        err = cosmic.PreconditionFailed()
        self.assertIsInstance(err, HTTPError)
        self.assertEqual((err.code, err.message), (412, "Precondition Failed"))
        err = cosmic.PreconditionFailed("changed")
        self.assertEqual(str(err), "412 changed")
        again = pickle.loads(pickle.dumps(err))
        self.assertEqual((type(again), again.code, again.message),
                         (cosmic.PreconditionFailed, 412, "changed"))


class TestAuthRedaction(unittest.TestCase):
    def crash_log(self, headers):
        app = Server(_au_api()).wsgi_app
        secret_parts = [v.split()[-1] for v in headers.values()]
        with self.assertLogs("cosmic", "ERROR") as cm:
            status, _, body = _wsgi(
                app, "POST", "/actions/crash",
                json.dumps(" and ".join(secret_parts)),
                dict(headers, **{"Content-Type": "application/json"}))
        self.assertEqual((status, body),
                         (500, b'{"error": "Internal Server Error"}'))
        self.assertEqual(len(cm.records), 1)
        self.assertIs(cm.records[0].exc_info[0], ValueError)
        return "\n".join(cm.output)

    def test_traceback_log_redacts_credentials(self):
        for headers in ({"Authorization": "Bearer " + _AU_TOKEN},
                        {"X-Key": _AU_TOKEN},
                        {"Authorization": _au_basic("alice", _AU_TOKEN)}):
            with self.subTest(headers=headers):
                text = self.crash_log(headers)
                self.assertIn("ValueError: failed for [redacted]", text)
                self.assertIn("Traceback", text)
                self.assertNotIn(_AU_TOKEN, text)
                for value in headers.values():
                    self.assertNotIn(value.split()[-1], text)

    def test_traceback_log_without_credentials_is_unchanged(self):
        text = self.crash_log({})
        self.assertIn("ValueError: failed for \n", text + "\n")

    def test_access_log_never_holds_the_token(self):
        api = _au_api()
        server = _ThreadServer(Server(api).wsgi_app, log=True)
        self.addCleanup(server.close)
        url = server.url
        with self.assertLogs("cosmic", "INFO") as cm:
            client = APIClient(url, auth=_AU_TOKEN)
            self.assertEqual(client.actions.whoami(), "alice")
            client.close()
            client = APIClient(url, auth={"api_key": _AU_TOKEN})
            self.assertEqual(client.actions.whoami(), "alice")
            client.close()
        text = "\n".join(cm.output)
        self.assertIn("/actions/whoami", text)
        self.assertNotIn(_AU_TOKEN, text)

    def test_client_log_redacts_credentials(self):
        class LoggingClient(ClientLoggingMixin, WsgiAPIClient):
            pass

        for auth, name in ((_AU_TOKEN, "Authorization"),
                           ({"api_key": _AU_TOKEN}, "X-Key")):
            with self.subTest(auth=auth):
                client = LoggingClient.for_api(_au_api(), auth=auth)
                self.assertEqual(client.actions.whoami(), "alice")
                request = client.log[-1][0]
                self.assertIn((name, "[redacted]"), request["headers"])
                self.assertNotIn(_AU_TOKEN, repr(client.log))

    def test_bad_auth_values_are_not_echoed(self):
        for auth, exc, message in (
                (12345678, TypeError, "got a int"),
                (("alice",), TypeError, "got a tuple"),
                ({"token": "abcdefgh"}, TypeError, "got a dict"),
                ("abc\r\nX-Evil: 1", ValueError, "characters an HTTP header "
                 "cannot carry")):
            with self.subTest(auth=auth):
                with self.assertRaises(exc) as cm:
                    WsgiAPIClient.for_api(_au_api(), auth=auth)
                self.assertIn(message, str(cm.exception))
                for part in ("12345678", "abcdefgh", "X-Evil"):
                    self.assertNotIn(part, str(cm.exception))


# -- Development server -------------------------------------------------------
# serve_wsgi and the server behind `python -m cosmic serve`: framing,
# deadlines, connection cap, shutdown, workers.


class TestDevServer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = _hs_start(_hs_app, socket_timeout=_HS_TIMEOUT)
        cls.port = cls.server.server_address[1]

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.test_thread.join(5)

    def connect(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.addCleanup(conn.close)
        return conn

    def raw(self):
        conn = _Raw(("127.0.0.1", self.port))
        self.addCleanup(conn.close)
        return conn

    def exchange(self, data):
        """Send raw bytes on a new connection, read one response."""
        sock = self.raw()
        sock.sendall(data)
        return sock.response()

    def get_json(self, method, url, body=None, headers=None):
        conn = self.connect()
        conn.request(method, url, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())

    def assert_error(self, response, status, message=None):
        got_status, headers, body = response
        self.assertEqual(got_status, status)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(int(headers["content-length"]), len(body))
        error = json.loads(body)["error"]
        if message is not None:
            self.assertEqual(error, message)
        return error

    # -- connection management -------------------------------------------

    def test_keep_alive_reuses_socket(self):
        conn = self.connect()
        conn.request("GET", "/one")
        resp = conn.getresponse()
        first = json.loads(resp.read())
        sock = conn.sock
        self.assertIsNotNone(sock)
        conn.request("GET", "/two")
        resp = conn.getresponse()
        second = json.loads(resp.read())
        self.assertIs(conn.sock, sock)
        self.assertEqual(first["remote_port"], second["remote_port"])
        self.assertEqual((first["path"], second["path"]), ("/one", "/two"))
        self.assertIsNone(resp.getheader("Connection"))

    def test_connection_close_honoured(self):
        sock = self.raw()
        sock.sendall(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, body = sock.response()
        self.assertEqual(status, 200)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(json.loads(body)["path"], "/c")
        self.assertEqual(sock.recv(100), b"")

    def test_http10_closes_by_default(self):
        sock = self.raw()
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        status, headers, body = sock.response()
        self.assertEqual(status, 200)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(json.loads(body)["protocol"], "HTTP/1.0")
        self.assertEqual(sock.recv(100), b"")

    def test_http10_keep_alive_when_asked(self):
        sock = self.raw()
        req = b"GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        sock.sendall(req)
        status, headers, body = sock.response()
        self.assertEqual(status, 200)
        self.assertEqual(headers["connection"], "keep-alive")
        sock.sendall(req)
        status, headers, body = sock.response()
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["path"], "/ka")

    def test_http10_stream_is_close_delimited(self):
        sock = self.raw()
        sock.sendall(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = sock.response()
        self.assertEqual(status, 200)
        self.assertNotIn("content-length", headers)
        self.assertNotIn("transfer-encoding", headers)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(body, b"one,two,three")

    def test_pipelined_requests(self):
        sock = self.raw()
        sock.sendall(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /p2 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(json.loads(sock.response()[2])["path"], "/p1")
        self.assertEqual(json.loads(sock.response()[2])["path"], "/p2")

    def test_head_has_no_body(self):
        sock = self.raw()
        sock.sendall(b"HEAD /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, rest = sock.response(head_only=True)
        self.assertEqual(status, 200)
        self.assertEqual(int(headers["content-length"]), len(b"fixed body"))
        # The next response follows immediately: no body bytes were sent.
        sock.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = sock.response()
        self.assertEqual((status, body), (200, b"fixed body"))

    def test_head_streamed_response(self):
        conn = self.connect()
        conn.request("HEAD", "/stream")
        resp = conn.getresponse()
        self.assertEqual((resp.status, resp.read()), (200, b""))
        conn.request("GET", "/again")
        resp = conn.getresponse()
        self.assertEqual(json.loads(resp.read())["path"], "/again")

    def test_idle_keep_alive_connection_closed_after_timeout(self):
        sock = self.raw()
        sock.sendall(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(sock.response()[0], 200)
        sock.settimeout(_HS_TIMEOUT * 9)  # below the default 5 s
        self.assertEqual(sock.recv(100), b"")

    def test_stalled_client_cut_off_without_blocking_others(self):
        stalled = self.raw()
        stalled.sendall(b"GET /stall HTTP/1.1\r\nHost: x\r\nX-Half: ")
        status, body = self.get_json("GET", "/other")
        self.assertEqual((status, body["path"]), (200, "/other"))
        stalled.settimeout(_HS_TIMEOUT * 9)  # below the default 5 s
        self.assertEqual(stalled.recv(100), b"")
        status, body = self.get_json("GET", "/still-serving")
        self.assertEqual(status, 200)

    # -- request parsing errors ---------------------------------------------

    def test_414_long_request_line(self):
        conn = self.connect()
        conn.request("GET", "/" + "a" * 100_000)
        resp = conn.getresponse()
        self.assertEqual(resp.status, 414)
        self.assertEqual(resp.getheader("Content-Type"), "application/json")
        self.assertEqual(resp.getheader("Connection"), "close")
        self.assertEqual(json.loads(resp.read()), {"error": "URI Too Long"})

    def test_431_too_many_headers(self):
        conn = self.connect()
        headers = {"X-H%d" % i: "v" for i in range(200)}
        conn.request("GET", "/", headers=headers)
        resp = conn.getresponse()
        self.assertEqual(resp.status, 431)
        self.assertEqual(json.loads(resp.read()),
                         {"error": "Request Header Fields Too Large"})

    def test_431_huge_header(self):
        conn = self.connect()
        conn.request("GET", "/", headers={"X-Big": "b" * 100_000})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 431)
        self.assertEqual(json.loads(resp.read()),
                         {"error": "Request Header Fields Too Large"})

    def test_400_garbage_request_line(self):
        for garbage in (b"GARBAGE\r\n\r\n", b"GET /\r\n\r\n",
                        b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
                        b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"GET / HTTX/1.1\r\nHost: x\r\n\r\n",
                        b"GET nothing HTTP/1.1\r\nHost: x\r\n\r\n"):
            with self.subTest(garbage=garbage):
                self.assert_error(self.exchange(garbage), 400)

    def test_400_malformed_headers(self):
        for head in (b"NoColon\r\n", b"Bad Name: x\r\n", b"Space : x\r\n",
                     b" folded: x\r\n", b"X-A: a\rb\r\n", b"X-N: a\x00b\r\n"):
            with self.subTest(head=head):
                req = b"GET / HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n"
                self.assert_error(self.exchange(req), 400)

    def test_400_missing_or_duplicate_host(self):
        self.assert_error(self.exchange(b"GET / HTTP/1.1\r\n\r\n"), 400,
                          "Missing Host header")
        req = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
        self.assert_error(self.exchange(req), 400, "Duplicate Host header")

    def test_505_unsupported_version(self):
        for version in (b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.1"):
            with self.subTest(version=version):
                req = b"GET / " + version + b"\r\nHost: x\r\n\r\n"
                self.assert_error(self.exchange(req), 505,
                                  "HTTP Version Not Supported")

    def test_400_conflicting_content_length(self):
        req = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
               b"Content-Length: 4\r\n\r\nabcd")
        self.assert_error(self.exchange(req), 400, "Conflicting Content-Length")

    def test_identical_repeated_content_length_ok(self):
        req = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
               b"Content-Length: 3\r\n\r\nabc")
        status, headers, body = self.exchange(req)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["body"], "abc")
        self.assertEqual(json.loads(body)["content_length"], "3")

    def test_400_invalid_content_length(self):
        for value in (b"-1", b"abc", b"1e3", b"+5", b"0x10", b"\xb2", b""):
            with self.subTest(value=value):
                req = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: "
                       + value + b"\r\n\r\nabc")
                self.assert_error(self.exchange(req), 400, "Invalid Content-Length")

    # -- request bodies -------------------------------------------------------

    def test_chunked_body_decoded(self):
        conn = self.connect()
        conn.request("POST", "/echo", body=iter([b"hello ", b"chunked ", b"world"]),
                     encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
        resp = conn.getresponse()
        info = json.loads(resp.read())
        self.assertEqual(resp.status, 200)
        self.assertEqual(info["body"], "hello chunked world")
        self.assertEqual(info["content_length"], "19")
        self.assertNotIn("HTTP_TRANSFER_ENCODING", info["headers"])

    def test_chunked_body_with_extensions_and_trailers(self):
        req = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n")
        sock = self.raw()
        sock.sendall(req + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = sock.response()
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["body"], "hello0123456789")
        self.assertEqual(json.loads(sock.response()[2])["path"], "/next")

    def test_chunked_body_errors(self):
        bad = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"\r\nzz\r\nhello\r\n0\r\n\r\n")
        self.assert_error(self.exchange(bad), 400, "Invalid chunk size")
        both = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Length: 5\r\n\r\n0\r\n\r\n")
        self.assert_error(self.exchange(both), 400)

    def test_chunked_body_size_limit(self):
        server = _hs_start(_hs_app, max_chunked_body=10)
        self.addCleanup(server.shutdown)
        sock = _Raw(server.server_address)
        self.addCleanup(sock.close)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                     b"\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")
        self.assert_error(sock.response(), 413, "Request Entity Too Large")

    def test_501_unknown_transfer_encoding(self):
        req = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
        self.assert_error(self.exchange(req), 501)

    def test_expect_100_continue(self):
        sock = self.raw()
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(100)
            self.assertTrue(chunk)
            interim += chunk
        self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        status, headers, body = sock.response()
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["body"], "hello")

    def test_expect_100_continue_http_client(self):
        status, info = self.get_json("POST", "/echo", body=b"payload",
                                     headers={"Expect": "100-continue"})
        self.assertEqual((status, info["body"]), (200, "payload"))

    def test_417_unknown_expectation(self):
        req = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
               b"Expect: something\r\n\r\nx")
        self.assert_error(self.exchange(req), 417, "Expectation Failed")

    def test_body_shorter_than_content_length(self):
        sock = self.raw()
        sock.sendall(b"POST /read-some HTTP/1.1\r\nHost: x\r\nContent-Length: 100"
                     b"\r\n\r\n0123456789")
        status, headers, body = sock.response()
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {"got": 10, "more": 0})
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(sock.recv(100), b"")
        status, info = self.get_json("GET", "/after-short")
        self.assertEqual((status, info["path"]), (200, "/after-short"))

    def test_input_is_bounded_by_content_length(self):
        sock = self.raw()
        sock.sendall(b"POST /lines HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n"
                     b"ab\ncd\nefGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = sock.response()
        self.assertEqual(json.loads(body), {"lines": ["ab\n", "cd\n", "ef"]})
        self.assertEqual(json.loads(sock.response()[2])["path"], "/next")

    def test_unread_small_body_keeps_connection(self):
        conn = self.connect()
        conn.request("POST", "/tracked", body=b"x" * 1000)
        resp = conn.getresponse()
        self.assertEqual(resp.read(), b"tracked")
        self.assertIsNone(resp.getheader("Connection"))
        conn.request("GET", "/second")
        resp = conn.getresponse()
        self.assertEqual(json.loads(resp.read())["path"], "/second")

    def test_unread_body_with_connection_close(self):
        for _ in range(5):
            sock = self.raw()
            sock.sendall(b"POST /tracked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         b"Content-Length: 60000\r\n\r\n" + b"z" * 60000)
            status, headers, body = sock.response()
            self.assertEqual((status, body), (200, b"tracked"))
            self.assertEqual(headers["connection"], "close")
            sock.close()

    def test_large_upload_answered_without_reading(self):
        conn = self.connect()
        body = b"x" * (50 * 1024 * 1024)
        conn.request("POST", "/limited", body=body)
        resp = conn.getresponse()
        self.assertEqual(resp.status, 413)
        self.assertEqual(resp.getheader("Connection"), "close")
        self.assertEqual(json.loads(resp.read()), {"error": "too big"})

    # -- application errors and responses ------------------------------------

    def test_app_exception_gives_500_and_server_keeps_serving(self):
        with self.assertLogs("cosmic", level="ERROR") as logs:
            conn = self.connect()
            conn.request("GET", "/boom")
            resp = conn.getresponse()
            body = resp.read()
        self.assertEqual(resp.status, 500)
        self.assertEqual(resp.getheader("Content-Type"), "application/json")
        self.assertEqual(resp.getheader("Connection"), "close")
        self.assertEqual(json.loads(body), {"error": "Internal Server Error"})
        self.assertNotIn(b"secret", body)
        self.assertIn("secret detail 42", "\n".join(logs.output))
        status, info = self.get_json("GET", "/after-boom")
        self.assertEqual((status, info["path"]), (200, "/after-boom"))

    def test_invalid_responses_give_500(self):
        for path in ("/bad-body", "/bad-header"):
            with self.subTest(path=path), self.assertLogs("cosmic", "ERROR"):
                conn = self.connect()
                conn.request("GET", path)
                resp = conn.getresponse()
                self.assertEqual(resp.status, 500)
                self.assertEqual(json.loads(resp.read()),
                                 {"error": "Internal Server Error"})

    def test_exc_info_replaces_unsent_headers(self):
        conn = self.connect()
        conn.request("GET", "/late-error")
        resp = conn.getresponse()
        self.assertEqual((resp.status, resp.read()), (503, b"replaced"))

    def test_streamed_response_is_chunked(self):
        sock = self.raw()
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, rest = sock.response(head_only=True)
        self.assertEqual(headers["transfer-encoding"], "chunked")
        conn = self.connect()
        conn.request("GET", "/stream")
        resp = conn.getresponse()
        self.assertEqual((resp.status, resp.read()), (200, b"one,two,three"))

    def test_write_callable(self):
        conn = self.connect()
        conn.request("GET", "/write")
        resp = conn.getresponse()
        self.assertEqual((resp.status, resp.read()), (200, b"written,returned"))

    def test_iterable_close_called(self):
        _hs_Tracked.closed.clear()
        conn = self.connect()
        conn.request("GET", "/tracked")
        self.assertEqual(conn.getresponse().read(), b"tracked")
        self.assertTrue(_hs_Tracked.closed.wait(5))

    # -- environ ------------------------------------------------------------

    def test_environ_basics(self):
        status, info = self.get_json("POST", "/echo?a=1&b=%20", body=b"data",
                                     headers={"Content-Type": "text/x-test"})
        self.assertEqual(status, 200)
        self.assertEqual(info["method"], "POST")
        self.assertEqual(info["script_name"], "")
        self.assertEqual(info["query"], "a=1&b=%20")
        self.assertEqual(info["content_type"], "text/x-test")
        self.assertEqual(info["content_length"], "4")
        self.assertEqual(info["remote_addr"], "127.0.0.1")
        self.assertEqual(info["server_port"], str(self.port))
        self.assertEqual(info["url_scheme"], "http")
        self.assertEqual(info["version"], [1, 0])
        self.assertIs(info["multithread"], True)
        self.assertNotIn("HTTP_CONTENT_TYPE", info["headers"])
        self.assertNotIn("HTTP_CONTENT_LENGTH", info["headers"])

    def test_path_info_decoding(self):
        status, info = self.get_json("GET", "/caf%C3%A9")
        self.assertEqual(info["path"], "/caf\u00c3\u00a9")
        self.assertEqual(info["path"].encode("latin-1").decode("utf-8"), "/café")
        status, info = self.get_json("GET", "/a%2Fb/c")
        self.assertEqual(info["path"], "/a/b/c")

    def test_absolute_form_target(self):
        req = b"GET http://example.com:8080/abs/path?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        status, headers, body = self.exchange(req)
        info = json.loads(body)
        self.assertEqual((info["path"], info["query"]), ("/abs/path", "q=1"))
        self.assertEqual(info["headers"]["HTTP_HOST"], "example.com:8080")

    def test_repeated_headers_joined(self):
        req = (b"GET / HTTP/1.1\r\nHost: x\r\nX-Multi: a\r\nx-multi: b\r\n"
               b"Cookie: c=1\r\nCookie: d=2\r\n\r\n")
        headers = json.loads(self.exchange(req)[2])["headers"]
        self.assertEqual(headers["HTTP_X_MULTI"], "a, b")
        self.assertEqual(headers["HTTP_COOKIE"], "c=1; d=2")

    def test_underscore_headers_dropped(self):
        req = (b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: good\r\n"
               b"X_Forwarded_For: evil\r\n\r\n")
        headers = json.loads(self.exchange(req)[2])["headers"]
        self.assertEqual(headers["HTTP_X_FORWARDED_FOR"], "good")
        self.assertNotIn("evil", headers.values())

    def test_wsgiref_validator(self):
        conn = self.connect()
        no_logs = getattr(self, "assertNoLogs", None)  # Python 3.10+
        with no_logs("cosmic") if no_logs else _hs_nullcontext():
            conn.request("GET", "/validated")
            resp = conn.getresponse()
            self.assertEqual((resp.status, resp.read()), (200, b"validated:"))
            conn.request("POST", "/validated", body=b"abc")
            resp = conn.getresponse()
            self.assertEqual((resp.status, resp.read()), (200, b"validated:abc"))
            conn.request("HEAD", "/validated")
            resp = conn.getresponse()
            self.assertEqual((resp.status, resp.read()), (200, b""))
            self.assertEqual(resp.getheader("Content-Length"), "10")


class TestDevServerLifecycle(unittest.TestCase):
    def test_shutdown_without_signal(self):
        server = _hs_start(_hs_app)
        address = server.server_address
        sock = _Raw(address)
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(sock.response()[0], 200)
        sock.close()
        server.shutdown()
        server.test_thread.join(5)
        self.assertFalse(server.test_thread.is_alive())
        with self.assertRaises(OSError):
            socket.create_connection(address, timeout=2).close()

    def test_server_close_ends_idle_keep_alive_connections(self):
        server = _hs_start(_hs_app, socket_timeout=30)
        sock = _Raw(server.server_address, timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(sock.response()[0], 200)
        server.shutdown()
        server.test_thread.join(5)  # serve_wsgi calls server_close()
        self.assertFalse(server.test_thread.is_alive())
        self.assertEqual(sock.recv(100), b"")  # closed now, not after 30 s

    def test_make_server_port_zero_and_shutdown_before_serving(self):
        server = httpserver._make_server(_hs_app, "127.0.0.1", 0, log=False)
        try:
            self.assertNotEqual(server.server_address[1], 0)
            self.assertGreaterEqual(server.request_queue_size, 128)
            server.shutdown()  # not serving: returns immediately
        finally:
            server.server_close()

    def test_access_log_common_log_format(self):
        records = []
        logged = threading.Event()

        class Capture(logging.Handler):
            def emit(self, record):
                records.append(record)
                logged.set()

        logger = logging.getLogger("cosmic")
        handler = Capture()
        old_level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            server = _hs_start(_hs_app, log=True)
            try:
                conn = http.client.HTTPConnection(*server.server_address, timeout=5)
                conn.request("GET", "/logged?x=1")
                body = conn.getresponse().read()
                conn.close()
                self.assertTrue(logged.wait(5))  # logged after the response
            finally:
                server.shutdown()
                server.test_thread.join(5)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
        lines = [r.getMessage() for r in records if r.levelno == logging.INFO]
        self.assertEqual(len(lines), 1)
        pattern = (r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d '
                   r'\+0000\] "GET /logged\?x=1 HTTP/1\.1" 200 (\d+)\Z')
        match = re.match(pattern, lines[0])
        self.assertIsNotNone(match, lines[0])
        self.assertEqual(int(match.group(1)), len(body))

    def test_access_log_names_the_request_id(self):
        api = API("hs_logged")

        @api.action(returns=String)
        def hello():
            return "hi"

        records = []
        logged = threading.Event()
        logger = logging.getLogger("cosmic")
        handler = logging.Handler()
        handler.emit = lambda record: (records.append(record), logged.set())
        old_level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            server = _hs_start(Server(api).wsgi_app, log=True)
            try:
                conn = http.client.HTTPConnection(*server.server_address,
                                                  timeout=5)
                conn.request("POST", "/actions/hello",
                             headers={"X-Request-ID": "trace-42"})
                res = conn.getresponse()
                res.read()
                conn.close()
                self.assertTrue(logged.wait(5))  # logged after the response
            finally:
                server.shutdown()
                server.test_thread.join(5)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
        self.assertEqual(res.getheader("X-Request-ID"), "trace-42")
        lines = [r.getMessage() for r in records if r.levelno == logging.INFO]
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].endswith(
            '"POST /actions/hello HTTP/1.1" 200 4 trace-42'), lines[0])

    @unittest.skipIf(os.name == "nt", "POSIX signals only")
    def test_sigterm_stops_serve_wsgi(self):
        code = (
            "import sys, cosmic as httpserver\n"
            "def app(e, s):\n"
            "    s('200 OK', [('Content-Type', 'text/plain')])\n"
            "    return [b'ok']\n"
            "def ready(server):\n"
            "    print(server.server_address[1], flush=True)\n"
            "httpserver.serve_wsgi(app, '127.0.0.1', 0, ready=ready, log=False)\n"
            "print('returned', flush=True)\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=_ROOT,
                                stdout=subprocess.PIPE, text=True)
        try:
            port = int(proc.stdout.readline())
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/")
            self.assertEqual(conn.getresponse().read(), b"ok")
            conn.close()
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 0)
        self.assertEqual(out.strip(), "returned")

    def test_import_is_cheap(self):
        code = ("import sys; before = set(sys.modules); import cosmic as httpserver; "
                "print(sorted(set(sys.modules) - before))")
        out = subprocess.run([sys.executable, "-c", code], cwd=_ROOT, check=True,
                             capture_output=True, text=True).stdout
        for heavy in ("socket", "socketserver", "logging", "selectors"):
            self.assertNotIn("'%s'" % heavy, out)


# Cases found in review: hooks that read the path, first requests in
# parallel, upstream errors inside handlers, asyncio tasks, positional-only
# parameters, ids holding a slash, hostile specs.


class TestServerEdgeCases(unittest.TestCase):
    def setUp(self):
        self.registry = cosmos.swap({})
        self.registry.__enter__()
        self.addCleanup(self.registry.__exit__, None, None, None)

    def test_dispatch_request_override_sees_the_path(self):
        api = API("edge_admin")

        @api.action()
        def ping():
            pass

        class Admin(Server):
            def dispatch_request(self, request):
                if request.path.startswith("/actions/") and \
                        request.headers.get("X-Admin") != "1":
                    return error_response("Forbidden", 403)
                return super().dispatch_request(request)

        app = Admin(api).wsgi_app
        self.assertEqual(_wsgi(app, "POST", "/actions/ping")[:1], (403,))
        status, _, _ = _wsgi(app, "POST", "/actions/ping",
                                headers={"X-Admin": "1"})
        self.assertEqual(status, 204)

    def test_parallel_first_requests_see_every_link(self):
        api = API("edge_links")
        names = ["l%d" % i for i in range(30)]

        @api.model
        class T(BaseModel):
            methods = ["get_by_id"]
            properties = [required("name", String)]
            links = [optional_link(n, Model("edge_links.T")) for n in names]

            @classmethod
            def get_by_id(cls, id):
                return dict({n: "1" for n in names}, name="x")

        app = Server(api).wsgi_app
        barrier = threading.Barrier(8)
        bodies = []

        def hit():
            barrier.wait(10)
            bodies.append(_wsgi(app, "GET", "/T/1")[2])

        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            threads = [threading.Thread(target=hit) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        finally:
            sys.setswitchinterval(old)
        self.assertEqual(len(bodies), 8)
        for body in bodies:
            self.assertEqual(len(json.loads(body)["_links"]), 31)

    def test_upstream_error_in_a_handler_is_a_500(self):
        api = API("edge_upstream")

        @api.action(returns=Integer)
        def charge():
            raise RemoteHTTPError(400, "card 4111 rejected by BankCorp")

        with self.assertLogs("cosmic", "ERROR") as logs:
            status, _, body = _wsgi(Server(api).wsgi_app, "POST",
                                       "/actions/charge")
        self.assertEqual((status, body), (500, _sv_err(
            "Internal Server Error")))
        self.assertIn("RemoteHTTPError", "\n".join(logs.output))

    def test_positional_only_single_parameter(self):
        api = API("edge_posonly")
        namespace = {}
        exec("def shout(word, /):\n    return word.upper()\n", namespace)
        api.action(accepts=String, returns=String)(namespace["shout"])
        status, _, body = _wsgi_json(Server(api).wsgi_app, "POST",
                                   "/actions/shout", "hi")
        self.assertEqual((status, body), (200, b'"HI"'))
        exec("def both(a, b, /):\n    return a\n", namespace)
        with self.assertRaises(SpecError):
            api.action(accepts=Struct([required("a", Integer),
                                       required("b", Integer)]))(
                namespace["both"])

    def test_storage_is_empty_after_interleaved_asyncio_tasks(self):
        g = ThreadLocalDict()
        seen = []

        async def task(name, delay):
            with thread_local():
                g["me"] = name
                await asyncio.sleep(delay)
                seen.append(g["me"] == name)

        async def main():
            await asyncio.gather(task("A", 0.01), task("B", 0.02),
                                 task("C", 0.0))

        asyncio.run(main())
        self.assertEqual(seen, [True, True, True])
        self.assertEqual(storage, {})

    def test_id_with_a_slash_is_one_id(self):
        api = API("edge_docs")
        store = {}

        @api.model
        class Doc(BaseModel):
            methods = ["get_by_id", "create"]
            properties = [required("title", String)]

            @classmethod
            def create(cls, patch):
                store[patch["title"]] = patch
                return patch["title"], patch

            @classmethod
            def get_by_id(cls, id):
                try:
                    return store[id]
                except KeyError:
                    raise NotFound from None

        ident = "docs/readme 100%"
        client = WsgiAPIClient.for_api(api)
        self.assertEqual(client.models.Doc.create(title=ident),
                         (ident, {"title": ident}))
        self.assertEqual(client.models.Doc.get_by_id(ident), {"title": ident})
        with served_api(api) as url:
            remote = cosmic.connect(url)
            self.addCleanup(remote.close)
            self.assertEqual(remote.models.Doc.get_by_id(ident),
                             {"title": ident})
            status, headers, body = _http_json(
                url, "GET", "/Doc/docs%2Freadme%20100%25")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["_links"]["self"]["href"],
                         "/Doc/docs%2Freadme 100%25")
        self.assertEqual(Link(Model("edge_docs.Doc")).from_json(
            "/Doc/docs%2Freadme 100%25"), ident)

    def test_server_options_are_the_documented_limits(self):
        api = API("edge_options")
        server = Server(api, max_content_length=10, max_json_depth=5,
                        max_url_length=100, handler_timeout=1.0,
                        cors_origins=["https://a.example"], docs=False)
        self.assertEqual((server.max_content_length, server.max_json_depth,
                          server.max_url_length, server.handler_timeout,
                          server.cors_origins, server.docs),
                         (10, 5, 100, 1.0, frozenset(["https://a.example"]),
                          False))
        for name in ("view", "api", "_routes", "nope"):
            with self.subTest(name=name), self.assertRaises(TypeError):
                Server(api, **{name: 1})

    def test_spec_with_hostile_names_is_refused(self):
        spec = {"name": "x", "actions": {"map": {"__class__": {}},
                                         "order": ["__class__"]},
                "models": {"map": {}, "order": []}}
        with self.assertRaises(ValidationError):
            APISpec.from_json(spec)
        spec["actions"] = {"map": {"a b/../x": {}}, "order": ["a b/../x"]}
        with self.assertRaises(ValidationError):
            APISpec.from_json(spec)


class TestS2Framing(unittest.TestCase):
    """RFC 9112 framing, with h11 (0.16 or later) as the reference: the
    server sees the same request boundaries as h11, or refuses with 400
    and closes the connection."""

    @classmethod
    def setUpClass(cls):
        cls.seen = []
        cls.server = _hs_start(_hs_recording_app(cls.seen), socket_timeout=30)

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.test_thread.join(10)

    def test_every_vector_matches_h11_or_is_refused(self):
        rows = _hs_framing_table(self.server.server_address, self.seen)
        for (name, expected, h11_text, server_text, refused, same, seen,
             h11_found, h11_error) in rows:
            with self.subTest(vector=name):
                if expected == "refuse":
                    self.assertTrue(refused, server_text)
                    # Nothing after the refused request was served.
                    self.assertNotIn("/smuggled", repr(seen))
                    self.assertNotIn("/next", repr(seen))
                else:
                    self.assertFalse(refused, server_text)
                    self.assertIsNone(h11_error)
                    self.assertTrue(same, (server_text, h11_text))
                    self.assertEqual(len(seen), len(h11_found))

    def test_bare_lf_then_crlf_head_is_refused_at_once(self):
        # Never left to the 30 s socket timeout.
        started = time.monotonic()
        answer = _hs_exchange(self.server.server_address,
                              b"GET /a HTTP/1.1\r\nHost: x\n\r\n", timeout=20)
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer)
        self.assertLess(time.monotonic() - started, 10)

    def test_trailer_smuggling_serves_neither_request(self):
        del self.seen[:]
        data = (_HS_HEAD + b"0\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
                + _HS_NEXT)
        answer = _hs_exchange(self.server.server_address, data)
        self.assertIn(b'{"error": "Invalid trailer field"}', answer)
        self.assertEqual(self.seen, [])


class TestS2Deadlines(unittest.TestCase):
    """A whole head and a whole chunked body each get a bounded time."""

    def test_blank_lines_count_toward_the_head_deadline(self):
        server = _hs_start(_hs_app, socket_timeout=1.0)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        sock = socket.create_connection(server.server_address, timeout=10)
        self.addCleanup(sock.close)
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 8:
            try:
                sock.sendall(b"\r\n")
            except OSError:
                closed = True
                break
            ready, _, _ = select.select([sock], [], [], 0.3)
            if ready and sock.recv(100) == b"":
                closed = True
                break
        self.assertTrue(closed)
        self.assertLess(time.monotonic() - started, 4)

    def test_head_trickled_byte_by_byte_is_cut_off(self):
        server = _hs_start(_hs_app, socket_timeout=1.0)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        sock = socket.create_connection(server.server_address, timeout=10)
        self.addCleanup(sock.close)
        started = time.monotonic()
        head = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        closed = False
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            ready, _, _ = select.select([sock], [], [], 0.1)
            if ready and sock.recv(100) == b"":
                closed = True
                break
        self.assertTrue(closed)
        self.assertLess(time.monotonic() - started, 4)

    def test_chunked_body_shares_the_body_deadline(self):
        seen = []
        server = _hs_start(_hs_recording_app(seen), socket_timeout=0.5)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        server.body_timeout = 1.0
        sock = socket.create_connection(server.server_address, timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(_HS_HEAD)
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 8:  # a chunk every 0.2 s
            try:
                sock.sendall(b"1\r\nx\r\n")
            except OSError:
                closed = True
                break
            ready, _, _ = select.select([sock], [], [], 0.2)
            if ready:
                closed = sock.recv(100) == b""
                break
        self.assertTrue(closed)
        self.assertLess(time.monotonic() - started, 4)
        self.assertEqual(seen, [])


class TestS2ConnectionCap(unittest.TestCase):
    """max_connections, and accept() failing for want of descriptors."""

    def test_at_the_cap_the_oldest_idle_connection_makes_room(self):
        server = _hs_start(_hs_app, max_connections=2, socket_timeout=30)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        first = _Raw(server.server_address)
        self.addCleanup(first.close)
        first.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(first.response()[0], 200)
        second = _Raw(server.server_address)
        self.addCleanup(second.close)
        second.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(second.response()[0], 200)
        third = _Raw(server.server_address)
        self.addCleanup(third.close)
        third.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(third.response()[0], 200)
        first.settimeout(10)
        self.assertEqual(first.recv(100), b"")  # the oldest was closed
        second.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(second.response()[0], 200)

    def test_threads_bound_the_requests_served_at_once(self):
        release = threading.Event()
        running = []
        peak = []
        lock = threading.Lock()

        def app(environ, start_response):
            with lock:
                running.append(1)
                peak.append(len(running))
            release.wait(30)
            with lock:
                running.pop()
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]

        server = _hs_start(app, threads=2, socket_timeout=30)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        # Idle keep-alive connections hold no thread.
        idle = [_Raw(server.server_address) for _ in range(20)]
        for raw in idle:
            self.addCleanup(raw.close)
        answers = []

        def call():
            answers.append(_http(server.address, "GET", "/", timeout=30,
                                 close=False)[0])

        server.address = server.server_address
        callers = [threading.Thread(target=call) for _ in range(5)]
        for thread in callers:
            thread.start()
        self.assertTrue(_wait(lambda: len(running) == 2, 10))
        threading.Event().wait(0.3)  # a third would have started by now
        self.assertEqual(len(running), 2)
        release.set()
        for thread in callers:
            thread.join(30)
        self.assertEqual(answers, [200] * 5)
        self.assertEqual(max(peak), 2)
        self.assertEqual(server._workers, 2)  # threads started, ever

    def test_accept_failing_with_emfile_backs_off_and_logs_once(self):
        records = []

        class Capture(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())

        logger = logging.getLogger("cosmic")
        handler = Capture()
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        server = cosmic._make_server(_hs_app, "127.0.0.1", 0, log=False)
        failing = server.socket = _hs_FailingAccept(server.socket)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        client = socket.create_connection(server.server_address, timeout=10)
        self.addCleanup(client.close)  # pending: the listener stays readable
        pause = threading.Event()
        pause.wait(1.0)
        calls = failing.calls
        self.assertGreater(calls, 0)
        self.assertLess(calls, 40)  # a busy loop makes many thousands
        warnings_ = [r for r in records if "Cannot accept" in r]
        self.assertEqual(len(warnings_), 1, records)


class TestS2RunOptions(unittest.TestCase):
    """served_api and API.run take the original's keyword options; startup
    errors are the original OSError."""

    def api(self):
        api = API("s2opts")

        @api.action(returns=Integer)
        def one():
            return 1
        return api

    def test_original_options_are_accepted_and_ignored(self):
        with self.assertLogs("cosmic", "DEBUG") as logs:
            with served_api(self.api(), 0, threaded=True, use_reloader=False,
                            use_debugger=False, processes=1) as url:
                client = cosmic.connect(url)
                self.addCleanup(client.close)
                self.assertEqual(client.actions.one(), 1)
        self.assertTrue(any("threaded=True" in line and "ignored" in line
                            for line in logs.output), logs.output)

    def test_ssl_context_is_refused(self):
        with self.assertRaisesRegex(ValueError, "ssl_context"):
            with served_api(self.api(), 0, ssl_context="adhoc"):
                pass
        with self.assertRaisesRegex(ValueError, "plain HTTP"):
            self.api().run(port=0, ssl_context=("cert.pem", "key.pem"))

    def test_misspelt_option_still_raises(self):
        with self.assertRaisesRegex(TypeError, "threadd"):
            with served_api(self.api(), 0, threadd=True):
                pass
        with self.assertRaisesRegex(TypeError, "max_conections"):
            self.api().run(port=0, max_conections=3)

    def test_server_and_transport_options_reach_their_place(self):
        with served_api(self.api(), 0, max_connections=1,
                        cors_origins=["http://a.example"]) as url:
            address = urlsplit(url).hostname, urlsplit(url).port
            first = _Raw(address)
            self.addCleanup(first.close)
            first.sendall(b"GET /spec.json HTTP/1.1\r\nHost: x\r\n"
                          b"Origin: http://a.example\r\n\r\n")
            status, headers, _ = first.response()
            self.assertEqual(status, 200)
            self.assertEqual(headers.get("access-control-allow-origin"),
                             "http://a.example")
            second = _Raw(address)
            self.addCleanup(second.close)
            second.sendall(b"GET /spec.json HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(second.response()[0], 200)
            first.settimeout(10)
            self.assertEqual(first.recv(100), b"")  # cap of one: evicted

    def test_port_in_use_raises_the_original_oserror(self):
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with self.assertRaises(OSError) as caught:
            with served_api(self.api(), port):
                pass
        self.assertEqual(caught.exception.errno, errno.EADDRINUSE)
        with self.assertRaises(OSError) as caught:
            self.api().run(port=port)
        self.assertEqual(caught.exception.errno, errno.EADDRINUSE)
        self.assertNotIn("attempting", str(caught.exception))

    def test_bad_port_raises_oserror(self):
        with self.assertRaisesRegex(OSError, "port must be 0-65535"):
            self.api().run(port=99999)


class TestS2StartupErrors(unittest.TestCase):
    """``serve``: one line naming the address and the cause, exit 2."""

    def check(self, args, address, cause):
        code, err = _sv_cli("serve", "examples/places.py", *args)
        self.assertEqual(code, 2, err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("Cannot listen on %s" % address, err)
        self.assertIn(cause, err)
        self.assertNotIn("Traceback", err)

    def test_port_in_use(self):
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        self.check(["--port", str(port)], "127.0.0.1:%d" % port,
                   "Address already in use")

    def test_bad_port(self):
        self.check(["--port", "99999"], "127.0.0.1:99999",
                   "port must be 0-65535")

    def test_unresolvable_host(self):
        self.check(["--host", "no-such-host.invalid", "--port", "0"],
                   "no-such-host.invalid:0", ": ")

    def test_bad_option_values(self):
        for args in (["--threads", "0"], ["--max-connections", "x"],
                     ["--workers", "-1"]):
            with self.subTest(args=args):
                code, err = _sv_cli("serve", "examples/places.py", *args)
                self.assertEqual(code, 2, err)
                self.assertIn("at least 1", err)


class TestS2SlowClients(unittest.TestCase):
    """Connections waiting for a head cost no thread; past the cap the
    oldest is closed; no busy loop when descriptors run out."""

    def setUp(self):
        if not os.path.exists("/proc/self/stat"):
            self.skipTest("needs /proc")
        self.folder = _hs_app_dir(self)

    def close_all(self, socks):
        for sock in socks:
            sock.close()

    def test_a_cap_plus_50_trickling_connections(self):
        server = _hs_serve(self, self.folder, "s2app:api",
                           "--max-connections", "100", "--threads", "4")
        idle = [_Raw(server.address) for _ in range(20)]
        for raw in idle:  # keep-alive connections, now idle
            self.addCleanup(raw.close)
            raw.sendall(b"GET /spec.json HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(raw.response()[0], 200)
        socks = _hs_tricklers(server.address, 150)
        self.addCleanup(self.close_all, socks)
        status, elapsed = _hs_fresh_request(server.address)
        self.assertEqual(status, 200)
        self.assertLess(elapsed, 4.0)
        _, threads, _, _ = _hs_proc_stat(server.proc.pid)
        self.assertLessEqual(threads, 4 + 2)  # loop + workers, not 150
        self.assertEqual(server.stop(), 0)

    def test_b_fd_limit_below_the_connections(self):
        server = _hs_serve(self, self.folder, "s2app:api", nofile=256)
        socks = _hs_tricklers(server.address, 300)
        self.addCleanup(self.close_all, socks)
        status, elapsed = _hs_fresh_request(server.address)
        self.assertEqual(status, 200)
        self.assertLess(elapsed, 4.0)
        cpu_before = _hs_proc_stat(server.proc.pid)[0]
        started = time.monotonic()
        threading.Event().wait(2.0)  # nothing is sent meanwhile
        cpu = _hs_proc_stat(server.proc.pid)[0] - cpu_before
        wall = time.monotonic() - started
        self.assertLess(cpu, 0.25 * wall)  # a busy loop uses ~100%
        status, elapsed = _hs_fresh_request(server.address)
        self.assertEqual(status, 200)
        self.assertLess(elapsed, 4.0)
        self.assertEqual(server.stop(), 0)

    def test_small_chunks_cost_no_more_memory_than_their_bytes(self):
        server = _hs_serve(self, self.folder, "s2app:body_length")
        _http(server.address, "GET", "/", timeout=30, close=False)  # warm up
        peak_before = _hs_proc_stat(server.proc.pid)[3]
        size = (1 << 20) - 1024
        body = b"2\r\nab\r\n" * (size // 2) + b"0\r\n\r\n"
        raw = _Raw(server.address, timeout=60)
        try:
            raw.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n" + body)
            status, _, answer = raw.response()
        finally:
            raw.close()
        self.assertEqual((status, answer), (200, str(size).encode()))
        grown = _hs_proc_stat(server.proc.pid)[3] - peak_before
        self.assertLess(grown, 8 * 1024, "peak RSS grew %d KiB" % grown)


class TestS2GracefulShutdown(unittest.TestCase):
    """SIGTERM: stop accepting, finish requests in flight, close idle
    keep-alive connections, exit 0."""

    def test_request_in_flight_gets_its_answer(self):
        self.check_in_flight(signal.SIGTERM)

    def test_ctrl_c_lets_the_request_in_flight_finish_too(self):
        self.check_in_flight(signal.SIGINT)

    def check_in_flight(self, signum):
        folder = _hs_app_dir(self)
        server = _hs_serve(self, folder, "s2app:api")
        idle = _Raw(server.address)
        self.addCleanup(idle.close)
        idle.sendall(b"GET /spec.json HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(idle.response()[0], 200)
        results = []
        # 5 s in the action: the signal is handled long before the answer
        # is framed, even on a busy machine.
        thread = threading.Thread(target=lambda: results.append(
            _http(server.address, "POST", "/actions/slow", [_JSON], b"5",
                  timeout=30, close=False)))
        thread.start()
        marks = os.path.join(folder, "marks")
        self.assertTrue(_wait(lambda: os.listdir(marks), 20))
        server.proc.send_signal(signum)
        idle.settimeout(5)
        self.assertEqual(idle.recv(100), b"")  # idle: closed at once
        thread.join(30)
        self.assertEqual(len(results), 1)
        status, headers, body = results[0]
        self.assertEqual(status, 200)
        self.assertEqual(int(body), server.proc.pid)
        self.assertEqual(headers.get("connection"), "close")
        self.assertEqual(server.proc.wait(timeout=20), 0)
        with self.assertRaises(OSError):
            _http(server.address, "GET", "/spec.json", timeout=5,
                  close=False)

    def test_graceful_timeout_bounds_the_wait(self):
        folder = _hs_app_dir(self)
        server = _hs_serve(self, folder, "s2app:api",
                           "--graceful-timeout", "0.5")
        def cut_off():
            with self.assertRaises(OSError):  # the server stopped waiting
                _http(server.address, "POST", "/actions/slow", [_JSON],
                      b"30", timeout=60, close=False)

        thread = threading.Thread(target=cut_off, daemon=True)
        thread.start()
        marks = os.path.join(folder, "marks")
        self.assertTrue(_wait(lambda: os.listdir(marks), 20))
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        self.assertEqual(server.proc.wait(timeout=20), 0)
        self.assertLess(time.monotonic() - started, 10)
        self.assertIn("still running", server.stderr_text())
        thread.join(10)


class TestS2Workers(unittest.TestCase):
    """``serve --workers N``: one socket, N processes."""

    def setUp(self):
        if not hasattr(os, "fork") or not os.path.exists("/proc/self/task"):
            self.skipTest("needs fork and /proc")
        self.folder = _hs_app_dir(self)

    def prefixes(self, address, count):
        """Request-id prefixes and worker pids over ``count`` fresh
        connections."""
        prefixes, pids, ids = set(), set(), set()
        for _ in range(count):
            status, headers, body = _http(address, "POST", "/actions/pid",
                                          timeout=30, close=False)
            self.assertEqual(status, 200)
            ids.add(headers["x-request-id"])
            prefixes.add(headers["x-request-id"].rsplit("-", 1)[0])
            pids.add(int(body))
        return prefixes, pids, ids

    def test_two_workers_serve_with_their_own_ids(self):
        server = _hs_serve(self, self.folder, "s2app:api", "--workers", "2")
        self.assertTrue(_wait(
            lambda: len(_hs_children(server.proc.pid)) == 2, 20))
        seen_prefixes, seen_pids, seen_ids = set(), set(), set()
        for _ in range(20):
            prefixes, pids, ids = self.prefixes(server.address, 10)
            seen_prefixes |= prefixes
            seen_pids |= pids
            self.assertFalse(seen_ids & ids)
            seen_ids |= ids
            if len(seen_pids) == 2:
                break
        self.assertEqual(seen_pids, _hs_children(server.proc.pid))
        self.assertEqual(len(seen_prefixes), 2)
        self.assertEqual(server.stop(), 0)

    def test_a_killed_worker_is_replaced(self):
        server = _hs_serve(self, self.folder, "s2app:api", "--workers", "2")
        self.assertTrue(_wait(
            lambda: len(_hs_children(server.proc.pid)) == 2, 20))
        before = _hs_children(server.proc.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        self.assertTrue(_wait(
            lambda: len(_hs_children(server.proc.pid) - {victim}) == 2, 20))
        for _ in range(10):
            status, _, body = _http(server.address, "POST", "/actions/pid",
                                    timeout=30, close=False)
            self.assertEqual(status, 200)
            self.assertNotEqual(int(body), victim)
        self.assertEqual(server.stop(), 0)
        self.assertIn("Worker %d was killed by signal %d" % (
            victim, signal.SIGKILL), server.stderr_text())

    def test_sigterm_drains_every_worker(self):
        server = _hs_serve(self, self.folder, "s2app:api", "--workers", "2",
                           "--threads", "2")
        self.assertTrue(_wait(
            lambda: len(_hs_children(server.proc.pid)) == 2, 20))
        # Both workers accept (each has answered), not merely started.
        answered = set()

        def both_answered():
            answered.add(int(_http(server.address, "POST", "/actions/pid",
                                   timeout=30, close=False).body))
            return len(answered) == 2
        self.assertTrue(_wait(both_answered, 30))
        marks = os.path.join(self.folder, "marks")
        results = []
        threads = []

        def busy_pids():
            return {int(name.split("-")[0]) for name in os.listdir(marks)}

        # Slow requests until both workers have one in flight: the kernel
        # gives each new connection to either worker, so a few tries may all
        # land on one; 30 make that a one-in-a-billion chance.
        for _ in range(30):
            thread = threading.Thread(target=lambda: results.append(
                _http(server.address, "POST", "/actions/slow", [_JSON], b"2",
                      timeout=30, close=False)))
            thread.start()
            threads.append(thread)
            # Each request leaves a mark when it starts: wait for it (not
            # for a fixed time), then see whether both workers are busy.
            _wait(lambda: len(os.listdir(marks)) >= len(threads), 10)
            if len(busy_pids()) == 2:
                break
        self.assertEqual(len(busy_pids()), 2)
        server.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        self.assertEqual(len(results), len(threads))
        self.assertEqual({status for status, _, _ in results}, {200})
        self.assertEqual({int(body) for _, _, body in results}, busy_pids())
        self.assertEqual(server.proc.wait(timeout=30), 0)


class TestS2RequestIdsAcrossProcesses(unittest.TestCase):
    """Request ids are unique across gunicorn workers, with and without
    --preload (a prefix drawn again after fork)."""

    def check(self, preload):
        _need("gunicorn")
        folder = _hs_app_dir(self)
        port = _hd_free_port()
        log = tempfile.TemporaryFile(mode="w+")
        self.addCleanup(log.close)
        args = [sys.executable, "-m", "gunicorn", "-w", "4",
                "-b", "127.0.0.1:%d" % port, "--graceful-timeout", "5"]
        if preload:
            args.append("--preload")
        with open(os.path.join(folder, "s2wsgi.py"), "w") as f:
            f.write("from cosmic import Server\nfrom s2app import api\n"
                    "wsgi_app = Server(api).wsgi_app\n")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_ROOT, folder])
        proc = subprocess.Popen(args + ["s2wsgi:wsgi_app"], cwd=folder,
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

        def stop():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        self.addCleanup(stop)
        self.assertTrue(_wait(lambda: _hd_answers(port), 30, 0.05))
        answers = []

        def client():
            for _ in range(5):  # 8 clients at once keep all 4 workers busy
                answers.append(_http(("127.0.0.1", port), "POST",
                                     "/actions/slow", [_JSON], b"0.05",
                                     timeout=30))

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual([a[0] for a in answers], [200] * 40)
        self.assertGreater(len({int(a[2]) for a in answers}), 1)
        ids = {headers["x-request-id"] for _, headers, _ in answers}
        self.assertEqual(len(ids), 40)

    def test_gunicorn_four_workers(self):
        self.check(preload=False)

    def test_gunicorn_four_workers_preload(self):
        self.check(preload=True)


class TestConditionalRequestsHTTP(unittest.TestCase):
    """304 over a real keep-alive connection: no body, no length."""

    def test_304_then_another_request(self):
        _sv_isolate(self)
        api, _, _ = _sv_towns()
        with served_api(api) as url:
            conn = http.client.HTTPConnection(urlsplit(url).hostname,
                                              urlsplit(url).port, timeout=10)
            try:
                conn.request("GET", "/Town/1")
                res = conn.getresponse()
                body = res.read()
                tag = res.getheader("ETag")
                self.assertEqual(res.status, 200)
                conn.request("GET", "/Town/1", headers={"If-None-Match": tag})
                res = conn.getresponse()
                self.assertEqual((res.status, res.read()), (304, b""))
                self.assertIsNone(res.getheader("Content-Length"))
                self.assertEqual(res.getheader("ETag"), tag)
                conn.request("PUT", "/Town/1", body=b'{"name": "X"}',
                             headers={"If-Match": '"old"',
                                      "Content-Type": "application/json"})
                res = conn.getresponse()
                self.assertEqual(res.status, 412)
                self.assertIn(b"Precondition Failed", res.read())
                conn.request("GET", "/Town/1")
                res = conn.getresponse()
                self.assertEqual((res.status, res.read()), (200, body))
            finally:
                conn.close()


class TestConditionalRaceHTTP(unittest.TestCase):
    """Clients on their own connections race with one tag: one wins."""

    def test_one_winner_per_tag(self):
        _sv_isolate(self)
        api, towns, _ = _sv_towns(slow=threading.Event())
        results = []
        with served_api(api) as url:
            reader = APIClient(url)
            tag = reader.models.Town.get_by_id("1", _with_etag=True)[1]
            reader.close()
            barrier = threading.Barrier(6)

            def put(i):
                client = APIClient(url)
                try:
                    barrier.wait()
                    client.models.Town.update("1", name="T%d" % i,
                                              _if_match=tag)
                    results.append("won")
                except cosmic.PreconditionFailed:
                    results.append(412)
                finally:
                    client.close()

            threads = [threading.Thread(target=put, args=(i,))
                       for i in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        self.assertEqual(sorted(results, key=str), [412] * 5 + ["won"])
        self.assertEqual(towns["1"]["version"], 2)


# -- Client -------------------------------------------------------------------
# APIClient, WsgiAPIClient and the client built from a spec.


class TestClientBodyOnServerAPI(_cl_ClientBody, unittest.TestCase):
    """The shared body called on the server-side API object.

    Local calls are plain Python calls, unchecked and unserialised: the four
    HTTP-only tests are replaced by what the same calls do locally.
    """

    local = True

    @classmethod
    def setUpClass(cls):
        cls.api_obj = _cl_isolated_api()

    def test_action_returning_wrong_type_is_500(self):
        self.assertEqual(self.api_obj.actions.broken(), 3)

    def test_validate_patch_refusal_is_400(self):
        with self.assertRaises(ValidationError) as cm:
            self.api_obj.models.City.validate_patch({"name": "moscow"})
        self.assertEqual(str(cm.exception),
                         "Name must be capitalized: 'moscow'")

    def test_disabled_methods_are_405(self):
        Country = self.api_obj.models.Country
        for method in ("create", "update", "delete", "get_list"):
            with self.subTest(method=method):
                args = {"create": ({"name": "France"},),
                        "update": ("ca", {"name": "Kanada"}),
                        "delete": ("ca",), "get_list": ()}[method]
                with self.assertRaises(NotImplementedError):
                    getattr(Country, method)(*args)

    def test_client_builds_all_five_methods(self):
        for model in ("City", "Country"):
            namespace = getattr(self.api_obj.models, model)
            self.assertEqual(set(vars(namespace)),
                             set(cosmic.MODEL_METHODS) | {"validate_patch"})


class TestClientBodyInProcess(_cl_ClientBody, unittest.TestCase):
    """The shared body through WsgiAPIClient.for_api(api)."""

    @classmethod
    def setUpClass(cls):
        api = _cl_isolated_api()
        with cosmos.swap({}):
            cls.api_obj = WsgiAPIClient.for_api(api)


class TestClientBodyLive(_cl_ClientBody, unittest.TestCase):
    """The shared body through APIClient and `python -m cosmic serve`."""

    @classmethod
    def setUpClass(cls):
        cls.live = _cl_LiveServer()
        cls.addClassCleanup(cls.live.close)
        with cosmos.swap({}):
            cls.api_obj = APIClient(cls.live.url)
        cls.addClassCleanup(cls.api_obj.close)

    def test_serve_announces_name_and_url(self):
        self.assertEqual(self.live.name, _CL_API_NAME)
        self.assertEqual(self.api_obj.base_url, self.live.url)


class TestClientBodyServedThread(_cl_ClientBody, unittest.TestCase):
    """The shared body through cosmic.connect() and testing.served_api."""

    @classmethod
    def setUpClass(cls):
        api = _cl_isolated_api()
        served = served_api(api)
        url = served.__enter__()
        cls.addClassCleanup(served.__exit__, None, None, None)
        with cosmos.swap({}):
            cls.api_obj = cosmic.connect(url + "/")
        cls.addClassCleanup(cls.api_obj.close)

    def test_connect_gives_an_api_client(self):
        self.assertIsInstance(self.api_obj, APIClient)
        self.assertEqual(self.api_obj.name, _CL_API_NAME)
        self.assertFalse(self.api_obj.base_url.endswith("/"))


class TestClientValidatesBeforeSending(unittest.TestCase):
    """A bad call raises locally and sends nothing (in-process client)."""

    @classmethod
    def setUpClass(cls):
        cls.api = _cl_isolated_api()

    def setUp(self):
        self.app = _cl_counting(Server(self.api).wsgi_app)
        with cosmos.swap({}):
            self.client = _cl_LoggingWsgiClient(self.app)
        self.app.calls.clear()
        self.client.log.clear()

    def test_bad_values_raise_locally(self):
        for label, call, error, message in _CL_BAD_CALLS:
            with self.subTest(call=label):
                with self.assertRaises(error) as cm:
                    call(self.client)
                self.assertEqual(str(cm.exception), message)
                self.assertEqual(self.app.calls, [])
                self.assertEqual(self.client.log, [])

    def test_wrong_keywords_raise_locally(self):
        for label, call, culprit in _CL_WRONG_KEYWORDS:
            with self.subTest(call=label):
                with self.assertRaises(_CL_LOCAL_ERRORS) as cm:
                    call(self.client)
                self.assertIn(culprit, str(cm.exception))
                self.assertEqual(self.app.calls, [])
                self.assertEqual(self.client.log, [])

    def test_a_good_call_after_bad_ones_is_the_only_request(self):
        with self.assertRaises(ValidationError):
            self.client.actions.add("x")
        self.assertEqual(self.client.actions.add([1, 2]), 3)
        self.assertEqual(self.app.calls, [("POST", "/actions/add")])
        self.assertEqual(len(self.client.log), 1)


class TestClientValidatesBeforeSendingLive(unittest.TestCase):
    """Same against `python -m cosmic serve`: the server counts requests."""

    @classmethod
    def setUpClass(cls):
        cls.live = _cl_LiveServer()
        cls.addClassCleanup(cls.live.close)
        with cosmos.swap({}):
            cls.client = _cl_LoggingClient(cls.live.url)
        cls.addClassCleanup(cls.client.close)

    def setUp(self):
        self.client.actions.reset()

    def test_bad_calls_reach_no_server(self):
        count = self.client.actions.request_count
        for label, call, error, message in _CL_BAD_CALLS:
            with self.subTest(call=label):
                before = count()
                del self.client.log[:]
                with self.assertRaises(error) as cm:
                    call(self.client)
                self.assertEqual(str(cm.exception), message)
                self.assertEqual(self.client.log, [])
                # The second count() is the only request in between.
                self.assertEqual(count(), before + 1)

    def test_wrong_keywords_reach_no_server(self):
        count = self.client.actions.request_count
        for label, call, culprit in _CL_WRONG_KEYWORDS:
            with self.subTest(call=label):
                before = count()
                del self.client.log[:]
                with self.assertRaises(_CL_LOCAL_ERRORS) as cm:
                    call(self.client)
                self.assertIn(culprit, str(cm.exception))
                self.assertEqual(self.client.log, [])
                self.assertEqual(count(), before + 1)


class TestClientStatusMapping(unittest.TestCase):
    """The status is checked first, then the body
    (docs/protocol.md#reading-answers)."""

    @classmethod
    def setUpClass(cls):
        cls.spec = _cl_spec_json(_cl_isolated_api())

    def client_for(self, app):
        with cosmos.swap({}):
            return WsgiAPIClient(app, spec=self.spec)

    def test_404_with_or_without_body_is_not_found(self):
        bodies = [(b"", None), (b'{"error": "Not Found"}', "application/json"),
                  (b"Not Found", "text/plain")]
        calls = [("get_by_id", lambda c: c.models.City.get_by_id("7")),
                 ("update", lambda c: c.models.City.update("7", name="X")),
                 ("delete", lambda c: c.models.City.delete("7"))]
        for body, content_type in bodies:
            client = self.client_for(_cl_canned("404 Not Found", body,
                                                content_type))
            for method, call in calls:
                with self.subTest(method=method, body=body):
                    with self.assertRaises(NotFound):
                        call(client)

    def test_404_elsewhere_is_remote_http_error(self):
        client = self.client_for(_cl_canned(
            "404 Not Found", b'{"error": "Not Found"}', "application/json"))
        calls = [("action", lambda c: c.actions.add([1])),
                 ("create", lambda c: c.models.City.create(name="X")),
                 ("get_list", lambda c: c.models.City.get_list())]
        for method, call in calls:
            with self.subTest(method=method):
                with self.assertRaises(RemoteHTTPError) as cm:
                    call(client)
                self.assertEqual(cm.exception.args, (404, "Not Found"))

    def test_error_statuses_take_the_message_from_the_body(self):
        cases = [("400 Bad Request", {"error": "Invalid data"}, 400,
                  "Invalid data"),
                 ("401 Unauthorized", {"error": "Unauthorized"}, 401,
                  "Unauthorized"),
                 ("405 Method Not Allowed", {"error": "Method Not Allowed"},
                  405, "Method Not Allowed"),
                 ("500 Internal Server Error",
                  {"error": "Internal Server Error"}, 500,
                  "Internal Server Error"),
                 ("503 Service Unavailable", {"reason": "busy"}, 503, None),
                 ("503 Service Unavailable", ["busy"], 503, None),
                 ("409 Conflict", {"error": 7}, 409, None)]
        calls = [("action", lambda c: c.actions.add([1])),
                 ("get_by_id", lambda c: c.models.City.get_by_id("0")),
                 ("create", lambda c: c.models.City.create(name="X")),
                 ("update", lambda c: c.models.City.update("0", name="X")),
                 ("delete", lambda c: c.models.City.delete("0")),
                 ("get_list", lambda c: c.models.City.get_list())]
        for status, body, code, message in cases:
            client = self.client_for(_cl_canned(
                status, json.dumps(body).encode(), "application/json"))
            for method, call in calls:
                with self.subTest(status=status, body=body, method=method):
                    with self.assertRaises(RemoteHTTPError) as cm:
                        call(client)
                    self.assertEqual(cm.exception.args, (code, message))
                    self.assertEqual(cm.exception.code, code)
                    self.assertEqual(cm.exception.message, message)
                    self.assertEqual(cm.exception.errors, [])

    def test_non_json_error_body_gives_no_message(self):
        client = self.client_for(_cl_canned("502 Bad Gateway", _CL_HTML_502,
                                            "text/html"))
        calls = [("action", lambda c: c.actions.add([1])),
                 ("get_by_id", lambda c: c.models.City.get_by_id("0")),
                 ("update", lambda c: c.models.City.update("0", name="X")),
                 ("delete", lambda c: c.models.City.delete("0")),
                 ("get_list", lambda c: c.models.City.get_list())]
        for method, call in calls:
            with self.subTest(method=method):
                with self.assertRaises(RemoteHTTPError) as cm:
                    call(client)
                self.assertEqual(cm.exception.args, (502, None))

    def test_spec_fetch_errors_come_from_the_constructor(self):
        cases = [(_cl_canned("502 Bad Gateway", _CL_HTML_502, "text/html"),
                  (502, None)),
                 (_cl_canned("401 Unauthorized", b'{"error": "Unauthorized"}',
                             "application/json"), (401, "Unauthorized"))]
        for app, args in cases:
            with self.subTest(args=args):
                with cosmos.swap({}):
                    with self.assertRaises(RemoteHTTPError) as cm:
                        WsgiAPIClient(app)
                self.assertEqual(cm.exception.args, args)

    def test_bad_body_on_acceptable_status_is_spec_error(self):
        html = (b"<html>oops</html>", "text/html")
        cases = [("action", "200 OK", html, lambda c: c.actions.add([1])),
                 ("get_by_id", "200 OK", html,
                  lambda c: c.models.City.get_by_id("0")),
                 ("create", "201 Created", html,
                  lambda c: c.models.City.create(name="X")),
                 ("update", "200 OK", html,
                  lambda c: c.models.City.update("0", name="X")),
                 ("get_list", "200 OK", html,
                  lambda c: c.models.City.get_list()),
                 ("get_list not an object", "200 OK",
                  (b"[]", "application/json"),
                  lambda c: c.models.City.get_list())]
        for label, status, (body, content_type), call in cases:
            client = self.client_for(_cl_canned(status, body, content_type))
            with self.subTest(call=label):
                with self.assertRaises(SpecError):
                    call(client)

    def test_unparseable_spec_is_spec_error(self):
        with cosmos.swap({}):
            with self.assertRaises(SpecError) as cm:
                WsgiAPIClient(_cl_canned("200 OK", b"<html></html>",
                                         "text/html"))
        self.assertEqual(str(cm.exception), "Unparseable response")

    def test_wrong_representation_on_200_is_validation_error(self):
        client = self.client_for(_cl_canned(
            "201 Created", b'{"_links": {"self": {"href": "/City/5"}}}',
            "application/json"))
        with self.assertRaises(ValidationError) as cm:
            client.models.City.create(name="X")
        self.assertEqual(str(cm.exception), "Missing fields: ['name']")

    def test_integral_float_comes_back_as_int(self):
        client = self.client_for(_cl_canned("200 OK", b"2.0",
                                            "application/json"))
        result = client.actions.divide(numerator=10, denominator=5)
        self.assertEqual((result, type(result)), (2, int))

    def test_charset_parameter_is_accepted(self):
        client = self.client_for(_cl_canned(
            "200 OK", b"3", "application/json; charset=utf-8"))
        self.assertEqual(client.actions.add([1, 2]), 3)

    def test_html_502_from_a_proxy_over_http(self):
        proxy = _cl_RawServer(_cl_html_502)
        self.addCleanup(proxy.close)
        with cosmos.swap({}):
            client = APIClient.from_spec(self.spec, proxy.url)
            self.addCleanup(client.close)
            with self.assertRaises(RemoteHTTPError) as cm:
                client.actions.add([1, 2])
            self.assertEqual(cm.exception.args, (502, None))
            with self.assertRaises(RemoteHTTPError) as cm:
                client.models.City.delete("0")
            self.assertEqual(cm.exception.args, (502, None))
            with self.assertRaises(RemoteHTTPError) as cm:
                APIClient(proxy.url)
            self.assertEqual(cm.exception.args, (502, None))
        self.assertEqual(proxy.seen(), [("POST", "/actions/add"),
                                        ("DELETE", "/City/0"),
                                        ("GET", "/spec.json")])


class TestClientProblemDetails(unittest.TestCase):
    """``problem_details = True`` gives RemoteHTTPError.errors."""

    @classmethod
    def setUpClass(cls):
        cls.api = _cl_isolated_api()
        # A stale client whose spec accepts anything: the server refuses.
        loose = _cl_spec_json(cls.api)
        actions = loose["actions"]["map"]
        actions["add"]["accepts"] = {"type": "JSON"}
        actions["divide"]["accepts"] = {"type": "JSON"}
        cls.loose = loose

    def client(self, problem_details):
        class Client(_cl_LoggingWsgiClient):
            pass
        Client.problem_details = problem_details
        with cosmos.swap({}):
            return Client(Server(self.api).wsgi_app, spec=self.loose)

    def test_errors_cover_every_problem(self):
        client = self.client(True)
        with self.assertRaises(RemoteHTTPError) as cm:
            client.actions.add([1, "x", True, 2.5])
        self.assertEqual(cm.exception.code, 400)
        self.assertEqual(cm.exception.message,
                         "Item at [1] Invalid Integer: 'x'")
        self.assertEqual(cm.exception.errors, [
            {"detail": "Invalid Integer: 'x'", "pointer": "/1"},
            {"detail": "Invalid Integer: True", "pointer": "/2"},
            {"detail": "Invalid Integer: 2.5", "pointer": "/3"}])

    def test_struct_errors_cover_missing_unexpected_and_invalid(self):
        client = self.client(True)
        with self.assertRaises(RemoteHTTPError) as cm:
            client.actions.divide({"numerator": "ten", "extra": 1})
        self.assertEqual(cm.exception.code, 400)
        self.assertEqual(cm.exception.errors, [
            {"detail": "Missing fields: ['denominator']", "pointer": ""},
            {"detail": "Unexpected fields: ['extra']", "pointer": ""},
            {"detail": "Invalid Integer: 'ten'", "pointer": "/numerator"}])

    def test_validate_patch_error(self):
        client = self.client(True)
        with self.assertRaises(RemoteHTTPError) as cm:
            client.models.City.create(name="moscow")
        self.assertEqual(cm.exception.args,
                         (400, "Name must be capitalized: 'moscow'"))
        self.assertEqual(cm.exception.errors, [
            {"detail": "Name must be capitalized: 'moscow'", "pointer": ""}])

    def test_request_asks_for_problem_json(self):
        client = self.client(True)
        with self.assertRaises(RemoteHTTPError):
            client.actions.add(["x"])
        request, response = client.log[-1]
        self.assertEqual(dict(request["headers"])["Accept"],
                         "application/problem+json, application/json")
        self.assertEqual(dict(response["headers"])["Content-Type"],
                         "application/problem+json")
        self.assertEqual(json.loads(response["data"])["status"], 400)

    def test_other_errors_keep_their_message(self):
        client = self.client(True)
        cases = [(lambda: client.actions.refuse("boo"),
                  (400, "Word not allowed: 'boo'")),
                 (lambda: client.actions.broken(),
                  (500, "Internal Server Error")),
                 (lambda: client.models.Country.create(name="France"),
                  (405, "Method Not Allowed"))]
        for call, args in cases:
            with self.subTest(args=args):
                with self.assertRaises(RemoteHTTPError) as cm:
                    call()
                self.assertEqual(cm.exception.args, args)
                self.assertEqual(cm.exception.errors, [])
        with self.assertRaises(NotFound):
            client.models.City.get_by_id("99")

    def test_without_problem_details_errors_is_empty(self):
        client = self.client(False)
        with self.assertRaises(RemoteHTTPError) as cm:
            client.actions.add([1, "x", True])
        self.assertEqual(cm.exception.args,
                         (400, "Item at [1] Invalid Integer: 'x'"))
        self.assertEqual(cm.exception.errors, [])
        request, response = client.log[-1]
        self.assertNotIn("Accept", dict(request["headers"]))
        self.assertEqual(json.loads(response["data"]),
                         {"error": "Item at [1] Invalid Integer: 'x'"})


class TestClientAuthentication(unittest.TestCase):
    """The user guide's PlanetariumServer and PlanetariumClient."""

    @classmethod
    def setUpClass(cls):
        with cosmos.swap({}):
            planetarium = API("planetarium")

            @planetarium.action(returns=String)
            def brightest():
                return "Sirius"

        cls.seen = []
        app = _cl_PlanetariumServer(planetarium).wsgi_app

        def recording(environ, start_response):
            cls.seen.append((environ["REQUEST_METHOD"],
                             environ["PATH_INFO"],
                             environ.get("HTTP_AUTHORIZATION")))
            return app(environ, start_response)

        cls.server = _ThreadServer(recording, wsgiref=True)
        cls.addClassCleanup(cls.server.close)
        cls.spec = _cl_spec_json(planetarium)

    def setUp(self):
        del self.seen[:]
        swap = cosmos.swap({})
        swap.__enter__()
        self.addCleanup(swap.__exit__, None, None, None)

    def test_client_without_secret_fails_at_construction(self):
        with self.assertRaises(RemoteHTTPError) as cm:
            APIClient(self.server.url)
        self.assertEqual(cm.exception.args, (401, "Unauthorized"))
        self.assertEqual(self.seen, [("GET", "/spec.json", None)])

    def test_seed_client_with_super_of_apiclient(self):
        url = self.server.url

        class PlanetariumClient(APIClient):
            base_url = url

            def build_request(self, endpoint, *args, **kwargs):
                request = super(APIClient, self).build_request(
                    endpoint, *args, **kwargs)
                request.headers["Authorization"] = "secret"
                return request

        planetarium = PlanetariumClient()
        self.addCleanup(planetarium.close)
        self.assertEqual(planetarium.actions.brightest(), "Sirius")
        self.assertEqual(self.seen,
                         [("GET", "/spec.json", "secret"),
                          ("POST", "/actions/brightest", "secret")])

    def test_client_with_plain_super(self):
        planetarium = _cl_AuthClient(self.server.url)
        self.addCleanup(planetarium.close)
        self.assertEqual(planetarium.actions.brightest(), "Sirius")
        self.assertEqual(self.seen,
                         [("GET", "/spec.json", "secret"),
                          ("POST", "/actions/brightest", "secret")])

    def test_call_without_secret_fails(self):
        client = APIClient.from_spec(self.spec, self.server.url)
        self.addCleanup(client.close)
        with self.assertRaises(RemoteHTTPError) as cm:
            client.actions.brightest()
        self.assertEqual(cm.exception.args, (401, "Unauthorized"))

    def test_hook_can_retry_on_401(self):
        # parse_response may inspect the status and call retry.
        class RetryingClient(APIClient):
            token = "wrong"

            def build_request(self, endpoint, *args, **kwargs):
                request = super().build_request(endpoint, *args, **kwargs)
                request.headers["Authorization"] = self.token
                return request

            def call(self, endpoint, *args, **kwargs):
                try:
                    return super().call(endpoint, *args, **kwargs)
                except RemoteHTTPError as err:
                    if err.code != 401 or self.token == "secret":
                        raise
                    self.token = "secret"
                    return super().call(endpoint, *args, **kwargs)

        client = RetryingClient(self.server.url)
        self.addCleanup(client.close)
        self.assertEqual(client.actions.brightest(), "Sirius")
        self.assertEqual(self.seen,
                         [("GET", "/spec.json", "wrong"),
                          ("GET", "/spec.json", "secret"),
                          ("POST", "/actions/brightest", "secret")])


class TestAuthClients(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.api = _au_api(protect_spec=True)
        cls.served = served_api(cls.api)
        cls.url = cls.served.__enter__()
        cls.addClassCleanup(cls.served.__exit__, None, None, None)

    def client(self, **options):
        client = APIClient(self.url, **options)
        self.addCleanup(client.close)
        return client

    def test_every_form_of_auth_including_the_spec_fetch(self):
        for auth in (_AU_TOKEN, {"bearer": _AU_TOKEN},
                     {"api_key": _AU_TOKEN}, ("alice", _AU_TOKEN),
                     {"basic": ("alice", _AU_TOKEN)}):
            with self.subTest(auth=auth):
                client = self.client(auth=auth)
                self.assertEqual(client.actions.whoami(), "alice")
                self.assertEqual(client.actions.admin(), "ok")
                ident, rep = client.models.Note.create(text="hi")
                self.assertEqual(rep, {"text": "hi"})
                client.models.Note.delete(ident)

    def test_connect_and_subclass_attribute(self):
        client = cosmic.connect(self.url, auth=_AU_TOKEN)
        self.addCleanup(client.close)
        self.assertEqual(client.actions.whoami(), "alice")

        class AliceClient(APIClient):
            base_url = self.url
            auth = {"api_key": _AU_TOKEN}

        client = AliceClient()
        self.addCleanup(client.close)
        self.assertEqual(client.actions.whoami(), "alice")

    def test_without_auth_the_protected_spec_fetch_fails(self):
        with self.assertRaises(RemoteHTTPError) as cm:
            self.client()
        self.assertEqual(cm.exception.code, 401)
        with self.assertRaises(RemoteHTTPError) as cm:
            self.client(auth="tok-nobody")
        self.assertEqual((cm.exception.code, cm.exception.message),
                         (401, "Invalid credentials"))

    def test_scope_errors_reach_the_client(self):
        client = self.client(auth="tok-bob-77aa01d3")
        with self.assertRaises(RemoteHTTPError) as cm:
            client.actions.admin()
        self.assertEqual(cm.exception.code, 403)

    def test_a_token_follows_an_api_key_only_api(self):
        """A plain token goes where the 401's challenge says."""
        api = _au_api(schemes=[cosmic.APIKeyAuth(_AU_USERS.get,
                                                 header="X-Key")],
                      protect_spec=True)
        with served_api(api) as url:
            client = APIClient(url, auth=_AU_TOKEN)
            self.assertEqual(client.actions.whoami(), "alice")
            client.close()
        client = WsgiAPIClient.for_api(api, auth=_AU_TOKEN)
        self.assertEqual(client.actions.whoami(), "alice")
        client = WsgiAPIClient(Server(api).wsgi_app, auth=_AU_TOKEN)
        self.assertEqual(client.actions.whoami(), "alice")

    def test_wsgi_client(self):
        client = WsgiAPIClient.for_api(self.api, auth=("alice", _AU_TOKEN))
        self.assertEqual(client.actions.whoami(), "alice")
        with self.assertRaises(RemoteHTTPError):
            WsgiAPIClient.for_api(self.api)

    def test_no_credential_to_another_origin_on_redirect(self):
        other = _au_Recorder()
        other_server = _ThreadServer(other)
        self.addCleanup(other_server.close)
        # 127.0.0.1 and localhost are two origins, as are two ports.
        front = _au_Recorder(location=other_server.url)
        front_server = _ThreadServer(
            lambda environ, start_response: (
                Server(_au_api()).wsgi_app(environ, start_response)
                if not environ["PATH_INFO"].startswith("/actions/")
                else front(environ, start_response)))
        self.addCleanup(front_server.close)
        for auth in (_AU_TOKEN, {"api_key": _AU_TOKEN},
                     ("alice", _AU_TOKEN)):
            with self.subTest(auth=auth):
                client = APIClient(front_server.url, auth=auth)
                self.addCleanup(client.close)
                with self.assertRaises(RemoteHTTPError) as cm:
                    client.actions.whoami()
                self.assertEqual(cm.exception.code, 307)
                sent = front.seen[-1][1]
                self.assertTrue(set(sent) & {"HTTP_AUTHORIZATION",
                                             "HTTP_X_KEY"}, sent)
        self.assertEqual(other.seen, [])

    def test_same_origin_redirect_keeps_the_credential(self):
        app = Server(self.api).wsgi_app

        def moved(environ, start_response):
            if environ["PATH_INFO"] == "/old/whoami":
                start_response("307 Temporary Redirect", [
                    ("Location", "/actions/whoami"),
                    ("Content-Length", "0")])
                return [b""]
            return app(environ, start_response)

        server = _ThreadServer(moved)
        self.addCleanup(server.close)
        client = APIClient(server.url, auth=_AU_TOKEN)
        self.addCleanup(client.close)
        endpoint = client.actions.whoami.endpoint
        request = client.build_request(endpoint)
        request.url = "/old/whoami"
        response = client.make_request(endpoint, request)
        self.assertEqual((response.status_code, response.content),
                         (200, b'"alice"'))


class TestClientTransport(unittest.TestCase):
    """APIClient against tiny raw socket servers."""

    @classmethod
    def setUpClass(cls):
        cls.spec = _cl_spec_json(_cl_isolated_api())

    def setUp(self):
        swap = cosmos.swap({})
        swap.__enter__()
        self.addCleanup(swap.__exit__, None, None, None)

    def raw(self, handler):
        server = _cl_RawServer(handler)
        self.addCleanup(server.close)
        return server

    def client(self, url, cls=APIClient, **options):
        client = cls.from_spec(self.spec, url, **options)
        self.addCleanup(client.close)
        return client

    def test_timeout_against_a_silent_server(self):
        server = self.raw(_cl_never_answer)
        client = self.client(server.url, timeout=0.5)
        start = time.monotonic()
        with self.assertRaises(socket.timeout):
            client.actions.add([1, 2])
        self.assertLess(time.monotonic() - start, 5)
        self.assertEqual(server.seen(), [("POST", "/actions/add")])

    def test_per_call_timeout(self):
        server = self.raw(_cl_never_answer)
        client = self.client(server.url)
        self.assertEqual(client.timeout, 30.0)
        start = time.monotonic()
        with self.assertRaises(socket.timeout):
            client.models.City.get_by_id("0", _timeout=0.5)
        self.assertLess(time.monotonic() - start, 5)
        self.assertEqual(server.seen()[0], ("GET", "/City/0"))

    def test_per_call_timeout_on_a_kept_alive_connection(self):
        server = self.raw(_cl_answer_then_hang)
        client = self.client(server.url)
        self.assertEqual(client.actions.add([1, 2]), 3)
        start = time.monotonic()
        with self.assertRaises(socket.timeout):
            client.actions.add([3, 4], _timeout=0.5)
        self.assertLess(time.monotonic() - start, 5)
        self.assertEqual(server.seen(), [("POST", "/actions/add")] * 2)
        self.assertEqual(server.connections, 1)

    def test_per_call_timeout_is_not_sent(self):
        server = self.raw(_cl_answer_add)
        client = self.client(server.url)
        self.assertEqual(client.actions.add([1, 2], _timeout=5), 3)
        self.assertEqual(server.requests[0].body, b"[1, 2]")

    def test_idempotent_call_is_retried_after_a_dropped_connection(self):
        server = self.raw(_cl_drop_first)
        client = self.client(server.url)
        self.assertEqual(client.models.City.get_by_id("0"),
                         {"name": "Toronto"})
        self.assertEqual(server.seen(), [("GET", "/City/0"),
                                         ("GET", "/City/0")])
        self.assertEqual(server.connections, 2)

    def test_action_is_not_retried(self):
        server = self.raw(_cl_drop_all)
        client = self.client(server.url)
        with self.assertRaises(ConnectionError):
            client.actions.add([1, 2])
        self.assertEqual(server.seen(), [("POST", "/actions/add")])
        self.assertEqual(server.connections, 1)

    def test_retries_give_up(self):
        server = self.raw(_cl_drop_all)
        client = self.client(server.url, retries=1, retry_backoff=0)
        with self.assertRaises(ConnectionError):
            client.models.City.get_by_id("0")
        self.assertEqual(server.seen(), [("GET", "/City/0")] * 2)

    def test_failed_construction_closes_its_connection(self):
        server = self.raw(_cl_html_502)
        caught = None
        try:
            APIClient(server.url)
        except RemoteHTTPError as err:
            caught = err
        # caught.__traceback__ keeps the half-built client alive, so the
        # server sees the connection end only if the client closed it.
        self.assertEqual(caught.args, (502, None))
        self.assertTrue(server.closed_one.wait(2))
        del caught

    def test_connection_refused(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        client = self.client("http://127.0.0.1:%d" % port, retries=0)
        with self.assertRaises(ConnectionError):
            client.actions.add([1, 2])

    def test_keep_alive_reuses_one_connection(self):
        server = self.raw(_cl_answer_add)
        client = self.client(server.url)
        results = [client.actions.add([1, 2]), client.actions.add([3, 4]),
                   client.actions.add([5, 6])]
        self.assertEqual(results, [3, 7, 11])
        self.assertEqual(server.seen(), [("POST", "/actions/add")] * 3)
        self.assertEqual(server.connections, 1)
        self.assertEqual(server.requests[0].headers.get("connection"), None)

    def test_idle_connection_closed_by_server_is_replaced(self):
        server = self.raw(_cl_answer_once_then_close)
        client = self.client(server.url)
        self.assertEqual(client.actions.add([1, 2]), 3)
        self.assertTrue(server.closed_one.wait(5))
        # A POST is never retried, so this works only if the client
        # notices the dead socket before sending.
        self.assertEqual(client.actions.add([3, 4]), 7)
        self.assertEqual(server.connections, 2)

    def test_same_origin_redirect_is_followed(self):
        def handler(server, conn, stream, index):
            while True:
                request = server.read(stream)
                if request is None:
                    return
                if request.target == "/actions/add":
                    conn.sendall(_cl_http("307 Temporary Redirect", b"",
                                          [("Location", "/v2/actions/add")]))
                else:
                    conn.sendall(_cl_json_http(
                        sum(json.loads(request.body))))

        server = self.raw(handler)
        client = self.client(server.url, cls=_cl_AuthClient)
        self.assertEqual(client.actions.add([1, 2]), 3)
        self.assertEqual(server.seen(), [("POST", "/actions/add"),
                                         ("POST", "/v2/actions/add")])
        self.assertEqual([r.body for r in server.requests],
                         [b"[1, 2]", b"[1, 2]"])
        self.assertEqual([r.headers["authorization"]
                          for r in server.requests], ["secret", "secret"])

    def test_cross_origin_redirect_is_not_followed(self):
        other = self.raw(_cl_answer_add)

        def handler(server, conn, stream, index):
            while True:
                request = server.read(stream)
                if request is None:
                    return
                conn.sendall(_cl_http(
                    "307 Temporary Redirect", b"",
                    [("Location", other.url + "/actions/add")]))

        server = self.raw(handler)
        client = self.client(server.url, cls=_cl_AuthClient)
        with self.assertRaises(RemoteHTTPError) as cm:
            client.actions.add([1, 2])
        self.assertEqual(cm.exception.args, (307, None))
        self.assertEqual(server.seen(), [("POST", "/actions/add")])
        self.assertEqual(server.requests[0].headers["authorization"],
                         "secret")
        self.assertEqual(other.seen(), [])
        self.assertEqual(other.connections, 0)

    def test_redirect_loop_stops(self):
        def handler(server, conn, stream, index):
            while True:
                request = server.read(stream)
                if request is None:
                    return
                conn.sendall(_cl_http("307 Temporary Redirect", b"",
                                      [("Location", "/actions/add")]))

        server = self.raw(handler)
        client = self.client(server.url, max_redirects=3)
        with self.assertRaises(RemoteHTTPError) as cm:
            client.actions.add([1, 2])
        self.assertEqual(cm.exception.code, 307)
        self.assertEqual(server.seen(), [("POST", "/actions/add")] * 4)

    def test_base_url_path_prefix(self):
        server = self.raw(_cl_answer_add)
        client = self.client(server.url + "/api/v1/")
        self.assertEqual(client.base_url, server.url + "/api/v1")
        self.assertEqual(client.actions.add([2, 2]), 4)
        self.assertEqual(server.seen(), [("POST", "/api/v1/actions/add")])

    def test_request_bytes(self):
        server = self.raw(_cl_answer_add)
        client = self.client(server.url)
        client.actions.add([1, 2])
        request = server.requests[0]
        self.assertEqual(request.body, b"[1, 2]")
        self.assertEqual(request.headers["content-type"], "application/json")
        self.assertEqual(request.headers["content-length"], "6")

    def test_proxy_environment_variables_are_ignored(self):
        proxy = self.raw(_cl_answer_add)
        server = self.raw(_cl_answer_add)
        env = {"http_proxy": proxy.url, "HTTP_PROXY": proxy.url,
               "all_proxy": proxy.url, "ALL_PROXY": proxy.url,
               "no_proxy": "", "NO_PROXY": ""}
        with mock.patch.dict(os.environ, env):
            client = self.client(server.url)
            self.assertEqual(client.actions.add([1, 2]), 3)
        self.assertEqual(proxy.connections, 0)
        self.assertEqual(server.seen(), [("POST", "/actions/add")])


class TestClientProxyEnvironmentLive(unittest.TestCase):
    """`http_proxy` pointing nowhere changes nothing (live server)."""

    def test_calls_work_with_a_dead_proxy(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % probe.getsockname()[1]
        probe.close()
        env = {"http_proxy": dead, "HTTP_PROXY": dead, "no_proxy": "",
               "NO_PROXY": ""}
        live = _cl_LiveServer(env=env)
        self.addCleanup(live.close)
        with mock.patch.dict(os.environ, env), cosmos.swap({}):
            client = cosmic.connect(live.url)
            self.addCleanup(client.close)
            self.assertEqual(client.actions.add([1, 2]), 3)
            self.assertEqual(client.models.City.get_by_id("1"), _CL_PARIS)


class TestClientConstruction(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.api = _cl_isolated_api()
        cls.spec = _cl_spec_json(cls.api)

    def setUp(self):
        swap = cosmos.swap({})
        swap.__enter__()
        self.addCleanup(swap.__exit__, None, None, None)

    def test_from_spec_fetches_nothing(self):
        server = _cl_RawServer(_cl_answer_add)
        self.addCleanup(server.close)
        client = APIClient.from_spec(self.spec, server.url)
        self.addCleanup(client.close)
        self.assertEqual(server.connections, 0)
        self.assertEqual(client.actions.add([1, 2]), 3)
        self.assertEqual(server.seen(), [("POST", "/actions/add")])
        self.assertEqual(sorted(vars(client.actions)),
                         sorted(self.spec["actions"]["order"]))

    def test_spec_keyword_fetches_nothing(self):
        server = _cl_RawServer(_cl_answer_add)
        self.addCleanup(server.close)
        client = APIClient(base_url=server.url, spec=self.spec)
        self.addCleanup(client.close)
        self.assertEqual(server.connections, 0)
        self.assertEqual(client.actions.add([4, 5]), 9)
        self.assertEqual(server.seen(), [("POST", "/actions/add")])

    def test_spec_of_client_round_trips(self):
        client = APIClient.from_spec(self.spec, "http://127.0.0.1:9")
        self.assertEqual(_cl_spec_json(client), self.spec)
        self.assertEqual(client.name, _CL_API_NAME)

    def test_base_url_is_required(self):
        with self.assertRaises(SpecError):
            APIClient()
        with self.assertRaises(SpecError):
            APIClient.from_spec(self.spec, "ftp://example.com")

    def test_unknown_option_is_refused(self):
        with self.assertRaises(TypeError) as cm:
            APIClient.from_spec(self.spec, "http://127.0.0.1:9", timout=3)
        self.assertEqual(str(cm.exception), (
            "Unknown APIClient option 'timout'; options: auth, "
            "expected_spec, "
            "max_redirects, max_response_size, on_breaking, "
            "problem_details, proxy, retries, retry_backoff, retry_writes, "
            "ssl_context, timeout, type_getter, verify"))
        for name in ("call", "make_request", "base_url", "_local"):
            with self.subTest(name=name), self.assertRaises(TypeError):
                APIClient(base_url="http://127.0.0.1:1", spec=self.spec,
                          **{name: 1})

    def test_subclass_with_base_url_attribute(self):
        with served_api(self.api) as url:
            class Client(APIClient):
                base_url = url + "/"

            client = Client()
            self.addCleanup(client.close)
            self.assertEqual(client.base_url, url)
            self.assertEqual(client.actions.add([1, 2]), 3)

    def test_connect(self):
        with served_api(self.api) as url:
            client = cosmic.connect(url)
            self.addCleanup(client.close)
            self.assertIs(type(client), APIClient)
            self.assertEqual(client.actions.answer(), 42)
            self.assertIs(cosmic.client.connect, cosmic.connect)

    def test_wsgi_client_class_attribute(self):
        api = self.api

        class Client(WsgiAPIClient):
            wsgi_app = Server(api).wsgi_app

        client = Client()
        self.assertEqual(client.actions.add([1, 2]), 3)
        self.assertEqual(client.models.Country.get_by_id("ca"),
                         {"name": "Canada"})

    def test_wsgi_client_class_attribute_plain_function(self):
        app = _cl_counting(Server(self.api).wsgi_app)

        class Client(WsgiAPIClient):
            wsgi_app = app

        client = Client()
        self.assertEqual(client.actions.add([1, 2]), 3)
        self.assertEqual(app.calls, [("GET", "/spec.json"),
                                     ("POST", "/actions/add")])

    def test_wsgi_client_needs_an_app(self):
        with self.assertRaises(SpecError):
            WsgiAPIClient()

    def test_for_api_with_server_class_and_options(self):
        client = WsgiAPIClient.for_api(self.api, server=_cl_CountingServer)
        before = client.actions.request_count()
        client.actions.add([1])
        self.assertEqual(client.actions.request_count(), before + 2)

    def test_server_cosmos_is_swapped_in_while_the_app_runs(self):
        with cosmos.swap({}):
            swapper = API("swapper")

            @swapper.action(returns=Array(String))
            def registry():  # noqa: F811 - the action; the dict below is data
                return sorted(cosmos)

        marker = object()
        registry = {"swapper": swapper, "other": marker}

        class Client(WsgiAPIClient):
            wsgi_app = Server(swapper).wsgi_app
            server_cosmos = registry

        cosmos["outside"] = marker
        client = Client()
        self.assertEqual(client.actions.registry(), ["other", "swapper"])
        self.assertEqual(sorted(cosmos), ["outside", "swapper"])
        self.assertIs(cosmos["swapper"], client)

    def test_functions_carry_names_and_docs(self):
        with cosmos.swap({}):
            documented = API("documented")

            @documented.action(returns=Integer)
            def seven():
                """Return seven."""
                return 7

        client = WsgiAPIClient.for_api(documented)
        self.assertEqual(client.actions.seven.__name__, "seven")
        self.assertEqual(client.actions.seven.__doc__, "Return seven.")
        self.assertEqual(client.actions.seven(), 7)

    def test_client_classes_and_aliases(self):
        self.assertTrue(issubclass(APIClient, BaseAPIClient))
        self.assertTrue(issubclass(WsgiAPIClient, BaseAPIClient))
        self.assertTrue(issubclass(BaseAPIClient, cosmic.api.BaseAPI))
        self.assertTrue(issubclass(RemoteHTTPError, HTTPError))
        for name in ("BaseAPIClient", "APIClient", "WsgiAPIClient",
                     "ClientLoggingMixin"):
            with self.subTest(name=name):
                self.assertIn(name, cosmic.client.__all__)

    def test_remote_http_error_attributes(self):
        err = RemoteHTTPError(400, "Bad", [{"detail": "x", "pointer": ""}])
        self.assertEqual((err.code, err.message, err.args),
                         (400, "Bad", (400, "Bad")))
        self.assertEqual(err.errors, [{"detail": "x", "pointer": ""}])
        self.assertIn("Bad", str(err))
        self.assertEqual(RemoteHTTPError(502).args, (502, None))
        self.assertEqual(RemoteHTTPError(502).errors, [])


class TestClientRegistry(unittest.TestCase):
    """Clients and servers of one name share a process."""

    def setUp(self):
        swap = cosmos.swap({})
        swap.__enter__()
        self.addCleanup(swap.__exit__, None, None, None)

    def test_client_does_not_replace_a_server_api(self):
        api = _cl_make_api()
        client = WsgiAPIClient.for_api(api)
        self.assertIs(cosmos[_CL_API_NAME], api)
        self.assertIsNot(client, api)

    def test_client_registers_when_no_server_api_is_there(self):
        api = _cl_isolated_api()
        self.assertNotIn(_CL_API_NAME, cosmos)
        client = WsgiAPIClient.for_api(api)
        self.assertIs(cosmos[_CL_API_NAME], client)

    def test_second_client_of_the_same_name_is_allowed(self):
        api = _cl_isolated_api()
        first = WsgiAPIClient.for_api(api)
        second = WsgiAPIClient.for_api(api)
        self.assertEqual(first.actions.add([1]), 1)
        self.assertEqual(second.actions.add([2]), 2)

    def test_server_keeps_its_validate_patch_hook(self):
        api = _cl_make_api()
        client = WsgiAPIClient.for_api(api)
        self.assertIs(cosmos[_CL_API_NAME], api)
        with self.assertRaises(RemoteHTTPError) as cm:
            client.models.City.create(name="moscow")
        self.assertEqual(cm.exception.args,
                         (400, "Name must be capitalized: 'moscow'"))
        # The client's own hook does nothing.
        self.assertIsNone(client.models.City.validate_patch(
            {"name": "moscow"}))

    def test_server_keeps_its_hook_when_the_client_is_registered(self):
        api = _cl_isolated_api()
        client = WsgiAPIClient.for_api(api)
        self.assertIs(cosmos[_CL_API_NAME], client)
        with self.assertRaises(RemoteHTTPError) as cm:
            client.models.City.create(name="moscow")
        self.assertEqual(cm.exception.args,
                         (400, "Name must be capitalized: 'moscow'"))

    def test_live_client_in_the_server_process(self):
        api = _cl_make_api()
        with served_api(api) as url:
            client = APIClient(url)
            self.addCleanup(client.close)
            self.assertIs(cosmos[_CL_API_NAME], api)
            with self.assertRaises(RemoteHTTPError) as cm:
                client.models.City.update("0", name="toronto")
            self.assertEqual(cm.exception.args,
                             (400, "Name must be capitalized: 'toronto'"))
            self.assertEqual(client.models.City.update("0", name="York"),
                             dict(_CL_TORONTO, name="York"))


class TestClientLogging(unittest.TestCase):
    """One (request_dict, response_dict) pair per call."""

    @classmethod
    def setUpClass(cls):
        cls.api = _cl_isolated_api()

    def setUp(self):
        self.api.actions.reset()
        with cosmos.swap({}):
            self.client = _cl_LoggingWsgiClient(Server(self.api).wsgi_app)

    def test_spec_fetch_is_logged(self):
        self.assertEqual(len(self.client.log), 1)
        request, response = self.client.log[0]
        self.assertEqual(request, {"method": "GET", "url": "/spec.json",
                                   "data": "", "headers": []})
        self.assertEqual(response["status_code"], 200)
        self.assertEqual(json.loads(response["data"]),
                         _cl_spec_json(self.api))

    def test_json_action(self):
        del self.client.log[:]
        self.client.actions.add([1, 2])
        request, response = self.client.log[0]
        self.assertEqual(request, {
            "method": "POST", "url": "/actions/add", "data": "[1, 2]",
            "headers": [("Content-Type", "application/json")]})
        self.assertEqual(response["status_code"], 200)
        self.assertEqual(response["data"], "3")
        names = [name for name, _ in response["headers"]]
        self.assertEqual(names, sorted(names))
        self.assertEqual([n for n in names if n in ("Content-Length",
                                                    "Content-Type")],
                         ["Content-Length", "Content-Type"])
        self.assertEqual(dict(response["headers"])["Content-Length"], "1")

    def test_app_adds_only_type_length_and_request_id(self):
        # The app adds Content-Type and Content-Length (the original's
        # test expected exactly these); the hardening
        # issue adds X-Request-ID to every response, for log correlation.
        del self.client.log[:]
        self.client.actions.divide(numerator=10, denominator=5)
        headers = self.client.log[0][1]["headers"]
        self.assertEqual(headers[:2], [("Content-Length", "1"),
                                       ("Content-Type", "application/json")])
        self.assertEqual([name for name, _ in headers[2:]], ["X-Request-Id"])
        self.assertRegex(headers[2][1], r"^[0-9a-f]{8}-[0-9]+$")

    def test_bodiless_calls(self):
        del self.client.log[:]
        City = self.client.models.City
        self.client.actions.answer()
        self.client.actions.reset()
        City.get_by_id("1")
        City.get_list(name="Paris", min_population=1)
        City.delete("1")
        requests = [request for request, _ in self.client.log]
        self.assertEqual(requests, [
            {"method": "POST", "url": "/actions/answer", "data": "",
             "headers": []},
            {"method": "POST", "url": "/actions/reset", "data": "",
             "headers": []},
            {"method": "GET", "url": "/City/1", "data": "", "headers": []},
            {"method": "GET", "url": "/City?name=Paris&min_population=1",
             "data": "", "headers": []},
            {"method": "DELETE", "url": "/City/1", "data": "",
             "headers": []}])
        self.assertEqual([r["status_code"] for _, r in self.client.log],
                         [200, 204, 200, 200, 204])
        self.assertEqual(self.client.log[1][1]["data"], "")

    def test_model_bodies(self):
        del self.client.log[:]
        City = self.client.models.City
        City.create(name="Oslo", country="ca")
        City.update("2", population=700000)
        (create, created), (update, updated) = self.client.log
        self.assertEqual(create["method"], "POST")
        self.assertEqual(create["url"], "/City")
        self.assertEqual(json.loads(create["data"]), {
            "_links": {"country": {"href": "/Country/ca"}}, "name": "Oslo"})
        self.assertEqual(create["headers"],
                         [("Content-Type", "application/json")])
        self.assertEqual(created["status_code"], 201)
        self.assertEqual(dict(created["headers"])["Location"], "/City/2")
        self.assertEqual(update["method"], "PUT")
        self.assertEqual(update["url"], "/City/2")
        self.assertEqual(json.loads(update["data"]), {
            "_links": {"self": {"href": "/City/2"}}, "population": 700000})
        self.assertEqual(json.loads(updated["data"]), {
            "_links": {"self": {"href": "/City/2"},
                       "country": {"href": "/Country/ca"}},
            "name": "Oslo", "population": 700000})

    def test_errors_are_logged(self):
        del self.client.log[:]
        with self.assertRaises(NotFound):
            self.client.models.City.get_by_id("99")
        request, response = self.client.log[0]
        self.assertEqual(request["url"], "/City/99")
        self.assertEqual(response["status_code"], 404)
        self.assertEqual(json.loads(response["data"]), {"error": "Not Found"})

    def test_ids_are_percent_encoded(self):
        del self.client.log[:]
        with self.assertRaises(NotFound):
            self.client.models.City.get_by_id("a b/é")
        self.assertEqual(self.client.log[0][0]["url"], "/City/a%20b%2F%C3%A9")

    def test_live_response_headers_are_title_cased_and_sorted(self):
        with served_api(self.api) as url, cosmos.swap({}):
            client = _cl_LoggingClient(url)
            self.addCleanup(client.close)
            client.actions.add([1, 2])
        request, response = client.log[-1]
        self.assertEqual(request["url"], "/actions/add")
        names = [name for name, _ in response["headers"]]
        self.assertEqual(names, sorted(names))
        self.assertEqual(names, [name.title() for name in names])
        headers = dict(response["headers"])
        self.assertEqual((headers["Content-Length"], headers["Content-Type"]),
                         ("1", "application/json"))


class TestClientETagsInProcess(_sv_ClientETags, unittest.TestCase):
    def make_client(self, api):
        return WsgiAPIClient.for_api(api)


class TestClientETagsHTTP(_sv_ClientETags, unittest.TestCase):
    def make_client(self, api):
        served = served_api(api)
        url = served.__enter__()
        self.addCleanup(served.__exit__, None, None, None)
        client = APIClient(url)
        self.addCleanup(client.close)
        return client


class TestClient2ForkSafety(unittest.TestCase):
    """After os.fork() the child never writes on the parent's sockets."""

    ROUNDS = 50

    def test_parent_and_forked_child_at_once(self):
        if not hasattr(os, "fork"):
            self.skipTest("no os.fork on this platform")
        live = _cl_LiveServer()
        self.addCleanup(live.close)
        with cosmos.swap({}):
            client = cosmic.connect(live.url)
        self.addCleanup(client.close)

        def calls(tag, rounds):
            wrong = []
            for k in range(rounds):
                got = client.actions.add([tag, k])
                if got != tag + k:
                    wrong.append(("add", tag, k, got))
                got = client.actions.remember("x%d" % k)
                if got is not None:
                    wrong.append(("remember", got))
                got = client.models.City.get_by_id("0")
                if got.get("name") != "Toronto":
                    wrong.append(("get_by_id", got))
            return wrong

        problems = []
        for round_ in range(self.ROUNDS):
            self.assertEqual(client.actions.add([round_, 1]), round_ + 1)
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report on the pipe, never return
                code = 1
                try:
                    os.close(read_end)
                    try:
                        report = repr(calls(10 ** 6, 5))
                    except BaseException as exc:
                        report = "error: %r" % (exc,)
                    os.write(write_end, report.encode()[:4000])
                    code = 0
                finally:
                    os._exit(code)
            os.close(write_end)
            try:
                mine = calls(10 ** 3, 5)
            except Exception as exc:
                mine = ["error: %r" % (exc,)]
            with os.fdopen(read_end, "rb") as pipe:
                theirs = pipe.read().decode()
            _, status = os.waitpid(pid, 0)
            if mine or theirs != "[]" or status != 0:
                problems.append((round_, mine, theirs, status))
        self.assertEqual(problems, [])


class TestClient2BoundedAnswers(_cl_Case):
    """max_response_size: declared or streamed bodies past it fail before
    memory grows, and the connection is dropped."""

    def test_default_is_64_mib(self):
        self.assertEqual(APIClient.max_response_size, 64 * 1024 * 1024)

    def test_declared_length_past_the_limit(self):
        server = self.raw(_cl_hostile("declared"))
        client = self.client(server.url)
        start = time.monotonic()
        with self.assertRaises(cosmic.ResponseTooLarge) as cm:
            client.models.City.get_by_id("0")
        self.assertLess(time.monotonic() - start, 5)
        self.assertIn("declares 1000000000000 bytes, more than "
                      "max_response_size (67108864)", str(cm.exception))
        self.assertIsInstance(cm.exception, ConnectionError)
        self.assertTrue(server.closed_one.wait(5))  # the client hung up
        self.assertEqual(server.seen(), [("GET", "/City/0")])  # no retry

    def test_streamed_bodies_past_the_limit(self):
        for kind in ("chunked", "close", "declared_stream"):
            with self.subTest(kind=kind):
                server = self.raw(_cl_hostile(kind, 10 ** 8))
                client = self.client(server.url, max_response_size=1 << 20)
                with self.assertRaises(cosmic.ResponseTooLarge) as cm:
                    client.models.City.get_by_id("0")
                self.assertIn("max_response_size (1048576", str(cm.exception))
                self.assertTrue(server.closed_one.wait(10))

    def test_a_body_at_the_limit_is_read(self):
        body = json.dumps({"_links": {"self": {"href": "/City/0"}},
                           "name": "x" * 1000}).encode()

        def handler(server, conn, stream, index):
            while server.read(stream) is not None:
                conn.sendall(_cl_head(headers=[
                    ("Content-Type", "application/json"),
                    ("Transfer-Encoding", "chunked")]) +
                    b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))

        server = self.raw(handler)
        client = self.client(server.url, max_response_size=len(body))
        self.assertEqual(client.models.City.get_by_id("0"),
                         {"name": "x" * 1000})
        client = self.client(server.url, max_response_size=len(body) - 1)
        with self.assertRaises(cosmic.ResponseTooLarge):
            client.models.City.get_by_id("0")
        client = self.client(server.url, max_response_size=None)
        self.assertEqual(client.models.City.get_by_id("0"),
                         {"name": "x" * 1000})

    def test_the_spec_fetch_is_bounded(self):
        server = self.raw(_cl_hostile("chunked", 10 ** 8))
        with self.assertRaises(cosmic.ResponseTooLarge) as cm:
            APIClient(server.url, max_response_size=1 << 20)
        self.assertIn("GET /spec.json", str(cm.exception))

    def test_cli_commands_are_bounded(self):
        server = self.raw(_cl_hostile("declared"))
        for args in (["call", server.url, "answer"], ["spec", server.url],
                     ["openapi", server.url]):
            with self.subTest(command=args[0]):
                code, err = _sv_cli(*args)
                self.assertEqual(code, 1)
                self.assertEqual(err.count("\n"), 1, err)
                self.assertIn("max_response_size", err)
                self.assertNotIn("Traceback", err)

    def test_peak_memory_against_1_gb(self):
        # The client runs in its own process; ru_maxrss is its peak.
        # ru_maxrss survives exec on Linux (it starts at this process's
        # size), so VmHWM, the new process's own peak, is read when there.
        script = textwrap.dedent('''\
            import json, os, resource, sys
            import cosmic

            def peak():
                if os.path.exists("/proc/self/status"):
                    with open("/proc/self/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                return int(line.split()[1])
                return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

            spec = json.loads(sys.argv[2])
            client = cosmic.APIClient.from_spec(spec, sys.argv[1])
            before = peak()
            try:
                client.models.City.get_by_id("0")
                outcome = "read"
            except cosmic.ResponseTooLarge:
                outcome = "refused"
            print(json.dumps([outcome, before, peak()]))
        ''')
        try:
            import resource  # noqa: F401
        except ImportError:
            self.skipTest("no resource module")
        for kind in ("declared_stream", "chunked", "close"):
            with self.subTest(kind=kind):
                server = self.raw(_cl_hostile(kind, 10 ** 9))
                proc = _python(["-c", script, server.url,
                                json.dumps(self.spec)])
                self.assertEqual(proc.returncode, 0, proc.stderr)
                outcome, before, after = json.loads(proc.stdout)
                self.assertEqual(outcome, "refused")
                # KiB on Linux: the 64 MiB cap plus room for the buffers.
                self.assertLess(after - before, 150 * 1024,
                                (kind, before, after))


class TestClient2Deadline(_cl_Case):
    """The timeout bounds the whole call, not each socket read."""

    def test_dripping_server(self):
        for where in ("head", "body"):
            with self.subTest(where=where):
                server = self.raw(_cl_drip(where))
                client = self.client(server.url, timeout=1.0)
                start = time.monotonic()
                with self.assertRaises(socket.timeout) as cm:
                    client.models.City.get_by_id("0")
                elapsed = time.monotonic() - start
                # 50 bytes a quarter second apart would take 12 s.
                self.assertLess(elapsed, 3.0)
                self.assertGreater(elapsed, 0.9)
                self.assertIn("within 1.0 s", str(cm.exception))

    def test_dripping_answer_to_a_write(self):
        server = self.raw(_cl_drip("body"))
        client = self.client(server.url)
        start = time.monotonic()
        with self.assertRaises(cosmic.OutcomeUnknown) as cm:
            client.actions.add([1, 2], _timeout=1.0)
        self.assertLess(time.monotonic() - start, 3.0)
        self.assertIsInstance(cm.exception, socket.timeout)
        self.assertIn("may have acted on it", str(cm.exception))
        self.assertEqual(server.seen(), [("POST", "/actions/add")])

    def test_no_timeout(self):
        server = self.raw(_cl_answer_add)
        client = self.client(server.url, timeout=None)
        self.assertEqual(client.actions.add([1, 2]), 3)


class TestClient2Retries(_cl_Case):
    """Reads may be retried; writes only when they never left, unless
    retry_writes allows it."""

    WRITES = [("DELETE", "/City/0", lambda c, **kw:
               c.models.City.delete("0", **kw)),
              ("PUT", "/City/0", lambda c, **kw:
               c.models.City.update("0", name="Oslo", **kw)),
              ("POST", "/City", lambda c, **kw:
               c.models.City.create(name="Oslo", **kw)),
              ("POST", "/actions/add", lambda c, **kw:
               c.actions.add([1], **kw))]

    def test_write_acted_on_then_dropped_is_not_repeated(self):
        for method, path, call in self.WRITES:
            with self.subTest(method=method, path=path):
                server = self.raw(_cl_act_then_drop)
                client = self.client(server.url, retry_backoff=0)
                with self.assertRaises(cosmic.OutcomeUnknown) as cm:
                    call(client)
                self.assertIn("may or may not have acted on it",
                              str(cm.exception))
                self.assertIn("%s %s" % (method, path), str(cm.exception))
                self.assertEqual(server.seen(), [(method, path)])
                self.assertEqual(server.connections, 1)

    def test_outcome_unknown_is_exported(self):
        from cosmic.client import OutcomeUnknown, ResponseTooLarge
        self.assertTrue(issubclass(OutcomeUnknown, ConnectionError))
        self.assertTrue(issubclass(ResponseTooLarge, ConnectionError))
        self.assertIn("OutcomeUnknown", cosmic.__all__)

    def test_retry_writes_opt_in(self):
        # Asked for, the DELETE is sent again; the retry's 404 is what the
        # caller then sees (the README says so).
        server = self.raw(_cl_act_then_drop)
        client = self.client(server.url, retry_backoff=0, retry_writes=True)
        with self.assertRaises(NotFound):
            client.models.City.delete("0")
        self.assertEqual(server.seen(), [("DELETE", "/City/0")] * 2)
        server = self.raw(_cl_act_then_drop)
        client = self.client(server.url, retry_backoff=0)
        with self.assertRaises(NotFound):
            client.models.City.delete("0", _retry_writes=True)
        self.assertEqual(server.seen(), [("DELETE", "/City/0")] * 2)

    def test_reads_are_still_retried(self):
        server = self.raw(_cl_drop_first)
        client = self.client(server.url, retry_backoff=0)
        self.assertEqual(client.models.City.get_by_id("0"),
                         {"name": "Toronto"})
        self.assertEqual(server.seen(), [("GET", "/City/0")] * 2)

    def test_write_whose_connect_failed_is_retried(self):
        server = self.raw(_cl_answer_add)
        client = self.client(server.url, retry_backoff=0)
        plain = cosmic._connection_classes()[1]
        real = plain.connect
        attempts = []

        def flaky(conn):
            attempts.append(1)
            if len(attempts) == 1:
                raise ConnectionRefusedError(111, "Connection refused")
            return real(conn)

        with mock.patch.object(plain, "connect", flaky):
            self.assertEqual(client.actions.add([1, 2]), 3)
        self.assertEqual(len(attempts), 2)
        self.assertEqual(server.seen(), [("POST", "/actions/add")])

    def test_write_on_a_socket_closed_while_idle_is_sent_once(self):
        server = self.raw(_cl_answer_once_then_close)
        client = self.client(server.url)
        self.assertEqual(client.actions.add([1, 2]), 3)
        self.assertTrue(server.closed_one.wait(5))
        self.assertEqual(client.actions.add([3, 4]), 7)
        self.assertEqual(server.seen(), [("POST", "/actions/add")] * 2)


class TestClient2Urls(_cl_Case):
    """IPv6, base URL shapes, bad CLI URLs, colliding names, misspellings."""

    def test_ipv6_base_url_and_redirect(self):
        if not socket.has_ipv6:
            self.skipTest("no IPv6")
        try:
            probe = socket.socket(socket.AF_INET6)
            probe.bind(("::1", 0))
            probe.close()
        except OSError:
            self.skipTest("no IPv6 loopback")

        def handler(server, conn, stream, index):
            while True:
                request = server.read(stream)
                if request is None:
                    return
                if request.target == "/actions/add":
                    conn.sendall(_cl_http(
                        "307 Temporary Redirect", b"",
                        [("Location", "/v2/actions/add")]))
                else:
                    conn.sendall(_cl_json_http(
                        sum(json.loads(request.body))))

        server = self.raw(handler, _cl_Raw6)
        client = self.client(server.url + "/")
        self.assertEqual(client.base_url, server.url)
        self.assertEqual(client.actions.add([1, 2]), 3)
        self.assertEqual(server.seen(), [("POST", "/actions/add"),
                                         ("POST", "/v2/actions/add")])
        self.assertEqual(server.requests[0].headers["host"],
                         "[::1]:%d" % server.port)

    def test_base_url_shapes(self):
        server = self.raw(_cl_answer_add)
        for url, base in ((server.url + "/", server.url),
                          (server.url + "//", server.url),
                          (server.url + "/api/", server.url + "/api")):
            with self.subTest(url=url):
                client = self.client(url)
                self.assertEqual(client.base_url, base)
                self.assertEqual(client.actions.add([1, 1]), 2)
        self.assertEqual(server.seen(), [("POST", "/actions/add")] * 2 +
                         [("POST", "/api/actions/add")])
        refused = [
            (server.url + "/?v=1", "cannot have a query or a fragment"),
            (server.url + "/?", "cannot have a query or a fragment"),
            (server.url + "#top", "cannot have a query or a fragment"),
            ("http://127.0.0.1:99999", "Port out of range"),
            ("http://[::1", "Invalid IPv6 URL"),
            ("http://127.0.0.1:80/a b", "cannot contain spaces"),
            ("http://u:p@127.0.0.1:80", "cannot carry credentials"),
            ("http://127.0.0.1:x", "Invalid base_url"),
        ]
        for url, message in refused:
            with self.subTest(url=url):
                with self.assertRaises(SpecError) as cm:
                    APIClient.from_spec(self.spec, url)
                self.assertIn(message, str(cm.exception))

    def test_cli_bad_urls(self):
        for url in ("http://127.0.0.1:99999", "http://[::1",
                    "http://127.0.0.1:8000/a b", "http://127.0.0.1:8000/?v=1"):
            for args in (["call", url, "add", "[1]"], ["spec", url],
                         ["openapi", url]):
                with self.subTest(url=url, command=args[0]):
                    code, err = _sv_cli(*args)
                    self.assertEqual(code, 2)
                    self.assertEqual(err.count("\n"), 1, err)
                    self.assertTrue(err.startswith("cosmic: error: "), err)
                    self.assertNotIn("Traceback", err)

    def test_field_names_that_collide_with_parameters(self):
        api, names = _cl_names_api()
        values = {n: i for i, n in enumerate(names)}
        texts = {n: n.upper() for n in names}
        cosmic.db.data.pop("client2_things", None)
        self.addCleanup(cosmic.db.data.pop, "client2_things", None)
        with served_api(api) as url:
            clients = [WsgiAPIClient.for_api(api),
                       APIClient.from_spec(_cl_spec_json(api), url)]
            for client in clients:
                with self.subTest(client=type(client).__name__):
                    self.assertEqual(client.actions.collide(**values),
                                     list(range(len(names))))
                    ident, rep = client.models.Thing.create(**texts)
                    self.assertEqual(rep, texts)
                    items = client.models.Thing.get_list(**texts)
                    self.assertEqual(items, [(ident, texts)])
                    self.assertEqual(
                        client.models.Thing.update(ident, endpoint="e",
                                                   self="s")["self"], "s")
                    client.models.Thing.delete(ident)
            clients[1].close()

    def test_misspelt_names(self):
        client = self.client("http://127.0.0.1:9")
        with self.assertRaises(AttributeError) as cm:
            _ = client.actions.ad
        self.assertIn("No action 'ad'; actions: add, answer, broken, "
                      "divide, notes", str(cm.exception))
        with self.assertRaises(AttributeError) as cm:
            _ = client.models.Cty
        self.assertEqual(str(cm.exception),
                         "No model 'Cty'; models: City, Country")
        self.assertFalse(hasattr(client.actions, "ad"))
        self.assertEqual(client.actions.add.__name__, "add")

    def test_id_must_be_a_string(self):
        client = self.client("http://127.0.0.1:9")
        for call in (lambda: client.models.City.get_by_id(1),
                     lambda: client.models.City.delete(1),
                     lambda: client.models.City.update(1, name="Oslo")):
            with self.assertRaises(ValidationError) as cm:
                call()
            self.assertEqual(str(cm.exception), "Invalid City id: an id must "
                             "be a string, got int: 1")


class TestClient2RegistrationErrors(unittest.TestCase):
    """A SpecError at registration points at the user's file and line."""

    def test_action_signature(self):
        api = API("client2reg")
        first = sys._getframe().f_lineno
        with self.assertRaises(SpecError) as cm:
            @api.action(accepts=Struct([required("a", Integer)]))
            def mismatch(a, b):
                pass
        message = str(cm.exception)
        self.assertRegex(message, r"^API 'client2reg', action 'mismatch' "
                         r"\((.*), line (\d+)\): Action argument 'b'")
        path, line = re.match(r".*\((.*), line (\d+)\)", message).groups()
        self.assertEqual(path, __file__)
        self.assertIn(int(line), (first + 2, first + 3))

    def test_bad_accepts(self):
        api = API("client2reg")
        with self.assertRaises(SpecError) as cm:
            api.action(accepts="nonsense")
        self.assertIn("API 'client2reg', action (%s, line " % __file__,
                      str(cm.exception))

    def test_model_unknown_method_and_bad_name(self):
        api = API("client2reg")
        first = sys._getframe().f_lineno
        with self.assertRaises(SpecError) as cm:
            @api.model
            class Place(BaseModel):
                methods = ["get"]
        self.assertRegex(str(cm.exception), (
            r"^API 'client2reg', model 'Place' \(%s, line (%d|%d)\): "
            r"Unknown model method 'get'" % (
                re.escape(__file__), first + 2, first + 3)))
        with self.assertRaises(SpecError) as cm:
            api.model(type("Bad_", (BaseModel,), {}))
        self.assertIn("model 'Bad_' (%s, line %d)" % (
            __file__, sys._getframe().f_lineno - 2), str(cm.exception))


class TestClient2Surface(unittest.TestCase):
    """What code written for the original imports and calls."""

    def test_wildcard_is_an_instance_and_callable(self):
        from cosmic.testing import Wildcard
        for wildcard in (Wildcard, Wildcard()):
            self.assertTrue(wildcard == 3)
            self.assertTrue(wildcard == "x")
            self.assertTrue(wildcard == None)  # noqa: E711
            self.assertFalse(wildcard != 3)
            self.assertEqual({"id": "7", "name": "a"},
                             {"id": wildcard, "name": "a"})
            self.assertNotEqual({"id": "7", "name": "a"},
                                {"id": wildcard, "name": "b"})
        self.assertEqual(repr(Wildcard), "Wildcard")

    def test_alias_modules_export_the_exceptions(self):
        for path in ("cosmic.types", "cosmic.legacy_teleport"):
            with self.subTest(path=path):
                module = importlib.import_module(path)
                for name in ("UnicodeDecodeValidationError",
                             "UnknownTypeValidationError", "ValidationError",
                             "Box", "required", "optional", "Struct"):
                    self.assertIs(getattr(module, name), getattr(cosmic, name))
        namespace = {}
        exec("from cosmic.legacy_teleport import *", namespace)
        self.assertIs(namespace["UnknownTypeValidationError"],
                      cosmic.UnknownTypeValidationError)
        self.assertIs(namespace["UnicodeDecodeValidationError"],
                      cosmic.UnicodeDecodeValidationError)

    def test_version(self):
        for argv in (["-m", "cosmic", "--version"],):
            proc = _python(argv)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertEqual(proc.stdout, "cosmic %s\n" % cosmic.__version__)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), \
                self.assertRaises(SystemExit) as cm:
            cosmic.main(["--version"])
        self.assertEqual(cm.exception.code, 0)
        self.assertEqual(out.getvalue(), "cosmic %s\n" % cosmic.__version__)


class TestClient2Vendored(unittest.TestCase):
    """The README's claim for a vendored cosmic.py: ``python -S`` imports
    it from the script's folder; ``python -I`` needs the folder put back on
    sys.path, which the README shows. On 3.9 and on this Python."""

    APP = ("import sys\n%s"
           "import cosmic\n"
           "api = cosmic.API('vendored')\n"
           "print(cosmic.__file__, cosmic.__version__)\n")
    PUT_BACK = "import os; sys.path.insert(0, os.path.dirname(" \
        "os.path.abspath(__file__)))\n"

    def pythons(self):
        found = [sys.executable]
        if os.path.exists(_CL_PY39):
            found.append(_CL_PY39)
        else:
            _need_missing("Python 3.9 at %s" % _CL_PY39)
        return found

    def test_vendored_imports(self):
        folder = tempfile.mkdtemp(prefix="cosmic-vendored-")
        self.addCleanup(shutil.rmtree, folder, True)
        shutil.copy(os.path.join(_ROOT, "cosmic.py"), folder)
        for name, head in (("plain.py", ""), ("isolated.py", self.PUT_BACK)):
            with open(os.path.join(folder, name), "w") as f:
                f.write(self.APP % head)
        env = {"PATH": os.environ.get("PATH", "")}
        for python in self.pythons():
            for flags, script, works in ((["-S"], "plain.py", True),
                                         (["-I", "-S"], "isolated.py", True),
                                         (["-I", "-S"], "plain.py", False)):
                with self.subTest(python=python, flags=flags, script=script):
                    proc = subprocess.run(
                        [python] + flags + [script], cwd=folder, env=env,
                        capture_output=True, text=True, timeout=60)
                    if works:
                        self.assertEqual(proc.returncode, 0, proc.stderr)
                        self.assertEqual(proc.stdout.split()[0],
                                         os.path.join(folder, "cosmic.py"))
                    else:  # -I leaves the script's folder off sys.path
                        self.assertNotEqual(proc.returncode, 0)
                        self.assertIn("No module named 'cosmic'", proc.stderr)


class TestClientTolerance(unittest.TestCase):
    """Clients drop answer fields their spec lacks; servers stay strict."""

    def setUp(self):
        _sv_isolate(self)
        self.api = _df_tolerance_api()
        self.app = Server(self.api).wsgi_app
        self.old = _df_old_spec(self.api)
        self.client = WsgiAPIClient(self.app, spec=copy.deepcopy(self.old))

    def test_unknown_fields_in_answers_are_dropped_and_logged(self):
        with self.assertLogs("cosmic", "DEBUG") as logs:
            self.assertEqual(self.client.actions.echo({"a": 1}), [{"a": 1}])
        self.assertEqual(logs.output, [
            "DEBUG:cosmic:Answer fields unknown to the client's spec, "
            "dropped: [0]['b']"])
        with self.assertLogs("cosmic", "DEBUG") as logs:
            self.assertEqual(self.client.models.Thing.get_by_id("1"),
                             {"a": 1})
        self.assertIn("['_links']['o'], ['b']", logs.output[0])
        with self.assertLogs("cosmic", "DEBUG"):
            self.assertEqual(self.client.models.Thing.get_list(),
                             ([("1", {"a": 1})], {"n": 1}))

    def test_everything_else_is_still_checked(self):
        answer = {"a": "x", "b": "extra"}
        rep = self.client.models.Thing.get_by_id.endpoint.representation
        with self.assertRaises(ValidationError) as cm:
            cosmic._answer(rep, answer)
        self.assertEqual(str(cm.exception), "Item at ['a'] Invalid Integer: "
                         "'x'")
        with self.assertRaises(ValidationError) as cm:
            cosmic._answer(rep, {"b": "extra"})
        self.assertEqual(str(cm.exception), "Missing fields: ['a']")
        with self.assertRaises(ValidationError):
            cosmic._answer(Array(Integer), [1, "x"])

    def test_valid_answers_take_the_strict_path_only(self):
        client = WsgiAPIClient(self.app)  # the same spec as the server
        with mock.patch.object(cosmic, "_dropper") as walk:
            self.assertEqual(client.actions.echo({"a": 1}),
                             [{"a": 1, "b": "extra"}])
            client.models.Thing.get_by_id("1")
        walk.assert_not_called()

    def test_the_dropper_is_compiled_once_per_type(self):
        rep = self.client.models.Thing.get_by_id.endpoint.representation
        with mock.patch.object(cosmic, "_container_dropper",
                               wraps=cosmic._container_dropper) as compile_:
            for _ in range(3):
                self.client.actions.echo({"a": 1})
        self.assertEqual(compile_.call_count, 1)  # Array(Struct), once
        self.client.models.Thing.get_by_id("1")
        drop = rep.__dict__["_drop"]
        self.client.models.Thing.get_by_id("1")
        self.assertIs(rep.__dict__["_drop"], drop)
        self.assertIsNone(Integer.__dict__.get("_drop"))

    def test_the_server_stays_strict(self):
        status, _, body = _wsgi_json(self.app, "POST", "/actions/echo",
                                   {"a": 1, "c": 2})
        self.assertEqual((status, json.loads(body)),
                         (400, {"error": "Unexpected fields: ['c']"}))
        # The client checks its own arguments as strictly: OLD lacks b.
        with self.assertRaises(ValidationError) as cm:
            self.client.actions.echo({"a": 1, "b": "x"})
        self.assertEqual(str(cm.exception), "Unexpected fields: ['b']")

    def test_a_spec_with_keys_from_a_newer_server_is_read(self):
        spec = APISpec.to_json(self.api.spec)
        spec["models"]["map"]["Thing"]["create_required"] = ["a"]
        body = json.dumps(spec).encode()

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]

        client = WsgiAPIClient(app)
        self.assertEqual(list(client.spec["models"]), ["Other", "Thing"])


class TestPinnedClient(unittest.TestCase):
    """A client given the spec it was written against checks the live one."""

    def setUp(self):
        _sv_isolate(self)
        self.api = _df_tolerance_api()
        self.old = APISpec.to_json(self.api.spec)
        self.broken = copy.deepcopy(self.old)
        # The client expects an action the server no longer has.
        self.broken["actions"]["map"]["gone"] = {}
        self.broken["actions"]["order"].append("gone")

    def pinned(self, expected, **attrs):
        return type("Pinned", (WsgiAPIClient,), dict(
            attrs, expected_spec=expected))(Server(self.api).wsgi_app)

    def test_breaking_changes_raise_and_are_listed(self):
        with self.assertRaises(cosmic.ContractError) as cm:
            self.pinned(self.broken)
        self.assertEqual(str(cm.exception), (
            "The API dftol changed in ways that break this client:\n"
            "  breaking   actions.gone  action-removed: removed; calls get "
            "404 (breaks requests)"))
        self.assertEqual([c.kind for c in cm.exception.changes],
                         ["action-removed"])
        self.assertIsInstance(cm.exception, SpecError)
        from cosmic.client import ContractError as from_client
        from cosmic.exceptions import ContractError as from_exceptions
        self.assertIs(from_client, cosmic.ContractError)
        self.assertIs(from_exceptions, cosmic.ContractError)

    def test_warn_when_asked(self):
        with self.assertWarns(RuntimeWarning) as cm:
            client = self.pinned(self.broken, on_breaking="warn")
        self.assertIn("actions.gone", str(cm.warning))
        self.assertEqual(client.actions.echo({"a": 2}),
                         [{"a": 2, "b": "extra"}])

    def test_compatible_changes_are_logged_at_debug(self):
        with self.assertLogs("cosmic", "DEBUG") as logs:
            self.pinned(_df_old_spec(self.api))
        self.assertTrue(logs.output)
        self.assertTrue(all("compatible" in line for line in logs.output))

    def test_identical_specs_pass_quietly(self):
        with self.assertNoLogs("cosmic", "DEBUG") if hasattr(
                self, "assertNoLogs") else contextlib.nullcontext():
            client = self.pinned(self.api)
        self.assertEqual(client.actions.echo({"a": 3}),
                         [{"a": 3, "b": "extra"}])

    def test_without_an_expected_spec_nothing_is_compared(self):
        with mock.patch.object(cosmic, "diff") as compare:
            WsgiAPIClient(Server(self.api).wsgi_app)
        compare.assert_not_called()

    def test_over_http_and_with_connect(self):
        with served_api(self.api) as url:
            with self.assertRaises(cosmic.ContractError):
                APIClient(url, expected_spec=self.broken)
            client = cosmic.connect(url, expected_spec=self.old)
            try:
                self.assertEqual(client.actions.echo({"a": 4}),
                                 [{"a": 4, "b": "extra"}])
            finally:
                client.close()
            with self.assertWarns(RuntimeWarning):
                client = cosmic.connect(url, expected_spec=self.broken,
                                        on_breaking="warn")
            client.close()


# -- OpenAPI ------------------------------------------------------------------
# The OpenAPI document, its JSON Schemas, and tools that read it.


class TestOpenAPIValidity(unittest.TestCase):
    """openapi-spec-validator accepts every document."""

    def setUp(self):
        self.validate = _need("openapi_spec_validator").validate

    def test_examples(self):
        env = {"PLACES_DB": os.path.join(tempfile.gettempdir(),
                                         "_oa_unused_places.db")}
        for name in ("words", "mathy", "places", "planetarium"):
            with self.subTest(example=name):
                doc = openapi(_oa_example_api(name, env))
                self.validate(doc)
                self.assertEqual(doc["openapi"], "3.1.0")

    def test_every_type(self):
        self.validate(openapi(_oa_zoo()))

    def test_with_servers(self):
        doc = openapi(_oa_zoo(), servers=["http://127.0.0.1:8000",
                                          "https://zoo.example.com/api"])
        self.validate(doc)
        self.assertEqual(doc["servers"], [
            {"url": "http://127.0.0.1:8000"},
            {"url": "https://zoo.example.com/api"}])

    def test_name_clashes(self):
        self.validate(openapi(_oa_clash()))

    def test_command_line(self):
        path = os.path.join(_ROOT, "examples", "words.py")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [_ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
        proc = subprocess.run(
            [sys.executable, "-m", "cosmic", "openapi", path],
            capture_output=True, env=env,
            cwd=_ROOT, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        doc = json.loads(proc.stdout)
        self.validate(doc)
        self.assertEqual(doc, json.loads(json.dumps(
            openapi(_oa_example_api("words")))))

    def test_command_line_output_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "words.json")
            code = cosmic.main(["openapi", os.path.join(
                _ROOT, "examples", "words.py"), "-o", out])
            self.assertEqual(code, 0)
            with open(out, encoding="utf-8") as f:
                doc = json.load(f)
        self.validate(doc)
        self.assertEqual(list(doc["paths"]), [
            "/actions/pluralize", "/spec.json", "/openapi.json"])


class TestOpenAPIDocument(unittest.TestCase):
    """What the document says about an API, piece by piece."""

    @classmethod
    def setUpClass(cls):
        cls.api = _oa_zoo()
        cls.doc = openapi(cls.api)
        cls.schemas = cls.doc["components"]["schemas"]

    def test_info(self):
        info = self.doc["info"]
        self.assertEqual(info["title"], "zoo")
        self.assertEqual(info["version"], cosmic.__version__)
        self.assertIn("cosmic.py", info["description"])
        self.assertIn("http://zoo.example.com", info["description"])
        self.assertNotIn("servers", self.doc)

    def test_paths_and_operation_ids(self):
        found = [(m, p, op["operationId"])
                 for m, p, op in _oa_operations(self.doc)]
        self.assertEqual(found, [
            ("POST", "/actions/add", "add"),
            ("POST", "/actions/ping", "ping"),
            ("POST", "/actions/echo", "echo"),
            ("POST", "/actions/count", "count"),
            ("GET", "/Keeper/{id}", "Keeper_get_by_id"),
            ("GET", "/Animal", "Animal_get_list"),
            ("POST", "/Animal", "Animal_create"),
            ("GET", "/Animal/{id}", "Animal_get_by_id"),
            ("PUT", "/Animal/{id}", "Animal_update"),
            ("GET", "/spec.json", "spec"),
            ("GET", "/openapi.json", "openapi"),
        ])

    def test_disabled_methods_are_absent(self):
        self.assertNotIn("delete", self.doc["paths"]["/Animal/{id}"])
        self.assertNotIn("/Keeper", self.doc["paths"])
        self.assertNotIn("/Cage", self.doc["paths"])
        self.assertNotIn("/Cage/{id}", self.doc["paths"])
        self.assertNotIn("KeeperList", self.schemas)
        # A model without methods still has its schemas, for actions.
        self.assertIn("Cage", self.schemas)

    def test_components(self):
        self.assertEqual(list(self.schemas), [
            "Keeper", "KeeperPatch", "Animal", "AnimalPatch", "AnimalList",
            "Cage", "CagePatch", "Error", "Problem"])
        self.assertEqual(self.schemas["Error"], {
            "type": "object", "properties": {"error": {"type": "string"}},
            "required": ["error"]})
        problem = self.schemas["Problem"]
        self.assertEqual(list(problem["properties"]), [
            "type", "title", "status", "detail", "instance", "errors"])
        self.assertEqual(
            problem["properties"]["errors"]["items"]["required"],
            ["detail", "pointer"])

    def test_every_ref_resolves(self):
        refs = sorted(set(_oa_refs(self.doc)))
        self.assertTrue(refs)
        for ref in refs:
            with self.subTest(ref=ref):
                prefix = "#/components/schemas/"
                self.assertTrue(ref.startswith(prefix))
                self.assertIn(ref[len(prefix):], self.schemas)

    def test_tags(self):
        self.assertEqual([t["name"] for t in self.doc["tags"]],
                         ["actions", "Keeper", "Animal"])
        tags = {(m, p): op.get("tags")
                for m, p, op in _oa_operations(self.doc)}
        self.assertEqual(tags["POST", "/actions/ping"], ["actions"])
        self.assertEqual(tags["PUT", "/Animal/{id}"], ["Animal"])
        self.assertIsNone(tags["GET", "/spec.json"])

    def test_action_with_input_and_output(self):
        op = self.doc["paths"]["/actions/add"]["post"]
        self.assertEqual(op["summary"], "Add two numbers.")
        self.assertEqual(op["description"],
                         "Add two numbers.\n\nThe result is a Float.")
        self.assertEqual(op["requestBody"], {
            "required": True, "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "description": "First"},
                    "b": {"type": "number"}},
                "additionalProperties": False,
                "required": ["a"]}}}})
        self.assertEqual(
            op["responses"]["200"]["content"],
            {"application/json": {"schema": {"type": "number"}}})
        self.assertEqual(list(op["responses"]),
                         ["200", "400", "413", "500", "default"])

    def test_action_without_input_or_output_is_204(self):
        op = self.doc["paths"]["/actions/ping"]["post"]
        self.assertNotIn("requestBody", op)
        self.assertEqual(op["responses"]["204"],
                         {"description": "Done; the action returns nothing"})
        self.assertNotIn("200", op["responses"])
        self.assertEqual(op["description"], "Do nothing.")

    def test_action_without_doc(self):
        op = self.doc["paths"]["/actions/echo"]["post"]
        self.assertNotIn("summary", op)
        self.assertNotIn("description", op)

    def test_models_in_action_schemas_are_refs(self):
        echo = self.doc["paths"]["/actions/echo"]["post"]
        self.assertEqual(
            echo["requestBody"]["content"]["application/json"]["schema"],
            {"$ref": "#/components/schemas/Animal"})
        self.assertEqual(
            echo["responses"]["200"]["content"]["application/json"],
            {"schema": {"$ref": "#/components/schemas/AnimalPatch"}})
        count = self.doc["paths"]["/actions/count"]["post"]
        self.assertEqual(
            count["requestBody"]["content"]["application/json"]["schema"],
            {"type": "array",
             "items": {"$ref": "#/components/schemas/Keeper"}})
        self.assertEqual(
            count["responses"]["200"]["content"]["application/json"],
            {"schema": {}})
        props = self.schemas["Animal"]["properties"]
        self.assertEqual(props["keeper_rep"],
                         {"$ref": "#/components/schemas/Keeper"})
        self.assertEqual(props["keeper_patch"],
                         {"$ref": "#/components/schemas/KeeperPatch"})

    def test_errors_offer_problem_json(self):
        for _method, _path, op in _oa_operations(self.doc):
            for code, response in op["responses"].items():
                if code[0] in "45" or code == "default":
                    with self.subTest(op=op["operationId"], code=code):
                        self.assertEqual(response["content"], {
                            "application/json": {"schema": {
                                "$ref": "#/components/schemas/Error"}},
                            "application/problem+json": {"schema": {
                                "$ref": "#/components/schemas/Problem"}}})

    def test_error_codes(self):
        codes = {(m, p): list(op["responses"])
                 for m, p, op in _oa_operations(self.doc)}
        errors = ["400", "413", "500", "default"]
        with_412 = ["400", "404", "412", "413", "500", "default"]
        self.assertEqual(codes["POST", "/actions/count"], ["200"] + errors)
        self.assertEqual(codes["GET", "/Animal"], ["200"] + errors)
        self.assertEqual(codes["POST", "/Animal"], ["201"] + errors)
        self.assertEqual(codes["GET", "/Animal/{id}"],
                         ["200", "304"] + with_412)
        self.assertEqual(codes["PUT", "/Animal/{id}"], ["200"] + with_412)
        self.assertEqual(codes["GET", "/spec.json"],
                         ["200", "500", "default"])

    def test_create_is_201_with_location(self):
        op = self.doc["paths"]["/Animal"]["post"]
        created = op["responses"]["201"]
        self.assertEqual(created["headers"]["Location"]["schema"],
                         {"type": "string"})
        self.assertIs(created["headers"]["Location"]["required"], True)
        self.assertEqual(created["content"], {"application/json": {
            "schema": {"$ref": "#/components/schemas/Animal"}}})
        self.assertEqual(op["requestBody"]["content"], {"application/json": {
            "schema": {"$ref": "#/components/schemas/AnimalPatch"}}})
        self.assertIs(op["requestBody"]["required"], True)

    def test_item_paths(self):
        item = self.doc["paths"]["/Animal/{id}"]
        self.assertEqual(item["parameters"], [{
            "name": "id", "in": "path", "required": True,
            "description": "The object's id",
            "schema": {"type": "string", "minLength": 1,
                       "pattern": "^[^/]+$"}}])
        self.assertEqual(item["put"]["requestBody"]["content"],
                         {"application/json": {"schema": {
                             "$ref": "#/components/schemas/AnimalPatch"}}})
        self.assertEqual(item["get"]["responses"]["200"]["content"],
                         {"application/json": {"schema": {
                             "$ref": "#/components/schemas/Animal"}}})

    def test_delete_is_204(self):
        doc = openapi(_oa_example_api("planetarium"))
        op = doc["paths"]["/Sphere/{id}"]["delete"]
        self.assertEqual(op["operationId"], "Sphere_delete")
        self.assertEqual(op["responses"]["204"], {"description": "Deleted"})
        self.assertEqual(list(op["responses"]),
                         ["204", "400", "404", "412", "413", "500", "default"])

    def test_query_parameters(self):
        params = self.doc["paths"]["/Animal"]["get"]["parameters"]
        # String-based types travel raw, numbers and booleans as their
        # JSON text (a plain form value); the others JSON-encoded.
        raw = {p["name"]: p["schema"] for p in params if "schema" in p}
        as_json = {p["name"]: p["content"]["application/json"]["schema"]
                   for p in params if "content" in p}
        self.assertEqual(list(raw), ["name", "born_after", "kind", "keeper",
                                     "min_age", "weight", "tame"])
        self.assertEqual(list(as_json), ["photo", "tags", "extra", "box"])
        self.assertEqual(raw["name"], {"type": "string"})
        self.assertEqual(raw["born_after"], DateTime.json_schema())
        self.assertEqual(raw["kind"], Model.json_schema())
        self.assertEqual(raw["keeper"], {"type": "string",
                                         "pattern": "/Keeper/[^/]+$"})
        self.assertEqual(raw["min_age"], {"type": "integer"})
        self.assertEqual(as_json["photo"], Binary.json_schema())
        self.assertEqual(as_json["tags"],
                         {"type": "array", "items": {"type": "string"}})
        self.assertEqual(as_json["extra"], {})
        for p in params:
            with self.subTest(param=p["name"]):
                self.assertEqual(p["in"], "query")
                self.assertEqual(p["required"], p["name"] == "name")
                self.assertEqual("schema" in p, "content" not in p)
        self.assertEqual(params[0]["description"], "Exact name")
        self.assertNotIn("description", params[1])

    def test_list_schema(self):
        op = self.doc["paths"]["/Animal"]["get"]
        self.assertEqual(op["responses"]["200"]["content"], {
            "application/json": {"schema": {
                "$ref": "#/components/schemas/AnimalList"}}})
        self.assertEqual(self.schemas["AnimalList"], {
            "type": "object",
            "properties": {
                "_links": {
                    "type": "object",
                    "properties": {"self": {
                        "type": "object",
                        "properties": {"href": {
                            "type": "string",
                            "pattern": "^/Animal(\\?[\\s\\S]*)?$"}},
                        "additionalProperties": False,
                        "required": ["href"]}},
                    "additionalProperties": False,
                    "required": ["self"]},
                "_embedded": {
                    "type": "object",
                    "properties": {"Animal": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Animal"}}},
                    "additionalProperties": False,
                    "required": ["Animal"]},
                "total": {"type": "integer", "description": "All matches"},
                "updated": DateTime.json_schema(),
            },
            "additionalProperties": False,
            "required": ["_links", "_embedded", "total"],
        })

    def test_list_without_query_or_metadata(self):
        doc = openapi(_oa_clash())
        op = doc["paths"]["/Error"]["get"]
        self.assertNotIn("parameters", op)
        schema = doc["components"]["schemas"]["Error.List"]
        self.assertEqual(list(schema["properties"]), ["_links", "_embedded"])
        self.assertEqual(schema["required"], ["_links", "_embedded"])

    def test_representation(self):
        rep = self.schemas["Animal"]
        self.assertEqual(rep["required"], ["name"])  # never "_links"
        self.assertIs(rep["additionalProperties"], False)
        links = rep["properties"]["_links"]
        self.assertEqual(list(links["properties"]),
                         ["self", "keeper", "mother"])
        self.assertEqual(links["required"], ["keeper"])
        self.assertEqual(links["properties"]["keeper"], {
            "type": "object",
            "properties": {"href": {"type": "string",
                                    "pattern": "/Keeper/[^/]+$"}},
            "additionalProperties": False, "required": ["href"],
            "description": "Who feeds it"})
        self.assertEqual(
            links["properties"]["self"]["properties"]["href"]["pattern"],
            "/Animal/[^/]+$")

    def test_representation_matches_the_type(self):
        # Without descriptions and with $refs inlined, the component is
        # what Representation(M).json_schema() says.
        for model in ("Keeper", "Animal"):
            for kind, suffix in ((Representation, ""), (Patch, "Patch")):
                with self.subTest(model=model, kind=kind.__name__):
                    schema = copy.deepcopy(self.schemas[model + suffix])
                    props = schema["properties"]
                    for name in ("keeper_rep", "keeper_patch"):
                        if name in props:
                            part = props[name]["$ref"].rsplit("/", 1)[1]
                            props[name] = copy.deepcopy(self.schemas[part])
                    expected = kind(Model("zoo." + model, self.api))
                    self.assertEqual(_oa_strip(schema, "description"),
                                     _oa_strip(expected.json_schema(),
                                               "description"))

    def test_patch_has_every_field_optional(self):
        patch = self.schemas["AnimalPatch"]
        self.assertNotIn("required", patch)
        self.assertNotIn("required", patch["properties"]["_links"])
        self.assertEqual(set(patch["properties"]),
                         set(self.schemas["Animal"]["properties"]))

    def test_docs_become_descriptions(self):
        props = self.schemas["Animal"]["properties"]
        self.assertEqual(props["name"],
                         {"type": "string", "description": "The animal's name"})
        self.assertEqual(props["age"], {"type": "integer"})
        meals = props["meals"]["properties"]["map"]["additionalProperties"]
        self.assertEqual(meals["properties"]["grams"],
                         {"type": "integer", "description": "Portion size"})
        self.assertEqual(self.schemas["KeeperPatch"]["properties"]["name"],
                         {"type": "string", "description": "Full name"})

    def test_every_type_in_properties(self):
        props = self.schemas["Animal"]["properties"]
        self.assertEqual(props["weight"], {"type": "number"})
        self.assertEqual(props["tame"], {"type": "boolean"})
        self.assertEqual(props["photo"], Binary.json_schema())
        self.assertEqual(props["born"], DateTime.json_schema())
        self.assertEqual(props["extra"], {})
        self.assertEqual(props["tags"], Array(String).json_schema())
        self.assertEqual(props["scores"], Map(Float).json_schema())
        self.assertEqual(props["shape"], Schema.json_schema())
        self.assertEqual(props["kind"], Model.json_schema())
        self.assertEqual(props["friend"],
                         {"type": "string", "pattern": "/Animal/[^/]+$"})
        self.assertEqual(props["meals"]["required"], ["map", "order"])

    def test_spec_routes(self):
        spec_op = self.doc["paths"]["/spec.json"]["get"]
        self.assertEqual(spec_op["operationId"], "spec")
        self.assertEqual(
            spec_op["responses"]["200"]["content"],
            {"application/json": {"schema": APISpec.json_schema()}})
        self.assertEqual(
            self.doc["paths"]["/openapi.json"]["get"]["operationId"],
            "openapi")

    def test_deterministic(self):
        first = openapi(self.api)
        text = json.dumps(first)
        first["paths"].clear()
        first["components"]["schemas"]["Error"]["required"].append("x")
        self.assertEqual(json.dumps(openapi(self.api)), text)
        self.assertEqual(json.dumps(openapi(_oa_zoo())), text)

    def test_json_ready(self):
        self.assertEqual(json.loads(json.dumps(self.doc)), self.doc)

    def test_same_from_a_rebuilt_spec(self):
        # The command line and clients have only the spec JSON.
        spec = cosmic.APISpec.from_json(cosmic.APISpec.to_json(self.api.spec))
        self.assertEqual(openapi(cosmic.BaseAPI(spec)), self.doc)

    def test_name_clashes_fall_back(self):
        doc = openapi(_oa_clash())
        self.assertEqual(list(doc["components"]["schemas"]), [
            "Error", "Error.Patch", "Error.List", "ErrorPatch",
            "ErrorPatchPatch", "ErrorList", "ErrorListPatch",
            "cosmic.Error", "Problem"])
        ids = [op["operationId"] for m, p, op in _oa_operations(doc)]
        self.assertEqual(ids, [
            "actions.spec", "actions.Error_get_by_id", "Error_get_list",
            "Error.get_by_id", "ErrorPatch_get_by_id", "cosmic.spec",
            "openapi"])
        self.assertEqual(len(set(ids)), len(ids))
        error = doc["paths"]["/actions/spec"]["post"]["responses"]["400"]
        self.assertEqual(error["content"]["application/json"]["schema"],
                         {"$ref": "#/components/schemas/cosmic.Error"})

    def test_foreign_model_without_its_api(self):
        spec = cosmic.APISpec.from_json({
            "name": "a",
            "actions": {"map": {"f": {"returns": {
                "type": "cosmic.Representation",
                "param": "elsewhere.Thing"}}}, "order": ["f"]},
            "models": {"map": {}, "order": []}})
        doc = openapi(cosmic.BaseAPI(spec))
        self.assertEqual(doc["paths"]["/actions/f"]["post"]["responses"]
                         ["200"]["content"]["application/json"]["schema"],
                         {"type": "object"})


class TestOpenAPIRoute(unittest.TestCase):
    """GET /openapi.json serves openapi(api)."""

    def test_route(self):
        for api in (_oa_zoo(), _oa_example_api("mathy")):
            with self.subTest(api=api.name):
                app = Server(api).wsgi_app
                answer = _wsgi(app, "GET", "/openapi.json")
                status, headers, body = answer
                self.assertEqual(answer.status_line, "200 OK")
                self.assertEqual(headers["content-type"], "application/json")
                self.assertEqual(json.loads(body),
                                 json.loads(json.dumps(openapi(api))))

    def test_route_follows_new_registrations(self):
        with cosmic.cosmos.swap({}):
            api = API("growing")
            app = Server(api).wsgi_app
            before = json.loads(_wsgi(app, "GET", "/openapi.json")[2])

            @api.action(returns=Integer)
            def one():
                return 1

        after = json.loads(_wsgi(app, "GET", "/openapi.json")[2])
        self.assertNotIn("/actions/one", before["paths"])
        self.assertEqual(after["paths"]["/actions/one"]["post"]["operationId"],
                         "one")


class TestOpenAPIJSONSchema(unittest.TestCase):
    """The schemas accept what Cosmic accepts (jsonschema, 2020-12)."""

    @classmethod
    def setUpClass(cls):
        jsonschema = _need("jsonschema")
        cls.Validator = jsonschema.Draft202012Validator
        cls.api = _oa_zoo()
        cls.doc = openapi(cls.api)

    def component_validator(self, name):
        root = {"$ref": "#/components/schemas/" + name,
                "components": self.doc["components"]}
        self.Validator.check_schema(root)
        return self.Validator(root,
                              format_checker=self.Validator.FORMAT_CHECKER)

    def assertAgree(self, cosmic_type, validator, datum, accepted):
        try:
            cosmic_type.from_json(datum)
            cosmic_ok = True
        except cosmic.ValidationError:
            cosmic_ok = False
        self.assertEqual(cosmic_ok, accepted, "Cosmic on %r" % (datum,))
        self.assertEqual(validator.is_valid(datum), accepted,
                         "JSON Schema on %r" % (datum,))

    def test_types(self):
        keeper_link = Link(Model("zoo.Keeper", self.api))
        table = [
            (Integer, [(1, True), (1.0, True), (1.5, False), (True, False),
                       ("1", False)]),
            (Float, [(1, True), (1.5, True), (True, False), (None, False)]),
            (Boolean, [(True, True), (0, False), ("true", False)]),
            (String, [("", True), ("x", True), (1, False), (None, False)]),
            (Binary, [("YWJj", True), ("", True), ("YWI=", True),
                      ("YW Jj", False), ("YWJ", False), (1, False)]),
            (DateTime, [("2014-01-01T00:00:00", True),
                        ("2014-01-01T00:00", True),
                        ("2013-10-18T01:58:24.904349", True),
                        ("2014-01-01T00:00:00Z", True),
                        ("2014-01-01T00:00:00+05:00", True),
                        ("2014-01-01T00:00:00-0530", True),
                        ("2014-01-01T00:00:00+05", True),
                        ("2014-01-01 00:00:00", False),
                        ("2014-01-01", False),
                        ("20131004T130525", False),
                        ("2014-13-01T00:00:00", False),
                        ("2014-01-01T24:00:00", False),
                        (3, False)]),
            (JSON, [(None, True), ({"a": [1]}, True)]),
            (Array(Integer), [([], True), ([1, 2], True), ([1, "x"], False),
                              ({}, False)]),
            (Map(Integer), [({}, True), ({"a": 1}, True), ({"a": "x"}, False),
                            ([], False)]),
            (OrderedMap(Integer), [
                ({"map": {"a": 1}, "order": ["a"]}, True),
                ({"map": {}, "order": []}, True),
                ({"map": {"a": 1}}, False),
                ({"map": {"a": 1}, "order": ["a", "a"]}, False),
                ({"map": {"a": 1}, "order": ["a"], "x": 1}, False)]),
            (Struct([required("a", Integer), optional("b", String)]), [
                ({"a": 1}, True), ({"a": 1, "b": "x"}, True), ({}, False),
                ({"a": 1, "c": 2}, False), ({"a": None}, False),
                ([], False)]),
            (Schema, [({"type": "Integer"}, True), ({}, False), (1, False)]),
            # Constraints (TestRulesJSONSchema has more).
            (Integer(minimum=1, exclusive_maximum=10),
             [(1, True), (9, True), (10, False), (0, False), (1.5, False)]),
            (String(max_length=2, pattern="^[a-z]"),
             [("ab", True), ("a1", True), ("abc", False), ("Ab", False)]),
            (Array(String(enum=["x", "y"]), max_items=1),
             [(["x"], True), (["z"], False), (["x", "y"], False)]),
            (Model, [("a.B", True), ("a.b.c", True), ("ab", False),
                     (".a", False), ("a.", False), (1, False)]),
            (keeper_link, [("/Keeper/1", True), ("http://h/x/Keeper/a b", True),
                           ("/Keeper/", False), ("/Animal/1", False),
                           ("Keeper/1", False), ("/Keeper/1/", False),
                           (1, False)]),
        ]
        for cosmic_type, cases in table:
            # Formats asserted, as schemathesis does.
            validator = self.Validator(
                cosmic_type.json_schema(),
                format_checker=self.Validator.FORMAT_CHECKER)
            for datum, accepted in cases:
                with self.subTest(type=repr(cosmic_type), datum=datum):
                    self.assertAgree(cosmic_type, validator, datum, accepted)

    def test_representations_and_patches(self):
        keeper = Model("zoo.Keeper", self.api)
        animal = Model("zoo.Animal", self.api)
        href = {"href": "/Keeper/1"}
        table = [
            (Representation(keeper), "Keeper", [
                ({"name": "x"}, True),
                ({"_links": {"self": {"href": "/Keeper/1"}}, "name": "x"},
                 True),
                ({}, False),
                ({"name": "x", "age": 1}, False),
                ({"_links": {"self": {}}, "name": "x"}, False),
                ({"_links": {"self": {"href": "/Animal/1"}}, "name": "x"},
                 False)]),
            (Patch(keeper), "KeeperPatch", [
                ({}, True), ({"name": "x"}, True), ({"name": 1}, False)]),
            # _links may be left out although keeper is required (9.1).
            (Representation(animal), "Animal", [
                ({"name": "a"}, True),
                ({"name": "a", "_links": {"keeper": href}}, True),
                ({"name": "a", "_links": {}}, False),
                ({"name": "a", "_links": {"keeper": href, "x": href}}, False),
                ({"name": "a", "keeper_rep": {"name": "k"},
                  "keeper_patch": {}, "meals": {
                      "map": {"m": {"food": "fish"}}, "order": ["m"]}},
                 True),
                ({"name": "a", "keeper_rep": {}}, False),
                ({"name": "a", "meals": {"map": {"m": {"grams": 1}},
                                         "order": ["m"]}}, False)]),
            (Patch(animal), "AnimalPatch", [
                ({}, True), ({"_links": {}}, True),
                ({"_links": {"mother": {"href": "/Animal/2"}}}, True),
                ({"_links": {"mother": {"href": "/Keeper/2"}}}, False)]),
        ]
        for cosmic_type, component, cases in table:
            validator = self.component_validator(component)
            for datum, accepted in cases:
                with self.subTest(component=component, datum=datum):
                    self.assertAgree(cosmic_type, validator, datum, accepted)

    def test_what_json_schema_cannot_say(self):
        # The known gaps listed in openapi()'s docstring: the schema
        # accepts these, Cosmic refuses them.
        cases = [
            (OrderedMap(Integer), {"map": {"a": 1}, "order": ["b"]}),
            (DateTime, "2014-02-30T00:00:00"),
            (Schema, {"type": "Nope"}),
        ]
        for cosmic_type, datum in cases:
            with self.subTest(datum=datum):
                validator = self.Validator(cosmic_type.json_schema())
                self.assertTrue(validator.is_valid(datum))
                with self.assertRaises(cosmic.ValidationError):
                    cosmic_type.from_json(datum)

    def test_list_response(self):
        validator = self.component_validator("AnimalList")
        good = {"_links": {"self": {"href": "/Animal?name=x"}},
                "_embedded": {"Animal": [{"name": "a"}]}, "total": 1}
        self.assertTrue(validator.is_valid(good))
        for bad in (dict(good, total="1"), {"_links": good["_links"],
                                            "_embedded": {"Animal": []}},
                    dict(good, _links={"self": {"href": "/Other"}}),
                    dict(good, extra=1)):
            with self.subTest(bad=bad):
                self.assertFalse(validator.is_valid(bad))


class TestConditionalOpenAPI(unittest.TestCase):
    def test_document_names_the_headers_and_statuses(self):
        _sv_isolate(self)
        api, _, _ = _sv_towns()
        doc = openapi(api)
        item = doc["paths"]["/Town/{id}"]
        get = item["get"]
        self.assertIn("ETag", get["responses"]["200"]["headers"])
        self.assertIn("304", get["responses"])
        self.assertEqual(
            [p["name"] for p in get["parameters"]], ["If-None-Match", "If-Match"])
        for verb in ("put", "delete"):
            with self.subTest(verb=verb):
                op = item[verb]
                self.assertIn("412", op["responses"])
                self.assertIn("If-Match", [p["name"] for p in op["parameters"]])
        self.assertIn("ETag", item["put"]["responses"]["200"]["headers"])
        self.assertIn("ETag", doc["paths"]["/Town"]["post"]["responses"][
            "201"]["headers"])


class TestRulesJSONSchema(unittest.TestCase):
    """The JSON Schema of constrained types accepts what Cosmic accepts."""

    def test_differential(self):
        jsonschema = _need("jsonschema")
        table = [
            (Integer(minimum=1, maximum=100),
             [1, 100, 1.0, 0, 101, 50.5, True, "5"]),
            (Integer(exclusive_minimum=0, exclusive_maximum=10),
             [0, 1, 9, 10, -1]),
            (Float(minimum=-1.5, exclusive_maximum=2),
             [-1.5, -1.6, 1.99, 2, 2.0, 0]),
            (String(min_length=2, max_length=3), ["", "a", "ab", "abc",
                                                  "abcd", "\U0001f600\u00e9",
                                                  3]),
            (String(pattern="^[A-Z]"), ["Moscow", "moscow", "", "1",
                                        "\u00c9l"]),
            (String(pattern="[0-9]"), ["a1b", "ab", "9"]),
            (String(enum=["red", "green"]), ["red", "blue", "", 1]),
            (Integer(enum=[1, 2]), [1, 2, 2.0, 3, True, "1"]),
            (Boolean(enum=[True]), [True, False, 1]),
            (Array(Integer, min_items=1, max_items=2),
             [[], [1], [1, 2], [1, 2, 3], [1, "x"], {}]),
            (Map(Integer, min_items=1, max_items=1),
             [{}, {"a": 1}, {"a": 1, "b": 2}, []]),
            (Struct([required("n", Integer(maximum=3)),
                     optional("s", Array(String(enum=["x"]), max_items=1))]),
             [{"n": 3}, {"n": 4}, {"n": 1, "s": ["x"]}, {"n": 1, "s": ["y"]},
              {"n": 1, "s": ["x", "x"]}]),
        ]
        for schema, data in table:
            validator = jsonschema.Draft202012Validator(
                schema.json_schema(),
                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
            for datum in data:
                with self.subTest(schema=repr(schema), datum=datum):
                    try:
                        schema.from_json(datum)
                        ok = True
                    except ValidationError:
                        ok = False
                    self.assertEqual(validator.is_valid(datum), ok)

    def test_openapi_components_carry_them(self):
        doc = openapi(_ru_api())
        body = doc["paths"]["/actions/check"]["post"]["requestBody"]
        props = body["content"]["application/json"]["schema"]["properties"]
        self.assertEqual(props["limit"], {"type": "integer", "minimum": 1,
                                          "maximum": 100})
        self.assertEqual(props["tags"], {
            "type": "array", "items": {"type": "string", "minLength": 1},
            "minItems": 1, "maxItems": 2})
        self.assertEqual(props["scores"], {
            "type": "object", "additionalProperties": {"type": "integer"},
            "maxProperties": 1})
        self.assertEqual(props["color"], {"type": "string",
                                          "enum": ["red", "green"]})
        self.assertNotIn("message", json.dumps(props))


class TestRulesOpenAPI(unittest.TestCase):
    """The document states the rules: parameters, create bodies."""

    @classmethod
    def setUpClass(cls):
        cls.places = _oa_example("places", {"PLACES_DB": ":memory:"})
        cls.doc = openapi(cls.places.places)

    def test_primitive_query_fields_are_plain_parameters(self):
        params = {p["name"]: p for p in
                  self.doc["paths"]["/City"]["get"]["parameters"]}
        self.assertEqual(params["limit"]["schema"], {
            "type": "integer", "minimum": 1, "maximum": 100})
        self.assertEqual(params["offset"]["schema"], {"type": "integer",
                                                      "minimum": 0})
        self.assertEqual(params["name"]["schema"], {"type": "string"})
        for p in params.values():
            self.assertNotIn("content", p)
        # Structured types still travel as JSON.
        params = openapi(_ru_api())["paths"]["/Item"]["get"]["parameters"]
        self.assertEqual([p["name"] for p in params if "content" in p],
                         ["tags"])

    def test_create_body_marks_the_required_fields(self):
        components = self.doc["components"]["schemas"]
        post = self.doc["paths"]["/City"]["post"]
        ref = post["requestBody"]["content"]["application/json"]["schema"]
        self.assertEqual(ref, {"$ref": "#/components/schemas/CityCreate"})
        self.assertEqual(components["CityCreate"]["required"], ["name"])
        self.assertEqual(components["CityCreate"]["properties"]["name"],
                         {"type": "string", "pattern": "^[^\\sa-z]",
                          "description": "Capitalized"})
        address = components["AddressCreate"]
        self.assertEqual(address["required"], ["_links", "number", "street"])
        self.assertEqual(address["properties"]["_links"]["required"],
                         ["city"])
        # Updates stay patches: nothing required.
        self.assertNotIn("required", components["CityPatch"])
        self.assertEqual(self.doc["paths"]["/Address"]["post"]["summary"],
                         "Create an Address")
        self.assertEqual(post["summary"], "Create a City")

    def test_without_create_requires_nothing_changes(self):
        doc = openapi(_oa_example_api("planetarium"))
        post = doc["paths"]["/Sphere"]["post"]
        self.assertEqual(post["requestBody"]["content"]["application/json"],
                         {"schema": {"$ref": "#/components/schemas/"
                                               "SpherePatch"}})
        self.assertNotIn("SphereCreate", doc["components"]["schemas"])

    def test_document_is_valid(self):
        validator = _need("openapi_spec_validator")
        validator.validate(self.doc)
        validator.validate(openapi(_ru_api()))


class TestAuthOpenAPI(unittest.TestCase):
    def test_security_schemes_and_requirements(self):
        doc = openapi(_au_api())
        self.assertEqual(doc["components"]["securitySchemes"], {
            "bearerAuth": {"type": "http", "scheme": "bearer"},
            "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-Key"},
            "basicAuth": {"type": "http", "scheme": "basic"}})
        anyone = [{"bearerAuth": []}, {"apiKeyAuth": []}, {"basicAuth": []}]
        self.assertEqual(doc["security"], anyone)
        paths = doc["paths"]
        self.assertEqual(paths["/actions/whoami"]["post"]["security"], anyone)
        self.assertEqual(paths["/actions/hello"]["post"]["security"], [])
        self.assertEqual(paths["/actions/admin"]["post"]["security"], [
            {"bearerAuth": ["admin"]}, {"apiKeyAuth": ["admin"]},
            {"basicAuth": ["admin"]}])
        self.assertEqual(paths["/Note/{id}"]["get"]["security"], [])
        self.assertEqual(paths["/Note"]["post"]["security"], anyone)
        self.assertEqual(paths["/spec.json"]["get"]["security"], [])
        responses = paths["/actions/admin"]["post"]["responses"]
        self.assertIn("401", responses)
        self.assertIn("403", responses)
        self.assertEqual(list(responses)[-1], "default")
        self.assertIn("401", paths["/Note"]["post"]["responses"])
        self.assertNotIn("403", paths["/Note"]["post"]["responses"])
        self.assertNotIn("401", paths["/actions/hello"]["post"]["responses"])
        doc = openapi(_au_api(requires=False, protect_spec=True))
        self.assertEqual(doc["security"], [])
        self.assertIn("401", doc["paths"]["/spec.json"]["get"]["responses"])

    def test_without_schemes_nothing_changes(self):
        doc = openapi(_oa_zoo())
        self.assertNotIn("security", doc)
        self.assertNotIn("securitySchemes", doc["components"])

    def test_validator_passes(self):
        validator = _need("openapi_spec_validator")
        for api in (_au_api(), _au_api(requires=False, protect_spec=True),
                    _au_api(schemes=[cosmic.BasicAuth(len)], requires="x")):
            validator.validate(openapi(api))

    def test_a_generated_client_authenticates(self):
        _need("openapi_python_client")
        tool = os.path.join(os.path.dirname(sys.executable),
                            "openapi-python-client")
        if not os.path.exists(tool):
            _need_missing("openapi-python-client")
        api = _au_api(schemes=[cosmic.BearerAuth(_AU_USERS.get)])
        tmp = tempfile.mkdtemp(prefix="cosmic-au-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "openapi.json")
        with open(path, "w") as f:
            json.dump(openapi(api), f)
        proc = subprocess.run(
            [tool, "generate", "--path", path, "--meta", "none",
             "--output-path", os.path.join(tmp, "au_client")],
            capture_output=True, text=True, timeout=300, cwd=tmp)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        script = textwrap.dedent("""
            import json, sys
            from au_client import AuthenticatedClient, Client
            from au_client.api.actions import whoami
            from au_client.api.note import note_create
            from au_client.models import NotePatch
            url, token = sys.argv[1], sys.argv[2]
            anonymous = Client(base_url=url)
            print(whoami.sync_detailed(client=anonymous).status_code)
            client = AuthenticatedClient(base_url=url, token=token)
            print(whoami.sync_detailed(client=client).parsed)
            made = note_create.sync_detailed(
                client=client, body=NotePatch(text="hi"))
            print(made.status_code)
        """)
        with served_api(api) as url:
            proc = subprocess.run(
                [sys.executable, "-c", script, url, _AU_TOKEN],
                capture_output=True, text=True, timeout=120, cwd=tmp)
        self.assertEqual((proc.stdout.split(), proc.stderr),
                         (["401", "alice", "201"], ""))


class TestRulesGeneratedClient(unittest.TestCase):
    """A client generated by openapi-python-client pages and filters."""

    def test_page_and_filter_against_a_live_server(self):
        _need("openapi_python_client")
        _need("httpx")
        folder = tempfile.mkdtemp(prefix="cosmic-opc-")
        self.addCleanup(shutil.rmtree, folder, True)
        env = {"PLACES_DB": os.path.join(folder, "places.db")}
        url = _Serve("examples/places.py", env=env, test=self).url
        with urllib.request.urlopen(url + "/openapi.json", timeout=30) as res:
            document = res.read()
        with open(os.path.join(folder, "places.json"), "wb") as f:
            f.write(document)
        bin_dir = os.path.dirname(sys.executable)
        done = subprocess.run(
            [sys.executable, "-m", "openapi_python_client", "generate",
             "--path", "places.json", "--meta", "none",
             "--output-path", "ru_places_client"],
            cwd=folder, capture_output=True, text=True, timeout=300,
            env=dict(os.environ, PATH=bin_dir + os.pathsep +
                     os.environ.get("PATH", "")))
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        sys.path.insert(0, folder)
        self.addCleanup(sys.path.remove, folder)
        self.addCleanup(lambda: [sys.modules.pop(m) for m in list(sys.modules)
                                 if m.startswith("ru_places_client")])
        generated = importlib.import_module("ru_places_client")
        city_get_list = importlib.import_module(
            "ru_places_client.api.city.city_get_list")
        city_create = importlib.import_module(
            "ru_places_client.api.city.city_create")
        models = importlib.import_module("ru_places_client.models")

        with generated.Client(base_url=url) as client:
            for i in range(30):
                body = models.CityCreate(
                    name="City%02d" % i,
                    country="France" if i % 3 == 0 else "Spain")
                created = city_create.sync(client=client, body=body)
                self.assertEqual(created.name, "City%02d" % i)
            # Beyond the default page of 20: limit and offset reach the server.
            page = city_get_list.sync(client=client, limit=25, offset=3)
            self.assertEqual(page.total_count, 30)
            self.assertEqual([c.name for c in page.field_embedded.city],
                             ["City%02d" % i for i in range(3, 28)])
            page = city_get_list.sync(client=client, country="France", limit=4,
                                      offset=2)
            self.assertEqual(page.total_count, 10)
            self.assertEqual([c.name for c in page.field_embedded.city],
                             ["City06", "City09", "City12", "City15"])
            # A limit beyond the document's maximum is refused by the server.
            response = city_get_list.sync_detailed(client=client, limit=250)
            self.assertEqual(response.status_code, 400)
            self.assertEqual(json.loads(response.content), {
                "error": "Item at ['limit'] Must be at most 100: 250"})


class TestOpenAPISchemathesis(unittest.TestCase):
    """schemathesis drives the places example from its own document."""

    @classmethod
    def setUpClass(cls):
        cls.schemathesis = _need("schemathesis")
        _need("hypothesis")
        cls.tmp = tempfile.TemporaryDirectory()
        env = {"PLACES_DB": os.path.join(cls.tmp.name, "places.db")}
        # A fresh import: the module reads PLACES_DB when it is imported.
        _OA_EXAMPLES.pop("places", None)
        cls.places = _oa_example("places", env)
        _OA_EXAMPLES.pop("places", None)
        for name in ("Paris", "Lyon", "Nice"):
            cls.places.City.create({"name": name, "country": "France"})
        cls.places.Address.create({"number": 1, "street": "Rue Haute",
                                   "city": "1"})
        cls.places.Address.create({"number": 2, "street": "Rue Basse",
                                   "city": "2"})

    @classmethod
    def tearDownClass(cls):
        # The example keeps one SQLite connection per thread.
        conn = getattr(cls.places._local, "conn", None)
        if conn is not None:
            conn.close()
        cls.tmp.cleanup()

    def run_operations(self, mode):
        """Run every operation's cases: (statuses, media types, failures)."""
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import strategies as st
        from hypothesis.errors import Unsatisfiable
        from schemathesis.checks import not_a_server_error
        from schemathesis.core.failures import Failure, FailureGroup
        from schemathesis.specs.openapi import checks

        checks_run = [not_a_server_error, checks.status_code_conformance,
                      checks.content_type_conformance,
                      checks.response_schema_conformance,
                      checks.response_headers_conformance]
        # positive_data_acceptance is left out here: links to cities that
        # do not exist are refused with 400, and no schema can say so
        # (TestRulesSchemathesis runs it, with that exception listed).
        if mode == "negative":
            checks_run.append(checks.negative_data_rejection)
        schema = self.schemathesis.openapi.from_wsgi(
            "/openapi.json", self.places.wsgi_app)
        doc = openapi(self.places.places)
        # Known-good inputs, drawn now and then so that the handlers'
        # success paths (and their responses) are exercised too. Cities 1
        # and 2 have addresses, so DELETE /City/{id} refuses them (409).
        good_bodies = {
            ("POST", "/City"): {"name": "Lille", "population": 230000},
            ("PUT", "/City/{id}"): {"country": "France"},
            ("POST", "/Address"): {"number": 5, "street": "Rue Neuve",
                                   "_links": {"city": {"href": "/City/1"}}},
            ("PUT", "/Address/{id}"): {"street": "Quai",
                                       "_links": {"city": {"href": "/City/2"}}},
            ("POST", "/actions/rename_city"): {"id": "3", "name": "Nizza"},
        }
        statuses, media, failures = {}, {}, []
        for result in schema.get_all_operations():
            operation = result.ok()
            label = "%s %s" % (operation.method.upper(), operation.path)
            key = (operation.method.upper(), operation.path)
            declared = {p["name"] for p in doc["paths"][operation.path][
                operation.method.lower()].get("parameters", [])}
            strategy = st.tuples(
                operation.as_strategy(
                    generation_mode=self.schemathesis.GenerationMode(mode)),
                st.sampled_from([None, "1", "2", "3", "4"]),
                st.booleans(), st.booleans())

            @settings(max_examples=25, deadline=None, derandomize=True,
                      database=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(strategy)
            def run(drawn):
                case, ident, use_good, problem = drawn
                if mode == "positive":
                    if ident is not None and "id" in (case.path_parameters or {}):
                        case.path_parameters["id"] = ident
                    if use_good and key in good_bodies:
                        case.body = copy.deepcopy(good_bodies[key])
                if case.query:
                    # Cosmic ignores undeclared query parameters
                    # (docs/protocol.md#get-list), which OpenAPI cannot
                    # say: leave them out.
                    case.query = {k: v for k, v in case.query.items()
                                  if k in declared}
                headers = {"Accept": "application/problem+json"} \
                    if problem else None
                response = case.call(headers=headers)
                code = response.status_code
                statuses.setdefault(label, {}).setdefault(code, 0)
                statuses[label][code] += 1
                for value in response.headers.get("content-type", []):
                    media[value] = media.get(value, 0) + 1
                try:
                    case.validate_response(response, checks=checks_run,
                                           headers=headers)
                except (Failure, FailureGroup) as err:
                    found = getattr(err, "exceptions", [err])
                    failures.append("%s %s query=%r body=%r -> %d %s: %s" % (
                        mode, label, case.query, case.body, code,
                        response.text[:200],
                        "; ".join(str(f).splitlines()[0] for f in found)))

            try:
                run()
            except Unsatisfiable:
                # No negative case exists (no body, no parameter to break).
                self.assertEqual(mode, "negative")
        return statuses, media, failures

    def test_positive(self):
        statuses, media, failures = self.run_operations("positive")
        self.assertEqual(failures, [])
        # Errors were checked in both forms.
        self.assertEqual(sorted(media), ["application/json",
                                         "application/problem+json"])
        self.assertEqual(len(statuses), 13)
        for label, codes in statuses.items():
            with self.subTest(operation=label):
                self.assertTrue(all(code < 500 for code in codes), codes)
        # The success paths ran, not only the errors.
        for label, code in (("GET /City", 200), ("POST /City", 201),
                            ("GET /City/{id}", 200), ("PUT /City/{id}", 200),
                            ("DELETE /City/{id}", 204),
                            ("GET /Address", 200), ("POST /Address", 201),
                            ("GET /Address/{id}", 200),
                            ("PUT /Address/{id}", 200),
                            ("POST /actions/stats", 200),
                            ("POST /actions/rename_city", 200),
                            ("GET /spec.json", 200)):
            with self.subTest(operation=label):
                self.assertIn(code, statuses[label])

    def test_negative(self):
        statuses, media, failures = self.run_operations("negative")
        self.assertEqual(failures, [])
        for label, codes in statuses.items():
            with self.subTest(operation=label):
                self.assertTrue(all(code < 500 for code in codes), codes)
        self.assertIn(400, statuses["POST /City"])


class TestRulesSchemathesis(unittest.TestCase):
    """schemathesis, every check and phase (stateful too), against places."""

    def test_bounded_run_passes(self):
        _need("schemathesis")
        folder = tempfile.mkdtemp(prefix="cosmic-st-")
        self.addCleanup(shutil.rmtree, folder, True)
        env = {"PLACES_DB": os.path.join(folder, "places.db")}
        url = _Serve("examples/places.py", env=env, test=self).url
        config = os.path.join(folder, "schemathesis.toml")
        with open(config, "w") as f:
            f.write(_RU_SCHEMATHESIS_TOML)
        report = os.path.join(folder, "report.json")
        done = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file",
             config, "run", url + "/openapi.json", "--checks", "all",
             "--phases", "examples,coverage,fuzzing,stateful",
             "--max-examples", "25", "--seed", "20251205",
             "--generation-database", "none", "--workers", "1",
             "--no-color", "--report", "json", "--report-json-path", report],
            cwd=folder, capture_output=True, text=True, timeout=600)
        output = done.stdout + done.stderr
        self.assertEqual(done.returncode, 0, output[-6000:])
        self.assertIn("Stateful", output)
        self.assertRegex(output, r"[1-9][0-9]* generated")
        self.assertNotIn("failures", output.splitlines()[-1])
        # Positive creates were accepted: the database holds their cities.
        client = cosmic.connect(url)
        self.addCleanup(client.close)
        self.assertGreater(client.actions.stats()["cities"], 0)


# -- Docs page ----------------------------------------------------------------
# The renderers, the page as served, and the page in a browser.


# Renderers and the page, without a browser

class TestDocsTypes(unittest.TestCase):

    def test_type_text_every_type(self):
        for schema, text, _ in _DC_TYPE_CASES:
            with self.subTest(schema=schema):
                self.assertEqual(_docs_type_text(schema), text)

    def test_example_every_type(self):
        for schema, _, example in _DC_TYPE_CASES:
            with self.subTest(schema=schema):
                self.assertEqual(_docs_example(schema, _DC_SPEC), example)
                json.dumps(_docs_example(schema, _DC_SPEC))

    def test_type_html_every_type(self):
        for schema, text, _ in _DC_TYPE_CASES:
            with self.subTest(schema=schema):
                out = _docs_type_html(schema, _DC_SPEC)
                self.assertIsInstance(out, str)
                if schema["type"] not in ("Struct", "cosmic.Link",
                                          "cosmic.Representation",
                                          "cosmic.Patch"):
                    self.assertEqual(out, html.escape(text))

    def test_examples_without_spec(self):
        self.assertEqual(_docs_example({"type": "cosmic.Model"}), "api.Model")
        self.assertEqual(
            _docs_example({"type": "cosmic.Representation", "param": "x.Y"}),
            {"_links": {"self": {"href": "/Y/1"}}})
        self.assertEqual(
            _docs_example({"type": "cosmic.Patch", "param": "x.Y"}), {})

    def test_nested(self):
        schema = {"type": "Array", "param": {"type": "Map", "param": {
            "type": "Struct", "param": _dc_om([
                ("a", _dc_field({"type": "Array", "param": _DC_DT}, True)),
                ("b", _dc_field({"type": "Struct", "param": _dc_om([])}))])}}}
        self.assertEqual(_docs_type_text(schema),
                         "Array of Map of Struct {a: Array of DateTime "
                         "(required), b: Struct {} (optional)}")
        self.assertEqual(_docs_example(schema),
                         [{"key": {"a": ["2014-01-01T00:00:00"], "b": {}}}])

    def test_type_html_nested_lists_and_escaping(self):
        schema = {"type": "Struct", "param": _dc_om([
            ("point", _dc_field({"type": "Struct", "param": _dc_om([
                ("x", _dc_field(_DC_F, True))])}, True, "a <b>point</b>")),
            ("city", _dc_field({"type": "cosmic.Link", "param": "shop.City"})),
            ("other", _dc_field({"type": "cosmic.Link",
                                 "param": "elsewhere.City"}))])}
        out = _docs_type_html(schema, _DC_SPEC)
        self.assertEqual(out.count("<ul>"), 2)
        self.assertIn("<code>x</code>: Float (required)", out)
        self.assertIn("a &lt;b&gt;point&lt;/b&gt;", out)
        self.assertIn('Link to <a href="#model-City">shop.City</a>', out)
        self.assertIn("Link to elsewhere.City", out)  # not this API: no anchor
        self.assertEqual(
            _docs_type_html({"type": "Array", "param": {"type": "<i>"}}),
            "Array of &lt;i&gt;")

    def test_unknown_and_malformed(self):
        for schema in (None, 1, "String", {}, {"type": 3}, {"type": "Array"},
                       {"type": "Struct", "param": "junk"}, {"type": "Nope"}):
            with self.subTest(schema=schema):
                self.assertIsInstance(_docs_type_text(schema), str)
                self.assertIsInstance(_docs_type_html(schema, _DC_SPEC), str)
                json.dumps(_docs_example(schema, _DC_SPEC))

    def test_deep_nesting_does_not_crash(self):
        schema = _DC_I
        for _ in range(3000):
            schema = {"type": "Array", "param": schema}
        self.assertIn("\u2026", _docs_type_text(schema))
        _docs_type_html(schema)
        _docs_example(schema)
        schema = _DC_I
        for _ in range(200):  # deeper than the renderers go; json copes
            schema = {"type": "Array", "param": schema}
        page = _docs_html({"name": "deep", "actions": _dc_om([("a", {
            "accepts": schema, "returns": schema})]), "models": _dc_om([])})
        self.assertIn("\u2026", page)

    def test_recursive_representations(self):
        def model(prop, target):
            return {"properties": _dc_om([(prop, _dc_field(
                {"type": "cosmic.Representation", "param": target}))]),
                "links": _dc_om([]), "query_fields": _dc_om([]),
                "methods": _dc_methods(), "list_metadata": _dc_om([])}
        spec = {"name": "t", "actions": _dc_om([]), "models": _dc_om([
            ("A", model("b", "t.B")), ("B", model("a", "t.A"))])}
        example = _docs_example(
            {"type": "cosmic.Representation", "param": "t.A"}, spec)
        self.assertEqual(example, {
            "_links": {"self": {"href": "/A/1"}},
            "b": {"_links": {"self": {"href": "/B/1"}},
                  "a": {"_links": {"self": {"href": "/A/1"}}}}})
        self.assertIn("</html>", _docs_html(spec))


class TestDocsPage(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.page = _docs_html(_DC_SPEC)

    def test_size(self):
        size = len(self.page.encode("utf-8"))
        print("\n[docs page size for the sample spec: %d bytes]" % size,
              file=sys.stderr)
        self.assertLess(size, 40000)

    def test_well_formed_and_no_inline_handlers_or_styles(self):
        checker = _dc_TagChecker()
        checker.feed(self.page)
        checker.close()
        self.assertEqual(checker.problems, [])
        self.assertEqual(checker.stack, [])
        for tag, attrs in checker.tags:
            for name in attrs:
                self.assertFalse(name.startswith("on"), (tag, attrs))
                self.assertNotEqual(name, "style", (tag, attrs))
            self.assertNotIn(tag, ("img", "link", "iframe", "object", "embed",
                                   "base"))
            if tag == "script":
                self.assertIn(attrs, ({}, {"type": "application/json",
                                           "id": "spec"}))
            if tag == "a":
                self.assertRegex(attrs["href"], r"^(#|https?://|spec\.json$)")
        tags = [t for t, _ in checker.tags]
        self.assertEqual(tags.count("script"), 2)
        self.assertEqual(tags.count("style"), 1)
        self.assertTrue(self.page.startswith("<!DOCTYPE html>"))
        self.assertIn('<meta name="viewport" content="width=device-width, '
                      'initial-scale=1">', self.page)

    def test_csp_hashes_match_the_page(self):
        csp = cosmic._docs_csp()
        self.assertIs(cosmic._docs_csp(), csp)  # computed once
        self.assertNotIn("unsafe", csp)
        self.assertNotIn("\n", csp)
        self.assertEqual(_dc_csp_sources("default-src"), ["'none'"])
        self.assertEqual(_dc_csp_sources("connect-src"), ["'self'"])
        self.assertEqual(_dc_csp_sources("img-src"), ["'none'"])
        self.assertEqual(_dc_csp_sources("base-uri"), ["'none'"])
        self.assertEqual(_dc_csp_sources("form-action"), ["'none'"])
        self.assertEqual(_dc_csp_sources("frame-ancestors"), ["'none'"])
        style = re.search(r"<style>(.*?)</style>", self.page, re.S).group(1)
        script = re.search(r"<script>(.*?)</script>", self.page, re.S).group(1)
        self.assertEqual(style, _DOCS_CSS)
        self.assertEqual(script, _DOCS_JS)
        self.assertEqual(_dc_csp_sources("style-src"), [_dc_sha256(style)])
        self.assertEqual(_dc_csp_sources("script-src"), [_dc_sha256(script)])
        # the same page for another spec: the constants do not depend on it
        other = _docs_html({"name": "x", "actions": _dc_om([]),
                            "models": _dc_om([])})
        self.assertIn("<script>" + _DOCS_JS + "</script>", other)
        self.assertIn("<style>" + _DOCS_CSS + "</style>", other)

    def test_spec_blob(self):
        blob = re.search(r'<script type="application/json" id="spec">'
                         r'(.*?)</script>', self.page, re.S).group(1)
        self.assertNotRegex(blob, r"[<>&]")
        self.assertEqual(json.loads(blob), _DC_SPEC)
        self.assertIn("\\u003cscript\\u003ealert(1)\\u003c/script\\u003e",
                      blob)
        tricky = {"name": "t", "actions": _dc_om([("a", {
            "doc": "</script><!-- \u2028\u2029 & <![CDATA[ \ud7ff"})]),
            "models": _dc_om([])}
        page = _docs_html(tricky)
        blob = re.search(r'<script type="application/json" id="spec">'
                         r'(.*?)</script>', page, re.S).group(1)
        self.assertNotRegex(blob, r"[<>&]")
        self.assertEqual(json.loads(blob), tricky)

    def test_escaping(self):
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt; &amp; "
                      "&lt;/script&gt; too.", self.page)
        self.assertNotIn("<script>alert", self.page)
        self.assertIn("Capitalised &lt;b&gt;name&lt;/b&gt;", self.page)
        page = _docs_html({
            "name": "<b>x</b>\"'", "homepage": "javascript:alert(1)",
            "actions": _dc_om([("a", {"doc": "</textarea><script>x</script>",
                                      "accepts": _DC_S})]),
            "models": _dc_om([])})
        self.assertIn("<title>&lt;b&gt;x&lt;/b&gt;&quot;&#x27;</title>", page)
        self.assertIn("javascript:alert(1)", page)
        self.assertNotIn('href="javascript', page)
        self.assertNotIn("<script>x", page)

    def test_homepage(self):
        def page_for(homepage):
            return _docs_html(dict(_DC_SPEC, homepage=homepage))
        self.assertIn('<a href="http://shop.example.com" '
                      'rel="noopener noreferrer">', self.page)
        self.assertIn('<a href="https://x.example/a?b=1&amp;c=&quot;2&quot;"',
                      page_for('https://x.example/a?b=1&c="2"'))
        for bad in ("javascript:alert(1)", "ftp://x.example", "//x.example",
                    "data:text/html,x", " http://x.example", "http://a b",
                    "/relative", "JAVASCRIPT:alert(1)"):
            with self.subTest(homepage=bad):
                page = page_for(bad)
                self.assertIn(" \u00b7 " + html.escape(bad, quote=True), page)
                self.assertNotIn('<a href="' + html.escape(bad, quote=True),
                                 page)
        no_homepage = dict(_DC_SPEC)
        del no_homepage["homepage"]
        self.assertNotIn("shop.example.com",
                         _docs_html(no_homepage).split('id="spec"')[0])

    def test_contents(self):
        for name in ("quote", "ping", "echo", "Category", "Item", "City"):
            kind = "action" if name.islower() else "model"
            self.assertIn('id="%s-%s"' % (kind, name), self.page)
        for endpoint in ("POST</span> /actions/quote", "GET</span> /City/{id}",
                         "GET</span> /City", "POST</span> /City",
                         "PUT</span> /City/{id}", "DELETE</span> /City/{id}",
                         "GET</span> /Category/{id}"):
            self.assertIn(endpoint, self.page)
        self.assertNotIn("/Category</div>", self.page)  # no get_list there
        self.assertIn("<code>item_id</code>: String (required)", self.page)
        self.assertIn('<code>category</code>: link to <a href="#model-Category'
                      '">shop.Category</a> (required)', self.page)
        self.assertIn("<h4>Query fields</h4>", self.page)
        self.assertIn("<h4>List metadata</h4>", self.page)
        # 3 actions, 1 + 3 + 5 model methods
        self.assertEqual(self.page.count('<form class="try"'), 3 + 1 + 3 + 5)
        self.assertIn('data-field="founded_after"', self.page)
        self.assertIn('placeholder="2014-01-01T00:00:00"', self.page)
        self.assertIn('placeholder="[&quot;string&quot;]"', self.page)

    def test_odd_specs(self):
        page = _docs_html({"name": "trivia", "homepage": "",
                           "actions": _dc_om([]), "models": _dc_om([])})
        self.assertIn("This API has no actions.", page)
        self.assertIn("This API has no models.", page)
        for spec in ({}, None, [], "spec",
                     {"name": 3, "actions": "x", "models": {
                         "map": {"M": None}, "order": ["M", "N"]}},
                     {"name": "n", "actions": _dc_om([
                         ("a", None), ("b", {"accepts": "junk"})]),
                      "models": _dc_om([("M", {
                          "methods": {"get_list": True},
                          "query_fields": _dc_om([("q", "junk")])})])}):
            with self.subTest(spec=spec):
                self.assertIn("</html>", _docs_html(spec))


class TestDocsServed(unittest.TestCase):
    """docs_html(api) and the GET / and GET /docs routes of a Server."""

    def test_docs_html_renders_the_api_spec(self):
        api = _dc_shop_api()
        page = docs_html(api)
        _, _, spec = _wsgi(Server(api).wsgi_app, "GET", "/spec.json",
                           validate=False)
        self.assertEqual(page, _docs_html(json.loads(spec.decode("utf-8"))))
        self.assertIn('id="action-echo"', page)
        self.assertIn('id="action-quote"', page)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt; &amp; "
                      "&lt;/script&gt; too.", page)
        self.assertNotIn("<script>alert", page)

    def test_served_at_root_and_docs_with_headers(self):
        api = _dc_shop_api()
        app = Server(api).wsgi_app
        bodies = []
        for path in ("/", "/docs"):
            with self.subTest(path=path):
                answer = _wsgi(app, "GET", path, validate=False)
                status, headers, body = answer
                self.assertEqual(answer.status_line, "200 OK")
                self.assertEqual(headers["content-type"],
                                 "text/html; charset=utf-8")
                self.assertEqual(headers["content-security-policy"],
                                 cosmic._docs_csp())
                self.assertEqual(headers["x-content-type-options"], "nosniff")
                self.assertEqual(body.decode("utf-8"), docs_html(api))
                bodies.append(body)
        self.assertEqual(bodies[0], bodies[1])

    def test_page_follows_changes_to_the_api(self):
        api = _dc_shop_api()
        app = Server(api).wsgi_app
        self.assertNotIn(b'id="action-later"', _wsgi(app, "GET", "/",
                                                     validate=False)[2])

        def later():
            """Added after the first request."""

        api.action()(later)
        self.assertIn(b'id="action-later"', _wsgi(app, "GET", "/docs",
                                                  validate=False)[2])

    def test_can_be_turned_off(self):
        app = Server(_dc_shop_api(), docs=False).wsgi_app
        for path in ("/", "/docs"):
            with self.subTest(path=path):
                self.assertEqual(
                    _wsgi(app, "GET", path, validate=False).status_line,
                    "404 Not Found")


class TestRulesDocsPage(unittest.TestCase):
    """The docs page shows the constraints and reads well."""

    def test_constraints_articles_and_links(self):
        page = docs_html(_ru_api())
        for text in ("Integer [\u2265 1, \u2264 100]",
                     "Float [&gt; 0, &lt; 1]",
                     "String [length \u2265 2, length \u2264 3, pattern "
                     "/^[A-Z]+$/]",
                     "String [one of &quot;red&quot;, &quot;green&quot;]",
                     "Array [items \u2265 1, items \u2264 2] of String "
                     "[length \u2265 1]",
                     "A create must give: <code>name</code>."):
            with self.subTest(text=text):
                self.assertIn(text, page)
        self.assertNotIn("Links", page)  # Item has none
        places = docs_html(_oa_example("places",
                                       {"PLACES_DB": ":memory:"}).places)
        self.assertIn("Create an Address from a patch", places)
        self.assertIn("Create a City from a patch", places)
        self.assertNotIn("a Address", places)
        self.assertEqual(places.count("<h4>Links</h4>"), 1)  # Address only

    def test_examples_respect_bounds_and_enums(self):
        self.assertEqual(_docs_example({"type": "Integer", "minimum": 5}), 5)
        self.assertEqual(_docs_example({"type": "Float", "maximum": -2}), -2)
        self.assertEqual(_docs_example({"type": "String", "enum": ["b"]}),
                         "b")
        self.assertEqual(_docs_example({"type": "String",
                                        "pattern": "^[^\\sa-z]"}), "String")
        self.assertEqual(_docs_example({"type": "String", "maxLength": 1,
                                        "pattern": "[0-9]"}), "1")
        self.assertEqual(_docs_example({"type": "String"}), "string")


class TestAuthDocsPage(unittest.TestCase):
    def page(self, api):
        status, headers, body = _wsgi(Server(api).wsgi_app, "GET", "/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-security-policy"],
                         cosmic._docs_csp())
        return body.decode("utf-8")

    def test_authorize_box_has_one_field_per_scheme(self):
        page = self.page(_au_api())
        box = page[page.index('<section class="auth"'):]
        box = box[:box.index("</section>")]
        self.assertIn('data-kind="bearer"', box)
        self.assertIn('data-kind="api_key" data-header="X-Key"', box)
        self.assertIn('data-kind="basic-user"', box)
        self.assertIn('data-kind="basic-password"', box)
        self.assertLess(page.index("Authorize"), page.index("<h2>Actions"))
        self.assertEqual(page.count('type="password"'), 3)

    def test_each_call_says_whether_it_needs_a_credential(self):
        page = self.page(_au_api())

        def badge(anchor):
            start = page.index(anchor)
            return re.search(r'<span class="need[^"]*">([^<]*)</span>',
                             page[start:]).group(1)

        self.assertEqual(badge('id="action-hello"'), "open")
        self.assertEqual(badge('id="action-whoami"'), "needs a credential")
        self.assertEqual(badge('id="action-admin"'),
                         "needs a credential with admin")
        self.assertEqual(badge("/Note/{id}</div>"), "open")
        self.assertEqual(badge("POST</span> /Note</div>"),
                         "needs a credential")

    def test_no_box_without_schemes(self):
        page = self.page(_oa_zoo())
        self.assertNotIn('class="auth"', page)
        self.assertNotIn('class="need', page)

    def test_script_keeps_credentials_out_of_storage(self):
        for word in ("localStorage", "document.cookie", "sessionStorage"):
            self.assertNotIn(word, _DOCS_JS)


class TestDocsBrowserPage(_dc_FakeAppMixin, unittest.TestCase):

    def test_loads_clean_with_every_name(self):
        self.load()
        self.assertEqual(self.browser.evaluate("document.title"), "shop")
        text = self.browser.evaluate("document.body.innerText")
        for name in ("quote", "ping", "echo", "Category", "Item", "City"):
            self.assertIn(name, text)
        for endpoint in ("POST /actions/quote", "GET /City/{id}",
                         "PUT /City/{id}", "DELETE /City/{id}", "GET /City",
                         "POST /City", "GET /Item"):
            self.assertIn(endpoint, text)
        self.assertIn("item_id: String (required)", text)
        self.assertEqual(self.browser.evaluate(
            "document.querySelector('a[href^=\"http\"]').href"),
            "http://shop.example.com/")
        self.assertEqual(self.browser.requested_urls(), [self.origin + "/"])
        self.assert_clean()

    def test_docstring_script_is_text(self):
        self.load()
        self.assertEqual(self.browser.evaluate(
            "document.querySelector('#action-echo .doc').textContent"),
            _DC_XSS_DOC)
        self.assertIn("<script>alert(1)</script>",
                      self.browser.evaluate("document.body.innerText"))
        self.assertEqual(self.browser.evaluate(
            "Array.from(document.scripts, s => s.type + '#' + s.id)"),
            ["application/json#spec", "#"])
        self.assertEqual(self.browser.evaluate(
            "JSON.parse(document.getElementById('spec').textContent)"),
            _DC_SPEC)
        self.assert_clean()  # an alert() would show up as a dialog error

    def test_create(self):
        self.load()
        body = {"name": "Paris", "population": 2100000,
                "founded": "0250-01-01T00:00:00",
                "_links": {"hub": {"href": "/City/1"}}}
        out = self.try_it("model-City", "create",
                          body=json.dumps(body, indent=2))
        self.assertIn("POST /City\n", out)
        self.assertIn("HTTP 201 Created", out)
        self.assertIn("Location: /City/7", out)
        shown = json.loads(out.split("\n\n", 2)[2])
        self.assertEqual(shown["name"], "Paris")
        self.assertEqual(shown["_links"]["self"], {"href": "/City/7"})
        self.assertIn('\n  "name": "Paris"', out)  # pretty-printed
        [req] = self.api_requests()
        self.assertEqual((req["method"], req["path"], req["content_type"]),
                         ("POST", "/City", "application/json"))
        self.assertEqual(json.loads(req["body"]), body)
        self.assert_clean()

    def test_create_prefilled_example(self):
        self.load()
        out = self.try_it("model-City", "create")
        self.assertIn("HTTP 201 Created", out)
        [req] = self.api_requests()
        self.assertEqual(json.loads(req["body"]), _DC_CITY_PATCH_EXAMPLE)
        self.assert_clean()

    def test_action_with_input(self):
        self.load()
        self.assertEqual(json.loads(self.browser.evaluate(
            "document.querySelector('#action-quote .f-body').value")),
            {"item_id": "string", "quantity": 1})
        out = self.try_it("action-quote", "action",
                          body='{"item_id": "3", "quantity": 4}')
        self.assertIn("HTTP 200 OK", out)
        self.assertTrue(out.endswith("\n\n10"), out)
        [req] = self.api_requests()
        self.assertEqual((req["method"], req["path"], req["content_type"]),
                         ("POST", "/actions/quote", "application/json"))
        self.assert_clean()

    def test_action_without_input(self):
        self.load()
        self.assertIsNone(self.browser.evaluate(
            "document.querySelector('#action-ping textarea')"))
        out = self.try_it("action-ping", "action")
        self.assertIn("HTTP 204 No Content", out)
        self.assertIn("(empty body)", out)
        [req] = self.api_requests()
        self.assertEqual((req["method"], req["path"], req["content_type"],
                          req["body"]), ("POST", "/actions/ping", "", ""))
        self.assert_clean()

    def test_echo_json_with_markup(self):
        self.load()
        out = self.try_it("action-echo", "action", body='{"x": "<img src=x>"}')
        self.assertIn('"x": "<img src=x>"', out)
        self.assertEqual(self.browser.evaluate("document.images.length"), 0)
        self.assert_clean()

    def test_get_update_delete_with_encoded_ids(self):
        self.load()
        out = self.try_it("model-City", "get_by_id", ident="a b/\u00e9?#")
        self.assertIn("HTTP 200 OK", out)
        self.assertIn(self.origin + "/City/a%20b%2F%C3%A9%3F%23",
                      self.browser.requested_urls())
        out = self.try_it("model-City", "update", ident="7",
                          body='{"name": "Lyon"}')
        self.assertIn("PUT /City/7\n", out)
        self.assertIn('"name": "Lyon"', out)
        out = self.try_it("model-City", "delete", ident="7")
        self.assertIn("HTTP 204 No Content", out)
        reqs = [(r["method"], r["path"], r["content_type"])
                for r in self.api_requests()]
        self.assertEqual(reqs, [("GET", "/City/a b/\u00e9?#", ""),
                                ("PUT", "/City/7", "application/json"),
                                ("DELETE", "/City/7", "")])
        self.assert_clean()

    def test_get_list_query_encoding(self):
        self.load()
        out = self.try_it("model-City", "get_list", query={
            "name": "New York", "founded_after": "2014-01-01T00:00:00",
            "min_population": " 5 ", "tags": '["a", "b c"]'})
        self.assertIn("HTTP 200 OK", out)
        [req] = self.api_requests()
        self.assertEqual(req["query"],
                         "name=New+York&founded_after=2014-01-01T00%3A00%3A00"
                         "&min_population=5&tags=%5B%22a%22%2C%22b+c%22%5D")
        self.try_it("model-City", "get_list", query={"min_population": "10"})
        self.try_it("model-City", "get_list", query={})
        self.assertEqual([r["query"] for r in self.api_requests()][1:],
                         ["min_population=10", ""])
        self.assertEqual(self.browser.requested_urls()[-1],
                         self.origin + "/City")
        self.assert_clean()

    def test_client_side_errors_send_nothing(self):
        self.load()
        out = self.try_it("action-quote", "action", body="{not json")
        self.assertIn("not valid JSON", out)
        out = self.try_it("model-City", "get_by_id", ident="")
        self.assertIn("Enter an id", out)
        out = self.try_it("model-City", "get_list",
                          query={"min_population": "many"})
        self.assertIn("needs a JSON value", out)
        self.assertEqual(self.api_requests(), [])
        self.assert_clean()

    def test_error_response_is_shown(self):
        self.load()
        out = self.try_it("model-Item", "create", body="{}")  # no /Item here
        self.assertIn("HTTP 404 Not Found", out)
        self.assertIn('"error": "Not Found"', out)
        # Chromium logs every 4xx/5xx fetch as a network error; nothing else
        self.assertEqual(self.browser.console_errors(), [
            "log(network): Failed to load resource: the server responded "
            "with a status of 404 (Not Found) %s/Item" % self.origin])
        self.assertEqual(self.browser.csp_violations(), [])

    def test_served_at_docs(self):
        self.load("/docs")
        out = self.try_it("action-echo", "action", body="[1, 2]")
        self.assertIn("POST /actions/echo\n", out)
        self.assertIn("HTTP 200 OK", out)
        self.assertEqual([r["path"] for r in self.api_requests()],
                         ["/actions/echo"])
        self.assert_clean()

    def test_phone_and_wide_layout(self):
        self.browser.set_viewport(360, 740, mobile=True, scale=2)
        self.load()
        self.browser.evaluate(
            "document.querySelectorAll('details').forEach(d => d.open = true)")
        self.assertLessEqual(self.browser.evaluate(
            "document.documentElement.scrollWidth"), 360)
        self.browser.set_viewport(1600, 900)
        self.load()
        self.assertLessEqual(self.browser.evaluate(
            "document.querySelector('main').getBoundingClientRect().width"),
            961)
        self.assert_clean()


class TestDocsBrowserHarness(_dc_FakeAppMixin, unittest.TestCase):
    """The harness notices what the page tests rely on it to notice."""

    spec = {"name": "h", "actions": _dc_om([]), "models": _dc_om([])}

    def _page(self, markup):
        self.browser.open("data:text/html;base64,"
                          + base64.b64encode(markup.encode()).decode())

    def test_console_error_and_exception(self):
        self._page("<script>console.error('boom'); null.x;</script>")
        self.browser.pump_until(lambda: len(self.browser._errors) >= 2,
                                timeout=5)
        errors = self.browser.console_errors()
        self.assertTrue(any("boom" in e for e in errors), errors)
        self.assertTrue(any("TypeError" in e for e in errors), errors)

    def test_csp_violation(self):
        self.app.page = (b"<!DOCTYPE html><p>x</p>"
                         b"<script>document.title='ran'</script>"
                         b"<img src='/x.png'>")
        try:
            self.load()
        finally:
            self.app.page = _docs_html(self.spec).encode()
        self.assertNotEqual(self.browser.evaluate("document.title"), "ran")
        self.browser.pump_until(lambda: len(self.browser._csp) >= 2,
                                timeout=5)
        violations = self.browser.csp_violations()
        self.assertTrue(any("script-src" in v for v in violations), violations)
        self.assertTrue(any("img-src" in v for v in violations), violations)

    def test_dialog_is_reported_not_hanging(self):
        self._page("<p>x</p>")
        self.browser.evaluate("setTimeout(() => alert('hi'), 0), 1")
        self.browser.pump_until(lambda: any(
            "dialog(alert): hi" in e for e in self.browser._errors),
            timeout=5)
        self.assertEqual(self.browser.evaluate("1 + 1"), 2)

    def test_evaluate_errors_and_timeouts(self):
        self._page("<p>x</p>")
        with self.assertRaises(_dc_BrowserError):
            self.browser.evaluate("null.x")
        self.assertEqual(self.browser.evaluate(
            "new Promise(r => setTimeout(() => r([1, 'a']), 50))"), [1, "a"])
        started = time.monotonic()
        with self.assertRaises(_dc_BrowserTimeout):
            self.browser.wait_for("false", timeout=0.3)
        self.assertLess(time.monotonic() - started, 3)
        big = self.browser.evaluate("'x'.repeat(300000)")  # 64-bit length
        self.assertEqual(len(big), 300000)
        mid = self.browser.evaluate("'y'.repeat(1000)")  # 16-bit length
        self.assertEqual(mid, "y" * 1000)

    def test_requested_urls(self):
        self.load()
        self.browser.evaluate("fetch('/spec.json').then(r => r.status)")
        self.assertEqual(self.browser.requested_urls(),
                         [self.origin + "/", self.origin + "/spec.json"])

    def test_unmask(self):
        self.assertEqual(_dc_unmask(b"", b"abcd"), b"")
        data = bytes(range(7))
        masked = _dc_unmask(data, b"\x01\x02\x03\x04")
        self.assertEqual(masked, bytes([1, 3, 1, 7, 5, 7, 5]))
        self.assertEqual(_dc_unmask(masked, b"\x01\x02\x03\x04"), data)


class TestAuthDocsBrowser(_dc_BrowserMixin, unittest.TestCase):
    """The Authorize box in headless Chromium against a real server."""

    @classmethod
    def setUpClass(cls):
        _need("chromium", os.path.exists(_DC_CHROMIUM) and _DC_CHROMIUM)
        cls.served = served_api(_au_api())
        cls.origin = cls.served.__enter__()
        cls.addClassCleanup(cls.served.__exit__, None, None, None)
        cls.start_browser()

    def authorize(self, token):
        self.assertTrue(self.browser.evaluate("""(() => {
          const box = document.querySelector('form.authorize');
          box.querySelector('[data-kind="bearer"]').value = %s;
          box.querySelector('button[type=submit]').click();
          return true;
        })()""" % json.dumps(token)))
        return self.browser.evaluate(
            "document.querySelector('.a-state').textContent")

    def assert_clean(self):
        """No errors but the 401s asked for; no CSP violation; no request
        to another origin."""
        errors = [e for e in self.browser.console_errors() if not re.match(
            r"log\(network\): Failed to load resource: the server responded"
            r" with a status of 401 ", e)]
        self.assertEqual(errors, [])
        self.assertEqual(self.browser.csp_violations(settle=0), [])
        for url in self.browser.requested_urls(settle=0):
            self.assertTrue(url.startswith(self.origin + "/"), url)

    def test_protected_create_fails_before_authorizing_and_works_after(self):
        self.load("/")
        out = self.try_it("model-Note", "create", body='{"text": "hi"}')
        self.assertIn("HTTP 401", out)
        self.assertIn("Missing credentials", out)
        state = self.authorize(_AU_TOKEN)
        self.assertEqual(state, "Authorized: try-it calls send "
                                "Authorization.")
        out = self.try_it("model-Note", "create", body='{"text": "hi"}')
        self.assertIn("HTTP 201", out)
        self.assertIn('"text": "hi"', out)
        out = self.try_it("action-admin", "action")
        self.assertIn("HTTP 200", out)
        # The token is in no storage and not in the page's URL.
        self.assertEqual(self.browser.evaluate(
            "localStorage.length + sessionStorage.length"), 0)
        self.assertNotIn(_AU_TOKEN, self.browser.evaluate("location.href"))
        self.assert_clean()

    def test_clear_and_reload_forget_the_token(self):
        self.load("/docs")
        self.authorize(_AU_TOKEN)
        self.browser.evaluate("document.querySelector('form.authorize "
                              "button[type=reset]').click(), true")
        self.browser.wait_for("document.querySelector('.a-state')"
                              ".textContent.startsWith('Not authorized')")
        self.assertIn("HTTP 401", self.try_it("action-whoami", "action"))
        self.authorize(_AU_TOKEN)
        self.assertIn("HTTP 200", self.try_it("action-whoami", "action"))
        self.load("/docs")
        self.assertIn("HTTP 401", self.try_it("action-whoami", "action"))
        self.assert_clean()


# End to end: `python -m cosmic serve examples/places.py` in headless Chromium

class TestDocsPlacesEndToEnd(_dc_BrowserMixin, unittest.TestCase):
    """The docs page of examples/places.py as served by the CLI."""

    @classmethod
    def setUpClass(cls):
        _need("chromium", os.path.exists(_DC_CHROMIUM) and _DC_CHROMIUM)
        tmp = tempfile.mkdtemp(prefix="cosmic-places-")
        cls.addClassCleanup(shutil.rmtree, tmp, True)
        env = dict(os.environ, PLACES_DB=os.path.join(tmp, "places.db"))
        env["PYTHONPATH"] = os.pathsep.join(
            [_ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
        cls.server = _Serve("examples/places.py", env=env, timeout=20)
        cls.addClassCleanup(cls.server.close)
        cls.port = cls.server.port
        cls.origin = "http://127.0.0.1:%d" % cls.port
        status, _, body = _http_json(cls.port, "GET", "/spec.json")
        if status != 200:
            raise AssertionError("GET /spec.json: %d %r" % (status, body))
        cls.spec = json.loads(body.decode("utf-8"))
        cls.start_browser()

    def test_server_announced_itself(self):
        self.assertEqual(self.server.name, "places")
        self.assertEqual(self.server.host, "127.0.0.1")
        self.assertEqual(self.spec["name"], "places")

    def test_page_over_http(self):
        status, headers, body = _http_json(self.port, "GET", "/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        self.assertEqual(headers["content-security-policy"],
                         cosmic._docs_csp())
        self.assertEqual(headers["x-content-type-options"], "nosniff")
        self.assertEqual(body.decode("utf-8"), _docs_html(self.spec))
        print("\n[docs page size for examples/places.py: %d bytes]"
              % len(body), file=sys.stderr)
        self.assertLess(len(body), 40000)
        status, headers, again = _http_json(self.port, "GET", "/docs")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-security-policy"],
                         cosmic._docs_csp())
        self.assertEqual(again, body)

    def test_page_loads_clean_with_every_name(self):
        self.load()
        self.assertEqual(self.browser.evaluate("document.title"), "places")
        text = self.browser.evaluate("document.body.innerText")
        names = [("action", name) for name in self.spec["actions"]["order"]]
        names += [("model", name) for name in self.spec["models"]["order"]]
        self.assertEqual(len(names), 4)  # stats, rename_city, City, Address
        for kind, name in names:
            with self.subTest(name=name):
                self.assertIn(name, text)
                self.assertEqual(self.browser.evaluate(
                    "document.querySelector(%s).textContent" % json.dumps(
                        "#%s-%s h3" % (kind, name))), name)
        for name in self.spec["actions"]["order"]:
            self.assertIn("POST /actions/" + name, text)
        self.assertEqual(self.browser.evaluate(
            "JSON.parse(document.getElementById('spec').textContent)"),
            self.spec)
        self.assertEqual(self.browser.requested_urls(), [self.origin + "/"])
        self.assert_clean()

    def test_try_it_create_city(self):
        self.load()
        out = self.try_it("model-City", "create",
                          body='{"name": "Lisbon", "country": "Portugal"}')
        self.assertIn("POST /City\n", out)
        self.assertIn("HTTP 201 Created", out)
        location = re.search(r"^Location: (/City/\d+)$", out, re.M)
        self.assertIsNotNone(location, out)
        location = location.group(1)
        shown = json.loads(out.split("\n\n", 2)[2])
        self.assertEqual(shown["name"], "Lisbon")
        self.assertEqual(shown["country"], "Portugal")
        self.assertEqual(shown["_links"]["self"], {"href": location})
        self.assertEqual(self.browser.evaluate(
            "document.querySelector('#model-City "
            "form.try[data-kind=\"create\"] .out').hidden"), False)
        self.assert_clean()
        # the city is there for any client
        status, _, body = _http_json(self.port, "GET", "/City?name=Lisbon")
        self.assertEqual(status, 200, body)
        listing = json.loads(body.decode("utf-8"))
        self.assertEqual(listing["total_count"], 1)
        [city] = listing["_embedded"]["City"]
        self.assertEqual((city["name"], city["country"]),
                         ("Lisbon", "Portugal"))
        self.assertEqual(city["_links"]["self"], {"href": location})
        status, _, body = _http_json(self.port, "GET", location)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body.decode("utf-8")), shown)

    def test_try_it_refused_create_shows_the_error(self):
        self.load()
        out = self.try_it("model-City", "create", body='{"name": "lisbon"}')
        self.assertIn("HTTP 400", out)
        self.assertIn("capitalized", out)
        status, _, body = _http_json(self.port, "GET", "/City?name=lisbon")
        self.assertEqual(json.loads(body.decode("utf-8"))["total_count"], 0)
        errors = self.browser.console_errors()
        self.assertEqual(len(errors), 1, errors)  # Chromium logs the 400
        self.assertIn("status of 400", errors[0])
        self.assertEqual(self.browser.csp_violations(), [])


# -- Contract diff ------------------------------------------------------------
# cosmic.diff: verdicts, in practice, and the command.


class TestDiffVerdicts(unittest.TestCase):
    """diff() names each kind of change with the table's verdict."""

    def test_each_kind_of_change(self):
        for label, old, new, kind, verdict, direction in _DF_ALL_CASES:
            with self.subTest(label):
                changes = cosmic.diff(old, new)
                kinds = [c.kind for c in changes]
                self.assertIn(kind, kinds)
                worst = max((c.verdict for c in changes), key=[
                    "info", "compatible", "breaking"].index)
                self.assertEqual(worst, verdict, changes)
                breaks = set()
                for change in changes:
                    breaks.update(filter(None, change.direction.split(",")))
                self.assertEqual(breaks, set(filter(None,
                                                    direction.split(","))))

    def test_every_rule_is_covered(self):
        tested = {case[3] for case in _DF_ALL_CASES}
        rules = {row[0] for row in cosmic._DIFF_RULES}
        # These have tests of their own (a homepage, unknown schema keys;
        # authentication: TestReviewAuthSpecDiff).
        self.assertEqual(rules - tested, {"homepage-changed",
                                          "schema-changed"} | {
            row[0] for row in cosmic._DIFF_RULES
            if row[0].startswith(("scheme-", "requires-"))})
        self.assertGreaterEqual(len(_DF_ALL_CASES), 100)

    def test_identical_specs_have_no_changes(self):
        for _, old, new, _, _, _ in _DF_ALL_CASES:
            self.assertEqual(cosmic.diff(old, old), [])
            self.assertEqual(cosmic.diff(new, copy.deepcopy(new)), [])

    def test_change_fields_and_text(self):
        old = _df_action(accepts=_df_struct(("a", _DF_I, True)))
        new = _df_action(accepts=_df_struct(("a", _DF_I, True),
                                            ("b", _DF_S, True)))
        [change] = cosmic.diff(old, new)
        self.assertEqual(change.as_json(), {
            "path": "actions.f accepts ['b']",
            "kind": "field-added-required", "verdict": "breaking",
            "message": "added, required: String; senders leave it out",
            "direction": "request"})
        self.assertEqual(str(change), (
            "breaking   actions.f accepts ['b']  field-added-required: "
            "added, required: String; senders leave it out "
            "(breaks requests)"))
        [change] = cosmic.diff(_df_action(returns=_DF_S),
                               _df_action(returns=dict(_DF_S, enum=["a"])))
        self.assertEqual(change.path, "actions.f returns")
        self.assertEqual(change.message, "enum None -> ['a']")

    def test_homepage_changes_are_info(self):
        old = _df_spec()
        new = dict(_df_spec(), homepage="https://example.com")
        self.assertEqual(cosmic.diff(old, new), [cosmic.Change(
            "homepage", "homepage-changed", "info",
            "None -> 'https://example.com'", "")])

    def test_tolerated_additions_carry_the_strict_note(self):
        [change] = cosmic.diff(
            _df_action(returns=_df_struct(("a", _DF_I, True))),
            _df_action(returns=_df_struct(("a", _DF_I, True),
                                          ("b", _DF_I, False))))
        self.assertEqual(change.verdict, "compatible")
        self.assertIn("clients of the original Cosmic (strict) refuse it",
                      change.message)
        [change] = cosmic.diff(
            _df_action(accepts=_df_struct(("a", _DF_I, True))),
            _df_action(accepts=_df_struct(("a", _DF_I, True),
                                          ("b", _DF_I, False))))
        self.assertEqual(change.message, "added, optional: Integer")

    def test_sides_may_be_apis_clients_or_native_specs(self):
        api = API("dfsides")

        @api.action(returns=Integer)
        def one():
            return 1

        spec_json = APISpec.to_json(api.spec)
        client = WsgiAPIClient(Server(api).wsgi_app)
        self.assertEqual(cosmic.diff(api, spec_json), [])
        self.assertEqual(cosmic.diff(client, api.spec), [])
        with self.assertRaises(SpecError):
            cosmic.diff({"name": "x"}, spec_json)
        with self.assertRaises(SpecError):
            cosmic.diff(3, spec_json)
        broken = copy.deepcopy(spec_json)
        broken["actions"]["map"]["one"] = "oops"
        with self.assertRaises(SpecError) as cm:
            cosmic.diff(spec_json, broken)
        self.assertEqual(str(cm.exception), "Not a valid spec: an entry "
                         "has the wrong shape")

    def test_models_sent_to_actions_are_compared_as_requests(self):
        def spec(*properties):
            out = _df_spec(
                {"f": {"accepts": {"type": "cosmic.Patch",
                                   "param": "dft.Thing"}}},
                {"Thing": _df_model(properties=properties,
                                    methods=["get_by_id"])})
            return out
        old = spec(("a", _DF_I, True), ("b", _DF_I, False))
        [change] = cosmic.diff(old, spec(("a", _DF_I, True)))
        self.assertEqual((change.kind, change.verdict, change.direction),
                         ("property-removed-optional", "breaking",
                          "request"))
        read_only = copy.deepcopy(old)
        del read_only["actions"]["map"]["f"]["accepts"]
        new = copy.deepcopy(read_only)
        del new["models"]["map"]["Thing"]["properties"]["map"]["b"]
        new["models"]["map"]["Thing"]["properties"]["order"].remove("b")
        [change] = cosmic.diff(read_only, new)
        self.assertEqual(change.verdict, "compatible")

    def test_enum_values_compare_as_json(self):
        old = _df_action(returns=dict(_DF_JSON, enum=[1, "a"]))
        new = _df_action(returns=dict(_DF_JSON, enum=[1, True, "a"]))
        [change] = cosmic.diff(old, new)
        self.assertEqual((change.kind, change.message),
                         ("enum-value-added",
                          "enum adds [True]; receivers do not know it"))

    def test_unknown_schema_keys_are_breaking(self):
        old = _df_action(returns=_DF_I)
        new = _df_action(returns=dict(_DF_I, format="int64"))
        [change] = cosmic.diff(old, new)
        self.assertEqual((change.kind, change.verdict, change.direction),
                         ("schema-changed", "breaking", "response"))
        custom = _df_action(returns={"type": "shop.Money", "param": "EUR"})
        [change] = cosmic.diff(custom, _df_action(
            returns={"type": "shop.Money", "param": "USD"}))
        self.assertEqual((change.kind, change.message), (
            "schema-changed", "param 'EUR' -> 'USD'; a key or parameter "
            "diff does not know changed"))
        old, new = _df_thing(), _df_thing()
        new["models"]["map"]["Thing"]["create_required"] = ["a"]
        [change] = cosmic.diff(old, new)
        self.assertEqual((change.path, change.kind, change.verdict),
                         ("models.Thing create_required", "schema-changed",
                          "breaking"))

    def test_readme_lists_the_rules(self):
        with open(os.path.join(_ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        cells = {"-": "\u2014", "tolerated": "compatible\u00b9",
                 "breaking": "**breaking**"}
        section = readme[readme.index("## Contract changes"):]
        section = section[:section.index("\n## ")]
        rows = [line for line in section.splitlines()
                if line.startswith("| `")]
        self.assertEqual(rows, [
            "| `%s` | %s | %s | %s |" % (kind, cells.get(request, request),
                                         cells.get(response, response), note)
            for kind, request, response, note in cosmic._DIFF_RULES])

    def test_the_rules_table_reads_as_one_table(self):
        for kind, request, response, note in cosmic._DIFF_RULES:
            with self.subTest(kind):
                self.assertRegex(kind, r"^[a-z]+(-[a-z]+)*$")
                for verdict in (request, response):
                    self.assertIn(verdict, ("breaking", "compatible", "info",
                                            "tolerated", "-"))
                if "breaking" in (request, response):
                    self.assertTrue(note, kind)


class TestDiffInPractice(unittest.TestCase):
    """Each verdict holds when calls generated from OLD's spec, by a client
    built from OLD, meet a server built from NEW whose handlers return
    valid values of NEW's types."""

    def test_each_kind_of_change(self):
        constraints = _df_has_constraints()
        create_requires = _df_has_create_requires()
        checked = 0
        for label, old, new, kind, verdict, direction in _DF_ALL_CASES:
            # Spec JSON only until this cosmic's schemas carry them:
            if kind.startswith(("constraint", "pattern", "enum", "message")) \
                    and not constraints:
                continue
            if kind.startswith("create-required") and not create_requires:
                continue
            with self.subTest(label):
                expected = set(filter(None, direction.split(",")))
                self.assertEqual(_df_practice(old, new), expected)
                if verdict == "compatible":
                    self.assertEqual(_df_practice(old, old), set())
                checked += 1
        self.assertGreaterEqual(checked, 40)

    def test_the_probe_sees_breaks(self):
        # The harness itself: an unchanged spec passes, a narrowed input
        # and a widened result fail where they should.
        same = _df_action(accepts=_DF_F, returns=_DF_F)
        self.assertEqual(_df_practice(same, same), set())
        self.assertEqual(_df_practice(same, _df_action(accepts=_DF_I,
                                                       returns=_DF_F)),
                         {"request"})
        narrow = _df_action(accepts=_DF_I, returns=_DF_I)
        self.assertEqual(_df_practice(narrow, _df_action(accepts=_DF_I,
                                                         returns=_DF_F)),
                         {"response"})


class TestDiffCommand(unittest.TestCase):
    """python -m cosmic diff OLD NEW."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp()
        cls.v2 = _df_places_v2(cls.tmp)
        cls.v1 = os.path.join("examples", "places.py")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def test_two_versions_of_places(self):
        code, out, err = _df_cli(self.v1, self.v2)
        self.assertEqual((code, err), (1, ""))
        self.assertEqual(out.splitlines(), [
            "compatible models.City properties ['area']  property-added: "
            "added, optional: Integer; clients of the original Cosmic "
            "(strict) refuse it",
            "breaking   models.City query_fields ['country']  "
            "query-field-removed: removed (was optional); the server "
            "ignores it: the filter silently stops applying (breaks "
            "requests)",
            "breaking   models.City create_requires ['country']  "
            "create-required-added: creates must carry it; creates that "
            "leave it out are refused (breaks requests)",
        ])

    def test_identical_specs_print_nothing(self):
        spec = os.path.join(self.tmp, "released-spec.json")
        with open(spec, "w", encoding="utf-8") as f:
            json.dump(APISpec.to_json(_df_places_api().spec), f)
        for old, new in ((self.v1, self.v1), (spec, self.v1),
                         (spec, "examples.places:places")):
            with self.subTest(old=old, new=new):
                self.assertEqual(_df_cli(old, new), (0, "", ""))

    def test_formats(self):
        code, out, _ = _df_cli(self.v1, self.v2, "--format", "json")
        self.assertEqual(code, 1)
        changes = json.loads(out)
        self.assertEqual([c["kind"] for c in changes], [
            "property-added", "query-field-removed",
            "create-required-added"])
        self.assertEqual([c["direction"] for c in changes],
                         ["", "request", "request"])
        code, out, _ = _df_cli(self.v1, self.v2, "--format", "markdown")
        lines = out.splitlines()
        self.assertEqual(lines[:2], ["| Verdict | Where | Kind | Change |",
                                     "| --- | --- | --- | --- |"])
        self.assertEqual(lines[4], (
            "| **breaking** (request) | `models.City create_requires "
            "['country']` | create-required-added | creates must carry it; "
            "creates that leave it out are refused |"))
        self.assertEqual(len(lines), 5)
        self.assertEqual(_df_cli(self.v1, self.v1, "--format", "json"),
                         (0, "[]\n", ""))

    def test_fail_on_compatible(self):
        old = os.path.join(self.tmp, "old.json")
        new = os.path.join(self.tmp, "new.json")
        with open(old, "w", encoding="utf-8") as f:
            json.dump(_df_spec(), f)
        with open(new, "w", encoding="utf-8") as f:
            json.dump(_df_action(returns=_DF_I), f)
        code, out, _ = _df_cli(old, new)
        self.assertEqual((code, out), (
            0, "compatible actions.f  action-added: added\n"))
        self.assertEqual(_df_cli(old, new, "--fail-on", "compatible")[0], 1)
        self.assertEqual(_df_cli(old, old, "--fail-on", "compatible"),
                         (0, "", ""))

    def test_two_versions_with_siblings_load_apart(self):
        # Each version imports its own sibling module of the same name:
        # loaded in one process, the second would get the first's.
        app = ("from cosmic.api import API\n"
               "from shapes import RETURNS\n"
               "shop = API('shop')\n"
               "def price():\n"
               "    return 1\n"
               "shop.action(returns=RETURNS)(price)\n")
        for version, type_name in (("old", "Integer"), ("new", "Float")):
            folder = os.path.join(self.tmp, version)
            os.mkdir(folder)
            with open(os.path.join(folder, "app.py"), "w") as f:
                f.write(app)
            with open(os.path.join(folder, "shapes.py"), "w") as f:
                f.write("from cosmic.types import %s as RETURNS\n"
                        % type_name)
        code, out, err = _df_cli(os.path.join(self.tmp, "old", "app.py"),
                                 os.path.join(self.tmp, "new", "app.py"))
        self.assertEqual((code, err), (1, ""))
        self.assertEqual(out, (
            "breaking   actions.price returns  type-widened: Integer -> "
            "Float; accepts every old value, and more (breaks responses)\n"))

    def test_usage_errors_are_one_line(self):
        bad = os.path.join(self.tmp, "bad.json")
        with open(bad, "w", encoding="utf-8") as f:
            f.write('{"name": "x"}')
        broken = os.path.join(self.tmp, "broken.json")
        with open(broken, "w", encoding="utf-8") as f:
            f.write('{"name": ')
        for args, message in (
                (("nope.json", self.v1), "No such file: nope.json"),
                ((bad, self.v1), "%s does not hold a Cosmic spec" % bad),
                ((broken, self.v1), "%s is not valid JSON" % broken),
                ((self.v1, "no_such_module_here"),
                 "No module named no_such_module_here"),
                ((self.v1,), None),
                ((self.v1, self.v1, "--format", "yaml"), None)):
            with self.subTest(args=args):
                code, out, err = _df_cli(*args)
                self.assertEqual((code, out), (2, ""))
                self.assertNotIn("Traceback", err)
                if message is not None:
                    self.assertEqual(err, "cosmic: error: %s\n" % message)

    def test_url_sides_send_headers(self):
        api = _df_places_api()
        inner = Server(api).wsgi_app

        def guarded(environ, start_response):
            if environ.get("HTTP_X_KEY") != "k":
                body = b'{"error": "Unauthorized"}'
                start_response("401 Unauthorized", [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body)))])
                return [body]
            return inner(environ, start_response)

        server = _hs_start(guarded)
        try:
            url = "http://127.0.0.1:%d" % server.server_address[1]
            self.assertEqual(_df_cli(url, self.v1, "--header", "X-Key: k"),
                             (0, "", ""))
            code, out, err = _df_cli(self.v2, url, "--header", "X-Key: k")
            self.assertEqual(code, 1)
            self.assertIn("property-removed-optional", out)
            self.assertEqual(_df_cli(url, self.v1),
                             (1, "", "cosmic: HTTP 401: Unauthorized\n"))
        finally:
            server.shutdown()
            server.server_close()


# -- Testing helpers and import paths -----------------------------------------
# cosmic.testing, the alias modules and the public names.


class TestImportPaths(unittest.TestCase):
    def _ty_python(self, code, *args, **kwargs):
        proc = _python(["-c", textwrap.dedent(code)] + list(args), **kwargs)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        return proc.stdout

    def test_import_cosmic_types(self):
        out = self._ty_python("""
            import cosmic.types
            import cosmic
            print(cosmic.types.Integer is cosmic.Integer,
                  cosmic.types.Integer.from_json(1.0))
            """)
        self.assertEqual(out, "True 1\n")

    def test_star_import_of_types(self):
        out = self._ty_python("""
            import json
            names = {}
            exec("from cosmic.types import *", names)
            import cosmic.types
            print(json.dumps([sorted(n for n in names if n != "__builtins__"),
                              cosmic.types.__all__]))
            """)
        star, all_names = json.loads(out)
        self.assertEqual(star, sorted(_TY_TYPES_ALL))
        self.assertEqual(all_names, _TY_TYPES_ALL)

    def test_types_extra_names(self):
        out = self._ty_python("""
            from cosmic.types import (UnicodeDecodeValidationError,
                                      UnknownTypeValidationError)
            print(UnknownTypeValidationError.__name__,
                  UnicodeDecodeValidationError.__name__)
            """)
        self.assertEqual(
            out, "UnknownTypeValidationError UnicodeDecodeValidationError\n")

    def test_from_cosmic_api_import_api(self):
        out = self._ty_python("""
            from cosmic.api import API, BaseAPI, Object
            import cosmic
            print(API is cosmic.API, issubclass(API, BaseAPI), Object.__name__)
            """)
        self.assertEqual(out, "True True Object\n")

    def test_import_module_before_the_parent(self):
        out = self._ty_python("""
            import importlib, sys
            assert "cosmic" not in sys.modules
            http = importlib.import_module("cosmic.http")
            print(http is sys.modules["cosmic.http"],
                  http is sys.modules["cosmic"].http, http.Server.__name__)
            """)
        self.assertEqual(out, "True True Server\n")

    def test_star_import_of_http(self):
        out = self._ty_python("""
            import json
            names = {}
            exec("from cosmic.http import *", names)
            print(json.dumps(sorted(names)))
            """)
        names = set(json.loads(out))
        expected = set(_TY_PATHS["http"]) | set(_TY_TYPES_ALL) | {
            "NotFound", "HTTPError", "RemoteHTTPError", "SpecError",
            "ValidationError", "Request", "Response"}
        self.assertEqual(sorted(expected - names), [])

    def test_every_alias_module(self):
        out = self._ty_python("""
            import json, sys
            import cosmic
            report = {}
            for short in %r:
                full = "cosmic." + short
                module = sys.modules[full]
                all_names = getattr(module, "__all__", None)
                report[short] = [
                    module is getattr(cosmic, short),
                    module.__name__,
                    module.__spec__.name,
                    type(all_names).__name__,
                    [n for n in all_names or [] if not hasattr(module, n)],
                    [n for n in all_names or []],
                ]
            print(json.dumps([report, cosmic.MODEL_METHODS]))
            """ % (sorted(_TY_PATHS),))
        report, methods = json.loads(out)
        self.assertEqual(methods,
                         ["get_by_id", "get_list", "create", "update", "delete"])
        self.assertEqual(sorted(report), sorted(_TY_PATHS))
        for short, names in _TY_PATHS.items():
            with self.subTest(module=short):
                same, name, spec_name, all_type, unresolved, all_names = \
                    report[short]
                full = "cosmic." + short
                self.assertEqual([same, name, spec_name, all_type, unresolved],
                                 [True, full, full, "list", []])
                self.assertEqual(sorted(set(names) - set(all_names)), [])

    def test_model_methods(self):
        self.assertEqual(cosmic.MODEL_METHODS,
                         ["get_by_id", "get_list", "create", "update",
                          "delete"])

    def test_cosmic_py_alone_in_an_isolated_interpreter(self):
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        shutil.copy(os.path.join(_ROOT, "cosmic.py"), folder)
        proc = _python(["-I", "-S", "-c", textwrap.dedent("""
            import os, sys
            sys.path.insert(0, sys.argv[1])
            import cosmic, cosmic.types
            from cosmic.http import *
            print(cosmic.__file__ == os.path.join(sys.argv[1], "cosmic.py"),
                  cosmic.types.Array(Integer).from_json([1.0]),
                  sorted(set(sys.modules) & set(%r)))
            """ % (_TY_LAZY,)), folder], cwd=folder, pythonpath=False)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout, "True [1] []\n")
        self.assertEqual(sorted(n for n in os.listdir(folder)
                                if n != "__pycache__"), ["cosmic.py"])

    def test_heavy_modules_are_imported_lazily(self):
        # -S: no site-packages, whose .pth files could import these first.
        proc = _python(["-S", "-c", textwrap.dedent("""
            import json, sys
            import cosmic
            print(json.dumps(sorted(set(sys.modules) & set(%r))))
            """ % (_TY_LAZY,))])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(json.loads(proc.stdout), [])

    def test_python_m_cosmic_help(self):
        proc = _python(["-m", "cosmic", "--help"])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertTrue(proc.stdout.startswith("usage: python -m cosmic"),
                        proc.stdout)

    def test_python_m_cosmic_shares_the_classes_of_import_cosmic(self):
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        target = os.path.join(folder, "ty_target.py")
        with open(target, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent('''
                import sys
                from cosmic.api import API
                from cosmic.types import Integer
                assert sys.modules["cosmic"].API is API
                assert sys.modules["cosmic.types"].Integer is Integer
                api = API("ty_target")

                @api.action(accepts=Integer, returns=Integer)
                def double(n):
                    """Twice n."""
                    return n * 2
                '''))
        proc = _python(["-m", "cosmic", "spec", target], cwd=folder)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(json.loads(proc.stdout), {
            "name": "ty_target",
            "actions": {"map": {"double": {"accepts": {"type": "Integer"},
                                           "returns": {"type": "Integer"},
                                           "doc": "Twice n."}},
                        "order": ["double"]},
            "models": {"map": {}, "order": []}})

    def _ty_source(self):
        with open(os.path.join(_ROOT, "cosmic.py"), encoding="utf-8") as f:
            return f.read()

    def test_parses_as_python_3_9(self):
        tree = ast.parse(self._ty_source(), feature_version=(3, 9))
        self.assertIsInstance(tree, ast.Module)

    def test_imports_only_the_standard_library(self):
        stdlib = getattr(sys, "stdlib_module_names", None)
        if stdlib is None:
            self.skipTest("sys.stdlib_module_names needs Python 3.10+")
        names = set()
        relative = []
        for node in ast.walk(ast.parse(self._ty_source())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    relative.append(node.module)
                else:
                    names.add(node.module.split(".")[0])
        self.assertEqual(relative, [])
        # "cosmic" itself: the python -m cosmic guard imports the real module.
        self.assertEqual(sorted(names - set(stdlib) - {"cosmic"}), [])
        self.assertIn("json", names)


class TestPublicNames(unittest.TestCase):
    """One table gives cosmic.__all__ and the alias modules' names."""

    def test_star_import_of_cosmic(self):
        names = {}
        exec("from cosmic import *", names)
        self.assertEqual(sorted(set(cosmic.__all__) - set(names)), [])
        self.assertEqual(len(cosmic.__all__), len(set(cosmic.__all__)))

    def test_every_table_name_is_defined_once(self):
        seen = []
        for names, where in cosmic._PUBLIC:
            seen += names.split()
            for name in names.split():
                self.assertTrue(hasattr(cosmic, name), name)
                for short in where.split():
                    if short != "cosmic":
                        module = getattr(cosmic, short.strip("()"))
                        self.assertIs(getattr(module, name),
                                      getattr(cosmic, name))
        self.assertEqual(len(seen), len(set(seen)))


# -- Command line -------------------------------------------------------------
# python -m cosmic serve|call|spec|openapi.


class TestServeHTTP(unittest.TestCase):
    def start(self, target):
        """Serve target on a free port; return (name, host, port, server)."""
        server = _Serve(target, test=self)
        return server.name, server.host, server.port, server

    def request(self, method, path, body=b"", headers=None):
        return _http((self.host, self.port), method, path,
                     list((headers or {}).items()), body, close=False)

    def test_serve_words(self):
        name, self.host, self.port, server = self.start("examples/words.py")
        self.assertEqual((name, self.host), ("words", "127.0.0.1"))
        status, headers, body = self.request(
            "POST", "/actions/pluralize", b'"pencil"', _SV_JSON)
        self.assertEqual((status, body), (200, b'"pencils"'))
        self.assertEqual((headers["content-type"], headers["content-length"]),
                         ("application/json", "9"))
        status, headers, body = self.request("GET", "/spec.json")
        self.assertEqual(status, 200)
        spec = json.loads(body)
        self.assertEqual(body, json.dumps(spec).encode())
        self.assertEqual((spec["name"], spec["actions"]["order"],
                          spec["models"]),
                         ("words", ["pluralize"], {"map": {}, "order": []}))
        self.assertEqual(
            {k: v for k, v in spec["actions"]["map"]["pluralize"].items()
             if k != "doc"},
            {"accepts": {"type": "String"}, "returns": {"type": "String"}})
        status, _, body = self.request("POST", "/actions/pluralize", b"1",
                                       _SV_JSON)
        self.assertEqual((status, body), (400, _sv_err("Invalid String: 1")))
        status, _, body = self.request("GET", "/no/such/path")
        self.assertEqual((status, body), (404, _sv_err("Not Found")))
        status, headers, body = self.request("PUT", "/spec.json")
        self.assertEqual((status, body), (405, _sv_err("Method Not Allowed")))
        self.assertEqual(_sv_allow(headers), {"GET", "HEAD", "OPTIONS"})
        self.assertEqual(server.stop(), 0)  # SIGTERM: a clean exit
        self.assertNotIn("Traceback", server.stderr_text())

    def test_bad_targets(self):
        with tempfile.TemporaryDirectory() as folder:
            no_api = os.path.join(folder, "sv_no_api.py")
            with open(no_api, "w") as f:
                f.write("x = 1\n")
            two_apis = os.path.join(folder, "sv_two_apis.py")
            with open(two_apis, "w") as f:
                f.write("from cosmic.api import API\n"
                        "one = API('one')\ntwo = API('two')\n")
            broken = os.path.join(folder, "sv_broken.py")
            with open(broken, "w") as f:
                f.write("x = 1\nraise ValueError('boom')\n")
            syntax = os.path.join(folder, "sv_syntax.py")
            with open(syntax, "w") as f:
                f.write("x = (\n")
            table = [("nope.py", "nope.py"),
                     ("examples/words.py:nothing", "nothing"),
                     ("no_such_module_xyz", "No module named"),
                     (no_api, "No API"), (two_apis, "one, two"),
                     (broken, "ValueError: boom (%s, line 2)" % broken),
                     (syntax, "Cannot import %s: SyntaxError" % syntax)]
            for target, fragment in table:
                with self.subTest(target=target):
                    code, err = _sv_cli("serve", target, "--port", "0")
                    self.assertEqual(code, 2)
                    lines = err.strip().splitlines()
                    self.assertEqual(len(lines), 1, err)
                    self.assertIn(fragment, lines[0])
                    self.assertNotIn("Traceback", err)


class TestServeTargets(unittest.TestCase):
    """What ``serve`` accepts, and what it says it serves."""

    def setUp(self):
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)

    def write(self, name, text):
        path = os.path.join(self.folder, name)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def test_neither_api_server_nor_wsgi_app_is_refused(self):
        path = self.write("things.py", """\
            from cosmic.api import API
            api = API("things")
            def one(environ):
                return []
            number = 3
            """)
        for target in ("examples/places.py:City", path + ":one",
                       path + ":number"):
            with self.subTest(target=target):
                code, err = _sv_cli("serve", target, "--port", "0")
                self.assertEqual(code, 2)
                self.assertEqual(err, (
                    "cosmic: error: %s is not an API, a Server or a WSGI app"
                    " (a callable taking environ and start_response)\n"
                    % target))

    def test_a_file_named_like_a_stdlib_module(self):
        for name in ("json.py", "socket.py"):
            with self.subTest(name=name):
                folder = tempfile.mkdtemp()
                self.addCleanup(shutil.rmtree, folder)
                path = os.path.join(folder, name)
                shutil.copy(os.path.join(_ROOT, "examples", "words.py"), path)
                line = _Serve(path, test=self, timeout=20, check=False).first_line
                match = _SV_SERVING.match(line)
                self.assertIsNotNone(match, line)
                self.assertEqual(match.group(1), "words")
                client = APIClient("http://%s:%s" % (match.group(2),
                                                     match.group(3)))
                self.addCleanup(client.close)
                self.assertEqual(client.actions.pluralize("pencil"),
                                 "pencils")

    def test_loading_it_in_process_replaces_nothing(self):
        path = self.write("json.py", "from cosmic.api import API\n"
                          "api = API('shadow')\n")
        before = sys.modules["json"]
        with cosmos.swap({}):
            module = cosmic._load_module(path)
            self.assertIs(sys.modules["json"], before)
            self.assertIsNot(module, before)
            self.assertEqual(module.api.name, "shadow")
        self.assertNotEqual(sys.path[0], self.folder)

    def test_a_wrapped_server_is_announced_by_its_api(self):
        path = self.write("wrapped.py", """\
            import functools
            import cosmic
            from cosmic.api import API
            api = API("wrapped_api")

            @api.action(returns=cosmic.String)
            def hi():
                return "hi"

            plain = cosmic.Server(api).wsgi_app
            wsgi_app = cosmic.thread_local_middleware(plain)

            @functools.wraps(plain)
            def logged(environ, start_response):
                return plain(environ, start_response)

            def other(environ, start_response):
                start_response("200 OK", [("Content-Length", "2")])
                return [b"ok"]
            """)
        for attr, name in (("plain", "wrapped_api"),
                           ("wsgi_app", "wrapped_api"),
                           ("logged", "wrapped_api"), ("other", "other")):
            with self.subTest(attr=attr):
                line = _Serve("%s:%s" % (path, attr), test=self, timeout=20,
                              check=False).first_line
                match = _SV_SERVING.match(line)
                self.assertIsNotNone(match, line)
                self.assertEqual(match.group(1), name)


class TestCommandLine(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with cosmos.swap({}):
            api = _cli_api()
        cls.served = served_api(api)
        cls.url = cls.served.__enter__()
        cls.addClassCleanup(cls.served.__exit__, None, None, None)
        cls.secured = _ThreadServer(_cli_AuthServer(api).wsgi_app)
        cls.addClassCleanup(cls.secured.close)

    def run_main(self, *args, stdin=""):
        out, err = io.StringIO(), io.StringIO()
        with mock.patch("sys.stdin", io.StringIO(stdin)), \
                contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err), cosmos.swap({}):
            code = cosmic.main(list(args))
        return code, out.getvalue(), err.getvalue()

    def test_call_an_action_in_a_subprocess(self):
        proc = subprocess.run(
            [sys.executable, "-m", "cosmic", "call", self.url, "pluralize",
             '"pencil"'], cwd=_ROOT, capture_output=True, text=True,
            timeout=60)
        self.assertEqual((proc.returncode, proc.stdout, proc.stderr),
                         (0, '"pencils"\n', ""))

    def test_call_actions(self):
        self.assertEqual(self.run_main("call", self.url, "add", "[1, 2, 3]"),
                         (0, "6\n", ""))
        self.assertEqual(self.run_main("call", self.url, "add", "-",
                                       stdin="[4, 5]"), (0, "9\n", ""))
        self.assertEqual(self.run_main("call", self.url, "ping"),
                         (0, "", ""))

    def test_call_model_methods(self):
        code, out, err = self.run_main("call", self.url, "City.create",
                                       '{"name": "Faro"}')
        self.assertEqual((code, err), (0, ""))
        created = json.loads(out)
        ident = created["_links"]["self"]["href"].rsplit("/", 1)[1]
        self.assertEqual(created["name"], "Faro")
        code, out, _ = self.run_main("call", self.url, "City.get_by_id", ident)
        self.assertEqual((code, json.loads(out)), (0, created))
        code, out, _ = self.run_main("call", self.url, "City.update", ident,
                                     '{"name": "Braga"}')
        self.assertEqual(json.loads(out)["name"], "Braga")
        code, out, _ = self.run_main("call", self.url, "City.get_list",
                                     '{"name": "Braga"}')
        listing = json.loads(out)
        self.assertEqual(listing["metadata"], {"total": 1})
        self.assertEqual([c["name"] for c in listing["items"]], ["Braga"])
        self.assertEqual(self.run_main("call", self.url, "City.delete",
                                       ident), (0, "", ""))
        self.assertEqual(self.run_main("call", self.url, "City.get_by_id",
                                       ident),
                         (1, "", "cosmic: HTTP 404: Not Found\n"))

    def test_http_errors_exit_1_with_the_message(self):
        self.assertEqual(self.run_main("call", self.url, "add", '["x"]'),
                         (2, "", "cosmic: error: Item at [0] Invalid "
                                 "Integer: 'x'\n"))
        code, out, err = self.run_main("call", self.secured.url, "ping")
        self.assertEqual((code, out, err),
                         (1, "", "cosmic: HTTP 401: Unauthorized\n"))

    def test_header_option(self):
        self.assertEqual(
            self.run_main("call", "--header", "Authorization: secret",
                          self.secured.url, "pluralize", '"cat"'),
            (0, '"cats"\n', ""))

    def test_usage_errors_exit_2_with_one_line(self):
        table = [
            (("call", "ftp://x", "ping"), "URL must start with http"),
            (("call", self.url, "nope"), "No action 'nope'"),
            (("call", self.url, "add"), "needs a JSON argument"),
            (("call", self.url, "add", "[1", ), "Not valid JSON"),
            (("call", self.url, "City.fly"), "No model method"),
            (("call", self.url, "City.create"), "create takes one JSON"),
            (("call", "--header", "nocolon", self.url, "ping"),
             "--header must look like"),
            (("spec", "no_such_module_xyz"), "No module named"),
        ]
        for args, fragment in table:
            with self.subTest(args=args):
                code, out, err = self.run_main(*args)
                self.assertEqual(code, 2)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn(fragment, err)

    def test_spec_and_openapi_of_a_url(self):
        code, out, _ = self.run_main("spec", self.url)
        spec = json.loads(out)
        self.assertEqual(spec["name"], "cli_words")
        self.assertEqual(spec["actions"]["order"], ["pluralize", "add",
                                                    "ping"])
        code, out, _ = self.run_main("openapi", self.url)
        doc = json.loads(out)
        self.assertEqual(doc["servers"], [{"url": self.url}])
        self.assertIn("/actions/pluralize", doc["paths"])

    def test_unreachable_server_exits_1(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        code, out, err = self.run_main("call", "http://127.0.0.1:%d" % port,
                                       "ping")
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(err.startswith("cosmic: error: "), err)


class TestAuthCommandLine(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.served = served_api(_au_api(protect_spec=True))
        cls.url = cls.served.__enter__()
        cls.addClassCleanup(cls.served.__exit__, None, None, None)

    def run_main(self, *args, stdin="", env=None):
        out, err = io.StringIO(), io.StringIO()
        with mock.patch("sys.stdin", io.StringIO(stdin)), \
                mock.patch.dict(os.environ, env or {}), \
                contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err), cosmos.swap({}):
            code = cosmic.main(list(args))
        return code, out.getvalue(), err.getvalue()

    def test_token_from_env_stdin_or_literal(self):
        for args, stdin in ((["--token", "env:AU_TOKEN"], ""),
                            (["--token", "-"], _AU_TOKEN + "\n"),
                            (["--token", _AU_TOKEN], ""),
                            (["--api-key", "env:AU_TOKEN"], "")):
            with self.subTest(args=args):
                self.assertEqual(
                    self.run_main("call", *args, self.url, "whoami",
                                  stdin=stdin, env={"AU_TOKEN": _AU_TOKEN}),
                    (0, '"alice"\n', ""))

    def test_call_without_a_credential_exits_1(self):
        api = _au_api()
        with served_api(api) as url:
            self.assertEqual(self.run_main("call", url, "whoami"), (
                1, "", "cosmic: HTTP 401: Missing credentials: send "
                "Authorization: Bearer <token> or X-Key: <key> or "
                "Authorization: Basic <base64 of user:password>\n"))
            code, out, err = self.run_main(
                "call", "--token", "env:AU_TOKEN", url, "Note.create",
                '{"text": "x"}', env={"AU_TOKEN": _AU_TOKEN})
            self.assertEqual((code, json.loads(out)["text"], err),
                             (0, "x", ""))

    def test_header_still_works(self):
        self.assertEqual(self.run_main(
            "call", "--header", "Authorization: Bearer " + _AU_TOKEN,
            self.url, "whoami"), (0, '"alice"\n', ""))

    def test_spec_and_openapi_of_a_protected_url(self):
        code, out, err = self.run_main("spec", "--token", "env:AU_TOKEN",
                                       self.url, env={"AU_TOKEN": _AU_TOKEN})
        self.assertEqual((code, json.loads(out)["name"], err),
                         (0, "au_zoo", ""))
        code, out, err = self.run_main("openapi", "--api-key", "-", self.url,
                                       stdin=_AU_TOKEN)
        self.assertEqual((code, json.loads(out)["openapi"], err),
                         (0, "3.1.0", ""))
        self.assertEqual(self.run_main("spec", self.url)[0], 1)

    def test_diff_of_protected_urls(self):
        tmp = tempfile.mkdtemp(prefix="cosmic-au-")
        self.addCleanup(shutil.rmtree, tmp, True)
        old = os.path.join(tmp, "old.json")
        code, out, err = self.run_main("spec", "--token", _AU_TOKEN,
                                       self.url)
        self.assertEqual(code, 0, err)
        with open(old, "w") as f:
            f.write(out)
        for args, stdin in ((["--token", "env:AU_TOKEN"], ""),
                            (["--api-key", "-"], _AU_TOKEN)):
            with self.subTest(args=args):
                self.assertEqual(self.run_main(
                    "diff", *args, old, self.url, stdin=stdin,
                    env={"AU_TOKEN": _AU_TOKEN}), (0, "", ""))
                self.assertEqual(self.run_main(
                    "diff", *args, self.url, self.url, stdin=stdin,
                    env={"AU_TOKEN": _AU_TOKEN}), (0, "", ""))
        code, out, err = self.run_main("diff", old, self.url)
        self.assertEqual((code, err.split(":")[:2]), (1, ["cosmic", " HTTP 401"]))
        self.assertEqual(self.run_main("diff", "--token", "x", old, old), (
            2, "", "cosmic: error: --token and --api-key go with a URL\n"))

    def test_usage_errors_never_show_the_secret(self):
        table = [
            (["call", "--token", "env:AU_MISSING", self.url, "whoami"],
             "cosmic: error: --token env:AU_MISSING: the environment "
             "variable AU_MISSING is not set or empty\n"),
            (["call", "--token", "x", "--api-key", "y", self.url, "whoami"],
             "cosmic: error: give --token or --api-key, not both\n"),
            (["call", "--token", "-", self.url, "crash", "-"],
             "cosmic: error: stdin can give the secret or the JSON "
             "argument, not both\n"),
            (["spec", "--token", _AU_TOKEN, "examples/words.py"],
             "cosmic: error: --token and --api-key go with a URL, not "
             "examples/words.py\n"),
            (["call", "--header", "Authorization " + _AU_TOKEN, self.url,
              "whoami"],
             "cosmic: error: --header must look like 'Name: value'; got one "
             "without a colon\n"),
        ]
        for args, message in table:
            with self.subTest(args=args):
                code, out, err = self.run_main(*args)
                self.assertEqual((code, out, err), (2, "", message))
                self.assertNotIn(_AU_TOKEN, err)

    def test_help_lists_the_options(self):
        for command in ("call", "spec", "openapi", "diff"):
            with self.subTest(command=command):
                out = io.StringIO()
                with contextlib.redirect_stdout(out), \
                        self.assertRaises(SystemExit):
                    cosmic.main([command, "--help"])
                self.assertIn("--token SECRET", out.getvalue())
                self.assertIn("--api-key SECRET", out.getvalue())


# -- Examples -----------------------------------------------------------------
# The shipped examples, as a user runs them.


# The shipped examples, as a user runs them: places over real HTTP against
# `python -m cosmic serve` on a temporary database, planetarium in-process.

class TestPlacesExample(unittest.TestCase):
    """examples/places.py served by the CLI on a temporary SQLite file."""

    def setUp(self):
        folder = tempfile.mkdtemp(prefix="cosmic-places-")
        self.addCleanup(shutil.rmtree, folder, True)
        self.env = {"PLACES_DB": os.path.join(folder, "places.db")}

    def serve(self):
        server = _Serve("examples/places.py", env=self.env, test=self)
        return server, server.url

    def test_every_endpoint_success_400_404_405(self):
        proc, url = self.serve()
        cases = [
            ("POST", "/City", {"name": "Lisbon", "country": "Portugal"}, 201,
             {"_links": {"self": {"href": "/City/1"}}, "name": "Lisbon",
              "country": "Portugal"}),
            ("POST", "/City", {"name": "lisbon"}, 400,
             {"error": "Item at ['name'] Name must be capitalized: 'lisbon'"}),
            ("POST", "/City", {"country": "Portugal"}, 400,
             {"error": "Missing fields: ['name']"}),
            ("GET", "/City?limit=250", None, 400,
             {"error": "Item at ['limit'] Must be at most 100: 250"}),
            ("POST", "/City", {"name": 7}, 400,
             {"error": "Item at ['name'] Invalid String: 7"}),
            ("GET", "/City/1", None, 200,
             {"_links": {"self": {"href": "/City/1"}}, "name": "Lisbon",
              "country": "Portugal"}),
            ("GET", "/City/99", None, 404, {"error": "Not Found"}),
            ("PUT", "/City/1", {"population": 545000}, 200,
             {"_links": {"self": {"href": "/City/1"}}, "name": "Lisbon",
              "country": "Portugal", "population": 545000}),
            ("PUT", "/City/99", {"population": 1}, 404,
             {"error": "Not Found"}),
            ("PUT", "/City/1", {"population": "many"}, 400,
             {"error": "Item at ['population'] Invalid Integer: 'many'"}),
            ("GET", "/City?country=Portugal", None, 200,
             {"_links": {"self": {"href": "/City?country=Portugal"}},
              "_embedded": {"City": [
                  {"_links": {"self": {"href": "/City/1"}},
                   "name": "Lisbon", "country": "Portugal",
                   "population": 545000}]},
              "total_count": 1}),
            ("GET", "/City?limit=x", None, 400,
             {"error": "Item at ['limit'] Invalid JSON: 'x'"}),
            ("POST", "/Address", {"number": 7, "street": "Rua Augusta",
                                  "_links": {"city": {"href": "/City/1"}}},
             201, {"_links": {"self": {"href": "/Address/1"},
                              "city": {"href": "/City/1"}},
                   "number": 7, "street": "Rua Augusta"}),
            ("DELETE", "/City/1", None, 409, {"error": "City has addresses"}),
            ("DELETE", "/Address/1", None, 204, None),
            ("DELETE", "/Address/1", None, 404, {"error": "Not Found"}),
            ("PATCH", "/City/1", None, 405, {"error": "Method Not Allowed"}),
            ("POST", "/actions/stats", None, 200,
             {"cities": 1, "addresses": 0}),
        ]
        for method, path, body, status, expected in cases:
            with self.subTest(method=method, path=path, body=body):
                code, headers, payload = _http_json(url, method, path, body)
                self.assertEqual(code, status)
                if expected is None:
                    self.assertEqual(payload, b"")
                    self.assertNotIn("content-type", headers)
                else:
                    self.assertEqual(json.loads(payload), expected)
                if status == 201:
                    self.assertEqual(headers["location"],
                                     expected["_links"]["self"]["href"])
                if status == 405:
                    self.assertEqual(headers["allow"],
                                     "DELETE, GET, HEAD, OPTIONS, PUT")

    def test_data_survives_a_restart(self):
        proc, url = self.serve()
        client = cosmic.connect(url)
        ident, _ = client.models.City.create(name="Porto", population=232000)
        client.models.Address.create(number=1, street="Rua das Flores",
                                     city=ident)
        client.close()
        self.assertEqual(proc.stop(), 0)  # SIGTERM: a clean exit
        proc, url = self.serve()
        client = cosmic.connect(url)
        self.addCleanup(client.close)
        self.assertEqual(client.models.City.get_by_id(ident),
                         {"name": "Porto", "population": 232000})
        self.assertEqual(client.actions.stats(),
                         {"cities": 1, "addresses": 1})

    def test_concurrent_creates_lose_nothing(self):
        proc, url = self.serve()
        created, failures = [], []
        lock = threading.Lock()

        def work(n):
            client = cosmic.connect(url)
            try:
                for i in range(50):
                    ident, rep = client.models.City.create(
                        name="City%d_%d" % (n, i))
                    with lock:
                        created.append(ident)
            except Exception as exc:  # reported below, with the thread
                failures.append((n, exc))
            finally:
                client.close()

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        self.assertEqual(failures, [])
        self.assertEqual(len(set(created)), 400)
        client = cosmic.connect(url)
        self.addCleanup(client.close)
        items, meta = client.models.City.get_list(limit=100, offset=350)
        self.assertEqual(meta, {"total_count": 400})
        self.assertEqual(len(items), 50)
        self.assertEqual(client.actions.stats(), {"cities": 400,
                                                  "addresses": 0})


class TestPlanetariumExample(unittest.TestCase):
    """examples/planetarium.py in-process: a model that links to itself."""

    @classmethod
    def setUpClass(cls):
        spec = importlib.util.spec_from_file_location(
            "cosmic_test_planetarium",
            os.path.join(_ROOT, "examples", "planetarium.py"))
        module = importlib.util.module_from_spec(spec)
        with cosmos.swap({}):
            spec.loader.exec_module(module)
        cls.api = module.planetarium

    def test_self_link_and_list_metadata(self):
        app = Server(self.api).wsgi_app
        status, headers, body = _wsgi(app, "GET", "/Sphere/2")
        self.assertEqual((status, json.loads(body)), (200, {
            "_links": {"self": {"href": "/Sphere/2"},
                       "revolves_around": {"href": "/Sphere/1"}},
            "name": "Moon", "temperature": -50.0}))
        status, headers, body = _wsgi(app, "GET", "/Sphere",
                                         query="name=Sun")
        listing = json.loads(body)
        self.assertEqual(listing["_links"],
                         {"self": {"href": "/Sphere?name=Sun"}})
        self.assertEqual([s["name"] for s in listing["_embedded"]["Sphere"]],
                         ["Sun"])
        self.assertIsInstance(
            DateTime.from_json(listing["last_updated"]), datetime.datetime)


class TestAuthPlaces(unittest.TestCase):
    """examples/places.py: PLACES_TOKEN protects writes, reads stay open."""

    def load(self, env):
        path = os.path.join(_ROOT, "examples", "places.py")
        spec = importlib.util.spec_from_file_location("_au_places", path)
        module = importlib.util.module_from_spec(spec)
        with mock.patch.dict(os.environ, env), cosmos.swap({}):
            spec.loader.exec_module(module)
        return module

    def setUp(self):
        tmp = tempfile.mkdtemp(prefix="cosmic-au-")
        self.addCleanup(shutil.rmtree, tmp, True)
        self.db = os.path.join(tmp, "places.db")

    def test_token_protects_writes(self):
        places = self.load({"PLACES_TOKEN": "s3cret-places",
                            "PLACES_DB": self.db})
        app = places.wsgi_app
        json_type = {"Content-Type": "application/json"}
        body = b'{"name": "Lisbon"}'
        self.assertEqual(_wsgi(app, "POST", "/City", body, json_type)[0],
                         401)
        bad = dict(json_type, Authorization="Bearer wrong")
        self.assertEqual(_wsgi(app, "POST", "/City", body, bad)[0], 401)
        good = dict(json_type, Authorization="Bearer s3cret-places")
        self.assertEqual(_wsgi(app, "POST", "/City", body, good)[0], 201)
        self.assertEqual(_wsgi(app, "GET", "/City/1")[0], 200)
        self.assertEqual(_wsgi(app, "GET", "/City")[0], 200)
        self.assertEqual(_wsgi(app, "POST", "/actions/stats")[0], 200)
        for method, path, data in (
                ("PUT", "/City/1", b'{"population": 1}'),
                ("POST", "/actions/rename_city",
                 b'{"id": "1", "name": "Porto"}'),
                ("DELETE", "/City/1", b"")):
            with self.subTest(method=method, path=path):
                self.assertEqual(_wsgi(app, method, path, data,
                                          json_type if data else {})[0], 401)
                self.assertEqual(_wsgi(app, method, path, data,
                                          good if data else {
                                              "Authorization":
                                              "Bearer s3cret-places"})[0]
                                 // 100, 2)
        client = WsgiAPIClient(app, auth="s3cret-places")
        ident, rep = client.models.City.create(name="Faro")
        self.assertEqual(rep["name"], "Faro")

    def test_unset_everything_is_open(self):
        places = self.load({"PLACES_DB": self.db, "PLACES_TOKEN": ""})
        app = places.wsgi_app
        self.assertEqual(_wsgi(app, "POST", "/City", b'{"name": "Faro"}',
                                  {"Content-Type": "application/json"})[0],
                         201)
        self.assertEqual(_wsgi(app, "DELETE", "/City/1")[0], 204)
        self.assertNotIn("security", openapi(places.places))


class TestScalePlacesSQLite(_sc_PlacesBody, unittest.TestCase):
    """The places body on SQLite (the default back end)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cosmic-sc-")
        cls.path = os.path.join(cls.tmp.name, "places.db")
        cls.load({"PLACES_DB": cls.path})

    @classmethod
    def tearDownClass(cls):
        _close_places(cls.places)
        cls.tmp.cleanup()

    def reset(self):
        with contextlib.closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute("DELETE FROM address")
            conn.execute("DELETE FROM city")
            conn.execute("DELETE FROM sqlite_sequence")

    def rows(self, sql):
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return [tuple(row) for row in conn.execute(sql)]


class TestScalePlacesPostgreSQL(_sc_PlacesBody, unittest.TestCase):
    """The same body on PostgreSQL (PLACES_DATABASE_URL)."""

    @classmethod
    def setUpClass(cls):
        cls.pg = _sc_Postgres()
        try:
            cls.load({"PLACES_DATABASE_URL": cls.pg.url})
        except BaseException:
            cls.pg.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        _close_places(cls.places)
        cls.pg.stop()

    def reset(self):
        self.pg.query("TRUNCATE address, city RESTART IDENTITY")

    def rows(self, sql):
        return [tuple(row) for row in self.pg.query(sql)]


class TestScalePlacesStartCheck(unittest.TestCase):
    """A database that cannot work stops places at start, in one line."""

    def failure(self, env):
        with self.assertRaises(RuntimeError) as caught:
            _load_places(env)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        return message

    def test_sqlite_paths(self):
        with tempfile.TemporaryDirectory(prefix="cosmic-sc-") as tmp:
            missing = os.path.join(tmp, "nowhere", "p.db")
            self.assertEqual(self.failure({"PLACES_DB": missing}),
                             "PLACES_DB=%s: the folder %s does not exist"
                             % (missing, os.path.dirname(missing)))
            self.assertEqual(self.failure({"PLACES_DB": tmp}),
                             "PLACES_DB=%s is a directory, not a database "
                             "file" % tmp)
            junk = os.path.join(tmp, "junk.db")
            with open(junk, "wb") as f:
                f.write(b"not a database" * 100)
            self.assertEqual(self.failure({"PLACES_DB": junk}),
                             "PLACES_DB=%s: cannot open it as SQLite: file "
                             "is not a database" % junk)
            fresh = os.path.join(tmp, "fresh.db")
            _load_places({"PLACES_DB": fresh})
            self.assertFalse(os.path.exists(fresh))  # nothing made yet

    def test_postgres_unreachable_or_driver_missing(self):
        port = _hd_free_port()
        url = "postgresql://places:pw@127.0.0.1:%d/places" % port
        if _psycopg is not None:
            message = self.failure({"PLACES_DATABASE_URL": url})
            self.assertTrue(message.startswith(
                "PLACES_DATABASE_URL: cannot connect to "
                "postgresql://places@127.0.0.1:%d/places: " % port),
                message)
            self.assertNotIn("pw", message.replace("places", ""))
        with mock.patch.dict(sys.modules, {"psycopg": None}):
            self.assertEqual(
                self.failure({"PLACES_DATABASE_URL": url}),
                "PLACES_DATABASE_URL is set, but the PostgreSQL driver is "
                "not installed: pip install 'psycopg[binary]'")
        self.assertEqual(
            self.failure({"PLACES_DATABASE_URL": "mysql://x"}),
            "PLACES_DATABASE_URL must start with postgresql://, got "
            "'mysql://x'")

    def test_cosmic_serve_says_it_in_one_line(self):
        with tempfile.TemporaryDirectory(prefix="cosmic-sc-") as tmp:
            bad = os.path.join(tmp, "no", "p.db")
            done = subprocess.run(
                [sys.executable, "-m", "cosmic", "serve",
                 "examples/places.py", "--port", "0"], cwd=_ROOT,
                env=_hd_child_env(PLACES_DB=bad), capture_output=True,
                text=True, timeout=60)
        self.assertEqual(done.returncode, 2)
        self.assertEqual(done.stdout, "")
        lines = done.stderr.splitlines()
        self.assertEqual(len(lines), 1, done.stderr)
        self.assertIn("PLACES_DB=%s: the folder %s does not exist"
                      % (bad, os.path.dirname(bad)), lines[0])


# -- Hardening, fuzzing and load ----------------------------------------------
# Hostile input, faults in user code, load, production servers, CORS,
# fuzzing, the deployment; the report prints last.


class TestHardeningHostileInput(unittest.TestCase):
    """Hostile requests get a JSON 4xx (or a clean close), in-process and
    over HTTP against `python -m cosmic serve examples/places.py`, and the
    server keeps answering."""

    @classmethod
    def setUpClass(cls):
        _hd_places_tmp(cls)
        try:
            cls.serve = _hd_serve(
                "examples/places.py", os.path.join(cls.tmp.name, "serve.db"))
        except BaseException:
            cls.tmp.cleanup()
            raise
        # City 1 exists on both sides.
        status = _hd_call(cls.app, "POST", "/City", [_JSON],
                          b'{"name": "Paris"}').status
        assert status == 201, status
        status = _http(cls.serve.port, "POST", "/City", [_JSON],
                          b'{"name": "Paris"}').status
        assert status == 201, status

    @classmethod
    def tearDownClass(cls):
        code, err = cls.serve.close()
        _close_places(cls.places)
        cls.tmp.cleanup()
        assert code == 0 and "Traceback" not in err, (code, err[-2000:])

    def check_still_serving(self, where):
        if where == "in-process":
            answer = _hd_call(self.app, "POST", "/actions/stats")
        else:
            answer = _http(self.serve.port, "POST", "/actions/stats")
        self.assertEqual(answer.status, 200, where)
        self.assertEqual(sorted(json.loads(answer.body)),
                         ["addresses", "cities"])

    def check_answer(self, case, answer, status, message, where):
        _hd_note(case["name"], where, answer.status, answer.body,
                 answer.elapsed)
        if isinstance(status, tuple):
            self.assertIn(answer.status, status)
        else:
            self.assertEqual(answer.status, status)
        if answer.status >= 400:
            error = _hd_error(answer)
            if message is not None:
                self.assertEqual(error, message)
        if answer.status == 204:
            self.assertEqual(answer.body, b"")
            self.assertNotIn("content-type", answer.headers)
            self.assertNotIn("content-length", answer.headers)
        else:
            self.assertEqual(int(answer.headers["content-length"]),
                             len(answer.body))
        if case["max_body"] is not None:
            self.assertLessEqual(len(answer.body), case["max_body"])
        if case["max_seconds"] is not None:
            self.assertLess(answer.elapsed, case["max_seconds"],
                            "took %.2f s" % answer.elapsed)

    def test_table_in_process(self):
        for case in _HD_HOSTILE:
            if not case["inproc"]:
                continue
            with self.subTest(case=case["name"]):
                answer = _hd_call(self.app, case["method"], case["target"],
                                  case["headers"], case["body"],
                                  extra=case["extra"],
                                  validate=case["validate"])
                where = "in-process" + ("" if case["validate"]
                                        else " (no validator)")
                self.check_answer(case, answer, case["inproc_status"],
                                  case["inproc_message"], where)
                self.check_still_serving("in-process")

    def test_table_over_http(self):
        for case in _HD_HOSTILE:
            if not case["http"]:
                continue
            with self.subTest(case=case["name"]):
                data = case["raw"] or _request_bytes(
                    case["method"], case["target"], case["headers"],
                    case["body"])
                answer, elapsed = _exchange(
                    self.serve.port, data, case["method"] == "HEAD",
                    half_close=case["half_close"])
                self.assertIsNotNone(answer, "closed without an answer")
                answer.elapsed = elapsed  # send included
                self.check_answer(case, answer, case["status"],
                                  case["message"], "serve")
                self.check_still_serving("serve")

    def test_trace_does_not_echo(self):
        answer = _http(self.serve.port, "TRACE", "/City/1",
                          [("X-Secret", "s3cr3t")])
        self.assertEqual((answer.status, answer.body),
                         (405, b'{"error": "Method Not Allowed"}'))
        self.assertNotIn("s3cr3t", str(answer.pairs))

    def test_head_is_get_without_body(self):
        for target in ("/City/1", "/City/999", "/City", "/spec.json",
                       "/openapi.json", "/docs", "/nope/a/b",
                       "/actions/stats"):
            with self.subTest(target=target):
                get = _http(self.serve.port, "GET", target)
                head = _http(self.serve.port, "HEAD", target)
                self.assertEqual(head.status, get.status)
                self.assertEqual(head.body, b"")
                if head.status == get.status:
                    self.assertEqual(head.headers["content-length"],
                                     get.headers["content-length"])
                    self.assertEqual(head.headers.get("content-type"),
                                     get.headers.get("content-type"))
                inproc_get = _hd_call(self.app, "GET", target)
                inproc_head = _hd_call(self.app, "HEAD", target)
                self.assertEqual((inproc_head.status, inproc_head.body),
                                 (head.status, b""))
                if inproc_head.status == inproc_get.status:
                    self.assertEqual(
                        inproc_head.headers["content-length"],
                        str(len(inproc_get.body)))
                _hd_note("HEAD " + target, "serve", head.status, head.body,
                         head.elapsed)

    # The Allow header of each kind of route of the places example.
    ROUTES = [
        ("/City", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("/City/1", {"DELETE", "GET", "HEAD", "OPTIONS", "PUT"}),
        ("/Address", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("/Address/1", {"DELETE", "GET", "HEAD", "OPTIONS", "PUT"}),
        ("/actions/stats", {"OPTIONS", "POST"}),
        ("/actions/rename_city", {"OPTIONS", "POST"}),
        ("/spec.json", {"GET", "HEAD", "OPTIONS"}),
        ("/openapi.json", {"GET", "HEAD", "OPTIONS"}),
        ("/", {"GET", "HEAD", "OPTIONS"}),
        ("/docs", {"GET", "HEAD", "OPTIONS"}),
    ]
    METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "FOO"]

    def test_wrong_method_on_every_route_kind(self):
        seen = collections.Counter()
        self.addCleanup(lambda: _HD_SUMMARY.append(
            "wrong method on a known route (%d route x method pairs, "
            "in-process and serve): %s" % (sum(seen.values()) // 2,
                                           dict(seen))))
        for target, allowed in self.ROUTES:
            for method in self.METHODS:
                if method in allowed:
                    continue
                with self.subTest(target=target, method=method):
                    for where in ("in-process", "serve"):
                        if where == "serve":
                            answer = _http(self.serve.port, method, target)
                        else:
                            answer = _hd_call(self.app, method, target)
                        seen[answer.status] += 1
                        if answer.status >= 500:
                            _hd_note("%s %s" % (method, target), where,
                                     answer.status, answer.body,
                                     answer.elapsed)
                        self.assertEqual(answer.status, 405)
                        self.assertEqual(_hd_error(answer),
                                         "Method Not Allowed")
                        self.assertEqual(
                            {m.strip()
                             for m in answer.headers["allow"].split(",")},
                            allowed)

    def test_options_on_every_route_kind(self):
        for target, allowed in self.ROUTES:
            with self.subTest(target=target):
                for answer in (_http(self.serve.port, "OPTIONS", target),
                               _hd_call(self.app, "OPTIONS", target)):
                    self.assertEqual((answer.status, answer.body), (204, b""))
                    self.assertEqual(
                        {m.strip()
                         for m in answer.headers["allow"].split(",")},
                        allowed)
                    self.assertNotIn("content-type", answer.headers)

    def test_expect_100_continue(self):
        body = b'{"name": "Continueville"}'
        conn = _Raw(self.serve.port)
        self.addCleanup(conn.close)
        start = time.perf_counter()
        conn.send(b"POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                  b"application/json\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        interim = conn.response()
        self.assertEqual(interim.status, 100)
        conn.send(body)
        answer = conn.response()
        _hd_note("Expect: 100-continue", "serve", answer.status, answer.body,
                 time.perf_counter() - start)
        self.assertEqual(answer.status, 201)
        self.assertEqual(json.loads(answer.body)["name"], "Continueville")
        # The same connection goes on.
        conn.send(_request_bytes("POST", "/actions/stats", close=False))
        self.assertEqual(conn.response().status, 200)
        inproc = _hd_call(self.app, "POST", "/City",
                          [_JSON, ("Expect", "100-continue")], body)
        _hd_note("Expect: 100-continue", "in-process", inproc.status,
                 inproc.body, inproc.elapsed)
        self.assertEqual(inproc.status, 201)

    def test_expect_100_continue_with_huge_body_gets_413_first(self):
        conn = _Raw(self.serve.port)
        self.addCleanup(conn.close)
        conn.send(b"POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                  b"application/json\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 52428800\r\n\r\n")
        answer = conn.response()
        _hd_note("50 MB body with Expect: 100-continue", "serve",
                 answer.status, answer.body, answer.elapsed)
        self.assertEqual(answer.status, 413)  # no 100 Continue before it
        self.assertEqual(_hd_error(answer), "Request Entity Too Large")
        self.assertTrue(conn.closed_within(5))
        self.check_still_serving("serve")

    def test_50_mb_body_is_refused_before_it_is_read(self):
        size = 50 * 1024 * 1024
        # In-process: 413 and wsgi.input never touched.
        reads = []

        class Input:
            def read(self, *args):
                reads.append(args)
                return b""

            readline = read

            def readlines(self, *args):
                reads.append(args)
                return []

            def __iter__(self):
                return iter(self.readlines())

        answer = _hd_call(self.app, "POST", "/City", [_JSON],
                          extra={"CONTENT_LENGTH": str(size),
                                 "wsgi.input": Input()})
        _hd_note("50 MB body", "in-process", answer.status, answer.body,
                 answer.elapsed)
        self.assertEqual((answer.status, _hd_error(answer)),
                         (413, "Request Entity Too Large"))
        self.assertEqual(reads, [])
        # Over HTTP: the 413 arrives before a single body byte is sent.
        self.check_still_serving("serve")
        before = self.serve.rss_kib()
        conn = _Raw(self.serve.port)
        self.addCleanup(conn.close)
        start = time.perf_counter()
        conn.send(b"POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                  b"application/json\r\nContent-Length: %d\r\n\r\n" % size)
        answer = conn.response()
        elapsed = time.perf_counter() - start
        _hd_note("50 MB body", "serve", answer.status, answer.body, elapsed)
        self.assertEqual((answer.status, _hd_error(answer)),
                         (413, "Request Entity Too Large"))
        self.assertEqual(answer.headers.get("connection"), "close")
        # Then send the 50 MB anyway: the server drains or resets, and
        # must not keep them.
        sent = [0]

        def blast():
            chunk = b"x" * (1 << 20)
            try:
                while sent[0] < size:
                    conn.sock.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass

        sender = threading.Thread(target=blast, daemon=True)
        sender.start()
        self.assertTrue(conn.closed_within(10), "server kept the connection")
        sender.join(timeout=20)
        self.assertFalse(sender.is_alive())
        self.check_still_serving("serve")
        after = self.serve.rss_kib()
        growth = after - before
        _HD_MEMORY.append(("50 MB body (Content-Length)", before, after,
                           sent[0]))
        self.assertLess(growth, 10 * 1024,
                        "VmRSS grew by %d KiB (%d -> %d)"
                        % (growth, before, after))

    def test_50_mb_chunked_body_does_not_pin_memory(self):
        # A chunked body has no length to refuse up front; the server may
        # read some of it, but must not keep tens of megabytes per
        # connection when the app takes at most 1 MiB.
        self.check_still_serving("serve")
        before = self.serve.rss_kib()
        conn = _Raw(self.serve.port, timeout=30)
        self.addCleanup(conn.close)
        start = time.perf_counter()
        conn.send(b"POST /City HTTP/1.1\r\nHost: h\r\nContent-Type: "
                  b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"  # 1 MiB each
        sent = 0
        with contextlib.suppress(OSError):
            while sent < 50:
                conn.sock.sendall(chunk)
                sent += 1
        answer = conn.response()
        elapsed = time.perf_counter() - start
        _hd_note("50 MB chunked body", "serve", answer.status, answer.body,
                 elapsed)
        self.assertEqual(answer.status, 413)
        _hd_error(answer)
        self.assertTrue(conn.closed_within(10))
        self.check_still_serving("serve")
        after = self.serve.rss_kib()
        _HD_MEMORY.append(("50 MB chunked body", before, after, sent << 20))
        self.assertLess(after - before, 10 * 1024,
                        "VmRSS grew by %d KiB (%d -> %d)"
                        % (after - before, before, after))

    def test_pipelined_requests(self):
        conn = _Raw(self.serve.port)
        self.addCleanup(conn.close)
        body = b'{"name": "Pipeline"}'
        conn.send(_request_bytes("POST", "/City", [_JSON], body,
                                    close=False)
                  + _request_bytes("GET", "/City/1", close=False)
                  + _request_bytes("POST", "/City", [_JSON], b"{bad",
                                      close=False)
                  + _request_bytes("HEAD", "/City/999", close=False)
                  + _request_bytes("GET", "/nope", close=True))
        statuses = [conn.response().status, conn.response().status,
                    conn.response().status, conn.response(True).status,
                    conn.response().status]
        self.assertEqual(statuses, [201, 200, 400, 404, 404])
        self.assertTrue(conn.closed_within(5))

    def test_access_log_escapes_control_characters(self):
        server = _ThreadServer(self.app, log=True)
        self.addCleanup(server.stop)
        with self.assertLogs("cosmic", logging.INFO) as cm:
            answer, _ = _exchange(
                server.port, b"GET /City/\x1b[2J\x7f\"x\\ HTTP/1.1\r\n"
                             b"Host: h\r\nConnection: close\r\n\r\n")
            self.assertEqual(answer.status, 404)
            _wait(lambda: cm.records, 5)
        self.assertEqual(len(cm.records), 1)
        line = cm.records[0].getMessage()
        self.assertTrue(line.isprintable(), repr(line))
        self.assertIn("404", line)

    def test_stalled_body_with_short_socket_timeout(self):
        # 1.5 s: long enough for the other request on a busy machine, well
        # below the default 5 s that the bounds below tell apart.
        server = _ThreadServer(self.app, socket_timeout=1.5)
        self.addCleanup(server.stop)
        # Content-Length 100, 9 bytes sent, then nothing.
        stalled = _Raw(server.port)
        self.addCleanup(stalled.close)
        start = time.perf_counter()
        stalled.send(_HD_SHORT)
        # Meanwhile another connection is served, before the stalled one
        # has timed out (its answer is not there yet).
        other = _http(server.port, "POST", "/actions/stats")
        self.assertEqual(other.status, 200)
        readable, _, _ = select.select([stalled.sock], [], [], 0)
        self.assertEqual(readable, [], "other request waited for the stall")
        answer = stalled.response()
        elapsed = time.perf_counter() - start
        _hd_note("Content-Length larger than the body (stall)",
                 "thread server, 1.5 s timeout", answer.status, answer.body,
                 elapsed)
        self.assertEqual(answer.status, 400)
        self.assertEqual(_hd_error(answer),
                         "Incomplete body: expected 100 bytes, got 9")
        self.assertLess(elapsed, 4.5)
        self.assertTrue(stalled.closed_within(4.5))
        self.assertEqual(_http(server.port, "POST", "/actions/stats")
                         .status, 200)

    def test_stalled_head_is_closed_cleanly(self):
        server = _ThreadServer(self.app, socket_timeout=0.5)
        self.addCleanup(server.stop)
        stalled = _Raw(server.port)
        self.addCleanup(stalled.close)
        start = time.perf_counter()
        stalled.send(b"GET /City/1 HTTP/1.1\r\nHost: h\r\n")
        # Within 4.5 s: the 0.5 s timeout, not the default 5 s.
        self.assertTrue(stalled.closed_within(4.5))
        elapsed = time.perf_counter() - start
        self.assertEqual(stalled.buf, b"")  # no answer, a clean close
        _hd_note("request head stalled", "thread server, 0.5 s timeout",
                 None, b"", elapsed)
        self.assertEqual(_http(server.port, "POST", "/actions/stats")
                         .status, 200)


class TestHardeningLocationHeader(unittest.TestCase):
    """An id reflected in Location is percent-encoded: no header injection."""

    IDS = [
        ("a\r\nSet-Cookie: evil=1", "/Thing/a%0D%0ASet-Cookie%3A%20evil%3D1"),
        ("x\nX-Injected: 1", "/Thing/x%0AX-Injected%3A%201"),
        ("caf\u00e9 \u2603", "/Thing/caf%C3%A9%20%E2%98%83"),
        ("../../etc", "/Thing/..%2F..%2Fetc"),
        ("nul\x00", "/Thing/nul%00"),
    ]

    def setUp(self):
        self.app = Server(_hd_injection_api()).wsgi_app

    def test_in_process(self):
        for ident, location in self.IDS:
            with self.subTest(ident=ident):
                body = json.dumps({"key": ident}).encode()
                answer = _hd_call(self.app, "POST", "/Thing", [_JSON],
                                  body)
                self.assertEqual(answer.status, 201)
                self.assertEqual(answer.headers["location"], location)
                self.assertEqual(
                    sorted(answer.headers),
                    ["content-length", "content-type", "etag", "location",
                     "x-request-id"])
                if "/" in ident:
                    continue  # docs/protocol.md#path-segments-and-ids
                # The Location leads back to the object.
                got = _hd_call(self.app, "GET", location)
                self.assertEqual((got.status, json.loads(got.body)["key"]),
                                 (200, ident))

    def test_over_http(self):
        server = _ThreadServer(self.app)
        self.addCleanup(server.stop)
        for ident, location in self.IDS:
            with self.subTest(ident=ident):
                body = json.dumps({"key": ident}).encode()
                answer = _http(server.port, "POST", "/Thing", [_JSON],
                                  body)
                _hd_note("id %r in Location" % ident, "thread server",
                         answer.status, answer.body, answer.elapsed)
                _HD_SUMMARY.append("Location for id %r: %s"
                                   % (ident, answer.headers["location"]))
                self.assertEqual(answer.status, 201)
                self.assertEqual(answer.headers["location"], location)
                self.assertEqual(
                    sorted(name.lower() for name, _ in answer.pairs),
                    ["connection", "content-length", "content-type", "date",
                     "etag", "location", "x-request-id"])


class TestHardeningHandlerFaults(unittest.TestCase):
    """A failing handler gives exactly 500 {"error": "Internal Server
    Error"}; the traceback goes to the "cosmic" logger with the request id;
    the next request works."""

    def setUp(self):
        self.release = threading.Event()
        self.addCleanup(self.release.set)
        self.server = Server(_hd_faults_api(self.release),
                             handler_timeout=0.2)
        self.app = self.server.wsgi_app

    def check_fault(self, answer, records, exc_type, request_id=None):
        self.assertEqual(answer.status, 500)
        self.assertEqual(answer.body, _HD_INTERNAL)
        self.assertEqual(answer.headers["content-type"], "application/json")
        self.assertNotIn(_HD_SECRET, str(answer.pairs))
        rid = answer.headers["x-request-id"]
        if request_id is not None:
            self.assertEqual(rid, request_id)
        mine = [r for r in records if rid in r.getMessage()]
        self.assertEqual(len(mine), 1, [r.getMessage() for r in records])
        record = mine[0]
        self.assertEqual(record.levelno, logging.ERROR)
        self.assertIsNotNone(record.exc_info)
        self.assertTrue(issubclass(record.exc_info[0], exc_type),
                        record.exc_info)
        trace = logging.Formatter().formatException(record.exc_info)
        self.assertIn("Traceback", trace)

    def check_next_works(self, call):
        answer = call("POST", "/actions/ok", [_JSON], b"7")
        self.assertEqual((answer.status, answer.body), (200, b'"ok 7"'))

    def test_in_process(self):
        for method, target, body, exc_type in _HD_FAULTS:
            with self.subTest(target=target, method=method):
                rid = "fault-%d" % next(_HD_COUNTER)
                headers = [("X-Request-ID", rid)]
                if body:
                    headers.append(_JSON)
                start = time.monotonic()
                with self.assertLogs("cosmic", logging.ERROR) as cm:
                    answer = _hd_call(self.app, method, target, headers,
                                      body)
                self.assertLess(time.monotonic() - start, 3)
                self.check_fault(answer, cm.records, exc_type, rid)
                self.check_next_works(
                    lambda *a: _hd_call(self.app, *a))

    def test_over_http_keep_alive(self):
        server = _ThreadServer(self.app)
        self.addCleanup(server.stop)
        conn = _Raw(server.port)
        self.addCleanup(conn.close)

        def call(method, target, headers=(), body=b""):
            conn.send(_request_bytes(method, target, headers, body,
                                        close=False))
            return conn.response(method == "HEAD")

        for method, target, body, exc_type in _HD_FAULTS:
            with self.subTest(target=target, method=method):
                headers = [_JSON] if body else []
                with self.assertLogs("cosmic", logging.ERROR) as cm:
                    answer = call(method, target, headers, body)
                self.check_fault(answer, cm.records, exc_type)
                self.check_next_works(call)  # on the same connection

    def test_log_line_escapes_the_path(self):
        # The path is client input: a CR/LF or an escape sequence in it
        # must not forge log lines or drive the terminal of whoever reads
        # the log (the access log of the development server escapes them).
        for target in ("/Thing/a%0D%0ACRITICAL%20forged%20entry",
                       "/Thing/%1B%5B2J%1B%5BH", "/Thing/x%0Ay"):
            with self.subTest(target=target):
                with self.assertLogs("cosmic", logging.ERROR) as cm:
                    answer = _hd_call(self.app, "GET", target)
                self.assertEqual((answer.status, answer.body),
                                 (500, _HD_INTERNAL))
                message = cm.records[0].getMessage()
                self.assertTrue(message.isprintable(), repr(message))

    def test_debug_true_propagates(self):
        app = Server(self.server.api, debug=True).wsgi_app
        with self.assertRaises(ValueError):
            _hd_call(app, "POST", "/actions/value_error", validate=False)

    def test_request_id_kept_or_replaced(self):
        sane = ["abc-123", "a" * 200, "req:1/2@host+x=y.z_", "0"]
        insane = ["has spaces", "a" * 300, "abc\rdef", "abc\ndef", "",
                  "caf\u00e9", "semi;colon", "quote\"d", "a" * 201]
        for value in sane + insane:
            with self.subTest(value=value):
                with self.assertLogs("cosmic", logging.ERROR) as cm:
                    answer = _hd_call(self.app, "POST", "/actions/custom",
                                      [("X-Request-ID", value)])
                rid = answer.headers["x-request-id"]
                if value in sane:
                    self.assertEqual(rid, value)
                else:
                    self.assertNotEqual(rid, value)
                    self.assertRegex(rid, r"\A[A-Za-z0-9._:@/+=-]{1,200}\Z")
                self.check_fault(answer, cm.records, _hd_Secret)

    def test_request_id_over_http(self):
        server = _ThreadServer(self.app)
        self.addCleanup(server.stop)
        for value, kept in (("trace-42", True), ("with spaces in it", False),
                            ("x" * 300, False)):
            with self.subTest(value=value[:20]):
                with self.assertLogs("cosmic", logging.ERROR) as cm:
                    answer = _http(server.port, "POST", "/actions/custom",
                                      [("X-Request-ID", value)])
                self.assertEqual(answer.headers["x-request-id"] == value,
                                 kept)
                self.check_fault(answer, cm.records, _hd_Secret)
        # Every answer carries one, generated ones differ.
        ids = {_http(server.port, "POST", "/actions/ok", [_JSON],
                        b"1").headers["x-request-id"] for _ in range(5)}
        self.assertEqual(len(ids), 5)

    def test_hanging_handler_does_not_block_the_server(self):
        server = _ThreadServer(self.app)
        self.addCleanup(server.stop)
        answers = queue.Queue()

        def hang():
            with contextlib.suppress(Exception):
                answers.put(_http(server.port, "POST", "/actions/hang"))

        with self.assertLogs("cosmic", logging.ERROR) as cm:
            threads = [threading.Thread(target=hang) for _ in range(4)]
            for t in threads:
                t.start()
            ok = _http(server.port, "POST", "/actions/ok", [_JSON],
                          b"2")
            for t in threads:
                t.join(timeout=5)
        self.assertEqual((ok.status, ok.body), (200, b'"ok 2"'))
        self.assertEqual(answers.qsize(), 4)
        while not answers.empty():
            answer = answers.get()
            self.assertEqual((answer.status, answer.body),
                             (500, _HD_INTERNAL))
            self.assertLess(answer.elapsed, 2)
        self.assertEqual(len(cm.records), 4)
        self.assertTrue(all(r.exc_info[0] is TimeoutError
                            for r in cm.records))


class TestHardeningLoad(unittest.TestCase):
    """32 client threads x 25 calls against `python -m cosmic serve
    examples/places.py` (bench/load.py does 32 x 200)."""

    THREADS = 32
    CALLS = 25

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cosmic_hd_")
        try:
            cls.serve = _hd_serve(
                "examples/places.py", os.path.join(cls.tmp.name, "load.db"))
        except BaseException:
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        code, err = cls.serve.close()
        cls.tmp.cleanup()
        assert code == 0 and "Traceback" not in err, (code, err[-2000:])

    def test_mixed_load(self):
        url = self.serve.url
        created = [[] for _ in range(self.THREADS)]
        errors = []
        start_gate = threading.Barrier(self.THREADS, timeout=30)

        def work(index):
            try:
                client = cosmic.connect(url, retries=0, timeout=30)
                start_gate.wait()
                mine = created[index]
                for i in range(self.CALLS):
                    kind = i % 5
                    if kind == 0:
                        stats = client.actions.stats()
                        if sorted(stats) != ["addresses", "cities"]:
                            errors.append(("stats", stats))
                    elif kind in (1, 2):
                        name = "Hd%dx%d" % (index, i)
                        ident, rep = client.models.City.create(
                            name=name, country="Loadland")
                        if rep != {"name": name, "country": "Loadland"}:
                            errors.append(("create", rep))
                        mine.append((ident, name))
                    elif kind == 3:
                        ident, name = mine[-1]
                        rep = client.models.City.get_by_id(ident)
                        if rep["name"] != name:
                            errors.append(("get", ident, rep))
                    else:
                        items, meta = client.models.City.get_list(limit=5)
                        if not items or meta["total_count"] < len(mine):
                            errors.append(("list", items, meta))
                client.close()
            except BaseException as exc:  # reported below
                errors.append((index, repr(exc)))

        threads = [threading.Thread(target=work, args=(n,))
                   for n in range(self.THREADS)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        elapsed = time.perf_counter() - started
        self.assertFalse(any(t.is_alive() for t in threads), "stuck client")
        self.assertEqual(errors, [])
        everything = [pair for mine in created for pair in mine]
        creates = self.THREADS * sum(1 for i in range(self.CALLS)
                                     if i % 5 in (1, 2))
        self.assertEqual(len(everything), creates)
        self.assertEqual(len({ident for ident, _ in everything}), creates)
        client = cosmic.connect(url, retries=0, timeout=30)
        self.addCleanup(client.close)
        for ident, name in everything:
            self.assertEqual(client.models.City.get_by_id(ident),
                             {"name": name, "country": "Loadland"})
        _, meta = client.models.City.get_list(country="Loadland", limit=1)
        self.assertEqual(meta, {"total_count": creates})
        self.assertEqual(client.actions.stats(),
                         {"cities": creates, "addresses": 0})
        self.assertLess(elapsed, 45)


class TestHardeningThreadLocal(unittest.TestCase):
    """Per-request values in a ThreadLocalDict do not mix across threads."""

    N = 16

    def make_api(self, barrier):
        store = ThreadLocalDict()
        with cosmic.cosmos.swap({}):
            api = API("hdlocal")

            @api.action(accepts=Integer, returns=Struct([
                required("mine", Integer), required("keys", Integer)]))
            def remember(n):
                if "n" in store:
                    raise AssertionError("leaked from an earlier request")
                store["n"] = n
                barrier.wait()  # every thread has stored its value now
                return {"mine": store["n"], "keys": len(store)}

        return api

    def run_threads(self, call):
        results = {}
        errors = []

        def run(n):
            try:
                results[n] = call(n)
            except BaseException as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=run, args=(n,))
                   for n in range(self.N)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        self.assertEqual(errors, [])
        self.assertEqual(results, {n: {"mine": n, "keys": 1}
                                   for n in range(self.N)})

    def test_in_process(self):
        barrier = threading.Barrier(self.N, timeout=10)
        app = Server(self.make_api(barrier)).wsgi_app
        idents = set()

        def call(n):
            answer = _hd_call(app, "POST", "/actions/remember", [_JSON],
                              str(n).encode(), validate=False)
            idents.add(threading.get_ident())
            return json.loads(answer.body)

        self.run_threads(call)
        self.assertEqual(set(cosmic.storage) & idents, set())

    def test_over_http(self):
        barrier = threading.Barrier(self.N, timeout=10)
        server = _ThreadServer(Server(self.make_api(barrier)).wsgi_app)
        self.addCleanup(server.stop)

        def call(n):
            answer = _http(server.port, "POST", "/actions/remember",
                              [_JSON], str(n).encode())
            return json.loads(answer.body)

        self.run_threads(call)
        self.run_threads(call)  # threads are new; the store starts empty


class TestHardeningSlowClients(unittest.TestCase):
    """A slow sender and idle keep-alive connections do not stall others
    (development server, socket_timeout=0.5)."""

    @classmethod
    def setUpClass(cls):
        _hd_places_tmp(cls)
        cls.server = _ThreadServer(cls.app, socket_timeout=0.5)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        _close_places(cls.places)
        cls.tmp.cleanup()

    def test_body_trickled_past_the_deadline_is_cut_off(self):
        # Each byte comes well within the socket timeout, but the body as a
        # whole must arrive within server.body_timeout.
        api = API("hd_trickle")

        @api.action(accepts=String, returns=String)
        def echo(text):
            return text

        server = _hs_start(Server(api).wsgi_app, socket_timeout=0.5)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        server.body_timeout = 1.0
        body = b'"' + b"x" * 98 + b'"'
        sock = socket.create_connection(server.server_address, timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(b"POST /actions/echo HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        started = time.monotonic()
        answer = b""
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            ready, _, _ = select.select([sock], [], [], 0.2)  # pacing
            if ready:
                answer = sock.recv(65536)
                break
        elapsed = time.monotonic() - started
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer)
        self.assertIn(b'{"error": "Incomplete body: expected 100 bytes, got ',
                      answer)
        self.assertLess(elapsed, 5.0)  # 100 bytes at 0.2 s would take 20 s

    def test_slow_sender_and_idle_connections(self):
        port = self.server.port
        stop = threading.Event()
        self.addCleanup(stop.set)
        slow_result = {}

        def slowloris():
            request = _request_bytes("POST", "/actions/stats")
            try:
                sock = socket.create_connection(("127.0.0.1", port),
                                                timeout=5)
            except OSError as exc:
                slow_result["error"] = exc
                return
            with sock:
                try:
                    for byte in request:
                        sock.sendall(bytes([byte]))
                        if stop.wait(0.2):  # pacing, not synchronisation
                            break
                    slow_result["sent all"] = True
                except OSError:
                    slow_result["cut off"] = True

        slow = threading.Thread(target=slowloris, daemon=True)
        slow.start()
        idle = []
        for _ in range(5):
            conn = _Raw(port)
            self.addCleanup(conn.close)
            conn.send(_request_bytes("POST", "/actions/stats",
                                        close=False))
            self.assertEqual(conn.response().status, 200)
            idle.append(conn)
        latencies = []
        for _ in range(10):
            answer = _http(port, "GET", "/City?limit=1")
            self.assertEqual(answer.status, 200)
            latencies.append(answer.elapsed)
        self.assertLess(max(latencies), 2.0, latencies)
        # The server ends idle keep-alive connections after its timeout,
        # and cuts the slow sender off.
        for conn in idle:  # 0.5 s timeout, not the default 5 s
            self.assertTrue(conn.closed_within(4.5))
        _wait(lambda: slow_result, 5)
        self.assertIn("cut off", slow_result)
        stop.set()
        slow.join(timeout=5)

    def test_burst_of_128_connections(self):
        port = self.server.port
        conns = []
        self.addCleanup(lambda: [c.close() for c in conns])
        for _ in range(128):
            conns.append(_Raw(port))
        request = _request_bytes("POST", "/actions/stats")
        for conn in conns:
            conn.send(request)
        statuses = collections.Counter()
        for conn in conns:
            statuses[conn.response().status] += 1
        self.assertEqual(statuses, {200: 128})
        self.assertEqual(_http(port, "POST", "/actions/stats").status, 200)


class TestHardeningProductionServers(unittest.TestCase):
    """The places example under gunicorn (sync, gthread) and waitress."""

    def run_server(self, args, module):
        _need(module)
        tmp = tempfile.TemporaryDirectory(prefix="cosmic_hd_")
        self.addCleanup(tmp.cleanup)
        port = _hd_free_port()
        log = tempfile.TemporaryFile(mode="w+")
        self.addCleanup(log.close)
        args = [a.replace("{port}", str(port)) for a in args]
        proc = subprocess.Popen(
            [sys.executable, "-m"] + args,
            cwd=os.path.join(_ROOT, "examples"),
            env=_hd_child_env(PLACES_DB=os.path.join(tmp.name, "p.db")),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def stop():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        self.addCleanup(stop)
        up = _wait(lambda: proc.poll() is not None or _hd_answers(port),
                      30, 0.05)
        if proc.poll() is not None or not up:
            log.seek(0)
            self.fail("%s did not come up: %s" % (module, log.read()[-3000:]))
        return "http://127.0.0.1:%d" % port, stop, proc, log

    def check(self, args, module):
        url, stop, proc, log = self.run_server(args, module)
        _hd_places_client_body(self, url)
        # A few threads at once, through both workers.
        errors = []

        def work(n):
            try:
                client = cosmic.connect(url, timeout=_HD_NET_TIMEOUT,
                                        retries=0)
                for i in range(10):
                    ident, _ = client.models.City.create(
                        name="Par%d" % (n * 10 + i))
                    client.models.City.get_by_id(ident)
                client.close()
            except BaseException as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(errors, [])
        client = cosmic.connect(url, timeout=_HD_NET_TIMEOUT)
        self.addCleanup(client.close)
        self.assertEqual(client.actions.stats()["cities"], 40)
        stop()
        log.seek(0)
        text = log.read()
        self.assertNotIn("Traceback", text)

    def test_gunicorn_sync(self):
        self.check(["gunicorn", "-w", "2", "-k", "sync", "--graceful-timeout",
                    "5", "-b", "127.0.0.1:{port}", "places:wsgi_app"],
                   "gunicorn")

    def test_gunicorn_gthread(self):
        self.check(["gunicorn", "-w", "2", "-k", "gthread", "--threads", "4",
                    "--graceful-timeout", "5", "-b", "127.0.0.1:{port}",
                    "places:wsgi_app"], "gunicorn")

    def test_waitress(self):
        self.check(["waitress", "--listen=127.0.0.1:{port}",
                    "places:wsgi_app"], "waitress")

    def test_cosmic_serve(self):
        tmp = tempfile.TemporaryDirectory(prefix="cosmic_hd_")
        self.addCleanup(tmp.cleanup)
        serve = _hd_serve("examples/places.py",
                                 os.path.join(tmp.name, "p.db"))
        try:
            _hd_places_client_body(self, serve.url)
        finally:
            code, err = serve.close()
        self.assertEqual(code, 0)
        self.assertNotIn("Traceback", err)


class TestHardeningValidatorEveryEndpoint(unittest.TestCase):
    """Server(places).wsgi_app passes wsgiref.validate on every endpoint,
    including the error paths."""

    @classmethod
    def setUpClass(cls):
        _hd_places_tmp(cls)

    @classmethod
    def tearDownClass(cls):
        _close_places(cls.places)
        cls.tmp.cleanup()

    def test_every_endpoint(self):
        j = [_JSON]
        table = [
            ("POST", "/City", j, b'{"name": "Paris", "country": "France"}',
             201),
            ("POST", "/City", j, b'{"name": "paris"}', 400),
            ("POST", "/City", j, b"", 400),
            ("POST", "/City", j, b'{"country": "France"}', 400),
            ("POST", "/City", [("Content-Type", "text/plain")], b"{}", 400),
            ("GET", "/City/1", [], b"", 200),
            ("HEAD", "/City/1", [], b"", 200),
            ("GET", "/City/2", [], b"", 404),
            ("GET", "/City/abc", [], b"", 404),
            ("GET", "/City/1", j, b"{}", 400),
            ("PUT", "/City/1", j, b'{"population": 2000000}', 200),
            ("PUT", "/City/1", j, b'{"population": -1}', 400),
            ("PUT", "/City/1", j, b'{"population": "many"}', 400),
            ("PUT", "/City/2", j, b'{"population": 1}', 404),
            ("PUT", "/City/1", [], b"", 400),
            ("GET", "/City", [], b"", 200),
            ("GET", "/City?country=France&limit=10&offset=0", [], b"", 200),
            ("GET", "/City?limit=1000", [], b"", 400),
            ("GET", "/City?limit=x", [], b"", 400),
            # Undeclared parameters are ignored (docs/protocol.md#get-list).
            ("GET", "/City?bogus=1", [], b"", 200),
            ("POST", "/Address", j,
             b'{"number": 7, "street": "Rue", '
             b'"_links": {"city": {"href": "/City/1"}}}', 201),
            ("POST", "/Address", j,
             b'{"number": 7, "street": "Rue", '
             b'"_links": {"city": {"href": "/City/99"}}}', 400),
            ("POST", "/Address", j,
             b'{"number": 7, "street": "Rue", '
             b'"_links": {"city": {"href": "7"}}}', 400),
            ("POST", "/Address", j, b'{"number": 0, "street": "Rue"}', 400),
            ("GET", "/Address/1", [], b"", 200),
            ("GET", "/Address/9", [], b"", 404),
            ("GET", "/Address?city=1", [], b"", 200),
            ("GET", "/Address?city=zz", [], b"", 200),
            ("PUT", "/Address/1", j, b'{"street": "Rue Haute"}', 200),
            ("PUT", "/Address/1", j, b'{"street": "  "}', 400),
            ("PUT", "/Address/9", j, b'{"street": "Rue"}', 404),
            ("DELETE", "/City/1", [], b"", 409),
            ("DELETE", "/Address/1", [], b"", 204),
            ("DELETE", "/Address/1", [], b"", 404),
            ("DELETE", "/Address/1", j, b"{}", 400),
            ("POST", "/actions/stats", [], b"", 200),
            ("POST", "/actions/stats", j, b"{}", 400),
            ("POST", "/actions/rename_city", j,
             b'{"id": "1", "name": "Lutetia"}', 200),
            ("POST", "/actions/rename_city", j,
             b'{"id": "1", "name": "lutetia"}', 400),
            ("POST", "/actions/rename_city", j,
             b'{"id": "42", "name": "Lutetia"}', 404),
            ("POST", "/actions/rename_city", j, b'{"id": "1"}', 400),
            ("POST", "/actions/rename_city", [], b"", 400),
            ("POST", "/actions/nope", [], b"", 404),
            ("DELETE", "/City/1", [], b"", 204),
            ("DELETE", "/City/1", [], b"", 404),
            ("GET", "/spec.json", [], b"", 200),
            ("HEAD", "/spec.json", [], b"", 200),
            ("GET", "/openapi.json", [], b"", 200),
            ("GET", "/", [], b"", 200),
            ("GET", "/docs", [], b"", 200),
            ("HEAD", "/docs", [], b"", 200),
            ("POST", "/docs", [], b"", 405),
            ("PUT", "/spec.json", [], b"", 405),
            ("PATCH", "/City/1", [], b"", 405),
            ("OPTIONS", "/City/1", [], b"", 204),
            ("GET", "/City/", [], b"", 404),
            ("GET", "/a/b/c", [], b"", 404),
            ("GET", "/Nope/1", [], b"", 404),
            ("GET", "/City", [("Accept", "application/problem+json")],
             b"", 200),
            ("GET", "/City?limit=x", [("Accept", "application/problem+json")],
             b"", 400),
        ]
        for method, target, headers, body, status in table:
            with self.subTest(method=method, target=target, body=body):
                answer = _hd_call(self.app, method, target, headers, body)
                self.assertEqual(answer.status, status, answer.body[:300])
                if status >= 400:
                    problem = "application/problem+json" in str(headers)
                    if problem:
                        self.assertEqual(
                            answer.headers["content-type"],
                            "application/problem+json")
                        self.assertEqual(json.loads(answer.body)["status"],
                                         status)
                    else:
                        _hd_error(answer)
                if method == "HEAD" or status == 204:
                    self.assertEqual(answer.body, b"")


class TestHardeningCORS(unittest.TestCase):
    """Opt-in CORS: Server(api, cors_origins=[...])."""

    @classmethod
    def setUpClass(cls):
        _hd_places_tmp(cls)
        api = cls.places.places
        cls.cors = Server(api, cors_origins=[_HD_ORIGIN]).wsgi_app
        cls.plain = Server(api).wsgi_app
        answer = _hd_call(cls.plain, "POST", "/City", [_JSON],
                          b'{"name": "Paris"}')
        assert answer.status == 201, answer

    @classmethod
    def tearDownClass(cls):
        _close_places(cls.places)
        cls.tmp.cleanup()

    @staticmethod
    def methods(value):
        return {m.strip() for m in value.split(",")}

    def test_preflight_allowed(self):
        answer = _hd_call(self.cors, "OPTIONS", "/City", [
            ("Origin", _HD_ORIGIN), ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "Content-Type, X-Request-ID")])
        self.assertEqual((answer.status, answer.body), (204, b""))
        h = answer.headers
        self.assertEqual(h["access-control-allow-origin"], _HD_ORIGIN)
        self.assertIn("POST", self.methods(h["access-control-allow-methods"]))
        self.assertEqual(self.methods(h["access-control-allow-headers"]),
                         {"Content-Type", "X-Request-ID"})
        self.assertGreater(int(h["access-control-max-age"]), 0)
        self.assertIn("Origin", self.methods(h["vary"]))
        self.assertNotIn("content-type", h)

    def test_preflight_on_an_item_without_requested_headers(self):
        answer = _hd_call(self.cors, "OPTIONS", "/City/1", [
            ("Origin", _HD_ORIGIN), ("Access-Control-Request-Method", "PUT")])
        self.assertEqual(answer.status, 204)
        h = answer.headers
        self.assertEqual(h["access-control-allow-origin"], _HD_ORIGIN)
        self.assertLessEqual({"PUT", "DELETE", "GET"},
                             self.methods(h["access-control-allow-methods"]))
        self.assertNotIn("access-control-allow-headers", h)

    def test_preflight_refused_origin(self):
        for origin in (_HD_EVIL, "null", _HD_ORIGIN + ".evil.example",
                       _HD_ORIGIN.upper(), "http://app.example"):
            with self.subTest(origin=origin):
                answer = _hd_call(self.cors, "OPTIONS", "/City", [
                    ("Origin", origin),
                    ("Access-Control-Request-Method", "POST")])
                self.assertEqual(answer.status, 403)
                self.assertEqual(_hd_error(answer), "Origin not allowed")
                self.assertNotIn("access-control-allow-origin",
                                 answer.headers)
                self.assertNotIn("access-control-allow-methods",
                                 answer.headers)

    SIMPLE = [
        ("GET", "/City/1", [], b"", 200),
        ("GET", "/City/999", [], b"", 404),
        ("POST", "/City", [_JSON], b"{bad", 400),
        ("POST", "/City", [_JSON], b'{"name": "Lyon"}', 201),
        ("PUT", "/City", [], b"", 405),
        ("POST", "/actions/stats", [], b"", 200),
        ("GET", "/spec.json", [], b"", 200),
        ("DELETE", "/Address/77", [], b"", 404),
    ]

    def test_simple_requests_from_the_allowed_origin(self):
        for method, target, headers, body, status in self.SIMPLE:
            with self.subTest(method=method, target=target):
                answer = _hd_call(self.cors, method, target,
                                  headers + [("Origin", _HD_ORIGIN)], body)
                self.assertEqual(answer.status, status)
                self.assertEqual(
                    answer.headers["access-control-allow-origin"], _HD_ORIGIN)
                self.assertIn("Origin", self.methods(answer.headers["vary"]))

    def test_simple_requests_from_a_refused_origin(self):
        for method, target, headers, body, status in self.SIMPLE:
            with self.subTest(method=method, target=target):
                answer = _hd_call(self.cors, method, target,
                                  headers + [("Origin", _HD_EVIL)], body)
                self.assertEqual(answer.status, status)
                self.assertNotIn("access-control-allow-origin",
                                 answer.headers)
                self.assertNotIn("access-control-allow-credentials",
                                 answer.headers)

    def test_no_cors_headers_without_cors_origins(self):
        for method, target, headers, body, status in self.SIMPLE + [
                ("OPTIONS", "/City", [("Access-Control-Request-Method",
                                       "POST")], b"", 204)]:
            with self.subTest(method=method, target=target):
                answer = _hd_call(self.plain, method, target,
                                  headers + [("Origin", _HD_ORIGIN)], body)
                self.assertEqual(answer.status, status)
                self.assertEqual(
                    [n for n in answer.headers
                     if n.startswith("access-control-") or n == "vary"], [])

    def test_over_http(self):
        server = _ThreadServer(self.cors)
        self.addCleanup(server.stop)
        answer = _http(server.port, "OPTIONS", "/actions/stats", [
            ("Origin", _HD_ORIGIN), ("Access-Control-Request-Method", "POST")])
        self.assertEqual(answer.status, 204)
        self.assertEqual(answer.headers["access-control-allow-origin"],
                         _HD_ORIGIN)
        answer = _http(server.port, "POST", "/actions/stats",
                          [("Origin", _HD_ORIGIN)])
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.headers["access-control-allow-origin"],
                         _HD_ORIGIN)


class TestHardeningFuzz(unittest.TestCase):
    """Hypothesis drives the places app and every type's from_json."""

    @classmethod
    def setUpClass(cls):
        cls.hypothesis = _need("hypothesis")
        cls.st = importlib.import_module("hypothesis.strategies")
        _hd_places_tmp(cls)
        _hd_call(cls.app, "POST", "/City", [_JSON], b'{"name": "Paris"}')

    @classmethod
    def tearDownClass(cls):
        _close_places(cls.places)
        cls.tmp.cleanup()

    def settings(self):
        return self.hypothesis.settings(
            max_examples=_HD_FUZZ_EXAMPLES, deadline=None, derandomize=True,
            database=None, suppress_health_check=[
                self.hypothesis.HealthCheck.too_slow,
                self.hypothesis.HealthCheck.filter_too_much,
                self.hypothesis.HealthCheck.data_too_large])

    def request_strategy(self):
        """(method, target bytes, query, Content-Type, body) tuples: half
        anything at all, half near-valid requests to real routes."""
        st = self.st
        methods = (st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD",
                                    "OPTIONS", "PATCH", "get", "post",
                                    "FOO", "TRACE", "PROPFIND"])
                   | st.text(_HD_TOKEN, min_size=1, max_size=8))
        segment = (st.sampled_from(["City", "Address", "actions", "stats",
                                    "rename_city", "spec.json",
                                    "openapi.json", "docs", "1", "2", "..",
                                    ".", "", "%2F", "%00", "%FF", "%0D%0A",
                                    "%C3%A9", "caf\u00e9", "%", "%zz",
                                    "\u2603", "9" * 25])
                   | st.text(max_size=6).map(lambda t: quote(t, safe="")))
        # Targets as bytes; the environ gets them percent-decoded and
        # carried as latin-1 text (PEP 3333).
        paths = (st.lists(segment, min_size=0, max_size=4).map(
            lambda parts: ("/" + "/".join(parts)).encode("utf-8"))
            | st.binary(max_size=12).map(lambda b: b"/" + b))
        queries = (st.sampled_from(["", "limit=5", "limit=x", "offset=-1",
                                    "limit=0", "name=Paris", "name=%FF",
                                    "country=&limit=100", "city=1",
                                    "limit=1e999", "limit=99999999999999999",
                                    "limit=5&limit=6", "bogus=1", "=",
                                    "offset=9223372036854775808",
                                    "city=%00", "name=%22Paris%22"])
                   | st.text(max_size=10).map(lambda t: quote(t, safe="=&")))
        header_text = st.text(st.characters(min_codepoint=32,
                                            max_codepoint=255,
                                            blacklist_characters="\x7f"),
                              max_size=24)
        content_types = st.sampled_from([
            None, "application/json", "application/json; charset=utf-8",
            "application/json; charset=latin-1", "text/plain", "",
            "APPLICATION/JSON", "application/json;;", "application/jsonx",
            "multipart/form-data; boundary=x"]) | header_text
        json_values = _hd_json_strategy(st, ["name", "country", "population",
                                             "number", "street", "_links",
                                             "city", "href", "self", "id"])
        city = [{"name": "Lyon"}, {"name": "Nice", "country": "France",
                                   "population": 340000},
                {"_links": {"self": {"href": "/City/1"}}, "name": "Paris"}]
        address = [{"number": 1, "street": "Rue",
                    "_links": {"city": {"href": "/City/1"}}}]
        rename = [{"id": "1", "name": "Lutetia"}]
        bodies = (st.just(b"") | st.binary(max_size=40)
                  | json_values.map(lambda v: json.dumps(v).encode())
                  | _hd_mutations(st, city + address + rename,
                                  json_values).map(
                      lambda v: json.dumps(v).encode()))
        anything = st.tuples(methods, paths, queries, content_types, bodies)

        def near(method, path, seeds=None):
            """A real route, its valid bodies, and mutations of them."""
            if seeds is None:
                body = st.just(b"") | bodies
            else:
                body = (st.sampled_from(seeds)
                        | _hd_mutations(st, seeds, json_values)).map(
                    lambda v: json.dumps(v).encode())
            return st.tuples(
                st.just(method),
                st.integers(1, 30).map(
                    lambda n: path.replace(b"%d", b"%d" % n)),
                queries if seeds is None else st.just(""),
                st.sampled_from(["application/json"] * 3 + [None]),
                body)

        near_valid = st.one_of(
            near("GET", b"/City"), near("POST", b"/City", city),
            near("GET", b"/City/%d"), near("PUT", b"/City/%d", city),
            near("DELETE", b"/City/%d"), near("GET", b"/Address"),
            near("POST", b"/Address", address),
            near("GET", b"/Address/%d"),
            near("PUT", b"/Address/%d", address),
            near("DELETE", b"/Address/%d"), near("POST", b"/actions/stats"),
            near("POST", b"/actions/rename_city", rename),
            near("GET", b"/spec.json"), near("HEAD", b"/City/%d"),
            near("OPTIONS", b"/Address"))
        return anything | near_valid, header_text

    def test_wsgi_app_never_5xx(self):
        st = self.st
        requests, header_text = self.request_strategy()
        extras = st.fixed_dictionaries({}, optional={
            "HTTP_X_REQUEST_ID": header_text,
            "HTTP_ACCEPT": st.sampled_from(["application/problem+json",
                                            "*/*", "text/html"]),
            "HTTP_ORIGIN": header_text,
            "HTTP_EXPECT": st.just("100-continue"),
            "HTTP_RANGE": header_text,
            "short_input": st.integers(1, 10),
        })
        app = self.app
        seen = collections.Counter()

        @self.settings()
        @self.hypothesis.given(requests, extras)
        def run(request, extra):
            method, path, query, content_type, body = request
            extra = dict(extra)
            short = extra.pop("short_input", 0)
            headers = [("Content-Type", content_type)] if content_type \
                is not None else []
            env = _hd_environ(method, "/", headers, body, extra)
            env["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
            env["QUERY_STRING"] = query
            if short and body:  # Content-Length promises more than sent
                env["CONTENT_LENGTH"] = str(len(body) + short)
            answer = _wsgi_run(app, env)  # validator errors propagate
            seen[answer.status] += 1
            self.assertLess(answer.status, 500,
                            (method, path, query, content_type, body, extra,
                             answer.body[:300]))
            if answer.status >= 400 and method != "HEAD":
                if "problem" in env.get("HTTP_ACCEPT", ""):
                    json.loads(answer.body)
                else:
                    _hd_error(answer)

        run()
        _HD_SUMMARY.append("fuzzed requests through the validator: %d, "
                           "statuses %s" % (sum(seen.values()),
                                            dict(sorted(seen.items()))))
        for status in (200, 201, 204, 400, 404, 405):
            self.assertGreater(seen[status], 0, status)

    def fuzz_api(self):
        with cosmic.cosmos.swap({}):
            api = API("hdfuzz")

            @api.model
            class City(BaseModel):
                methods = ["get_by_id"]
                properties = [required("name", String),
                              optional("population", Integer),
                              optional("founded", DateTime),
                              optional("flag", Binary)]

                @classmethod
                def validate_patch(cls, patch):
                    name = patch.get("name")
                    if name is not None and (not name or name[0].islower()):
                        raise ValidationError("Name must be capitalized",
                                              name)

            @api.model
            class Address(BaseModel):
                methods = ["get_by_id"]
                properties = [required("number", Integer)]
                links = [required("city", City), optional("twin", City)]

            @api.action(accepts=Struct([required("a", Integer)]),
                        returns=Array(String))
            def act(a):
                return []

        return api

    def test_from_json_raises_only_validation_error(self):
        st = self.st
        api = self.fuzz_api()
        city = Model("hdfuzz.City")
        address = Model("hdfuzz.Address")
        types = [
            ("Integer", Integer), ("Float", Float), ("Boolean", Boolean),
            ("String", String), ("Binary", Binary), ("DateTime", DateTime),
            ("JSON", JSON), ("Array(Integer)", Array(Integer)),
            ("Array(Array(Float))", Array(Array(Float))),
            ("Map(Boolean)", Map(Boolean)),
            ("OrderedMap(String)", OrderedMap(String)),
            ("Struct", Struct([required("a", Integer),
                               optional("b", Array(String)),
                               optional("c", DateTime)])),
            ("Schema", Schema), ("Model", Model),
            ("Link(City)", Link(city)),
            ("Representation(City)", Representation(city)),
            ("Patch(City)", Patch(city)),
            ("Representation(Address)", Representation(address)),
            ("Patch(Address)", Patch(address)),
            ("URLParams", URLParams([optional("a", Integer),
                                     optional("s", String),
                                     optional("d", DateTime)])),
            ("APISpec", APISpec),
        ]
        spec_json = APISpec.to_json(api.spec)
        seeds = {
            "Schema": [{"type": "Integer"},
                       {"type": "Array", "param": {"type": "String"}},
                       {"type": "Struct", "param": {"map": {"a": {
                           "schema": {"type": "Integer"}, "required": True}},
                           "order": ["a"]}},
                       {"type": "cosmic.Link", "param": "hdfuzz.City"}],
            "APISpec": [spec_json],
            "Representation(Address)": [
                {"number": 1, "_links": {"city": {"href": "/City/1"},
                                         "self": {"href": "/Address/2"}}}],
            "Patch(City)": [{"name": "Paris", "population": 1,
                             "founded": "2020-01-01T00:00:00Z",
                             "flag": "AAEC"}],
            "Struct": [{"a": 1, "b": ["x"], "c": "2020-01-01T00:00:00Z"}],
            "OrderedMap(String)": [{"map": {"a": "x", "b": "y"},
                                    "order": ["a", "b"]}],
        }
        keys = ["type", "param", "map", "order", "schema", "required", "doc",
                "name", "actions", "models", "properties", "links",
                "query_fields", "list_metadata", "methods", "accepts",
                "returns", "_links", "self", "href", "a", "b", "c", "number",
                "city", "model", "get_by_id", "Integer", "cosmic.Link",
                "hdfuzz.City"]
        values = _hd_json_strategy(st, keys)
        strings = st.sampled_from(["", "1", "a=1", "a=x", "s=%FF", "d=2020",
                                   "a=1&a=2", "=", "&&", "a=1e999",
                                   "2020-01-01T00:00:00Z", "/City/1",
                                   "hdfuzz.City", "AAEC", "A", "true"])
        # Every datum goes through every type: arbitrary JSON, strings that
        # look like query strings, dates and links, and valid values of
        # several types with one spot replaced or removed.
        all_seeds = [v for values_ in seeds.values() for v in values_]
        data = (values | strings | st.sampled_from(all_seeds)
                | _hd_mutations(st, all_seeds, values))
        surprises = []
        checked = collections.Counter()

        @self.settings()
        @self.hypothesis.given(data)
        def run(datum):
            for name, schema in types:
                try:
                    schema.from_json(datum)
                    checked[name, "ok"] += 1
                except ValidationError:
                    checked[name, "invalid"] += 1
                except Exception as exc:
                    surprises.append((name, datum, repr(exc)))
                    raise AssertionError("%s.from_json(%r) raised %r"
                                         % (name, datum, exc)) from exc

        with cosmic.cosmos.swap({"hdfuzz": api}):
            run()
        self.assertEqual(surprises, [])
        # Each type (but JSON, which takes anything) refused some data.
        for name, _ in types:
            if name != "JSON":
                self.assertGreater(checked[name, "invalid"], 0, name)
        _HD_SUMMARY.append("from_json fuzzing: %d types x %d values, "
                           "valid answers per type: %s" % (
                               len(types), _HD_FUZZ_EXAMPLES,
                               {n: checked[n, "ok"] for n, _ in types}))


class TestScaleDeployment(unittest.TestCase):
    """Two gunicorn instances of places on PostgreSQL behind nginx: a mixed
    load, an If-Match contest, and one instance killed mid-load."""

    @classmethod
    def setUpClass(cls):
        _need("gunicorn", importlib.util.find_spec("gunicorn"))
        _need("nginx", _SC_NGINX)
        cls.stack = contextlib.ExitStack()
        try:
            cls.pg = _sc_Postgres()
            cls.stack.callback(cls.pg.stop)
            cls.dir = tempfile.mkdtemp(prefix="cosmic-sc-deploy-")
            cls.stack.callback(shutil.rmtree, cls.dir, True)
            cls.ports = [_hd_free_port() for _ in range(3)]
            cls.instances = []
            for port in cls.ports[:2]:
                cls.start_instance(port)
            cls.nginx = _sc_Nginx(cls.dir, cls.ports[2], *cls.ports[:2])
            cls.stack.callback(cls.nginx.stop)
        except BaseException:
            cls.stack.close()
            raise

    @classmethod
    def start_instance(cls, port):
        instance = _sc_Gunicorn(port, cls.pg.url, os.path.join(
            cls.dir, "gunicorn-%d.log" % port))
        cls.stack.callback(instance.stop)
        cls.instances.append(instance)
        return instance

    @classmethod
    def tearDownClass(cls):
        cls.stack.close()

    def check_counts(self, load):
        """Acknowledged creates are there once; deletes are gone; a create
        whose answer was lost is there at most once (and counted)."""
        rows = self.pg.query("SELECT id, name FROM city")
        ids = collections.Counter(str(ident) for ident, _ in rows)
        deleted = set(load.deleted)
        for ident, name in load.created:
            self.assertEqual(ids[ident], 0 if ident in deleted else 1,
                             (ident, name))
        names = collections.Counter(name for _, name in rows)
        landed = [name for name in load.unknown_creates if names[name]]
        for name in load.unknown_creates + load.unknown_renames:
            self.assertLessEqual(names[name], 1, name)
        streets = collections.Counter(
            street for (street,) in self.pg.query(
                "SELECT street FROM address"))
        for street in load.addresses:
            self.assertEqual(streets[street], 1, street)
        for street in load.unknown_addresses:
            self.assertLessEqual(streets[street], 1, street)
        mine = [name for _, name in rows if name.startswith(
            ("L%s_" % load.prefix, "R%s_" % load.prefix))]
        acknowledged = len(load.created) - len(deleted)
        self.assertEqual(len(mine), acknowledged + len(landed))
        # No acknowledged update lost: each client knows the population of
        # each of its cities (after a write of unknown outcome it read the
        # city again).
        populations = dict((str(ident), population) for ident, population
                           in self.pg.query("SELECT id, population FROM city"))
        for client in load.clients:
            for ident, city in client.cities.items():
                self.assertEqual(populations[ident], city["population"],
                                 ident)
        # Other failed writes that landed anyway (their answer was lost).
        writes = [street for street in load.unknown_addresses
                  if streets[street]]
        writes += [name for name in load.unknown_renames if names[name]]
        return acknowledged, len(mine), landed, writes

    def test_1_mixed_load(self):
        load = _sc_Load(self.ports[2], "a")
        self.assertEqual(load.run(), [])
        self.assertEqual(load.failed(), [])
        self.assertEqual(load.explained(), [])
        self.assertEqual(set(load.statuses), {200, 201, 204})
        acknowledged, rows, _, _ = self.check_counts(load)
        self.assertEqual(acknowledged, rows)
        # Both instances answered.
        upstreams = collections.Counter(
            line[1] for rid, line in self.nginx.access().items()
            if rid.startswith("a-"))
        self.assertEqual(set(upstreams), {"127.0.0.1:%d" % port
                                          for port in self.ports[:2]})
        print("\n[scale: nginx mixed load: %s; per instance %s; acknowledged "
              "creates %d = rows %d]" % (load.summary(), dict(upstreams),
                                         acknowledged, rows))

    def test_2_if_match_contest(self):
        url = "http://127.0.0.1:%d" % self.ports[2]
        status, headers, body = _http_json(url, "POST", "/City",
                                           {"name": "Contest"})
        self.assertEqual(status, 201)
        path = headers["location"]
        results = []
        for round_ in range(5):
            status, headers, body = _http_json(url, "GET", path)
            tag = {k.lower(): v for k, v in headers.items()}["etag"]
            barrier = threading.Barrier(8, timeout=30)
            answers = []

            def put(n, tag=tag, round_=round_):
                conn = http.client.HTTPConnection("127.0.0.1",
                                                  self.ports[2], 30)
                barrier.wait()
                conn.request("PUT", path, json.dumps(
                    {"population": round_ * 10 + n}),
                    {"Content-Type": "application/json", "If-Match": tag})
                res = conn.getresponse()
                answers.append((res.status, round_ * 10 + n))
                res.read()
                conn.close()

            threads = [threading.Thread(target=put, args=(n,))
                       for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            codes = collections.Counter(code for code, _ in answers)
            self.assertEqual(codes, {200: 1, 412: 7})
            winner = [value for code, value in answers if code == 200][0]
            [(version, population)] = self.pg.query(
                "SELECT version, population FROM city WHERE id = %s",
                (int(path.rsplit("/", 1)[1]),))
            self.assertEqual((version, population), (round_ + 2, winner))
            results.append(codes)
        print("\n[scale: If-Match contest, 5 versions x 8 concurrent PUTs "
              "through nginx: %s]" % ", ".join(
                  "v%d: %d won, %d got 412" % (n + 1, c[200], c[412])
                  for n, c in enumerate(results)))

    def test_3_instance_killed_mid_load(self):
        load = _sc_Load(self.ports[2], "k")
        result = []
        runner = threading.Thread(target=lambda: result.append(load.run()))
        runner.start()
        try:
            load.wait_for(500)
            killed = self.instances[0]
            killed.kill()
            # Gone when its port refuses connections (the workers, which
            # hold the listening socket too, have exited): a request sent
            # to it before then may have been in flight.
            _wait(lambda: not _sc_listening(killed.port), 30,
                     "the killed instance's port to close")
            kill_time = time.perf_counter()
            load.wait_for(900)
            self.instances.remove(killed)
            restarted = self.start_instance(killed.port)
            restart_time = time.perf_counter()
        finally:
            runner.join(300)
        self.assertEqual(result, [[]])
        access = self.nginx.access()
        target = "127.0.0.1:%d" % killed.port
        for _, rid, start, _ in load.failed():
            with self.subTest(failed=rid):
                # In flight on the killed instance when it died.
                self.assertLess(start, kill_time)
                self.assertIn(target, self.nginx.line(rid)[1])
        for _, rid, _ in load.explained():
            with self.subTest(explained=rid):
                self.assertIn(target, self.nginx.line(rid)[1])
        acknowledged, rows, landed, writes = self.check_counts(load)
        # The restarted instance serves again, directly and through nginx.
        self.assertTrue(_hd_answers(restarted.port))
        # nginx tries it again once fail_timeout (1 s) has passed since
        # its last failure there.
        after = []

        def served_by_restarted():
            after.append(self.call_nginx("/City?limit=1"))
            return self.nginx.line(after[-1][1])[1] == target

        _wait(served_by_restarted, 30, "nginx to use the restarted "
                 "instance")
        self.assertEqual({status for status, _ in after}, {200})
        access = self.nginx.access()
        failed = collections.Counter(
            "%s %s" % (op, status or "cut short")
            for op, _, _, status in load.failed())
        unknown = len(load.unknown_addresses) + len(load.unknown_renames)
        # Requests nginx sent to the killed instance and then to the other:
        # in flight when it died, or sent just after, before nginx marked
        # it down (both: "A, B" in $upstream_addr).
        resent = collections.Counter(
            "%s %s->%s" % (line[3], *line[2].split(", ")[:2])
            for rid, line in access.items() if rid.startswith("k-") and
            line[1].startswith(target + ", "))
        print("\n[scale: resent by nginx from the killed instance to the "
              "other (method, statuses): %s]" % (dict(resent) or "none"))
        print("\n[scale: killed one instance (SIGKILL to its process group) "
              "after 500 calls: %s; failed in flight (nginx's 502, or its "
              "answer cut short): %s; of those, creates that landed anyway: %d of %d, "
              "other writes that landed: %d of %d; writes resent by nginx "
              "and answered by the other instance: %s; acknowledged creates "
              "%d = rows %d - %d landed; restarted in %.1f s and served "
              "again]" % (
                  load.summary(), dict(failed) or "none", len(landed),
                  len(load.unknown_creates), len(writes), unknown,
                  dict(collections.Counter(
                      "%s %d" % (op, code) for op, _, code in
                      load.explained())) or "none",
                  acknowledged, rows, len(landed),
                  restart_time - kill_time))

    def call_nginx(self, path):
        rid = "after-%s" % next(_SC_COUNTER)
        conn = http.client.HTTPConnection("127.0.0.1", self.ports[2], 30)
        try:
            conn.request("GET", path, headers={"X-Request-ID": rid})
            res = conn.getresponse()
            res.read()
        finally:
            conn.close()
        return res.status, rid


class TestHardeningZReport(unittest.TestCase):
    """Runs last among the TestHardening classes (names load in order)."""

    def test_write_table_and_no_5xx_for_client_mistakes(self):
        lines = ["%-52s %-32s %6s %8s %9s  %s" % (
            "case", "where", "status", "bytes", "ms", "body (start)")]
        for case, where, status, body, elapsed in _HD_TABLE:
            shown = "".join(c if c.isprintable() else "\\x%02x" % ord(c)
                            for c in body[:60].decode("latin-1"))
            lines.append("%-52s %-32s %6s %8d %9.2f  %s" % (
                case[:52], where[:32],
                "close" if status is None else status, len(body),
                elapsed * 1000, shown))
        lines.append("")
        for case, before, after, sent in _HD_MEMORY:
            lines.append("%s: server VmRSS %d KiB -> %d KiB (%+d KiB), "
                         "%d body bytes sent" % (case, before, after,
                                                 after - before, sent))
        for line in _HD_SUMMARY:
            lines.append(line)
        with open("/tmp/cosmic_hostile_table.txt", "w") as f:
            f.write("\n".join(lines) + "\n")
        self.assertEqual(_HD_5XX, [])


# -- The repository -----------------------------------------------------------
# The protocol document and the type checker's findings.


class TestProtocolDocument(unittest.TestCase):
    """docs/protocol.md exists, and every pointer into it leads somewhere."""

    @classmethod
    def setUpClass(cls):
        cls.doc = _st_read("docs/protocol.md")
        cls.anchors = _st_anchors(cls.doc)

    def test_anchor_helper(self):
        self.assertEqual(
            _st_anchors("# A b\n```\n# not\n```\n## C, d (e)\n## A b\n"),
            {"a-b", "c-d-e", "a-b-1"})

    def test_references_name_existing_headings(self):
        for name in ("cosmic.py", "test_cosmic.py", "README.md"):
            refs = set(_ST_REF.findall(_st_read(name)))
            if name != "README.md":
                self.assertTrue(refs, name)
            missing = sorted(refs - self.anchors)
            self.assertEqual(missing, [], "%s points to headings that "
                             "docs/protocol.md does not have" % name)

    def test_readme_links_the_document(self):
        self.assertTrue("(docs/protocol.md)" in _st_read("README.md"))

    def test_internal_links_resolve(self):
        links = set(re.findall(r"\]\(#([^)]+)\)", self.doc))
        self.assertGreater(len(links), 20)
        self.assertEqual(sorted(links - self.anchors), [])

    def test_sections_that_other_work_extends(self):
        for anchor in ("routes", "status-codes", "errors", "problem-details",
                       "the-spec", "types", "constraints", "hal-bodies",
                       "query-strings", "conditional-requests",
                       "authentication", "http-framing",
                       "unknown-fields-in-answers", "client-behaviour"):
            self.assertIn(anchor, self.anchors)

    def _example(self, heading, after=None):
        """The first JSON value in a fenced block of a section, parsed."""
        section = self.doc.split("\n" + heading + "\n", 1)[1]
        section = section.split("\n## ", 1)[0].split("\n### ", 1)[0]
        block = section.split("```", 2)[1]
        block = block.split("\n", 1)[1]  # past the info string
        if after is not None:
            block = block.split(after, 1)[1]
        start = min(i for i in (block.find("{"), block.find('"')) if i >= 0)
        return json.JSONDecoder().raw_decode(block[start:])[0]

    def test_examples_are_what_the_server_sends(self):
        with cosmos.swap({}):
            app = Server(_st_library()).wsgi_app
            spec = _wsgi(app, "GET", "/spec.json")
            listing = _wsgi(app, "GET", "/Book",
                            query="min_rating=4&author=2&sort=year")
            book = _wsgi(app, "GET", "/Book/7")
            lent = _wsgi(app, "POST", "/actions/lend", b'{"book_id": "7"}',
                         [_JSON])
        self.assertEqual(json.loads(spec[2]),
                         self._example("### Spec example"))
        self.assertEqual(json.loads(listing[2]),
                         self._example("### List body"))
        self.assertEqual(json.loads(book[2]),
                         self._example("### Representation"))
        self.assertEqual(json.loads(lent[2]),
                         self._example("### Action endpoint", "-> 200"))

    def test_no_reference_outside_the_repository(self):
        # The name is built so that this file does not contain it.
        outside = re.compile(r"\b" + "WI" + r"RE(\.md)?\b")
        for name in ("cosmic.py", "test_cosmic.py"):
            text = _st_read(name)
            self.assertIsNone(outside.search(text), name)
            for doc in set(re.findall(r"[\w./-]+\.md\b", text)):
                self.assertTrue(os.path.isfile(os.path.join(_ROOT, doc)),
                                "%s names %s, not in the repository"
                                % (name, doc))


class TestTypeCheckFindings(unittest.TestCase):
    """What making the file type-check found."""

    def test_target_file_that_is_not_python(self):
        # importlib finds no loader for a non-.py file: a usage error
        # (status 2, one line), not a traceback.
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "st_api.txt")
            with open(path, "w") as f:
                f.write("x = 1\n")
            code, err = _sv_cli("spec", path)
        self.assertEqual(code, 2, err)
        self.assertNotIn("Traceback", err)
        self.assertIn("Not a Python file", err)


# == original ================================================================
# the original Cosmic 0.5.6 test suite's cases, run against this file


def _or_field(required, type_name):
    return {"required": required, "schema": {"type": type_name}}


def _or_omap(pairs):
    """The JSON form of an OrderedMap, from (key, value) pairs."""
    return {"map": dict(pairs), "order": [key for key, _ in pairs]}


def _or_methods(*enabled):
    return {name: name in enabled for name in
            ("get_by_id", "get_list", "create", "update", "delete")}


def _or_model_json(properties, links=(), query_fields=(), list_metadata=(),
                   methods=()):
    return {"properties": _or_omap(properties), "links": _or_omap(links),
            "query_fields": _or_omap(query_fields),
            "list_metadata": _or_omap(list_metadata),
            "methods": _or_methods(*methods)}


def _or_cookbook():
    """The original suite's cookbook API (register inside an isolated
    registry): two actions, a model with validate_patch, a model whose
    get_list needs a query field."""
    cookbook = API("cookbook")

    @cookbook.action(accepts=Struct([required("spicy", Boolean),
                                     optional("capitalize", Boolean)]),
                     returns=String)
    def cabbage(spicy, capitalize=False):
        "Yay cabbage"
        dish = "kimchi" if spicy else "sauerkraut"
        return dish.capitalize() if capitalize else dish

    @cookbook.action(accepts=None, returns=None)
    def noop():
        "Does not do anything"

    @cookbook.model
    class Recipe(BaseModel):
        properties = [required("name", String)]

        @classmethod
        def validate_patch(cls, datum):
            if datum["name"] == "bacon":
                raise ValidationError("Not kosher")

    @cookbook.model
    class Author(BaseModel):
        methods = ["get_list"]
        properties = [required("is_gordon_ramsay", Boolean)]
        query_fields = [required("is_gordon_ramsay", Boolean)]

        @classmethod
        def get_list(cls, is_gordon_ramsay):
            return [("0", {"is_gordon_ramsay": True})]

    return cookbook, Author


_OR_COOKBOOK_SPEC = {
    "name": "cookbook",
    "actions": _or_omap([
        ("cabbage", {
            "accepts": {"type": "Struct", "param": _or_omap([
                ("spicy", _or_field(True, "Boolean")),
                ("capitalize", _or_field(False, "Boolean"))])},
            "returns": {"type": "String"},
            "doc": "Yay cabbage"}),
        ("noop", {"doc": "Does not do anything"})]),
    "models": _or_omap([
        ("Recipe", _or_model_json([("name", _or_field(True, "String"))])),
        ("Author", _or_model_json(
            [("is_gordon_ramsay", _or_field(True, "Boolean"))],
            query_fields=[("is_gordon_ramsay", _or_field(True, "Boolean"))],
            methods=["get_list"]))]),
}


class TestOriginalCookbook(unittest.TestCase):
    """The original api_test: the cookbook API, locally and over WSGI."""

    maxDiff = None

    def setUp(self):
        _sv_isolate(self)
        self.cookbook, self.Author = _or_cookbook()
        self.app = Server(self.cookbook).wsgi_app
        self.recipe = Representation(Model("cookbook.Recipe"))

    def test_get_list_without_its_required_query_field_is_400(self):
        status, _, body = _wsgi(self.app, "GET", "/Author")
        self.assertEqual(status, 400)
        self.assertIn("is_gordon_ramsay", json.loads(body)["error"])

    def test_representation_round_trip(self):
        datum = {"_links": {"self": {"href": "/Recipe/24"}},
                 "name": "pancake"}
        rid, rep = self.recipe.from_json(datum)
        self.assertEqual((rid, rep), ("24", {"name": "pancake"}))
        self.assertEqual(self.recipe.to_json((rid, rep)), datum)

    def test_representation_refuses_a_non_object(self):
        with self.assertRaises(ValidationError):
            self.recipe.from_json(1.1)

    def test_validate_patch_runs_on_the_model(self):
        _, rep = self.recipe.from_json(
            {"_links": {"self": {"href": "/Recipe/123"}}, "name": "bacon"})
        with self.assertRaisesRegex(ValidationError, "^Not kosher$"):
            self.cookbook.models.Recipe.validate_patch(rep)

    def test_models_namespace_holds_each_registered_model(self):
        self.assertEqual(set(vars(self.cookbook.models)),
                         {"Recipe", "Author"})

        @self.cookbook.model
        class ChocolateAuthor(self.Author):
            pass

        self.assertEqual(set(vars(self.cookbook.models)),
                         {"Recipe", "Author", "ChocolateAuthor"})
        self.assertEqual(self.cookbook.models.ChocolateAuthor.get_list(
            is_gordon_ramsay=True), [("0", {"is_gordon_ramsay": True})])

    def test_spec_json_is_the_originals(self):
        self.assertEqual(APISpec.to_json(self.cookbook.spec),
                         _OR_COOKBOOK_SPEC)
        status, _, body = _wsgi(self.app, "GET", "/spec.json")
        self.assertEqual((status, json.loads(body)), (200, _OR_COOKBOOK_SPEC))

    def test_spec_survives_a_round_trip(self):
        spec = APISpec.from_json(APISpec.to_json(self.cookbook.spec))
        self.assertEqual(APISpec.to_json(spec), _OR_COOKBOOK_SPEC)

    def test_action_called_locally_with_keywords(self):
        self.assertEqual(self.cookbook.actions.cabbage(spicy=False),
                         "sauerkraut")
        self.assertEqual(
            self.cookbook.actions.cabbage(spicy=True, capitalize=True),
            "Kimchi")

    def test_wrong_method_is_405_not_the_originals_404(self):
        # The original routed GET /actions/noop and POST /spec.json to
        # model routes of unknown models (404); docs/protocol.md makes
        # them 405 with Allow, on purpose.
        for method, path, allow in (("GET", "/actions/noop", "POST"),
                                    ("POST", "/spec.json", "GET")):
            with self.subTest(path=path):
                status, headers, body = _wsgi(self.app, method, path)
                self.assertEqual((status, body),
                                 (405, _sv_err("Method Not Allowed")))
                self.assertIn(allow, _sv_allow(headers))

    def test_wrong_content_type_is_400_naming_the_header(self):
        status, _, body = _wsgi(self.app, "POST", "/actions/cabbage", b"1",
                                   {"Content-Type": "application/xml"})
        self.assertEqual(status, 400)
        self.assertIn("Content-Type", json.loads(body)["error"])

    def test_action_answers_its_json(self):
        status, headers, body = _wsgi_json(self.app, "POST", "/actions/cabbage",
                                         {"spicy": True})
        self.assertEqual((status, body), (200, b'"kimchi"'))
        self.assertEqual(headers["content-type"], "application/json")

    def test_action_without_input_or_output_answers_204_empty(self):
        status, _, body = _wsgi(self.app, "POST", "/actions/noop")
        self.assertEqual((status, body), (204, b""))


class TestOriginalURLParams(unittest.TestCase):
    """The original http_test: URLParams, a query string of JSON values."""

    def setUp(self):
        self.schema = URLParams([optional("foo", String),
                                 required("bars", Array(Integer))])

    def test_reads_json_values_and_bare_strings(self):
        for query, expected in (
                ("foo=Wha&bars=[1]", {"foo": "Wha", "bars": [1]}),
                ("foo=Wha&bars=[1,2,3]", {"foo": "Wha", "bars": [1, 2, 3]}),
                ("bars=[1,2,3]", {"bars": [1, 2, 3]})):
            with self.subTest(query=query):
                self.assertEqual(self.schema.from_json(query), expected)

    def test_datetime_is_written_as_a_percent_encoded_string(self):
        schema = URLParams([optional("birthday", DateTime)])
        day = datetime.datetime(1991, 8, 12)
        self.assertEqual(schema.to_json({"birthday": day}),
                         "birthday=1991-08-12T00%3A00%3A00")
        self.assertEqual(schema.from_json("birthday=1991-08-12T00%3A00%3A00"),
                         {"birthday": day})

    def test_a_bad_item_deep_inside_is_named(self):
        with self.assertRaisesRegex(ValidationError,
                                    r"\[1\] Invalid Integer: 1\.2"):
            self.schema.from_json("foo=Wha&bars=[1,1.2]")

    def test_a_repeated_field_is_refused(self):
        with self.assertRaises(ValidationError):
            self.schema.from_json("foo=Wha&bars=[1]&foo=Bing")


class TestOriginalGlobals(unittest.TestCase):
    """The original test_globals: SwappableDict and ThreadLocalDict."""

    def test_swappable_dict_is_a_dict(self):
        s = SwappableDict()
        s["a"] = 1
        self.assertEqual((s["a"], len(s)), (1, 1))
        del s["a"]
        self.assertEqual(len(s), 0)

    def test_swap_restores_the_old_contents(self):
        s = SwappableDict()
        s.update({"a": 1})
        with s.swap({"b": 2}):
            self.assertEqual(dict(s), {"b": 2})
        self.assertEqual(dict(s), {"a": 1})

    def test_thread_local_dict_needs_a_thread_local(self):
        with self.assertRaises(ThreadLocalMissing):
            ThreadLocalDict()["a"] = 1

    def test_each_thread_sees_only_its_own_values(self):
        s = ThreadLocalDict()
        together = threading.Barrier(10, timeout=60)
        seen = []

        def run(n):
            with thread_local():
                together.wait()  # all ten hold a thread-local at once
                seen.append(dict(s))
                s["a"] = n
                together.wait()
                seen.append(dict(s) == {"a": n})
                del s["a"]
                seen.append(dict(s))

        threads = [threading.Thread(target=run, args=(n,)) for n in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(sorted(map(repr, seen)),
                         sorted(["{}"] * 20 + ["True"] * 10))
        self.assertEqual(dict(storage), {})


class TestOriginalTools(unittest.TestCase):
    """The original tools_test: signatures, argument packing, helpers."""

    def test_get_args_names_required_then_optional(self):
        def none(): pass
        def one(x): pass
        def one_default(x=1): pass
        def two(x, y): pass
        def mixed(x, y=1): pass
        def defaults(x=0, y=1): pass
        for func, expected in ((none, ((), ())), (one, (("x",), ())),
                               (one_default, ((), ("x",))),
                               (two, (("x", "y"), ())),
                               (mixed, (("x",), ("y",))),
                               (defaults, ((), ("x", "y")))):
            with self.subTest(func=func.__name__):
                self.assertEqual(get_args(func), expected)

    def test_get_args_refuses_splats(self):
        def f(*arg): pass
        with self.assertRaisesRegex(SpecError, "splats"):
            get_args(f)

    def test_args_to_datum(self):
        self.assertEqual(args_to_datum("universe"), "universe")
        self.assertEqual(args_to_datum(what="universe"), {"what": "universe"})
        self.assertEqual(args_to_datum(what="universe", when="now"),
                         {"what": "universe", "when": "now"})
        self.assertIsNone(args_to_datum())
        for args, kwargs in ((("universe", "now"), {}),
                             (("universe",), {"when": "now"})):
            with self.subTest(args=args, kwargs=kwargs):
                with self.assertRaises(SpecError):
                    args_to_datum(*args, **kwargs)

    def test_assert_is_compatible(self):
        with self.assertRaisesRegex(SpecError, "needs to accept"):
            assert_is_compatible(JSON, (), ())
        assert_is_compatible(JSON, ("a",), ())
        assert_is_compatible(JSON, (), ("a",))
        with self.assertRaisesRegex(SpecError, "be a Struct"):
            assert_is_compatible(JSON, ("a", "b"), ())
        for fields, required_args, optional_args, message in (
                ([required("a", Integer)], ("a", "b"), (), "required field"),
                ([required("a", Integer), optional("b", Integer)],
                 ("a", "b"), (), "required field"),
                ([required("a", Integer), required("b", Integer),
                  optional("c", Integer)], ("a", "b"), (),
                 "function argument"),
                ([required("a", Integer), required("b", Integer),
                  optional("c", Integer)], ("a",), ("b",),
                 "function argument")):
            with self.subTest(required=required_args, optional=optional_args,
                              fields=[name for name, _ in fields]):
                with self.assertRaisesRegex(SpecError, message):
                    assert_is_compatible(Struct(fields), required_args,
                                         optional_args)

    def test_deserialize_json(self):
        with self.assertRaisesRegex(ValidationError, "Expected Box, found None"):
            deserialize_json(Integer, None)
        with self.assertRaisesRegex(ValidationError, "Expected None, found Box"):
            deserialize_json(None, Box(1))
        self.assertIsNone(deserialize_json(None, None))
        self.assertEqual(deserialize_json(Integer, Box(1)), 1)

    def test_serialize_json(self):
        with self.assertRaisesRegex(ValidationError,
                                    "Expected data, found None"):
            serialize_json(Integer, None)
        with self.assertRaisesRegex(ValidationError,
                                    "Expected None, found data"):
            serialize_json(None, 1)
        self.assertIsNone(serialize_json(None, None))
        self.assertEqual(serialize_json(Integer, 1).datum, 1)
        self.assertEqual(serialize_json(Integer, 0).datum, 0)  # falsy, kept

    def test_string_to_json(self):
        self.assertIsNone(string_to_json(""))
        self.assertEqual(string_to_json("1").datum, 1)

    def test_validate_underscore_identifier(self):
        validate_underscore_identifier("hello_world")
        for name, message in (("hello_\ufffdorld", ""),
                              ("_private", "cannot start or end"),
                              ("weird_", "cannot start or end"),
                              ("what__what", "consecutive underscores")):
            with self.subTest(name=name):
                with self.assertRaisesRegex(SpecError, message):
                    validate_underscore_identifier(name)


class TestOriginalGuide(unittest.TestCase):
    """The original docs_test: the user guide's examples, each API in a
    registry of its own (cosmos.swap), the clients in another."""

    maxDiff = None

    def setUp(self):
        self.server_cosmos = {}
        self.client_cosmos = {}
        self.cities = {"0": {"name": "Toronto"}, "1": {"name": "San Francisco"}}

    def _client(self, api, **attrs):
        with cosmos.swap(self.client_cosmos):
            client_class = type("GuideClient", (WsgiAPIClient,), dict(
                wsgi_app=Server(api).wsgi_app, **attrs))
            return client_class()

    def test_empty_api_spec_with_homepage(self):
        with cosmos.swap(self.server_cosmos):
            trivia = API("trivia", homepage="http://example.com")
            self.assertEqual(APISpec.to_json(trivia.spec), {
                "name": "trivia", "homepage": "http://example.com",
                "actions": _or_omap([]), "models": _or_omap([])})

    def _places_with_address(self):
        places = API("places")

        @places.model
        class Address(BaseModel):
            properties = [required("number", Integer),
                          required("street", String),
                          optional("city", String)]

        return places

    def test_model_spec_and_representation(self):
        with cosmos.swap(self.server_cosmos):
            places = self._places_with_address()
            self.assertEqual(APISpec.to_json(places.spec), {
                "name": "places", "actions": _or_omap([]),
                "models": _or_omap([("Address", _or_model_json([
                    ("number", _or_field(True, "Integer")),
                    ("street", _or_field(True, "String")),
                    ("city", _or_field(False, "String"))]))])})
            rep = {"number": 31, "street": "Sesame"}
            self.assertEqual(
                Representation(Model("places.Address")).to_json((None, rep)),
                rep)

    def test_required_link_to_a_model_of_the_same_api(self):
        with cosmos.swap(self.server_cosmos):
            places = API("places")

            @places.model
            class City(BaseModel):
                properties = [optional("name", String)]

            @places.model
            class Address(BaseModel):
                properties = [required("number", Integer),
                              required("street", String)]
                links = [required_link("city", Model("places.City"))]

        client = self._client(places)
        with cosmos.swap(self.client_cosmos):
            self.assertEqual(
                APISpec.to_json(client.spec)["models"]["map"]["Address"]
                ["links"],
                _or_omap([("city", {"model": "places.City",
                                    "required": True})]))

    def test_get_by_id_called_locally(self):
        cities = self.cities
        with cosmos.swap(self.server_cosmos):
            places = API("places")

            @places.model
            class City(BaseModel):
                properties = [optional("name", String)]

                @classmethod
                def get_by_id(cls, id):
                    return cities.get(id)

            self.assertEqual(places.models.City.get_by_id("0")["name"],
                             "Toronto")
            self.assertIsNone(places.models.City.get_by_id("5"))

    def _places_with_create(self):
        cities = self.cities
        places = API("places")

        @places.model
        class City(BaseModel):
            methods = ["create", "update"]
            properties = [optional("name", String)]

            @classmethod
            def validate_patch(cls, datum):
                if datum["name"][0].islower():
                    raise ValidationError("Name must be capitalized",
                                          datum["name"])

            @classmethod
            def create(cls, **patch):
                id = str(len(cities))
                cities[id] = patch
                return id, patch

            @classmethod
            def update(cls, id, **patch):
                cities[id] = patch
                return patch

        return places

    def test_create_locally_and_validate_patch(self):
        with cosmos.swap(self.server_cosmos):
            places = self._places_with_create()
            self.assertEqual(places.models.City.create(name="Moscow"),
                             ("2", {"name": "Moscow"}))
            with self.assertRaisesRegex(ValidationError,
                                        "^Name must be capitalized: 'moscow'$"):
                places.models.City.validate_patch({"name": "moscow"})

    def test_remote_create_refused_by_validate_patch(self):
        with cosmos.swap(self.server_cosmos):
            places = self._places_with_create()
        client = self._client(places, server_cosmos=self.server_cosmos)
        with cosmos.swap(self.client_cosmos):
            with self.assertRaisesRegex(RemoteHTTPError,
                                        "must be capitalized") as cm:
                client.models.City.create(name="moscow")
        self.assertEqual(cm.exception.code, 400)
        self.assertEqual(len(self.cities), 2)
        with cosmos.swap(self.client_cosmos):
            self.assertEqual(client.models.City.create(name="Oslo"),
                             ("2", {"name": "Oslo"}))

    def test_delete_then_get_by_id_raises_not_found(self):
        cities = self.cities
        with cosmos.swap(self.server_cosmos):
            places = API("places")

            @places.model
            class City(BaseModel):
                methods = ["get_by_id", "delete"]
                properties = [optional("name", String)]

                @classmethod
                def get_by_id(cls, id):
                    if id in cities:
                        return cities[id]
                    raise NotFound

                @classmethod
                def delete(cls, id):
                    del cities[id]

            self.assertEqual(places.models.City.get_by_id("0"),
                             {"name": "Toronto"})
            places.models.City.delete("0")
            with self.assertRaises(NotFound):
                places.models.City.get_by_id("0")

    def test_get_list_with_a_query_field_locally(self):
        cities = self.cities
        with cosmos.swap(self.server_cosmos):
            places = API("places")

            @places.model
            class City(BaseModel):
                properties = [optional("name", String)]
                query_fields = [optional("country", String)]

                @classmethod
                def get_list(cls, country=None):
                    if country is None:
                        return list(cities.items())
                    ids = {"Canada": ["0"], "USA": ["1"]}.get(country, [])
                    return [(id, cities[id]) for id in ids]

            self.assertEqual(len(places.models.City.get_list()), 2)
            self.assertEqual(places.models.City.get_list(country="Canada"),
                             [("0", {"name": "Toronto"})])
            self.assertEqual(places.models.City.get_list(country="Russia"),
                             [])

    def _mathy(self):
        with cosmos.swap(self.server_cosmos):
            mathy = API("mathy")

            @mathy.action(accepts=Array(Integer), returns=Integer)
            def add(numbers):
                return sum(numbers)

            @mathy.action(accepts=Struct([required("numerator", Integer),
                                          required("denominator", Integer)]),
                          returns=Integer)
            def divide(numerator, denominator):
                return numerator // denominator

        return mathy, add

    def test_action_called_as_function_action_and_remotely(self):
        mathy, add = self._mathy()
        self.assertEqual(add([1, 2, 3]), 6)
        self.assertEqual(mathy.actions.add([1, 2, 3]), 6)
        client = self._client(mathy)
        with cosmos.swap(self.client_cosmos):
            self.assertEqual(client.actions.add([1, 2, 3]), 6)
            self.assertEqual(
                client.actions.divide(numerator=10, denominator=5), 2)

    def test_remote_call_with_bad_arguments_is_an_http_error(self):
        # The original's client sent them and raised the server's 400;
        # ours refuses them before sending, with the same message, as an
        # error that is both a ValidationError and an HTTPError 400.
        mathy, _ = self._mathy()
        sent = []
        app = Server(mathy).wsgi_app

        def counting(environ, start_response):
            sent.append(environ["PATH_INFO"])
            return app(environ, start_response)

        with cosmos.swap(self.client_cosmos):
            client = WsgiAPIClient(counting)
            with self.assertRaisesRegex(HTTPError, "Invalid Integer") as cm:
                client.actions.add([1, 2, True])
        err = cm.exception
        self.assertIsInstance(err, ValidationError)
        self.assertNotIsInstance(err, RemoteHTTPError)
        self.assertEqual(str(err), "Item at [2] Invalid Integer: True")
        self.assertEqual((err.code, err.path), (400, [2]))
        self.assertEqual(sent, ["/spec.json"])
        status, _, body = _wsgi_json(app, "POST", "/actions/add", [1, 2, True])
        self.assertEqual((status, body),
                         (400, _sv_err("Item at [2] Invalid Integer: True")))
        copied = pickle.loads(pickle.dumps(err))
        self.assertEqual((type(copied), str(copied), copied.code),
                         (type(err), str(err), 400))

    def test_refused_arguments_inside_a_handler_are_a_500(self):
        # Like another API's error answer (RemoteHTTPError), a call our
        # own handler got wrong is a fault here, not the caller's 400.
        mathy, _ = self._mathy()
        inner = WsgiAPIClient.for_api(mathy)
        with cosmos.swap(self.server_cosmos):
            outer = API("outer")

            @outer.action(returns=Integer)
            def total():
                return inner.actions.add([1, "two"])

        with self.assertLogs("cosmic", "ERROR"):
            status, _, body = _wsgi(Server(outer).wsgi_app, "POST",
                                       "/actions/total")
        self.assertEqual((status, body),
                         (500, _sv_err("Internal Server Error")))


_OR_PLANETS = {
    "0": {"name": "Sun", "temperature": 3000.0},
    "1": {"name": "Earth", "temperature": 30.0, "revolves_around": "0"},
    "2": {"name": "Moon", "temperature": -50.0, "revolves_around": "1"},
}


def _or_planetarium():
    """The original's planetarium example on cosmic.testing's DBModel,
    behind a server that wants ``X-Danish: poppyseed`` on every request."""
    from cosmic.testing import DBModel
    planetarium = API("planetarium")

    class PlanetariumServer(Server):
        def parse_request(self, endpoint, request, **url_args):
            if request.headers.get("X-Danish") != "poppyseed":
                raise HTTPError(401, "Unauthorized")
            return super().parse_request(endpoint, request, **url_args)

    @planetarium.model
    class Sphere(DBModel):
        table_name = "Sphere"
        methods = ["get_list", "get_by_id", "create", "update", "delete"]
        properties = [required("name", String),
                      required("temperature", Float)]
        links = [optional_link("revolves_around",
                               Model("planetarium.Sphere"))]
        query_fields = [optional("name", String),
                        optional("revolves_around", String)]
        list_metadata = [required("last_updated", DateTime)]

        @classmethod
        def get_list(cls, **query):
            return (super().get_list(**query),
                    {"last_updated": datetime.datetime(2014, 1, 1)})

        @classmethod
        def validate_patch(cls, datum):
            if "temperature" in datum:
                raise ValidationError("Temperature is readonly")
            if "name" not in datum:
                raise ValidationError("Name is required")
            if datum["name"][0].islower():
                raise ValidationError("Name must be capitalized",
                                      datum["name"])

        @classmethod
        def create(cls, **patch):
            return super().create(temperature=60, **patch)

    @planetarium.action(accepts=Representation(Model("planetarium.Sphere")),
                        returns=String)
    def hello(sphere):
        return "Hello, %s" % sphere[1]["name"]

    return planetarium, PlanetariumServer(planetarium)


class _or_Retry(Exception):
    pass


def _or_planetarium_client_class(app):
    """The original test's client: logs, and on a 401 learns the token and
    calls again (its build_request, parse_response and call hooks)."""

    class PlanetariumClient(ClientLoggingMixin, WsgiAPIClient):
        token = None
        wsgi_app = app

        def build_request(self, endpoint, *args, **kwargs):
            request = super().build_request(endpoint, *args, **kwargs)
            if self.token is not None:
                request.headers["X-Danish"] = self.token
            return request

        def parse_response(self, endpoint, res):
            if res.status_code == 401:
                raise _or_Retry()
            return super().parse_response(endpoint, res)

        def call(self, endpoint, *args, **kwargs):
            while True:
                try:
                    return super().call(endpoint, *args, **kwargs)
                except _or_Retry:
                    self.token = "poppyseed"

    return PlanetariumClient


def _or_sphere_json(id, name, temperature=None, around=None):
    links = {"self": {"href": "/Sphere/%s" % id}}
    if around is not None:
        links["revolves_around"] = {"href": "/Sphere/%s" % around}
    datum = {"_links": links, "name": name}
    if temperature is not None:
        datum["temperature"] = temperature
    return datum


class TestOriginalPlanetarium(unittest.TestCase):
    """The original planetarium_test: each case runs against the API
    itself (local) and through the logging, retrying in-process client
    (remote), whose log then holds the original's requests and answers."""

    maxDiff = None

    def setUp(self):
        from cosmic.testing import db
        self.db = db
        self.local = {}
        with cosmos.swap(self.local):
            self.api, self.server = _or_planetarium()
        self.remote = {}
        with cosmos.swap(self.remote):
            self.client = _or_planetarium_client_class(
                self.server.wsgi_app)()
        self.planets = copy.deepcopy(_OR_PLANETS)

    def _both(self, body):
        """Run body(Sphere) locally, then remotely; return the client's
        log entries made by the remote run."""
        for where, registry in (("local", self.local),
                                ("remote", self.remote)):
            with self.subTest(where=where):
                with cosmos.swap(registry), \
                        self.db.swap({"Sphere": copy.deepcopy(_OR_PLANETS)}):
                    start = len(self.client.log)
                    body(cosmos["planetarium"].models.Sphere)
        return self.client.log[start:]

    def test_client_learns_the_token_on_the_first_401(self):
        self.assertEqual(self.client.token, "poppyseed")
        self.assertEqual([res["status_code"] for _, res in self.client.log],
                         [401, 200])
        self.assertIsInstance(self.client, WsgiAPIClient)

    def test_get_by_id(self):
        def body(Sphere):
            with self.assertRaises(NotFound):
                Sphere.get_by_id("100")
            self.assertEqual(Sphere.get_by_id("0")["name"], "Sun")

        (req1, res1), (req2, res2) = self._both(body)
        self.assertEqual((req1["method"], req1["url"], req1["data"]),
                         ("GET", "/Sphere/100", ""))
        self.assertEqual(res1["status_code"], 404)
        self.assertEqual((req2["method"], req2["url"], req2["data"]),
                         ("GET", "/Sphere/0", ""))
        self.assertEqual(res2["status_code"], 200)
        self.assertEqual(dict(res2["headers"])["Content-Type"],
                         "application/json")
        self.assertEqual(json.loads(res2["data"]),
                         _or_sphere_json("0", "Sun", 3000.0))

    def test_create(self):
        def body(Sphere):
            id, rep = Sphere.create(name="Pluto", revolves_around="0")
            self.assertEqual(id, "3")
            self.assertEqual(
                Representation(Model("planetarium.Sphere")).to_json((id, rep)),
                _or_sphere_json("3", "Pluto", 60, around="0"))
            self.assertEqual(self.db["Sphere"]["3"], {
                "name": "Pluto", "temperature": 60, "revolves_around": "0"})

        (req, res), = self._both(body)
        self.assertEqual((req["method"], req["url"], res["status_code"]),
                         ("POST", "/Sphere", 201))

    def _check_update(self, name, around):
        def body(Sphere):
            moon = Sphere.get_by_id("2")
            self.assertEqual(moon["revolves_around"], "1")
            rep = Sphere.update("2", name=name, revolves_around=around)
            self.assertEqual((rep["name"], rep["revolves_around"]),
                             (name, around))
            self.assertEqual(self.db["Sphere"]["2"], {
                "name": name, "temperature": -50, "revolves_around": around})

        log = self._both(body)
        req, res = log[-1]
        self.assertEqual((req["method"], req["url"]), ("PUT", "/Sphere/2"))
        self.assertEqual(json.loads(req["data"]),
                         _or_sphere_json("2", name, around=around))
        self.assertEqual(dict(req["headers"])["Content-Type"],
                         "application/json")
        self.assertEqual(res["status_code"], 200)
        self.assertEqual(json.loads(res["data"]),
                         _or_sphere_json("2", name, -50, around=around))
        self.assertEqual(dict(res["headers"])["Content-Type"],
                         "application/json")

    def test_update_link(self):
        self._check_update("Moon", "0")

    def test_update_property(self):
        self._check_update("Luna", "1")

    def test_get_list_with_metadata(self):
        def body(Sphere):
            self.assertEqual(len(Sphere.get_list(name="Oops")[0]), 0)
            found, meta = Sphere.get_list(name="Sun")
            self.assertEqual([id for id, _ in found], ["0"])
            self.assertEqual(meta, {"last_updated":
                                    datetime.datetime(2014, 1, 1)})
            self.assertEqual(len(Sphere.get_list()[0]), 3)

        log = self._both(body)
        self.assertEqual([req["url"] for req, _ in log],
                         ["/Sphere?name=Oops", "/Sphere?name=Sun", "/Sphere"])
        (_, sun), (req, every) = log[1], log[2]
        self.assertEqual((req["method"], req["data"]), ("GET", ""))
        self.assertEqual(json.loads(sun["data"]), {
            "_links": {"self": {"href": "/Sphere?name=Sun"}},
            "_embedded": {"Sphere": [_or_sphere_json("0", "Sun", 3000.0)]},
            "last_updated": "2014-01-01T00:00:00"})
        self.assertEqual(json.loads(every["data"]), {
            "_links": {"self": {"href": "/Sphere"}},
            "_embedded": {"Sphere": [
                _or_sphere_json("0", "Sun", 3000.0),
                _or_sphere_json("1", "Earth", 30.0, around="0"),
                _or_sphere_json("2", "Moon", -50.0, around="1")]},
            "last_updated": "2014-01-01T00:00:00"})
        self.assertEqual(dict(every["headers"])["Content-Type"],
                         "application/json")

    def test_delete(self):
        def body(Sphere):
            Sphere.delete("1")
            self.assertNotIn("1", self.db["Sphere"])
            with self.assertRaises(NotFound):
                Sphere.delete("123811")

        (req, res), (_, missing) = self._both(body)
        self.assertEqual((req["method"], req["url"], req["data"]),
                         ("DELETE", "/Sphere/1", ""))
        self.assertEqual((res["status_code"], res["data"]), (204, ""))
        self.assertEqual(missing["status_code"], 404)

    def test_validate_patch_refusal_reaches_the_client(self):
        def body(Sphere):
            with self.assertRaisesRegex(Exception,
                                        "Name must be capitalized"):
                Sphere.validate_patch({"name": "pluto"})
                Sphere.create(name="pluto")

        self._both(body)
        with cosmos.swap(self.remote), self.db.swap({"Sphere": {}}):
            with self.assertRaises(RemoteHTTPError) as cm:
                cosmos["planetarium"].models.Sphere.create(name="pluto")
        self.assertEqual((cm.exception.code, cm.exception.message),
                         (400, "Name must be capitalized: 'pluto'"))

    def test_action_takes_a_representation(self):
        pluto = (None, {"name": "Pluto", "temperature": -120})
        for registry in (self.local, self.remote):
            with cosmos.swap(registry):
                self.assertEqual(cosmos["planetarium"].actions.hello(pluto),
                                 "Hello, Pluto")

    def test_spec_endpoint(self):
        status, _, body = _wsgi(self.server.wsgi_app, "GET", "/spec.json")
        self.assertEqual(status, 401)
        status, _, body = _wsgi(self.server.wsgi_app, "GET", "/spec.json",
                                   headers={"X-Danish": "poppyseed"})
        field = _or_field
        self.assertEqual((status, json.loads(body)), (200, {
            "name": "planetarium",
            "actions": _or_omap([("hello", {
                "accepts": {"type": "cosmic.Representation",
                            "param": "planetarium.Sphere"},
                "returns": {"type": "String"}})]),
            "models": _or_omap([("Sphere", _or_model_json(
                [("name", field(True, "String")),
                 ("temperature", field(True, "Float"))],
                links=[("revolves_around", {"model": "planetarium.Sphere",
                                            "required": False})],
                query_fields=[("name", field(False, "String")),
                              ("revolves_around", field(False, "String"))],
                list_metadata=[("last_updated", field(True, "DateTime"))],
                methods=["get_by_id", "get_list", "create", "update",
                         "delete"]))])}))


def _or_words():
    """The original's words example: an action, a model, an action that
    holds its thread, an action taking a representation."""
    words = API("words")

    @words.action(accepts=String, returns=String)
    def pluralize(word):
        return word[:-1] + "ies" if word.endswith("y") else word + "s"

    @words.model
    class Word(BaseModel):
        methods = ["get_by_id"]
        properties = [required("letters", String)]

        @classmethod
        def get_by_id(cls, id):
            if id == "0":
                return {"letters": "hello"}
            raise NotFound

    release = threading.Event()
    holding = threading.Event()

    @words.action(accepts=Integer)
    def lock_thread(seconds):
        holding.set()
        release.wait(seconds)

    @words.action(accepts=Representation(Model("words.Word")),
                  returns=Integer)
    def count_letters(word):
        return len(word[1]["letters"])

    return words, holding, release


class TestOriginalWords(unittest.TestCase):
    """The original words_test: in-process, then over a served socket."""

    def setUp(self):
        _sv_isolate(self)
        self.words, self.holding, self.release = _or_words()
        self.addCleanup(self.release.set)

    def test_pluralize_in_process(self):
        status, _, body = _wsgi(Server(self.words).wsgi_app, "POST",
                                   "/actions/pluralize", b'"pony"',
                                   {"Content-Type": "application/json"})
        self.assertEqual((status, body), (200, b'"ponies"'))

    def test_client_spec_is_the_apis(self):
        with served_api(self.words) as url:
            client = APIClient(url)
            self.addCleanup(client.close)
            self.assertEqual(APISpec.to_json(client.spec),
                             APISpec.to_json(self.words.spec))

    def test_a_held_thread_does_not_block_another_call(self):
        # The original ran lock_thread in another process against a
        # single-threaded and a threaded server: both must still answer.
        for options in ({}, {"threaded": True}):
            with self.subTest(options=options), \
                    served_api(self.words, **options) as url:
                self.holding.clear()
                self.release.clear()
                client = APIClient(url)
                self.addCleanup(client.close)
                other = APIClient(url)
                self.addCleanup(other.close)

                def hold():
                    other.actions.lock_thread(60)
                    other.close()  # this thread's connection

                held = threading.Thread(target=hold)
                held.start()
                try:
                    self.assertTrue(self.holding.wait(60))
                    self.assertEqual(client.actions.count_letters(
                        (None, {"letters": "rabbit"})), 6)
                finally:
                    self.release.set()
                    held.join(60)

    def test_logging_mixin_records_request_and_answer(self):
        from cosmic.testing import Wildcard

        class WordsClient(ClientLoggingMixin, APIClient):
            pass

        with served_api(self.words) as url:
            client = WordsClient(url)
            self.addCleanup(client.close)
            self.assertEqual(client.actions.pluralize("pencil"), "pencils")
        request, answer = client.log[-1]
        self.assertEqual(request, {
            "method": "POST", "data": '"pencil"',
            "headers": [("Content-Type", "application/json")],
            "url": "/actions/pluralize"})
        # The original's werkzeug server also sent Server; ours sends
        # X-Request-ID (README, Compatibility) and no Server header.
        self.assertEqual(answer, {
            "status_code": 200, "data": '"pencils"',
            "headers": [("Content-Length", "9"),
                        ("Content-Type", "application/json"),
                        ("Date", Wildcard), ("X-Request-Id", Wildcard)]})


# Teleport 0.2 (bundled by the original as cosmic.legacy_teleport): its
# teleport_test and language_test cases.

_OR_STRUCT_JSON = {"type": "Struct", "param": _or_omap([
    ("foo", {"required": True, "schema": {"type": "Boolean"},
             "doc": "Never gonna give you up"}),
    ("bar", {"required": False, "schema": {"type": "Integer"}})])}


class _or_Suit(cosmic.legacy_teleport.BasicWrapper):
    schema = String

    @staticmethod
    def assemble(datum):
        if datum not in ("hearts", "spades", "clubs", "diamonds"):
            raise ValidationError("Invalid Suit", datum)
        return datum


class TestOriginalTeleport(unittest.TestCase):
    """The types of Teleport 0.2, as the original bundled them."""

    def test_schemas_to_and_from_json(self):
        struct = Schema.from_json(_OR_STRUCT_JSON)
        self.assertEqual(Schema.to_json(struct), _OR_STRUCT_JSON)
        self.assertEqual(Schema.to_json(Struct([
            required("foo", Boolean, "Never gonna give you up"),
            optional("bar", Integer)])), _OR_STRUCT_JSON)
        for datum in ({"type": "Array", "param": {"type": "Boolean"}},
                      {"type": "Array", "param": _OR_STRUCT_JSON},
                      {"type": "Map", "param": {"type": "Boolean"}},
                      {"type": "OrderedMap", "param": {"type": "Boolean"}}):
            with self.subTest(datum=datum):
                self.assertEqual(Schema.to_json(Schema.from_json(datum)),
                                 datum)
        for simple in (Integer, Float, Boolean, String, DateTime, Binary,
                       Schema, JSON):
            with self.subTest(type=simple):
                self.assertIs(Schema.from_json({"type": repr(simple)}),
                              simple)

    def test_bad_schemas(self):
        repeated = copy.deepcopy(_OR_STRUCT_JSON)
        repeated["param"]["order"].append("blah")
        unexpected = {"type": "Integer", "param": {"type": "Boolean"}}
        missing = {"type": "Struct"}
        for datum, error, message in (
                (repeated, ValidationError, "Invalid OrderedMap"),
                (True, ValidationError, "Invalid Schema: True"),
                ({"type": "number"}, UnknownTypeValidationError,
                 "Unknown type"),
                (unexpected, ValidationError, "Unexpected param"),
                (missing, ValidationError, "Missing param")):
            with self.subTest(datum=datum):
                with self.assertRaisesRegex(error, message):
                    Schema.from_json(datum)

    def test_errors_name_where(self):
        deep = Array(Schema.from_json(_OR_STRUCT_JSON))
        with self.assertRaisesRegex(ValidationError, r"\[0\]\['bar'\]"):
            deep.from_json([{"foo": True, "bar": False}])
        with self.assertRaisesRegex(ValidationError, r"\['foo'\]\[1\]"):
            OrderedMap(Array(Integer)).from_json(
                {"map": {"foo": [1, 2.1]}, "order": ["foo"]})

    def test_primitives(self):
        self.assertEqual((Float.from_json(1), Float.from_json(1.0)),
                         (1.0, 1.0))
        self.assertEqual((Integer.from_json(1), Integer.from_json(1.0)),
                         (1, 1))
        self.assertIs(type(Integer.from_json(1.0)), int)
        self.assertIs(Boolean.from_json(True), True)
        self.assertEqual(String.from_json("omg"), "omg")
        for schema, datum in ((Float, True), (Integer, 1.1), (Boolean, 0),
                              (String, 0), (Binary, 1)):
            with self.subTest(schema=schema, datum=datum):
                with self.assertRaisesRegex(ValidationError,
                                            "Invalid %r" % schema):
                    schema.from_json(datum)
        self.assertEqual((Float.to_json(1.1), Integer.to_json(1),
                          Boolean.to_json(True), String.to_json("yo")),
                         (1.1, 1, True, "yo"))
        # Teleport decoded Python 2 byte strings; bytes stay refused here
        # (JSON never gives bytes; see TestString).
        with self.assertRaisesRegex(ValidationError,
                                    r"^Invalid String: b'\\xff'$"):
            String.from_json(b"\xff")

    def test_binary_is_base64(self):
        self.assertEqual(Binary.from_json("YWJj"), b"abc")
        self.assertEqual(Binary.to_json(b"abc"), "YWJj")
        with self.assertRaisesRegex(ValidationError, "Invalid base64"):
            Binary.from_json("a")

    def test_json_is_boxed(self):
        self.assertIsInstance(JSON.from_json("A string?"), Box)
        self.assertEqual(JSON.from_json("ABC").datum, "ABC")
        self.assertEqual(JSON.to_json(Box("abc")), "abc")

    def test_datetime_needs_the_t(self):
        when = datetime.datetime(2013, 10, 4, 13, 5, 25, 354952)
        self.assertEqual(DateTime.from_json("2013-10-04T13:05:25.354952"),
                         when)
        self.assertEqual(DateTime.to_json(when), "2013-10-04T13:05:25.354952")
        with self.assertRaises(ValidationError):
            DateTime.from_json("2013-10-04 13:05:25.354952")

    def test_containers(self):
        booleans = Array(Boolean)
        self.assertEqual(booleans.from_json([True, False]), [True, False])
        with self.assertRaisesRegex(ValidationError, "Invalid Array"):
            booleans.from_json(("no", "tuples"))
        with self.assertRaisesRegex(ValidationError, "Invalid Boolean"):
            booleans.from_json([True, False, 1])
        flags = {"cool": True, "hip": False, "groovy": True}
        self.assertEqual(Map(Boolean).from_json(flags), flags)
        self.assertEqual(Map(Boolean).to_json(flags), flags)
        for datum, message in (([True, False], "Invalid Map"),
                               ({b"nope": False}, "Invalid Map key"),
                               ({"cool": 0}, "Invalid Boolean")):
            with self.subTest(datum=datum):
                with self.assertRaisesRegex(ValidationError, message):
                    Map(Boolean).from_json(datum)

    def test_ordered_map(self):
        datum = {"map": {"cool": True, "hip": False, "groovy": True},
                 "order": ["cool", "groovy", "hip"]}
        native = OrderedMap(Boolean).from_json(datum)
        self.assertEqual(list(native.items()),
                         [("cool", True), ("groovy", True), ("hip", False)])
        self.assertEqual(OrderedMap(Boolean).to_json(native), datum)
        for order in (["cool", "groovy", "hip", "cool"],
                      ["cool", "groovy", "kewl"]):
            with self.subTest(order=order):
                with self.assertRaisesRegex(ValidationError,
                                            "Invalid OrderedMap"):
                    OrderedMap(Boolean).from_json(dict(datum, order=order))

    def test_struct(self):
        struct = Schema.from_json(_OR_STRUCT_JSON)
        self.assertEqual(struct.from_json({"foo": True, "bar": 2.0}),
                         {"foo": True, "bar": 2})
        self.assertEqual(struct.from_json({"foo": True}), {"foo": True})
        self.assertEqual(struct.to_json({"foo": True, "bar": None}),
                         {"foo": True})
        for datum, message in (([], "Invalid Struct"),
                               ({"foo": True, "barr": 2.0},
                                "Unexpected fields"),
                               ({"bar": 2}, "Missing fields")):
            with self.subTest(datum=datum):
                with self.assertRaisesRegex(ValidationError, message):
                    struct.from_json(datum)

    def test_wrappers_and_custom_type_maps(self):
        suits = Array(_or_Suit)
        self.assertEqual(suits.from_json(["hearts", "clubs"]),
                         ["hearts", "clubs"])
        with self.assertRaisesRegex(ValidationError,
                                    r"\[1\] Invalid Suit: 'clubz'"):
            suits.from_json(["hearts", "clubz"])
        self.assertEqual(_or_Suit.to_json("hearts"), "hearts")

        def getter(name):
            if name == "Suit":
                return _or_Suit
            raise KeyError(name)

        types = cosmic.legacy_teleport.standard_types(
            getter, include=["Array", "Schema"])
        self.assertIs(types["Schema"].from_json({"type": "Suit"}), _or_Suit)
        self.assertIsInstance(types["Schema"].from_json(
            {"type": "Array", "param": {"type": "Suit"}}), types["Array"])
        with self.assertRaises(UnknownTypeValidationError):
            types["Schema"].from_json({"type": "Integer"})


_OR_BOXES = (-1, 1, 1.0, 1.1, True, False, "", {}, [], None)


class TestOriginalTeleportLanguage(unittest.TestCase):
    """Teleport 0.2's language_test: which JSON values each schema takes
    (and gives back unchanged), which it refuses."""

    def _check(self, schema, passing, failing):
        for datum in passing:
            with self.subTest(schema=schema, datum=datum):
                self.assertEqual(schema.to_json(schema.from_json(datum)),
                                 datum)
        for datum in failing:
            with self.subTest(schema=schema, datum=datum, fails=True):
                with self.assertRaises(ValidationError):
                    schema.from_json(datum)

    def _split(self, schema, passing, extra_failing=()):
        failing = [d for d in _OR_BOXES if not any(
            d == p and type(d) is type(p) for p in passing)]
        self._check(schema, passing, failing + list(extra_failing))

    def test_primitives(self):
        self._split(Integer, [-1, 1, 1.0])
        self._split(Boolean, [True, False])
        self._split(String, [""])
        self._split(Float, [-1, 1, 1.0, 1.1])
        self._split(JSON, list(_OR_BOXES))
        self._check(DateTime, ["2013-10-04T13:05:25.354952"],
                    list(_OR_BOXES) + ["2013-10-04 13:05:25.354952"])
        self._split(Binary, ["", "YWJj"], ["a"])

    def test_containers(self):
        self._split(Array(Integer), [[], [1], [1.0]], [[1.1]])
        self._split(Map(Integer), [{}, {"a": 1}, {"a": 1.0}])
        self._split(Struct([required("a", Integer), optional("b", Integer)]),
                    [{"a": 1, "b": 2}, {"a": 1}, {"a": 1.0}],
                    [{}, {"a": 1.1}, {"b": 1}])
        self._split(Struct([]), [{}])
        self._check(OrderedMap(Integer),
                    [{"map": {}, "order": []},
                     {"map": {"a": 1, "b": 2}, "order": ["a", "b"]}],
                    list(_OR_BOXES) + [
                        {"map": {"a": 1, "b": 2}, "order": ["a"]},
                        {"map": {"a": 1, "b": 2}, "order": ["a", "b", "b"]},
                        {"map": {"a": 1, "b": 2}},
                        {"order": ["a", "b", "b"]},
                        {"map": {"a": 1, "b": 2}, "what": 3,
                         "order": ["a", "b", "b"]}])

    def test_schemas(self):
        every = [String, Boolean, Integer, Float, Binary, DateTime, JSON,
                 Schema, Array(Integer), Struct([required("a", Integer)]),
                 Map(Integer), OrderedMap(Integer)]
        self._check(Schema, Array(Schema).to_json(every), list(_OR_BOXES) + [
            {"type": "string"}, {"type": "XXX"},
            {"type": "String", "param": True}, {"type": "Array"}])


# (end of original)


# == review ==================================================================
# defects found from outside: strict parsers, hostile peers, generated clients


# -- the spec declares authentication (authspec)

_as_USERS = {"t-plain-0001": {"name": "plain", "scopes": []},
             "t-admin-0002": {"name": "admin", "scopes": ["admin"]}}


def _as_schemes(*kinds, header="X-Key"):
    made = {"bearer": lambda: cosmic.BearerAuth(_as_USERS.get),
            "api_key": lambda: cosmic.APIKeyAuth(_as_USERS.get,
                                                 header=header),
            "basic": lambda: cosmic.BasicAuth(
                lambda user, password: _as_USERS.get(password))}
    return [made[kind]() for kind in kinds]


def _as_api(schemes=None, requires=False, ping=cosmic._MISSING,
            box=None, protect_spec=False):
    """API "asz": an action ping and a model Box (get_by_id, create);
    ``ping`` and ``box`` are their own requirements, if any."""
    api = API("asz", auth=schemes, requires=requires,
              protect_spec=protect_spec)
    options = {} if ping is cosmic._MISSING else {"requires": ping}

    @api.action(returns=String, **options)
    def ping():
        return "pong"

    class Box(BaseModel):
        methods = ["get_by_id", "create"]
        properties = [required("n", Integer)]

        @classmethod
        def get_by_id(cls, id):
            return {"n": 1}

        @classmethod
        def create(cls, patch):
            return "1", {"n": patch["n"]}

    if box:
        Box.requires = box
    api.model(Box)
    return api


def _as_spec(**kwargs):
    with cosmos.swap({}):
        return APISpec.to_json(_as_api(**kwargs).spec)


class _as_Recorder:
    """A WSGI app in front of another that records what each request
    sent: (path, the auth headers)."""

    def __init__(self, app):
        self.app = app
        self.seen = []

    def __call__(self, environ, start_response):
        self.seen.append((environ["PATH_INFO"], {
            k: v for k, v in environ.items()
            if k in ("HTTP_AUTHORIZATION", "HTTP_X_KEY", "HTTP_X_API_KEY",
                     "HTTP_X_OTHER")}))
        return self.app(environ, start_response)


class TestReviewAuthSpecShape(unittest.TestCase):
    """/spec.json declares the schemes, the default requirement and each
    call's own; APISpec reads it back and refuses it malformed."""

    def test_the_declaration(self):
        spec = APISpec.to_json(_au_api().spec)
        self.assertEqual(spec["auth"], {
            "schemes": [{"type": "bearer"},
                        {"type": "api_key", "header": "X-Key"},
                        {"type": "basic"}],
            "requires": True, "protect_spec": False})
        self.assertEqual(list(spec), ["name", "auth", "actions", "models"])
        actions = spec["actions"]["map"]
        self.assertEqual(actions["hello"]["requires"], False)
        self.assertNotIn("requires", actions["whoami"])  # the default
        self.assertEqual(actions["admin"]["requires"], ["admin"])
        self.assertEqual(spec["models"]["map"]["Note"]["requires"],
                         {"get_by_id": False, "get_list": False})
        again = APISpec.to_json(APISpec.from_json(copy.deepcopy(spec)))
        self.assertEqual(again, spec)
        self.assertEqual(APISpec.to_json(_au_api(
            requires="admin", protect_spec=True).spec)["auth"],
            {"schemes": spec["auth"]["schemes"], "requires": ["admin"],
             "protect_spec": True})

    def test_omitted_where_it_is_the_default_or_no_call(self):
        with cosmos.swap({}):
            api = _as_api(_as_schemes("bearer"), requires=True, ping=True,
                          box={"create": True, "delete": False})
        spec = APISpec.to_json(api.spec)
        self.assertNotIn("requires", spec["actions"]["map"]["ping"])
        # Box serves no delete: no call to declare.
        self.assertNotIn("requires", spec["models"]["map"]["Box"])

    def test_an_api_without_schemes_has_no_declaration(self):
        spec = _as_spec()
        self.assertNotIn("auth", spec)
        self.assertNotIn("requires", json.dumps(spec))

    def test_the_server_enforces_what_its_spec_says(self):
        with cosmos.swap({}):
            api = _as_api(_as_schemes("bearer"), ping=True,
                          box={"create": "admin"})
            client = WsgiAPIClient(Server(api).wsgi_app)
            with self.assertRaises(RemoteHTTPError) as cm:
                client.actions.ping()
            self.assertEqual(cm.exception.code, 401)
            self.assertEqual(client.models.Box.get_by_id("1"), {"n": 1})
        self.assertEqual(cosmic._spec_needs(api.spec)[("Box", "create")], ("admin",))

    def test_malformed_declarations_are_refused(self):
        good = APISpec.to_json(_au_api().spec)

        def spoil(change):
            spec = copy.deepcopy(good)
            change(spec)
            return spec

        actions = lambda s: s["actions"]["map"]  # noqa: E731
        note = lambda s: s["models"]["map"]["Note"]  # noqa: E731
        cases = [
            (lambda s: s["auth"]["schemes"].append({"type": "digest"}),
             "auth schemes must be bearer, api_key and basic"),
            (lambda s: s["auth"]["schemes"].append({"type": "bearer"}),
             "each at most once; got 'bearer'"),
            (lambda s: s["auth"].update(schemes=[]),
             "auth declares no scheme"),
            (lambda s: s["auth"]["schemes"][1].pop("header"),
             "an api_key scheme names its header"),
            (lambda s: s["auth"]["schemes"][1].update(
                header="Authorization"), "names its header"),
            (lambda s: s["auth"]["schemes"][1].update(header="X Key"),
             "names its header"),
            (lambda s: s["auth"]["schemes"][0].update(header="X-Key"),
             "and only it"),
            (lambda s: s["auth"]["schemes"][0].update(scopes=[]),
             "Unexpected fields"),
            (lambda s: s["auth"].pop("protect_spec"), "Missing fields"),
            (lambda s: s["auth"].update(requires="yes"),
             "Invalid requirement: expected true, false or a non-empty "
             "list of scopes"),
            (lambda s: actions(s)["whoami"].update(requires=[]),
             "Invalid requirement"),
            (lambda s: actions(s)["whoami"].update(requires=["a", ""]),
             "Invalid requirement"),
            (lambda s: note(s)["requires"].update(update=True),
             "models Note requires methods it does not serve: update"),
            (lambda s: note(s)["requires"].update(patch=True),
             "Unexpected fields"),
            (lambda s: s.pop("auth"),
             "has requires, but the spec declares no auth"),
        ]
        for change, message in cases:
            with self.subTest(message):
                with self.assertRaises(ValidationError) as cm:
                    APISpec.from_json(spoil(change))
                self.assertIn(message, str(cm.exception))
        # A client refuses such a spec before any call.
        with self.assertRaises(ValidationError):
            WsgiAPIClient(Server(_au_api()).wsgi_app, spec=spoil(
                lambda s: s["auth"]["schemes"][1].update(header="Cookie")))


class TestReviewAuthSpecClient(unittest.TestCase):
    """A client sends the credential as the spec declares, from the first
    call: no 401 round trip, no challenge to trust."""

    def calls(self, api, auth, method="ping"):
        """What the client sent to the action, in order."""
        recorder = _as_Recorder(Server(api).wsgi_app)
        with cosmos.swap({}):
            client = WsgiAPIClient(recorder, auth=auth)
            self.assertEqual(getattr(client.actions, method)(), "pong")
        return [sent for path, sent in recorder.seen
                if path.startswith("/actions/")]

    def test_a_token_goes_in_the_declared_api_key_header(self):
        with cosmos.swap({}):
            api = _as_api(_as_schemes("api_key"), requires=True)
        self.assertEqual(self.calls(api, "t-plain-0001"),
                         [{"HTTP_X_KEY": "t-plain-0001"}])

    def test_a_token_is_bearer_where_bearer_is_declared(self):
        with cosmos.swap({}):
            api = _as_api(_as_schemes("api_key", "bearer"), requires=True)
        self.assertEqual(self.calls(api, "t-plain-0001"),
                         [{"HTTP_AUTHORIZATION": "Bearer t-plain-0001"}])
        self.assertEqual(self.calls(api, {"api_key": "t-plain-0001"}),
                         [{"HTTP_X_KEY": "t-plain-0001"}])

    def test_a_pair_is_basic(self):
        with cosmos.swap({}):
            api = _as_api(_as_schemes("basic"), requires=True)
        self.assertEqual(self.calls(api, ("u", "t-plain-0001")), [
            {"HTTP_AUTHORIZATION": _au_basic("u", "t-plain-0001")}])

    def test_a_declared_spec_ignores_challenges(self):
        # The spec says bearer; a 401 naming another header is not
        # followed (the credential stays where the spec put it).
        with cosmos.swap({}):
            api = _as_api(_as_schemes("bearer"), requires=True)
        app = Server(api).wsgi_app

        def hostile(environ, start_response):
            if environ["PATH_INFO"].startswith("/actions/"):
                start_response("401 Unauthorized", [
                    ("Content-Type", "application/json"),
                    ("WWW-Authenticate",
                     'APIKey realm="x", header="X-Other"')])
                return [b'{"error": "no"}']
            return app(environ, start_response)

        recorder = _as_Recorder(hostile)
        with cosmos.swap({}):
            client = WsgiAPIClient(recorder, auth="t-plain-0001")
            with self.assertRaises(RemoteHTTPError) as cm:
                client.actions.ping()
        self.assertEqual(cm.exception.code, 401)
        self.assertEqual(recorder.seen[1:], [("/actions/ping", {
            "HTTP_AUTHORIZATION": "Bearer t-plain-0001"})])

    def test_an_older_server_still_teaches_by_challenge(self):
        # A spec without the declaration (a server of an older version):
        # the key header is learnt from the 401, as before.
        with cosmos.swap({}):
            api = _as_api(_as_schemes("api_key"), requires=True)
        spec = APISpec.to_json(api.spec)
        del spec["auth"]
        recorder = _as_Recorder(Server(api).wsgi_app)
        with cosmos.swap({}):
            client = WsgiAPIClient(recorder, spec=spec, auth="t-plain-0001")
            self.assertEqual(client.actions.ping(), "pong")
        self.assertEqual([sent for _, sent in recorder.seen], [
            {"HTTP_AUTHORIZATION": "Bearer t-plain-0001"},
            {"HTTP_X_KEY": "t-plain-0001"}])

    def test_over_http(self):
        with cosmos.swap({}):
            api = _as_api(_as_schemes("api_key", header="X-Other"),
                          requires=True)
        with served_api(api) as url:
            client = APIClient(url, auth="t-plain-0001")
            try:
                self.assertEqual(client.actions.ping(), "pong")
            finally:
                client.close()


class TestReviewAuthSpecTools(unittest.TestCase):
    """The spec tools see the declaration in a fetched spec: OpenAPI and
    the docs page are the same from it as from the API object."""

    def apis(self):
        yield _au_api()
        yield _au_api(requires=False, protect_spec=True)
        yield _au_api(requires="admin",
                      schemes=[cosmic.APIKeyAuth(_AU_USERS.get)])

    def test_openapi_from_the_spec_equals_openapi_from_the_api(self):
        for api in self.apis():
            with self.subTest(api=api.spec["auth"]):
                fetched = cosmic._SpecAPI(
                    json.loads(json.dumps(APISpec.to_json(api.spec))))
                from_spec = openapi(fetched)
                self.assertIn("securitySchemes", from_spec["components"])
                self.assertEqual(from_spec, openapi(api))

    def test_cosmic_openapi_url(self):
        api = _au_api()
        with served_api(api) as url:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                self.assertEqual(cosmic.main(["openapi", url]), 0)
        doc = json.loads(out.getvalue())
        self.assertEqual(doc["components"]["securitySchemes"],
                         openapi(api)["components"]["securitySchemes"])
        self.assertEqual(doc["paths"]["/actions/admin"]["post"]["security"],
                         [{"bearerAuth": ["admin"]}, {"apiKeyAuth": ["admin"]},
                          {"basicAuth": ["admin"]}])

    def test_docs_page_from_a_fetched_spec(self):
        api = _au_api()
        with cosmos.swap({}):
            client = WsgiAPIClient(Server(api).wsgi_app)
            page = cosmic.docs_html(client)
        self.assertEqual(page, cosmic.docs_html(api))
        self.assertIn('id="authorize"', page)
        self.assertIn('data-header="X-Key"', page)
        self.assertIn("needs a credential with admin", page)
        self.assertIn('<span class="need">open</span>', page)
        # The page drawn straight from the JSON, as served.
        self.assertEqual(cosmic._docs_html(APISpec.to_json(api.spec)), page)

    def test_docs_page_survives_a_broken_declaration(self):
        spec = APISpec.to_json(_au_api().spec)
        spec["auth"] = {"schemes": "nonsense"}
        page = cosmic._docs_html(spec)
        self.assertNotIn('id="authorize"', page)


# (old spec kwargs, new spec kwargs, the old caller's credential, kind,
# verdict): every authentication row of _DIFF_RULES.
_AS_DIFF_CASES = [
    ("an open action now needs a credential",
     {}, {"schemes": ["bearer"], "ping": True}, None,
     "requires-added", "breaking"),
    ("a protected action now open",
     {"schemes": ["bearer"], "ping": True}, {"schemes": ["bearer"]},
     "t-plain-0001", "requires-removed", "compatible"),
    ("a credential now needs a scope",
     {"schemes": ["bearer"], "ping": True},
     {"schemes": ["bearer"], "ping": "admin"}, "t-plain-0001",
     "requires-tightened", "breaking"),
    ("a scope no longer needed",
     {"schemes": ["bearer"], "ping": "admin"},
     {"schemes": ["bearer"], "ping": True}, "t-admin-0002",
     "requires-loosened", "compatible"),
    ("another scope",
     {"schemes": ["bearer"], "ping": "admin"},
     {"schemes": ["bearer"], "ping": "ops"}, "t-admin-0002",
     "requires-changed", "breaking"),
    ("a model method now needs a credential",
     {"schemes": ["bearer"]}, {"schemes": ["bearer"],
                              "box": {"get_by_id": True}}, None,
     "requires-added", "breaking"),
    ("the API default now needs a credential",
     {"schemes": ["bearer"]}, {"schemes": ["bearer"], "requires": True},
     None, "requires-added", "breaking"),
    ("basic no longer accepted",
     {"schemes": ["bearer", "basic"], "requires": True},
     {"schemes": ["bearer"], "requires": True}, ("u", "t-plain-0001"),
     "scheme-removed", "breaking"),
    ("the key moved to another header",
     {"schemes": ["api_key"], "requires": True},
     {"schemes": ["api_key"], "header": "X-Other", "requires": True},
     "t-plain-0001", "scheme-changed", "breaking"),
    ("basic accepted too",
     {"schemes": ["bearer"], "requires": True},
     {"schemes": ["bearer", "basic"], "requires": True}, "t-plain-0001",
     "scheme-added", "compatible"),
]


def _as_build(options):
    options = dict(options)
    header = options.pop("header", "X-Key")
    kinds = options.pop("schemes", ())
    return _as_api(_as_schemes(*kinds, header=header) if kinds else None,
                   **options)


class TestReviewAuthSpecDiff(unittest.TestCase):
    """diff() reads the declaration: a call that became protected breaks
    callers without credentials; one that became open does not."""

    def test_each_kind_of_change(self):
        for label, old, new, _, kind, verdict in _AS_DIFF_CASES:
            with self.subTest(label):
                with cosmos.swap({}):
                    changes = cosmic.diff(_as_build(old), _as_build(new))
                self.assertIn(kind, [c.kind for c in changes], changes)
                worst = max((c.verdict for c in changes), key=[
                    "info", "compatible", "breaking"].index)
                self.assertEqual(worst, verdict, changes)
                for change in changes:
                    self.assertIn(change.direction,
                                  ("request", ""), change)

    def test_every_auth_rule_is_covered(self):
        rules = {row[0] for row in cosmic._DIFF_RULES
                 if row[0].startswith(("scheme-", "requires-"))}
        self.assertEqual(rules, {case[4] for case in _AS_DIFF_CASES})

    def test_in_practice(self):
        # A client built from OLD's spec, with the credential OLD's caller
        # holds, calls a server of OLD (it works) and one of NEW: it fails
        # (401 or 403) exactly when the verdict is breaking.
        for label, old, new, auth, _kind, verdict in _AS_DIFF_CASES:
            with self.subTest(label), cosmos.swap({}):
                old_api, new_api = _as_build(old), _as_build(new)
                spec = APISpec.to_json(old_api.spec)
                call = (lambda client: client.models.Box.get_by_id("1")) \
                    if "box" in new else (lambda client: client.actions.ping())
                for api in (old_api, new_api):
                    client = WsgiAPIClient(Server(api).wsgi_app,
                                           spec=copy.deepcopy(spec),
                                           auth=auth)
                    try:
                        call(client)
                        failed = None
                    except RemoteHTTPError as err:
                        failed = err.code
                    if api is old_api:
                        self.assertIsNone(failed)
                    elif verdict == "breaking":
                        self.assertIn(failed, (401, 403))
                    else:
                        self.assertIsNone(failed)

    def test_paths_and_messages(self):
        changes = cosmic.diff(_as_spec(), _as_spec(
            schemes=_as_schemes("bearer"), ping=["admin"],
            box={"create": True}, protect_spec=True))
        self.assertEqual([str(c) for c in changes], [
            "compatible auth schemes ['bearer']  scheme-added: added",
            "breaking   spec.json requires  requires-added: open -> a "
            "credential; callers without a credential get 401 (breaks "
            "requests)",
            "breaking   openapi.json requires  requires-added: open -> a "
            "credential; callers without a credential get 401 (breaks "
            "requests)",
            "breaking   actions.ping requires  requires-added: open -> a "
            "credential with admin; callers without a credential get 401 "
            "(breaks requests)",
            "breaking   models.Box create requires  requires-added: open -> "
            "a credential; callers without a credential get 401 (breaks "
            "requests)"])

    def test_the_same_requirement_said_otherwise_is_no_change(self):
        with cosmos.swap({}):
            old = APISpec.to_json(_as_api(_as_schemes("bearer"),
                                          ping=["a", "b"]).spec)
        new = copy.deepcopy(old)
        new["actions"]["map"]["ping"]["requires"] = ["b", "a"]
        self.assertEqual(cosmic.diff(old, new), [])
        # Written out where it equals the default: still no change.
        new = copy.deepcopy(old)
        new["models"]["map"]["Box"]["requires"] = {"create": False}
        self.assertEqual(cosmic.diff(old, new), [])
        self.assertEqual(cosmic.diff(_au_api(), _au_api()), [])


def _rv_api(**api_options):
    """A protected API: bearer token "tok", a Town model with ETags whose
    writes need the token, and an action ``bump``."""
    api = API("rvapi", auth=cosmic.BearerAuth(
        lambda token: "me" if token == "tok" else None), **api_options)
    towns = {"1": {"name": "One"}}

    @api.action(accepts=Integer, returns=Integer, requires=True)
    def bump(n):
        return n + 1

    @api.model
    class Town(BaseModel):
        properties = [required("name", String)]
        methods = ["get_by_id", "update", "delete"]
        requires = {"update": True, "delete": True}

        @classmethod
        def get_by_id(cls, id):
            return towns.get(id)

        @classmethod
        def update(cls, id, **patch):
            towns[id] = dict(towns[id], **patch)
            return towns[id]

        @classmethod
        def delete(cls, id):
            del towns[id]

    return api, towns


def _rv_openapi_validator():
    """openapi-spec-validator's validate, or None without it (a failure
    with COSMIC_REQUIRE_EXTRAS=1)."""
    try:
        from openapi_spec_validator import validate
    except ImportError:  # pragma: no cover - depends on the environment
        if os.environ.get("COSMIC_REQUIRE_EXTRAS") == "1":
            raise
        return None
    return validate

class TestReviewAuthSeams(unittest.TestCase):
    """Authentication meeting CORS, ETags and the other parallel work."""

    def test_cors_exposes_the_401_challenge(self):
        # A page on another origin must be able to read WWW-Authenticate
        # (Fetch hides every header not listed in Expose-Headers).
        api, _ = _rv_api()
        app = Server(api, cors_origins=["https://a.example"]).wsgi_app
        status, headers, _ = _wsgi(
            app, "POST", "/actions/bump", b"1",
            {"Content-Type": "application/json",
             "Origin": "https://a.example"})
        self.assertEqual(status, 401)
        self.assertIn("www-authenticate", headers)
        exposed = [name.strip().lower() for name in
                   headers["access-control-expose-headers"].split(",")]
        self.assertIn("www-authenticate", exposed)

    def test_nested_call_sees_its_own_if_match_and_identity(self):
        # A protected PUT with If-Match whose model updates an object of
        # another API in-process: the inner request sent no If-Match and
        # no credential, so if_match() and current_identity() are None
        # there (else a model doing UPDATE ... WHERE version = ? would
        # compare the inner object with the outer object's tag).
        inner = API("rvinner")
        seen = {}

        @inner.model
        class Note(BaseModel):
            properties = [required("text", String)]
            methods = ["get_by_id", "update"]

            @classmethod
            def get_by_id(cls, id):
                return {"text": "old"}

            @classmethod
            def update(cls, id, **patch):
                seen["if_match"] = cosmic.if_match()
                seen["identity"] = cosmic.current_identity()
                return patch

        inner_client = WsgiAPIClient(Server(inner).wsgi_app)
        api, towns = _rv_api()
        outer_update = api.models.Town.update

        def update(id, **patch):
            inner_client.models.Note.update("9", text="new")
            seen["outer"] = (cosmic.if_match(), cosmic.current_identity())
            return outer_update(id, **patch)

        api.models.Town.update = update
        app = Server(api).wsgi_app
        status, headers, _ = _wsgi(app, "GET", "/Town/1")
        tag = headers["etag"]
        status, _, body = _wsgi(
            app, "PUT", "/Town/1", b'{"name": "Two"}',
            {"Content-Type": "application/json", "If-Match": tag,
             "Authorization": "Bearer tok"})
        self.assertEqual(status, 200, body)
        self.assertEqual(seen["if_match"], None)
        self.assertEqual(seen["identity"], None)
        self.assertEqual(seen["outer"], (tag.strip('"'), "me"))
        self.assertEqual(towns["1"], {"name": "Two"})

    def test_nested_write_under_handler_timeout_does_not_deadlock(self):
        # With handler_timeout the handler runs in a helper thread. The
        # lock that makes a conditional write atomic must belong to that
        # thread: held by the request's thread instead, a write the
        # handler makes in-process to an object whose lock is the same
        # (one of a fixed set) waited for the timeout and gave a 500.
        inner = API("rvinner2")
        notes = {}

        @inner.model
        class Note(BaseModel):
            properties = [required("text", String)]
            methods = ["get_by_id", "update"]

            @classmethod
            def get_by_id(cls, id):
                return notes.get(id, {"text": "old"})

            @classmethod
            def update(cls, id, **patch):
                notes[id] = patch
                return patch

        outer_lock = cosmic._write_lock(("rvapi", "Town", "1"))
        same = next(str(i) for i in itertools.count()
                    if cosmic._write_lock(("rvinner2", "Note", str(i)))
                    is outer_lock)
        inner_client = WsgiAPIClient(Server(inner).wsgi_app)
        api, towns = _rv_api()
        outer_update = api.models.Town.update

        def update(id, **patch):
            inner_client.models.Note.update(same, text="new")
            return outer_update(id, **patch)

        api.models.Town.update = update
        app = Server(api, handler_timeout=10).wsgi_app
        _, headers, _ = _wsgi(app, "GET", "/Town/1")
        status, _, body = _wsgi(
            app, "PUT", "/Town/1", b'{"name": "Two"}',
            {"Content-Type": "application/json", "If-Match": headers["etag"],
             "Authorization": "Bearer tok"})
        self.assertEqual(status, 200, body)
        self.assertEqual(notes[same], {"text": "new"})
        # The tag is still checked, in the handler's thread.
        status, _, body = _wsgi(
            app, "PUT", "/Town/1", b'{"name": "Three"}',
            {"Content-Type": "application/json", "If-Match": headers["etag"],
             "Authorization": "Bearer tok"})
        self.assertEqual(status, 412, body)
        self.assertEqual(towns["1"], {"name": "Two"})

    def test_openapi_documents_the_401_challenge_header(self):
        # A 401 always carries WWW-Authenticate (RFC 9110 11.6.1): the
        # document says so, so that generated clients and schemathesis's
        # header checks know it.
        api, _ = _rv_api()
        doc = openapi(api)
        for path, method in (("/Town/{id}", "put"),
                             ("/actions/bump", "post")):
            response = doc["paths"][path][method]["responses"]["401"]
            self.assertEqual(
                response["headers"]["WWW-Authenticate"]["schema"],
                {"type": "string"})
            self.assertTrue(response["headers"]["WWW-Authenticate"][
                "required"])
        self.assertNotIn("401", doc["paths"]["/Town/{id}"]["get"][
            "responses"])
        validator = _rv_openapi_validator()
        if validator is not None:
            validator(doc)


class TestReviewServerAnswers(unittest.TestCase):
    """What the server sends must be what its own client accepts."""

    def test_an_empty_id_is_never_sent(self):
        # An href "/Thing/" names the list, not an object: the client
        # refuses it, so a model that returns the id "" gets a logged 500
        # (like the ids "." and ".."), not a 201 its client cannot read.
        api = API("rvempty")
        ids = iter(["", "ok"])

        @api.model
        class Thing(BaseModel):
            properties = [required("name", String)]
            methods = ["create", "get_list"]

            @classmethod
            def create(cls, **patch):
                return next(ids), patch

            @classmethod
            def get_list(cls, **query):
                return [("", {"name": "n"})]

        app = Server(api).wsgi_app
        with self.assertLogs("cosmic", "ERROR") as logs:
            status, headers, body = _wsgi(
                app, "POST", "/Thing", b'{"name": "x"}',
                {"Content-Type": "application/json"})
            self.assertEqual(status, 500, body)
            self.assertNotIn("location", headers)
            status, _, body = _wsgi(app, "GET", "/Thing")
            self.assertEqual(status, 500, body)
        self.assertIn("Thing.create", "\n".join(logs.output))
        self.assertIn("Invalid id", "\n".join(logs.output))
        client = WsgiAPIClient(app)
        self.assertEqual(client.models.Thing.create(name="x"),
                         ("ok", {"name": "x"}))

    def test_a_bad_database_url_never_shows_its_password(self):
        # The one-line start-up error names the URL without its secret,
        # also when the scheme is wrong.
        env = dict(os.environ, PYTHONPATH=_ROOT,
                   PLACES_DATABASE_URL="mysql://b:s3kr1t@db/x")
        env.pop("PLACES_TOKEN", None)
        done = subprocess.run(
            [sys.executable, "-m", "cosmic", "spec", "examples/places.py"],
            cwd=_ROOT, env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 2, done.stderr)
        self.assertIn("PLACES_DATABASE_URL must start with postgresql://",
                      done.stderr)
        self.assertNotIn("s3kr1t", done.stderr + done.stdout)
        self.assertEqual(len(done.stderr.strip().splitlines()), 1)


class TestReviewClientAgainstHostileServer(unittest.TestCase):
    """The client's credential, facing a server that names odd headers."""

    def test_a_challenge_cannot_move_the_key_into_a_framing_header(self):
        # A 401 may name the header an API key goes in; a hostile server
        # must not make the client put its secret in Host, Content-Length,
        # Transfer-Encoding, Cookie... (the server side refuses those
        # names for APIKeyAuth too).
        for name in ("Host", "Content-Length", "Transfer-Encoding",
                     "Connection", "Cookie", "Authorization"):
            seen = []

            def app(environ, start_response, name=name):
                seen.append(dict(environ))
                start_response("401 Unauthorized", [
                    ("Content-Type", "application/json"),
                    ("WWW-Authenticate",
                     'APIKey realm="x", header="%s"' % name)])
                return [b'{"error": "Invalid credentials"}']

            spec = {"name": "rvhostile",
                    "actions": {"map": {"ping": {}}, "order": ["ping"]},
                    "models": {"map": {}, "order": []}}
            client = WsgiAPIClient(app, spec=spec,
                                   auth={"api_key": "k3y-s3cret"})
            with self.subTest(header=name):
                with self.assertRaises(RemoteHTTPError):
                    client.actions.ping()
                self.assertEqual(len(seen), 1)  # not sent again elsewhere
                self.assertEqual(seen[0].get("HTTP_X_API_KEY"), "k3y-s3cret")
        with self.assertRaises(SpecError):
            cosmic.APIKeyAuth(lambda key: key, header="Cookie")


class _rv_Trickle:
    """Connections that each send a request head, then one body byte every
    ``interval`` seconds from a thread, until stopped."""

    def __init__(self, test, address, count, head, interval=0.5,
                 piece=b"x"):
        self.socks = []
        for _ in range(count):
            sock = socket.create_connection(address, timeout=10)
            sock.sendall(head + piece)
            self.socks.append(sock)
        self.piece = piece
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, args=(interval,),
                                       daemon=True)
        self.thread.start()
        test.addCleanup(self.close)

    def run(self, interval):
        while not self.stop.wait(interval):
            for sock in self.socks:
                try:
                    sock.sendall(self.piece)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join(10)
        for sock in self.socks:
            sock.close()


def _rv_fresh(address):
    """(status, seconds) of a fresh client's GET, waiting at most 20 s."""
    started = time.monotonic()
    raw = _hs_Raw(address, timeout=20)
    try:
        raw.sendall(b"GET /fresh HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            status = _hs_read_response(raw)[0]
        except OSError:
            status = None
    finally:
        raw.close()
    return status, time.monotonic() - started


class TestReviewSlowBodies(unittest.TestCase):
    """The selector loop reads request bodies (Content-Length up to the
    buffer bound, and chunked) before a worker is used: slow senders cost
    no thread, and what they send arrives intact."""

    def start(self, **limits):
        server = _hs_start(_hs_app, threads=4, **limits)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server

    def test_a_slow_content_length_bodies_hold_no_worker(self):
        server = self.start()
        _rv_Trickle(self, server.server_address, 12,
                    b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 1000\r\n\r\n")
        threading.Event().wait(0.5)  # the bodies have started to come
        status, elapsed = _rv_fresh(server.server_address)
        self.assertEqual(status, 200)
        self.assertLess(elapsed, 2.0)  # before: no answer for 60 s

    def test_b_slow_chunked_bodies_hold_no_worker(self):
        server = self.start()
        _rv_Trickle(self, server.server_address, 12,
                    b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n",
                    piece=b"1\r\nx\r\n")
        threading.Event().wait(0.5)
        status, elapsed = _rv_fresh(server.server_address)
        self.assertEqual(status, 200)
        self.assertLess(elapsed, 2.0)

    def test_b_slow_bodies_against_serve(self):
        folder = _hs_app_dir(self)
        server = _hs_serve(self, folder, "s2app:api", "--threads", "4")
        _rv_Trickle(self, server.address, 6,
                    b"POST /actions/pid HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 1000\r\n\r\n")
        _rv_Trickle(self, server.address, 6,
                    b"POST /actions/pid HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n",
                    piece=b"1\r\nx\r\n")
        threading.Event().wait(0.5)
        status, elapsed = _hs_fresh_request(server.address)
        self.assertEqual(status, 200)
        self.assertLess(elapsed, 2.0)
        self.assertEqual(server.stop(), 0)

    def send_slowly(self, raw, data, step):
        for i in range(0, len(data), step):
            raw.sendall(data[i:i + step])
            threading.Event().wait(0.01)

    def test_c_slow_body_arrives_intact_then_the_next_request(self):
        server = self.start()
        _rv_Trickle(self, server.server_address, 8,
                    b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 1000\r\n\r\n")
        raw = _hs_Raw(server.server_address)
        self.addCleanup(raw.close)
        body = bytes(range(32, 127)) * 3
        raw.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d"
                    b"\r\n\r\n" % len(body))
        self.send_slowly(raw, body[:-5], 7)
        # The last bytes and a pipelined request in one packet.
        raw.sendall(body[-5:] + b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, answer = _hs_read_response(raw)
        self.assertEqual(status, 200)
        info = json.loads(answer)
        self.assertEqual(info["body"], body.decode("latin-1"))
        self.assertEqual(info["content_length"], str(len(body)))
        self.assertNotIn("connection", headers)
        status, _, answer = _hs_read_response(raw)
        self.assertEqual((status, json.loads(answer)["path"]), (200, "/after"))

    def test_c_slow_chunked_body_arrives_intact(self):
        server = self.start()
        raw = _hs_Raw(server.server_address)
        self.addCleanup(raw.close)
        chunks = (b"5\r\nhello\r\n3;ext=1\r\n, w\r\n4\r\norld\r\n0\r\n"
                  b"X-Trailer: yes\r\n\r\n")
        raw.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
        self.send_slowly(raw, chunks, 1)  # every line split across reads
        raw.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, answer = _hs_read_response(raw)
        info = json.loads(answer)
        self.assertEqual((status, info["body"], info["content_length"]),
                         (200, "hello, world", "12"))
        status, _, answer = _hs_read_response(raw)
        self.assertEqual((status, json.loads(answer)["path"]), (200, "/after"))

    def test_c_bad_chunked_framing_found_by_the_loop_is_refused(self):
        server = self.start()
        raw = _hs_Raw(server.server_address)
        self.addCleanup(raw.close)
        raw.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
        self.send_slowly(raw, b"5\r\nhello\n", 1)  # bare LF after the data
        status, _, answer = _hs_read_response(raw)
        self.assertEqual(status, 400)
        self.assertEqual(raw.file.read(), b"")  # and the connection closed

    def test_c_expect_100_continue_before_the_loop_waits(self):
        server = self.start()
        raw = _hs_Raw(server.server_address)
        self.addCleanup(raw.close)
        raw.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4"
                    b"\r\nExpect: 100-continue\r\n\r\n")
        self.assertEqual(_hs_read_response(raw)[0], 100)
        raw.sendall(b"ab")
        threading.Event().wait(0.2)
        raw.sendall(b"cd")
        status, _, answer = _hs_read_response(raw)
        self.assertEqual((status, json.loads(answer)["body"]), (200, "abcd"))

    def test_c_chunked_body_past_the_buffer_is_read_by_the_worker(self):
        server = self.start(max_chunked_body=3 << 20)
        raw = _hs_Raw(server.server_address, timeout=30)
        self.addCleanup(raw.close)
        piece = b"y" * 65536
        raw.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                    + b"10000\r\n%b\r\n" % piece * 40 + b"0\r\n\r\n")
        status, _, answer = _hs_read_response(raw)
        self.assertEqual(status, 200)
        self.assertEqual(len(json.loads(answer)["body"]), 40 * 65536)

    def test_d_control_characters_in_a_header_value(self):
        server = self.start()
        for char in (0x01, 0x08, 0x0b, 0x0c, 0x1b, 0x1f, 0x7f):
            raw = _hs_Raw(server.server_address)
            self.addCleanup(raw.close)
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Note: a%cb\r\n\r\n"
                        % char)
            status, _, answer = _hs_read_response(raw)
            with self.subTest(char=hex(char)):
                self.assertEqual(status, 400)
                self.assertEqual(json.loads(answer),
                                 {"error": "Invalid character in request"})
        raw = _hs_Raw(server.server_address)
        self.addCleanup(raw.close)
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Note: a\tb\xe9\r\n\r\n")
        status, _, answer = _hs_read_response(raw)
        self.assertEqual(status, 200)  # HTAB and obs-text are allowed
        self.assertEqual(json.loads(answer)["headers"]["HTTP_X_NOTE"],
                         "a\tb\xe9")

    def test_body_over_the_app_limit_is_refused_unread(self):
        api = API("rv_small_bodies")

        @api.action(accepts=String, returns=String)
        def echo(text):
            return text

        with served_api(api, max_content_length=100) as url:
            port = int(url.rsplit(":", 1)[1])
            raw = _hs_Raw(("127.0.0.1", port))
            self.addCleanup(raw.close)
            raw.sendall(b"POST /actions/echo HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\n"
                        b"Expect: 100-continue\r\nContent-Length: 500\r\n\r\n")
            status, headers, answer = _hs_read_response(raw)
            self.assertEqual(status, 413)  # no 100 Continue before it
            self.assertEqual(headers["connection"], "close")
            body = b'"' + b"x" * 50 + b'"'
            raw = _hs_Raw(("127.0.0.1", port))
            self.addCleanup(raw.close)
            raw.sendall(b"POST /actions/echo HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
            status, _, answer = _hs_read_response(raw)
            self.assertEqual((status, answer), (200, body))


class TestReviewAuthKeys(unittest.TestCase):
    """A call's requirement is looked up by a key no other call can have:
    an action named ``spec`` or a model named ``cosmic`` takes nothing
    from /spec.json's requirement, nor gives it theirs."""

    def api(self):
        api = API("rvkeys", auth=cosmic.BearerAuth(
            lambda token: "me" if token == "tok" else None),
            requires=True, protect_spec=True)

        @api.action(returns=String, requires=False)
        def spec():
            return "x"

        class Thing(BaseModel):
            properties = [required("a", String)]
            methods = ["get_by_id"]

            @classmethod
            def get_by_id(cls, id):
                return {"a": "b"}

        Thing.__name__ = "cosmic"
        api.model(Thing)
        return api

    def test_server(self):
        app = Server(self.api()).wsgi_app
        self.assertEqual(_wsgi(app, "GET", "/spec.json").status, 401)
        self.assertEqual(_wsgi(app, "POST", "/actions/spec").status, 200)
        self.assertEqual(_wsgi(app, "GET", "/cosmic/1").status, 401)
        self.assertEqual(_wsgi(app, "GET", "/cosmic/1",
                               headers={"Authorization": "Bearer tok"})
                         .status, 200)

    def test_openapi(self):
        paths = openapi(self.api())["paths"]
        self.assertEqual(paths["/spec.json"]["get"]["security"],
                         [{"bearerAuth": []}])
        self.assertEqual(paths["/actions/spec"]["post"]["security"], [])
        self.assertEqual(paths["/cosmic/{id}"]["get"]["security"],
                         [{"bearerAuth": []}])


# (end of review)


# -- README -------------------------------------------------------------------


class TestReadme(unittest.TestCase):
    """The README's Python examples run as written (doctest)."""

    def test_readme_examples(self):
        import doctest
        path = os.path.join(os.path.dirname(os.path.abspath(cosmic.__file__)),
                            "README.md")
        result = doctest.testfile(path, module_relative=False,
                                  optionflags=doctest.ELLIPSIS)
        self.assertGreater(result.attempted, 5)
        self.assertEqual(result.failed, 0)


if __name__ == "__main__":
    unittest.main()
