"""cosmic.py: typed web APIs in one file, standard library only.

Declare an API once, with actions (RPC) and models (REST resources) typed by a
small Teleport-like schema system, and get from that one object a WSGI server,
a JSON spec at ``/spec.json``, an HTTP client built at run time from that spec,
an in-process client with the same interface, an OpenAPI 3.1 document, a docs
page, a contract diff and a command line::

    from cosmic.api import API
    from cosmic.types import String

    words = API("words")

    @words.action(accepts=String, returns=String)
    def pluralize(word):
        return word[:-1] + "ies" if word.endswith("y") else word + "s"

    # python -m cosmic serve words.py
    # curl -X POST -H 'Content-Type: application/json' -d '"pencil"' \\
    #      http://127.0.0.1:8000/actions/pluralize          -> "pencils"

Sections (search for ``# --``), in dependency order: exceptions;
request-scoped globals; strict JSON; schema types; tools; API, spec and
models; authentication; WSGI application; development server; client;
OpenAPI; docs page; contract diff; testing helpers; compatibility modules;
command line.

How the server handles one request::

    wsgi_app(environ)
      -> ensure_thread_local()          request-scoped globals
      -> dispatch_request(request)      route: 404 / 405 + Allow / OPTIONS
         -> view(endpoint, request)     hook: may answer early (401, ...)
            -> the API's schemes        credential -> identity, or 401 +
                                        WWW-Authenticate / 403 (scopes)
            -> parse_request(...)       body: 413, Content-Type, charset,
                                        UTF-8, strict JSON, schema -> 400
            -> endpoint handler         user code; NotFound -> 404,
                                        HTTPError(code) -> code
            -> build_response(...)      return value checked -> 200/201/204
      -> unhandled_exception_hook       anything else -> 500, logged
"""

from __future__ import annotations

import base64 as _base64
import contextlib as _contextlib
import contextvars as _contextvars
import datetime as _datetime
import functools as _functools
import json as _json
import re as _re
import sys as _sys
import threading as _threading
from collections import OrderedDict as _OrderedDict
from collections import namedtuple as _namedtuple
from os import getpid as _getpid  # os and time are loaded already
from time import monotonic as _monotonic
from math import isfinite as _isfinite

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Iterable, Iterator
    from typing import Any, Callable, ClassVar, TypeVar
    _ModelClass = TypeVar("_ModelClass", bound="type[BaseModel]")

__version__ = "1.0.0"

MODEL_METHODS = ["get_by_id", "get_list", "create", "update", "delete"]

# The one table of public names. Each row: names, then where they are
# listed: "cosmic" is this module's __all__, any other word an alias module
# (cosmic.types, ...; made at the end of the file) whose __all__ lists them,
# and a word in parentheses an alias module that has them without listing
# them. __all__ here and every alias module are derived from this table.
_PUBLIC = (
    ("Integer Float Boolean String Binary DateTime JSON Array Map OrderedMap "
     "Struct Schema Model Link Representation Patch APISpec URLParams Box "
     "required optional required_link optional_link",
     "cosmic types legacy_teleport http"),
    ("ValidationError", "cosmic types legacy_teleport exceptions http"),
    ("BasicWrapper ParametrizedWrapper BasicPrimitive ParametrizedPrimitive "
     "standard_types UUID Decimal", "cosmic types legacy_teleport http"),
    ("UnicodeDecodeValidationError UnknownTypeValidationError",
     "cosmic (types) legacy_teleport"),
    ("SpecError NotFound HTTPError RemoteHTTPError PreconditionFailed",
     "cosmic exceptions http"),
    ("ThreadLocalMissing", "cosmic exceptions"),
    ("API BaseAPI", "cosmic api"),
    ("BaseModel", "cosmic models"),
    ("Object", "cosmic api"),
    ("MODEL_METHODS", "cosmic"),
    ("Server Request Response error_response Endpoint SpecEndpoint "
     "ActionEndpoint GetByIdEndpoint CreateEndpoint UpdateEndpoint "
     "DeleteEndpoint GetListEndpoint", "cosmic http"),
    ("serve_wsgi", "cosmic"),
    ("BaseAPIClient APIClient WsgiAPIClient ClientLoggingMixin connect",
     "cosmic client"),
    ("OutcomeUnknown ResponseTooLarge", "cosmic client"),
    ("ThreadLocalDict SwappableDict thread_local ensure_thread_local "
     "thread_local_middleware storage cosmos", "cosmic globals"),
    ("BearerAuth APIKeyAuth BasicAuth compare_secret", "cosmic api"),
    ("current_identity", "cosmic globals"),
    ("if_match", "cosmic globals http"),
    ("openapi docs_html main", "cosmic"),
    ("diff Change", "cosmic"),
    ("ContractError", "cosmic exceptions client"),
    ("get_args args_to_datum assert_is_compatible serialize_json "
     "deserialize_json string_to_json validate_underscore_identifier "
     "is_string_type", "tools"),
    ("DBModel db served_api Wildcard", "testing"),
)
__all__ = [name for names, where in _PUBLIC if "cosmic" in where.split()
           for name in names.split()]

_MISSING = object()


# -- Exceptions ---------------------------------------------------------------

# Everything cosmic raises: validation errors with the path to the bad value,
# spec errors at definition time, and the HTTP errors handlers raise.

_REPR_CAP = 200
_MAX_ERRORS = 100


def _short_repr(obj: Any) -> str:
    """repr() capped so a huge input is never echoed back whole."""
    text = repr(obj)
    if len(text) > _REPR_CAP:
        text = text[:_REPR_CAP] + "..."
    return text


def _pointer(path: list) -> str:
    """RFC 6901 JSON Pointer for a list of keys and indexes."""
    return "".join(
        "/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


class ValidationError(Exception):
    """Invalid data: ``str(err)`` is ``Item at [0]['bar'] Invalid Integer: False``.

    ``message`` says what was wrong, ``obj`` (when given) is the bad value,
    ``stack`` the keys and indexes leading to it, innermost first. ``errors``
    lists every problem found in the value that failed (up to 100), each a
    dict with ``path`` (outermost first), ``pointer`` (RFC 6901) and
    ``message``.
    """

    def __init__(self, message: str, *obj: Any) -> None:
        super().__init__(message, *obj)
        self.message = message
        self.stack: list = []
        self._has_obj = bool(obj)
        self.obj = obj[0] if obj else None
        self._errors: list | None = None
        self._source: tuple | None = None

    def _text(self) -> str:
        if self._has_obj:
            return "%s: %s" % (self.message, _short_repr(self.obj))
        return self.message

    def __str__(self) -> str:
        if self.stack:
            where = "".join("[%s]" % _short_repr(k) for k in reversed(self.stack))
            return "Item at %s %s" % (where, self._text())
        return self._text()

    @property
    def path(self) -> list:
        """Keys and indexes from the outermost to the bad value."""
        return list(reversed(self.stack))

    @property
    def errors(self) -> list:
        """Every problem found, each ``{"path", "pointer", "message"}``."""
        if self._errors is None:
            found: list = []
            if self._source is not None:
                schema, datum = self._source
                try:
                    schema._errors(datum, [], found)
                except RecursionError:
                    found = []
            if not found:
                found = [self._entry([])]
            self._errors = found[:_MAX_ERRORS]
        return self._errors

    def __reduce__(self):
        # _source holds the schema, whose compiled closures do not pickle;
        # keep the problems it finds instead.
        state = dict(self.__dict__, _errors=self.errors, _source=None)
        return (type(self), self.args, state)

    def _entry(self, prefix: list) -> dict:
        path = prefix + self.path
        return {"path": path, "pointer": _pointer(path), "message": self._text()}


class UnicodeDecodeValidationError(ValidationError):
    """Text that is not valid UTF-8 (kept for compatibility)."""


class UnknownTypeValidationError(ValidationError):
    """A schema names a type that does not exist."""


class SpecError(Exception):
    """A programming or contract error: bad names, signatures, responses."""


class NotFound(Exception):
    """Raised by model code, and by clients on a 404."""


class HTTPError(Exception):
    """An HTTP error answer: ``HTTPError(401, "Unauthorized")``."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return "%s %s" % (self.code, self.message)


class PreconditionFailed(HTTPError):
    """412: the object changed since the ETag a request named in If-Match.

    The server raises it when its own comparison fails; a model raises it
    when its own atomic check does (see ``if_match()``). Clients raise it
    on a 412 answer.
    """

    def __init__(self, message: str | None = None) -> None:
        super().__init__(412, message or "Precondition Failed")
        self.args = (message,)


class RemoteHTTPError(HTTPError):
    """A client call answered with an error status.

    ``errors`` holds the server's list of problems (RFC 9457 ``errors``)
    when it sent one, else an empty list.
    """

    def __init__(self, code: int, message: str | None = None,
                 errors: list | None = None) -> None:
        super().__init__(code, message)
        self.errors = errors or []


class _RefusedArguments(ValidationError, HTTPError):
    """Arguments a client refused before sending: a ValidationError, and
    also the HTTPError 400 the server answers them with (code written for
    the original Cosmic, whose clients sent them, catches that)."""

    message: str

    def __init__(self, message: str, *obj: Any) -> None:
        super().__init__(message, *obj)
        self.code = 400
        self.args = (message,) + obj


class _RemotePreconditionFailed(PreconditionFailed, RemoteHTTPError):
    """A client's 412: both a PreconditionFailed and a RemoteHTTPError."""

    def __init__(self, message: str | None = None,
                 errors: list | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []
        self.args = (message, errors)


class ThreadLocalMissing(Exception):
    """A ThreadLocalDict was used outside thread_local()."""

    def __init__(self, message: str = (
            "No thread-local storage here; use thread_local() or wrap the "
            "app in thread_local_middleware()")) -> None:
        super().__init__(message)


# -- Request-scoped globals ---------------------------------------------------
#
# Built on contextvars, so each thread and each asyncio task sees its own
# values; ``storage`` mirrors the active locals by thread, for inspection.

from collections.abc import MutableMapping as _MutableMapping  # noqa: E402

_get_ident = _threading.get_ident
_current: _contextvars.ContextVar = _contextvars.ContextVar(
    "cosmic_local", default=None)
storage: dict = {}
_active: dict = {}  # thread id -> the locals open in it, innermost last


def _enter_local(local: dict) -> int:
    ident = _get_ident()
    opened = _active.get(ident)
    if opened is None:
        _active[ident] = [local]
    else:
        opened.append(local)
    storage[ident] = local
    return ident


def _exit_local(ident: int, local: dict) -> None:
    # asyncio tasks of one thread may close their locals in any order: drop
    # this one wherever it is, and show the innermost one still open.
    opened = _active[ident]
    if len(opened) == 1:
        del _active[ident], storage[ident]
        return
    for i in range(len(opened) - 1, -1, -1):
        if opened[i] is local:
            del opened[i]
            break
    storage[ident] = opened[-1]


@_contextlib.contextmanager
def thread_local() -> Iterator[dict]:
    """A fresh local dict for this thread (or task) while the block runs.

    Nested blocks get their own and restore the outer one; the entry is
    removed even when the block raises.
    """
    local: dict = {}
    token = _current.set(local)
    ident = _enter_local(local)
    try:
        yield local
    finally:
        _current.reset(token)
        _exit_local(ident, local)


@_contextlib.contextmanager
def ensure_thread_local():
    """Reuse the active local dict, or create one like thread_local()."""
    local = _current.get()
    if local is not None:
        yield local
    else:
        with thread_local() as local:
            yield local


def thread_local_middleware(app: Callable) -> Callable:
    """Wrap a WSGI app so that every request runs in its own thread_local()."""
    def middleware(environ, start_response):
        with thread_local():
            result = app(environ, start_response)
            if isinstance(result, list):
                return result
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
    middleware.__wrapped__ = app  # type: ignore[attr-defined]
    return middleware


class _Swappable(_MutableMapping):
    """Shared mapping methods over a ``data`` dict."""

    def __getitem__(self, key):
        return self.data[key]

    def __setitem__(self, key, value):
        self.data[key] = value

    def __delitem__(self, key):
        del self.data[key]

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)

    def __contains__(self, key):
        return key in self.data

    def get(self, key, default=None):
        return self.data.get(key, default)


class SwappableDict(_Swappable):
    """A dict-like object whose ``data`` can be swapped for a block."""

    def __init__(self, data: dict | None = None) -> None:
        self.data = data if data is not None else {}

    @_contextlib.contextmanager
    def swap(self, new: dict):
        """Show ``new`` (the same object) inside the block, then restore."""
        previous = self.data
        self.data = new
        try:
            yield new
        finally:
            self.data = previous

    def __repr__(self) -> str:
        return repr(self.data)


class ThreadLocalDict(_Swappable):
    """A dict whose contents belong to the current thread_local() block.

    Outside one, any use raises ThreadLocalMissing.
    """

    @property
    def data(self) -> dict:
        """This dict's contents in the current thread_local() block."""
        local = _current.get()
        if local is None:
            raise ThreadLocalMissing()
        try:
            return local[id(self)]
        except KeyError:
            return local.setdefault(id(self), {})

    @_contextlib.contextmanager
    def swap(self, new: dict):
        """Show ``new`` inside the block, then restore; works with or
        without an active thread_local()."""
        if _current.get() is None:
            with thread_local() as local:
                local[id(self)] = new
                yield new
            return
        local = _current.get()
        previous = local.get(id(self), _MISSING)
        local[id(self)] = new
        try:
            yield new
        finally:
            if previous is _MISSING:
                local.pop(id(self), None)
            else:
                local[id(self)] = previous

    def __repr__(self) -> str:
        local = _current.get()
        if local is None:
            return "<unbound ThreadLocalDict>"
        return repr(local.get(id(self), {}))


cosmos = SwappableDict()

_if_match: _contextvars.ContextVar = _contextvars.ContextVar(
    "cosmic_if_match", default=None)


def if_match() -> str | None:
    """The If-Match tag of the request being served, without its quotes.

    ``"*"`` for ``If-Match: *``, None when the request sent none. Set
    while a model's ``update`` or ``delete`` runs, after the server found
    that the tag matches the object as ``get_by_id`` returns it, so that
    the model can make its check and its write one statement
    (``UPDATE ... WHERE id = ? AND version = ?``) and raise
    ``PreconditionFailed`` when no row matched.
    """
    return _if_match.get()


# -- Strict JSON --------------------------------------------------------------

# The one decoder and the one encoder every part uses: no NaN or Infinity,
# no numbers that overflow, no lone surrogates, bounded nesting.

def _strict_constant(name: str) -> Any:
    raise ValueError("JSON does not allow " + name)


class _JSONLimitError(ValueError):
    """JSON text that parses but is past one of cosmic's limits."""


def _reject_inf(text: str) -> float:
    value = float(text)
    if value - value != 0.0:
        raise ValueError("Number out of range")
    return value


# Integers: the encoder writes up to Python 3.11's default int_max_str_digits
# (checked here too: older versions have no limit, and it can be switched
# off); a server reads far fewer, so that sums and products of the values it
# accepts can still be written.
_MAX_DIGITS_OUT = 4300
_MAX_DIGITS_IN = 1000
_MAX_JSON_DEPTH = 100


def _int_parser(limit: int) -> Callable:
    def parse_int(text):
        if len(text) > limit and len(text.lstrip("-")) > limit:
            raise _JSONLimitError("integer with more than %d digits" % limit)
        return int(text)
    return parse_int


# Two decoders built once: the second, slower one checks floats and runs
# only when the text holds an exponent or a very long number (1e999 would
# otherwise become inf), or a surrogate escape (a lone one is not text).
_SCAN = _json.JSONDecoder(  # type: ignore[attr-defined]
    parse_constant=_strict_constant).scan_once
# Never None: "*" matches the empty string too.
_SKIP_SPACE: Callable[[str, int], Any] = _re.compile(r"[ \t\n\r]*").match
_SPACE = frozenset(" \t\n\r")


def _DECODE(text: str) -> Any:
    # JSONDecoder.decode without its two Python-level frames: the C scanner
    # (made once) does the work; only JSON's four whitespace characters may
    # surround the value.
    start = _SKIP_SPACE(text, 0).end() if text[:1] in _SPACE else 0
    try:
        datum, end = _SCAN(text, start)
    except StopIteration:
        raise ValueError("Expecting value") from None
    if end != len(text) and _SKIP_SPACE(text, end).end() != len(text):
        raise ValueError("Extra data")
    return datum


_DECODE_CHECKED = _json.JSONDecoder(
    parse_constant=_strict_constant, parse_float=_reject_inf,
    parse_int=_int_parser(_MAX_DIGITS_OUT)).decode
# What servers read (request bodies, query strings).
_DECODE_REQUEST = _json.JSONDecoder(
    parse_constant=_strict_constant, parse_float=_reject_inf,
    parse_int=_int_parser(_MAX_DIGITS_IN)).decode
# Three simple searches are several times faster than one alternation; the
# look-behind makes a long run of digits cost one try, not one per digit.
_EXPONENT = _re.compile(r"[0-9][eE]").search
_LONG_NUMBER = _re.compile(r"(?<![0-9])[0-9]{300}").search


def _loads_strict(text: str, _checked: Callable = _DECODE_CHECKED) -> Any:
    """json.loads without NaN, Infinity, numbers that overflow to inf,
    integers over 4300 digits (``_DECODE_REQUEST``: 1000), or lone
    surrogates."""
    escapes = "\\u" in text
    if not escapes and _EXPONENT(text) is None and (
            len(text) < 300 or _LONG_NUMBER(text) is None):
        return _DECODE(text)
    datum = _checked(text)
    if escapes:
        try:
            _json.dumps(datum, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("Lone surrogate in JSON text") from None
    return datum


def _make_encode() -> Callable:
    """json.dumps with its defaults (docs/protocol.md#json-on-the-wire), but
    never NaN or Infinity on the wire; the C encoder is made once instead
    of on every call."""
    from json import encoder
    fallback = _json.JSONEncoder(allow_nan=False).encode
    make_encoder = getattr(encoder, "c_make_encoder", None)
    if make_encoder is None:
        return fallback

    def default(obj):
        raise TypeError("Object of type %s is not JSON serializable"
                        % type(obj).__name__)

    # markers=None: no cycle check (a cycle ends in RecursionError, a 500).
    c_encode = make_encoder(
        None, default, encoder.encode_basestring_ascii, None, ": ", ", ",
        False, False, False)

    def encode(datum):
        if type(datum) is int:  # what the C encoder would write, sooner
            return int.__repr__(datum)
        return "".join(c_encode(datum, 0))

    return encode


_ENCODE = _make_encode()


# A string runs to its closing quote or to the end of the text: a match never
# fails after scanning, so a text of unclosed escaped quotes is one linear
# pass (a pattern that needs the closing quote retries from every quote).
_JSON_STRING = _re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\Z)', _re.S)
_NOT_BRACKET = _re.compile(r"[^\[\]{}]+")
_ONE_BRACKET = str.maketrans("{}", "[]")


def _too_deep(text: str, limit: int) -> bool:
    """Whether JSON text nests arrays and objects deeper than ``limit``
    (for text with more than ``limit`` brackets: see _loads_request)."""
    # In valid JSON, brackets pair up whatever their kind; one kind then
    # makes each pass peel exactly one level (a "[]" removed may leave a
    # new "[]" that only the next pass sees), however they alternate.
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).translate(
        _ONE_BRACKET)
    for _ in range(limit):
        inner = brackets.replace("[]", "")
        if not inner or inner == brackets:
            return False
        brackets = inner
    return True


def _loads_request(text: str, max_depth: int) -> Any:
    """JSON a client sent (a body, a query value): the strict decoder with
    the input limits; _JSONLimitError names the limit passed, ValueError
    or RecursionError means it is not JSON."""
    # Counting first spares most texts the bracket passes of _too_deep.
    if text.count("[") + text.count("{") > max_depth and \
            _too_deep(text, max_depth):
        raise _JSONLimitError("nested deeper than %d levels" % max_depth)
    return _loads_strict(text, _DECODE_REQUEST)


# -- Schema types -------------------------------------------------------------
#
# Every type has the same small protocol, used by the containers:
#   _load(datum)       JSON -> native, raises ValidationError (the fast path)
#   _dump(value)       native -> JSON, type-checked
#   _exact             a Python type whose values load and dump unchanged
#   _errors(d, p, out) the slow path: append every problem to out
#   _schema_json()     the Schema JSON form; json_schema(): JSON Schema 2020-12
# Containers compile their children's _load into closures once, when built.
# A failing closure adds its key to err.stack on the way up, so valid data
# pays nothing for error paths.

class _Type:
    """Base of every type object."""

    type_name = ""
    _exact: type | None = None
    _string_based = False
    _load: Callable[[Any], Any]  # set by each type, often as a closure
    _dump: Callable[[Any], Any]

    def from_json(self, datum: Any) -> Any:
        """Validate a JSON value and return its native form."""
        try:
            return self._load(datum)
        except ValidationError as err:
            err._source = (self, datum)
            raise
        except RecursionError:
            raise ValidationError("Nesting too deep") from None

    def to_json(self, value: Any) -> Any:
        """Type-check a native value and return its JSON form."""
        try:
            return self._dump(value)
        except RecursionError:
            raise ValidationError("Nesting too deep") from None

    def _errors(self, datum: Any, path: list, out: list) -> None:
        try:
            self._load(datum)
        except ValidationError as err:
            out.append(err._entry(path))

    def _schema_json(self) -> dict:
        return {"type": self.type_name}

    def _bind(self, api: Any) -> None:
        """Bind Model references named after api to it (see API.model)."""

    def json_schema(self) -> dict:
        """This type as JSON Schema 2020-12."""
        raise SpecError("%s cannot be described as JSON Schema" % self)

    def __call__(self, **rules: Any) -> Any:
        """This type with constraints: ``Integer(minimum=1, maximum=100)``."""
        kinds = _RULE_KINDS.get(self.type_name)
        if kinds is None:
            raise SpecError("%s takes no constraints" % self)
        return _Constrained(self, _rules(self, kinds, rules))

    def __repr__(self) -> str:
        return self.type_name or type(self).__name__


class _IntegerType(_Type):
    """Integer: a JSON number with no fraction; native ``int`` (``2.0`` gives ``2``)."""

    type_name = "Integer"
    _exact = int

    @staticmethod
    def _load(datum):
        if type(datum) is int:
            return datum
        if type(datum) is float and datum.is_integer():
            return int(datum)
        raise ValidationError("Invalid Integer", datum)

    _dump = _load

    def json_schema(self):
        return {"type": "integer"}


class _FloatType(_Type):
    """Float: a finite JSON number; native ``float`` (ints are accepted)."""

    type_name = "Float"
    _exact = float

    @staticmethod
    def _load(datum):
        if type(datum) is float:
            if datum - datum != 0.0:  # inf and nan
                raise ValidationError("Invalid Float", datum)
            return datum
        if type(datum) is int:
            try:
                return float(datum)
            except OverflowError:
                pass
        raise ValidationError("Invalid Float", datum)

    _dump = _load

    def json_schema(self):
        return {"type": "number"}


class _ExactType(_Type):
    """Boolean and String: JSON and native values of one Python type."""

    def __init__(self, type_name: str, exact: type, json_type: str,
                 string_based: bool = False) -> None:
        self.type_name = type_name
        self._exact = exact
        self._string_based = string_based
        self._json_type = json_type
        message = "Invalid " + type_name

        def load(datum):
            if type(datum) is exact:
                return datum
            raise ValidationError(message, datum)

        self._load = self._dump = load

    def json_schema(self):
        return {"type": self._json_type}


# Standard base64 with padding (RFC 4648 section 4), checked before decoding
# so that Binary and its JSON Schema accept exactly the same strings.
# (?![\s\S]) ends a pattern in ECMA-262 and in Python alike; "$" would let
# Python-based validators accept a trailing newline.
_END = "(?![\\s\\S])"
_B64 = ("^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
        + _END)
_B64_RE = _re.compile(_B64)


class _BinaryType(_Type):
    """Binary: standard base64 text with padding; native ``bytes``."""

    type_name = "Binary"

    @staticmethod
    def _load(datum):
        if type(datum) is not str:
            raise ValidationError("Invalid Binary data", datum)
        if not _B64_RE.match(datum):
            raise ValidationError("Invalid base64 encoding", datum)
        return _base64.b64decode(datum)

    @staticmethod
    def _dump(value):
        if isinstance(value, (bytes, bytearray)):
            return _base64.b64encode(value).decode("ascii")
        raise ValidationError("Invalid Binary data", value)

    def json_schema(self):
        return {"type": "string", "contentEncoding": "base64", "pattern": _B64}


# ISO 8601 extended format with an upper-case T (docs/protocol.md#datetime).
# [0-9], not \d, which would match other scripts' digits.
_DATETIME_RE = _re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?"
    r"(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?\Z")
_DATETIME_PATTERN = (
    "^(?!0000)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    "T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,6})?)?"
    "(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?" + _END)


def _parse_datetime(text: str) -> _datetime.datetime:
    m = _DATETIME_RE.match(text)
    if m is None:
        raise ValidationError("Invalid DateTime", text)
    year, month, day, hour, minute, sec, frac, zone = m.groups()
    tz = None
    if zone == "Z":
        tz = _datetime.timezone.utc
    elif zone:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 23 or minutes > 59:
            raise ValidationError("Invalid DateTime", text)
        tz = _datetime.timezone(
            sign * _datetime.timedelta(hours=hours, minutes=minutes))
    try:
        return _datetime.datetime(
            int(year), int(month), int(day), int(hour), int(minute),
            int(sec or 0), int((frac or "0").ljust(6, "0")), tz)
    except ValueError:
        raise ValidationError("Invalid DateTime", text) from None


class _DateTimeType(_Type):
    """DateTime: ISO 8601 text such as ``2014-01-01T00:00:00Z``; native
    ``datetime`` (naive or aware)."""

    type_name = "DateTime"
    _string_based = True

    @staticmethod
    def _load(datum):
        if type(datum) is not str:
            raise ValidationError("Invalid String", datum)
        return _parse_datetime(datum)

    @staticmethod
    def _dump(value):
        if isinstance(value, _datetime.datetime):
            offset = value.utcoffset()
            if offset is not None and (offset.seconds % 60 or
                                       offset.microseconds):
                # ISO 8601 offsets are whole minutes: zoneinfo's zones
                # before 1900 are not (Europe/Amsterdam +00:19:32). Write
                # the same instant in UTC instead.
                try:
                    value = value.astimezone(_datetime.timezone.utc)
                except OverflowError:
                    raise ValidationError("Invalid DateTime", value) from None
            return value.isoformat()
        raise ValidationError("Invalid DateTime", value)

    def json_schema(self):
        # No "format": "date-time": that is RFC 3339, which refuses the
        # naive times Cosmic sends ("2014-01-01T00:00:00").
        return {"type": "string", "pattern": _DATETIME_PATTERN}


_UUID_RE = _re.compile(
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    "[0-9a-fA-F]{12}" + _END)


class _UUIDType(_Type):
    """UUID: text such as ``"f81d4fae-7dec-11d0-a765-00a0c91e6bf6"``;
    native ``uuid.UUID``."""

    type_name = "UUID"
    _string_based = True

    @staticmethod
    def _load(datum):
        if type(datum) is not str or not _UUID_RE.match(datum):
            raise ValidationError("Invalid UUID", datum)
        from uuid import UUID
        return UUID(datum)

    @staticmethod
    def _dump(value):
        from uuid import UUID
        if isinstance(value, UUID):
            return str(value)
        raise ValidationError("Invalid UUID", value)

    def json_schema(self):
        return {"type": "string", "format": "uuid",
                "pattern": _UUID_RE.pattern}


# A JSON number's syntax (RFC 8259), in a string: the text keeps every digit.
_DECIMAL_RE = _re.compile(
    "^-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?" + _END)


class _DecimalType(_Type):
    """Decimal: a number written as a JSON string, ``"12.50"``, so that no
    digit is lost on the way; native ``decimal.Decimal``."""

    type_name = "Decimal"
    _string_based = True

    @staticmethod
    def _load(datum):
        if type(datum) is not str or len(datum) > 1000 or \
                not _DECIMAL_RE.match(datum):
            raise ValidationError("Invalid Decimal", datum)
        from decimal import Decimal
        return Decimal(datum)

    @staticmethod
    def _dump(value):
        from decimal import Decimal
        if isinstance(value, Decimal) and value.is_finite():
            text = str(value)
            return text if text[:1] != "+" else text[1:]
        raise ValidationError("Invalid Decimal", value)

    def json_schema(self):
        return {"type": "string", "maxLength": 1000,
                "pattern": _DECIMAL_RE.pattern}


class Box:
    """A JSON value, so that JSON ``null`` (``Box(None)``) differs from None."""

    __slots__ = ("datum",)

    def __init__(self, datum: Any) -> None:
        self.datum = datum

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, Box):
            return self.datum == other.datum
        return self.datum == other

    def __hash__(self) -> int:
        return hash(_json.dumps(self.datum, sort_keys=True))

    def __repr__(self) -> str:
        return "Box(%r)" % (self.datum,)


class _JSONType(_Type):
    """JSON: any JSON value; native ``Box(value)``."""

    type_name = "JSON"

    @staticmethod
    def _load(datum):
        return Box(datum)

    @staticmethod
    def _dump(value):
        return value.datum if isinstance(value, Box) else value

    def _errors(self, datum, path, out):
        pass

    def json_schema(self):
        return {}


# Constraints: JSON Schema's validation keywords on Integer, Float,
# String, Boolean (enum only), Array and Map. In Python they are keyword
# arguments (min_length=...), in the spec and in JSON Schema the keys below;
# message= replaces the text of every refusal of that type.

_RULE_NAMES = _OrderedDict((
    ("minimum", "minimum"), ("maximum", "maximum"),
    ("exclusive_minimum", "exclusiveMinimum"),
    ("exclusive_maximum", "exclusiveMaximum"),
    ("min_length", "minLength"), ("max_length", "maxLength"),
    ("pattern", "pattern"), ("min_items", "minItems"),
    ("max_items", "maxItems"), ("enum", "enum"), ("message", "message")))
_NUMBER_RULES = ("minimum", "maximum", "exclusive_minimum",
                 "exclusive_maximum", "enum", "message")
_RULE_KINDS = {
    "Integer": _NUMBER_RULES, "Float": _NUMBER_RULES,
    "String": ("min_length", "max_length", "pattern", "enum", "message"),
    "Boolean": ("enum", "message"),
    "Array": ("min_items", "max_items", "message"),
    "Map": ("min_items", "max_items", "message"),
}
_RULE_JSON = {v: k for k, v in _RULE_NAMES.items()}


def _rules(base: Any, kinds: tuple, given: dict) -> dict:
    """Checked constraints of ``base``, by spec-JSON key in a fixed order."""
    for name in given:
        if name not in kinds:
            raise SpecError("%s takes no constraint %r; it takes %s" % (
                base.type_name, name, ", ".join(kinds)))
    out = {}
    for name, key in _RULE_NAMES.items():
        if name not in given or given[name] is None:
            continue
        value = given[name]
        if name == "message":
            if type(value) is not str or not value:
                raise SpecError("message must be a non-empty string")
        elif name == "pattern":
            if type(value) is not str:
                raise SpecError("pattern must be a string")
            try:
                _re.compile(value)
            except _re.error as err:
                raise SpecError("Invalid pattern %r: %s" % (value, err)) \
                    from None
        elif name == "enum":
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise SpecError("enum must be a list of values")
            value = list(value)
            if not value:
                raise SpecError("enum must list at least one value")
            for item in value:
                try:
                    base._load(item)
                except ValidationError:
                    raise SpecError("enum value is not a valid %s: %s" % (
                        base.type_name, _short_repr(item))) from None
        elif name in _NUMBER_RULES:
            if type(value) not in (int, float) or not _isfinite(value):
                raise SpecError("%s must be a finite number: %s"
                                % (name, _short_repr(value)))
        elif type(value) is not int or value < 0:
            raise SpecError("%s must be an integer of 0 or more: %s"
                            % (name, _short_repr(value)))
        out[key] = value
    return out


_RULE_TESTS = {
    # key: (a Python expression on v and the bound {b}, message)
    "minimum": ("v >= {b}", "Must be at least %r"),
    "maximum": ("v <= {b}", "Must be at most %r"),
    "exclusiveMinimum": ("v > {b}", "Must be greater than %r"),
    "exclusiveMaximum": ("v < {b}", "Must be less than %r"),
    "minLength": ("len(v) >= {b}", "Must have at least %r characters"),
    "maxLength": ("len(v) <= {b}", "Must have at most %r characters"),
    "minItems": ("len(v) >= {b}", "Must have at least %r items"),
    "maxItems": ("len(v) <= {b}", "Must have at most %r items"),
    # JSON Schema's pattern is a search, not a full match.
    "pattern": ("{b}(v) is not None", "Must match the pattern %r"),
    "enum": ("v in {b}", "Must be one of %r"),
}


def _checker(rules: dict) -> tuple:
    """``(check, test, namespace)`` for a set of constraints.

    ``check(value)`` raises ValidationError naming the first broken rule;
    ``test`` is one Python expression on ``v`` that is true when every rule
    holds, to be compiled with ``namespace`` (which holds the bounds: no
    value from the rules is ever written into the source).
    """
    custom = rules.get("message")
    plan: list = []
    parts: list = []
    namespace: dict = {"len": len}
    for i, (key, bound) in enumerate(rules.items()):
        if key not in _RULE_TESTS:
            continue
        expression, text = _RULE_TESTS[key]
        value: Any = bound
        if key == "pattern":
            value = _re.compile(bound).search
        elif key == "enum":
            value = frozenset(bound)
        name = "b%d" % i
        namespace[name] = value
        parts.append("(%s)" % expression.format(b=name))
        plan.append((eval("lambda v: " + parts[-1], dict(namespace)),
                     custom or text % (bound,)))
    checks = tuple(plan)

    def check(value):
        for test, text in checks:
            if not test(value):
                raise ValidationError(text, value)

    return check, " and ".join(parts) or "True", namespace


class _Constrained(_Type):
    """A primitive type with constraints; its JSON form is the base type's
    plus the constraint keys."""

    def __init__(self, base: Any, rules: dict) -> None:
        self._base = base
        self._rules = rules
        self.type_name = base.type_name
        self._string_based = base._string_based
        # _exact stays None: containers must not keep a value unchecked.
        check, test, namespace = _checker(rules)
        base_load, base_dump = base._load, base._dump

        def slow_load(datum):
            value = base_load(datum)
            check(value)
            return value

        def dump(value):
            datum = base_dump(value)
            check(datum)
            return datum

        # The fast path is one function: a value of the exact type that
        # passes every rule is returned at once; anything else takes the
        # slow path, which converts it and names the broken rule.
        exact = base._exact
        if exact is float:
            test = "v - v == 0.0 and " + test  # not inf or nan
        namespace.update(exact=exact, slow_load=slow_load)
        exec("def load(v):\n"
             "    if type(v) is exact and %s:\n"
             "        return v\n"
             "    return slow_load(v)\n" % test, namespace)
        self._load = namespace["load"] if exact is not None else slow_load
        self._dump = dump

    def __call__(self, **rules: Any) -> Any:
        merged = {_RULE_JSON[k]: v for k, v in self._rules.items()}
        merged.update(rules)
        return self._base(**merged)

    def _schema_json(self):
        return dict(self._base._schema_json(), **self._rules)

    def json_schema(self):
        return _rules_json_schema(self._base.json_schema(), self._rules)

    def __repr__(self):
        return "%s(%s)" % (self.type_name, ", ".join(
            "%s=%r" % (_RULE_JSON[k], v) for k, v in self._rules.items()))


def _rules_json_schema(schema: dict, rules: dict) -> dict:
    """A JSON Schema with the constraints added (``message`` is not one)."""
    out = dict(schema)
    for key, value in rules.items():
        if key != "message":
            out[key] = list(value) if key == "enum" else value
    return out


Integer = _IntegerType()
Float = _FloatType()
Boolean = _ExactType("Boolean", bool, "boolean")
String = _ExactType("String", str, "string", string_based=True)
Binary = _BinaryType()
DateTime = _DateTimeType()
JSON = _JSONType()
UUID = _UUIDType()
Decimal = _DecimalType()


def _push(err: ValidationError, key: Any) -> ValidationError:
    err.stack.append(key)
    return err


def _type_set(exact: type | None) -> frozenset:
    return frozenset((exact,)) if exact is not None else frozenset()


class _Container(_Type):
    """Array and Map: JSON containers whose values all have type ``param``."""

    param: Any
    _rules: dict = {}
    _check: Callable | None = None
    _load: Any
    _dump: Any

    def _constrain(self, rules: dict) -> None:
        """Wrap the compiled load and dump in the item-count checks."""
        self._rules = _rules(self, _RULE_KINDS[self.type_name], rules)
        if not self._rules:
            return
        check = self._check = _checker(self._rules)[0]
        load: Callable = self._load
        dump: Callable = self._dump

        def checked_load(datum):
            value = load(datum)
            check(value)
            return value

        def checked_dump(value):
            datum = dump(value)
            check(datum)
            return datum

        self._load = checked_load
        self._dump = checked_dump

    def _rules_errors(self, datum, path, out):
        if self._check is not None:
            try:
                self._check(datum)
            except ValidationError as err:
                out.append(err._entry(path))

    def _schema_json(self):
        return dict({"type": self.type_name,
                     "param": self.param._schema_json()}, **self._rules)

    def _bind(self, api):
        self.param._bind(api)

    def __repr__(self):
        return "%s(%s)" % (self.type_name, ", ".join(
            [repr(self.param)] + ["%s=%r" % (_RULE_JSON[k], v)
                                  for k, v in self._rules.items()]))


class Array(_Container):
    """A JSON array whose items all have type ``param``; native: a list."""

    type_name = "Array"

    def __init__(self, param: Any, **rules: Any) -> None:
        self.param = _as_type(param)
        item_load = self.param._load
        item_dump = self.param._dump
        exact = _type_set(self.param._exact)

        finite = self.param._exact is float

        def load(datum):
            if type(datum) is not list:
                raise ValidationError("Invalid Array", datum)
            if exact and set(map(type, datum)) <= exact and \
                    (not finite or all(map(_isfinite, datum))):
                return datum[:]
            out = []
            append = out.append
            i = 0
            try:
                for i, item in enumerate(datum):  # noqa: B007 (i: for except)
                    append(item_load(item))
            except ValidationError as err:
                raise _push(err, i)
            return out

        def dump(value):
            if not isinstance(value, (list, tuple)):
                raise ValidationError("Invalid Array", value)
            if exact and set(map(type, value)) <= exact and \
                    (not finite or all(map(_isfinite, value))):
                return list(value)
            out = []
            i = 0
            try:
                for i, item in enumerate(value):  # noqa: B007 (i: for except)
                    out.append(item_dump(item))
            except ValidationError as err:
                raise _push(err, i)
            return out

        self._load = load
        self._dump = dump
        self._constrain(rules)

    def _errors(self, datum, path, out):
        if type(datum) is not list:
            return _Type._errors(self, datum, path, out)
        self._rules_errors(datum, path, out)
        for i, item in enumerate(datum):
            if len(out) >= _MAX_ERRORS:
                return
            self.param._errors(item, path + [i], out)

    def json_schema(self):
        return _rules_json_schema(
            {"type": "array", "items": self.param.json_schema()}, self._rules)


class Map(_Container):
    """A JSON object with values of type ``param``; native: a dict."""

    type_name = "Map"

    def __init__(self, param: Any, **rules: Any) -> None:
        self.param = _as_type(param)
        value_load = self.param._load
        value_dump = self.param._dump
        exact = _type_set(self.param._exact)
        finite = self.param._exact is float
        strs = frozenset((str,))

        def check_keys(datum):
            if not set(map(type, datum)) <= strs:
                for key in datum:
                    if type(key) is not str:
                        raise ValidationError("Invalid Map key", key)

        def load(datum):
            if type(datum) is not dict:
                raise ValidationError("Invalid Map", datum)
            check_keys(datum)
            if exact and set(map(type, datum.values())) <= exact and \
                    (not finite or all(map(_isfinite, datum.values()))):
                return dict(datum)
            out = {}
            key = None
            try:
                for key, value in datum.items():
                    out[key] = value_load(value)
            except ValidationError as err:
                raise _push(err, key)
            return out

        def dump(value):
            if not isinstance(value, dict):
                raise ValidationError("Invalid Map", value)
            check_keys(value)
            out = {}
            key = None
            try:
                for key, item in value.items():
                    out[key] = value_dump(item)
            except ValidationError as err:
                raise _push(err, key)
            return out

        self._load = load
        self._dump = dump
        self._constrain(rules)

    def _errors(self, datum, path, out):
        if type(datum) is not dict:
            return _Type._errors(self, datum, path, out)
        self._rules_errors(datum, path, out)
        for key, value in datum.items():
            if len(out) >= _MAX_ERRORS:
                return
            if type(key) is not str:
                out.append(ValidationError("Invalid Map key", key)._entry(path))
                continue
            self.param._errors(value, path + [key], out)

    def json_schema(self):
        schema = {"type": "object",
                  "additionalProperties": self.param.json_schema()}
        return _rules_json_schema(schema, {
            {"minItems": "minProperties", "maxItems": "maxProperties"}.get(
                k, k): v for k, v in self._rules.items()})


def _field(schema: Any, is_required: bool, doc: str | None) -> dict:
    return {"schema": schema, "required": is_required, "doc": doc}


def required(name: str, schema: Any, doc: str | None = None) -> tuple:
    """A required field: ``(name, {"schema", "required": True, "doc"})``."""
    return (name, _field(schema, True, doc))


def optional(name: str, schema: Any, doc: str | None = None) -> tuple:
    """An optional field: ``(name, {"schema", "required": False, "doc"})``."""
    return (name, _field(schema, False, doc))


def required_link(name: str, model: Any, doc: str | None = None) -> tuple:
    """A required link to ``model`` (a ``Model("api.Name")``)."""
    return (name, {"model": model, "required": True, "doc": doc})


def optional_link(name: str, model: Any, doc: str | None = None) -> tuple:
    """An optional link to ``model`` (a ``Model("api.Name")``)."""
    return (name, {"model": model, "required": False, "doc": doc})


def _fields(param: Any) -> _OrderedDict:
    """Struct fields from a list of pairs or a mapping, schemas checked."""
    items = param.items() if hasattr(param, "items") else param
    fields = _OrderedDict()
    for item in items:
        try:
            name, spec = item
        except (TypeError, ValueError):
            raise SpecError("A field must be a (name, spec) pair, as "
                            "required() gives: %s" % _short_repr(item)) from None
        if type(name) is not str:
            raise SpecError("Field name must be a string: %s" % _short_repr(name))
        if name in fields:
            raise SpecError("Duplicate field name: %s" % name)
        try:
            spec = dict(spec)
            schema = spec["schema"]
        except (TypeError, ValueError, KeyError):
            raise SpecError("Field %s must be a dict with a schema, as "
                            "required() gives: %s"
                            % (name, _short_repr(spec))) from None
        spec["schema"] = _as_type(schema)
        spec.setdefault("required", False)
        spec.setdefault("doc", None)
        fields[name] = spec
    return fields


def _missing_and_unexpected(fields, datum):
    missing = [n for n, f in fields.items() if f["required"] and n not in datum]
    if missing:
        return ValidationError("Missing fields", missing)
    unexpected = [k for k in datum if k not in fields]
    if unexpected:
        return ValidationError("Unexpected fields", unexpected)
    return None


class Struct(_Type):
    """A JSON object with declared fields; native: a dict of those present.

    Required fields must be present, undeclared ones are refused, and
    ``null`` is a value like any other (it is not "absent").
    """

    type_name = "Struct"

    def __init__(self, param: Any) -> None:
        self.param = fields = _fields(param)
        # A value whose type is the field's _exact type is kept as it is
        # (a float only when finite: x - x is 0.0 unless x is inf or nan).
        plan = tuple((name, f["schema"]._load, f["schema"]._exact,
                      f["required"]) for name, f in fields.items())
        _float = float
        dumps = tuple((name, f["schema"]._dump) for name, f in fields.items())
        nfields = len(plan)

        def structure_error(datum):
            return _missing_and_unexpected(fields, datum)

        def load(datum):
            if type(datum) is not dict:
                raise ValidationError("Invalid Struct", datum)
            out = {}
            seen = 0
            for name, field_load, exact, is_required in plan:
                if name in datum:
                    seen += 1
                    value = datum[name]
                    if type(value) is exact and (
                            exact is not _float or value - value == 0.0):
                        out[name] = value
                        continue
                    try:
                        out[name] = field_load(value)
                    except ValidationError as err:
                        # Missing and unexpected fields are reported first.
                        raise structure_error(datum) or _push(err, name)
                elif is_required:
                    raise structure_error(datum)
            if seen != len(datum):
                raise structure_error(datum)
            return out

        def dump(value):
            if not isinstance(value, dict):
                raise ValidationError("Invalid Struct", value)
            out = {}
            for name, field_dump in dumps:
                item = value.get(name)
                if item is not None:
                    try:
                        out[name] = field_dump(item)
                    except ValidationError as err:
                        raise _push(err, name)
            return out

        self._load = load
        self._dump = dump
        self._nfields = nfields

    def _errors(self, datum, path, out):
        if type(datum) is not dict:
            return _Type._errors(self, datum, path, out)
        missing = [n for n, f in self.param.items()
                   if f["required"] and n not in datum]
        if missing:
            out.append(ValidationError("Missing fields", missing)._entry(path))
        unexpected = [k for k in datum if k not in self.param]
        if unexpected:
            out.append(
                ValidationError("Unexpected fields", unexpected)._entry(path))
        for name, f in self.param.items():
            if name in datum and len(out) < _MAX_ERRORS:
                f["schema"]._errors(datum[name], path + [name], out)

    def _schema_json(self):
        return {"type": "Struct", "param": _FIELDS_JSON.to_json(self.param)}

    def _bind(self, api):
        for f in self.param.values():
            f["schema"]._bind(api)

    def json_schema(self):
        schema = {
            "type": "object",
            "properties": {},
            "additionalProperties": False,
        }
        for name, f in self.param.items():
            prop = f["schema"].json_schema()
            if f.get("doc"):
                prop = dict(prop, description=f["doc"])
            schema["properties"][name] = prop
        names = [n for n, f in self.param.items() if f["required"]]
        if names:
            schema["required"] = names
        return schema

    def __repr__(self):
        return "Struct([%s])" % ", ".join(
            "%s(%r, %r)" % ("required" if f["required"] else "optional", n,
                            f["schema"]) for n, f in self.param.items())


class _Wrapper(_Type):
    """A type made of an inner type plus a conversion.

    Subclasses set ``_inner`` and define ``_assemble`` (after the inner
    load) and ``_disassemble`` (before the inner dump).
    """

    _inner: _Type

    def _load(self, datum):
        return self._assemble(self._inner._load(datum))

    def _dump(self, value):
        return self._inner._dump(self._disassemble(value))

    def _errors(self, datum, path, out):
        before = len(out)
        self._inner._errors(datum, path, out)
        if len(out) == before:
            _Type._errors(self, datum, path, out)

    def _bind(self, api):
        self._inner._bind(api)


class OrderedMap(_Wrapper):
    """``{"map": {...}, "order": [...]}``; native: an OrderedDict."""

    type_name = "OrderedMap"

    def __init__(self, param: Any) -> None:
        self.param = _as_type(param)
        self._inner = Struct([required("map", Map(self.param)),
                              required("order", Array(String))])

    @staticmethod
    def _assemble(datum):
        mapping, order = datum["map"], datum["order"]
        if len(order) != len(mapping) or set(order) != set(mapping):
            raise ValidationError("Invalid OrderedMap", datum)
        return _OrderedDict((key, mapping[key]) for key in order)

    @staticmethod
    def _disassemble(value):
        if not isinstance(value, dict):
            raise ValidationError("Invalid OrderedMap", value)
        return {"map": value, "order": list(value)}

    def _schema_json(self):
        return {"type": "OrderedMap", "param": self.param._schema_json()}

    def json_schema(self):
        # JSON Schema cannot say that "order" lists exactly the keys of "map".
        return {
            "type": "object",
            "properties": {
                "map": Map(self.param).json_schema(),
                "order": {"type": "array", "items": {"type": "string"},
                          "uniqueItems": True},
            },
            "required": ["map", "order"],
            "additionalProperties": False,
        }

    def __repr__(self):
        return "OrderedMap(%r)" % (self.param,)


def _as_type(obj: Any) -> Any:
    """Accept a type object; a model class stands for Model("api.Name");
    a custom type (BasicWrapper, ...) gets an adapter."""
    if isinstance(obj, _Type) or obj is Model:
        return obj
    custom = _CUSTOM_BASES
    if isinstance(obj, custom) or (isinstance(obj, type) and
                                   issubclass(obj, custom)):
        adapter = _ADAPTERS.get(obj) if isinstance(obj, type) else None
        if adapter is None:
            adapter = _Custom(obj)
            if isinstance(obj, type):
                _ADAPTERS[obj] = adapter
        return adapter
    raise SpecError("Not a cosmic type: %s" % _short_repr(obj))


# The built-in schema type names, and the parametrized ones' parameter types.
_SIMPLE: dict = {}
_PARAMETRIZED: dict = {}


# The custom types known while a spec or schema is read: (type_getter,
# names of the built-in types allowed, or None for all); see standard_types.
_TYPES: _contextvars.ContextVar = _contextvars.ContextVar(
    "cosmic_types", default=None)


class _SchemaType(_Type):
    """Schema: a type described in JSON, ``{"type": ..., "param": ...}``."""

    type_name = "Schema"

    def __init__(self, type_getter: Any = None, include: Any = None,
                 _own: bool = False) -> None:
        self._own = _own
        self._context = (type_getter,
                         None if include is None else frozenset(include))

    def from_json(self, datum: Any) -> Any:
        """Validate a Schema JSON value and return its type."""
        result = _Type.from_json(self, datum)
        # standard_types() hands back the user's own class, as Teleport did.
        return result._obj if self._own and isinstance(result, _Custom) \
            else result

    def _load(self, datum):
        if not self._own:
            return self._parse(datum)
        token = _TYPES.set(self._context)
        try:
            return self._parse(datum)
        finally:
            _TYPES.reset(token)

    def _parse(self, datum):
        if type(datum) is not dict or type(datum.get("type")) is not str:
            raise ValidationError("Invalid Schema", datum)
        name = datum["type"]
        context = _TYPES.get()
        if context is not None and context[1] is not None and \
                name not in context[1]:
            return _custom_type(name, datum, context)
        rules = _rules_in(name, datum)
        if name in _SIMPLE:
            if "param" in datum:
                raise ValidationError("Unexpected param for %s schema" % name)
            if len(datum) != 1 + len(rules):
                raise _missing_and_unexpected(
                    {"type": _field(String, True, None)}, datum)
            if not rules:
                return _SIMPLE[name]
            try:
                return _SIMPLE[name](**rules)
            except SpecError as err:
                raise ValidationError(str(err)) from None
        if name in _PARAMETRIZED:
            cls, param_type = _PARAMETRIZED[name]
            if "param" not in datum:
                raise ValidationError("Missing param for %s schema" % name)
            if len(datum) != 2 + len(rules):
                raise _missing_and_unexpected(
                    {"type": _field(String, True, None),
                     "param": _field(JSON, True, None)}, datum)
            try:
                param = param_type._load(datum["param"])
            except ValidationError as err:
                raise _push(err, "param")
            try:
                return cls(param, **rules) if rules else cls(param)
            except SpecError as err:
                raise ValidationError(str(err)) from None
        return _custom_type(name, datum, context)

    def _dump(self, value):
        try:
            schema = _as_type(value)
        except SpecError:
            raise ValidationError("Invalid Schema", value) from None
        # A real type that no spec can name (URLParams) is a programming
        # error: SpecError.
        return schema._schema_json()

    def json_schema(self):
        return {"type": "object", "properties": {"type": {"type": "string"}},
                "required": ["type"]}


Schema = _SchemaType()


# Custom types: Teleport 0.2's extension protocol (cosmic.legacy_teleport).
# A custom type is a class (or, when parametrized, an instance) with
# from_json and to_json, or a wrapper of a cosmic type with assemble and
# disassemble. Cosmic uses it through an adapter, _Custom; a spec names it
# by its type_name attribute, else its class name.

class BasicPrimitive:
    """A custom type without parameter: define ``from_json``/``to_json``
    (static or class methods) and optionally ``json_schema()``."""

    param_schema: Any = None

    @staticmethod
    def from_json(datum: Any) -> Any:
        """JSON -> native; raise ValidationError to refuse."""
        return datum

    @staticmethod
    def to_json(datum: Any) -> Any:
        """Native -> JSON."""
        return datum


class ParametrizedPrimitive:
    """A custom type with a parameter: instances, ``Cls(param)``;
    ``param_schema`` is the type of the parameter (e.g. ``Schema``)."""

    param_schema: Any = None

    def __init__(self, param: Any) -> None:
        self.param = param


class BasicWrapper:
    """A custom type made from a cosmic ``schema`` (a class attribute) and
    optional ``assemble`` (after loading) and ``disassemble`` (before
    dumping)."""

    param_schema: Any = None
    schema: Any = None

    @classmethod
    def from_json(cls, datum: Any) -> Any:
        """Validate with ``schema``, then ``assemble``."""
        return cls.assemble(_as_type(cls.schema).from_json(datum))

    @classmethod
    def to_json(cls, datum: Any) -> Any:
        """``disassemble``, then the JSON form by ``schema``."""
        return _as_type(cls.schema).to_json(cls.disassemble(datum))

    @classmethod
    def assemble(cls, datum: Any) -> Any:
        """The native value of validated JSON; may raise ValidationError."""
        return datum

    @classmethod
    def disassemble(cls, datum: Any) -> Any:
        """The value ``schema`` dumps, from a native value."""
        return datum


class ParametrizedWrapper:
    """Like BasicWrapper for a parametrized type: an instance sets
    ``self.param`` and ``self.schema`` (its class sets ``param_schema``)."""

    param_schema: Any = None
    schema: Any = None

    def __init__(self, param: Any) -> None:
        self.param = param

    def from_json(self, datum: Any) -> Any:
        """Validate with ``schema``, then ``assemble``."""
        return self.assemble(_as_type(self.schema).from_json(datum))

    def to_json(self, datum: Any) -> Any:
        """``disassemble``, then the JSON form by ``schema``."""
        return _as_type(self.schema).to_json(self.disassemble(datum))

    def assemble(self, datum: Any) -> Any:
        """The native value of validated JSON; may raise ValidationError."""
        return datum

    def disassemble(self, datum: Any) -> Any:
        """The value ``schema`` dumps, from a native value."""
        return datum


_CUSTOM_BASES = (BasicPrimitive, ParametrizedPrimitive, BasicWrapper,
                 ParametrizedWrapper)
_ADAPTERS: dict = {}


class _Custom(_Type):
    """The adapter that lets cosmic use a custom type like its own."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj
        name = getattr(obj, "type_name", None) or (
            obj.__name__ if isinstance(obj, type) else type(obj).__name__)
        if name in _SIMPLE or name in _PARAMETRIZED:
            raise SpecError("Custom type name %r is a built-in type's; set "
                            "type_name" % name)
        self.type_name = name
        inner = getattr(obj, "schema", None)
        self._inner = None if inner is None else _as_type(inner)
        wrapper = isinstance(obj, ParametrizedWrapper) or (
            isinstance(obj, type) and issubclass(obj, BasicWrapper))
        if wrapper and self._inner is None:
            raise SpecError("Custom type %s wraps no schema: set its "
                            "schema attribute to a cosmic type" % name)
        if wrapper:
            wrapped: Any = self._inner
            inner_load, inner_dump = wrapped._load, wrapped._dump
            assemble, disassemble = obj.assemble, obj.disassemble
            self._string_based = wrapped._string_based
            self._load = lambda datum: assemble(inner_load(datum))
            self._dump = lambda value: inner_dump(disassemble(value))
        else:
            self._load = obj.from_json
            self._dump = obj.to_json

    def _schema_json(self):
        param_schema = getattr(self._obj, "param_schema", None)
        if param_schema is None:
            return {"type": self.type_name}
        return {"type": self.type_name,
                "param": param_schema.to_json(self._obj.param)}

    def _bind(self, api):
        if self._inner is not None:
            self._inner._bind(api)

    def json_schema(self):
        own = getattr(self._obj, "json_schema", None)
        if own is not None:
            return own()
        if self._inner is not None:
            return self._inner.json_schema()
        return {}

    def __repr__(self):
        return self.type_name


def _custom_type(name: str, datum: dict, context: Any) -> Any:
    """Resolve a type name that is not built in with the type getter."""
    getter = context[0] if context is not None else None
    found = None
    if getter is not None:
        try:
            found = getter(name)
        except (KeyError, LookupError, UnknownTypeValidationError):
            found = None
    if found is None:
        raise UnknownTypeValidationError("Unknown type", name)
    param_schema = getattr(found, "param_schema", None)
    try:
        if param_schema is None:
            if "param" in datum:
                raise ValidationError("Unexpected param for %s schema"
                                      % name)
            return _as_type(found)
        if "param" not in datum:
            raise ValidationError("Missing param for %s schema" % name)
        try:
            param = param_schema.from_json(datum["param"])
        except ValidationError as err:
            raise _push(err, "param")
        return _as_type(found(param))
    except SpecError as err:
        raise ValidationError("Type %s: %s" % (name, err)) from None


def standard_types(type_getter: Any = None, include: Any = None) -> dict:
    """Teleport 0.2's type map: ``{name: type}`` of the built-in types
    (``include``: only these names), whose ``Schema`` resolves any other
    name with ``type_getter(name)`` (which raises KeyError or
    UnknownTypeValidationError for names it does not know)."""
    names = ["Integer", "Float", "Boolean", "String", "Binary", "DateTime",
             "JSON", "Schema", "Array", "Map", "OrderedMap", "Struct"]
    if include is not None:
        names = [n for n in names if n in include]
    found = {n: _SIMPLE.get(n) or _PARAMETRIZED[n][0]
             for n in names if n != "Schema"}
    if "Schema" in names:
        found["Schema"] = _SchemaType(type_getter, names, _own=True)
    return found


def _rules_in(name: str, datum: dict) -> dict:
    """The constraints in a Schema JSON value, as keyword arguments."""
    kinds = _RULE_KINDS.get(name, ())
    rules = {}
    for key, value in datum.items():
        py_name = _RULE_JSON.get(key)
        if py_name in kinds:
            rules[py_name] = value
    if not rules:
        return rules
    # The spec may come from anywhere: check the values' JSON types here,
    # the rest (a valid pattern, enum values of the type) in _rules().
    for py_name, value in rules.items():
        if py_name in ("pattern", "message"):
            ok = type(value) is str
        elif py_name == "enum":
            ok = type(value) is list
        elif py_name in _NUMBER_RULES:
            ok = type(value) in (int, float)
        else:
            ok = type(value) is int
        if not ok:
            raise _push(ValidationError("Invalid %s" % _RULE_NAMES[py_name],
                                        value), _RULE_NAMES[py_name])
    return rules


class Model:
    """A reference to a model by full name, ``Model("places.City")``.

    ``Model`` itself is also the type whose JSON form is that dotted name.
    """

    type_name = "cosmic.Model"
    _exact = None
    _string_based = True

    def __init__(self, full_name: str, _api: Any = None) -> None:
        if type(full_name) is not str:
            raise ValidationError("Invalid Model", full_name)
        # Split at the first dot; both sides non-empty, so "a.b.c" and even
        # "a.." are models b.c and "." of APIs a (docs/protocol.md#model).
        api_name, _, model_name = full_name.partition(".")
        if not api_name or not model_name:
            raise ValidationError("Invalid Model: %s" % _cap(full_name))
        self.full_name = full_name
        self.api_name, self.model_name = api_name, model_name
        self._api = _api

    @property
    def model_spec(self) -> dict:
        """The model's spec entry, from its API or else from ``cosmos``."""
        return self._owner().spec["models"][self.model_name]

    def _owner(self) -> Any:
        api = self._api
        if api is None:
            api = cosmos.get(self.api_name)
        if api is None or self.model_name not in api.spec["models"]:
            raise RuntimeError("Model does not exist: %s" % self.full_name)
        return api

    def __eq__(self, other):
        return isinstance(other, Model) and other.full_name == self.full_name

    def __hash__(self):
        return hash(self.full_name)

    def __repr__(self):
        return "Model(%r)" % self.full_name

    # Model as a type: these work on the class and on instances alike.
    @staticmethod
    def _load(datum):
        if type(datum) is not str:
            raise ValidationError("Invalid String", datum)
        head, dot, tail = datum.partition(".")
        if not head or not tail:
            raise ValidationError("Invalid Model: %s" % _cap(datum))
        return Model(datum)

    @staticmethod
    def _dump(value):
        if isinstance(value, Model):
            return value.full_name
        raise ValidationError("Invalid Model", value)

    @classmethod
    def from_json(cls, datum: Any) -> Model:
        """Validate a dotted ``"api.Model"`` name; native: a Model."""
        return _Type.from_json(Model, datum)  # type: ignore[arg-type]

    @classmethod
    def to_json(cls, value: Model) -> str:
        """The dotted name of a Model."""
        return Model._dump(value)

    @staticmethod
    def _errors(datum, path, out):
        _Type._errors(Model, datum, path, out)

    @staticmethod
    def _schema_json():
        return {"type": "cosmic.Model"}

    @staticmethod
    def json_schema():
        """JSON Schema 2020-12 of the dotted name."""
        return {"type": "string", "pattern": "^[^.]+\\.[\\s\\S]+$"}

    @staticmethod
    def _bind(api):
        """The Model type itself holds no reference to bind."""

    def _bind_model(self, api: Any) -> None:
        if self._api is None and self.api_name == api.name:
            self._api = api


def _cap(text: str) -> str:
    return text if len(text) <= _REPR_CAP else text[:_REPR_CAP] + "..."


def _as_model(obj: Any) -> Model:
    if isinstance(obj, Model):
        return obj
    if type(obj) is str:
        return Model(obj)
    if isinstance(obj, type) and "_cosmic_model" in obj.__dict__:
        return obj.__dict__["_cosmic_model"]
    raise SpecError("Expected a Model('api.Name') or a registered model "
                    "class, got %s" % _short_repr(obj))


_DOT_IDS = frozenset((".", ".."))


def _href_id(ident: str) -> str:
    """An id as it appears in an href: as it is, as the original's clients
    read it, except that ``%``, ``/``, ``?`` and ``#`` are escaped, so
    that any id survives the round trip and names its own object. The
    ids ``.`` and ``..`` are refused: an href would resolve upward
    whatever the encoding (RFC 3986 section 6.2.2; docs/protocol.md#link);
    so is ``""``, whose href would name the list.
    """
    if ident.isalnum():
        return ident
    if ident in _DOT_IDS:
        raise ValidationError("Invalid id (a dot segment)", ident)
    if not ident:
        raise ValidationError("Invalid id (empty)", ident)
    if "%" in ident or "/" in ident or "?" in ident or "#" in ident:
        return ident.replace("%", "%25").replace("/", "%2F").replace(
            "?", "%3F").replace("#", "%23")
    return ident


_HREF_ESCAPE = _re.compile("%(25|2[Ff]|3[Ff]|23)")
_HREF_UNESCAPE = {"25": "%", "2F": "/", "2f": "/", "3F": "?", "3f": "?",
                  "23": "#"}


def _href_unescape(text: str) -> str:
    return _HREF_ESCAPE.sub(lambda m: _HREF_UNESCAPE[m.group(1)], text)


class Link(_Type):
    """A link to a model object: JSON ``"/City/3"``, native ``"3"``."""

    type_name = "cosmic.Link"
    _string_based = True

    def __init__(self, param: Any) -> None:
        self.param = _as_model(param)
        name = self.param.model_name

        def load(datum):
            if type(datum) is not str:
                raise ValidationError("Invalid String", datum)
            parts = datum.rsplit("/", 2)
            if len(parts) != 3 or parts[1] != name or not parts[2] or \
                    parts[2] in _DOT_IDS:
                raise ValidationError(
                    "Invalid url for %s link: %s" % (name, _cap(datum)))
            ident = parts[2]
            return _href_unescape(ident) if "%" in ident else ident

        def dump(value):
            if type(value) is not str or not value:
                raise ValidationError("Invalid %s id" % name, value)
            return "/%s/%s" % (name, _href_id(value))

        self._load = load
        self._dump = dump

    def _schema_json(self):
        return {"type": self.type_name, "param": self.param.full_name}

    def _bind(self, api):
        self.param._bind_model(api)

    def json_schema(self):
        return {"type": "string",
                "pattern": "/%s/[^/]+$" % _re.escape(self.param.model_name)}

    def __repr__(self):
        return "Link(%r)" % (self.param,)


_COMPILE_LOCK = _threading.RLock()


class _ModelBody(_Wrapper):
    """Representation and Patch: a HAL object compiled from the model spec.

    The spec is read when the type is first used, so a model may refer to
    models registered after it.
    """

    _all_optional = False

    def __init__(self, param: Any) -> None:
        self.param = _as_model(param)

    def __getattr__(self, name):
        if name != "_inner":
            raise AttributeError(name)
        with _COMPILE_LOCK:  # two threads may meet a new type at once
            inner = self.__dict__.get("_inner")
            if inner is None:
                inner = self._compile()
        return inner

    def _compile(self) -> Struct:
        spec = self.param.model_spec
        opt = self._all_optional
        model = self.param.model_name
        links = [optional("self", Struct([required("href", Link(self.param))]))]
        link_dumps = []
        for name, link in spec["links"].items():
            target = _as_model(link["model"])
            if self.param._api is not None:
                target._bind_model(self.param._api)
            is_required = link["required"] and not opt
            links.append((name, _field(Struct([required("href", Link(target))]),
                                       is_required, None)))
            link_dumps.append((name, Link(target)._dump, is_required))
        props = [(name, _field(f["schema"], f["required"] and not opt, None))
                 for name, f in spec["properties"].items()]
        prop_dumps = [(n, f["schema"]._dump, f["schema"]._exact,
                       f["required"], f["schema"]) for n, f in props]
        inner = Struct([optional("_links", Struct(links))] + props)
        self._model = model
        # The compiled closure shadows the _dump method from now on.
        self._dump = self._compile_dump(  # type: ignore[method-assign]
            model, link_dumps, prop_dumps, False)
        self._parts = (model, link_dumps, prop_dumps)
        self._inner = inner  # last: its presence means "compiled"
        return inner

    def _assemble(self, datum):
        links = datum.pop("_links", None)
        ident = None
        if links:
            self_link = links.pop("self", None)
            if self_link is not None:
                ident = self_link["href"]
            for name, link in links.items():
                datum[name] = link["href"]
        return (ident, datum)

    def _dump(self, value):
        self._inner  # noqa: B018  compiles, and sets the instance's own _dump
        return self._dump(value)

    def _server_dump(self, value):
        """_dump that also refuses a missing required field, anywhere
        inside: what a server sends must pass its clients' from_json."""
        self._inner  # noqa: B018  compiles first: a model may contain itself
        with _COMPILE_LOCK:
            dump = self.__dict__.get("_server_dump")
            if dump is None:
                dump = self.__dict__["_server_dump"] = self._compile_dump(
                    *self._parts, strict=True)
        return dump(value)

    def _compile_dump(self, model: str, link_dumps: list, prop_dumps: list,
                      strict: bool) -> Callable:
        links = tuple((n, d, strict and r) for n, d, r in link_dumps)
        what = self.type_name[7:]
        props = tuple((n, d, e if e is not float else None, strict and r,
                       _required_check(schema) if strict else None)
                      for n, d, e, r, schema in prop_dumps)
        self_prefix = "/%s/" % model
        required_names = [n for n, _, r in links if r] + \
            [n for n, _, _, r, _ in props if r]

        def missing(rep):
            return ValidationError("Missing fields", [
                n for n in required_names if rep.get(n) is None])

        def dump(value):
            try:
                ident, rep = value
            except (TypeError, ValueError):
                raise ValidationError("Invalid " + what, value) from None
            if type(rep) is not dict and not isinstance(rep, dict):
                raise ValidationError("Invalid " + what, rep)
            out = {}
            if ident is not None:
                if type(ident) is not str:
                    raise ValidationError("Invalid %s id" % model, ident)
                out["_links"] = {"self": {"href": self_prefix +
                                          _href_id(ident)}}
            for name, link_dump, is_required in links:
                target = rep.get(name)
                if target is not None:
                    try:
                        href = link_dump(target)
                    except ValidationError as err:
                        raise _push(err, name)
                    out.setdefault("_links", {})[name] = {"href": href}
                elif is_required:
                    raise missing(rep)
            for name, item_dump, exact, is_required, check in props:
                item = rep.get(name)
                if item is not None:
                    if type(item) is exact:
                        out[name] = item
                        continue
                    try:
                        out[name] = item_dump(item)
                        if check is not None:
                            check(out[name])
                    except ValidationError as err:
                        raise _push(err, name)
                elif is_required:
                    raise missing(rep)
            return out

        return dump

    def _schema_json(self):
        return {"type": self.type_name, "param": self.param.full_name}

    def _bind(self, api):
        self.param._bind_model(api)

    def json_schema(self):
        return self._inner.json_schema()

    def __repr__(self):
        return "%s(%r)" % (self.type_name[7:], self.param)


class Representation(_ModelBody):
    """A model object in HAL form; native ``(id or None, rep dict)``."""

    type_name = "cosmic.Representation"


class Patch(_ModelBody):
    """Like Representation, every field optional; runs ``validate_patch``."""

    type_name = "cosmic.Patch"
    _all_optional = True

    def _assemble(self, datum):
        ident, patch = _ModelBody._assemble(self, datum)
        owner = self.param._owner()
        model = getattr(owner.models, self.param.model_name, None)
        hook = getattr(model, "validate_patch", None)
        if hook is not None:
            hook(patch)
        return (ident, patch)


def _required_check(schema: Any, _seen: dict | None = None) -> Any:
    """A check that a dumped (JSON) value has every required field, at any
    depth; None when the type has none. A dump leaves out fields that are
    absent or None, which a client's from_json refuses: a server runs this
    on what it sends."""
    seen: dict = {} if _seen is None else _seen
    cell = seen.get(id(schema))
    if cell is not None:  # a type that contains itself (through a model)
        return lambda datum: cell[0] is not None and cell[0](datum)
    cell = seen[id(schema)] = [None]
    cell[0] = _make_required_check(schema, seen)
    return cell[0]


def _make_required_check(schema: Any, seen: dict) -> Any:
    if isinstance(schema, Struct):
        fields = schema.param.items()
        names = tuple(n for n, f in fields if f["required"])
        subs = tuple((n, c) for n, f in fields
                     for c in (_required_check(f["schema"], seen),)
                     if c is not None)
        if not names and not subs:
            return None

        def check_struct(datum):
            for name in names:
                if name not in datum:
                    raise ValidationError("Missing fields", [
                        n for n in names if n not in datum])
            for name, check in subs:
                if name in datum:
                    try:
                        check(datum[name])
                    except ValidationError as err:
                        raise _push(err, name)

        return check_struct
    if isinstance(schema, (Array, Map)):
        item_check = _required_check(schema.param, seen)
        if item_check is None:
            return None

        def check_items(datum):
            pairs = enumerate(datum) if type(datum) is list else datum.items()
            for key, item in pairs:
                try:
                    item_check(item)
                except ValidationError as err:
                    raise _push(err, key)

        return check_items
    if isinstance(schema, _Wrapper):
        try:
            inner = schema._inner
        except RuntimeError:  # a model this process does not know
            return None
        return _required_check(inner, seen)
    return None


_FIELD_ENTRY = Struct([required("schema", Schema),
                       required("required", Boolean),
                       optional("doc", String)])
_FIELDS_JSON = OrderedMap(_FIELD_ENTRY)


class URLParams(_Type):
    """Struct-like fields carried in a URL query string
    (docs/protocol.md#query-strings).

    String-based fields (String, DateTime, Model, Link) travel as raw text,
    every other field as compact JSON.
    """

    type_name = ""

    def __init__(self, param: Any) -> None:
        self.param = _fields(param)
        self._struct = Struct(self.param)
        self._raw = frozenset(n for n, f in self.param.items()
                              if f["schema"]._string_based)

    def _load(self, datum):
        return self._parse(datum, _MAX_JSON_DEPTH)

    def _parse(self, datum: Any, max_depth: int) -> dict:
        """_load, with JSON values nested at most ``max_depth`` deep."""
        from urllib.parse import parse_qsl
        if type(datum) is not str:
            raise ValidationError("Invalid query string", datum)
        try:
            pairs = parse_qsl(datum, keep_blank_values=True, errors="strict",
                              max_num_fields=1000)
        except UnicodeDecodeError:
            raise ValidationError("Invalid UTF-8 in query string") from None
        except ValueError:
            raise ValidationError("Too many query parameters") from None
        found = {}
        for key, value in pairs:
            if key in self.param:
                if key in found:
                    raise ValidationError(
                        "Repeating query parameters not allowed: %s" % key)
                if key in self._raw:
                    found[key] = value
                    continue
                try:
                    found[key] = _loads_request(value, max_depth)
                except _JSONLimitError as err:
                    raise _push(ValidationError("Invalid JSON: %s" % err),
                                key) from None
                except (ValueError, RecursionError):
                    raise _push(ValidationError("Invalid JSON", value),
                                key) from None
        return self._struct._load(found)

    def _dump(self, value):
        from urllib.parse import quote_plus
        datum = self._struct._dump(value)
        parts = []
        for name in self.param:
            if name in datum:
                item = datum[name]
                if name not in self._raw:
                    item = _json.dumps(item, separators=(",", ":"))
                parts.append("%s=%s" % (quote_plus(name), quote_plus(item)))
        return "&".join(parts)

    def _errors(self, datum, path, out):
        _Type._errors(self, datum, path, out)

    def _schema_json(self):
        raise SpecError("URLParams cannot be described in a spec")

    def _bind(self, api):
        self._struct._bind(api)

    def json_schema(self):
        return self._struct.json_schema()


class _RequirementType(_Type):
    """What a call needs, in a spec (docs/protocol.md#authentication):
    false (open), true (a valid identity) or the scopes it must hold."""

    @staticmethod
    def _load(datum):
        if type(datum) is bool:
            return datum
        if type(datum) is list and datum and \
                all(type(scope) is str and scope for scope in datum):
            return list(datum)
        raise ValidationError("Invalid requirement: expected true, false "
                              "or a non-empty list of scopes", datum)

    _dump = _load

    def json_schema(self):
        return {"anyOf": [{"type": "boolean"}, {
            "type": "array", "minItems": 1,
            "items": {"type": "string", "minLength": 1}}]}


_REQUIREMENT = _RequirementType()


class _APISpecType(_Wrapper):
    """APISpec: the whole API description served at /spec.json
    (docs/protocol.md#the-spec)."""

    type_name = "cosmic.APISpec"

    def __init__(self) -> None:
        link_entry = Struct([required("model", Model),
                             required("required", Boolean),
                             optional("doc", String)])
        methods = Struct([required(m, Boolean) for m in MODEL_METHODS])
        model_entry = Struct([
            required("properties", _FIELDS_JSON),
            required("links", OrderedMap(link_entry)),
            required("query_fields", _FIELDS_JSON),
            required("methods", methods),
            required("list_metadata", _FIELDS_JSON),
            optional("create_requires", Array(String)),
            optional("requires", Struct([optional(m, _REQUIREMENT)
                                         for m in MODEL_METHODS])),
        ])
        action_entry = Struct([optional("accepts", Schema),
                               optional("returns", Schema),
                               optional("doc", String),
                               optional("requires", _REQUIREMENT)])
        auth_entry = Struct([
            required("schemes", Array(Struct([required("type", String),
                                               optional("header", String)]))),
            required("requires", _REQUIREMENT),
            required("protect_spec", Boolean),
        ])
        self._inner = Struct([
            required("name", String),
            optional("homepage", String),
            optional("auth", auth_entry),
            required("actions", OrderedMap(action_entry)),
            required("models", OrderedMap(model_entry)),
        ])

    @staticmethod
    def _assemble(datum):
        # A spec may come from anywhere (a client fetches it): names become
        # attributes and URL segments, so they must be identifiers.
        try:
            for name in list(datum["actions"]) + list(datum["models"]):
                validate_underscore_identifier(name)
            for name, model in datum["models"].items():
                _check_model_spec(name, model)
            _check_spec_auth(datum)
        except SpecError as err:
            raise ValidationError(str(err)) from None
        return datum

    @staticmethod
    def _disassemble(value):
        return value

    def json_schema(self):
        return self._inner.json_schema()


def _check_model_spec(name: str, model: dict) -> None:
    """The checks of docs/protocol.md#spec-checks, run before a model
    joins a spec."""
    for kind in ("properties", "links", "query_fields", "list_metadata"):
        for field in model.get(kind, ()):
            validate_underscore_identifier(field)
    for field in model.get("links", ()):
        if field in model.get("properties", ()):
            raise ValidationError(
                "Model cannot contain a field and link with the same name: %s"
                % name)
    for kind in ("properties", "links"):
        if "id" in model.get(kind, ()):
            raise ValidationError("'id' is a reserved name.")
    fields = set(model.get("properties", ())) | set(model.get("links", ()))
    unknown = [n for n in model.get("create_requires", ()) if n not in fields]
    if unknown:
        raise ValidationError("create_requires names no field or link of %s"
                              % name, unknown)
    if "self" in model.get("links", ()):
        # _links.self is the object's own href
        # (docs/protocol.md#representation).
        raise ValidationError("'self' is a reserved link name.")


def _check_spec_auth(spec: dict) -> None:
    """The auth entry names known schemes, once each, an API key's header
    where a key may go; requirements appear only beside an auth entry,
    and a model's only for the methods it serves."""
    auth = spec.get("auth")
    if auth is not None:
        if not auth["schemes"]:
            raise ValidationError("auth declares no scheme")
        kinds = []
        for scheme in auth["schemes"]:
            kind, header = scheme["type"], scheme.get("header")
            if kind not in ("bearer", "api_key", "basic") or kind in kinds:
                raise ValidationError(
                    "auth schemes must be bearer, api_key and basic, each at"
                    " most once; got %s" % _short_repr(kind))
            kinds.append(kind)
            if (kind == "api_key") != (header is not None) or \
                    header is not None and not _key_header_ok(header):
                raise ValidationError(
                    "auth: an api_key scheme names its header (such as "
                    "'X-API-Key'), and only it; got %s"
                    % _short_repr(scheme))
    for kind in ("actions", "models"):
        for name, entry in spec[kind].items():
            requires = entry.get("requires")
            if requires is None:
                continue
            if auth is None:
                raise ValidationError("%s %s has requires, but the spec "
                                      "declares no auth" % (kind, name))
            if kind == "models":
                idle = [m for m in requires if not entry["methods"][m]]
                if idle:
                    raise ValidationError(
                        "models %s requires methods it does not serve: %s"
                        % (name, ", ".join(idle)))


APISpec = _APISpecType()

for _t in (Integer, Float, Boolean, String, Binary, DateTime, JSON, Schema,
           UUID, Decimal):
    _SIMPLE[_t.type_name] = _t
_SIMPLE["cosmic.Model"] = Model
_SIMPLE["cosmic.APISpec"] = APISpec
for _cls, _param in ((Array, Schema), (Map, Schema), (OrderedMap, Schema),
                     (Struct, _FIELDS_JSON), (Link, Model),
                     (Representation, Model), (Patch, Model)):
    _PARAMETRIZED[_cls.type_name] = (_cls, _param)
del _t, _cls, _param


# -- Tools (cosmic.tools) -----------------------------------------------------

# Small helpers the original exported from cosmic.tools: argument checks and
# JSON (de)serialisation against a schema.

_IDENTIFIER = _re.compile(r"[a-zA-Z0-9_]*\Z")


def validate_underscore_identifier(name: str) -> None:
    """Refuse names other than ``[a-zA-Z0-9_]`` with single inner ``_``."""
    if type(name) is not str or not _IDENTIFIER.match(name):
        raise SpecError(
            "Identifier must consist of [a-zA-Z0-9_] characters only: %s"
            % (name,))
    if name.startswith("_") or name.endswith("_"):
        raise SpecError(
            "Identifier cannot start or end with an underscore: %s" % name)
    if "__" in name:
        raise SpecError(
            "Identifier cannot have consecutive underscores: %s" % name)


def get_args(func: Callable) -> tuple:
    """``(required_names, optional_names)`` of a function's parameters."""
    import inspect
    required_names, optional_names = [], []
    for p in inspect.signature(func).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise SpecError("Cannot define action with splats (* or **)")
        if p.default is p.empty:
            required_names.append(p.name)
        else:
            optional_names.append(p.name)
    return tuple(required_names), tuple(optional_names)


def _positional_only(func: Callable) -> bool:
    """Whether a function has a positional-only parameter."""
    import inspect
    return any(p.kind == p.POSITIONAL_ONLY
               for p in inspect.signature(func).parameters.values())


def assert_is_compatible(schema: Any, required_args: tuple,
                         optional_args: tuple) -> None:
    """Check that an action's ``accepts`` fits its function's parameters."""
    names = tuple(required_args) + tuple(optional_args)
    if not names:
        raise SpecError("Function needs to accept arguments")
    if len(names) == 1:
        return
    if not isinstance(schema, Struct):
        raise SpecError("Function accepts multiple arguments, so its accepts "
                        "schema is expected to be a Struct")
    for arg in required_args:
        field = schema.param.get(arg)
        if field is None or not field["required"]:
            raise SpecError("Action argument '%s' must have a corresponding "
                            "required field in the accepts schema" % arg)
    for name in schema.param:
        if name not in names:
            raise SpecError("The '%s' field must have a corresponding "
                            "function argument" % name)


# Type hints: int, float, bool, str, bytes, datetime, list[T], dict[str,
# T], Optional[T], TypedDict, dataclasses, Annotated[T, rules] and cosmic
# types, read once when an action or model is registered.

def _type_hints(obj: Any, where: str, below: Any = None) -> dict:
    """The evaluated annotations of a function or class, by name; with
    ``below``, only those of the classes that derive from it."""
    import typing
    if below is None:
        try:
            return typing.get_type_hints(obj, include_extras=True)
        except Exception:
            pass  # find the annotation that fails, to name it
    layers: list
    if isinstance(obj, type):
        layers = [(vars(c).get("__annotations__", {}),
                   vars(_sys.modules.get(c.__module__, typing)), dict(vars(c)))
                  for c in reversed(obj.__mro__)
                  if below is None or (issubclass(c, below) and
                                       c is not below)]
    else:
        layers = [(getattr(obj, "__annotations__", {}),
                   getattr(obj, "__globals__", {}), None)]
    hints = {}
    for found, global_ns, local_ns in layers:
        for name, hint in found.items():
            if isinstance(hint, str):
                try:
                    hint = eval(hint, global_ns, local_ns)  # as typing does
                except Exception as err:
                    advice = ""
                    if "|" in hint:
                        advice = ("; Python %d.%d cannot evaluate X | None in"
                                  " an annotation: write Optional[X]"
                                  % _sys.version_info[:2])
                    raise SpecError("%s: cannot read the type hint %r of %r "
                                    "(%s: %s)%s" % (where, hint, name,
                                                    type(err).__name__, err,
                                                    advice)) from None
            hints[name] = hint
    return hints


def _hint_type(hint: Any, where: str, name: str) -> tuple:
    """``(cosmic type, optional)`` for a type hint; SpecError if none fits."""
    import typing
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        schema, is_optional = _hint_type(args[0], where, name)
        for extra in args[1:]:
            if isinstance(extra, dict):
                schema = schema(**extra)
            else:
                try:
                    schema = _as_type(extra)
                except SpecError:
                    pass  # metadata for other tools
        return schema, is_optional
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _hint_type(rest[0], where, name)[0], True
    elif origin is list and len(args) == 1:
        return Array(_hint_type(args[0], where, name)[0]), False
    elif origin is dict and len(args) == 2 and args[0] is str:
        return Map(_hint_type(args[1], where, name)[0]), False
    elif type(hint) is type and hint in _HINT_TYPES:
        return _HINT_TYPES[hint], False
    elif isinstance(hint, type) and (hint.__module__, hint.__name__) in (
            ("uuid", "UUID"), ("decimal", "Decimal")):
        return (UUID if hint.__name__ == "UUID" else Decimal), False
    elif isinstance(hint, type) and issubclass(hint, dict) and \
            hasattr(hint, "__required_keys__"):
        return _typed_dict_type(hint, where), False
    elif isinstance(hint, type) and "__dataclass_fields__" in vars(hint):
        return _DataclassType(hint, where), False
    else:
        try:
            return _as_type(hint), False
        except SpecError:
            pass
    raise SpecError("%s: cannot map the type hint %r of %r to a cosmic type; "
                    "use int, float, bool, str, bytes, datetime, list[T], "
                    "dict[str, T], Optional[T], a TypedDict, a dataclass or a "
                    "cosmic type" % (where, _hint_text(hint), name))


def _hint_text(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else repr(hint)


_HINT_TYPES = {int: Integer, float: Float, bool: Boolean, str: String,
               bytes: Binary, _datetime.datetime: DateTime}


def _typed_dict_type(cls: type, where: str) -> Struct:
    where = "%s, TypedDict %s" % (where, cls.__name__)
    required_keys = cls.__required_keys__  # type: ignore[attr-defined]
    fields = []
    for name, hint in _type_hints(cls, where).items():
        schema, is_optional = _hint_type(hint, where, name)
        fields.append((name, _field(schema, name in required_keys and
                                    not is_optional, None)))
    return Struct(fields)


class _DataclassType(_Wrapper):
    """A dataclass as a Struct: the native form is an instance."""

    type_name = "Struct"

    def __init__(self, cls: type, where: str) -> None:
        import dataclasses
        where = "%s, dataclass %s" % (where, cls.__name__)
        hints = _type_hints(cls, where)
        fields, absent = [], []
        for f in dataclasses.fields(cls):
            schema, is_optional = _hint_type(hints.get(f.name), where, f.name)
            has_default = f.default is not dataclasses.MISSING or \
                f.default_factory is not dataclasses.MISSING
            fields.append((f.name, _field(schema, not (is_optional or
                                                       has_default), None)))
            if is_optional and not has_default:
                absent.append(f.name)
        self._cls = cls
        self._inner = Struct(fields)
        self.param = self._inner.param
        names, missing = tuple(self.param), tuple(absent)

        def assemble(datum):
            for key in missing:
                datum.setdefault(key, None)
            return cls(**datum)

        def disassemble(value):
            if isinstance(value, cls):
                return {n: getattr(value, n) for n in names}
            if isinstance(value, dict):
                return value
            raise ValidationError("Invalid %s" % cls.__name__, value)

        self._assemble = assemble
        self._disassemble = disassemble

    def _schema_json(self):
        return self._inner._schema_json()

    def json_schema(self):
        return self._inner.json_schema()

    def __repr__(self):
        return self._cls.__name__


def _hint_accepts(func: Callable, where: str) -> tuple:
    """``(accepts, returns)`` of a function from its type hints."""
    import inspect
    hints = _type_hints(func, where)
    params = list(inspect.signature(func).parameters.values())
    fields = []
    for p in params:
        if p.name not in hints:
            raise SpecError("%s: parameter %r has no type hint" % (where,
                                                                  p.name))
        schema, is_optional = _hint_type(hints[p.name], where, p.name)
        fields.append((p.name, _field(schema, p.default is p.empty, None)))
    accepts = None
    if len(fields) == 1:
        accepts = fields[0][1]["schema"]
    elif fields:
        accepts = Struct(fields)
    returns = hints.get("return", None)
    if returns is not None and returns is not type(None):
        returns = _hint_type(returns, where, "return")[0]
    else:
        returns = None
    return accepts, returns


def _hint_properties(cls: type, where: str) -> list:
    """Fields from a model class's annotations (not BaseModel's own, not
    ClassVars, not names starting with ``_``)."""
    import typing
    own = set()
    for klass in cls.__mro__:
        if klass is not BaseModel and issubclass(klass, BaseModel):
            own.update(vars(klass).get("__annotations__", {}))
    own -= set(vars(BaseModel).get("__annotations__", {}))
    if not own:
        return []
    hints = _type_hints(cls, where, below=BaseModel)
    fields = []
    for name, hint in hints.items():
        if name in own and not name.startswith("_") and \
                typing.get_origin(hint) is not typing.ClassVar:
            schema, is_optional = _hint_type(hint, where, name)
            fields.append((name, _field(schema, not is_optional, None)))
    return fields


def args_to_datum(*args: Any, **kwargs: Any) -> Any:
    """One positional argument, or keywords, as the action's input datum."""
    if len(args) == 1 and not kwargs:
        return args[0]
    if not args and kwargs:
        return kwargs
    if not args and not kwargs:
        return None
    raise SpecError("Action must be called either with one argument or with "
                    "one or more keyword arguments")


def serialize_json(schema: Any, datum: Any) -> Box | None:
    """``Box(schema.to_json(datum))``; None for no data; checks the pairing."""
    if schema is not None and datum is None:
        raise ValidationError("Expected data, found None")
    if schema is None and datum is not None:
        raise ValidationError("Expected None, found data")
    if datum is None:
        return None
    return Box(schema.to_json(datum))


def deserialize_json(schema: Any, datum: Box | None) -> Any:
    """``schema.from_json(datum.datum)``; checks the pairing as above."""
    if schema is not None and datum is None:
        raise ValidationError("Expected Box, found None")
    if schema is None and datum is not None:
        raise ValidationError("Expected None, found Box")
    if datum is None:
        return None
    return schema.from_json(datum.datum)


def string_to_json(text: str) -> Box | None:
    """Parse a body strictly: "" is no data (None), else a Box."""
    if text == "":
        return None
    try:
        return Box(_loads_strict(text))
    except (ValueError, RecursionError):
        raise ValidationError("Invalid JSON") from None


def is_string_type(schema: Any) -> bool:
    """Whether a type's JSON form is a string sent raw in query strings."""
    return bool(getattr(schema, "_string_based", False))


# -- API, spec and models -----------------------------------------------------

# The API object users declare: actions, models, and the spec they make.

class Object:
    """A plain namespace: ``api.actions`` and ``api.models`` are Objects."""

    def __repr__(self) -> str:
        return "<Object %s>" % ", ".join(sorted(self.__dict__))


class BaseAPI:
    """What servers and clients share: ``spec``, ``actions``, ``models``."""

    def __init__(self, spec: dict, actions: Object | None = None,
                 models: Object | None = None) -> None:
        self.spec = spec
        self.actions = actions if actions is not None else Object()
        self.models = models if models is not None else Object()

    @property
    def name(self) -> str:
        """The API's name, as in its spec."""
        return self.spec["name"]

    def __repr__(self) -> str:
        return "<%s %r>" % (type(self).__name__, self.spec.get("name"))


class BaseModel:
    """Base class of models; register subclasses with ``@api.model``.

    Class attributes: ``properties``, ``links``, ``query_fields``,
    ``list_metadata`` (lists of ``required(...)``/``optional(...)``
    pairs) and ``methods`` (which of get_by_id, get_list, create, update
    and delete are served over HTTP). Implement those as classmethods.
    ``create_requires`` names the fields and links a create must carry
    (refused otherwise with ``Missing fields``). Properties may also be
    written as annotations: ``name: str``, ``population: Optional[int]``.
    An optional classmethod ``etag(cls, id, rep) -> str`` gives objects
    their own ETag (by default a hash of the representation); see
    ``cosmic.if_match()``.
    ``requires`` maps methods to requirements that override the API's
    default, e.g. ``{"create": True, "delete": "admin"}``.
    """

    _cosmic_model: ClassVar[Model]  # set by API.model
    properties: list = []
    links: list = []
    query_fields: list = []
    list_metadata: list = []
    methods: list = []
    create_requires: list = []
    requires: dict = {}

    @classmethod
    def get_by_id(cls, id: str) -> dict:
        """Return the representation dict of ``id``, or raise NotFound."""
        raise NotImplementedError

    @classmethod
    def get_list(cls, **query: Any) -> Any:
        """Return ``[(id, rep), ...]`` (with ``list_metadata``: ``(pairs, meta)``)."""
        raise NotImplementedError

    @classmethod
    def create(cls, patch: dict) -> tuple:
        """Create an object from a patch; return ``(new_id, rep)``."""
        raise NotImplementedError

    @classmethod
    def update(cls, id: str, patch: dict) -> dict:
        """Apply a patch; return the new rep, or raise NotFound."""
        raise NotImplementedError

    @classmethod
    def delete(cls, id: str) -> None:
        """Delete ``id``, or raise NotFound."""
        raise NotImplementedError

    @classmethod
    def validate_patch(cls, patch: dict) -> None:
        """Raise ValidationError to refuse a patch sent by a client."""


def _link_entry(name: str, spec: dict) -> dict:
    target = spec.get("model", spec.get("schema"))
    if target is None:
        raise SpecError("Link %s names no model" % name)
    try:
        model = _as_model(target)
    except ValidationError as err:
        raise SpecError("Link %s: %s" % (name, err)) from None
    except SpecError:
        raise SpecError(
            "Link %s must name a registered model class or Model('api.Name'),"
            " got %s" % (name, _short_repr(target))) from None
    return {"model": model, "required": bool(spec.get("required")),
            "doc": spec.get("doc")}


def _where(err: SpecError, api: API, kind: str, name: Any) -> SpecError:
    """``err`` with the API, the action or model and the user's line in
    its message, its traceback cut at the user's code (registration)."""
    frame = _sys._getframe(1)
    here = frame.f_code.co_filename
    while frame.f_back is not None and frame.f_code.co_filename == here:
        frame = frame.f_back
    what = "%s %r" % (kind, name) if isinstance(name, str) else kind
    err.args = ("API %r, %s (%s, line %d): %s" % (
        api.name, what, frame.f_code.co_filename, frame.f_lineno,
        err.args[0] if err.args else ""),) + err.args[1:]
    return err.with_traceback(None)


class API(BaseAPI):
    """A server-side API: register actions and models, then serve it.

    ``API("words", homepage=None)``; ``@api.action(accepts, returns)``,
    ``@api.model``; ``Server(api).wsgi_app`` or ``api.run()`` to serve.

    Authentication: ``auth`` is a scheme (``BearerAuth``, ``APIKeyAuth``,
    ``BasicAuth``) or a list of them; ``requires`` is what every call
    needs unless it says otherwise: False (open), True (a valid
    identity) or scopes (a name or a list of names the identity must
    hold). ``protect_spec=True`` puts /spec.json and /openapi.json
    behind the schemes too; the docs page is always open.
    """

    def __init__(self, name: str, homepage: str | None = None,
                 auth: Any = None, requires: Any = False,
                 protect_spec: bool = False) -> None:
        if type(name) is not str or not name or "." in name:
            raise SpecError("API name must be a non-empty string without "
                            "dots: %s" % _short_repr(name))
        self._schemes = _schemes_of(auth)
        self._requires_default = self._need(requires, "API %s" % name)
        self.protect_spec = bool(protect_spec)
        if self.protect_spec and not self._schemes:
            raise SpecError("protect_spec needs a scheme: pass auth=")
        spec: dict = {"name": name, "homepage": homepage,
                      "actions": _OrderedDict(), "models": _OrderedDict()}
        if self._schemes:  # else the spec is as it was before auth
            spec["auth"] = {
                "schemes": [scheme._spec_json() for scheme in self._schemes],
                "requires": _requirement_json(self._requires_default),
                "protect_spec": self.protect_spec}
        super().__init__(spec)
        self._model_classes: dict = {}
        self._version = 0
        cosmos[name] = self

    def _need(self, requires: Any, where: str) -> Any:
        need = _requirement(requires, where)
        if need is not None and not self._schemes:
            raise SpecError("%s requires credentials, but the API declares "
                            "no scheme: pass auth= to API()" % where)
        return need

    def action(self, accepts: Any = None, returns: Any = None,
               requires: Any = _MISSING) -> Callable:
        """Register a function as ``POST /actions/<name>``.

        ``accepts`` and ``returns`` are types (or None for no input or no
        output). With several parameters, ``accepts`` must be a Struct
        whose fields match them. Without either, the function's type hints
        say them (``@api.action`` on ``def f(a: int, b: int) -> int``).
        ``requires`` overrides the API's default (see ``API``). The
        function is returned unchanged.
        """
        import inspect
        if inspect.isroutine(accepts) and returns is None:
            return self.action()(accepts)  # bare @api.action
        hinted = accepts is None and returns is None
        try:
            accepts = None if accepts is None else _as_type(accepts)
            returns = None if returns is None else _as_type(returns)
        except SpecError as err:
            raise _where(err, self, "action", None) from None

        def decorator(func: Callable) -> Callable:
            try:
                return self._add_action(func, accepts, returns, hinted,
                                        requires)
            except SpecError as err:
                raise _where(err, self, "action",
                             getattr(func, "__name__", None)) from None

        return decorator

    def _add_action(self, func: Callable, accepts: Any, returns: Any,
                    hinted: bool, requires: Any = _MISSING) -> Callable:
        import inspect
        name = func.__name__
        validate_underscore_identifier(name)
        if hinted and getattr(func, "__annotations__", None):
            accepts, returns = _hint_accepts(
                func, "action %s of API %s" % (name, self.name))
        required_args, optional_args = get_args(func)
        if len(required_args + optional_args) > 1 and \
                _positional_only(func):
            raise SpecError("Cannot define action with positional-only "
                            "parameters unless it has just one: %s"
                            % name)
        if accepts is not None:
            assert_is_compatible(accepts, required_args, optional_args)
        entry = {"accepts": accepts, "returns": returns,
                 "doc": inspect.getdoc(func)}
        if requires is not _MISSING:
            need = self._need(requires, "This action")
            if need != self._requires_default:
                entry["requires"] = _requirement_json(need)
        for schema in (accepts, returns):
            if schema is not None:
                schema._bind(self)
        self.spec["actions"][name] = entry
        setattr(self.actions, name, func)
        self._version += 1
        return func

    def model(self, cls: _ModelClass) -> _ModelClass:
        """Register a BaseModel subclass; its methods become REST endpoints."""
        try:
            return self._add_model(cls)
        except SpecError as err:
            raise _where(err, self, "model",
                         getattr(cls, "__name__", None)) from None

    def _add_model(self, cls: _ModelClass) -> _ModelClass:
        name = cls.__name__
        validate_underscore_identifier(name)
        if name == "actions":
            raise SpecError("Model name is reserved: actions (its routes "
                            "would clash with the actions')")
        methods = list(cls.methods)
        for method in methods:
            if method not in MODEL_METHODS:
                raise SpecError("Unknown model method %r on %s; expected some"
                                " of %s" % (method, name, MODEL_METHODS))
        links = _OrderedDict()
        for item in cls.links:
            try:
                link_name, spec = item
            except (TypeError, ValueError):
                raise SpecError("A link must be a (name, spec) pair, as "
                                "required_link() gives") from None
            links[link_name] = _link_entry(link_name, spec)
        properties = cls.properties
        if not any("properties" in vars(k) for k in cls.__mro__
                   if k is not BaseModel):
            properties = _hint_properties(
                cls, "model %s of API %s" % (name, self.name))
        model_spec: dict = {
            "properties": _fields(properties),
            "links": links,
            "query_fields": _fields(cls.query_fields),
            "methods": {m: m in methods for m in MODEL_METHODS},
            "list_metadata": _fields(cls.list_metadata),
        }
        requires = list(getattr(cls, "create_requires", None) or ())
        if requires:
            model_spec["create_requires"] = requires
        _check_model_spec(name, model_spec)
        needs = getattr(cls, "requires", None) or {}
        if not isinstance(needs, dict) or \
                not set(needs) <= set(MODEL_METHODS):
            raise SpecError("requires must map model methods (%s) to "
                            "requirements" % ", ".join(MODEL_METHODS))
        own = {}
        for method, value in needs.items():
            need = self._need(value, "Method %s" % method)
            if method in methods and need != self._requires_default:
                own[method] = _requirement_json(need)
        if own:
            model_spec["requires"] = {m: own[m] for m in MODEL_METHODS
                                      if m in own}
        for kind in ("properties", "query_fields", "list_metadata"):
            for field in model_spec[kind].values():
                field["schema"]._bind(self)
        for link in links.values():
            link["model"]._bind_model(self)
        cls._cosmic_model = Model("%s.%s" % (self.name, name), self)
        self.spec["models"][name] = model_spec
        namespace = Object()
        for method in MODEL_METHODS + ["validate_patch"]:
            setattr(namespace, method, getattr(cls, method))
        setattr(self.models, name, namespace)
        self._model_classes[name] = cls
        self._version += 1
        return cls

    def run(self, port: int = 5000, debug: bool = False,
            host: str = "127.0.0.1", **options: Any) -> None:
        """Serve on ``host:port`` with the development server until SIGTERM
        or Ctrl-C.

        ``options`` go to ``Server`` (``cors_origins``, ...) or to
        ``serve_wsgi`` (``max_connections``, ``threads``, ...); the
        original's werkzeug options (``threaded``, ``use_reloader``, ...) are
        ignored, ``ssl_context`` is refused.  A port in use raises OSError.
        """
        server_options, limits = _split_run_options(options)
        server = Server(self, debug=debug, **server_options)
        # The server buffers bodies: no more than the app will accept.
        limits.setdefault("max_chunked_body", server.max_content_length)
        serve_wsgi(server.wsgi_app, host=host, port=port, **limits)


# -- Authentication -----------------------------------------------------------
#
# A scheme reads one header and asks the user's ``verify`` for an identity.
# Server builds, once per version of the API, a guard around each endpoint of
# an API that declares schemes; an API that declares none keeps its endpoints
# as they are, so it pays nothing per request. The wire rules (401, 403,
# WWW-Authenticate) are in docs/protocol.md#authentication.

_identity: _contextvars.ContextVar = _contextvars.ContextVar(
    "cosmic_identity", default=None)
_REFUSED = object()  # a credential was sent, and verify refused it


def current_identity() -> Any:
    """The identity that ``verify`` returned for the current request.

    None outside a request, on an API without schemes, and on an open call
    that came without a (valid) credential.
    """
    return _identity.get()


def compare_secret(given: str | bytes, expected: str | bytes) -> bool:
    """Whether two secrets are equal, in time that does not depend on
    where they differ (``hmac.compare_digest``); str is taken as UTF-8."""
    import hmac
    if isinstance(given, str):
        given = given.encode("utf-8")
    if isinstance(expected, str):
        expected = expected.encode("utf-8")
    return hmac.compare_digest(given, expected)


class _Scheme:
    """What the three schemes share: ``verify`` and the header they read."""

    kind = ""
    header = "Authorization"
    hint = ""
    _prefix = ""

    def __init__(self, verify: Callable) -> None:
        if not callable(verify):
            raise SpecError("%s needs a verify function, got %s"
                            % (type(self).__name__, _short_repr(verify)))
        self.verify = verify

    @property
    def _environ_key(self) -> str:
        return "HTTP_" + self.header.upper().replace("-", "_")

    def _credential(self, value: str) -> Any:
        """The credential in a header value, None if it is not for this
        scheme, "" if it is for this scheme but empty."""
        if value[:len(self._prefix)].lower() != self._prefix.lower():
            return None
        return value[len(self._prefix):].strip()

    def _identify(self, value: str) -> Any:
        """The identity, None (not this scheme's header) or _REFUSED."""
        credential = self._credential(value)
        if credential is None:
            return None
        identity = self.verify(credential) if credential else None
        return _REFUSED if identity is None else identity

    def _challenge(self, realm: str, refused: bool) -> str:
        return '%s realm="%s"' % (self._prefix.strip(), realm)

    def _spec_json(self) -> dict:
        """The scheme as the spec declares it (no verify, no secret)."""
        if self.kind == "api_key":
            return {"type": self.kind, "header": self.header}
        return {"type": self.kind}

    def __repr__(self) -> str:
        return "<%s>" % type(self).__name__


class BearerAuth(_Scheme):
    """``Authorization: Bearer <token>`` (RFC 6750); ``verify(token)``
    returns the identity, or None to refuse the token."""

    kind = "bearer"
    _prefix = "Bearer "
    hint = "Authorization: Bearer <token>"

    def _challenge(self, realm: str, refused: bool) -> str:
        if refused:
            return 'Bearer realm="%s", error="invalid_token"' % realm
        return 'Bearer realm="%s"' % realm


class BasicAuth(_Scheme):
    """``Authorization: Basic <base64 user:password>`` (RFC 7617);
    ``verify(username, password)`` returns the identity, or None."""

    kind = "basic"
    _prefix = "Basic "
    hint = "Authorization: Basic <base64 of user:password>"

    def _identify(self, value: str) -> Any:
        encoded = self._credential(value)
        if encoded is None:
            return None
        try:
            pair = _base64.b64decode(encoded, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return _REFUSED
        user, colon, password = pair.partition(":")
        identity = self.verify(user, password) if colon else None
        return _REFUSED if identity is None else identity

    def _challenge(self, realm: str, refused: bool) -> str:
        return 'Basic realm="%s", charset="UTF-8"' % realm


# Headers an API key never goes in, on either side: they carry framing,
# routing or other credentials (a client ignores a 401 that names one).
_NOT_KEY_HEADERS = frozenset((
    "authorization", "content-type", "content-length", "host", "connection",
    "transfer-encoding", "te", "trailer", "upgrade", "expect", "keep-alive",
    "cookie", "proxy-authorization", "proxy-connection"))


def _key_header_ok(header: Any) -> bool:
    """Whether an API key may travel in this header (a plain name)."""
    return isinstance(header, str) and \
        _re.match(r"[A-Za-z0-9-]{1,64}\Z", header) is not None and \
        header.lower() not in _NOT_KEY_HEADERS


class APIKeyAuth(_Scheme):
    """An API key in a header of its own (``X-API-Key`` by default);
    ``verify(key)`` returns the identity, or None to refuse the key."""

    kind = "api_key"

    def __init__(self, verify: Callable, header: str = "X-API-Key") -> None:
        super().__init__(verify)
        if not _key_header_ok(header):
            raise SpecError("APIKeyAuth header must be a header name such as"
                            " 'X-API-Key', got %s" % _short_repr(header))
        self.header = header
        self.hint = "%s: <key>" % header

    def _credential(self, value: str) -> Any:
        return value.strip()

    def _challenge(self, realm: str, refused: bool) -> str:
        return 'APIKey realm="%s", header="%s"' % (realm, self.header)


def _requirement(value: Any, where: str) -> Any:
    """A requirement as the server keeps it: None (open), () (any valid
    identity) or a tuple of the scopes the identity must hold."""
    if value is False or value is None:
        return None
    if value is True:
        return ()
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, (list, tuple)) and value and \
            all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise SpecError("%s: requires must be True, False, a scope or a list of "
                    "scopes, got %s" % (where, _short_repr(value)))


def _requirement_json(need: Any) -> Any:
    """A requirement as the spec carries it: false, true or the scopes."""
    return False if need is None else list(need) or True


def _requirement_of(value: Any) -> Any:
    """The server's form (see _requirement) of a spec's requirement."""
    return None if value is False else () if value is True else tuple(value)


def _spec_schemes(spec: dict) -> list:
    """The ``(kind, header)`` of each scheme a spec declares (none in the
    spec of an API without schemes, or of a server older than them)."""
    auth = spec.get("auth")
    if not auth:
        return []
    return [(s["type"], s.get("header", "Authorization"))
            for s in auth["schemes"]]


def _spec_needs(spec: dict) -> dict:
    """The requirement of every call a spec declares (native or JSON
    form), as _requirement gives them: keys are action names,
    ``(Model, method)`` pairs, and the routes "/spec.json" and
    "/openapi.json" (never an action's name); empty without auth."""
    auth = spec.get("auth")
    if not auth:
        return {}
    default = _requirement_of(auth["requires"])
    actions, models = spec["actions"], spec["models"]
    if isinstance(actions.get("order"), list):  # the JSON form
        actions, models = _ordered(actions), _ordered(models)
    needs: dict = {}
    spec_need = () if auth.get("protect_spec") else None
    needs["/spec.json"] = needs["/openapi.json"] = spec_need
    for name, entry in actions.items():
        needs[name] = _requirement_of(entry["requires"]) \
            if "requires" in entry else default
    for name, model in models.items():
        own = model.get("requires") or {}
        for method in MODEL_METHODS:
            if model["methods"][method]:
                needs[name, method] = _requirement_of(own[method]) \
                    if method in own else default
    return needs


def _schemes_of(auth: Any) -> tuple:
    if auth is None:
        return ()
    schemes = tuple(auth) if isinstance(auth, (list, tuple)) else (auth,)
    kinds = set()
    for scheme in schemes:
        if not isinstance(scheme, _Scheme):
            raise SpecError("auth takes BearerAuth, APIKeyAuth and BasicAuth "
                            "objects, got %s" % _short_repr(scheme))
        if scheme.kind in kinds:
            raise SpecError("auth declares two %s schemes" % scheme.kind)
        kinds.add(scheme.kind)
    return schemes


def _scopes_of(identity: Any) -> Any:
    """The scopes an identity holds: its ``scopes`` key or attribute."""
    if isinstance(identity, dict):
        return identity.get("scopes") or ()
    return getattr(identity, "scopes", None) or ()


def _authenticator(schemes: tuple) -> Callable:
    """identity = authenticate(environ): the first scheme that accepts the
    request's credential, else _REFUSED if one was sent, else None."""
    readers = [(scheme._environ_key, scheme._identify) for scheme in schemes]

    def authenticate(environ: dict) -> Any:
        result = None
        for key, identify in readers:
            value = environ.get(key)
            if value is not None:
                identity = identify(value)
                if identity is not None and identity is not _REFUSED:
                    return identity
                result = result or identity
        return result

    return authenticate


def _unauthorized(schemes: tuple, realm: str, refused: bool) -> Response:
    """401 naming every declared scheme (RFC 9110 11.6.1: challenges may
    share one header, comma-separated); the credential is never quoted."""
    if refused:
        message = "Invalid credentials"
    else:
        message = "Missing credentials: send %s" % " or ".join(
            scheme.hint for scheme in schemes)
    response = error_response(message, 401)
    response.headers["WWW-Authenticate"] = ", ".join(
        scheme._challenge(realm, refused) for scheme in schemes)
    return response


def _guard(serve: Callable, authenticate: Callable, schemes: tuple,
           realm: str, need: Any) -> Callable:
    """``endpoint._serve`` behind the API's schemes and a requirement."""

    def guarded(request, url_args, timeout, hooks=None):
        identity = authenticate(request.environ)
        if identity is None or identity is _REFUSED:
            if need is not None:
                return _unauthorized(schemes, realm, identity is _REFUSED)
            identity = None  # an open call: a refused credential is no one
        elif need:
            held = _scopes_of(identity)
            missing = [scope for scope in need if scope not in held]
            if missing:
                return error_response("Forbidden: this call needs the scope"
                                      " %s" % ", ".join(missing), 403)
        token = _identity.set(identity)
        try:
            return serve(request, url_args, timeout, hooks)
        finally:
            _identity.reset(token)

    return guarded


def _protect_routes(routes: Any, api: Any) -> None:
    """Put every endpoint of ``routes`` behind its requirement."""
    schemes = api._schemes
    authenticate = _authenticator(schemes)
    needs = _spec_needs(api.spec)  # the server enforces what its spec says
    realm = _re.sub(r'[^\x20-\x7e]|["\\]', "_", api.name)  # a quoted-string

    def protect(endpoint, key):
        endpoint._serve = _guard(endpoint._serve, authenticate, schemes,
                                 realm, needs[key])

    protect(routes.spec.methods["GET"], "/spec.json")
    protect(routes.openapi.methods["GET"], "/openapi.json")
    for name, route in routes.actions.items():
        protect(route.methods["POST"], name)
    for table in (routes.items, routes.lists):
        for name, route in table.items():
            for endpoint in route.methods.values():
                protect(endpoint, (name, endpoint.method_name))


def _secrets_in(environ: dict, api: Any) -> list:
    """Credentials a request carries, as they might appear in a log: the
    Authorization header (and its decoded Basic pair) and API-key headers."""
    found = []
    keys = ["HTTP_AUTHORIZATION"] + [
        s._environ_key for s in getattr(api, "_schemes", ()) if
        s.kind == "api_key"]
    for key in keys:
        value = environ.get(key)
        if not value:
            continue
        found.append(value)
        scheme, _, rest = value.partition(" ")
        rest = rest.strip()
        if rest:
            found.append(rest)
            if scheme.lower() == "basic":
                try:
                    pair = _base64.b64decode(rest).decode("utf-8")
                except (ValueError, UnicodeDecodeError):
                    continue
                found.append(pair)
                found.append(pair.partition(":")[2])
    # Longest first, so that a whole header goes before its parts; very
    # short values would blank out unrelated text.
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def _redact(text: str, secrets: Iterable) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


# -- WSGI application ---------------------------------------------------------

# Routing, requests, responses and endpoints: Server(api).wsgi_app, the part
# that runs under any WSGI server.

_REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 303: "See Other",
    304: "Not Modified", 307: "Temporary Redirect",
    308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict",
    410: "Gone", 411: "Length Required", 412: "Precondition Failed",
    413: "Request Entity Too Large", 414: "URI Too Long",
    415: "Unsupported Media Type", 417: "Expectation Failed",
    422: "Unprocessable Entity",
    429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}


def _status_line(code: int) -> str:
    reason = _REASONS.get(code)
    if reason is None:
        try:
            from http import HTTPStatus
            reason = HTTPStatus(code).phrase
        except ValueError:
            reason = "Unknown"
    return "%d %s" % (code, reason)


_STATUS = {code: _status_line(code) for code in _REASONS}
_JSON_TYPE = "application/json"
_PROBLEM_TYPE = "application/problem+json"


class Response:
    """An HTTP response, callable as a WSGI app.

    ``Response(body, status=200, headers=None)``: ``data`` (bytes),
    ``status_code`` and ``headers`` (a dict). ``Content-Length`` is added
    when it is sent, except on 204 and 304, which have no body
    (RFC 9110 section 8.6).
    """

    error: str | None = None
    _err: ValidationError | None = None

    @property
    def errors(self) -> list | None:
        """Every problem behind a 400 for invalid data, else None."""
        return self._err.errors if self._err is not None else None

    def __init__(self, body: bytes | str = b"", status: int = 200,
                 headers: dict | None = None) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.data = body
        self.status_code = status
        self.headers = headers if headers is not None else {}

    def __call__(self, environ: dict, start_response: Callable) -> list:
        code = self.status_code
        status = _STATUS.get(code) or _status_line(code)
        headers = [(k, v) for k, v in self.headers.items()
                   if k.lower() != "content-length"]
        body = self.data
        if code == 204 or code == 304:
            body = b""
        else:
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        if environ["REQUEST_METHOD"] == "HEAD":
            return []
        return [body]

    def __repr__(self) -> str:
        return "<Response %d>" % self.status_code


def _json_response(datum: Any, status: int = 200) -> Response:
    response = Response.__new__(Response)
    try:
        text = _ENCODE(datum)
    except (ValueError, TypeError, RecursionError) as err:
        err.__dict__["_cosmic_unwritable"] = True  # for the log line
        raise
    response.data = text.encode("ascii")
    response.status_code = status
    response.headers = {"Content-Type": _JSON_TYPE}
    return response


def error_response(message: str, code: int) -> Response:
    """A JSON error answer ``{"error": message}`` with status ``code``."""
    response = _json_response({"error": message}, code)
    response.error = message
    return response


def _problem_response(response: Response, request_id: str | None) -> Response:
    """Re-express an error answer as RFC 9457 problem details."""
    code = response.status_code
    problem = {"type": "about:blank", "title": _REASONS.get(code, "Error"),
               "status": code, "detail": response.error}
    if response.errors:
        problem["errors"] = [{"detail": e["message"], "pointer": e["pointer"]}
                             for e in response.errors]
    if request_id:
        problem["instance"] = "urn:request:" + request_id
    new = _json_response(problem, code)
    new.headers = dict(response.headers, **{"Content-Type": _PROBLEM_TYPE})
    new.error, new._err = response.error, response._err
    return new


class _Headers:
    """Case-insensitive read-only view of the HTTP headers of an environ."""

    __slots__ = ("_environ",)

    def __init__(self, environ: dict) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            return key
        return "HTTP_" + key

    def get(self, name: str, default: Any = None) -> Any:
        return self._environ.get(self._key(name), default)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._environ

    def items(self) -> list:
        out = []
        for key, value in self._environ.items():
            if key.startswith("HTTP_"):
                out.append((key[5:].replace("_", "-").title(), value))
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                out.append((key.replace("_", "-").title(), value))
        return out

    def __iter__(self):
        return iter([k for k, v in self.items()])

    def __len__(self) -> int:
        return len(self.items())


class _MultiDict(dict):
    """Query parameters: ``get`` gives the first value, ``getlist`` all."""

    def __init__(self, pairs: list) -> None:
        super().__init__()
        self._lists: dict = {}
        for key, value in pairs:
            self._lists.setdefault(key, []).append(value)
            self.setdefault(key, value)

    def getlist(self, key: str) -> list:
        return list(self._lists.get(key, ()))


def _decode_path(raw: str) -> str:
    """PEP 3333 PATH_INFO (latin-1 characters) as the UTF-8 text it holds."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise HTTPError(400, "Invalid UTF-8 in URL path") from None


def _path_segments(environ: dict) -> list:
    raw = environ.get("PATH_INFO", "")
    path = (raw if raw.isascii() else _decode_path(raw)) or "/"
    parts = path.split("/")
    uri = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if uri and "%2f" in uri.lower():
        from urllib.parse import unquote
        target = uri.partition("?")[0]
        if not target.startswith("/"):  # absolute form: scheme://host/path
            target = "/" + target.partition("://")[2].partition("/")[2]
        try:
            raw_parts = [unquote(part, errors="strict")
                         for part in target.split("/")]
        except UnicodeDecodeError:
            raise HTTPError(400, "Invalid UTF-8 in URL path") from None
        skip = environ.get("SCRIPT_NAME", "").count("/")
        raw_parts[1:] = raw_parts[1 + skip:]
        # Only when the raw target says the same as PATH_INFO (a proxy may
        # have rewritten one of them).
        if "/".join(raw_parts) == path:
            parts = raw_parts
    return parts


class Request:
    """The request that server hooks receive, built lazily from an environ.

    ``environ``, ``method``, ``path`` (decoded), ``headers``, ``args``,
    ``data`` (body bytes, read on first use within the server's limits),
    ``mimetype``, ``mimetype_params``, ``content_type``, ``request_id``.
    """

    max_json_depth = _MAX_JSON_DEPTH

    def __init__(self, environ: dict,
                 max_content_length: int = 1 << 20) -> None:
        self.environ = environ
        self.method = environ["REQUEST_METHOD"]
        self.max_content_length = max_content_length
        self.request_id: str | None = None
        self._data: bytes | None = None
        self._parts: list | None = None

    @property
    def path(self) -> str:
        """The decoded path (``/City/café``); HTTPError(400) if not UTF-8."""
        return "/".join(self.path_segments)

    @property
    def path_segments(self) -> list:
        """The path's decoded segments, the first one empty.

        An encoded slash stays inside its segment (``/Doc/a%2Fb`` has the
        id ``a/b``) when the server passes the raw target on, as this
        one's development server (``REQUEST_URI``) and gunicorn
        (``RAW_URI``) do.
        """
        parts = self._parts
        if parts is None:
            environ = self.environ
            raw = environ.get("PATH_INFO", "")
            uri = environ.get("REQUEST_URI") or environ.get("RAW_URI")
            if raw.isascii() and (uri is None or "%" not in uri):
                parts = (raw or "/").split("/")  # the usual case, inline
            else:
                parts = _path_segments(environ)
            self._parts = parts
        return parts

    @property
    def headers(self) -> _Headers:
        """The headers, by name, ignoring case: ``headers.get("Accept")``."""
        return _Headers(self.environ)

    @property
    def args(self) -> _MultiDict:
        """The query parameters: ``args.get(name)``, ``args.getlist(name)``."""
        from urllib.parse import parse_qsl
        return _MultiDict(parse_qsl(self.environ.get("QUERY_STRING", ""),
                                    keep_blank_values=True))

    @property
    def content_type(self) -> str:
        """The Content-Type header as sent, or ""."""
        return self.environ.get("CONTENT_TYPE", "")

    @property
    def mimetype(self) -> str:
        """The media type, lower-cased, without parameters."""
        return self.content_type.split(";", 1)[0].strip().lower()

    @property
    def mimetype_params(self) -> dict:
        """The Content-Type parameters, such as ``{"charset": "utf-8"}``."""
        params = {}
        for part in self.content_type.split(";")[1:]:
            key, eq, value = part.partition("=")
            if eq:
                params[key.strip().lower()] = value.strip().strip('"')
        return params

    @property
    def data(self) -> bytes:
        """The body, read on first use: at most CONTENT_LENGTH bytes, and
        HTTPError 413/400/411/501 when it is too large or malformed."""
        data = self._data
        if data is None:
            environ = self.environ
            data = self._data = _read_body(
                environ, self.max_content_length) \
                if _sends_body(environ) else b""
        return data


def _sends_body(environ: dict) -> bool:
    """Whether a request says it has a body (a length, or chunks)."""
    return bool(environ.get("CONTENT_LENGTH")) or \
        "HTTP_TRANSFER_ENCODING" in environ


def _read_body(environ: dict, limit: int) -> bytes:
    """Read the body within ``limit`` bytes; never past CONTENT_LENGTH."""
    length = environ.get("CONTENT_LENGTH", "")
    stream = environ["wsgi.input"]
    if not length:
        coding = environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not coding:
            return b""
        if coding != "chunked":
            raise HTTPError(501, "Unsupported Transfer-Encoding")
        # Servers that decode chunked bodies say so (gunicorn, mod_wsgi);
        # reading an unterminated stream would wait for ever.
        if not environ.get("wsgi.input_terminated"):
            raise HTTPError(411, "Length Required")
        data = stream.read(limit + 1)
        if len(data) > limit:
            raise HTTPError(413, _REASONS[413])
        return data
    if not (length.isascii() and length.isdigit()):
        raise HTTPError(400, "Invalid Content-Length")
    size = int(length)
    if size > limit:
        raise HTTPError(413, _REASONS[413])
    data = stream.read(size)
    if len(data) < size:
        chunks = [data]
        left = size - len(data)
        while left > 0:
            chunk = stream.read(left)
            if not chunk:
                raise HTTPError(400, "Incomplete body: expected %d bytes, "
                                "got %d" % (size, size - left))
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    return data


def _decode_json_body(request: Request) -> Any:
    """The body's JSON value, or _MISSING when the body is empty.

    Checks in the order of docs/protocol.md#content-type-and-decoding:
    media type, charset, UTF-8, nesting depth, JSON.
    """
    data = request.data
    if not data:
        return _MISSING
    content_type = request.environ.get("CONTENT_TYPE", "")
    if content_type != _JSON_TYPE:
        _check_content_type(request, content_type)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "Unicode Decode Error") from None
    try:
        return _loads_request(text, request.max_json_depth)
    except _JSONLimitError as err:
        raise HTTPError(400, "Invalid JSON: %s" % err) from None
    except (ValueError, RecursionError):
        raise HTTPError(400, "Invalid JSON") from None


def _check_content_type(request: Request, content_type: str) -> None:
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media != _JSON_TYPE:
        raise HTTPError(400, 'Content-Type must be "application/json" got '
                        '"%s" instead' % _cap(media))
    if params:
        charset = request.mimetype_params.get("charset")
        if charset is not None and charset.lower() != "utf-8":
            raise HTTPError(400, 'Content-Type charset must be "utf-8" got '
                            '%s instead' % _cap(charset))


def _call_style(func: Callable, names: Iterable, skip: int = 0) -> bool:
    """Whether a create/update handler takes the patch as one dict.

    Keywords when the function has ``**kwargs``, else one
    dict when exactly one parameter remains (after ``id``) and its name is
    not a field of the model.
    """
    import inspect
    try:
        params = list(inspect.signature(func).parameters.values())[skip:]
    except (TypeError, ValueError):
        return False
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return False
    return len(params) == 1 and params[0].name not in names


# Conditional requests (RFC 9110 section 13): the ETag of a model object,
# and If-Match and If-None-Match compared with it (see
# docs/protocol.md#conditional-requests). etagc, the characters of a tag, is
# visible ASCII but '"', and obs-text (RFC 9110 section 8.8.3).
_OPAQUE_TAG = _re.compile(r"[\x21\x23-\x7e\x80-\xff]*\Z")
_TAG_LIST = _re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
# The tags of recently sent small bodies: hashing costs more than the rest
# of a small GET, and the objects fetched most are those that change least.
_TAGS: dict = {}
_TAGS_SIZE = 1024
_TAGS_BODY = 2048
_blake2b: Any = None


def _hash_tag(body: bytes) -> str:
    """The quoted ETag of a representation: a hash of its JSON bytes."""
    global _blake2b
    tag = _TAGS.get(body)
    if tag is None:
        if _blake2b is None:
            from hashlib import blake2b
            _blake2b = blake2b
        tag = '"%s"' % _blake2b(body, digest_size=16).hexdigest()
        if len(body) <= _TAGS_BODY:
            if len(_TAGS) >= _TAGS_SIZE:
                _TAGS.clear()
            _TAGS[body] = tag
    return tag


def _model_tag(func: Callable, model: str) -> Callable:
    """The quoted tag of a model's own ``etag(id, rep)`` classmethod."""
    def tag(ident, rep):
        value = func(ident, rep)
        if type(value) is not str or _OPAQUE_TAG.match(value) is None:
            raise SpecError("%s.etag must return a str of visible ASCII "
                            "characters other than '\"', got %s"
                            % (model, _short_repr(value)))
        return '"%s"' % value
    return tag


def _tags_match(header: str, tag: str, weak: bool) -> str | None:
    """The tag of an If-Match (strong comparison) or If-None-Match (weak
    comparison) list that matches ``tag`` (quoted), without its quotes;
    ``"*"`` for any; None when none does (RFC 9110 sections 8.8.3.2,
    13.1.1, 13.1.2)."""
    header = header.strip()
    if header == "*":
        return "*"
    if header == tag:
        return tag[1:-1]
    opaque = tag[1:-1]
    for prefix, value in _TAG_LIST.findall(header):
        if value == opaque and (weak or not prefix):
            return value
    return None


def _preconditions(environ: dict, tag: str, what: str) -> str | None:
    """Evaluate If-Match, then If-None-Match, for the current ``tag``
    (RFC 9110 section 13.2.2). Returns the matched If-Match tag (None
    without one); raises PreconditionFailed, or _NotModified for a GET."""
    matched = None
    header = environ.get("HTTP_IF_MATCH")
    if header is not None:
        matched = _tags_match(header, tag, False)
        if matched is None:
            raise PreconditionFailed("Precondition Failed: %s has changed "
                                     "since the ETag in If-Match" % what)
    header = environ.get("HTTP_IF_NONE_MATCH")
    if header is not None and _tags_match(header, tag, True) is not None:
        if environ["REQUEST_METHOD"] in ("GET", "HEAD"):
            raise _NotModified
        raise PreconditionFailed("Precondition Failed: %s matches "
                                 "If-None-Match" % what)
    return matched


class _NotModified(Exception):
    """A GET whose If-None-Match names the current tag: 304."""


# PUT and DELETE of one object take one of these while the server compares
# the tag and the model writes, so that no other write of this process
# comes in between.
_WRITE_LOCKS = [_threading.RLock() for _ in range(64)]


def _write_lock(key: tuple) -> Any:
    return _WRITE_LOCKS[hash(key) % len(_WRITE_LOCKS)]


def _mark_return_error(err: BaseException, what: str) -> None:
    """Say in the log that a return value failed, not the server."""
    if isinstance(err, ValidationError):
        note = "failed validation: %s" % err
    elif isinstance(err, RecursionError) or \
            getattr(err, "_cosmic_unwritable", False):
        note = "cannot be written as JSON: %s" % _return_value_cause(err)
    else:
        return
    if getattr(err, "_cosmic_return", None) is None:
        err.__dict__["_cosmic_return"] = "Return value of %s %s" % (what,
                                                                    note)


def _return_value_cause(err: BaseException) -> str:
    if isinstance(err, RecursionError):
        return "nested too deep"
    if isinstance(err, ValueError) and "digits" in str(err):
        return "an integer has more digits than Python writes (%s)" % err
    return "%s: %s" % (type(err).__name__, err)


class Endpoint:
    """One kind of HTTP exchange, used by servers and clients alike.

    Server side: ``parse_request`` (request -> handler input),
    ``handler`` and ``build_response``. Client side: ``build_request``
    and ``parse_response``. Attributes: ``method``, ``url`` (a pattern),
    ``acceptable_response_codes``.
    """

    method = "GET"
    url = ""
    on_item = False
    body = "forbidden"  # or "required", "ignored", "action"
    not_found_is_404 = False
    acceptable_response_codes: tuple = (200,)
    func: Any = None  # the user's function (server side); None in clients

    def __init__(self, api: Any = None) -> None:
        self.api = api

    def _body(self, request: Request) -> Any:
        datum = _decode_json_body(request)
        if (datum is _MISSING) is (self.body == "required"):
            raise HTTPError(400, "Invalid data")
        return datum

    def handler(self, /, *args: Any, **func_input: Any) -> Any:
        """Call the user's code with the decoded input (server side)."""
        raise NotImplementedError

    def _serve(self, request: Request, url_args: dict, timeout: float | None,
               hooks: Server | None = None) -> Response:
        # What Server.view does: parse, call, build; through the server's
        # parse_request and build_response when it overrides them (hooks).
        try:
            if hooks is None:
                func_input = self.parse_request(request, **url_args)
            else:
                func_input = hooks.parse_request(self, request, **url_args)
        except ValidationError as err:
            response = error_response(str(err), 400)
            response._err = err
            return response
        try:
            if self._plain_call and timeout is None:  # the usual case, inline
                func_output = self.handler(**func_input)
            else:
                func_output = self._call(request, url_args, func_input,
                                         timeout)
        except NotFound:
            if self.not_found_is_404:
                return error_response("Not Found", 404)
            raise
        try:
            if hooks is None:
                return self.build_response(func_input, func_output)
            return hooks.build_response(self, func_input, func_output)
        except Exception as err:
            _mark_return_error(err, self._what)
            raise

    # Whether _call is this one (subclasses that wrap the call set False).
    _plain_call = True

    def _call(self, request: Request, url_args: dict, func_input: dict,
              timeout: float | None) -> Any:
        if timeout is not None:
            return _call_with_timeout(self.handler, func_input, timeout)
        return self.handler(**func_input)

    @property
    def _what(self) -> str:
        return type(self).__name__

    def build_response(self, func_input: dict, func_output: Any) -> Response:
        """The response for the handler's result, type-checked."""
        raise NotImplementedError

    def build_request(self, /, *args: Any, **kwargs: Any) -> _ClientRequest:
        """The request for a client call, its arguments checked first."""
        raise NotImplementedError

    def parse_response(self, res: Any) -> Any:
        """The client-side result of a response; raises for bad statuses."""
        raise NotImplementedError

    def parse_request(self, request: Request, **url_args: Any) -> dict:
        """Decode a request into the handler's keyword arguments."""
        if _sends_body(request.environ):
            self._body(request)
        return url_args

    def __repr__(self) -> str:
        return "<%s %s %s>" % (type(self).__name__, self.method, self.url)


def _no_unexpected(given: dict, names: Any) -> None:
    """Refuse keywords a call does not declare, before anything is sent
    (to_json alone would drop them silently)."""
    unexpected = [key for key in given if key not in names]
    if unexpected:
        raise ValidationError("Unexpected fields", unexpected)


def _client_request(method: str, url: str, box: Box | None = None):
    if box is None:
        return _ClientRequest(method, url, "", {})
    return _ClientRequest(method, url, _json.dumps(box.datum),
                          {"Content-Type": _JSON_TYPE})


def _check_status(endpoint: Endpoint, res: Any) -> None:
    """Raise for a status this endpoint does not expect
    (docs/protocol.md#reading-answers)."""
    code = res.status_code
    if code == 404 and endpoint.not_found_is_404:
        raise NotFound
    if code not in endpoint.acceptable_response_codes:
        message, errors = None, None
        try:
            body = _json.loads(res.content.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = None
        if isinstance(body, dict):
            message = body.get("error", body.get("detail"))
            if not isinstance(message, str):
                message = None
            errors = body.get("errors")
            if not isinstance(errors, list):
                errors = None
        if code == 412:
            raise _RemotePreconditionFailed(message, errors)
        raise RemoteHTTPError(code, message, errors)


def _response_json(res: Any) -> Any:
    try:
        return _loads_strict(res.content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise SpecError("Unparseable response") from None


class SpecEndpoint(Endpoint):
    """``GET /spec.json``: the API's spec."""

    url = "/spec.json"
    body = "ignored"

    def parse_request(self, request, **url_args):
        return {}

    def handler(self) -> dict:
        return self.api.spec

    def build_response(self, func_input, func_output) -> Response:
        return _json_response(APISpec.to_json(func_output))

    def build_request(self) -> _ClientRequest:
        return _ClientRequest("GET", self.url, "", {})

    def parse_response(self, res: Any) -> dict:
        _check_status(self, res)
        return _answer(APISpec, _response_json(res))


class ActionEndpoint(Endpoint):
    """``POST /actions/<name>``: calls the action's function."""

    method = "POST"
    body = "action"
    acceptable_response_codes = (200, 204)

    def __init__(self, api: Any, action_name: str) -> None:
        super().__init__(api)
        self.action_name = action_name
        self.url = "/actions/" + action_name
        entry = api.spec["actions"][action_name]
        self.accepts = entry.get("accepts")
        self.returns = entry.get("returns")
        self.func = None
        self._mode = "none"
        func: Any = getattr(api.actions, action_name, None) \
            if isinstance(api, API) else None
        if func is not None:
            self.func = func
            required_args, optional_args = get_args(func)
            names = required_args + optional_args
            if self.accepts is not None:
                self._mode = "one" if len(names) == 1 else "many"
                self._param: Any = names[0] if names else None
        self._load = self.accepts._load if self.accepts is not None else None
        self._dump = self.returns._dump if self.returns is not None else None
        self._check: Any = _MISSING  # _required_check(returns), when needed
        if self.func is not None:
            if self._mode == "one" and _positional_only(self.func):
                param = self._param
                self.handler = (  # type: ignore[method-assign]
                    lambda **given: func(given[param]))
            else:
                # Skip a layer: the same call, the same arguments.
                self.handler = self.func  # type: ignore[method-assign]

    def parse_request(self, request, **url_args):
        datum = _decode_json_body(request)
        if self._load is None:
            if datum is not _MISSING:
                raise ValidationError("Expected None, found Box")
            return {}
        if datum is _MISSING:
            raise ValidationError("Expected Box, found None")
        try:
            value = self._load(datum)
        except ValidationError as err:
            err._source = (self.accepts, datum)
            raise
        if self._mode == "one":
            return {self._param: value}
        return value

    def handler(self, /, **func_input: Any) -> Any:
        return self.func(**func_input)

    @property
    def _what(self) -> str:
        return "action " + self.action_name

    def build_response(self, func_input, func_output) -> Response:
        if self._dump is None:
            if func_output is not None:
                raise ValidationError("Expected None, found data")
            return Response(b"", 204)
        if func_output is None:
            raise ValidationError("Expected data, found None")
        datum = self._dump(func_output)
        check = self._check
        if check is _MISSING:
            check = self._check = _required_check(self.returns)
        if check is not None:
            check(datum)
        return _json_response(datum)

    def build_request(self, /, *args: Any, **kwargs: Any) -> _ClientRequest:
        datum = args_to_datum(*args, **kwargs)
        if isinstance(self.accepts, Struct) and isinstance(datum, dict):
            _no_unexpected(datum, self.accepts.param)
        box = serialize_json(self.accepts, datum)
        if box is not None:
            self.accepts.from_json(box.datum)  # e.g. missing required fields
        return _client_request("POST", self.url, box)

    def parse_response(self, res: Any) -> Any:
        _check_status(self, res)
        if self.returns is None or not res.content:
            return None
        return _answer(self.returns, _response_json(res))


class _ModelEndpoint(Endpoint):
    """Shared by the five model endpoints."""

    method_name: str  # which model method: get_by_id, create, ...

    def __init__(self, api: Any, model_name: str) -> None:
        super().__init__(api)
        self.model_name = model_name
        self.model_spec = api.spec["models"][model_name]
        model = Model("%s.%s" % (api.name, model_name), api)
        self.representation = Representation(model)
        self.patch = Patch(model)
        # Compiled now, before any request.
        self.representation._inner  # noqa: B018
        self.patch._inner  # noqa: B018
        self.func = None
        self.etags = True
        self._get: Callable | None = None  # get_by_id, to compare tags
        self._tag: Callable | None = None  # the model's own etag, quoted
        namespace = getattr(api.models, model_name, None) \
            if isinstance(api, API) else None
        if namespace is not None:
            self.func = getattr(namespace, self.method_name)
            if self.method_name in ("get_by_id", "delete") and \
                    _first_param(self.func) == "id":
                # The same call, one frame less.
                self.handler = self.func  # type: ignore[method-assign]
            getter = namespace.get_by_id
            if getattr(getter, "__func__", None) is not \
                    BaseModel.get_by_id.__func__:  # type: ignore[attr-defined]
                self._get = getter
            etag = getattr(api._model_classes.get(model_name), "etag", None)
            if callable(etag):
                self._tag = _model_tag(etag, model_name)

    @property
    def _what(self) -> str:
        return "%s.%s" % (self.model_name, self.method_name)

    def _object(self, ident: str) -> str:
        return "%s %s" % (self.model_name, _short_repr(ident))

    def _rep_response(self, ident: str, rep: Any,
                      status: int = 200) -> Response:
        """The representation of an object as an answer, with its ETag."""
        response = _json_response(
            self.representation._server_dump((ident, rep)), status)
        if self.etags:
            response.headers["ETag"] = self._current_tag(ident, rep,
                                                         response.data)
        return response

    def _current_tag(self, ident: str, rep: Any,
                     body: bytes | None = None) -> str:
        """The quoted ETag of an object: the model's own, or a hash of
        the representation a GET sends (``body``, when already made)."""
        if self._tag is not None:
            return self._tag(ident, rep)
        if body is None:
            try:
                body = _json_response(
                    self.representation._server_dump((ident, rep))).data
            except Exception as err:
                _mark_return_error(err, "%s.get_by_id" % self.model_name)
                raise
        return _hash_tag(body)

    def _href(self, ident: str) -> str:
        if type(ident) is not str:
            raise ValidationError("Invalid %s id: an id must be a string, "
                                  "got %s" % (self.model_name,
                                              type(ident).__name__), ident)
        if ident in _DOT_IDS:
            raise ValidationError("Invalid %s id" % self.model_name, ident)
        return "/%s/%s" % (self.model_name, _quote(ident))

    def _patch_json(self, ident: str | None, fields: dict) -> Box:
        """A patch body, checked against the model before it is sent."""
        spec = self.model_spec
        _no_unexpected(fields, set(spec["properties"]) | set(spec["links"]))
        datum = self.patch.to_json((ident, fields))
        self.patch._inner.from_json(datum)
        return Box(datum)


def _quote(text: str) -> str:
    from urllib.parse import quote
    return quote(text, safe="")


def _first_param(func: Callable) -> str | None:
    """The name of a function's only parameter, if it can take it by name."""
    import inspect
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    if len(params) == 1 and params[0].kind in (
            params[0].POSITIONAL_OR_KEYWORD, params[0].KEYWORD_ONLY):
        return params[0].name
    return None


class GetByIdEndpoint(_ModelEndpoint):
    """``GET /<Model>/<id>``: one object, or 404."""

    on_item = True
    method_name = "get_by_id"
    not_found_is_404 = True

    def __init__(self, api, model_name):
        super().__init__(api, model_name)
        self.url = "/%s/<id>" % model_name

    def handler(self, id: str) -> Any:
        return self.func(id)

    def build_response(self, func_input, func_output):
        return self._rep_response(func_input["id"], func_output)

    def _serve(self, request, url_args, timeout, hooks=None):
        environ = request.environ
        if hooks is not None or timeout is not None or _sends_body(environ):
            response = _ModelEndpoint._serve(self, request, url_args,
                                             timeout, hooks)
            tag = response.headers.get("ETag")
            if tag is not None and response.status_code == 200 and (
                    "HTTP_IF_NONE_MATCH" in environ or
                    "HTTP_IF_MATCH" in environ):
                return self._conditional(environ, tag, url_args, response)
            return response
        ident = url_args["id"]  # no body: nothing to parse
        try:
            rep = self.func(ident)
        except NotFound:
            return error_response("Not Found", 404)
        # build_response and _json_response, inline.
        try:
            datum = self.representation._server_dump((ident, rep))
        except Exception as err:
            _mark_return_error(err, self._what)
            raise
        response = Response.__new__(Response)
        response.status_code = 200
        try:
            data = response.data = _ENCODE(datum).encode("ascii")
        except Exception as err:
            err.__dict__["_cosmic_unwritable"] = True
            _mark_return_error(err, self._what)
            raise
        if not self.etags:
            response.headers = {"Content-Type": _JSON_TYPE}
            return response
        if self._tag is None:
            tag = _TAGS.get(data)  # _hash_tag, inline
            if tag is None:
                tag = _hash_tag(data)
        else:
            tag = self._tag(ident, rep)
        response.headers = {"Content-Type": _JSON_TYPE, "ETag": tag}
        if "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ:
            return self._conditional(environ, tag, url_args, response)
        return response

    def _conditional(self, environ: dict, tag: str, url_args: dict,
                     response: Response) -> Response:
        try:
            _preconditions(environ, tag, self._object(url_args["id"]))
        except _NotModified:
            return Response(b"", 304, {"ETag": tag})
        return response

    def build_request(self, id: str) -> _ClientRequest:
        return _ClientRequest("GET", self._href(id), "", {})

    def parse_response(self, res):
        _check_status(self, res)
        return _answer(self.representation, _response_json(res))[1]


class CreateEndpoint(_ModelEndpoint):
    """``POST /<Model>``: 201 with ``Location``."""

    method = "POST"
    method_name = "create"
    body = "required"
    acceptable_response_codes = (201,)

    def __init__(self, api, model_name):
        super().__init__(api, model_name)
        self.url = "/" + model_name
        self._requires = tuple(self.model_spec.get("create_requires") or ())
        if self.func is not None:
            names = set(self.model_spec["properties"]) | \
                set(self.model_spec["links"])
            self._one_dict = _call_style(self.func, names)

    def _check_required(self, patch: dict) -> None:
        missing = [n for n in self._requires if patch.get(n) is None]
        if missing:
            raise ValidationError("Missing fields", missing)

    def parse_request(self, request, **url_args):
        patch = self.patch.from_json(self._body(request))[1]
        if self._requires:
            self._check_required(patch)
        return {"patch": patch}

    def handler(self, patch: dict) -> Any:
        if self._one_dict:
            return self.func(patch)
        return self.func(**patch)

    def build_response(self, func_input, func_output):
        try:
            ident, rep = func_output
        except (TypeError, ValueError):
            raise ValidationError("create must return (id, rep)",
                                  func_output) from None
        response = self._rep_response(ident, rep, 201)
        response.headers["Location"] = self._href(ident)
        return response

    def build_request(self, /, *args: Any, **fields: Any) -> _ClientRequest:
        if len(args) == 1 and not fields and isinstance(args[0], dict):
            fields = args[0]
        elif args:
            raise SpecError("create takes the fields as keywords or one dict")
        if self._requires:
            self._check_required(fields)
        return _client_request("POST", self.url, self._patch_json(None, fields))

    def parse_response(self, res):
        _check_status(self, res)
        return _answer(self.representation, _response_json(res))


class _WriteEndpoint(_ModelEndpoint):
    """PUT and DELETE of one object: the conditions of If-Match and
    If-None-Match, compared with the object as get_by_id returns it.

    The comparison and the model's write hold a lock of this process, so
    no other PUT or DELETE that this process serves comes in between; a
    model that keeps its objects elsewhere reads ``if_match()`` to make
    its own check atomic there.
    """

    _plain_call = False

    def _call(self, request, url_args, func_input, timeout):
        if not self.etags:
            return Endpoint._call(self, request, url_args, func_input,
                                  timeout)
        if timeout is not None:
            # The lock belongs to the thread that runs the handler, so that
            # a write the handler makes in-process re-enters it.
            return _call_with_timeout(
                lambda **kwargs: self._locked_call(request, url_args, kwargs),
                func_input, timeout)
        return self._locked_call(request, url_args, func_input)

    def _locked_call(self, request, url_args, func_input):
        ident = url_args["id"]
        environ = request.environ
        with _write_lock((self.api.name, self.model_name, ident)):
            if "HTTP_IF_MATCH" not in environ and \
                    "HTTP_IF_NONE_MATCH" not in environ:
                return self.handler(**func_input)
            if self._get is None:
                raise PreconditionFailed(
                    "Precondition Failed: %s has no get_by_id to compare "
                    "the ETag with" % self.model_name)
            tag = self._current_tag(ident, self._get(ident))
            matched = _preconditions(environ, tag, self._object(ident))
            token = _if_match.set(matched)
            try:
                return self.handler(**func_input)
            finally:
                _if_match.reset(token)


def _if_match_header(headers: dict, tag: str | None) -> dict:
    """Client side: ``headers`` with If-Match for a tag (unquoted)."""
    if tag is None:
        return headers
    if type(tag) is not str or (
            tag != "*" and _OPAQUE_TAG.match(tag) is None):
        raise ValidationError("Invalid If-Match tag", tag)
    headers["If-Match"] = tag if tag == "*" else '"%s"' % tag
    return headers


def _response_tag(response: Any) -> str | None:
    """Client side: the ETag of an answer, without quotes (or None)."""
    value = response.headers.get("etag")
    if value is None:
        return None
    value = value.strip().removeprefix("W/")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


class UpdateEndpoint(_WriteEndpoint):
    """``PUT /<Model>/<id>``: apply a patch, or 404."""

    method = "PUT"
    on_item = True
    method_name = "update"
    body = "required"
    not_found_is_404 = True

    def __init__(self, api, model_name):
        super().__init__(api, model_name)
        self.url = "/%s/<id>" % model_name
        if self.func is not None:
            names = set(self.model_spec["properties"]) | \
                set(self.model_spec["links"])
            self._one_dict = _call_style(self.func, names, skip=1)

    def parse_request(self, request, **url_args):
        return {"id": url_args["id"],
                "patch": self.patch.from_json(self._body(request))[1]}

    def handler(self, id: str, patch: dict) -> Any:
        if self._one_dict:
            return self.func(id, patch)
        return self.func(id, **patch)

    def build_response(self, func_input, func_output):
        return self._rep_response(func_input["id"], func_output)

    def build_request(self, id: str, /, *args: Any,
                      _if_match: str | None = None, **fields: Any):
        if len(args) == 1 and not fields and isinstance(args[0], dict):
            fields = args[0]
        elif args:
            raise SpecError("update takes the id, then the fields as "
                            "keywords or one dict")
        href = self._href(id)
        request = _client_request("PUT", href, self._patch_json(id, fields))
        _if_match_header(request.headers, _if_match)
        return request

    def parse_response(self, res):
        _check_status(self, res)
        return _answer(self.representation, _response_json(res))[1]


class DeleteEndpoint(_WriteEndpoint):
    """``DELETE /<Model>/<id>``: 204, or 404."""

    method = "DELETE"
    on_item = True
    method_name = "delete"
    not_found_is_404 = True
    acceptable_response_codes = (204,)

    def __init__(self, api, model_name):
        super().__init__(api, model_name)
        self.url = "/%s/<id>" % model_name

    def handler(self, id: str) -> None:
        self.func(id)

    def build_response(self, func_input, func_output):
        return Response(b"", 204)

    def build_request(self, id: str,
                      _if_match: str | None = None) -> _ClientRequest:
        return _ClientRequest("DELETE", self._href(id), "",
                              _if_match_header({}, _if_match))

    def parse_response(self, res):
        _check_status(self, res)


class GetListEndpoint(_ModelEndpoint):
    """``GET /<Model>?<query>``: a HAL list with ``_embedded``."""

    method_name = "get_list"

    def __init__(self, api, model_name):
        super().__init__(api, model_name)
        self.url = "/" + model_name
        fields = self.model_spec["query_fields"]
        self.query = URLParams(fields) if fields else None
        meta = self.model_spec["list_metadata"]
        self.metadata = Struct(meta) if meta else None
        self._meta_check: Any = _MISSING

    def parse_request(self, request, **url_args):
        self._body(request)
        if self.query is None:
            return {}
        text = request.environ.get("QUERY_STRING", "")
        try:
            return self.query._parse(text, request.max_json_depth)
        except ValidationError as err:
            err._source = (self.query, text)
            raise
        except RecursionError:
            raise ValidationError("Nesting too deep") from None

    def handler(self, /, **query: Any) -> Any:
        return self.func(**query)

    def build_response(self, func_input, func_output):
        if self.metadata is not None:
            try:
                items, meta = func_output
            except (TypeError, ValueError):
                raise ValidationError("get_list must return (items, metadata)",
                                      func_output) from None
        else:
            items, meta = func_output, None
        href = "/" + self.model_name
        if self.query is not None and func_input:
            query = self.query.to_json(func_input)
            if query:
                href += "?" + query
        dump = self.representation._server_dump
        embedded: list = []
        try:
            for item in items:
                embedded.append(dump(item))
        except TypeError:
            raise ValidationError("get_list must return (id, rep) pairs",
                                  func_output) from None
        except ValidationError as err:
            raise _push(err, len(embedded))  # the index of the bad item
        body = {"_links": {"self": {"href": href}},
                "_embedded": {self.model_name: embedded}}
        if meta is not None:
            meta_json = self.metadata.to_json(meta)
            check = self._meta_check
            if check is _MISSING:
                check = self._meta_check = _required_check(self.metadata)
            if check is not None:
                check(meta_json)
            body.update(meta_json)
        return _json_response(body)

    def build_request(self, /, **query: Any) -> _ClientRequest:
        url = self.url
        if self.query is not None:
            _no_unexpected(query, self.query.param)
            self.query._struct.from_json(self.query._struct.to_json(query))
            text = self.query.to_json(query)
            if text:
                url += "?" + text
        elif query:
            raise SpecError("%s has no query fields, got %s"
                            % (self.model_name, sorted(query)))
        return _ClientRequest("GET", url, "", {})

    def parse_response(self, res):
        _check_status(self, res)
        body = _response_json(res)
        if not isinstance(body, dict):
            raise SpecError("Invalid list response")
        embedded = body.pop("_embedded", None)
        body.pop("_links", None)
        try:
            items = embedded[self.model_name]
        except (TypeError, KeyError):
            raise SpecError("Invalid list response") from None
        if not isinstance(items, list):
            raise SpecError("Invalid list response")
        rep = self.representation
        pairs = [_answer(rep, item) for item in items]
        if self.metadata is not None:
            return pairs, _answer(self.metadata, body)
        return pairs


_MODEL_ENDPOINTS = (GetByIdEndpoint, GetListEndpoint, CreateEndpoint,
                    UpdateEndpoint, DeleteEndpoint)


class _Route:
    """The endpoints of one path, by method, and its ``Allow`` header."""

    __slots__ = ("methods", "allow")

    def __init__(self, methods: dict) -> None:
        self.methods = methods
        names = set(methods) | {"OPTIONS"}
        if "GET" in names:
            names.add("HEAD")
        self.allow = ", ".join(sorted(names))


class _Routes:
    """Every route of one API, built once per change of the API."""

    def __init__(self, api: API, etags: bool = True) -> None:
        self.version = api._version
        self.spec = _Route({"GET": SpecEndpoint(api)})
        self.openapi = _Route({"GET": _OpenAPIEndpoint(api)})
        self.docs = _Route({"GET": _DocsEndpoint(api)})
        self.actions = {name: _Route({"POST": ActionEndpoint(api, name)})
                        for name in api.spec["actions"]}
        self.items: dict = {}
        self.lists: dict = {}
        methods = {"GET", "HEAD", "OPTIONS"}
        for name, model in api.spec["models"].items():
            items: dict = {}
            lists: dict = {}
            for cls in _MODEL_ENDPOINTS:
                if model["methods"][cls.method_name]:
                    table = items if cls.on_item else lists
                    endpoint = table[cls.method] = cls(api, name)
                    endpoint.etags = etags
            self.items[name] = _Route(items)
            self.lists[name] = _Route(lists)
            methods.update(items, lists)
        if self.actions:
            methods.add("POST")
        self.allow = ", ".join(sorted(methods))  # the server's, for "*"
        if getattr(api, "_schemes", ()):  # else endpoints stay bare
            _protect_routes(self, api)


_SANE_ID = _re.compile(r"[A-Za-z0-9._:@/+=-]{1,200}\Z")
# The key that marks a request scope in which a Server is serving a request
# (ThreadLocalDict's keys are ints: no clash).
_SERVING = "cosmic.serving"
_request_counter = iter(range(1, 1 << 62))
_ID_PREFIX = ""


def _new_id_prefix(first: bool = False) -> None:
    """Request ids are a random per-process prefix and a counter; a forked
    child (gunicorn workers, serve --workers) draws its own prefix."""
    global _ID_PREFIX, _request_counter
    import os
    _ID_PREFIX = os.urandom(4).hex() + "-"
    _request_counter = iter(range(1, 1 << 62))
    if first and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_new_id_prefix)


_new_id_prefix(first=True)


_SERVER_OPTIONS = frozenset((
    "max_content_length", "max_json_depth", "max_url_length",
    "handler_timeout", "cors_origins", "docs", "etags"))


class _ServerCORS:
    """Server's cross-origin answers (``cors_origins``): the headers of
    every answer, and preflight requests."""

    cors_origins: Any

    def _cors_origin(self, environ: dict) -> str | None:
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            return None
        if origin in self.cors_origins or "*" in self.cors_origins:
            return origin
        return None

    def _cors(self, environ: dict, headers: dict) -> None:
        origin = self._cors_origin(environ)
        if origin is not None:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = \
                "Location, X-Request-ID, ETag, WWW-Authenticate"
        headers["Vary"] = "Origin"

    def _preflight(self, environ: dict, route: _Route) -> Response:
        if self._cors_origin(environ) is None:
            return error_response("Origin not allowed", 403)
        requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")
        allowed = [h.strip() for h in requested.split(",")
                   if _re.match(r"[A-Za-z0-9-]{1,64}\Z", h.strip())]
        headers = {"Allow": route.allow,
                   "Access-Control-Allow-Methods": route.allow,
                   "Access-Control-Max-Age": "600"}
        if allowed:
            headers["Access-Control-Allow-Headers"] = ", ".join(allowed)
        return Response(b"", 204, headers)


class _ServerRoutes(_ServerCORS):
    """Server's routing: the routes of its API, made again when the API
    changes, and the route of a path (see ``dispatch_request``)."""

    api: API
    docs: bool
    etags: bool
    _routes: _Routes | None

    def _get_routes(self) -> _Routes:
        routes = self._routes
        if routes is None or routes.version != self.api._version:
            routes = self._routes = _Routes(self.api, self.etags)
        return routes

    def _match(self, parts: list) -> tuple:
        routes = self._routes
        if routes is None or routes.version != self.api._version:
            routes = self._get_routes()
        if parts[0] or len(parts) > 3:
            return None, None
        if len(parts) == 2:
            name = parts[1]
            route = routes.lists.get(name)
            if route is not None:
                return route, {}
            if name == "spec.json":
                return routes.spec, {}
            if name == "openapi.json":
                return routes.openapi, {}
            if self.docs and name in ("", "docs"):
                return routes.docs, {}
            return None, None
        head, tail = parts[1], parts[2]
        if not tail:
            return None, None
        if head == "actions":
            return routes.actions.get(tail), {}
        route = routes.items.get(head)
        if tail[0] == "." and tail in _DOT_IDS and route is not None:
            raise HTTPError(400, "Invalid %s id: %s (a dot segment)"
                            % (head, tail))
        return route, {"id": tail}

    def _options(self, environ: dict, route: _Route | None) -> Response:
        """``OPTIONS``: the methods of a route, or with ``*`` (RFC 9110
        section 9.3.7) of the whole server; a CORS preflight."""
        if route is None or _asterisk(environ):
            return Response(b"", 204, {"Allow": self._get_routes().allow})
        if self.cors_origins and "HTTP_ORIGIN" in environ:
            return self._preflight(environ, route)
        return Response(b"", 204, {"Allow": route.allow})


class Server(_ServerRoutes):
    """Serve an API as a WSGI application: ``Server(api).wsgi_app``.

    Subclass it to hook into a request; the hooks, in the order a request
    meets them: ``dispatch_request``, ``view``, ``parse_request``,
    ``build_response``, ``unhandled_exception_hook``.
    Limits are attributes (or keyword arguments): ``max_content_length``
    (bytes, 1 MiB), ``max_json_depth`` (100), ``max_url_length`` (16 KiB),
    ``handler_timeout`` (seconds, None for no limit), ``cors_origins``,
    ``etags`` (False: no ETag, and If-Match and If-None-Match ignored).
    """

    max_content_length = 1 << 20
    max_json_depth = 100
    max_url_length = 16384
    handler_timeout: float | None = None
    cors_origins: Any = ()
    docs = True
    etags = True

    def __init__(self, api: API, debug: bool = False, **options: Any) -> None:
        self.api = api
        self.debug = debug
        for key, value in options.items():
            if key not in _SERVER_OPTIONS:
                raise TypeError("Unknown Server option %r; options: %s"
                                % (key, ", ".join(sorted(_SERVER_OPTIONS))))
            setattr(self, key, value)
        if isinstance(self.cors_origins, str):
            self.cors_origins = (self.cors_origins,)
        self.cors_origins = frozenset(self.cors_origins)
        self._routes: _Routes | None = None
        # Skip the hook layer when a subclass does not override it.
        cls = type(self)
        self._plain_parse = cls.parse_request is Server.parse_request
        self._plain_build = cls.build_response is Server.build_response
        self._plain_view = (self._plain_parse and self._plain_build
                            and cls.view is Server.view)

    def wsgi_app(self, environ: dict, start_response: Callable) -> Any:
        """The WSGI application (PEP 3333).

        Each request runs in a request scope: the one that
        thread_local_middleware (or thread_local) opened around the
        server, else a fresh one, also when the active scope is that of a
        request being served (a handler calling an API in-process).
        """
        local = _current.get()
        token = None
        if local is not None and _SERVING in local:
            return _serve_nested(self.wsgi_app, environ, start_response)
        if local is None:
            local = {_SERVING: True}
            token = _current.set(local)
            ident = _get_ident()
            alone = ident not in _active  # the usual case, done inline
            if alone:
                _active[ident] = [local]
                storage[ident] = local
            else:
                _enter_local(local)
        else:
            local[_SERVING] = True
        try:
            request_id = environ.get("HTTP_X_REQUEST_ID")
            if request_id is None or _SANE_ID.match(request_id) is None:
                request_id = _ID_PREFIX + str(next(_request_counter))
            request = None
            try:
                request = Request(environ, self.max_content_length)
                request.request_id = request_id
                if self.max_json_depth != 100:
                    request.max_json_depth = self.max_json_depth
                response = self.dispatch_request(request)
            except Exception as exc:
                if self.debug:
                    raise
                response = self.unhandled_exception_hook(exc, request)
            code = response.status_code
            headers = response.headers
            if code >= 400 and response.error is not None and \
                    _PROBLEM_TYPE in environ.get("HTTP_ACCEPT", ""):
                response = _problem_response(response, request_id)
                headers = response.headers
            if self.cors_origins:
                self._cors(environ, headers)
            body = response.data
            if "Content-Length" in headers or "content-length" in headers:
                headers = {k: v for k, v in headers.items()
                           if k.lower() != "content-length"}
            if code == 204 or code == 304:  # no body (RFC 9110 8.6)
                body = b""
                pairs = [*headers.items(), ("X-Request-ID", request_id)]
            else:
                pairs = [*headers.items(), ("X-Request-ID", request_id),
                         ("Content-Length", str(len(body)))]
            start_response(_STATUS.get(code) or _status_line(code), pairs)
            if environ["REQUEST_METHOD"] == "HEAD":
                return []
            return [body]
        finally:
            if token is None:
                local.pop(_SERVING, None)
            else:
                _current.reset(token)
                if alone and len(_active[ident]) == 1:
                    del _active[ident], storage[ident]
                else:
                    _exit_local(ident, local)

    def dispatch_request(self, request: Request) -> Response:
        """Route a request (docs/protocol.md#routes) and run ``view``;
        errors become JSON."""
        environ = request.environ
        try:
            raw = environ.get("PATH_INFO", "")
            if len(raw) + len(environ.get("QUERY_STRING", "")) > \
                    self.max_url_length:
                raise HTTPError(414, _REASONS[414])
            route, url_args = self._match(request._parts or
                                          request.path_segments)
            method = request.method
            if route is None:
                if method == "OPTIONS" and _asterisk(environ):
                    return self._options(environ, route)
                return error_response("Not Found", 404)
            endpoint = route.methods.get("GET" if method == "HEAD" else method)
            if endpoint is None:
                if method == "OPTIONS":
                    return self._options(environ, route)
                response = error_response("Method Not Allowed", 405)
                response.headers["Allow"] = route.allow
                return response
            if self._plain_view:  # no hook to run: the endpoint does it all
                return endpoint._serve(request, url_args,
                                       self.handler_timeout)
            return self.view(endpoint, request, **url_args)
        except (RemoteHTTPError, _RefusedArguments):
            raise  # another API's answer to our code: a fault here, a 500
        except HTTPError as err:
            return error_response(
                err.message or _REASONS.get(err.code, "Error"), err.code)

    def view(self, endpoint: Endpoint, request: Request,
             **url_args: Any) -> Response:
        """Parse, call the handler, build the response.

        A subclass may answer early, e.g. ``error_response("Unauthorized",
        401)``, or raise ``HTTPError``.
        """
        hooks = None if self._plain_parse and self._plain_build else self
        return endpoint._serve(request, url_args, self.handler_timeout, hooks)

    def parse_request(self, endpoint: Endpoint, request: Request,
                      **url_args: Any) -> dict:
        """The handler's keyword arguments, from the request."""
        return endpoint.parse_request(request, **url_args)

    def build_response(self, endpoint: Endpoint, func_input: dict,
                       func_output: Any) -> Response:
        """The response for a handler's result (type-checked)."""
        return endpoint.build_response(func_input, func_output)

    def unhandled_exception_hook(self, exc: BaseException,
                                 request: Request | None) -> Response:
        """Log the traceback; answer 500 without any exception text."""
        import logging
        method = path = "-"
        request_id: str | None = "-"
        secrets: list = []
        if request is not None:
            method, request_id = request.method, request.request_id
            try:
                path = request.path
            except HTTPError:
                path = request.environ.get("PATH_INFO", "-")
            secrets = _secrets_in(request.environ, self.api)
        # A bad return value: the handler's fault, not the server's.
        note = getattr(exc, "_cosmic_return", None)
        note = "Unhandled exception" if note is None else _log_safe(note)
        logger = logging.getLogger("cosmic")
        args = (note, _log_safe(method), _log_safe(path), request_id)
        exc_info = (type(exc), exc, exc.__traceback__)
        if not secrets:
            logger.error("%s in %s %s (request %s)", *args,
                         exc_info=exc_info)
        elif logger.isEnabledFor(logging.ERROR):
            # The formatted traceback, with the request's credentials
            # blanked out: handlers reuse a record's exc_text when set.
            import traceback
            record = logger.makeRecord(
                logger.name, logging.ERROR, __file__, 0,
                "%s in %s %s (request %s)", args, exc_info)
            record.exc_text = _redact(
                "".join(traceback.format_exception(*exc_info)).rstrip("\n"),
                secrets)
            logger.handle(record)
        return error_response("Internal Server Error", 500)


def _serve_nested(app: Callable, environ: dict,
                  start_response: Callable) -> Any:
    """Serve a request that arrives while another is being served on this
    thread (a handler calling an API in-process): in a scope of its own,
    with neither the outer request's If-Match tag nor its identity."""
    tokens = (_current.set(None), _if_match.set(None), _identity.set(None))
    try:
        return app(environ, start_response)
    finally:
        _identity.reset(tokens[2])
        _if_match.reset(tokens[1])
        _current.reset(tokens[0])


def _asterisk(environ: dict) -> bool:
    """Whether a request targets the server itself: ``OPTIONS *``
    (RFC 9110 section 9.3.7), whatever PATH_INFO a server makes of it."""
    return "*" in (environ.get("PATH_INFO"), environ.get("REQUEST_URI"),
                   environ.get("RAW_URI"))


def _log_safe(text: str) -> str:
    """Text from a request, with control characters escaped, so that it
    cannot forge log lines (a decoded path may hold CR/LF)."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


def _call_with_timeout(handler: Callable, kwargs: dict, timeout: float) -> Any:
    """Run a handler in a helper thread; give up waiting after ``timeout``.

    Python cannot stop a thread, so a handler that hangs keeps its (daemon)
    thread; the client gets a 500 and the server keeps serving.
    """
    box: list = []
    context = _contextvars.copy_context()

    def run():
        try:
            box.append((True, context.run(handler, **kwargs)))
        except BaseException as exc:  # re-raised in the request's thread
            box.append((False, exc))

    worker = _threading.Thread(target=run, daemon=True,
                               name="cosmic-handler")
    worker.start()
    worker.join(timeout)
    if not box:
        raise TimeoutError("Handler took longer than %s s" % timeout)
    ok, value = box[0]
    if ok:
        return value
    raise value


class _OpenAPIEndpoint(Endpoint):
    """``GET /openapi.json``: the OpenAPI 3.1 document.

    Made once per version of the API: routes, and so this endpoint, are
    rebuilt when the API changes.
    """

    url = "/openapi.json"
    body = "ignored"
    _made: bytes | None = None

    def parse_request(self, request, **url_args):
        return {}

    def handler(self) -> bytes:
        made = self._made
        if made is None:
            made = self._made = self._make()
        return made

    def _make(self) -> bytes:
        return _ENCODE(openapi(self.api)).encode("ascii")

    def build_response(self, func_input, func_output):
        return Response(func_output, 200, {"Content-Type": _JSON_TYPE})


class _DocsEndpoint(_OpenAPIEndpoint):
    """``GET /`` and ``GET /docs``: the documentation page."""

    url = "/"

    def _make(self) -> bytes:
        return docs_html(self.api).encode("utf-8")

    def build_response(self, func_input, func_output):
        return Response(func_output, 200, {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": _docs_csp(),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        })


# -- Development server -------------------------------------------------------
# An HTTP/1.1 server for WSGI apps, standard library only.  One thread runs a
# selector loop that owns every connection waiting for a request head, then
# for its body (up to a bound, as waitress does); complete requests go to a
# bounded pool of worker threads.  socket, selectors and queue
# are imported on first use, so `import cosmic` does not pay for them.

# What the server does with a response header the app sets, by name.
_HDR_PLAIN = 0  # passed on
_HDR_LENGTH = 1  # Content-Length: frames the body
_HDR_CONNECTION = 2  # Connection: the server decides; "close" is honoured
_HDR_DATE = 3  # Date: the server adds one when missing
_HDR_HOP = 4  # hop-by-hop, refused (PEP 3333)
_HDR_REQUEST_ID = 5  # X-Request-ID: passed on and logged
_RESPONSE_HEADER_KINDS = {
    "content-length": _HDR_LENGTH, "connection": _HDR_CONNECTION,
    "date": _HDR_DATE, "x-request-id": _HDR_REQUEST_ID,
    "keep-alive": _HDR_HOP, "proxy-authenticate": _HDR_HOP,
    "proxy-authorization": _HDR_HOP, "te": _HDR_HOP, "trailer": _HDR_HOP,
    "trailers": _HDR_HOP, "transfer-encoding": _HDR_HOP, "upgrade": _HDR_HOP,
}
# How a response body is framed on the wire.
_BODY_NONE = 0
_BODY_LENGTH = 1
_BODY_CHUNKED = 2
_BODY_UNTIL_CLOSE = 3

_DRAIN_MAX = 65536  # unread body up to this size is read and dropped
_LINGER_SECONDS = 2.0  # how long unread input is drained before closing
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BODY_BUFFER = 1 << 20  # bodies up to this size are read before a worker
_NEXT_REQUEST_WAIT = 0.005  # a worker waits this long for a keep-alive request
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH",
                      "OPTIONS"))
_LEGACY_RUN_OPTIONS = frozenset((
    "threaded", "processes", "use_reloader", "use_debugger", "use_evalex",
    "extra_files", "exclude_patterns", "reloader_interval", "reloader_type",
    "passthrough_errors", "request_handler", "static_files", "load_dotenv"))
_TRANSPORT_OPTIONS = frozenset((
    "socket_timeout", "max_request_line", "max_headers", "max_header_bytes",
    "max_chunked_body", "backlog", "max_connections", "threads",
    "graceful_timeout", "log", "name", "workers"))
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
           "Oct", "Nov", "Dec")
_DATES: list = [(0, "", "")]  # the last second's date strings
_token: Any = None  # the patterns below are compiled by the first server
_http_version: Any = None
_chunk_size_line: Any = None
_trailer_line: Any = None
_head_end: Any = None
_bad_char: Any = None


def _compile_patterns() -> None:
    """Compile the server's patterns, once (not at import: that stays fast)."""
    global _token, _http_version, _chunk_size_line, _trailer_line, _head_end
    global _bad_char
    if _head_end is not None:
        return
    _token = _re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
    _http_version = _re.compile(r"HTTP/([0-9])\.([0-9])").fullmatch
    # RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF, no whitespace before the size.
    _chunk_size_line = _re.compile(
        rb"([0-9A-Fa-f]{1,15})((?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
        rb"(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|\"[^\"\\\r\n\0]*\"))?)*)"
        rb"\r\n").fullmatch
    # RFC 9112 §7.1.2: a trailer field is field-name ":" OWS field-value OWS CRLF.
    _trailer_line = _re.compile(
        rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\0]*\r\n").fullmatch
    # The end of a request head: a line feed, then an empty line.
    _head_end = _re.compile(rb"\n\r?\n").search
    # RFC 9110 §5.5: no control character but HTAB in a field value (CR
    # and LF only as line ends, checked separately).
    _bad_char = _re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]").search


def _http_dates() -> tuple:
    """(second, HTTP date, CLF date), recomputed at most once a second."""
    import time
    sec = int(time.time())
    cached = _DATES[0]
    if cached[0] == sec:
        return cached
    t = time.gmtime(sec)
    hms = "%02d:%02d:%02d" % (t.tm_hour, t.tm_min, t.tm_sec)
    mon = _MONTHS[t.tm_mon]
    cached = (sec,
              "%s, %02d %s %d %s GMT" % (_WEEKDAYS[t.tm_wday], t.tm_mday, mon,
                                         t.tm_year, hms),
              "%02d/%s/%d:%s +0000" % (t.tm_mday, mon, t.tm_year, hms))
    _DATES[0] = cached
    return cached


def _printable(line: str) -> str:
    """Make a request line safe for a log line."""
    if len(line) > 2048:
        line = line[:2048] + "..."
    if line.isprintable() and '"' not in line and "\\" not in line:
        return line
    return line.encode("unicode_escape").decode("ascii").replace('"', '\\"')


def _log_access(logger: Any, host: str, line: str, code: int, size: int,
                request_id: str | None = None) -> None:
    """One Common Log Format line, then the request id the app echoed."""
    if request_id is None:
        logger.info('%s - - [%s] "%s" %d %s', host, _http_dates()[2],
                    _printable(line), code, size or "-")
    else:
        logger.info('%s - - [%s] "%s" %d %s %s', host, _http_dates()[2],
                    _printable(line), code, size or "-",
                    _printable(request_id))


def _refusal(code: int, message: str) -> bytes:
    """A whole JSON error response that closes the connection."""
    body = _json.dumps({"error": message}).encode("utf-8")
    head = ("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\nConnection: close\r\nDate: %s\r\n\r\n"
            % (code, _REASONS[code], len(body), _http_dates()[1]))
    return head.encode("latin-1") + body


def _parse_status(status: Any) -> tuple:
    """Validate a WSGI status; return (code, status line bytes)."""
    if (type(status) is not str or len(status) < 4 or status[3] != " "
            or not status[:3].isdigit() or not status[:3].isascii()
            or "\r" in status or "\n" in status):
        raise ValueError("invalid WSGI status %r" % (status,))
    code = int(status[:3])
    if code < 200:
        raise ValueError("WSGI status must be >= 200, got %r" % status)
    return code, ("HTTP/1.1 %s\r\n" % status).encode("latin-1")


class _Refused(Exception):
    """A request the server itself refuses, with its status and message."""

    def __init__(self, code: int, message: str | None = None) -> None:
        Exception.__init__(self, code)
        self.code = code
        self.message = message or _REASONS[code]


class _ClientGone(Exception):
    """The client went away while the response was being written."""


class _EmptyInput:
    """wsgi.input for requests without a body."""

    __slots__ = ()

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list:
        return []

    def __iter__(self) -> Any:
        return iter(())


_EMPTY_INPUT = _EmptyInput()


class _BodyInput:
    """wsgi.input: at most CONTENT_LENGTH bytes, all before one deadline."""

    __slots__ = ("_conn", "remaining", "expect", "broken", "deadline")

    def __init__(self, conn: _Connection, length: int, expect: bool) -> None:
        self._conn = conn
        self.remaining = length
        self.expect = expect  # 100 Continue still owed to the client
        self.broken = False  # timeout / EOF before the body was complete
        # The whole body must arrive in time, so that a client sending a byte
        # just before each socket timeout cannot hold a worker for ever.
        self.deadline = conn.srv.clock() + conn.srv.body_timeout

    def _recv(self, size: int) -> bytes:
        conn = self._conn
        if self.expect:
            self.expect = False
            try:
                conn.sock.sendall(_CONTINUE)
            except OSError:
                self.broken = True
                return b""
        data = conn.recv_by(self.deadline, size)
        if data is None:
            self.broken = True
            return b""
        return data

    def read(self, size: int | None = -1) -> bytes:
        rem = self.remaining
        if rem <= 0 or self.broken:
            return b""
        if size is None or size < 0 or size > rem:
            size = rem
        conn = self._conn
        buf = conn.buf
        pos = conn.pos
        avail = len(buf) - pos
        if avail >= size:
            end = pos + size
            conn.pos = end
            self.remaining = rem - size
            return buf[pos:end]
        parts = [buf[pos:]] if avail else []
        conn.buf = b""
        conn.pos = 0
        got = avail
        while got < size:
            data = self._recv(min(size - got, 262144))
            if not data:
                break
            parts.append(data)
            got += len(data)
        self.remaining = rem - got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        rem = self.remaining
        if rem <= 0 or self.broken:
            return b""
        limit = rem if size is None or size < 0 or size > rem else size
        if limit == 0:
            return b""
        conn = self._conn
        buf = conn.buf
        pos = conn.pos
        i = buf.find(b"\n", pos, pos + limit)
        if i >= 0:
            end = i + 1
        elif len(buf) - pos >= limit:
            end = pos + limit
        else:
            buf, end = self._fill_line(bytearray(buf[pos:]), limit)
            pos = 0
        conn.buf = buf
        conn.pos = end
        self.remaining = rem - (end - pos)
        return buf[pos:end]

    def _fill_line(self, acc: bytearray, limit: int) -> tuple:
        """Receive until a line feed or ``limit`` bytes: (buffer, line end)."""
        while True:
            want = limit - len(acc)
            if want <= 0:
                return bytes(acc), limit
            data = self._recv(min(want, 65536))
            if not data:
                return bytes(acc), len(acc)
            start = len(acc)
            acc += data
            i = acc.find(b"\n", start)
            if i >= 0:
                return bytes(acc), i + 1

    def readlines(self, hint: int = -1) -> list:
        lines: list = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self) -> Any:
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class _ResponseWriter:
    """Writes one response on a connection: head, body framing, failure."""

    __slots__ = ("conn", "head_only", "http11", "keep", "inp", "status",
                 "code", "status_line", "head", "clen", "app_close",
                 "has_date", "sent_head", "mode", "sent", "linger",
                 "request_id")

    def __init__(self, conn: _Connection, head_only: bool, http11: bool,
                 keep: bool, inp: Any) -> None:
        self.conn = conn
        self.head_only = head_only
        self.http11 = http11
        self.keep = keep
        self.inp = inp
        self.status: str | None = None
        self.code = 500
        self.sent_head = False
        self.mode = _BODY_NONE
        self.sent = 0
        self.linger = False
        self.request_id: str | None = None
        # Set by start_response():
        self.clen: Any = None  # the body's length, once known
        self.status_line = b""
        self.head = b""
        self.app_close = self.has_date = False

    def write(self, data: bytes) -> None:
        """The PEP 3333 write() callable."""
        if self.status is None:
            raise AssertionError("write() called before start_response()")
        if type(data) is not bytes:
            raise TypeError("write() argument must be bytes")
        if data:
            if self.sent_head:
                self._body(data)
            else:
                self._head(data, False)

    def _sendall(self, data: bytes) -> None:
        try:
            self.conn.sock.sendall(data)
        except OSError as exc:
            self.keep = False
            raise _ClientGone() from exc

    def _framing(self, data: bytes, final: bool) -> tuple:
        """(body mode, extra header text, keep alive) for the response."""
        keep = self.keep and not self.app_close and not self.conn.srv.closing
        extra = ""
        # RFC 9110 §6.4.1: 204 and 304 have no content; HEAD sends none.
        if self.code == 204 or self.code == 304:
            mode = _BODY_NONE
        elif self.clen is not None:
            mode = _BODY_LENGTH
        elif final:
            self.clen = len(data)
            extra = "Content-Length: %d\r\n" % self.clen
            mode = _BODY_LENGTH
        elif self.head_only:
            mode = _BODY_NONE
        elif self.http11:  # RFC 9112 §7.1: chunked needs HTTP/1.1
            extra = "Transfer-Encoding: chunked\r\n"
            mode = _BODY_CHUNKED
        else:  # RFC 9112 §6.3 point 8: the end of the body is the close
            mode = _BODY_UNTIL_CLOSE
            keep = False
        if self.head_only:
            mode = _BODY_NONE
        inp = self.inp
        if inp is not None and inp.remaining:
            if inp.broken:
                keep = False
            elif inp.expect or inp.remaining > _DRAIN_MAX:
                keep = False
                self.linger = True
        if not keep:
            extra += "Connection: close\r\n"
        elif not self.http11:
            extra += "Connection: keep-alive\r\n"
        if not self.has_date:  # RFC 9110 §6.6.1
            extra += "Date: %s\r\n" % _http_dates()[1]
        return mode, extra, keep

    def _head(self, data: bytes, final: bool) -> None:
        """Send status line and headers, plus ``data`` as first body bytes."""
        mode, extra, self.keep = self._framing(data, final)
        self.mode = mode
        self.sent_head = True
        head = self.status_line + self.head + extra.encode("latin-1") + b"\r\n"
        if mode == _BODY_NONE or not data:
            self._sendall(head)
            return
        n = len(data)
        if mode == _BODY_LENGTH:
            if n > self.clen:
                data = data[:self.clen]
                n = self.clen
        elif mode == _BODY_CHUNKED:
            data = b"%x\r\n%b\r\n" % (n, data)
        if len(data) <= 262144:
            self._sendall(head + data)
        else:
            self._sendall(head)
            self._sendall(data)
        self.sent = n

    def _body(self, data: bytes) -> None:
        mode = self.mode
        if mode == _BODY_NONE:
            return
        n = len(data)
        if mode == _BODY_LENGTH:
            room = self.clen - self.sent
            if n > room:
                data = data[:room]
                n = room
                if not n:
                    return
            self._sendall(data)
        elif mode == _BODY_CHUNKED:
            self._sendall(b"%x\r\n%b\r\n" % (n, data))
        else:
            self._sendall(data)
        self.sent += n

    def _finish(self) -> None:
        if not self.sent_head:
            self._head(b"", True)
        elif self.mode == _BODY_CHUNKED:
            self._sendall(b"0\r\n\r\n")
        if self.mode == _BODY_LENGTH and self.sent < self.clen:
            self.keep = False  # short body: closing tells the client so

    def _fail(self) -> None:
        """The app failed: 500 if nothing was sent yet, else just close."""
        self.keep = False
        if self.sent_head:
            return
        inp = self.inp
        if inp is not None and inp.remaining and not inp.broken:
            self.linger = True
        data = _refusal(500, _REASONS[500])
        self.code = 500
        self.sent = len(data) - data.index(b"\r\n\r\n") - 4
        self.sent_head = True
        try:
            self.conn.sock.sendall(data)
        except OSError:
            pass


class _Exchange(_ResponseWriter):
    """One request's response as the app makes it: start_response, then
    its iterable sent as it comes."""

    __slots__ = ()

    def start_response(self, status: str, headers: list,
                       exc_info: Any = None) -> Any:
        """The PEP 3333 start_response() callable."""
        if exc_info is not None:
            try:
                if self.sent_head:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called twice")
        srv = self.conn.srv
        known = srv.statuses.get(status)
        if known is None:
            known = _parse_status(status)
            if len(srv.statuses) < 256:
                srv.statuses[status] = known
        kinds = srv.response_kinds
        parts = []
        clen = None
        app_close = has_date = False
        for name, value in headers:
            if type(name) is not str or type(value) is not str:
                raise TypeError("header names and values must be str")
            kind = kinds.get(name)
            if kind is None:
                if not _token(name):
                    raise ValueError("invalid header name %r" % (name,))
                kind = _RESPONSE_HEADER_KINDS.get(name.lower(), _HDR_PLAIN)
                if len(kinds) < 512:
                    kinds[name] = kind
            if kind == _HDR_LENGTH:
                v = value.strip()
                if not (v.isdigit() and v.isascii()):
                    raise ValueError("invalid Content-Length %r" % value)
                clen = int(v)
            elif kind == _HDR_CONNECTION:
                app_close = app_close or "close" in value.lower()
                continue
            elif kind == _HDR_DATE:
                has_date = True
            elif kind == _HDR_REQUEST_ID:
                self.request_id = value
            elif kind == _HDR_HOP:
                raise ValueError("hop-by-hop header %r not allowed" % name)
            parts.append("%s: %s\r\n" % (name, value))
        block = "".join(parts)
        n = len(parts)
        if block.count("\n") != n or block.count("\r") != n or "\0" in block:
            raise ValueError("control character in response header")
        self.head = block.encode("latin-1")
        self.code, self.status_line = known
        self.status = status
        self.clen = clen
        self.app_close = app_close
        self.has_date = has_date
        return self.write

    def _send_result(self, result: Any) -> None:
        """Send the app's iterable: one write for a list, else chunk by chunk."""
        kind = type(result)
        if (kind is list or kind is tuple) and not self.sent_head:
            if self.status is None:
                raise RuntimeError("app did not call start_response()")
            for data in result:
                if type(data) is not bytes:
                    raise TypeError("body chunks must be bytes")
            self._head(result[0] if len(result) == 1 else b"".join(result),
                       True)
            return
        for data in result:
            if type(data) is not bytes:
                raise TypeError("body chunks must be bytes")
            if data:
                if self.sent_head:
                    self._body(data)
                elif self.status is None:
                    raise RuntimeError("body before start_response()")
                else:
                    self._head(data, False)
        if self.status is None:
            raise RuntimeError("app did not call start_response()")

    def run(self, app: Any, env: dict, line: str) -> None:
        """Call the app and send its response; never raises Exception."""
        result = None
        try:
            result = app(env, self.start_response)
            self._send_result(result)
            self._finish()
        except _ClientGone:
            self.keep = False
        except Exception:
            self.conn.srv.logger.exception(
                "Error in WSGI application for %r", line)
            self._fail()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    self.conn.srv.logger.exception(
                        "Error closing WSGI response for %r", line)
                    self._fail()



class _ConnectionIO:
    """A client socket as a worker uses it: timed reads, error answers and
    a close that does not reset the connection under unread input."""

    __slots__ = ("srv", "sock", "buf", "pos", "host", "rline", "linger")

    srv: _DevServer
    sock: Any
    buf: bytes
    pos: int
    host: str
    rline: str
    linger: bool

    def refuse(self, code: int, message: str) -> None:
        """Answer ``code`` with a JSON error, then close when done."""
        data = _refusal(code, message)
        try:
            self.sock.settimeout(self.srv.socket_timeout)
            self.sock.sendall(data)
        except OSError:
            return
        self.linger = True
        srv = self.srv
        if srv.access_log and srv.logger.isEnabledFor(20):  # INFO
            _log_access(srv.logger, self.host, self.rline, code,
                        len(data) - data.index(b"\r\n\r\n") - 4)

    def close(self) -> None:
        """Close; with unread input, drain it a while first (no TCP reset)."""
        import socket
        sock = self.sock
        if self.linger:
            try:
                sock.shutdown(socket.SHUT_WR)
                deadline = self.srv.clock() + _LINGER_SECONDS
                scratch = bytearray(65536)
                while True:
                    left = deadline - self.srv.clock()
                    if left <= 0:
                        break
                    sock.settimeout(left)
                    if not sock.recv_into(scratch):
                        break
            except OSError:
                pass
        try:
            sock.close()
        except OSError:
            pass

    def recv_by(self, deadline: float, size: int = 65536) -> bytes | None:
        """Bytes from the socket before ``deadline``; None on EOF/timeout."""
        srv = self.srv
        left = deadline - srv.clock()
        if left <= 0:
            return None
        sock = self.sock
        try:
            if left < srv.socket_timeout:
                sock.settimeout(left)
                try:
                    return sock.recv(size) or None
                finally:
                    sock.settimeout(srv.socket_timeout)
            return sock.recv(size) or None
        except OSError:
            return None

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False


class _ConnectionReader(_ConnectionIO):
    """A client connection as the selector loop sees it: waiting for a
    request head (``feed``, ``take_head``), then for a body the server
    buffers (``prepare``, ``body_step``)."""

    __slots__ = ("scan", "base", "deadline", "started", "head", "refused",
                 "req", "body")

    def __init__(self, srv: _DevServer, sock: Any, addr: Any) -> None:
        self.srv = srv
        self.sock = sock
        self.buf = b""
        self.pos = 0  # start of unread input in buf
        self.scan = 0  # where to look for the end of the head next
        self.linger = False
        self.rline = "-"
        self.head: bytes | None = None  # a complete head, not yet served
        self.started = False  # bytes of the next head have arrived
        self.deadline = 0.0  # when the loop gives up waiting
        self.refused: _Refused | None = None  # found while waiting
        self.req: Any = None  # (environ, HTTP/1.1, keep alive, length to
        # stream, 100 Continue owed) of the request prepared
        self.body: Any = None  # its body being buffered, if it has one
        host = addr[0] if isinstance(addr, tuple) else ""
        self.host = host or "-"
        base = srv.base_env.copy()
        base["REMOTE_ADDR"] = host
        if isinstance(addr, tuple) and len(addr) > 1:
            base["REMOTE_PORT"] = str(addr[1])
        self.base = base

    # -- waiting for a head (selector loop) --

    def feed(self, now: float) -> bool:
        """Read what the socket has; False when the client went away."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        if not self.started and self.body is None:
            # The whole head, blank lines before it included, must arrive
            # within one socket timeout of its first byte.
            self.started = True
            self.deadline = now + self.srv.socket_timeout
        self._append(data)
        return True

    def _append(self, data: bytes) -> None:
        """Add received bytes to the buffer, dropping what was taken
        (``scan``, where the search for a head's end goes on, moves
        along)."""
        if self.pos < len(self.buf):
            self.buf = self.buf[self.pos:] + data
            self.scan -= self.pos
        else:
            self.buf = data
            self.scan = 0
        self.pos = 0

    def take_head(self) -> bool:
        """Move a complete head out of the buffer into ``self.head``.

        Raises _Refused when what arrived cannot become a valid head.
        """
        buf = self.buf
        pos = self.pos
        if pos < len(buf) and buf[pos] in b"\r\n":
            # RFC 9112 §2.2: empty lines before the request-line are ignored.
            buf = buf[pos:].lstrip(b"\r\n")
            self.buf = buf
            self.pos = pos = self.scan = 0
        srv = self.srv
        found = _head_end(buf, max(pos, self.scan))
        if found is None:
            nl = buf.find(b"\n", pos)
            if (nl if nl >= 0 else len(buf)) - pos > srv.max_request_line + 1:
                raise _Refused(414)
            if nl >= 0 and len(buf) - nl > srv.max_header_bytes + 3:
                raise _Refused(431)
            self.scan = max(pos, len(buf) - 2)
            return False
        rest = found.end()
        self.head = buf[pos:rest]  # with the empty line that ends it
        if rest < len(buf):
            self.pos = self.scan = rest
        else:
            self.buf = b""
            self.pos = self.scan = 0
        self.started = False
        return True

    def prepare(self) -> bool:
        """Parse ``self.head`` into ``self.req``; start buffering its body.

        True when a worker can take the request now (no body, the body
        already complete, or one too large to buffer, which the app reads as
        it comes); False while the body is still to come.  A body up to
        ``srv.body_buffer`` bytes is read by the selector loop, so a slow
        sender costs no thread.  Raises _Refused for a bad request.
        """
        head, self.head = self.head or b"", None
        self.rline = "-"
        srv = self.srv
        env, http11 = _parse_head(self, head)
        chunked, length = _body_framing(env, http11)
        keep, expect = _keep_and_expect(env, http11, chunked or length > 0)
        deadline = srv.clock() + srv.body_timeout
        if chunked:
            body: Any = _ChunkedBody(srv, deadline)
        elif length and length <= srv.body_buffer:
            body = _LengthBody(length, deadline)
        else:
            # No body, or one larger than the buffer: the app reads it in
            # the worker, and the 100 Continue goes when it starts to.
            self.req = (env, http11, keep, length, expect)
            return True
        self.req = (env, http11, keep, 0, False)
        self.body = body
        if expect:
            # RFC 9110 §10.1.1: the body will be read, so ask for it now.
            try:
                sent = self.sock.send(_CONTINUE)
            except OSError:
                sent = 0
            if sent < len(_CONTINUE):
                body.expect = _CONTINUE[sent:]
                return True  # a worker sends the rest, then reads the body
        return self.body_step()

    def body_step(self) -> bool:
        """Take what has arrived into the body; True when a worker can
        serve the request (the body is complete, or a chunked one passed
        the buffer bound).  Raises _Refused for bad chunked framing or a
        body over the limit."""
        body = self.body
        if body.advance(self):
            return True
        if len(body.data) > self.srv.body_buffer:
            return True  # the worker reads the rest
        self.deadline = min(body.deadline,
                            self.srv.clock() + self.srv.socket_timeout)
        return False

    def cut_short(self) -> bool:
        """The body stopped coming (EOF or a deadline): True when the app
        should still answer (a Content-Length body: 400 Incomplete body)."""
        if type(self.body) is _LengthBody:
            self.body.broken = True
            return True
        return False



class _Connection(_ConnectionReader):
    """One client connection: the selector loop owns it while it waits
    (``_ConnectionReader``); a worker thread then serves the request
    (``serve``) and hands it back to the loop to wait for the next one.
    """

    __slots__ = ()

    def serve(self) -> bool:
        """Serve the prepared request and any pipelined after it.

        Returns True when the connection should go back to the selector
        loop: to wait for another request, or for the rest of a body.
        """
        srv = self.srv
        try:
            self.sock.settimeout(srv.socket_timeout)
            while True:
                if self.refused is not None:
                    raise self.refused
                if not self.request() or srv.closing:
                    self.close()
                    return False
                if not self.take_head() and not self.next_soon():
                    break
                if not self.prepare() and not self.body_soon():
                    break  # its body is still to come: the loop reads it
            self.sock.setblocking(False)
            return True
        except _Refused as exc:
            self.refuse(exc.code, exc.message)
        except Exception:
            srv.logger.exception("Internal error in HTTP server")
        self.close()
        return False

    def next_soon(self) -> bool:
        """Wait a moment for the next request on this thread (a client that
        sends one right after its answer skips a round trip through the
        loop); only while no request waits for a worker."""
        return self._recv_soon() and self.take_head()

    def body_soon(self) -> bool:
        """Wait a moment for the rest of a small body on this thread (a
        client that writes its head and its body separately, as
        http.client does, skips a round trip through the loop)."""
        return self._recv_soon() and self.body_step()

    def _recv_soon(self) -> bool:
        """Take bytes that arrive within _NEXT_REQUEST_WAIT into the
        buffer; False on a timeout, EOF, or when others wait for a worker."""
        srv = self.srv
        if srv._pending or srv.closing:
            return False
        try:
            self.sock.settimeout(_NEXT_REQUEST_WAIT)
            data = self.sock.recv(65536)
            self.sock.settimeout(srv.socket_timeout)
        except OSError:
            return False  # a timeout, or an error the loop will see again
        if not data:
            return False
        self._append(data)
        return True

    def request(self) -> bool:
        """Serve the prepared request: finish its body if a worker must,
        run the app, log.  Returns True to keep the connection alive."""
        env, http11, keep, length, expect = self.req
        body = self.body
        inp: Any = None
        if body is not None:
            if not (body.broken or body.advance(self)) and \
                    not self.finish_body(body):
                return False
            import io
            env["wsgi.input"] = io.BytesIO(body.data)
            if type(body) is _ChunkedBody:
                env["CONTENT_LENGTH"] = str(len(body.data))
            else:
                inp = body
            self.body = None
        elif length:
            inp = _BodyInput(self, length, expect)
            env["wsgi.input"] = inp
        else:
            env["wsgi.input"] = _EMPTY_INPUT
        self.req = None
        ex = _Exchange(self, env["REQUEST_METHOD"] == "HEAD", http11, keep, inp)
        srv = self.srv
        ex.run(srv.app, env, self.rline)
        if srv.access_log and srv.logger.isEnabledFor(20):  # INFO
            _log_access(srv.logger, self.host, self.rline, ex.code, ex.sent,
                        ex.request_id)
        return self.after(ex, inp)

    def finish_body(self, body: Any) -> bool:
        """Read the rest of a body in the worker (a chunked body past the
        buffer bound, or a 100 Continue the loop could not send); False
        when the connection is lost."""
        if body.expect:
            owed, body.expect = body.expect, b""
            if not self.send(owed):
                return False
        while not body.advance(self):
            data = self.recv_by(body.deadline)
            if data is None:
                if type(body) is _ChunkedBody:
                    return False
                body.broken = True  # the app sees a short body (400)
                return True
            self._append(data)
        return True

    def after(self, ex: _Exchange, inp: Any) -> bool:
        """Whether the connection can take another request."""
        if not ex.keep:
            if ex.linger or (inp is not None and inp.remaining
                             and not inp.broken):
                self.linger = True  # unread input: avoid a TCP reset
            return False
        if inp is not None and inp.remaining:
            # Unread body small enough to discard: keep the connection.
            if inp.broken or inp.expect:
                return False
            while inp.remaining and not inp.broken:
                inp.read(65536)
            return not inp.broken
        return True


def _parse_head(conn: _ConnectionReader, head: bytes) -> tuple:
    """The WSGI environ of a request head, and whether it is HTTP/1.1."""
    srv = conn.srv
    text = head.decode("latin-1")
    # RFC 9112 §2.2: lines end in CRLF, or all in a bare LF; a bare CR is
    # invalid.  A head that mixes them is refused rather than guessed at.
    if text.endswith("\r\n\r\n"):
        text = text[:-4]
        lines = text.split("\r\n")
        n = len(lines) - 1
        if text.count("\n") != n or text.count("\r") != n:
            raise _Refused(400, "Invalid line ending")
    else:
        text = text[:-2]
        if "\r" in text:
            raise _Refused(400, "Invalid line ending")
        lines = text.split("\n")
    line = conn.rline = lines[0]
    if len(line) > srv.max_request_line:
        raise _Refused(414)
    if len(lines) - 1 > srv.max_headers or \
            len(text) - len(line) > srv.max_header_bytes:
        raise _Refused(431)
    if "\0" in text or _bad_char(text, len(line)) is not None:
        raise _Refused(400, "Invalid character in request")
    method, target, version, http11 = _request_line(line)
    path, query, host = _request_target(target)
    env = conn.base.copy()
    env["REQUEST_METHOD"] = method
    env["PATH_INFO"] = path
    env["QUERY_STRING"] = query
    env["REQUEST_URI"] = target
    env["SERVER_PROTOCOL"] = version
    env["wsgi.errors"] = _sys.stderr
    _header_fields(srv.header_keys, lines, env)
    if host is not None:  # RFC 9112 §3.2.2: absolute-form wins over Host
        env["HTTP_HOST"] = host
    elif http11 and "HTTP_HOST" not in env:  # RFC 9112 §3.2
        raise _Refused(400, "Missing Host header")
    return env, http11


def _request_line(line: str) -> tuple:
    """(method, target, version, is HTTP/1.1) of a request-line."""
    # RFC 9112 §3: method SP request-target SP HTTP-version, single spaces.
    parts = line.split(" ")
    if len(parts) != 3:
        raise _Refused(400, "Malformed request line")
    method, target, version = parts
    if version == "HTTP/1.1":
        http11 = True
    elif version == "HTTP/1.0":
        http11 = False
    else:
        m = _http_version(version)  # RFC 9112 §2.3
        if m is None:
            raise _Refused(400, "Malformed request line")
        if m.group(1) != "1":
            raise _Refused(505)
        http11 = True
    if method not in _METHODS and not _token(method):  # RFC 9110 §9.1
        raise _Refused(400, "Malformed request line")
    return method, target, version, http11


def _request_target(target: str) -> tuple:
    """(path, query, host from absolute-form or None) of a request-target."""
    # RFC 9112 §3.2: origin-form, absolute-form or asterisk-form.
    if target[:1] == "/":
        path, _, query = target.partition("?")
        host = None
    elif target == "*":
        path, query, host = "*", "", None
    else:
        low = target[:8].lower()
        if not low.startswith(("http://", "https://")):
            raise _Refused(400, "Invalid request target")
        rest = target[target.index("//") + 2:]
        cut = len(rest)
        for ch in "/?":
            i = rest.find(ch)
            if 0 <= i < cut:
                cut = i
        host = rest[:cut]
        rest = rest[cut:]
        if rest[:1] != "/":
            rest = "/" + rest
        path, _, query = rest.partition("?")
    if "%" in path:
        from urllib.parse import unquote_to_bytes
        path = unquote_to_bytes(path.encode("latin-1")).decode("latin-1")
    return path, query, host


def _header_fields(keys: dict, lines: list, env: dict) -> None:
    """Put the header fields into ``env`` as CONTENT_* and HTTP_* keys."""
    for hline in lines[1:]:
        # RFC 9112 §5: field-name ":" OWS field-value OWS.  No whitespace
        # before the colon (§5.1) and no obs-fold (§5.2): both are 400.
        name, colon, value = hline.partition(":")
        if not colon:
            raise _Refused(400, "Malformed header")
        key = keys.get(name)
        if key is None:
            if not _token(name):
                raise _Refused(400, "Malformed header")
            if "_" in name:
                key = ""  # dropped: X_Forwarded_For must not pass
            else:
                key = name.upper().replace("-", "_")
                if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
                    key = "HTTP_" + key
            if len(keys) < 1024:
                keys[name] = key
        if not key:
            continue
        value = value.strip(" \t")
        old = env.get(key)
        if old is None:
            env[key] = value
        elif key == "CONTENT_LENGTH":  # RFC 9112 §6.3 point 5
            if old != value:
                raise _Refused(400, "Conflicting Content-Length")
        elif key == "HTTP_HOST":  # RFC 9112 §3.2
            raise _Refused(400, "Duplicate Host header")
        elif key == "HTTP_COOKIE":  # RFC 6265 §5.4: one line, "; "
            env[key] = old + "; " + value
        else:  # RFC 9110 §5.3: a list, comma-separated
            env[key] = old + ", " + value


def _body_framing(env: dict, http11: bool) -> tuple:
    """(chunked, content length) of the request body, RFC 9112 §6."""
    te = env.pop("HTTP_TRANSFER_ENCODING", None)
    cl = env.get("CONTENT_LENGTH")
    if te is not None:
        codings = [c.strip(" \t").lower() for c in te.split(",")]
        if codings != ["chunked"]:
            # §6.3 point 4: chunked not final (or applied twice, §6.1) is
            # 400; a coding this server does not know is 501 (§6.1).
            if "chunked" in codings:
                raise _Refused(400, "Invalid Transfer-Encoding")
            raise _Refused(501, "Unsupported Transfer-Encoding")
        # §6.1: both Content-Length and Transfer-Encoding may be smuggling;
        # §6.1 too: Transfer-Encoding in HTTP/1.0 is not to be trusted.
        if cl is not None or not http11:
            raise _Refused(400, "Invalid Transfer-Encoding")
        return True, 0
    if cl is None:
        return False, 0  # §6.3 point 7: no body
    if "," in cl:  # §6.3 point 5: a list of equal values is one value
        values = {v.strip() for v in cl.split(",")}
        if len(values) != 1:
            raise _Refused(400, "Conflicting Content-Length")
        cl = values.pop()
    if not (cl.isdigit() and cl.isascii() and len(cl) < 19):
        raise _Refused(400, "Invalid Content-Length")
    env["CONTENT_LENGTH"] = str(int(cl))
    return False, int(cl)


def _keep_and_expect(env: dict, http11: bool, has_body: bool) -> tuple:
    """(keep the connection alive, 100 Continue owed) for a request."""
    conn_hdr = env.get("HTTP_CONNECTION")
    if conn_hdr is None:  # RFC 9112 §9.3: 1.1 persists, 1.0 does not
        keep = http11
    else:
        tokens = [t.strip() for t in conn_hdr.lower().split(",")]
        keep = "close" not in tokens and (http11 or "keep-alive" in tokens)
    exp = env.get("HTTP_EXPECT")
    if exp is None or not http11:
        return keep, False
    if exp.lower() != "100-continue":  # RFC 9110 §10.1.1
        raise _Refused(417)
    return keep, has_body


class _LengthBody:
    """A request body with a Content-Length, buffered as it arrives (by
    the selector loop, or a worker).  As ``inp`` of a response it says
    what is still on the wire: nothing once complete."""

    __slots__ = ("data", "remaining", "deadline", "expect", "broken")

    def __init__(self, length: int, deadline: float) -> None:
        self.data = bytearray()
        self.remaining = length  # bytes still to come
        self.deadline = deadline  # the whole body must be there by then
        self.expect = b""  # the part of a 100 Continue still owed
        self.broken = False  # EOF or deadline before the end

    def advance(self, conn: _ConnectionReader) -> bool:
        """Take the buffered input that belongs to the body; True when it is
        complete (what follows is the next request's)."""
        need = self.remaining
        if need:
            buf = conn.buf
            pos = conn.pos
            take = min(len(buf) - pos, need)
            if take:
                self.data += memoryview(buf)[pos:pos + take]
                self.remaining = need = need - take
                if pos + take < len(buf):
                    conn.pos = pos + take
                else:
                    conn.buf = b""
                    conn.pos = 0
        return not need


class _ChunkedBody:
    """A chunked request body, decoded as it arrives.

    RFC 9112 §7.1 exactly: every line ends in CRLF, no whitespace before a
    chunk size, trailer fields are ``name: value``.  The whole body shares
    one deadline, like a body with a Content-Length, and costs no more
    memory than the bytes it carries.
    """

    __slots__ = ("data", "deadline", "expect", "broken", "state", "left",
                 "count", "total", "limit", "max_headers", "max_trailer")

    def __init__(self, srv: _DevServer, deadline: float) -> None:
        self.data = bytearray()
        self.deadline = deadline
        self.expect = b""
        self.broken = False
        self.state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailer,
        # 4 done
        self.left = 0  # chunk data still to come
        self.count = self.total = 0  # trailer fields and their bytes
        self.limit = srv.max_chunked_body
        self.max_headers = srv.max_headers
        self.max_trailer = srv.max_header_bytes

    def advance(self, conn: _ConnectionReader) -> bool:
        """Decode the buffered input as far as it goes; True when the body
        is complete.  Raises _Refused for bad framing or a body over the
        limit (413)."""
        buf = conn.buf
        pos = conn.pos
        try:
            while True:
                state = self.state
                if state == 1:  # chunk-data
                    take = min(len(buf) - pos, self.left)
                    if not take:
                        return False
                    self.data += memoryview(buf)[pos:pos + take]
                    pos += take
                    self.left -= take
                    if not self.left:
                        self.state = 2
                    continue
                if state == 4:
                    return True
                if state == 0:
                    limit, code = 4096, 400
                elif state == 2:
                    limit, code = 2, 400
                else:
                    limit, code = self.max_trailer, 431
                i = buf.find(b"\n", pos)
                if (i if i >= 0 else len(buf)) - pos > limit:
                    raise _Refused(code)
                if i < 0:
                    return False
                line = buf[pos:i + 1]
                pos = i + 1
                if state == 0:
                    m = _chunk_size_line(line)  # §7.1
                    if m is None:
                        raise _Refused(400, "Invalid chunk size")
                    size = int(m.group(1), 16)
                    if not size:
                        self.state = 3
                    elif len(self.data) + size > self.limit:
                        raise _Refused(413)
                    else:
                        self.left = size
                        self.state = 1
                elif state == 2:
                    if line != b"\r\n":  # §7.1: chunk-data CRLF
                        raise _Refused(400, "Invalid chunk terminator")
                    self.state = 0
                elif line == b"\r\n":
                    self.state = 4
                else:  # §7.1.2: trailer fields, checked and dropped
                    if _trailer_line(line) is None:
                        raise _Refused(400, "Invalid trailer field")
                    self.count += 1
                    self.total += len(line)
                    if self.count > self.max_headers or \
                            self.total > self.max_trailer:
                        raise _Refused(431)
        finally:
            if pos < len(buf):
                conn.buf = buf
                conn.pos = pos
            else:
                conn.buf = b""
                conn.pos = 0


def _listen(host: str, port: Any, backlog: int) -> Any:
    """A listening socket on ``host:port``; OSError if that cannot be."""
    import errno
    import socket
    if type(port) is not int or not 0 <= port <= 65535:
        raise OSError(errno.EINVAL, "port must be 0-65535, got %r" % (port,))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    info = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0,
                              socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        if hasattr(socket, "SO_REUSEADDR") and _sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _fd_room(wanted: int) -> int:
    """``wanted`` connections, or fewer if the open-files limit is lower."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - 32))  # room for the app's own files



class _AcceptLoop:
    """The selector loop of the development server: accepts connections and
    owns each one while it waits for a request head or body (see
    _DevServer)."""

    waiting: dict
    _returned: list
    _stopped: Any  # threading.Event
    _stop: bool
    _wake_r: Any
    _wake_w: Any
    _sel: Any
    _lock: Any
    _held: int
    _accept_at: float
    _fd_warned: bool
    socket: Any
    clock: Any
    logger: Any
    max_connections: int
    socket_timeout: float
    _dispatch: Any

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until shutdown() is called (or request_stop(), from a
        signal handler)."""
        import selectors
        self._stopped.clear()
        sel = self._sel = selectors.DefaultSelector()
        listening = False
        next_sweep = 0.0
        try:
            sel.register(self._wake_r, selectors.EVENT_READ, False)
            while not self._stop:
                now = self.clock()
                want = now >= self._accept_at and bool(
                    self.waiting or self._held < self.max_connections)
                if want != listening:
                    if want:
                        sel.register(self.socket, selectors.EVENT_READ, None)
                    else:
                        sel.unregister(self.socket)
                    listening = want
                # Deadlines are checked four times a second while anything
                # waits; with nothing to do the loop sleeps ``poll_interval``.
                wait = 0.25 if self.waiting or not listening else poll_interval
                for key, _ in sel.select(wait):
                    try:
                        if key.data is None:
                            self._accept(self.clock())
                        elif key.data is False:
                            self._drain_wake()
                        else:
                            self._readable(key.data, self.clock())
                    except Exception:  # a bug must not stop the server
                        self.logger.exception("Internal error in HTTP server")
                        if key.data:
                            self._discard(key.data)
                now = self.clock()
                self._take_returned(now)
                if now >= next_sweep:
                    self._expire(now)
                    next_sweep = now + 0.25
        finally:
            sel.close()
            self._sel = None
            self._stop = False
            self._stopped.set()

    def _accept(self, now: float) -> None:
        import errno
        for _ in range(64):  # then let the waiting connections have a turn
            full = len(self.waiting) + self._held >= self.max_connections
            if full and not self.waiting:
                return  # every connection is being served: wait
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE,
                                     errno.ENOBUFS, errno.ENOMEM):
                    continue  # e.g. ECONNABORTED: that client left
                if not self._fd_warned:
                    self._fd_warned = True
                    self.logger.warning(
                        "Cannot accept connections: %s; closing the oldest "
                        "waiting connection (logged once)", exc.strerror)
                # Back off (no busy loop), longer if nothing could be closed.
                self._accept_at = now + (0.02 if self._evict() else 0.1)
                return
            if full:
                self._evict()  # the oldest waiting one makes room
            self._admit(sock, addr, now)

    def _admit(self, sock: Any, addr: Any, now: float) -> None:
        import selectors
        import socket
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        sock.setblocking(False)
        server: Any = self
        conn = _Connection(server, sock, addr)
        conn.deadline = now + self.socket_timeout
        self.waiting[conn] = None
        self._sel.register(sock, selectors.EVENT_READ, conn)

    def _evict(self) -> bool:
        """Close the oldest waiting connection; False if none waits."""
        for conn in self.waiting:
            self._drop(conn)
            return True
        return False

    def _discard(self, conn: _Connection) -> None:
        """Forget a connection whatever state it is in, and close it."""
        self.waiting.pop(conn, None)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass

    def _drop(self, conn: _Connection) -> None:
        del self.waiting[conn]
        self._sel.unregister(conn.sock)
        try:
            conn.sock.close()
        except OSError:
            pass

    def _readable(self, conn: _Connection, now: float) -> None:
        if conn not in self.waiting:
            return  # closed earlier in this round of events
        if not conn.feed(now):
            if conn.body is not None and conn.cut_short():
                self._hand_over(conn)  # the app answers the short body
            else:
                self._drop(conn)
            return
        try:
            if conn.body is not None:
                if not conn.body_step():
                    return
            elif not conn.take_head() or not conn.prepare():
                return
        except _Refused as exc:
            conn.refused = exc
        self._hand_over(conn)

    def _hand_over(self, conn: _Connection) -> None:
        """Give a request that is ready to a worker."""
        del self.waiting[conn]
        self._sel.unregister(conn.sock)
        self._dispatch(conn)

    def _expire(self, now: float) -> None:
        """Close connections whose head, body or next request is overdue
        (a short Content-Length body still goes to the app: 400)."""
        late = [conn for conn in self.waiting if conn.deadline <= now]
        for conn in late:
            if conn.body is not None and conn.cut_short():
                self._hand_over(conn)
            else:
                self._drop(conn)

    def _take_returned(self, now: float) -> None:
        import selectors
        if not self._returned:
            return
        with self._lock:
            back, self._returned = self._returned, []
            self._held -= len(back)
        for conn in back:
            if conn.body is not None:  # waiting for the rest of a body
                conn.deadline = min(conn.body.deadline,
                                    now + self.socket_timeout)
            else:
                conn.started = conn.pos < len(conn.buf)
                conn.deadline = now + self.socket_timeout
            self.waiting[conn] = None
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except OSError:
            pass

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # full (a wake-up is pending anyway) or closed


class _DevServer(_AcceptLoop):
    """A threaded HTTP/1.1 WSGI server.

    ``serve_forever`` runs a selector loop that accepts connections and owns
    each one while it waits for a request head and then for its body (up to
    ``body_buffer`` bytes; a larger Content-Length body is read by the app in
    the worker); a complete request goes to a pool of at most ``threads``
    workers, so idle and slow clients cost no thread.  At
    ``max_connections`` the oldest waiting connection is closed to admit a
    new one.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8000,
                 *, socket_timeout: float = 5.0, max_request_line: int = 65536,
                 max_headers: int = 100, max_header_bytes: int = 65536,
                 max_chunked_body: int = 1 << 20, backlog: int = 128,
                 log: bool = True, name: str | None = None,
                 max_connections: int = 512, threads: int = 32,
                 graceful_timeout: float = 10.0) -> None:
        import logging
        import queue
        import socket
        import threading
        import time
        if max_connections < 1 or threads < 1:
            raise ValueError("max_connections and threads must be at least 1")
        _compile_patterns()
        self.app = app
        self.logger = logging.getLogger("cosmic")
        self.clock = time.monotonic
        self.socket_timeout = socket_timeout
        self.body_timeout = max(30.0, 12 * socket_timeout)
        self.max_request_line = max_request_line
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.max_chunked_body = max_chunked_body
        # Bodies up to this size are buffered by the selector loop, so that a
        # slow sender costs no thread; a larger one is read by the app.
        self.body_buffer = min(_BODY_BUFFER, max_chunked_body)
        self.max_connections = _fd_room(max_connections)
        self.threads = threads
        self.graceful_timeout = graceful_timeout
        self.access_log = log
        self.request_queue_size = backlog
        self.socket = _listen(host, port, backlog)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._jobs: Any = queue.SimpleQueue()
        self._returned: list = []  # handed back by workers, for the loop
        self._held = 0  # connections a worker holds or will hold
        self._workers = self._free = self._pending = 0
        self._accept_at = 0.0  # accepting paused until then
        self._fd_warned = False
        self._sel: Any = None
        self.waiting: dict = {}  # connections waiting for a head, oldest first
        self.closing = False
        self.header_keys: dict = {}
        self.response_kinds: dict = {}
        self.statuses: dict = {}
        bound_host, bound_port = self.server_address[:2]
        self.base_env = {
            "SCRIPT_NAME": "", "SERVER_NAME": name or bound_host,
            "SERVER_PORT": str(bound_port), "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http", "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    # -- the worker pool --

    def _dispatch(self, conn: _Connection) -> None:
        import threading
        with self._lock:
            self._held += 1
            if self._free:
                self._free -= 1
            elif self._workers < self.threads:
                self._workers += 1
                threading.Thread(target=self._work, daemon=True,
                                 name="cosmic-worker").start()
            else:
                self._pending += 1
        self._jobs.put(conn)

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            conn = jobs.get()
            if conn is None:
                return
            again = conn.serve()
            with self._lock:
                if self._pending:
                    self._pending -= 1
                else:
                    self._free += 1
                if again and not self.closing:
                    self._returned.append(conn)
                else:
                    if again:
                        conn.close()
                    self._held -= 1
                    if not self._held:
                        self._done.notify_all()
            if again:
                self._wake()

    # -- stopping --

    def after_fork(self) -> None:
        """In a forked worker process: a wake-up channel of its own (the
        inherited one is shared with the other workers)."""
        import socket
        self._wake_r.close()
        self._wake_w.close()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def request_stop(self) -> None:
        """Make serve_forever() return soon; safe in a signal handler."""
        self._stop = True
        self._wake()

    def shutdown(self) -> None:
        """Stop serve_forever() (called from another thread) and wait."""
        self.request_stop()
        self._stopped.wait()

    def server_close(self) -> None:
        """Stop accepting; close the waiting connections (idle keep-alive
        and incomplete heads).  Requests being served go on: see drain()."""
        with self._lock:
            self.closing = True
            back, self._returned = self._returned, []
            self._held -= len(back)
            if not self._held:
                self._done.notify_all()
            workers = self._workers
        self.socket.close()
        for conn in [*self.waiting, *back]:
            try:
                conn.sock.close()
            except OSError:
                pass
        self.waiting.clear()
        for _ in range(workers):
            self._jobs.put(None)  # after the queued connections
        if self._stopped.is_set():
            self._wake_r.close()
            self._wake_w.close()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no request is being served, at most ``timeout`` s;
        True if none is left."""
        with self._lock:
            return self._done.wait_for(lambda: self._held <= 0, timeout)


def _make_server(app: Any, host: str = "127.0.0.1", port: int = 8000,
                 **limits: Any) -> _DevServer:
    """Bind and listen; return a server (``serve_forever``/``shutdown``/...)."""
    return _DevServer(app, host, port, **limits)


def _split_run_options(options: dict) -> tuple:
    """Split the keyword options of ``API.run`` and ``served_api`` into
    (Server options, development-server options).

    Options of the original's werkzeug server that mean nothing here are
    dropped with a debug log; ``ssl_context`` is refused (serving plain HTTP
    instead would be a silent downgrade); anything else goes to ``Server``,
    which raises TypeError for a misspelt name.
    """
    import logging
    server_options, transport = {}, {}
    for key, value in options.items():
        if key == "ssl_context":
            raise ValueError("ssl_context is not supported: the development "
                             "server speaks plain HTTP only; put a TLS proxy "
                             "(nginx, caddy) in front of it")
        if key in _LEGACY_RUN_OPTIONS:
            logging.getLogger("cosmic").debug(
                "Option %s=%r means nothing to this server: ignored",
                key, value)
        elif key in _TRANSPORT_OPTIONS:
            transport[key] = value
        else:
            server_options[key] = value
    return server_options, transport


def serve_wsgi(app: Any, host: str = "127.0.0.1", port: int = 8000, *,
               ready: Any = None, log: bool = True, workers: int = 1,
               **limits: Any) -> None:
    """Serve ``app`` until KeyboardInterrupt or SIGTERM, then stop gracefully.

    ``ready(server)`` is called once the socket listens (port 0: read the real
    port from ``server.server_address``).  Limits, all optional:
    ``socket_timeout`` (5 s) bounds every wait on a client (idle keep-alive,
    a whole request head, each body read; a whole body gets 12 times that, at
    least 30 s); ``max_connections`` (512, fewer if the open-files limit is
    lower: at the cap the oldest idle connection is closed to admit a new one);
    ``threads`` (32) serve requests, idle connections and bodies still
    arriving cost none (a body up to 1 MiB, or ``max_chunked_body`` if
    smaller, is read whole before a thread takes the request; a larger
    Content-Length body is read by the app on its thread);
    ``max_chunked_body`` (1 MiB) bounds a chunked body, which is buffered
    (else 413); ``max_request_line``, ``max_headers``, ``max_header_bytes``,
    ``backlog``; ``name`` sets SERVER_NAME.  On SIGTERM or Ctrl-C the server
    stops accepting, closes idle connections and lets requests in flight
    finish for up to ``graceful_timeout`` (10 s).  ``workers=N`` (POSIX)
    forks N processes that accept from the one socket (see the README on
    what is fork-safe).  With ``log=True`` one Common Log Format line per
    request goes to the "cosmic" logger; a stderr handler is added for the
    duration only if no handler would receive those records.
    """
    import logging
    logger = logging.getLogger("cosmic")
    added = None
    old_level = logger.level
    if log and not logger.hasHandlers():
        added = logging.StreamHandler()
        added.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(added)
        if not logger.isEnabledFor(logging.INFO):
            logger.setLevel(logging.INFO)
    try:
        server = _make_server(app, host, port, log=log, **limits)
        if workers > 1:
            _serve_workers(server, workers, ready)
        else:
            _serve_until_stopped(server, ready)
    finally:
        if added is not None:
            logger.removeHandler(added)
            logger.setLevel(old_level)


def _on_signals(handler: Any, *signums: Any) -> list:
    """Install ``handler`` for the signals (main thread only); return what
    restores the previous handlers."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return []
    restore = []
    for signum in signums:
        try:
            restore.append((signum, signal.signal(signum, handler)))
        except (ValueError, OSError, AttributeError):
            pass
    return restore


def _restore_signals(restore: list) -> None:
    import signal
    for signum, old in restore:
        try:
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
        except (ValueError, OSError):
            pass


def _serve_until_stopped(server: _DevServer, ready: Any = None) -> None:
    """Serve until SIGTERM or Ctrl-C, then finish requests in flight."""
    import signal
    restore = _on_signals(lambda signum, frame: server.request_stop(),
                          signal.SIGTERM)
    try:
        if ready is not None:
            ready(server)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        _restore_signals(restore)
        server.server_close()
        try:
            if not server.drain(server.graceful_timeout):
                server.logger.warning(
                    "Requests still running after %g s: stopping anyway",
                    server.graceful_timeout)
        except KeyboardInterrupt:
            pass


def _serve_workers(server: _DevServer, count: int, ready: Any = None) -> None:
    """Fork ``count`` worker processes that accept from ``server``'s socket;
    replace any that dies; on SIGTERM or Ctrl-C stop them all gracefully."""
    import os
    import signal
    import time
    if not hasattr(os, "fork"):
        raise OSError("--workers needs fork(), which this system lacks")
    server.base_env["wsgi.multiprocess"] = True
    stopping = []
    restore = _on_signals(lambda signum, frame: stopping.append(signum),
                          signal.SIGTERM, signal.SIGINT)
    children: dict = {}  # pid -> start time

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            _restore_signals(restore)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            server.after_fork()
            code = 0
            try:
                _serve_until_stopped(server)
            except BaseException:
                server.logger.exception("Worker %d failed", os.getpid())
                code = 1
            finally:
                for stream in (_sys.stdout, _sys.stderr):
                    try:
                        stream.flush()
                    except Exception:
                        pass
                os._exit(code)
        children[pid] = time.monotonic()

    try:
        for _ in range(count):
            spawn()
        if ready is not None:
            ready(server)
        while not stopping:
            _reap_and_replace(server, children, spawn)
            time.sleep(0.2)
    finally:
        _stop_workers(server, children)
        _restore_signals(restore)
        server.server_close()


def _reap_and_replace(server: _DevServer, children: dict, spawn: Any) -> None:
    """Start a new worker for each one that exited, and log it."""
    import os
    import time
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        started = children.pop(pid, None)
        if started is None:
            continue
        if os.WIFSIGNALED(status):
            how = "was killed by signal %d" % os.WTERMSIG(status)
        else:
            how = "exited with status %d" % os.WEXITSTATUS(status)
        server.logger.warning("Worker %d %s; starting another", pid, how)
        if time.monotonic() - started < 1.0:
            time.sleep(1.0)  # a worker that dies at once: do not spin
        spawn()


def _stop_workers(server: _DevServer, children: dict) -> None:
    """SIGTERM every worker; wait for them to drain; SIGKILL stragglers."""
    import os
    import signal
    import time
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + server.graceful_timeout + 5.0
    while children:
        for pid in list(children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                del children[pid]
        if not children:
            return
        if time.monotonic() > deadline:
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
            return
        time.sleep(0.05)


# -- Client -------------------------------------------------------------------

# APIClient builds its actions and models from /spec.json at run time;
# WsgiAPIClient calls a WSGI app in-process with the same interface.

def _refused(err: ValidationError) -> ValidationError:
    """``err``, raised by a client before sending, as _RefusedArguments."""
    if type(err) is not ValidationError:
        return err
    refused = _RefusedArguments(err.message)
    refused.__dict__.update(err.__dict__)
    refused.args = err.args
    refused.code = 400
    return refused.with_traceback(err.__traceback__)


class _ClientRequest:
    """What a client sends: ``method``, ``url`` (relative), ``data`` (text),
    ``headers`` (a dict hooks may change), ``timeout`` (seconds or None),
    ``retry_writes`` (None: the client's setting)."""

    def __init__(self, method: str, url: str, data: str = "",
                 headers: dict | None = None) -> None:
        self.method = method
        self.url = url
        self.data = data
        self.headers = headers if headers is not None else {}
        self.timeout: float | None = None
        self.retry_writes: bool | None = None

    def __repr__(self) -> str:
        return "<Request %s %s>" % (self.method, self.url)


class _ResponseHeaders(dict):
    """Response headers; lookups ignore case."""

    def __init__(self, pairs: Iterable) -> None:
        super().__init__()
        for name, value in pairs:
            key = name.lower()
            if key in self:
                value = dict.__getitem__(self, key) + ", " + value
            dict.__setitem__(self, key, value)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


class _ClientResponse:
    """What a client received: ``status_code``, ``headers``, ``content``
    (bytes) and ``text``."""

    def __init__(self, status_code: int, headers: Iterable,
                 content: bytes) -> None:
        self.status_code = status_code
        self.headers = _ResponseHeaders(headers)
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return "<Response %d>" % self.status_code


def _answer(schema: Any, datum: Any) -> Any:
    """Load a server's answer, dropping fields the client's spec lacks.

    Clients tolerate what a newer server adds to its answers; servers stay
    strict about what they receive. The strict load runs first, so a valid
    answer costs nothing more: only a refused one is cleared of unknown
    fields (logged at debug) and loaded again, every other check intact
    (docs/protocol.md#unknown-fields-in-answers).
    """
    try:
        return schema.from_json(datum)
    except ValidationError:
        drop = _dropper(schema)
        dropped: list = []
        if drop is not None:
            datum = drop(datum, [], dropped)
        if not dropped:
            raise
    import logging
    logger = logging.getLogger("cosmic")
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("Answer fields unknown to the client's spec, dropped: "
                     "%s", ", ".join("".join("[%r]" % key for key in path)
                                     for path in dropped))
    return schema.from_json(datum)


def _dropper(schema: Any) -> Callable | None:
    """A function ``(datum, path, dropped) -> datum`` that copies a value
    of ``schema`` without the Struct fields the schema lacks, noting their
    paths in ``dropped``; None for a type that holds no Struct. Compiled
    once per type object."""
    cached = getattr(schema, "__dict__", {}).get("_drop", _MISSING)
    if cached is not _MISSING:
        return cached
    drop = None
    if isinstance(schema, _Wrapper):
        drop = _dropper(schema._inner)
    elif isinstance(schema, Struct):
        known = {name: _dropper(f["schema"])
                 for name, f in schema.param.items()}

        def drop(datum, path, dropped):
            if type(datum) is not dict:
                return datum
            out = {}
            for key, value in datum.items():
                child = known.get(key, _MISSING)
                if child is _MISSING:
                    dropped.append(path + [key])
                else:
                    out[key] = value if child is None else \
                        child(value, path + [key], dropped)
            return out
    elif isinstance(schema, (Array, Map)):
        item = _dropper(schema.param)
        if item is not None:
            drop = _container_dropper(item, schema)
    if isinstance(schema, _Type):
        schema.__dict__["_drop"] = drop
    return drop


def _container_dropper(item: Callable, schema: Any) -> Callable:
    if isinstance(schema, Array):
        def drop(datum, path, dropped):
            if type(datum) is not list:
                return datum
            return [item(value, path + [i], dropped)
                    for i, value in enumerate(datum)]
    else:
        def drop(datum, path, dropped):
            if type(datum) is not dict:
                return datum
            return {key: item(value, path + [key], dropped)
                    for key, value in datum.items()}
    return drop


_HEADER_SAFE = _re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*\Z")


class _Credential:
    """What a client sends for ``auth=``: a token (bearer, or the API's
    API key when it declares no bearer scheme), an API key or a Basic
    pair. The API-key header is what the spec declares; from a server
    whose spec declares nothing (older versions), it is learnt from a
    401's challenge."""

    def __init__(self, auth: Any) -> None:
        kind, secret, ok = "token", auth, True
        if isinstance(auth, dict) and len(auth) == 1:
            kind, secret = next(iter(auth.items()))
            ok = kind in ("bearer", "api_key", "basic")
        elif isinstance(auth, tuple):
            kind = "basic"
        if kind == "basic":
            ok = isinstance(secret, tuple) and len(secret) == 2 and \
                all(isinstance(x, str) for x in secret)
            if ok:
                secret = "Basic " + _base64.b64encode(
                    ("%s:%s" % secret).encode("utf-8")).decode("ascii")
        elif not isinstance(secret, str):
            ok = False
        if not ok:
            # Never show the value: it may be a secret.
            raise TypeError(
                "auth must be a token (str), a (user, password) pair, or "
                "{'bearer' | 'api_key': str} or {'basic': (user, password)};"
                " got a %s" % type(auth).__name__)
        if not _HEADER_SAFE.match(secret):
            raise ValueError("auth holds characters an HTTP header cannot "
                             "carry (control characters or non-ASCII)")
        self.kind = kind
        self.secret = secret
        self.header = "X-API-Key"
        self.as_key = kind == "api_key"

    def learn(self, schemes: Iterable) -> bool:
        """Follow the declared schemes ``(kind, header)``; True if the
        credential now goes elsewhere."""
        schemes = list(schemes)
        kinds = [kind for kind, _ in schemes]
        before = (self.as_key, self.header)
        if self.kind in ("token", "api_key") and "api_key" in kinds:
            self.header = schemes[kinds.index("api_key")][1]
            self.as_key = self.kind == "api_key" or "bearer" not in kinds
        return (self.as_key, self.header) != before

    def apply(self, headers: dict) -> None:
        if self.as_key:
            headers[self.header] = self.secret
        elif self.kind == "basic":
            headers["Authorization"] = self.secret
        else:
            headers["Authorization"] = "Bearer " + self.secret

    def names(self) -> tuple:
        """The lower-case header names that carry it (to redact)."""
        return ("authorization", self.header.lower())


_CHALLENGE = _re.compile(
    r'(?:^|,)[ \t]*(Bearer|Basic|APIKey)\b((?:[ \t,]*[A-Za-z0-9_-]+="[^"]*")*)',
    _re.IGNORECASE)


def _challenged(value: str) -> list:
    """The (kind, header) schemes a WWW-Authenticate value names."""
    found = []
    for match in _CHALLENGE.finditer(value or ""):
        name = match.group(1).lower()
        header = _re.search(r'header="([A-Za-z0-9-]{1,64})"', match.group(2))
        kind = {"apikey": "api_key"}.get(name, name)
        if header and header.group(1).lower() in _NOT_KEY_HEADERS:
            continue  # not where a key goes: a broken or hostile server
        found.append((kind, header.group(1) if header else "X-API-Key"))
    return found


class BaseAPIClient(BaseAPI):
    """A client whose actions and models are built from the API's spec.

    ``call(endpoint, *args, **kwargs)`` runs ``build_request``, then
    ``make_request`` (the transport, in subclasses), then
    ``parse_response``; override any of them (e.g. to add headers).
    Arguments are checked against the spec before anything is sent, and
    answers are checked on arrival (fields the spec lacks are dropped).

    ``auth`` sends a credential with every call, the spec fetch included:
    a token (``Authorization: Bearer``, or the API's API-key header when
    it declares API keys and no bearer scheme), ``(user, password)`` for
    Basic, or ``{"bearer": t}``, ``{"api_key": k}``, ``{"basic": pair}``.
    """

    problem_details = False
    #: Resolves custom type names in the spec: ``type_getter(name)`` gives
    #: the type or raises KeyError (see standard_types).
    type_getter: Any = None
    #: The spec the caller was written against (see _check_contract).
    expected_spec: Any = None
    on_breaking = "raise"
    auth: Any = None

    def __init__(self, spec: dict | None = None) -> None:
        auth = self.auth
        self._credential = auth if isinstance(auth, _Credential) or \
            auth is None else _Credential(auth)
        self._auth_declared = False  # until a spec declares its schemes
        token = _TYPES.set((self.type_getter, None))
        try:
            if spec is None:
                spec = self.call(SpecEndpoint())
            elif "actions" in spec and isinstance(spec["actions"], dict) \
                    and "order" in spec["actions"]:
                spec = APISpec.from_json(spec)
        finally:
            _TYPES.reset(token)
        super().__init__(spec, _ClientNames("action"),
                         _ClientNames("model"))
        if "auth" in spec:
            # The credential goes where the spec says, from the first call.
            self._auth_declared = True
            if self._credential is not None:
                self._credential.learn(_spec_schemes(spec))
        for model in spec["models"].values():
            for link in model["links"].values():
                link["model"]._bind_model(self)
            for kind in ("properties", "query_fields", "list_metadata"):
                for field in model[kind].values():
                    field["schema"]._bind(self)
        for entry in spec["actions"].values():
            for key in ("accepts", "returns"):
                if entry.get(key) is not None:
                    entry[key]._bind(self)
        registered = cosmos.get(self.name)
        if not isinstance(registered, API):
            cosmos[self.name] = self
        for name in spec["actions"]:
            setattr(self.actions, name,
                    self._function(ActionEndpoint(self, name), name,
                                   spec["actions"][name].get("doc")))
        for name in spec["models"]:
            namespace: Any = Object()
            for cls in _MODEL_ENDPOINTS:
                setattr(namespace, cls.method_name, self._function(
                    cls(self, name), cls.method_name, None))
            namespace.validate_patch = _no_check
            setattr(self.models, name, namespace)
        if self.expected_spec is not None:
            _check_contract(self)

    def _function(self, endpoint: Endpoint, name: str,
                  doc: str | None) -> Callable:
        call = self.call

        def remote(*args: Any, **kwargs: Any) -> Any:
            return call(endpoint, *args, **kwargs)

        remote.__name__ = remote.__qualname__ = name
        remote.__doc__ = doc
        remote.endpoint = endpoint  # type: ignore[attr-defined]
        return remote

    def call(self, endpoint: Endpoint, /, *args: Any, **kwargs: Any) -> Any:
        """Build, send and parse one call to ``endpoint``.

        Options for this call (never field names: fields cannot start with
        ``_``): ``_timeout=seconds`` overrides the client's timeout,
        ``_retry_writes=True`` lets a write be repeated even when its
        outcome is unknown, ``_with_etag=True`` returns ``(result, etag)``,
        the answer's ETag without quotes (None without one), and
        ``_if_match=etag`` (update, delete) makes the call conditional: a
        412 raises PreconditionFailed.
        """
        timeout = kwargs.pop("_timeout", None)
        retry_writes = kwargs.pop("_retry_writes", None)
        with_etag = kwargs.pop("_with_etag", False)
        try:
            request = self.build_request(endpoint, *args, **kwargs)
        except ValidationError as err:
            raise _refused(err) from None
        if timeout is not None:
            request.timeout = timeout
        if retry_writes is not None:
            request.retry_writes = retry_writes
        response = self.make_request(endpoint, request)
        if response.status_code == 401 and self._credential is not None \
                and not self._auth_declared and self._credential.learn(
                    _challenged(response.headers.get("WWW-Authenticate",
                                                     ""))):
            # A server whose spec declares no scheme (an older version, or
            # the spec fetch itself) named the header its API key goes in.
            request = self.build_request(endpoint, *args, **kwargs)
            if timeout is not None:
                request.timeout = timeout
            if retry_writes is not None:
                request.retry_writes = retry_writes
            response = self.make_request(endpoint, request)
        result = self.parse_response(endpoint, response)
        if with_etag:
            return result, _response_tag(response)
        return result

    def build_request(self, endpoint: Endpoint, /, *args: Any,
                      **kwargs: Any) -> _ClientRequest:
        """The request for a call; validates the arguments first. (An
        override should keep ``endpoint`` positional-only, ``/``, so that
        a field may be called ``endpoint`` too.)"""
        request = endpoint.build_request(*args, **kwargs)
        if self.problem_details:
            request.headers["Accept"] = _PROBLEM_TYPE + ", " + _JSON_TYPE
        if self._credential is not None:
            self._credential.apply(request.headers)
        return request

    def make_request(self, endpoint: Endpoint,
                     request: _ClientRequest) -> _ClientResponse:
        """Send a request; subclasses provide the transport."""
        raise NotImplementedError

    def parse_response(self, endpoint: Endpoint,
                       response: _ClientResponse) -> Any:
        """Check the status, then decode and validate the answer."""
        return endpoint.parse_response(response)


def _no_check(patch: dict) -> None:
    """Clients leave patch checks to the server."""


class _ClientNames(Object):
    """``client.actions`` and ``client.models``: a misspelt name raises an
    AttributeError that lists the names there are."""

    __slots__ = ("_what",)

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError("No %s %r; %ss: %s" % (
            self._what, name, self._what,
            ", ".join(sorted(self.__dict__)) or "none"))


_READS = frozenset(("GET", "HEAD", "OPTIONS"))
_CLIENT_OPTIONS = frozenset((
    "timeout", "verify", "ssl_context", "proxy", "retries", "retry_backoff",
    "max_redirects", "problem_details", "type_getter", "max_response_size",
    "retry_writes", "expected_spec", "on_breaking", "auth"))
_REDIRECTS = frozenset((301, 302, 303, 307, 308))


class OutcomeUnknown(ConnectionError):
    """A write (POST, PUT, DELETE) lost its connection after the request
    may have reached the server: it may or may not have been applied, so
    it was not sent again. Check before repeating it, or allow repeats with
    ``retry_writes=True``."""


class ResponseTooLarge(ConnectionError):
    """An answer longer than the client's ``max_response_size``; the
    connection was dropped before the body was read."""


class _ConnectionPool:
    """APIClient's keep-alive connections: one pool per thread and per
    process, keyed by origin (scheme, host, port)."""

    _local: Any
    proxy: str | None
    ssl_context: Any
    verify: bool

    def _connection(self, origin: tuple) -> Any:
        local = self._local.__dict__
        pool = local.get("pool")
        if pool is None or local["pid"] != _getpid():
            # New thread, or a forked child: the parent's sockets are
            # never reused here (this closes only the child's copies).
            for stale in (pool or {}).values():
                stale.close()
            pool = local["pool"] = {}
            local["pid"] = _getpid()
        conn = pool.get(origin)
        if conn is not None:
            if conn.sock is not None and _dropped(conn.sock):
                conn.close()  # closed by the server while idle: reconnect
            return conn
        scheme, host, port = origin
        connect_host, connect_port = host, port
        if self.proxy:
            from urllib.parse import urlsplit
            proxy = urlsplit(self.proxy)
            connect_host, connect_port = proxy.hostname, proxy.port or 80
        https, plain, _ = _connection_classes()
        if scheme == "https":
            conn = https(connect_host, connect_port,
                         context=self._ssl_context())
        else:
            conn = plain(connect_host, connect_port)
        if self.proxy:
            conn.set_tunnel(host, port)
        pool[origin] = conn
        return conn

    def _drop(self, origin: tuple) -> None:
        conn = self._local.__dict__.get("pool", {}).pop(origin, None)
        if conn is not None:
            conn.close()

    def _ssl_context(self) -> Any:
        import ssl
        if self.ssl_context is not None:
            return self.ssl_context
        context = ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def close(self) -> None:
        """Close this thread's keep-alive connections."""
        for origin in list(self._local.__dict__.get("pool", {})):
            self._drop(origin)



class APIClient(_ConnectionPool, BaseAPIClient):
    """An HTTP client for a Cosmic API, built from its ``/spec.json``.

    ``APIClient("http://127.0.0.1:8000")`` (or ``cosmic.connect(url)``),
    or subclass it and set ``base_url``. Options, as class attributes or
    keyword arguments: ``timeout`` (30 s for the whole call: connect, send
    and receive), ``verify`` (TLS certificates, True), ``ssl_context``,
    ``proxy`` (None: proxies are not used), ``retries`` (2: reads, and
    writes that provably never reached the server), ``retry_writes``
    (False; True also repeats writes whose outcome is unknown),
    ``max_response_size`` (64 MiB; None for no limit), ``max_redirects``
    (5, same origin only), ``problem_details`` (ask for RFC 9457 errors),
    ``expected_spec`` (the spec the caller was written against: the live
    one is compared with it at connect time, and breaking changes raise
    ContractError, or warn when ``on_breaking="warn"``), ``auth`` (a
    credential, see ``BaseAPIClient``).
    """

    base_url: str | None = None
    timeout: float | None = 30.0
    verify = True
    ssl_context: Any = None
    proxy: str | None = None
    retries = 2
    retry_backoff = 0.1
    retry_writes = False
    max_response_size: int | None = 64 * 1024 * 1024
    max_redirects = 5

    def __init__(self, base_url: str | None = None, spec: dict | None = None,
                 **options: Any) -> None:
        for key, value in options.items():
            if key not in _CLIENT_OPTIONS:
                raise TypeError("Unknown APIClient option %r; options: %s"
                                % (key, ", ".join(sorted(_CLIENT_OPTIONS))))
            setattr(self, key, value)
        if base_url is not None:
            self.base_url = base_url
        if not self.base_url:
            raise SpecError("APIClient needs a base_url such as "
                            "'http://127.0.0.1:8000'")
        self.base_url, self._origin, self._prefix = _parse_base_url(
            self.base_url)
        self._local = _threading.local()
        try:
            super().__init__(spec)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_spec(cls, spec: dict, base_url: str, **options: Any) -> APIClient:
        """A client for a known spec (its JSON form); fetches nothing."""
        return cls(base_url=base_url, spec=spec, **options)

    def make_request(self, endpoint: Endpoint,
                     request: _ClientRequest) -> _ClientResponse:
        """Send over HTTP/1.1 keep-alive within the timeout; retry as the
        rules allow; follow same-origin redirects only."""
        method = request.method
        origin = self._origin
        target = self._prefix + request.url
        body = request.data.encode("utf-8") if request.data else None
        headers = dict(request.headers)
        timeout = request.timeout if request.timeout is not None \
            else self.timeout
        retry_writes = request.retry_writes
        if retry_writes is None:
            retry_writes = self.retry_writes
        deadline = None if timeout is None else _monotonic() + timeout
        for _ in range(self.max_redirects + 1):
            status, pairs, content = self._send(
                origin, method, target, body, headers, deadline, timeout,
                retry_writes)
            if status not in _REDIRECTS:
                break
            location = _ResponseHeaders(pairs).get("location")
            if not location:
                break
            from urllib.parse import urlsplit, urljoin
            url = urljoin(_origin_url(origin) + target, location)
            try:
                parts = urlsplit(url)
                other = _origin(parts)
            except ValueError:
                break
            if parts.scheme not in ("http", "https") or other != origin:
                break  # never carry credentials to another origin
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            if status == 303 or status in (301, 302) and method == "POST":
                method, body = "GET", None
                headers.pop("Content-Type", None)
        return _ClientResponse(status, pairs, content)

    def _send(self, origin: tuple, method: str, target: str,
              body: bytes | None, headers: dict, deadline: float | None,
              timeout: Any, retry_writes: bool) -> tuple:
        # One exchange, repeated only when it is safe: a read, a request
        # that never left (connect failed), or retry_writes.
        import http.client
        import socket
        for attempt in range(1 + max(self.retries, 0)):
            conn = self._connection(origin)
            sent = False
            try:
                _arm(conn, deadline)
                if conn.sock is None:
                    conn.connect()
                sent = True
                conn.request(method, target, body, headers)
                res = conn.getresponse()
                content = self._read_body(res, method, target)
            except ResponseTooLarge:
                self._drop(origin)
                raise
            except socket.timeout as exc:
                self._drop(origin)
                message = "%s %s: no complete answer within %s s" % (
                    method, target, timeout)
                if sent and method not in _READS:
                    raise _connection_classes()[2](  # socket.timeout too
                        message + "; the server may have acted on it") \
                        from exc
                raise socket.timeout(message) from exc
            except (ConnectionError, http.client.BadStatusLine,
                    http.client.IncompleteRead) as exc:
                self._drop(origin)
                if sent and method not in _READS and not retry_writes:
                    raise OutcomeUnknown(
                        "%s %s: the connection was lost after the request "
                        "was sent (%s: %s); the server may or may not have "
                        "acted on it, so it was not sent again"
                        % (method, target, type(exc).__name__, exc)) from exc
                pause = self.retry_backoff * (2 ** attempt)
                if attempt >= self.retries or deadline is not None and \
                        _monotonic() + pause >= deadline:
                    raise ConnectionError("%s %s: %s" % (
                        method, target, exc)) from exc
                import time
                time.sleep(pause)
                continue
            except BaseException:
                self._drop(origin)
                raise
            if res.will_close:
                self._drop(origin)
            return res.status, res.getheaders(), content
        raise AssertionError("unreachable")

    def _read_body(self, res: Any, method: str, target: str) -> bytes:
        limit = self.max_response_size
        if limit is None:
            return res.read()
        if res.length is not None:
            if res.length > limit:
                raise ResponseTooLarge(
                    "%s %s: the answer declares %d bytes, more than "
                    "max_response_size (%d); the connection was dropped"
                    % (method, target, res.length, limit))
            return res.read()
        chunks: list = []
        total = 0
        while True:
            chunk = res.read(65536)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > limit:
                raise ResponseTooLarge(
                    "%s %s: the answer exceeds max_response_size (%d "
                    "bytes); the connection was dropped"
                    % (method, target, limit))
            chunks.append(chunk)


def _parse_base_url(url: str) -> tuple:
    """``(base_url, origin, path prefix)``, or SpecError for a URL that
    cannot serve as a base (bad port, query, fragment, spaces...)."""
    from urllib.parse import urlsplit
    if type(url) is not str:
        raise SpecError("base_url must be a string: %s" % _short_repr(url))
    try:
        parts = urlsplit(url)
        origin = _origin(parts)
    except ValueError as err:
        raise SpecError("Invalid base_url %s: %s"
                        % (_short_repr(url), err)) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise SpecError("base_url must be an http:// or https:// URL: %s"
                        % _short_repr(url))
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise SpecError("base_url cannot have a query or a fragment: %s"
                        % _short_repr(url))
    if _re.search(r"[\x00-\x20\x7f]", url):
        raise SpecError("base_url cannot contain spaces or control "
                        "characters: %s" % _short_repr(url))
    if parts.username is not None or parts.password is not None:
        raise SpecError("base_url cannot carry credentials (user:password@):"
                        " send them in a header")
    return url.rstrip("/"), origin, parts.path.rstrip("/")


def _origin(parts: Any) -> tuple:
    scheme = parts.scheme.lower()
    return (scheme, parts.hostname,
            parts.port or (443 if scheme == "https" else 80))


def _origin_url(origin: tuple) -> str:
    scheme, host, port = origin
    if ":" in host:
        host = "[%s]" % host  # IPv6
    if port == (443 if scheme == "https" else 80):
        return "%s://%s" % (scheme, host)
    return "%s://%s:%d" % (scheme, host, port)


def _arm(conn: Any, deadline: float | None) -> None:
    """Bound the next exchange on ``conn`` by ``deadline`` (monotonic)."""
    if deadline is None:
        conn.timeout = None
    else:
        left = deadline - _monotonic()
        if left <= 0:
            import socket
            raise socket.timeout("timed out")
        conn.timeout = left
    conn.cosmic_deadline[0] = deadline
    if conn.sock is not None:
        conn.sock.settimeout(conn.timeout)


@_functools.cache
def _connection_classes() -> tuple:
    """http.client connections whose answers are read within the call's
    deadline: each read waits only for the time left, so a server that
    drips bytes cannot stretch a call past its timeout."""
    import http.client
    import io
    import socket

    class DeadlineIO(socket.SocketIO):
        def __init__(self, sock: Any, deadline: list) -> None:
            super().__init__(sock, "rb")
            self._deadline = deadline
            self._timed = sock

        def readinto(self, b: Any) -> Any:
            deadline = self._deadline[0]
            if deadline is not None:
                left = deadline - _monotonic()
                if left <= 0:
                    raise socket.timeout("timed out")
                self._timed.settimeout(left)
            return super().readinto(b)

    class Maker:
        __slots__ = ("deadline", "sock")

        def __init__(self, sock: Any, deadline: list) -> None:
            self.sock = sock
            self.deadline = deadline

        def makefile(self, mode: str) -> Any:
            self.sock._io_refs += 1  # as socket.makefile does
            return io.BufferedReader(DeadlineIO(self.sock, self.deadline))

    def with_deadline(base: type) -> type:
        class Connection(base):  # type: ignore[valid-type, misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                deadline = self.cosmic_deadline = [None]

                def response(sock, debuglevel=0, method=None, url=None):
                    return http.client.HTTPResponse(
                        Maker(sock, deadline), debuglevel, method, url)

                self.response_class = response

        return Connection

    class TimedOutWrite(OutcomeUnknown, socket.timeout):
        """A write that timed out after it was sent: both a timeout and
        an unknown outcome."""

    return (with_deadline(http.client.HTTPSConnection),
            with_deadline(http.client.HTTPConnection), TimedOutWrite)


def _dropped(sock: Any) -> bool:
    """Whether an idle keep-alive socket was closed by the server."""
    import select
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def connect(base_url: str, **options: Any) -> APIClient:
    """A client for the Cosmic API at ``base_url``: ``connect(url).actions``."""
    return APIClient(base_url=base_url, **options)


class WsgiAPIClient(BaseAPIClient):
    """A client that calls a WSGI app in-process, with real PEP 3333
    environs and no sockets; the same interface as APIClient.

    Set ``wsgi_app`` (class attribute or argument), or use
    ``WsgiAPIClient.for_api(api)``. ``server_cosmos``, when set, is swapped
    into ``cosmos`` while the app runs.
    """

    wsgi_app: Any = None
    server_cosmos: dict | None = None

    def __init__(self, wsgi_app: Callable | None = None,
                 spec: dict | None = None, auth: Any = None) -> None:
        if auth is not None:
            self.auth = auth
        if wsgi_app is None:
            for klass in type(self).__mro__:
                if "wsgi_app" in klass.__dict__:
                    wsgi_app = klass.__dict__["wsgi_app"]
                    break
            if isinstance(wsgi_app, staticmethod):
                wsgi_app = wsgi_app.__func__
        if wsgi_app is None:
            raise SpecError("WsgiAPIClient needs a wsgi_app")
        self._app = wsgi_app
        super().__init__(spec)

    @classmethod
    def for_api(cls, api: API, server: type | None = None,
                auth: Any = None, **options: Any) -> WsgiAPIClient:
        """An in-process client for an API, served by ``Server`` (or a
        subclass) with ``options``; ``auth`` as for ``BaseAPIClient``."""
        app = (server or Server)(api, **options).wsgi_app
        if auth is None:
            return cls(app)
        # The API is at hand: send the credential as it declares, from the
        # first request on.
        credential = _Credential(auth)
        credential.learn(_spec_schemes(api.spec))
        return cls(app, auth=credential)

    def make_request(self, endpoint: Endpoint,
                     request: _ClientRequest) -> _ClientResponse:
        """Call the app with a PEP 3333 environ built from the request."""
        environ = _make_environ(request.method, request.url,
                                request.data.encode("utf-8"), request.headers)
        if self.server_cosmos is not None:
            # cosmos is one global: overlapping swaps must not interleave.
            with _SWAP_LOCK, cosmos.swap(self.server_cosmos):
                return _call_app(self._app, environ)
        return _call_app(self._app, environ)


_SWAP_LOCK = _threading.RLock()


def _make_environ(method: str, url: str, body: bytes = b"",
                  headers: dict | None = None) -> dict:
    """A complete PEP 3333 environ for one request."""
    import io
    from urllib.parse import unquote_to_bytes
    path, _, query = url.partition("?")
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "REQUEST_URI": url,
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": _sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key == "CONTENT_LENGTH":
            environ["CONTENT_LENGTH"] = value
        else:
            environ["HTTP_" + key] = value
    return environ


def _call_app(app: Callable, environ: dict) -> _ClientResponse:
    captured: list = []

    def start_response(status, headers, exc_info=None):
        if exc_info is not None and captured:
            raise exc_info[1].with_traceback(exc_info[2])
        captured[:] = [status, headers]
        return lambda data: chunks.append(data)

    chunks: list = []
    result = app(environ, start_response)
    try:
        for chunk in result:
            chunks.append(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = captured
    return _ClientResponse(int(status.split(" ", 1)[0]), headers,
                           b"".join(chunks))


class ClientLoggingMixin:
    """Put before a client class in the bases: ``self.log`` then lists a
    ``(request_dict, response_dict)`` pair for every request made."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.log: list = []
        super().__init__(*args, **kwargs)

    def make_request(self, endpoint: Endpoint,
                     request: _ClientRequest) -> _ClientResponse:
        # A mixin: the client class after it in the bases sends.
        response = super().make_request(  # type: ignore[misc]
            endpoint, request)
        credential = getattr(self, "_credential", None)
        hidden = credential.names() if credential else ("authorization",)
        headers = [(k, "[redacted]" if k.lower() in hidden else v)
                   for k, v in request.headers.items()]
        self.log.append((
            {"method": request.method, "url": request.url,
             "data": request.data, "headers": headers},
            {"status_code": response.status_code, "data": response.text,
             "headers": sorted((k.title(), v)
                               for k, v in response.headers.items())},
        ))
        return response


# -- OpenAPI ------------------------------------------------------------------

# openapi(api): an OpenAPI 3.1 document made from the spec.

_OA_REF = "#/components/schemas/"


class _OAFixed(_Type):
    """A stand-in type whose JSON Schema is already known.

    openapi() rebuilds containers (Struct, Array, Map, OrderedMap) around
    stand-ins, so that each container's own json_schema() lays it out while
    this API's models inside become ``$ref`` s to components.
    """

    def __init__(self, schema: dict) -> None:
        self._schema = schema

    @staticmethod
    def _load(datum):
        return datum

    _dump = _load

    def json_schema(self):
        return self._schema


def _oa_schema(schema: Any, refs: dict) -> dict:
    """JSON Schema 2020-12 of a type; this API's models as ``$ref`` s.

    ``refs`` maps a model's full name to its (Representation, Patch)
    component names.
    """
    if isinstance(schema, _ModelBody):
        names = refs.get(schema.param.full_name)
        if names is not None:
            return {"$ref": _OA_REF + names[isinstance(schema, Patch)]}
        try:
            return schema.json_schema()
        except (RuntimeError, SpecError, RecursionError):
            # A model of another API that this process does not know.
            return {"type": "object"}
    if isinstance(schema, OrderedMap):
        inner = _OAFixed(_oa_schema(schema.param, refs))
        return OrderedMap(inner).json_schema()
    if isinstance(schema, (Array, Map)):
        rules = {_RULE_JSON[k]: v for k, v in schema._rules.items()}
        return type(schema)(_OAFixed(_oa_schema(schema.param, refs)),
                            **rules).json_schema()
    if isinstance(schema, Struct):
        return Struct(_oa_fields(schema.param, refs)).json_schema()
    return schema.json_schema()


def _oa_fields(fields: dict, refs: dict, all_optional: bool = False) -> list:
    """Field pairs whose schemas are stand-ins for their JSON Schemas."""
    return [(name, _field(_OAFixed(_oa_schema(f["schema"], refs)),
                          bool(f["required"]) and not all_optional,
                          f.get("doc")))
            for name, f in fields.items()]


def _oa_href(schema: Any) -> Struct:
    return Struct([required("href", schema)])


def _oa_body(full_name: str, model: dict, refs: dict, patch: bool,
             requires: Any = ()) -> dict:
    """A model's Representation (or Patch) as JSON Schema
    (docs/protocol.md#representation,
    docs/protocol.md#patch).

    ``_links`` stays optional even when a link is required: Cosmic accepts
    a representation without ``_links`` (docs/protocol.md#representation).
    A create body (a patch) marks the fields and links of ``requires``
    required.
    """
    links = [optional("self", _oa_href(Link(Model(full_name))),
                      "This object's URL")]
    for name, link in model["links"].items():
        links.append((name, _field(
            _oa_href(Link(_as_model(link["model"]))),
            (bool(link["required"]) and not patch) or name in requires,
            link.get("doc"))))
    fields = [(_field_pair("_links", Struct(links),
                           any(n in model["links"] for n in requires),
                           'HAL links, each {"href": "/<Model>/<id>"}'))]
    fields += [(n, dict(f, required=f["required"] or n in requires))
               for n, f in _oa_fields(model["properties"], refs,
                                      all_optional=patch)]
    return Struct(fields).json_schema()


def _field_pair(name: str, schema: Any, is_required: bool, doc: str) -> tuple:
    return (name, _field(schema, is_required, doc))


def _oa_list(name: str, model: dict, refs: dict) -> dict:
    """The get_list response (docs/protocol.md#list-body) as JSON Schema."""
    href = {"type": "string",
            "pattern": "^/%s(\\?[\\s\\S]*)?$" % _re.escape(name)}
    items = {"type": "array", "items": {"$ref": _OA_REF + name}}
    fields = [
        required("_links", Struct([required("self", _oa_href(
            _OAFixed(href)))])),
        required("_embedded", Struct([required(name, _OAFixed(items))])),
    ]
    fields += _oa_fields(model["list_metadata"], refs)
    return Struct(fields).json_schema()


def _oa_error_schema() -> dict:
    return {"type": "object", "properties": {"error": {"type": "string"}},
            "required": ["error"]}


def _oa_problem_schema() -> dict:
    """RFC 9457 problem details, as the server sends them on request."""
    return {
        "type": "object",
        "properties": {
            "type": {"type": "string", "format": "uri-reference"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 100, "maximum": 599},
            "detail": {"type": "string"},
            "instance": {"type": "string", "format": "uri-reference"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "detail": {"type": "string"},
                        "pointer": {"type": "string",
                                    "description": "RFC 6901 JSON Pointer"},
                    },
                    "required": ["detail", "pointer"],
                },
            },
        },
        "required": ["type", "title", "status", "detail"],
    }


_OA_ERRORS = {
    "400": "Bad request: Content-Type, charset, UTF-8, JSON, the body's or "
           "the query's schema, or a rule of the API refused it",
    "404": "No object with this id",
    "412": "Precondition Failed: the object changed since the ETag in "
           "If-Match (or If-None-Match names its current ETag)",
    "413": "Request body larger than the server accepts",
    "500": "Unexpected error in the server; the body tells nothing more",
    "default": "Another error: raised by the API's code or a server hook "
               "(HTTPError), or a limit of the server (414, 411, 501)",
}


_OA_TAGS = {"actions": "Actions: POST /actions/<name> calls a function"}

_OA_AUTH_ERRORS = {
    "401": "No credential, or one the API refused; WWW-Authenticate names "
           "the schemes",
    "403": "The credential is valid but lacks a scope this call needs",
}
_OA_SCHEME_NAMES = {"bearer": "bearerAuth", "api_key": "apiKeyAuth",
                    "basic": "basicAuth"}


def _oa_scheme(kind: str, header: str) -> dict:
    if kind == "api_key":
        return {"type": "apiKey", "in": "header", "name": header}
    return {"type": "http", "scheme": kind}


def _oa_security(api: Any, ops: list, shared: dict, doc: dict) -> None:
    """securitySchemes, the default requirement and each operation's own,
    with its 401 and 403 answers (a spec that declares schemes only: the
    same from an API and from its fetched spec)."""
    schemes = _spec_schemes(api.spec)
    if not schemes:
        return
    names = [_OA_SCHEME_NAMES[kind] for kind, _ in schemes]

    def requirement(need):
        if need is None:
            return []
        return [{name: list(need)} for name in names]

    needs = _spec_needs(api.spec)
    for op, _, _, _, key in ops:
        need = needs[key]
        op["security"] = requirement(need)
        if need is None:
            continue
        codes = ("401", "403") if need else ("401",)
        responses = {}
        for code, response in op["responses"].items():
            if code == "default":
                for extra in codes:
                    responses[extra] = {
                        "description": _OA_AUTH_ERRORS[extra],
                        "content": response["content"]}
                responses["401"]["headers"] = {"WWW-Authenticate": {
                    "description": "The declared schemes' challenges "
                                   "(RFC 9110 section 11.6.1)",
                    "required": True, "schema": {"type": "string"}}}
            responses[code] = response
        op["responses"] = responses
    doc["security"] = requirement(_requirement_of(
        api.spec["auth"]["requires"]))
    doc["components"]["securitySchemes"] = {
        name: _oa_scheme(*scheme) for name, scheme in zip(names, schemes)}


def _oa_responses(ok: dict, errors: tuple, shared: dict) -> dict:
    """``ok`` plus the error responses, in JSON or problem+json."""
    responses = dict(ok)
    for code in errors + ("default",):
        responses[code] = {"description": _OA_ERRORS[code], "content": {
            _JSON_TYPE: {"schema": {"$ref": _OA_REF + shared["Error"]}},
            _PROBLEM_TYPE: {"schema": {"$ref": _OA_REF + shared["Problem"]}},
        }}
    return responses


def _oa_json(schema: dict) -> dict:
    return {_JSON_TYPE: {"schema": schema}}


def _oa_object(ref: str, description: str,
               headers: dict | None = None) -> dict:
    """A response holding one object's representation."""
    response: dict = {"description": description}
    if headers:
        response["headers"] = headers
    response["content"] = _oa_json({"$ref": _OA_REF + ref})
    return response


def _oa_body_param(ref: str, description: str) -> dict:
    return {"description": description, "required": True,
            "content": _oa_json({"$ref": _OA_REF + ref})}


_OA_PLAIN_QUERY = frozenset(("Integer", "Float", "Boolean"))


def _oa_query_param(name: str, field: dict, refs: dict) -> dict:
    """A query field: string-based types as raw text, numbers and booleans
    as plain form values (their JSON text), other types as JSON."""
    param = {"name": name, "in": "query", "required": bool(field["required"])}
    if field.get("doc"):
        param["description"] = field["doc"]
    schema = _oa_schema(field["schema"], refs)
    if is_string_type(field["schema"]) or \
            field["schema"].type_name in _OA_PLAIN_QUERY:
        param["schema"] = schema
    else:
        # Every other type travels JSON-encoded
        # (docs/protocol.md#query-strings).
        param["content"] = _oa_json(schema)
    return param


_OA_ETAG = {"ETag": {
    "description": "The object's current entity tag (RFC 9110 section "
                   "8.8.3), for If-Match and If-None-Match",
    "schema": {"type": "string"}}}


def _oa_condition(header: str, description: str) -> dict:
    return {"name": header, "in": "header", "required": False,
            "description": description, "schema": {"type": "string"}}


_OA_IF_MATCH = _oa_condition(
    "If-Match", "Act only if the object's ETag is one of these (or * for "
    "any): else 412, and nothing changes")
_OA_IF_NONE_MATCH = _oa_condition(
    "If-None-Match", "Answer 304 (GET) or 412 (PUT, DELETE) if the "
    "object's ETag is one of these (or * for any)")


def _oa_model_paths(name: str, model: dict, names: tuple, shared: dict,
                    refs: dict, ops: list) -> dict:
    """The path items of one model's enabled methods
    (docs/protocol.md#endpoints).

    ``names``: the model's (Representation, Patch, List) components.
    """
    rep, patch, listing = names[:3]
    enabled = model["methods"]
    collection, item = {}, {}
    if enabled.get("get_list"):
        collection["get"] = {
            "summary": "List %s objects" % name,
            "parameters": [_oa_query_param(n, f, refs)
                           for n, f in model["query_fields"].items()],
            "responses": _oa_responses({"200": {
                "description": "The objects, in HAL form",
                "content": _oa_json({"$ref": _OA_REF + listing}),
            }}, ("400", "413", "500"), shared),
        }
        if not collection["get"]["parameters"]:
            del collection["get"]["parameters"]
    if enabled.get("create"):
        requires = model.get("create_requires")
        collection["post"] = {
            "summary": "Create %s" % _with_article(name),
            "description": (
                "The fields and links marked required must be given; the "
                "API's own rules may refuse the object (400)." if requires
                else "Every field of the patch is optional here; the "
                     "API's own rules may refuse it (400)."),
            "requestBody": _oa_body_param(names[3] if requires else patch,
                                          "The new object's fields"),
            "responses": _oa_responses({"201": _oa_object(
                rep, "Created", dict({"Location": {
                    "description": "The new object's path, /%s/<id> with "
                                   "the id percent-encoded" % name,
                    "required": True, "schema": {"type": "string"}}},
                    **_OA_ETAG),
            )}, ("400", "413", "500"), shared),
        }
    if enabled.get("get_by_id"):
        item["get"] = {
            "summary": "Get %s" % _with_article(name),
            "parameters": [_OA_IF_NONE_MATCH, _OA_IF_MATCH],
            "responses": _oa_responses(
                {"200": _oa_object(rep, "The object", _OA_ETAG),
                 "304": {"description": "Not Modified: If-None-Match "
                                        "names the current ETag; no body",
                         "headers": _OA_ETAG}},
                ("400", "404", "412", "413", "500"), shared),
        }
    if enabled.get("update"):
        item["put"] = {
            "summary": "Update %s" % _with_article(name),
            "description": "Only the fields in the patch change; the API's "
                           "own rules may refuse it (400).",
            "parameters": [_OA_IF_MATCH, _OA_IF_NONE_MATCH],
            "requestBody": _oa_body_param(patch, "The fields to change"),
            "responses": _oa_responses(
                {"200": _oa_object(rep, "The object after the update",
                                   _OA_ETAG)},
                ("400", "404", "412", "413", "500"), shared),
        }
    if enabled.get("delete"):
        item["delete"] = {
            "summary": "Delete %s" % _with_article(name),
            "parameters": [_OA_IF_MATCH, _OA_IF_NONE_MATCH],
            "responses": _oa_responses({"204": {"description": "Deleted"}},
                                       ("400", "404", "412", "413", "500"),
                                       shared),
        }
    paths: dict = {}
    method_names = {"get": "get_list", "post": "create"}
    if collection:
        for verb, op in collection.items():
            ops.append((op, "%s_%s" % (name, method_names[verb]),
                        "%s.%s" % (name, method_names[verb]), name,
                        (name, method_names[verb])))
        paths["/" + name] = collection
    method_names = {"get": "get_by_id", "put": "update", "delete": "delete"}
    if item:
        for verb, op in item.items():
            ops.append((op, "%s_%s" % (name, method_names[verb]),
                        "%s.%s" % (name, method_names[verb]), name,
                        (name, method_names[verb])))
        paths["/%s/{id}" % name] = dict({"parameters": [{
            "name": "id", "in": "path", "required": True,
            "description": "The object's id",
            # A segment of the decoded path: %2F would add a segment.
            "schema": {"type": "string", "minLength": 1,
                       "pattern": "^[^/]+$"},
        }]}, **item)
    return paths


def openapi(api: BaseAPI, servers: Iterable | None = None) -> dict:
    """The OpenAPI 3.1.0 document of an API, as a JSON-ready dict.

    Works from ``api.spec`` alone, so a client's rebuilt spec will do.
    ``servers`` is a list of base URLs. Schemas are JSON Schema 2020-12,
    from the types' ``json_schema()``; each model has the components
    ``<Model>`` (representation), ``<Model>Patch`` and, with get_list,
    ``<Model>List``; errors are ``Error`` or, when the request accepts
    ``application/problem+json``, ``Problem`` (RFC 9457). A component
    name taken by a model becomes ``<Model>.Patch``, ``<Model>.List``,
    ``cosmic.Error``, ``cosmic.Problem``. Operation ids are action names,
    ``<Model>_<method>``, ``spec`` and ``openapi``; ids used twice fall
    back to ``actions.<name>``, ``<Model>.<method>``, ``cosmic.<id>``.

    Cosmic rules that OpenAPI and JSON Schema cannot state exactly (the
    schema given is the closest one):

    * OrderedMap: ``order`` must list exactly the keys of ``map``; the
      schema asks only for unique strings.
    * DateTime: the pattern does not check the calendar (``2014-02-30``
      passes). There is no ``format: date-time``: RFC 3339 refuses the
      naive times, missing seconds and ``+05`` offsets Cosmic allows.
    * Link: the href pattern ``/<Model>/[^/]+$`` checks the last two
      segments as Cosmic does, but a JSON Schema ``$`` also matches
      before a final newline in some validators; hrefs are relative to
      the server's root.
    * Representation: ``_links`` is optional even when a link is required
      (docs/protocol.md#representation), so the document says so too.
    * Constraints (``minimum``, ``pattern``, ``enum``, ...) are in the
      schemas; a ``message=`` is not. Rules in model code
      (``validate_patch``) and handler errors (``HTTPError`` with any
      status) are not in the spec: they appear only as 400 and
      ``default`` responses.
    * A create is a patch: only the fields and links named by the model's
      ``create_requires`` are required in its body (``<Model>Create``).
    * Query fields: a repeated parameter is refused (400); a request body
      on get_by_id, delete, get_list or an action without ``accepts`` is
      refused (400). OpenAPI cannot forbid either.
    * A Representation or Patch of a model of another API that this
      process does not know is described as ``{"type": "object"}``.
    """
    spec = api.spec
    api_name = spec["name"]
    models = spec["models"]
    actions = spec["actions"]
    if isinstance(servers, str):
        servers = [servers]

    def component(preferred: str, fallback: str) -> str:
        return fallback if preferred in models else preferred

    shared = {"Error": component("Error", "cosmic.Error"),
              "Problem": component("Problem", "cosmic.Problem")}
    names = {}
    refs = {}
    for name in models:
        names[name] = (name, component(name + "Patch", name + ".Patch"),
                       component(name + "List", name + ".List"),
                       component(name + "Create", name + ".Create"))
        refs["%s.%s" % (api_name, name)] = names[name][:2]

    schemas = {}
    for name, model in models.items():
        full_name = "%s.%s" % (api_name, name)
        schemas[name] = _oa_body(full_name, model, refs, patch=False)
        schemas[names[name][1]] = _oa_body(full_name, model, refs, patch=True)
        if model["methods"].get("get_list"):
            schemas[names[name][2]] = _oa_list(name, model, refs)
        if model["methods"].get("create") and model.get("create_requires"):
            schemas[names[name][3]] = _oa_body(
                full_name, model, refs, patch=True,
                requires=model["create_requires"])
    schemas[shared["Error"]] = _oa_error_schema()
    schemas[shared["Problem"]] = _oa_problem_schema()

    # (operation, preferred id, fallback id, tag)
    ops: list = []
    paths: dict = {}
    for name, action in actions.items():
        op: dict = {}
        doc = action.get("doc")
        if doc and doc.strip():
            op["summary"] = doc.strip().splitlines()[0]
            op["description"] = doc
        accepts, returns = action.get("accepts"), action.get("returns")
        if accepts is not None:
            op["requestBody"] = {"required": True, "content": _oa_json(
                _oa_schema(accepts, refs))}
        if returns is not None:
            ok = {"200": {"description": "The action's result",
                          "content": _oa_json(_oa_schema(returns, refs))}}
        else:
            ok = {"204": {"description": "Done; the action returns nothing"}}
        op["responses"] = _oa_responses(ok, ("400", "413", "500"), shared)
        ops.append((op, name, "actions." + name, "actions", name))
        paths["/actions/" + name] = {"post": op}
    for name, model in models.items():
        paths.update(_oa_model_paths(name, model, names[name], shared, refs,
                                     ops))
    for route, op_id, summary, schema in (
            ("/spec.json", "spec", "The API's native Cosmic spec",
             APISpec.json_schema()),
            ("/openapi.json", "openapi", "This OpenAPI document",
             {"type": "object"})):
        op = {"summary": summary, "responses": _oa_responses({"200": {
            "description": summary, "content": _oa_json(schema)}},
            ("500",), shared)}
        ops.append((op, op_id, "cosmic." + op_id, None, route))
        paths[route] = {"get": op}

    counts: dict = {}
    for _op, preferred, _fallback, _tag, _key in ops:
        counts[preferred] = counts.get(preferred, 0) + 1
    tags: list = []
    for op, preferred, fallback, tag, _key in ops:
        op_id = preferred if counts[preferred] == 1 else fallback
        # operationId and tags first, for readers of the JSON.
        head = {"operationId": op_id}
        if tag is not None:
            head["tags"] = [tag]
            if tag not in tags:
                tags.append(tag)
        rest = dict(op)
        op.clear()
        op.update(head)
        op.update(rest)

    description = ("The %s API, served by cosmic.py. Its native description "
                   "is at /spec.json." % api_name)
    homepage = spec.get("homepage")
    if homepage:
        description += "\n\nHomepage: %s" % homepage
    doc = {"openapi": "3.1.0",
           "info": {"title": api_name, "version": __version__,
                    "description": description}}
    if servers is not None:
        doc["servers"] = [{"url": url} for url in servers]
    if tags:
        doc["tags"] = [{"name": tag, "description": _OA_TAGS.get(
            tag, "The %s model: /%s and /%s/{id}" % (tag, tag, tag))}
            for tag in tags]
    doc["paths"] = paths
    doc["components"] = {"schemas": schemas}
    _oa_security(api, ops, shared, doc)
    return doc


# -- Docs page ----------------------------------------------------------------

# docs_html(api): one self-contained HTML page, renderers first, then its CSS
# and JavaScript (served under a strict Content-Security-Policy).

def _docs_hash(text: str) -> str:
    import hashlib
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + _base64.b64encode(digest).decode("ascii") + "'"


@_functools.cache
def _docs_csp() -> str:
    """The page's Content-Security-Policy: its one style and one script are
    allowed by hash, nothing else (computed on first use, not at import)."""
    return ("default-src 'none'; "
            "style-src " + _docs_hash(_DOCS_CSS) + "; "
            "script-src " + _docs_hash(_DOCS_JS) + "; "
            "connect-src 'self'; "
            "img-src 'none'; "
            "base-uri 'none'; "
            "form-action 'none'; "
            "frame-ancestors 'none'")

# How deep schemas are followed before the renderers give up (guards against
# pathological specs; real schemas are never this deep).
_DOCS_MAX_DEPTH = 40

# (method key, HTTP verb, takes an id, takes a body, description)
_DOCS_METHODS = (
    ("get_by_id", "GET", True, False,
     "Fetch one {m} by id: 200 with its representation, 404 if there is none."),
    ("get_list", "GET", False, False,
     "List {m} objects: 200 with the representations in _embedded.{m}."),
    ("create", "POST", False, True,
     "Create {a} from a patch: 201 with a Location header and the "
     "representation."),
    ("update", "PUT", True, True,
     "Update {a} with a patch (every field optional): 200 with the new "
     "representation, 404 if there is none."),
    ("delete", "DELETE", True, False,
     "Delete {a}: 204 with an empty body, 404 if there is none."),
)

_DOCS_EXAMPLES = {
    "Integer": 1,
    "Float": 1.5,
    "Boolean": True,
    "String": "string",
    "Binary": "aGVsbG8=",
    "DateTime": "2014-01-01T00:00:00",
    "JSON": {"any": "JSON value"},
    "Schema": {"type": "String"},
    "UUID": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    "Decimal": "12.50",
}

_DOCS_NAMES = {"cosmic.Model": "Model name", "cosmic.APISpec": "API spec"}

_DOCS_MODEL_WORDS = {
    "cosmic.Link": "Link to",
    "cosmic.Representation": "Representation of",
    "cosmic.Patch": "Patch of",
}

# Types whose query-string form is the raw JSON string
# (docs/protocol.md#query-strings)
_DOCS_RAW_QUERY = ("String", "DateTime", "cosmic.Model", "cosmic.Link",
                   "UUID", "Decimal")


def _docs_esc(value: object) -> str:
    from html import escape
    return escape(str(value), quote=True)


def _docs_entries(ordered_map: object) -> list:
    """(key, value) pairs of an OrderedMap JSON form, tolerating junk."""
    if not isinstance(ordered_map, dict):
        return []
    mapping = ordered_map.get("map")
    order = ordered_map.get("order")
    if not isinstance(mapping, dict):
        return []
    if not isinstance(order, list):
        order = list(mapping)
    return [(k, mapping[k]) for k in order if isinstance(k, str) and k in mapping]


def _docs_dict_entries(ordered_map: object) -> list:
    """Like _docs_entries, keeping only entries that are objects."""
    return [(k, v) for k, v in _docs_entries(ordered_map) if isinstance(v, dict)]


def _docs_model_short(full_name: object) -> str:
    """'shop.Item' -> 'Item' (split at the first dot, as Model does)."""
    full_name = str(full_name)
    return full_name.split(".", 1)[1] if "." in full_name else full_name


def _docs_model_entry(full_name: object, spec_json: object):
    """This spec's model entry for 'api.Model', or None."""
    if not isinstance(spec_json, dict):
        return None
    api_name, dot, model_name = str(full_name).partition(".")
    if not dot or api_name != spec_json.get("name"):
        return None
    return dict(_docs_dict_entries(spec_json.get("models"))).get(model_name)


def _with_article(name: str) -> str:
    """``a City``, ``an Address``: "an" before a vowel letter."""
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


_DOCS_RULE_WORDS = (("minimum", "\u2265 %s"), ("exclusiveMinimum", "> %s"),
                    ("maximum", "\u2264 %s"), ("exclusiveMaximum", "< %s"),
                    ("minLength", "length \u2265 %s"),
                    ("maxLength", "length \u2264 %s"),
                    ("minItems", "items \u2265 %s"),
                    ("maxItems", "items \u2264 %s"),
                    ("pattern", "pattern /%s/"), ("enum", "one of %s"))


def _docs_rules(schema: dict) -> str:
    """The constraints of a Schema JSON value as text: ' [\u2265 1, ...]'."""
    words = []
    for key, text in _DOCS_RULE_WORDS:
        if key in schema:
            value = schema[key]
            if key == "enum" and isinstance(value, list):
                value = ", ".join(_json.dumps(v, ensure_ascii=False)
                                  for v in value)
            words.append(text % (value,))
    return " [%s]" % ", ".join(words) if words else ""


def _docs_type_text(schema: object, _depth: int = 0) -> str:
    """One-line readable description of a Schema JSON value, e.g.
    'Struct {a: Integer (required), b: Array of String (optional)}'."""
    if not isinstance(schema, dict) or not isinstance(schema.get("type"), str):
        return "unknown"
    if _depth > _DOCS_MAX_DEPTH:
        return "\u2026"
    kind: str = schema["type"]
    param = schema.get("param")
    rules = _docs_rules(schema)
    if kind in ("Array", "Map", "OrderedMap"):
        return "%s%s of %s" % (kind, rules, _docs_type_text(param, _depth + 1))
    if kind == "Struct":
        return "Struct {%s}" % ", ".join(
            "%s: %s (%s)" % (name, _docs_type_text(entry.get("schema"), _depth + 1),
                             "required" if entry.get("required") else "optional")
            for name, entry in _docs_dict_entries(param))
    if kind in _DOCS_MODEL_WORDS:
        return "%s %s" % (_DOCS_MODEL_WORDS[kind], param)
    return str(_DOCS_NAMES.get(kind, kind)) + rules


def _docs_model_ref(full_name: object, spec_json: object) -> str:
    """Escaped model name, linked to its section when it belongs to this API."""
    text = _docs_esc(full_name)
    if _docs_model_entry(full_name, spec_json) is None:
        return text
    return '<a href="#model-%s">%s</a>' % (
        _docs_esc(_docs_model_short(full_name)), text)


def _docs_fields_html(entries: list, spec_json: object, depth: int = 0,
                      links: bool = False) -> str:
    """<ul> of field (or link) entries; '' when there are none."""
    if not entries:
        return ""
    items = []
    for name, entry in entries:
        if links:
            what = "link to " + _docs_model_ref(entry.get("model"), spec_json)
        else:
            what = _docs_type_html(entry.get("schema"), spec_json, depth + 1)
        doc = entry.get("doc")
        doc = (' <span class="mu doc">\u2014 %s</span>' % _docs_esc(doc)
               if isinstance(doc, str) and doc else "")
        # "name: Type (required) - doc", a nested list (Struct) kept last
        head, ul, nested = what.partition("<ul>")
        items.append("<li><code>%s</code>: %s (%s)%s%s</li>" % (
            _docs_esc(name), head,
            "required" if entry.get("required") else "optional", doc, ul + nested))
    return "<ul>%s</ul>" % "".join(items)


def _docs_type_html(schema: object, spec_json: object = None,
                    _depth: int = 0) -> str:
    """Readable description as HTML; Structs become nested lists."""
    if not isinstance(schema, dict) or not isinstance(schema.get("type"), str):
        return "unknown"
    if _depth > _DOCS_MAX_DEPTH:
        return "\u2026"
    kind, param = schema["type"], schema.get("param")
    rules = _docs_esc(_docs_rules(schema))
    if kind in ("Array", "Map", "OrderedMap"):
        return "%s%s of %s" % (kind, rules,
                               _docs_type_html(param, spec_json, _depth + 1))
    if kind == "Struct":
        fields = _docs_dict_entries(param)
        if not fields:
            return "Struct (no fields)"
        return "Struct" + _docs_fields_html(fields, spec_json, _depth)
    if kind in _DOCS_MODEL_WORDS:
        return "%s %s" % (_DOCS_MODEL_WORDS[kind], _docs_model_ref(param, spec_json))
    return _docs_esc(_DOCS_NAMES.get(kind, kind)) + rules


def _docs_rep_example(name: str, model: object, spec_json: object,
                      with_self: bool, seen: tuple = (), depth: int = 0) -> dict:
    """Example HAL representation (a patch when with_self is false)."""
    links = {"self": {"href": "/%s/1" % name}} if with_self else {}
    model = model if isinstance(model, dict) else {}
    for key, link in _docs_dict_entries(model.get("links")):
        target = _docs_model_short(link.get("model") or "Model")
        links[key] = {"href": "/%s/1" % target}
    result: dict = {"_links": links} if links else {}
    if name not in seen:  # a model nested in itself stops at its links
        for key, field in _docs_dict_entries(model.get("properties")):
            result[key] = _docs_example(field.get("schema"), spec_json,
                                        seen + (name,), depth + 1)
    return result


def _docs_example(schema: object, spec_json: object = None, _seen: tuple = (),
                  _depth: int = 0) -> object:
    """Example JSON value for a Schema JSON value (all Struct fields filled).

    `spec_json` (optional) resolves models for Representation and Patch."""
    if not isinstance(schema, dict) or not isinstance(schema.get("type"), str):
        return None
    if _depth > _DOCS_MAX_DEPTH:
        return None
    kind, param = schema["type"], schema.get("param")
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if kind in ("Integer", "Float"):
        example: Any = _DOCS_EXAMPLES[kind]
        for key in ("minimum", "maximum"):
            bound = schema.get(key)
            if type(bound) in (int, float) and (
                    example < bound if key == "minimum" else example > bound):
                example = bound
        return example
    if kind == "String":
        return _docs_string_example(schema)
    if kind in _DOCS_EXAMPLES:
        return _DOCS_EXAMPLES[kind]
    if kind in ("Array", "Map", "OrderedMap"):
        item = _docs_example(param, spec_json, _seen, _depth + 1)
        if kind == "Array":
            return [item]
        if kind == "Map":
            return {"key": item}
        return {"map": {"key": item}, "order": ["key"]}
    if kind == "Struct":
        return {name: _docs_example(entry.get("schema"), spec_json, _seen,
                                    _depth + 1)
                for name, entry in _docs_dict_entries(param)}
    if kind == "cosmic.Model":
        if isinstance(spec_json, dict):
            names = [k for k, _ in _docs_entries(spec_json.get("models"))]
            if names:
                return "%s.%s" % (spec_json.get("name"), names[0])
        return "api.Model"
    if kind == "cosmic.Link":
        return "/%s/1" % _docs_model_short(param)
    if kind in ("cosmic.Representation", "cosmic.Patch"):
        return _docs_rep_example(
            _docs_model_short(param), _docs_model_entry(param, spec_json), spec_json,
            kind == "cosmic.Representation", _seen, _depth)
    if kind == "cosmic.APISpec":
        return {"name": "example", "actions": {"map": {}, "order": []},
                "models": {"map": {}, "order": []}}
    return None


def _docs_string_example(schema: dict) -> str:
    """"string", or a short text that meets the constraints if one of a
    few candidates does."""
    pattern = schema.get("pattern")
    low, high = schema.get("minLength"), schema.get("maxLength")
    for text in ("string", "String", "A", "a", "1", "AB12", "x" * 8):
        if type(low) is int and len(text) < low or \
                type(high) is int and len(text) > high:
            continue
        if isinstance(pattern, str):
            try:
                if _re.search(pattern, text) is None:
                    continue
            except _re.error:
                break
        return text
    return "string"


def _docs_pretty(value: object) -> str:
    return _json.dumps(value, indent=2, ensure_ascii=False)


def _docs_blob(value: object) -> str:
    """JSON text that is safe inside a <script> element."""
    text = _json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def _docs_endpoint(verb: str, path: str) -> str:
    return '<div class="ep"><span class="verb %s">%s</span> %s</div>' % (
        verb, verb, _docs_esc(path))


def _docs_details(summary: str, value: object) -> str:
    return "<details><summary>%s</summary><pre>%s</pre></details>" % (
        summary, _docs_esc(_docs_pretty(value)))


def _docs_placeholder(schema: object) -> str:
    example = _docs_example(schema)
    if isinstance(schema, dict) and schema.get("type") in _DOCS_RAW_QUERY \
            and isinstance(example, str):
        return example
    return _json.dumps(example, ensure_ascii=False, separators=(",", ":"))


def _docs_form(kind: str, name: str, body: str | None = None,
               with_id: bool = False, query: Iterable = ()) -> str:
    """A try-it form; `query` is a list of (field name, Schema JSON) pairs."""
    attrs = 'type="text" autocomplete="off" spellcheck="false"'
    out = ['<details><summary>Try it</summary>'
           '<form class="try" data-kind="%s" data-name="%s">'
           % (_docs_esc(kind), _docs_esc(name))]
    if with_id:
        out.append('<label>id <input class="f-id" %s></label>' % attrs)
    for field, schema in query:
        out.append('<label><code>%s</code> (%s) <input class="f-q" %s '
                   'data-field="%s" placeholder="%s"></label>' % (
                       _docs_esc(field), _docs_esc(_docs_type_text(schema)), attrs,
                       _docs_esc(field), _docs_esc(_docs_placeholder(schema))))
    if query:
        out.append('<p class="mu">Empty fields are left out. String and DateTime '
                   'values are sent as typed; other types take JSON.</p>')
    if body is not None:
        rows = min(max(body.count("\n") + 2, 3), 16)
        out.append('<label>JSON body <textarea class="f-body" spellcheck="false" '
                   'rows="%d">%s</textarea></label>' % (rows, _docs_esc(body)))
    out.append('<button type="submit">Send</button>'
               '<button type="reset">Reset</button>'
               '<pre class="out" aria-live="polite" hidden></pre></form></details>')
    return "".join(out)


def _docs_section(kind: str, name: str) -> str:
    return '<section class="item" id="%s-%s"><h3>%s</h3>' % (
        kind, _docs_esc(name), _docs_esc(name))


def _docs_need(auth: dict | None, key: Any) -> str:
    """Whether a call needs a credential, on a page of an API with schemes."""
    if not auth:
        return ""
    need = auth["needs"].get(key)
    if need is None:
        return '<span class="need">open</span>'
    text = "needs a credential"
    if need:
        text += " with " + ", ".join(need)
    return '<span class="need lock">%s</span>' % _docs_esc(text)


def _docs_authorize(auth: dict | None) -> str:
    """The Authorize box: one field per scheme; the page's script keeps
    what is typed in memory only."""
    if not auth:
        return ""
    attrs = 'autocomplete="off" spellcheck="false"'
    out = ['<section class="auth" id="authorize"><h2>Authorize</h2>'
           '<form class="authorize">']
    for kind, header in auth["schemes"]:
        if kind == "bearer":
            out.append('<label>Bearer token <input type="password" %s '
                       'data-kind="bearer"></label>' % attrs)
        elif kind == "api_key":
            out.append('<label>API key (<code>%s</code>) <input '
                       'type="password" %s data-kind="api_key" '
                       'data-header="%s"></label>' % (
                           _docs_esc(header), attrs, _docs_esc(header)))
        else:
            out.append('<label>Basic: user <input type="text" %s '
                       'data-kind="basic-user"></label><label>password '
                       '<input type="password" %s data-kind="basic-password">'
                       '</label>' % (attrs, attrs))
    out.append('<button type="submit">Authorize</button>'
               '<button type="reset">Clear</button>'
               '<p class="a-state mu" aria-live="polite">Not authorized: '
               'try-it calls send no credential.</p>'
               '<p class="mu">Kept in this page only (not stored; a reload '
               'forgets it) and sent with every try-it call.</p>'
               '</form></section>')
    return "".join(out)


def _docs_action_html(name: str, action: object, spec_json: dict,
                      auth: dict | None = None) -> str:
    action = action if isinstance(action, dict) else {}
    out = [_docs_section("action", name),
           _docs_endpoint("POST", "/actions/" + name), _docs_need(auth, name)]
    doc = action.get("doc")
    if isinstance(doc, str) and doc:
        out.append('<p class="doc">%s</p>' % _docs_esc(doc))
    accepts, returns = action.get("accepts"), action.get("returns")
    out.append("<h4>Input</h4>")
    if accepts is None:
        out.append('<p class="mu">None: send an empty body without '
                   'Content-Type.</p>')
    else:
        out.append("<div>%s</div>" % _docs_type_html(accepts, spec_json))
    out.append("<h4>Output</h4>")
    if returns is None:
        out.append('<p class="mu">None: 204 No Content.</p>')
    else:
        out.append("<div>%s</div>" % _docs_type_html(returns, spec_json))
        out.append(_docs_details("Example output",
                                 _docs_example(returns, spec_json)))
    body = None
    if accepts is not None:
        body = _docs_pretty(_docs_example(accepts, spec_json))
    out.append(_docs_form("action", name, body=body))
    out.append("</section>")
    return "".join(out)


def _docs_model_html(name: str, model: object, spec_json: dict,
                     auth: dict | None = None) -> str:
    model = model if isinstance(model, dict) else {}
    query = _docs_dict_entries(model.get("query_fields"))
    meta = _docs_dict_entries(model.get("list_metadata"))
    methods = model.get("methods")
    methods = methods if isinstance(methods, dict) else {}
    none = '<p class="mu">None.</p>'
    out = [_docs_section("model", name), "<h4>Properties</h4>",
           _docs_fields_html(_docs_dict_entries(model.get("properties")),
                             spec_json) or none]
    links = _docs_fields_html(_docs_dict_entries(model.get("links")),
                              spec_json, links=True)
    if links:
        out.append("<h4>Links</h4>" + links)
    requires = model.get("create_requires")
    if isinstance(requires, list) and requires:
        out.append('<p class="mu">A create must give: %s.</p>' % ", ".join(
            "<code>%s</code>" % _docs_esc(n) for n in requires))
    if query:
        out.append("<h4>Query fields</h4>" + _docs_fields_html(query, spec_json))
    if meta:
        out.append("<h4>List metadata</h4>" + _docs_fields_html(meta, spec_json))
    rep = _docs_rep_example(name, model, spec_json, True)
    patch = _docs_pretty(_docs_rep_example(name, model, spec_json, False))
    out.append(_docs_details("Example representation", rep))
    out.append("<h4>Methods</h4>")
    enabled = [m for m in _DOCS_METHODS if methods.get(m[0]) is True]
    if not enabled:
        out.append('<p class="mu">None enabled.</p>')
    for key, verb, with_id, with_body, text in enabled:
        path = "/" + name + ("/{id}" if with_id else "")
        out.append('<div class="method">%s%s<p class="mu">%s</p>' % (
            _docs_endpoint(verb, path), _docs_need(auth, (name, key)),
            _docs_esc(text.format(m=name, a=_with_article(name)))))
        fields: Iterable = ()
        if key == "get_list":
            example = {"_links": {"self": {"href": "/" + name}},
                       "_embedded": {name: [rep]}}
            for field, entry in meta:
                example[field] = _docs_example(entry.get("schema"), spec_json)
            out.append(_docs_details("Example list response", example))
            fields = [(k, v.get("schema")) for k, v in query]
        out.append(_docs_form(key, name, body=patch if with_body else None,
                              with_id=with_id, query=fields))
        out.append("</div>")
    out.append("</section>")
    return "".join(out)


def _docs_html(spec_json: dict, auth: dict | None = None) -> str:
    """The documentation page (one self-contained HTML5 document) of a spec.

    `spec_json` is the decoded JSON of GET /spec.json. Serve the result as
    `text/html; charset=utf-8` with `Content-Security-Policy: <_docs_csp()>`.
    `auth` (an API with schemes): {"schemes": [(kind, header)], "needs":
    the requirement of each call, as _spec_needs() gives}; by default read
    from the spec's auth entry.
    """
    if not isinstance(spec_json, dict):
        spec_json = {}
    if auth is None:
        auth = _docs_auth(spec_json)
    name = spec_json.get("name")
    name = name if isinstance(name, str) else "API"
    homepage = spec_json.get("homepage")
    actions = _docs_entries(spec_json.get("actions"))
    models = _docs_entries(spec_json.get("models"))
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
           '<meta name="viewport" content="width=device-width, initial-scale=1">'
           '<meta name="referrer" content="no-referrer">'
           "<title>%s</title><style>%s</style></head><body><main>"
           '<header><h1>%s</h1><p class="sub">API documentation'
           % (_docs_esc(name), _DOCS_CSS, _docs_esc(name))]
    if isinstance(homepage, str) and homepage:
        if _re.match(r"(?i)https?://[^\s]+\Z", homepage):
            out.append(' \u00b7 <a href="%s" rel="noopener noreferrer">%s</a>'
                       % (_docs_esc(homepage), _docs_esc(homepage)))
        else:
            out.append(" \u00b7 %s" % _docs_esc(homepage))
    out.append(' \u00b7 <a href="spec.json">spec.json</a></p></header>')
    out.append(_docs_authorize(auth))
    if actions or models:
        out.append("<nav><ul>")
        for kind, entries in (("action", actions), ("model", models)):
            for key, _ in entries:
                out.append('<li><a href="#%s-%s">%s</a> <span class="mu">%s</span>'
                           "</li>" % (kind, _docs_esc(key), _docs_esc(key), kind))
        out.append("</ul></nav>")
    out.append("<h2>Actions</h2>")
    if not actions:
        out.append('<p class="mu">This API has no actions.</p>')
    for key, action in actions:
        out.append(_docs_action_html(key, action, spec_json, auth))
    out.append("<h2>Models</h2>")
    if not models:
        out.append('<p class="mu">This API has no models.</p>')
    for key, model in models:
        out.append(_docs_model_html(key, model, spec_json, auth))
    out.append('</main><script type="application/json" id="spec">%s</script>'
               "<script>%s</script></body></html>"
               % (_docs_blob(spec_json), _DOCS_JS))
    return "".join(out)


def _docs_auth(spec_json: dict) -> dict | None:
    """The page's ``auth`` from the spec's declaration (None without one,
    or when the page is given a spec that APISpec would refuse)."""
    if "auth" not in spec_json:
        return None
    try:
        return {"schemes": _spec_schemes(spec_json),
                "needs": _spec_needs(spec_json)}
    except (AttributeError, TypeError, KeyError):
        return None


def docs_html(api: BaseAPI) -> str:
    """The documentation page of an API (or of a client's fetched spec):
    one self-contained HTML page with a try-it form for every action and
    model method, and an Authorize box when the spec declares schemes."""
    return _docs_html(APISpec.to_json(api.spec))


_DOCS_CSS = r"""
:root{color-scheme:light dark;--fg:#1d2125;--mu:#5c6670;--bg:#fff;--pa:#f4f6f8;
--bd:#d8dde2;--ac:#0b5cad}
@media (prefers-color-scheme:dark){:root{--fg:#e4e7ea;--mu:#9aa4ad;--bg:#15181b;
--pa:#1f2428;--bd:#3a4248;--ac:#6cb0f5}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",sans-serif}
main{max-width:60rem;margin:0 auto;padding:1rem}
a{color:var(--ac)}
h1{margin:.5rem 0;font-size:1.8rem;overflow-wrap:anywhere}
h2{margin-top:2rem;border-bottom:2px solid var(--bd);padding-bottom:.2rem}
h3{margin:0 0 .4rem;font-size:1.25rem;overflow-wrap:anywhere}
h4{margin:1rem 0 .3rem;font-size:1rem}
code,pre,textarea,input,.ep{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,
"Liberation Mono",monospace;font-size:.9rem}
pre{background:var(--pa);border:1px solid var(--bd);border-radius:6px;
padding:.6rem;margin:.4rem 0;white-space:pre-wrap;overflow-wrap:anywhere;
max-height:30rem;overflow:auto}
section.item{border:1px solid var(--bd);border-radius:8px;padding:.8rem 1rem;
margin:1rem 0}
.doc{white-space:pre-wrap;overflow-wrap:anywhere}
.mu,.sub{color:var(--mu)}
ul{padding-left:1.3rem;margin:.2rem 0}
li{overflow-wrap:anywhere}
.ep{font-weight:600;font-size:1rem;overflow-wrap:anywhere}
.verb{display:inline-block;min-width:4.2em;padding:0 .3em;border-radius:4px;
color:#fff;background:#56606a;text-align:center;font-size:.85rem}
.GET{background:#1f7a3d}.POST{background:#0b5cad}.PUT{background:#8a5a00}
.DELETE{background:#b3261e}
details{margin:.4rem 0}
.method{margin-top:1rem}
summary{cursor:pointer;color:var(--ac)}
form.try{margin:.4rem 0 0;padding:.6rem;background:var(--pa);border-radius:6px}
form.try label{display:block;margin:.3rem 0}
textarea,input{width:100%;padding:.4rem;border:1px solid var(--bd);
border-radius:4px;background:var(--bg);color:var(--fg)}
textarea{min-height:6rem;resize:vertical}
button{margin:.5rem .4rem 0 0;padding:.35rem 1rem;font:inherit;
border:1px solid var(--ac);border-radius:4px;background:var(--ac);color:#fff;
cursor:pointer}
button[type=reset]{background:transparent;color:var(--ac)}
button:disabled{opacity:.6}
nav ul{columns:14rem}
.auth{margin:1rem 0;padding:.6rem 1rem;border:1px solid var(--bd);
border-radius:8px;background:var(--pa)}
.auth h2{margin:0 0 .3rem;border:0;font-size:1.1rem}
.auth label{display:block;margin:.3rem 0}
.need{display:inline-block;margin:.2rem 0;padding:0 .4em;border-radius:4px;
font-size:.8rem;border:1px solid var(--bd)}
.need.lock{border-color:#b3261e;color:#b3261e}
"""

_DOCS_JS = r"""
(function () {
  'use strict';
  var spec = JSON.parse(document.getElementById('spec').textContent);
  // "/" and "/docs" both give "/"; "/prefix/docs" gives "/prefix/"
  var base = location.pathname.replace(/\/docs\/?$/, '/')
    .replace(/[^\/]*$/, '');
  var RAW = {'String': 1, 'DateTime': 1, 'cosmic.Model': 1, 'cosmic.Link': 1,
             'UUID': 1, 'Decimal': 1};
  var VERBS = {get_by_id: 'GET', create: 'POST', update: 'PUT',
               'delete': 'DELETE'};
  var enc = encodeURIComponent;

  function lookup(om, key) {
    var has = om && om.map && Object.prototype.hasOwnProperty.call(om.map, key);
    return has ? om.map[key] : null;
  }

  function query(form, name) {
    var model = lookup(spec.models, name);
    var params = new URLSearchParams();
    var inputs = form.querySelectorAll('.f-q');
    for (var i = 0; i < inputs.length; i++) {
      var field = inputs[i].getAttribute('data-field');
      var value = inputs[i].value;
      if (value === '') { continue; }
      var entry = model ? lookup(model.query_fields, field) : null;
      var type = entry && entry.schema ? entry.schema.type : 'String';
      if (!RAW[type]) {
        try { value = JSON.stringify(JSON.parse(value)); } catch (e) {
          throw new Error('Query field ' + field + ' needs a JSON value (' +
                          type + '): ' + e.message);
        }
      }
      params.append(field, value);
    }
    var qs = params.toString();
    return qs ? '?' + qs : '';
  }

  function build(form) {
    var kind = form.getAttribute('data-kind');
    var name = form.getAttribute('data-name');
    var idEl = form.querySelector('.f-id');
    var bodyEl = form.querySelector('.f-body');
    var req = {method: 'GET', url: base + enc(name), body: null};
    if (bodyEl && bodyEl.value.trim() !== '') {
      try { JSON.parse(bodyEl.value); } catch (e) {
        throw new Error('The request body is not valid JSON: ' + e.message);
      }
      req.body = bodyEl.value;
    }
    if (idEl) {
      if (idEl.value === '') { throw new Error('Enter an id.'); }
      req.url += '/' + enc(idEl.value);
    }
    if (kind === 'action') {
      req.method = 'POST';
      req.url = base + 'actions/' + enc(name);
    } else if (kind === 'get_list') {
      req.url += query(form, name);
    } else {
      req.method = VERBS[kind];
    }
    return req;
  }

  function pretty(text) {
    if (text === '') { return '(empty body)'; }
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) {
      return text;
    }
  }

  function send(form) {
    var out = form.querySelector('.out');
    var button = form.querySelector('button[type=submit]');
    var req;
    out.hidden = false;
    try { req = build(form); } catch (e) {
      out.textContent = e.message;
      return;
    }
    var line = req.method + ' ' + req.url + '\n\n';
    var init = {method: req.method, headers: {}, credentials: 'same-origin',
                cache: 'no-store'};
    if (req.body !== null) {
      init.body = req.body;
      init.headers['Content-Type'] = 'application/json';
    }
    for (var name in creds) {
      if (Object.prototype.hasOwnProperty.call(creds, name)) {
        init.headers[name] = creds[name];
      }
    }
    out.textContent = line + 'Sending\u2026';
    button.disabled = true;
    fetch(req.url, init).then(function (res) {
      return res.text().then(function (text) {
        var head = 'HTTP ' + res.status;
        if (res.statusText) { head += ' ' + res.statusText; }
        var location = res.headers.get('Location');
        if (location !== null) { head += '\nLocation: ' + location; }
        out.textContent = line + head + '\n\n' + pretty(text);
      });
    }).catch(function (e) {
      out.textContent = line + 'Request failed: ' + e.message;
    }).then(function () {
      button.disabled = false;
    });
  }

  // Credentials live in this variable only: never in storage or the URL.
  var creds = {};

  function b64(text) {
    var bytes = new TextEncoder().encode(text), bin = '';
    for (var i = 0; i < bytes.length; i++) {
      bin += String.fromCharCode(bytes[i]);
    }
    return btoa(bin);
  }

  function authorize(form) {
    creds = {};
    var field = function (kind) {
      var el = form.querySelector('[data-kind="' + kind + '"]');
      return el ? el.value.trim() : '';
    };
    var token = field('bearer'), key = field('api_key');
    var user = field('basic-user'), password = field('basic-password');
    if (token) { creds['Authorization'] = 'Bearer ' + token; }
    if (key) {
      var header = form.querySelector('[data-kind="api_key"]');
      creds[header.getAttribute('data-header')] = key;
    }
    if (user || password) {
      creds['Authorization'] = 'Basic ' + b64(user + ':' + password);
    }
    var names = Object.keys(creds);
    form.querySelector('.a-state').textContent = names.length ?
      'Authorized: try-it calls send ' + names.join(', ') + '.' :
      'Not authorized: try-it calls send no credential.';
  }

  var box = document.querySelector('form.authorize');
  if (box) {
    box.addEventListener('submit', function (ev) {
      ev.preventDefault();
      authorize(box);
    });
    box.addEventListener('reset', function () {
      setTimeout(function () { authorize(box); }, 0);
    });
  }

  var forms = document.querySelectorAll('form.try');
  for (var i = 0; i < forms.length; i++) {
    (function (form) {
      form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        send(form);
      });
      var ta = form.querySelector('textarea');
      if (ta) {
        ta.addEventListener('keydown', function (ev) {
          if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
            ev.preventDefault();
            send(form);
          }
        });
      }
    })(forms[i]);
  }
})();
"""


# -- Contract diff ------------------------------------------------------------
#
# diff(old, new) compares two versions of a spec in their JSON form and says,
# for each change, whether a caller written against OLD can fail against NEW.
# What breaks depends on who sends the data:
#   request   the client sends, the server checks: action input, patches
#             (create, update), query strings
#   response  the server sends, the client checks: action results,
#             representations, list metadata
# A type that accepts more values than before ("wider") is safe where
# clients send and breaks where clients receive; a narrower one the other
# way round. Clients of this version drop answer fields they do not know
# (see _answer), so a field the server adds to its answers is
# compatible; clients of the original Cosmic refuse it.

_BREAKING, _COMPATIBLE, _INFO = "breaking", "compatible", "info"
_NA = "-"  # the change cannot occur in this direction
# Compatible because clients drop answer fields they do not know; clients
# of the original Cosmic are strict and refuse them.
_TOLERATED = "tolerated"
_STRICT_NOTE = "clients of the original Cosmic (strict) refuse it"

# Every kind of change: its verdict when the data is in a request, and when
# it is in a response, then why it breaks (shown with breaking verdicts).
_DIFF_RULES = (
    # kind                        request       response
    # -- the API
    ("name-changed",              _INFO,        _INFO,
     "no call carries the API's name"),
    ("homepage-changed",          _INFO,        _INFO, ""),
    ("doc-changed",               _INFO,        _INFO, ""),
    # -- actions
    ("action-added",              _COMPATIBLE,  _NA, "a new call"),
    ("action-removed",            _BREAKING,    _NA, "calls get 404"),
    ("accepts-added",             _BREAKING,    _NA,
     "callers send no input; the server now wants some"),
    ("accepts-removed",           _BREAKING,    _NA,
     "callers send input; the server now refuses any"),
    ("returns-added",             _NA,          _COMPATIBLE,
     "callers ignore the new result"),
    ("returns-removed",           _NA,          _BREAKING,
     "callers get None where they expect a value"),
    # -- models
    ("model-added",               _COMPATIBLE,  _NA, "new routes"),
    ("model-removed",             _BREAKING,    _NA, "its routes answer 404"),
    ("method-enabled",            _COMPATIBLE,  _NA, "a new route"),
    ("method-disabled",           _BREAKING,    _NA, "calls get 405"),
    # properties travel in patches (every field optional) and in
    # representations (required as declared)
    ("property-added",            _COMPATIBLE,  _TOLERATED, ""),
    ("property-removed-required", _BREAKING,    _BREAKING,
     "patches carrying it are refused; answers lack it"),
    ("property-removed-optional", _BREAKING,    _COMPATIBLE,
     "patches carrying it are refused"),
    ("property-made-optional",    _NA,          _BREAKING,
     "answers may lack it"),
    ("property-made-required",    _NA,          _COMPATIBLE, ""),
    ("link-added",                _COMPATIBLE,  _TOLERATED, ""),
    ("link-removed-required",     _BREAKING,    _BREAKING,
     "patches carrying it are refused; answers lack it"),
    ("link-removed-optional",     _BREAKING,    _COMPATIBLE,
     "patches carrying it are refused"),
    ("link-made-optional",        _NA,          _BREAKING,
     "answers may lack it"),
    ("link-made-required",        _NA,          _COMPATIBLE, ""),
    ("link-model-changed",        _BREAKING,    _BREAKING,
     "hrefs name another model"),
    # fields and links a create must carry (create_requires)
    ("create-required-added",     _BREAKING,    _NA,
     "creates that leave it out are refused"),
    ("create-required-removed",   _COMPATIBLE,  _NA, ""),
    # -- authentication: credentials travel in requests (a call is open
    # when the spec declares no auth)
    ("scheme-added",              _COMPATIBLE,  _NA, ""),
    ("scheme-removed",            _BREAKING,    _NA,
     "callers sending its credential get 401"),
    ("scheme-changed",            _BREAKING,    _NA,
     "the API key goes in another header: callers get 401"),
    ("requires-added",            _BREAKING,    _NA,
     "callers without a credential get 401"),
    ("requires-removed",          _COMPATIBLE,  _NA, ""),
    ("requires-tightened",        _BREAKING,    _NA,
     "callers without the new scopes get 403"),
    ("requires-loosened",         _COMPATIBLE,  _NA, ""),
    ("requires-changed",          _BREAKING,    _NA,
     "other scopes: callers may lack them (403)"),
    # query strings: the server ignores parameters it does not declare
    ("query-field-added-required", _BREAKING,   _NA,
     "calls without it are refused"),
    ("query-field-added-optional", _COMPATIBLE, _NA, ""),
    ("query-field-removed",       _BREAKING,    _NA,
     "the server ignores it: the filter silently stops applying"),
    ("query-field-made-required", _BREAKING,    _NA,
     "calls without it are refused"),
    ("query-field-made-optional", _COMPATIBLE,  _NA, ""),
    # list metadata: top-level keys of a get_list answer
    ("metadata-added",            _NA,          _TOLERATED, ""),
    ("metadata-removed-required", _NA,          _BREAKING, "answers lack it"),
    ("metadata-removed-optional", _NA,          _COMPATIBLE, ""),
    ("metadata-made-optional",    _NA,          _BREAKING,
     "answers may lack it"),
    ("metadata-made-required",    _NA,          _COMPATIBLE, ""),
    # -- types, wherever they are (recursively)
    ("type-changed",              _BREAKING,    _BREAKING,
     "values of one are not values of the other"),
    ("type-widened",              _COMPATIBLE,  _BREAKING,
     "accepts every old value, and more"),
    ("type-narrowed",             _BREAKING,    _COMPATIBLE,
     "accepts only some old values"),
    ("model-changed",             _BREAKING,    _BREAKING,
     "a reference to another model"),
    ("field-added-required",      _BREAKING,    _TOLERATED,
     "senders leave it out"),
    ("field-added-optional",      _COMPATIBLE,  _TOLERATED, ""),
    ("field-removed-required",    _BREAKING,    _BREAKING,
     "senders send it, receivers need it"),
    ("field-removed-optional",    _BREAKING,    _COMPATIBLE,
     "senders may send it"),
    ("field-made-optional",       _COMPATIBLE,  _BREAKING,
     "receivers need it"),
    ("field-made-required",       _BREAKING,    _COMPATIBLE,
     "senders may leave it out"),
    # -- constraints and enums (minimum, maxLength, pattern, enum, ...)
    ("constraint-added",          _BREAKING,    _COMPATIBLE,
     "fewer values pass"),
    ("constraint-removed",        _COMPATIBLE,  _BREAKING,
     "more values pass"),
    ("constraint-tightened",      _BREAKING,    _COMPATIBLE,
     "fewer values pass"),
    ("constraint-loosened",       _COMPATIBLE,  _BREAKING,
     "more values pass"),
    ("pattern-changed",           _BREAKING,    _BREAKING,
     "another set of strings"),
    ("enum-added",                _BREAKING,    _COMPATIBLE,
     "only the listed values pass"),
    ("enum-removed",              _COMPATIBLE,  _BREAKING,
     "any value of the type passes"),
    ("enum-value-added",          _COMPATIBLE,  _BREAKING,
     "receivers do not know it"),
    ("enum-value-removed",        _BREAKING,    _COMPATIBLE,
     "senders may still send it"),
    ("message-changed",           _INFO,        _INFO,
     "only the error text differs"),
    ("schema-changed",            _BREAKING,    _BREAKING,
     "a key or parameter diff does not know changed"),
)
_RULES = {kind: (request, response, note)
          for kind, request, response, note in _DIFF_RULES}
_REQUEST, _RESPONSE = "request", "response"
_BOTH = (_REQUEST, _RESPONSE)

# Lower and upper bounds (constraints on a type's JSON object): raising a
# lower bound or lowering an upper one lets fewer values through.
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")
_CONSTRAINT_KEYS = _LOWER_BOUNDS + _UPPER_BOUNDS + (
    "pattern", "enum", "message")
# (old, new) type names where NEW accepts every JSON value OLD accepts.
_WIDER = frozenset([("Integer", "Float"), ("DateTime", "String"),
                    ("Binary", "String"), ("UUID", "String"),
                    ("cosmic.Model", "String"), ("cosmic.Link", "String")])


class Change(_namedtuple("Change", "path kind verdict message direction")):
    """One change between two specs: ``path``, ``kind``, ``verdict``
    (breaking, compatible or info), ``message``, and ``direction``: what
    it breaks ("request", "response" or "request,response"; empty unless
    the verdict is breaking)."""

    __slots__ = ()

    def as_json(self) -> dict:
        """The change as a JSON object."""
        return dict(zip(self._fields, self))

    def __str__(self) -> str:
        text = "%-10s %s  %s: %s" % (self.verdict, self.path, self.kind,
                                     self.message)
        if self.direction:
            text += " (breaks %ss)" % self.direction.replace(",", "s and ")
        return text


class ContractError(SpecError):
    """The live spec breaks the one a client expects; ``changes`` lists
    the breaking changes."""

    def __init__(self, message: str, changes: list) -> None:
        super().__init__(message)
        self.changes = changes


class _Changes(list):
    """Collects changes, looking their verdicts up in _DIFF_RULES."""

    def add(self, kind: str, path: str, flows: tuple, message: str) -> None:
        request, response, note = _RULES[kind]
        verdicts = {_REQUEST: request, _RESPONSE: response}
        found = [(f, verdicts[f]) for f in flows if verdicts[f] != _NA]
        if not found:
            return  # no data of this kind travels that way
        order = (_INFO, _COMPATIBLE, _TOLERATED, _BREAKING)
        verdict = max((v for _, v in found), key=order.index)
        direction = ",".join(f for f, v in found if v == _BREAKING)
        if verdict == _TOLERATED:
            verdict, note = _COMPATIBLE, _STRICT_NOTE
        elif verdict != _BREAKING:
            note = ""
        if note:
            message = "%s; %s" % (message, note)
        self.append(Change(path, kind, verdict, message, direction))


def _spec_json(spec: Any) -> dict:
    """The JSON form of a spec given as JSON, native, or an API or client."""
    if isinstance(spec, BaseAPI):
        spec = spec.spec
    if not isinstance(spec, dict):
        raise SpecError("Not a spec: %s" % _short_repr(spec))
    actions = spec.get("actions")
    if not (isinstance(actions, dict) and "order" in actions):
        try:
            spec = APISpec.to_json(spec)
        except (ValidationError, AttributeError, TypeError):
            raise SpecError("Not a spec: %s" % _short_repr(spec)) from None
    # JSON now, read without APISpec, so that keys this version does not
    # know (a newer schema's, say) are compared rather than refused.
    for key in ("actions", "models"):
        if not isinstance(spec.get(key), dict) or \
                not isinstance(spec[key].get("map"), dict):
            raise SpecError("Not a spec: %s" % _short_repr(spec))
    return spec


def _ordered(entry: Any) -> dict:
    """The map of an OrderedMap JSON form, in its order."""
    if not isinstance(entry, dict):
        return {}
    mapping: dict = entry.get("map") or {}
    order = entry.get("order")
    return {key: mapping[key] for key in (order or mapping)
            if key in mapping}


def diff(old: Any, new: Any) -> list:
    """The changes from spec ``old`` to spec ``new``, as Change objects.

    Each side is a spec (JSON form or native), an API or a client. A
    change is breaking when a caller written against ``old`` can fail
    against a server of ``new``.
    """
    old, new = _spec_json(old), _spec_json(new)
    out = _Changes()
    for key in ("name", "homepage"):
        if old.get(key) != new.get(key):
            out.add(key + "-changed", key, _BOTH, "%s -> %s" % (
                _short_repr(old.get(key)), _short_repr(new.get(key))))
    try:
        _diff_actions(_ordered(old["actions"]), _ordered(new["actions"]),
                      out)
        _diff_models(_ordered(old["models"]), _ordered(new["models"]),
                     _sent_models(old), out)
        _diff_auth(old, new, out)
    except (AttributeError, TypeError, KeyError):
        # A spec read as JSON is checked only where diff looks.
        raise SpecError("Not a valid spec: an entry has the wrong "
                        "shape") from None
    return list(out)


def _diff_actions(old: dict, new: dict, out: _Changes) -> None:
    for name in list(old) + [n for n in new if n not in old]:
        place = "actions." + name
        if name not in new:
            out.add("action-removed", place, _BOTH, "removed")
            continue
        if name not in old:
            out.add("action-added", place, _BOTH, "added")
            continue
        before, after = old[name], new[name]
        for key, flow in (("accepts", _REQUEST), ("returns", _RESPONSE)):
            path = "%s %s" % (place, key)
            if key in before and key not in after:
                out.add(key + "-removed", path, (flow,), "removed")
            elif key in after and key not in before:
                out.add(key + "-added", path, (flow,),
                        "added: " + _schema_text(after[key]))
            elif key in after:
                _diff_types(before[key], after[key], path, (flow,), out)
        if before.get("doc") != after.get("doc"):
            out.add("doc-changed", place, _BOTH, "doc changed")


def _sent_models(spec: dict) -> set:
    """Models whose representations or patches clients send to actions."""
    found: set = set()

    def walk(schema):
        if not isinstance(schema, dict):
            return
        param = schema.get("param")
        if schema.get("type") in ("cosmic.Representation", "cosmic.Patch"):
            found.add(str(param).partition(".")[2])
        elif schema.get("type") == "Struct":
            for field in _ordered(param).values():
                walk(field.get("schema"))
        else:
            walk(param)

    for entry in _ordered(spec["actions"]).values():
        walk(entry.get("accepts"))
    return found


def _diff_models(old: dict, new: dict, sent: set, out: _Changes) -> None:
    for name in list(old) + [n for n in new if n not in old]:
        place = "models." + name
        if name not in new:
            out.add("model-removed", place, _BOTH, "removed")
            continue
        if name not in old:
            out.add("model-added", place, _BOTH, "added")
            continue
        before, after = old[name], new[name]
        both = []
        for method in MODEL_METHODS:
            was = bool(before.get("methods", {}).get(method))
            now = bool(after.get("methods", {}).get(method))
            if was and not now:
                out.add("method-disabled", "%s %s" % (place, method),
                        _BOTH, "disabled")
            elif now and not was:
                out.add("method-enabled", "%s %s" % (place, method),
                        _BOTH, "enabled")
            elif now:
                both.append(method)
        writes = _REQUEST if {"create", "update"} & set(both) or \
            name in sent else None
        flows = tuple(f for f in (writes, _RESPONSE) if f)
        _diff_fields(before.get("properties"), after.get("properties"),
                     place + " properties", flows, out, "property")
        _diff_links(before.get("links"), after.get("links"),
                    place + " links", flows, out)
        if "get_list" in both:
            _diff_fields(before.get("query_fields"),
                         after.get("query_fields"),
                         place + " query_fields", (_REQUEST,), out,
                         "query-field")
            _diff_fields(before.get("list_metadata"),
                         after.get("list_metadata"),
                         place + " list_metadata", (_RESPONSE,), out,
                         "metadata")
        if "create" in both:
            _diff_create_requires(before, after, place, out)
        _diff_extra_keys(before, after, place, both, out)


def _diff_auth(old: dict, new: dict, out: _Changes) -> None:
    """Schemes, and the requirement of each call both specs have (a spec
    without auth: every call open, no scheme)."""
    was = dict(_spec_schemes(old))
    now = dict(_spec_schemes(new))
    for kind in list(was) + [k for k in now if k not in was]:
        path = "auth schemes [%r]" % kind
        if kind not in now:
            out.add("scheme-removed", path, _BOTH, "removed")
        elif kind not in was:
            out.add("scheme-added", path, _BOTH, "added")
        elif was[kind] != now[kind]:
            out.add("scheme-changed", path, _BOTH, "header %s -> %s"
                    % (was[kind], now[kind]))
    before, after = _spec_needs(old), _spec_needs(new)
    calls = _diff_calls(new)
    for key in _diff_calls(old):
        if key in calls:
            _diff_need(key, before.get(key), after.get(key), out)


def _diff_calls(spec: dict) -> list:
    """Every call of a spec (JSON form), as _spec_needs names them."""
    calls: list = ["/spec.json", "/openapi.json"]
    calls += list(_ordered(spec["actions"]))
    for name, model in _ordered(spec["models"]).items():
        calls += [(name, method) for method in MODEL_METHODS
                  if model.get("methods", {}).get(method)]
    return calls


def _need_text(need: Any) -> str:
    if need is None:
        return "open"
    return "a credential" + (" with %s" % ", ".join(need) if need else "")


def _diff_need(key: Any, was: Any, now: Any, out: _Changes) -> None:
    """One call's requirement: None (open), () or scopes (_requirement)."""
    if was == now:
        return
    if isinstance(key, tuple):
        path = "models.%s %s requires" % key
    elif key in ("/spec.json", "/openapi.json"):
        path = "%s requires" % key[1:]
    else:
        path = "actions.%s requires" % key
    message = "%s -> %s" % (_need_text(was), _need_text(now))
    if was is None:
        kind = "requires-added"
    elif now is None:
        kind = "requires-removed"
    elif set(was) < set(now):
        kind = "requires-tightened"
    elif set(now) < set(was):
        kind = "requires-loosened"
    elif set(now) == set(was):
        return  # the same scopes in another order
    else:
        kind = "requires-changed"
    out.add(kind, path, (_REQUEST,), message)


def _diff_create_requires(before: dict, after: dict, place: str,
                          out: _Changes) -> None:
    was = list(before.get("create_requires") or ())
    now = list(after.get("create_requires") or ())
    path = place + " create_requires"
    for name in now:
        if name not in was:
            out.add("create-required-added", "%s [%r]" % (path, name),
                    (_REQUEST,), "creates must carry it")
    for name in was:
        if name not in now:
            out.add("create-required-removed", "%s [%r]" % (path, name),
                    (_REQUEST,), "creates may leave it out")


# The model keys diff knows; others are compared by _diff_extra_keys.
_MODEL_KEYS = frozenset(("properties", "links", "query_fields", "methods",
                         "list_metadata", "create_requires", "requires"))


def _diff_extra_keys(before: dict, after: dict, place: str, both: list,
                     out: _Changes) -> None:
    """Model keys from newer schema features (a create's required fields)."""
    keys = [k for k in after if k not in _MODEL_KEYS]
    keys += [k for k in before if k not in _MODEL_KEYS and k not in after]
    for key in keys:
        if before.get(key) != after.get(key):
            out.add("schema-changed", "%s %s" % (place, key), _BOTH,
                    "%s -> %s" % (_short_repr(before.get(key)),
                                  _short_repr(after.get(key))))


def _diff_fields(old: Any, new: Any, place: str, flows: tuple,
                 out: _Changes, prefix: str = "field") -> None:
    """Fields of a Struct, or properties, query fields or list metadata.

    Properties are optional in patches, so there only their presence
    counts; elsewhere whether each is required counts too.
    """
    old, new = _ordered(old), _ordered(new)
    for name in list(old) + [n for n in new if n not in old]:
        path = "%s [%r]" % (place, name)
        was, now = old.get(name), new.get(name)
        if now is None:
            required = "required" if was.get("required") else "optional"
            kind = _field_kind(prefix, "removed", required)
            out.add(kind, path, flows, "removed (was %s)" % required)
            continue
        if was is None:
            required = "required" if now.get("required") else "optional"
            kind = _field_kind(prefix, "added", required)
            out.add(kind, path, flows, "added, %s: %s"
                    % (required, _schema_text(now.get("schema"))))
            continue
        if bool(was.get("required")) != bool(now.get("required")):
            state = "required" if now.get("required") else "optional"
            out.add("%s-made-%s" % (prefix, state), path, flows,
                    "now " + state)
        if was.get("doc") != now.get("doc"):
            out.add("doc-changed", path, flows, "doc changed")
        _diff_types(was.get("schema"), now.get("schema"), path, flows, out)


def _field_kind(prefix: str, change: str, required: str) -> str:
    kind = "%s-%s-%s" % (prefix, change, required)
    return kind if kind in _RULES else "%s-%s" % (prefix, change)


def _diff_links(old: Any, new: Any, place: str, flows: tuple,
                out: _Changes) -> None:
    old, new = _ordered(old), _ordered(new)
    for name in list(old) + [n for n in new if n not in old]:
        path = "%s [%r]" % (place, name)
        was, now = old.get(name), new.get(name)
        if now is None:
            required = "required" if was.get("required") else "optional"
            out.add("link-removed-" + required, path, flows,
                    "removed (was %s)" % required)
        elif was is None:
            out.add("link-added", path, flows, "added, %s, to %s" % (
                "required" if now.get("required") else "optional",
                now.get("model")))
        else:
            if was.get("model") != now.get("model"):
                out.add("link-model-changed", path, flows, "%s -> %s"
                        % (was.get("model"), now.get("model")))
            if bool(was.get("required")) != bool(now.get("required")):
                state = "required" if now.get("required") else "optional"
                out.add("link-made-" + state, path, flows, "now " + state)
            if was.get("doc") != now.get("doc"):
                out.add("doc-changed", path, flows, "doc changed")


def _schema_text(schema: Any) -> str:
    """A short name for a schema JSON: ``Array(Integer)``, ``Struct``."""
    if not isinstance(schema, dict):
        return _short_repr(schema)
    name = str(schema.get("type"))
    param = schema.get("param")
    if isinstance(param, dict) and "type" in param:
        return "%s(%s)" % (name, _schema_text(param))
    if isinstance(param, str):
        return "%s(%s)" % (name, param)
    return name


def _diff_types(old: Any, new: Any, path: str, flows: tuple,
                out: _Changes) -> None:
    """Changes between two schema JSON values at one place, recursively."""
    if old == new:
        return
    if not isinstance(old, dict) or not isinstance(new, dict):
        out.add("type-changed", path, flows, "%s -> %s"
                % (_schema_text(old), _schema_text(new)))
        return
    before, after = old.get("type"), new.get("type")
    if before != after:
        bounded_old = any(k in old for k in _CONSTRAINT_KEYS)
        bounded_new = any(k in new for k in _CONSTRAINT_KEYS)
        kind = "type-changed"
        if (after == "JSON" or (before, after) in _WIDER) and not bounded_new:
            kind = "type-widened"
        elif (before == "JSON" or (after, before) in _WIDER) and \
                not bounded_old:
            kind = "type-narrowed"
        out.add(kind, path, flows, "%s -> %s"
                % (_schema_text(old), _schema_text(new)))
        return
    _diff_constraints(old, new, path, flows, out)
    for key in sorted(set(old) | set(new)):
        if key not in _CONSTRAINT_KEYS and key not in ("type", "param") \
                and old.get(key) != new.get(key):
            out.add("schema-changed", path, flows, "%s: %s -> %s" % (
                key, _short_repr(old.get(key)), _short_repr(new.get(key))))
    param, new_param = old.get("param"), new.get("param")
    if param == new_param:
        return
    if before == "Struct":
        _diff_fields(param, new_param, path, flows, out)
    elif before in ("cosmic.Link", "cosmic.Representation", "cosmic.Patch"):
        out.add("model-changed", path, flows, "%s -> %s"
                % (param, new_param))
    elif before in ("Array", "Map", "OrderedMap"):  # their items
        _diff_types(param, new_param, path + "[*]", flows, out)
    else:  # a custom type's parameter: what it means is its own
        out.add("schema-changed", path, flows, "param %s -> %s"
                % (_short_repr(param), _short_repr(new_param)))


def _diff_constraints(old: dict, new: dict, path: str, flows: tuple,
                      out: _Changes) -> None:
    for key in _LOWER_BOUNDS + _UPPER_BOUNDS:
        was, now = old.get(key), new.get(key)
        if was == now:
            continue
        text = "%s %s -> %s" % (key, _short_repr(was), _short_repr(now))
        if was is None or now is None:
            text = "%s %s %s" % (key, _short_repr(now if was is None else was),
                                 "added" if was is None else "removed")
        if now is None:
            out.add("constraint-removed", path, flows, text)
        elif was is None:
            out.add("constraint-added", path, flows, text)
        elif (now > was) == (key in _LOWER_BOUNDS):
            out.add("constraint-tightened", path, flows, text)
        else:
            out.add("constraint-loosened", path, flows, text)
    was, now = old.get("pattern"), new.get("pattern")
    if was != now:
        kind = "constraint-added" if was is None else \
            "constraint-removed" if now is None else "pattern-changed"
        out.add(kind, path, flows, "pattern %s -> %s"
                % (_short_repr(was), _short_repr(now)))
    was, now = old.get("enum"), new.get("enum")
    if was != now:
        if was is None or now is None:
            out.add("enum-added" if was is None else "enum-removed", path,
                    flows, "enum %s -> %s" % (_short_repr(was),
                                              _short_repr(now)))
        else:
            # Compared as JSON: 1 and true are different values.
            keys_was = {_json.dumps(v, sort_keys=True) for v in was}
            keys_now = {_json.dumps(v, sort_keys=True) for v in now}
            added = [v for v in now
                     if _json.dumps(v, sort_keys=True) not in keys_was]
            removed = [v for v in was
                       if _json.dumps(v, sort_keys=True) not in keys_now]
            if added:
                out.add("enum-value-added", path, flows,
                        "enum adds %s" % _short_repr(added))
            if removed:
                out.add("enum-value-removed", path, flows,
                        "enum drops %s" % _short_repr(removed))
    if old.get("message") != new.get("message"):
        out.add("message-changed", path, flows, "message %s -> %s" % (
            _short_repr(old.get("message")), _short_repr(new.get("message"))))


def _check_contract(client: BaseAPIClient) -> None:
    """Compare a client's live spec with the one it expects (see
    ``expected_spec``): raise or warn on breaking changes."""
    import logging
    changes = diff(client.expected_spec, client.spec)
    breaking = [c for c in changes if c.verdict == _BREAKING]
    logger = logging.getLogger("cosmic")
    for change in changes:
        if change.verdict != _BREAKING:
            logger.debug("API %s changed: %s", client.name, change)
    if not breaking:
        return
    message = "The API %s changed in ways that break this client:\n%s" % (
        client.name, "\n".join("  " + str(c) for c in breaking))
    if client.on_breaking == "warn":
        import warnings
        warnings.warn(message, RuntimeWarning, stacklevel=4)
        return
    raise ContractError(message, breaking)


# -- Testing helpers (cosmic.testing) -----------------------------------------

# What tests of a cosmic API use: an in-memory DB model, Wildcard, and a
# server on a free port.

db = SwappableDict()


class DBModel(BaseModel):
    """A model kept in memory in ``db[cls.table_name]`` (for tests)."""

    table_name: str = ""

    @classmethod
    def _table(cls) -> dict:
        return db.data.setdefault(cls.table_name or cls.__name__, {})

    @classmethod
    def get_by_id(cls, id):
        try:
            return cls._table()[id]
        except KeyError:
            raise NotFound from None

    @classmethod
    def get_list(cls, /, **query):
        return [(i, rep) for i, rep in cls._table().items()
                if all(rep.get(k) == v for k, v in query.items())]

    @classmethod
    def create(cls, /, **patch):
        table = cls._table()
        new_id = str(max([int(i) for i in table if i.isdigit()] + [-1]) + 1)
        table[new_id] = dict(patch)
        return new_id, table[new_id]

    @classmethod
    def update(cls, id, /, **patch):
        table = cls._table()
        if id not in table:
            raise NotFound
        table[id].update(patch)
        return table[id]

    @classmethod
    def delete(cls, id):
        if cls._table().pop(id, None) is None:
            raise NotFound


class _Wildcard:
    """Compares equal to anything (for assertions on generated values)."""

    def __eq__(self, other: Any) -> bool:
        return True

    def __ne__(self, other: Any) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]

    def __call__(self) -> _Wildcard:
        return self

    def __repr__(self) -> str:
        return "Wildcard"


Wildcard = _Wildcard()
"""Equal to anything: ``assert rep == {"id": Wildcard}``. As in the
original, the name is an instance; ``Wildcard()`` gives the same one."""


@_contextlib.contextmanager
def served_api(api: API, port: int = 0, **options: Any):
    """Serve ``api`` on 127.0.0.1 in a background thread for the block;
    yields the base URL (``port=0`` picks a free port).

    ``options`` are those of ``API.run``: for ``Server``, for
    ``serve_wsgi``, or the original's werkzeug options (ignored).
    """
    server_options, limits = _split_run_options(options)
    app = Server(api, **server_options)
    limits.setdefault("max_chunked_body", app.max_content_length)
    server = _make_server(app.wsgi_app, "127.0.0.1", port, **limits)
    thread = _threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- Compatibility modules ----------------------------------------------------
#
# cosmic.api, cosmic.types, ... are module objects made from the table of
# public names (_PUBLIC, at the top of the file), put in sys.modules so that
# ``import cosmic.types`` and ``from cosmic.http import *`` work with this
# one file. The copy that runs as __main__ (python -m cosmic) registers
# nothing (see main()).

def _install_aliases() -> None:
    from types import ModuleType
    this = _sys.modules[__name__]
    spec_class: Any = type(getattr(this, "__spec__", None))
    listed: dict = {}  # alias -> names in its __all__
    unlisted: dict = {}  # alias -> names it has but does not list
    for names, where in _PUBLIC:
        for short in where.split():
            if short.startswith("("):
                unlisted.setdefault(short.strip("()"), []).extend(
                    names.split())
            elif short != "cosmic":
                listed.setdefault(short, []).extend(names.split())
    for short, names in listed.items():
        full = "%s.%s" % (__name__, short)
        module: Any = ModuleType(full,
                                 "cosmic.%s: names from cosmic.py." % short)
        for name in names + unlisted.get(short, []):
            setattr(module, name, getattr(this, name))
        module.__all__ = names
        module.__file__ = getattr(this, "__file__", None)
        if spec_class is not type(None):
            module.__spec__ = spec_class(full, None, origin=module.__file__)
        _sys.modules[full] = module
        setattr(this, short, module)


if __name__ != "__main__":
    _install_aliases()


# -- Command line -------------------------------------------------------------

# python -m cosmic serve|call|spec|openapi|diff: main(argv) -> exit status.

class _UsageError(Exception):
    """A mistake on the command line: one line on stderr, exit status 2."""


def _load_module(text: str) -> Any:
    import importlib
    import importlib.util
    import os
    if text.endswith(".py") or os.sep in text or "/" in text:
        path = os.path.abspath(text)
        if not os.path.isfile(path):
            raise _UsageError("No such file: %s" % text)
        name = os.path.splitext(os.path.basename(path))[0]
        folder = os.path.dirname(path)
        if _stdlib_name(name):
            # json.py, socket.py: load it under another name, its folder
            # last on the path, so that it replaces no module of Python's.
            name = "_cosmic_target_" + name
            if folder not in _sys.path:
                _sys.path.append(folder)
        elif folder not in _sys.path:
            _sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise _UsageError("Not a Python file (expected a .py file): %s"
                              % text)
        module = importlib.util.module_from_spec(spec)
        _sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            _sys.modules.pop(name, None)
            raise _UsageError(_import_failure(text, exc)) from None
        return module
    if "" not in _sys.path and os.getcwd() not in _sys.path:
        _sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(text)
    except ModuleNotFoundError as err:
        if err.name and text.split(".")[0] == err.name.split(".")[0]:
            raise _UsageError("No module named %s" % text) from None
        raise _UsageError(_import_failure(text, err)) from None
    except Exception as exc:
        raise _UsageError(_import_failure(text, exc)) from None


def _stdlib_name(name: str) -> bool:
    """Whether ``name`` is a module of Python's standard library."""
    names = getattr(_sys, "stdlib_module_names", None)  # 3.10+
    if names is not None:
        return name in names
    if name in _sys.builtin_module_names:
        return True
    import importlib.machinery
    import os
    import sysconfig
    folders = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib")}
    folders |= {os.path.join(folder, "lib-dynload") for folder in folders}
    return importlib.machinery.PathFinder.find_spec(
        name, sorted(folders)) is not None


def _import_failure(text: str, exc: Exception) -> str:
    """One line for a target that fails to import, with where it failed."""
    import traceback
    where = ""
    if not isinstance(exc, SyntaxError):  # its text already says where
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            where = " (%s, line %s)" % (frames[-1].filename,
                                        frames[-1].lineno)
    return "Cannot import %s: %s: %s%s" % (text, type(exc).__name__, exc,
                                           where)


def _load_target(target: str) -> Any:
    """An API, Server or WSGI callable from ``module[:attr]`` or a file."""
    module_text, _, attr = target.rpartition(":")
    if not module_text or "/" in attr or attr.endswith(".py"):
        module_text, attr = target, ""
    module = _load_module(module_text)
    if attr:
        obj = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise _UsageError("%s has no attribute %r"
                                  % (module_text, attr)) from None
        if not (isinstance(obj, (API, Server)) or _wsgi_callable(obj)):
            raise _UsageError("%s is not an API, a Server or a WSGI app (a "
                              "callable taking environ and start_response)"
                              % target)
        return obj
    apis: list = []
    for value in vars(module).values():
        if isinstance(value, API) and all(value is not a for a in apis):
            apis.append(value)
    if not apis:
        raise _UsageError("No API found in %s; name one with %s:ATTR"
                          % (module_text, module_text))
    if len(apis) > 1:
        raise _UsageError("Several APIs in %s (%s); name one with %s:ATTR"
                          % (module_text, ", ".join(a.name for a in apis),
                             module_text))
    return apis[0]


def _wsgi_callable(obj: Any) -> bool:
    """Whether obj can be called as a WSGI app, with two arguments."""
    import inspect
    if not callable(obj):
        return False
    try:
        inspect.signature(obj).bind(None, None)
    except TypeError:
        return False
    except ValueError:  # no signature to read (some built-ins): trust it
        return True
    return True


def _wrapped_server(app: Any) -> Server | None:
    """The Server whose wsgi_app an app is, or wraps (``__wrapped__``, as
    functools.wraps and thread_local_middleware set it)."""
    for _ in range(100):
        owner = getattr(app, "__self__", None)
        if isinstance(owner, Server):
            return owner
        app = getattr(app, "__wrapped__", None)
        if app is None:
            break
    return None


def _as_app(obj: Any) -> tuple:
    """``(wsgi_app, name, api_or_None)`` for a loaded target."""
    if isinstance(obj, API):
        return Server(obj).wsgi_app, obj.name, obj
    if isinstance(obj, Server):
        return obj.wsgi_app, obj.api.name, obj.api
    server = _wrapped_server(obj)
    if server is not None:
        return obj, server.api.name, server.api
    return obj, getattr(obj, "__name__", "app"), None


def _cmd_serve(args: Any) -> int:
    target = _load_target(args.target)
    app, name, _ = _as_app(target)
    limits: dict = {}
    server = target if isinstance(target, Server) else \
        Server if isinstance(target, API) else _wrapped_server(target)
    if server is not None:
        # Chunked bodies are buffered by the server: no more than the app
        # will accept.
        limits["max_chunked_body"] = server.max_content_length

    def ready(server):
        host, port = server.server_address[:2]
        if ":" in host:
            host = "[%s]" % host
        print("Serving %s on http://%s:%d/ (Ctrl-C to stop)"
              % (name, host, port), flush=True)

    for option in ("threads", "max_connections", "graceful_timeout"):
        limits[option] = getattr(args, option)
    import os
    if args.workers > 1 and not hasattr(os, "fork"):
        raise _UsageError("--workers needs fork(), which this system lacks")
    try:
        serve_wsgi(app, host=args.host, port=args.port, ready=ready,
                   workers=args.workers, **limits)
    except OSError as err:
        raise _UsageError("Cannot listen on %s:%s: %s" % (
            args.host, args.port, err.strerror or err)) from None
    return 0


def _positive_int(text: str) -> int:
    import argparse
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("expected a whole number of at "
                                         "least 1, got %r" % text)
    return value


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _read_secret(option: str, text: str) -> str:
    """A secret given as ``env:NAME`` (read from $NAME), ``-`` (the first
    line of stdin) or, least safely, literally."""
    import os
    if text == "-":
        secret = _sys.stdin.readline().strip()
    elif text.startswith("env:"):
        secret = os.environ.get(text[4:], "")
        if not secret:
            raise _UsageError("%s %s: the environment variable %s is not set"
                              " or empty" % (option, text, text[4:]))
    else:
        secret = text
    if not secret:
        raise _UsageError("%s: empty secret" % option)
    return secret


def _cli_auth(args: Any) -> Any:
    """The client's ``auth`` from --token / --api-key, or None."""
    token = getattr(args, "token", None)
    api_key = getattr(args, "api_key", None)
    if token is not None and api_key is not None:
        raise _UsageError("give --token or --api-key, not both")
    values = [getattr(args, "args", None) or []]
    if "-" in (token, api_key) and "-" in values[0]:
        raise _UsageError("stdin can give the secret or the JSON argument,"
                          " not both")
    if token is not None:
        return {"bearer": _read_secret("--token", token)}
    if api_key is not None:
        return {"api_key": _read_secret("--api-key", api_key)}
    return None


def _client_class(headers: list) -> type:
    extra = {}
    for header in headers:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            # The value is not shown: it may be a credential.
            raise _UsageError("--header must look like 'Name: value'; got "
                              "one without a colon")
        extra[name.strip()] = value.strip()

    class _CLIClient(APIClient):
        def build_request(self, endpoint, /, *args, **kwargs):
            request = super().build_request(endpoint, *args, **kwargs)
            request.headers.update(extra)
            return request

    return _CLIClient


def _spec_json_of(target: str, headers: list, auth: Any = None) -> dict:
    if _is_url(target):
        client = _client_class(headers)(base_url=target, auth=auth)
        client.close()
        return APISpec.to_json(client.spec)
    if auth is not None:
        raise _UsageError("--token and --api-key go with a URL, not %s"
                          % target)
    obj = _load_target(target)
    api = obj.api if isinstance(obj, Server) else obj
    if not isinstance(api, API):
        raise _UsageError("%s is not an API" % target)
    return APISpec.to_json(api.spec)


def _write_json(datum: Any, output: str | None) -> None:
    text = _json.dumps(datum, indent=2) + "\n"
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        _sys.stdout.write(text)


def _cmd_spec(args: Any) -> int:
    _write_json(_spec_json_of(args.target, args.header, _cli_auth(args)),
                None)
    return 0


def _cmd_openapi(args: Any) -> int:
    spec = _spec_json_of(args.target, args.header, _cli_auth(args))
    servers = [args.target] if _is_url(args.target) else None
    _write_json(openapi(_SpecAPI(spec), servers=servers), args.output)
    return 0


class _SpecAPI(BaseAPI):
    """An API known only by its spec JSON (for documents and pages)."""

    def __init__(self, spec_json: dict) -> None:
        super().__init__(APISpec.from_json(spec_json))


def _parse_json_arg(text: str) -> Any:
    if text == "-":
        text = _sys.stdin.read()
    try:
        return _loads_strict(text)
    except ValueError:
        raise _UsageError("Not valid JSON: %s" % _cap(text)) from None


def _cmd_call(args: Any) -> int:
    if not _is_url(args.url):
        raise _UsageError("URL must start with http:// or https://")
    client = _client_class(args.header)(base_url=args.url,
                                        auth=_cli_auth(args))
    try:
        return _call(client, args)
    finally:
        client.close()


def _call(client: APIClient, args: Any) -> int:
    name, dot, method = args.name.partition(".")
    values = list(args.args)
    if not dot:
        if name not in client.spec["actions"]:
            raise _UsageError("No action %r; actions: %s" % (
                name, ", ".join(client.spec["actions"]) or "none"))
        entry = client.spec["actions"][name]
        if len(values) > 1:
            raise _UsageError("An action takes one JSON argument")
        func = getattr(client.actions, name)
        datum = _parse_json_arg(values[0]) if values else None
        accepts = entry.get("accepts")
        if accepts is None:
            if values:
                raise _UsageError("Action %s takes no input" % name)
            result = func()
        else:
            if not values:
                raise _UsageError("Action %s needs a JSON argument" % name)
            result = func(accepts.from_json(datum))
        returns = entry.get("returns")
        if returns is not None:
            _write_json(returns.to_json(result), None)
        return 0
    if name not in client.spec["models"] or method not in MODEL_METHODS:
        raise _UsageError("No model method %r; use Model.%s"
                          % (args.name, "|".join(MODEL_METHODS)))
    func = getattr(getattr(client.models, name), method)
    rep = func.endpoint.representation
    if method in ("get_by_id", "delete"):
        if len(values) != 1:
            raise _UsageError("%s takes one id" % args.name)
        result = func(values[0])
        if method == "get_by_id":
            _write_json(rep.to_json((values[0], result)), None)
        return 0
    if method == "create":
        if len(values) != 1:
            raise _UsageError("create takes one JSON object of fields")
        fields = _parse_json_arg(values[0])
        if not isinstance(fields, dict):
            raise _UsageError("create takes one JSON object of fields")
        ident, result = func(**func.endpoint.patch.from_json(fields)[1])
        _write_json(rep.to_json((ident, result)), None)
        return 0
    if method == "update":
        if len(values) != 2:
            raise _UsageError("update takes an id and a JSON object")
        fields = _parse_json_arg(values[1])
        if not isinstance(fields, dict):
            raise _UsageError("update takes an id and a JSON object")
        result = func(values[0], **func.endpoint.patch.from_json(fields)[1])
        _write_json(rep.to_json((values[0], result)), None)
        return 0
    query = {}
    if len(values) > 1:
        raise _UsageError("get_list takes one JSON object of query fields")
    if values:
        query = _parse_json_arg(values[0])
        if not isinstance(query, dict):
            raise _UsageError("get_list takes one JSON object of query "
                              "fields")
    result = func(**query)
    meta = None
    if isinstance(result, tuple):
        result, meta = result
    out = {"items": [rep.to_json(pair) for pair in result]}
    if meta is not None:
        out["metadata"] = func.endpoint.metadata.to_json(meta)
    _write_json(out, None)
    return 0


def _add_auth_options(cmd: Any) -> None:
    where = "env:NAME reads $NAME, - reads a line of stdin"
    cmd.add_argument("--token", metavar="SECRET",
                     help="bearer token sent to the URL (%s)" % where)
    cmd.add_argument("--api-key", metavar="SECRET",
                     help="API key sent to the URL in the header the API "
                     "declares (%s)" % where)


def _spec_side(side: str, headers: list, alone: bool = True,
               auth: Any = None) -> dict:
    """One side of ``diff``: a spec JSON file, a server's URL (sent
    ``auth``, if any), or a serve-style target (imported in a process of
    its own unless ``alone``: two versions of one module, or of its
    siblings, would collide)."""
    import os
    if not alone and not _is_url(side) and not side.endswith(".json"):
        return _spec_json(_spec_in_subprocess(side))
    if _is_url(side):
        # The raw JSON, not APISpec's reading of it: keys this version does
        # not know are compared, not refused.
        empty: dict = {"map": {}, "order": []}
        client = _client_class(headers)(base_url=side, spec={
            "name": "diff", "actions": empty, "models": empty}, auth=auth)
        try:
            endpoint = SpecEndpoint()
            response = client.make_request(
                endpoint, client.build_request(endpoint))
            credential = client._credential
            if response.status_code == 401 and credential is not None and \
                    credential.learn(_challenged(
                        response.headers.get("WWW-Authenticate", ""))):
                response = client.make_request(
                    endpoint, client.build_request(endpoint))
            _check_status(endpoint, response)
            datum = _response_json(response)
        finally:
            client.close()
    elif side.endswith(".json"):
        if not os.path.isfile(side):
            raise _UsageError("No such file: %s" % side)
        with open(side, encoding="utf-8") as f:
            text = f.read()
        try:
            datum = _loads_strict(text)
        except ValueError:
            raise _UsageError("%s is not valid JSON" % side) from None
    else:
        return _spec_json_of(side, headers)
    try:
        return _spec_json(datum)
    except SpecError:
        raise _UsageError("%s does not hold a Cosmic spec" % side) from None


def _spec_in_subprocess(target: str) -> Any:
    """``python -m cosmic spec TARGET`` in a new process: its spec JSON."""
    import subprocess
    proc = subprocess.run([_sys.executable, __file__, "spec", target],
                          capture_output=True, text=True)
    if proc.returncode:
        lines = proc.stderr.strip().splitlines() or ["exit status %d"
                                                     % proc.returncode]
        raise _UsageError(lines[-1].replace("cosmic: error: ", "", 1))
    return _loads_strict(proc.stdout)


def _cmd_diff(args: Any) -> int:
    targets = [side for side in (args.old, args.new)
               if not _is_url(side) and not side.endswith(".json")]
    alone = len(targets) < 2
    auth = _cli_auth(args)
    if auth is not None and not (_is_url(args.old) or _is_url(args.new)):
        raise _UsageError("--token and --api-key go with a URL")
    changes = diff(_spec_side(args.old, args.header, alone, auth),
                   _spec_side(args.new, args.header, alone, auth))
    failing = {_BREAKING} if args.fail_on == "breaking" else {
        _BREAKING, _COMPATIBLE}
    if args.format == "json":
        _write_json([c.as_json() for c in changes], None)
    elif args.format == "markdown" and changes:
        lines = ["| Verdict | Where | Kind | Change |",
                 "| --- | --- | --- | --- |"]
        for c in changes:
            verdict = "**breaking** (%s)" % c.direction.replace(",", ", ") \
                if c.verdict == _BREAKING else c.verdict
            lines.append("| %s | `%s` | %s | %s |" % tuple(
                text.replace("|", "\\|") for text in
                (verdict, c.path, c.kind, c.message)))
        _sys.stdout.write("\n".join(lines) + "\n")
    elif args.format == "text":
        for change in changes:
            print(change)
    return 1 if any(c.verdict in failing for c in changes) else 0


def _parser() -> Any:
    import argparse
    prog = "cosmic" if _sys.argv and _sys.argv[0].endswith(
        ("/cosmic", "\\cosmic", "cosmic.exe")) else "python -m cosmic"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve, inspect and call Cosmic APIs.")
    parser.add_argument("--version", action="version",
                        version="cosmic " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    target_help = ("module:attr, module, path/to/file.py or "
                   "path/to/file.py:attr; attr names an API, a Server or a "
                   "WSGI app (default: the one API in the module)")
    serve = commands.add_parser(
        "serve", help="serve an API over HTTP",
        description="Serve an API with the threaded development server.")
    serve.add_argument("target", metavar="TARGET", help=target_help)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000,
                       help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--threads", metavar="N",
                       type=_positive_int, default=32,
                       help="threads serving requests (default 32); idle "
                            "connections use none")
    serve.add_argument("--max-connections", metavar="N",
                       type=_positive_int, default=512,
                       help="open connections (default 512); at the cap the "
                            "oldest idle one is closed")
    serve.add_argument("--graceful-timeout", metavar="SECONDS",
                       type=float, default=10.0,
                       help="seconds requests in flight get to finish on "
                            "SIGTERM or Ctrl-C (default 10)")
    serve.add_argument("--workers", metavar="N",
                       type=_positive_int, default=1,
                       help="worker processes sharing the socket (default 1; "
                            "POSIX)")
    serve.set_defaults(run=_cmd_serve)
    for name, helptext in (("spec", "print an API's /spec.json"),
                           ("openapi", "print an API's OpenAPI document")):
        cmd = commands.add_parser(name, help=helptext, description=helptext)
        cmd.add_argument("target", metavar="TARGET",
                         help=target_help + ", or the URL of a server")
        cmd.add_argument("--header", action="append", default=[],
                         help="'Name: value' sent to a URL (repeatable)")
        _add_auth_options(cmd)
        if name == "openapi":
            cmd.add_argument("-o", "--output", metavar="FILE",
                             help="write to FILE instead of stdout")
        cmd.set_defaults(run=_cmd_spec if name == "spec" else _cmd_openapi)
    call = commands.add_parser(
        "call", help="call an action or model method of a server",
        description="Call ACTION with one JSON argument ('-' reads stdin), "
        "or Model.get_by_id ID, Model.delete ID, Model.create JSON, "
        "Model.update ID JSON, Model.get_list [JSON]; prints JSON.")
    call.add_argument("url", metavar="URL", help="the server's base URL")
    call.add_argument("name", metavar="NAME", help="ACTION or Model.method")
    call.add_argument("args", metavar="ARG", nargs="*")
    call.add_argument("--header", action="append", default=[],
                      help="'Name: value' sent with every request "
                      "(repeatable)")
    _add_auth_options(call)
    call.set_defaults(run=_cmd_call)
    compare = commands.add_parser(
        "diff", help="list the changes between two versions of an API",
        description="Compare two versions of an API's spec and say which "
        "changes break callers written against OLD. Exit status: 0 when "
        "nothing breaks, 1 when something does, 2 for usage errors.")
    for side in ("old", "new"):
        compare.add_argument(side, metavar=side.upper(), help="a spec JSON "
                             "file, the URL of a server, or " + target_help)
    compare.add_argument("--format", choices=("text", "json", "markdown"),
                         default="text", help="output format (default text)")
    compare.add_argument("--fail-on", choices=("breaking", "compatible"),
                         default="breaking", help="exit 1 on breaking "
                         "changes (default), or on any compatible one too")
    compare.add_argument("--header", action="append", default=[],
                         help="'Name: value' sent to a URL (repeatable)")
    _add_auth_options(compare)
    compare.set_defaults(run=_cmd_diff)
    return parser


def main(argv: list | None = None) -> int:
    """The command line: serve, spec, openapi, call, diff. Returns the exit
    code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except _UsageError as err:
        print("cosmic: error: %s" % err, file=_sys.stderr)
        return 2
    except RemoteHTTPError as err:
        print("cosmic: HTTP %d: %s" % (err.code, err.message or ""),
              file=_sys.stderr)
        return 1
    except NotFound:
        print("cosmic: HTTP 404: Not Found", file=_sys.stderr)
        return 1
    except (ValidationError, SpecError) as err:
        print("cosmic: error: %s" % err, file=_sys.stderr)
        return 2
    except OSError as err:
        print("cosmic: error: %s" % err, file=_sys.stderr)
        return 1


def _console_main() -> None:
    _sys.exit(main())


if __name__ == "__main__":
    # This copy runs as __main__; work in the real cosmic module instead, so
    # that user code and the command share one set of classes.
    import cosmic as _cosmic
    _sys.exit(_cosmic.main())
