"""The ``mathy`` API from the user guide's chapter on actions.

It shows the shapes an action can take: one argument (``add``), several
arguments in a Struct (``divide``), no input (``now``), no output
(``log_message``).

    python -m cosmic serve examples/mathy.py

    curl -X POST -H 'Content-Type: application/json' \\
         -d '[1, 2, 3]' http://127.0.0.1:8000/actions/add
    curl -X POST -H 'Content-Type: application/json' \\
         -d '{"numerator": 10, "denominator": 5}' \\
         http://127.0.0.1:8000/actions/divide
    curl -X POST http://127.0.0.1:8000/actions/now
    curl -X POST -H 'Content-Type: application/json' \\
         -d '"hello"' http://127.0.0.1:8000/actions/log_message
    curl -X POST http://127.0.0.1:8000/actions/messages
"""

import threading
from datetime import datetime, timezone

from cosmic.api import API
from cosmic.exceptions import HTTPError
from cosmic.http import Server
from cosmic.types import Array, DateTime, Integer, String, Struct, required

mathy = API("mathy")

_messages = []
_messages_lock = threading.Lock()


@mathy.action(accepts=Array(Integer), returns=Integer)
def add(numbers):
    """Return the sum of a list of integers."""
    return sum(numbers)


@mathy.action(
    accepts=Struct([
        required("numerator", Integer),
        required("denominator", Integer),
    ]),
    returns=Integer,
)
def divide(numerator, denominator):
    """Divide two integers; the division must be exact.

    As in the user guide, ``/`` is used: on Python 3 it gives a float
    (10 / 5 == 2.0), which the Integer type accepts because it is integral.
    Floats are exact up to 2**53 only. A zero divisor, a remainder or an
    overflowing result is the caller's mistake: 400, not a crash.
    """
    if denominator == 0:
        raise HTTPError(400, "Cannot divide by zero")
    if numerator % denominator:
        raise HTTPError(
            400, "%d is not a multiple of %d" % (numerator, denominator))
    try:
        return numerator / denominator
    except OverflowError:
        raise HTTPError(400, "Result is too large") from None


@mathy.action(returns=DateTime)
def now():
    """Return the server's current time, in UTC."""
    return datetime.now(timezone.utc)


@mathy.action(accepts=String)
def log_message(message):
    """Append a message to the server's in-memory log; return nothing."""
    with _messages_lock:
        _messages.append(message)


@mathy.action(returns=Array(String))
def messages():
    """Return every message logged so far, oldest first."""
    with _messages_lock:
        return list(_messages)


wsgi_app = Server(mathy).wsgi_app
