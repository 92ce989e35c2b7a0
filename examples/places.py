"""A persistent ``places`` API: cities and their addresses, kept in SQLite.

The database file is named by the PLACES_DB environment variable (default:
``places.db`` in the current directory). Its tables are created when the
first request comes in, and the data survives restarts. Serve it with

    PLACES_DB=/tmp/places.db python -m cosmic serve examples/places.py

or with gunicorn, whose worker processes can share the one file:

    PLACES_DB=/tmp/places.db gunicorn -w 4 --chdir examples places:wsgi_app

Then, at the address the server printed:

    curl -X POST -H 'Content-Type: application/json' \\
         -d '{"name": "Moscow", "country": "Russia"}' \\
         http://127.0.0.1:8000/City
    curl http://127.0.0.1:8000/City/1
    curl 'http://127.0.0.1:8000/City?country=Russia&limit=10&offset=0'
    curl -X PUT -H 'Content-Type: application/json' \\
         -d '{"population": 13000000}' http://127.0.0.1:8000/City/1
    curl -X POST -H 'Content-Type: application/json' \\
         -d '{"number": 7, "street": "Tverskaya",
              "_links": {"city": {"href": "/City/1"}}}' \\
         http://127.0.0.1:8000/Address
    curl 'http://127.0.0.1:8000/Address?city=1'
    curl -X POST http://127.0.0.1:8000/actions/stats
"""

import os
import re
import sqlite3
import threading
from contextlib import contextmanager

from cosmic.api import API
from cosmic.exceptions import HTTPError, NotFound
from cosmic.http import Server
from cosmic.models import BaseModel
from cosmic.types import (
    Integer, String, Struct, ValidationError, optional, required)

DB_PATH = os.environ.get("PLACES_DB", "places.db")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100

# SQLite integers are signed 64-bit: a larger Python int cannot be stored.
_MAX_INT = 2 ** 63 - 1
# Stored numbers stay within what every JSON reader keeps exactly
# (RFC 7493: I-JSON), JavaScript's included.
_MAX_SAFE = 2 ** 53 - 1
# An id is a rowid in plain decimal, so that each row has exactly one id
# ("01" would otherwise name row 1 too).
_ID_PATTERN = re.compile(r"[1-9][0-9]{0,17}")
# AUTOINCREMENT: an id is never reused, even after the last row is deleted.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS city (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL, country TEXT, population INTEGER)",
    "CREATE TABLE IF NOT EXISTS address (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " number INTEGER NOT NULL, street TEXT NOT NULL,"
    " city_id INTEGER NOT NULL REFERENCES city (id))",
    "CREATE INDEX IF NOT EXISTS address_city_id ON address (city_id)",
)
_CITY_COLUMNS = ("name", "country", "population")
_ADDRESS_COLUMNS = ("number", "street", "city_id")

_local = threading.local()


def _connection():
    """Return this thread's connection, opening it on first use.

    A sqlite3 connection must stay in the thread that made it. The timeout
    makes a writer wait up to 30 s for other threads and processes instead
    of failing with "database is locked".
    """
    conn = getattr(_local, "conn", None)
    if conn is None:
        # isolation_level=None: no implicit transactions; _transaction()
        # says where each one begins and ends.
        conn = sqlite3.connect(DB_PATH, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            # WAL lets readers go on while a writer commits. The mode is
            # stored in the file, so one success serves every process.
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # busy or unsupported: the default journal works too
        conn.execute("PRAGMA foreign_keys=ON")
        with _transaction(write=True, conn=conn):
            for statement in _SCHEMA:
                conn.execute(statement)
        _local.conn = conn
    return conn


@contextmanager
def _transaction(write=False, conn=None):
    """Run a block in one transaction: commit on success, else roll back.

    Writers begin with BEGIN IMMEDIATE, which takes the write lock at once
    (waiting for the busy timeout). A plain BEGIN would take it only at the
    first write; meeting another writer then fails at once, and two
    requests could both pass a check (does the city exist?) before either
    writes.
    """
    if conn is None:
        conn = _connection()
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _parse_id(text):
    """Return the rowid an id names, or None if it cannot name a row."""
    return int(text) if _ID_PATTERN.fullmatch(text) else None


def _rowid(id):
    """Return the rowid for an id from a URL, or raise NotFound."""
    rowid = _parse_id(id)
    if rowid is None:
        raise NotFound
    return rowid


def _fetch(conn, table, rowid):
    """Return one row, or raise NotFound."""
    row = conn.execute(
        "SELECT * FROM %s WHERE id = ?" % table, (rowid,)).fetchone()
    if row is None:
        raise NotFound
    return row


def _check_text(patch, names):
    """Refuse strings SQLite cannot store: JSON lets "\\ud800" through."""
    for name in names:
        try:
            patch.get(name, "").encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("%s must be valid Unicode"
                                  % name.capitalize(), patch[name]) from None


def _update(conn, table, rowid, values, columns):
    """Set those columns that ``values`` holds; return the row afterwards."""
    names = [name for name in columns if name in values]
    if names:
        # Table and column names come from this module, never from the
        # request; the values are bound as parameters.
        conn.execute("UPDATE %s SET %s WHERE id = ?" % (
            table, ", ".join("%s = ?" % name for name in names)),
            [values[name] for name in names] + [rowid])
    return _fetch(conn, table, rowid)


def _delete(conn, table, rowid):
    """Delete one row, or raise NotFound."""
    cursor = conn.execute("DELETE FROM %s WHERE id = ?" % table, (rowid,))
    if cursor.rowcount == 0:
        raise NotFound


def _page(table, filters, limit, offset, to_rep):
    """Return one page of rows, ordered by id, and the number of matches.

    ``filters`` maps columns to the value they must equal (None: any).
    """
    limit = DEFAULT_LIMIT if limit is None else limit
    names = [name for name in filters if filters[name] is not None]
    where = " AND ".join("%s = ?" % name for name in names) or "1"
    params = [filters[name] for name in names]
    with _transaction() as conn:
        total = conn.execute("SELECT COUNT(*) FROM %s WHERE %s" % (
            table, where), params).fetchone()[0]
        rows = conn.execute(
            "SELECT * FROM %s WHERE %s ORDER BY id LIMIT ? OFFSET ?" % (
                table, where),
            params + [limit, min(offset or 0, _MAX_INT)]).fetchall()
    items = [(str(row["id"]), to_rep(row)) for row in rows]
    return items, {"total_count": total}


places = API("places")

# The rules a schema can state are constraints, so that the spec, the
# OpenAPI document, the docs page and every client know them; what only
# code can check stays in validate_patch (a 400 in the document).
_PAGING = [
    optional("limit", Integer(minimum=1, maximum=MAX_LIMIT),
             "Page size (default 20)"),
    optional("offset", Integer(minimum=0), "Matches to skip (default 0)"),
]
# A name starts with neither a lower-case ASCII letter nor a space.
_NAME = String(pattern=r"^[^\sa-z]", message="Name must be capitalized")
_TOTAL = [required("total_count", Integer, "Matches, before paging")]


def _city_rep(row):
    """Turn a city row into its representation."""
    return {name: row[name] for name in _CITY_COLUMNS}


@places.model
class City(BaseModel):
    """A city, with an optional country and population."""

    methods = ["get_by_id", "get_list", "create", "update", "delete"]
    properties = [
        required("name", _NAME, "Capitalized"),
        optional("country", String),
        optional("population", Integer(minimum=0, maximum=_MAX_SAFE)),
    ]
    create_requires = ["name"]
    query_fields = [
        optional("name", String, "Only cities with exactly this name"),
        optional("country", String, "Only cities in this country"),
    ] + _PAGING
    list_metadata = _TOTAL

    @classmethod
    def validate_patch(cls, patch):
        """Refuse text SQLite cannot store (400); the schemas check the
        rest."""
        _check_text(patch, ["name", "country"])

    @classmethod
    def get_by_id(cls, id):
        """Return the city with this id, or raise NotFound."""
        return _city_rep(_fetch(_connection(), "city", _rowid(id)))

    @classmethod
    def get_list(cls, name=None, country=None, limit=None, offset=None):
        """Return a page of cities and the number of matches."""
        return _page("city", {"name": name, "country": country},
                     limit, offset, _city_rep)

    @classmethod
    def create(cls, patch):
        """Insert a city; return its new id and representation."""
        rep = {name: patch.get(name) for name in _CITY_COLUMNS}
        with _transaction(write=True) as conn:
            cursor = conn.execute(
                "INSERT INTO city (name, country, population)"
                " VALUES (?, ?, ?)", list(rep.values()))
        return str(cursor.lastrowid), rep

    @classmethod
    def update(cls, id, patch):
        """Change the fields present in the patch; keep the others."""
        with _transaction(write=True) as conn:
            row = _update(conn, "city", _rowid(id), patch, _CITY_COLUMNS)
        return _city_rep(row)

    @classmethod
    def delete(cls, id):
        """Delete a city, unless addresses link to it (409).

        Refusing is safer than cascading: deleting a city by mistake must
        not take its addresses with it. Delete those first.
        """
        rowid = _rowid(id)
        with _transaction(write=True) as conn:
            if conn.execute("SELECT 1 FROM address WHERE city_id = ?",
                            (rowid,)).fetchone():
                raise HTTPError(409, "City has addresses")
            _delete(conn, "city", rowid)


def _address_rep(row):
    """Turn an address row into its representation (the link as an id)."""
    return {"number": row["number"], "street": row["street"],
            "city": str(row["city_id"])}


def _existing_city(conn, city):
    """Return the rowid of the linked city, or refuse the request."""
    rowid = _parse_id(city)
    if rowid is None or not conn.execute(
            "SELECT 1 FROM city WHERE id = ?", (rowid,)).fetchone():
        raise HTTPError(400, "No City with id %r" % city)
    return rowid


@places.model
class Address(BaseModel):
    """A street address in a city."""

    methods = ["get_by_id", "get_list", "create", "update", "delete"]
    properties = [
        required("number", Integer(minimum=1, maximum=_MAX_SAFE),
                 "House number"),
        required("street", String(pattern=r"\S",
                                  message="Street must not be empty")),
    ]
    links = [required("city", City)]
    create_requires = ["number", "street", "city"]
    query_fields = [
        optional("city", String, "Only addresses in the city with this id"),
    ] + _PAGING
    list_metadata = _TOTAL

    @classmethod
    def validate_patch(cls, patch):
        """Refuse text SQLite cannot store (400); the schemas check the
        rest. A link to a city that does not exist is refused by create
        and update (400)."""
        _check_text(patch, ["street"])

    @classmethod
    def get_by_id(cls, id):
        """Return the address with this id, or raise NotFound."""
        return _address_rep(_fetch(_connection(), "address", _rowid(id)))

    @classmethod
    def get_list(cls, city=None, limit=None, offset=None):
        """Return a page of addresses and the number of matches."""
        city_id = None
        if city is not None:
            city_id = _parse_id(city) or 0  # 0 names no city: ids start at 1
        return _page("address", {"city_id": city_id}, limit, offset,
                     _address_rep)

    @classmethod
    def create(cls, patch):
        """Insert an address; return its new id and representation."""
        with _transaction(write=True) as conn:
            city_id = _existing_city(conn, patch["city"])
            cursor = conn.execute(
                "INSERT INTO address (number, street, city_id)"
                " VALUES (?, ?, ?)",
                (patch["number"], patch["street"], city_id))
            return str(cursor.lastrowid), _address_rep(
                _fetch(conn, "address", cursor.lastrowid))

    @classmethod
    def update(cls, id, patch):
        """Change the fields present in the patch; keep the others."""
        values = dict(patch)
        with _transaction(write=True) as conn:
            if "city" in values:
                values["city_id"] = _existing_city(conn, values.pop("city"))
            row = _update(conn, "address", _rowid(id), values,
                          _ADDRESS_COLUMNS)
        return _address_rep(row)

    @classmethod
    def delete(cls, id):
        """Delete an address, or raise NotFound."""
        with _transaction(write=True) as conn:
            _delete(conn, "address", _rowid(id))


@places.action(returns=Struct([
    required("cities", Integer),
    required("addresses", Integer),
]))
def stats():
    """Count the cities and the addresses in the database."""
    with _transaction() as conn:
        cities = conn.execute("SELECT COUNT(*) FROM city").fetchone()[0]
        addresses = conn.execute("SELECT COUNT(*) FROM address").fetchone()[0]
    return {"cities": cities, "addresses": addresses}


@places.action(accepts=Struct([
    required("id", String, "The city's id"),
    required("name", _NAME, "Its new name"),
]), returns=String)
def rename_city(id, name):
    """Rename a city and return its previous name."""
    try:
        City.validate_patch({"name": name})
    except ValidationError as err:
        raise HTTPError(400, str(err)) from None
    rowid = _parse_id(id)
    with _transaction(write=True) as conn:
        row = rowid and conn.execute(
            "SELECT name FROM city WHERE id = ?", (rowid,)).fetchone()
        if not row:
            raise HTTPError(404, "No City with id %r" % id)
        conn.execute("UPDATE city SET name = ? WHERE id = ?", (name, rowid))
    return row["name"]


wsgi_app = Server(places).wsgi_app
