"""The applications the benchmark compares, all doing the same work.

Two exchanges:

* ``POST /actions/divide`` with ``{"numerator": 10, "denominator": 5}``:
  check method and path, Content-Type, read CONTENT_LENGTH bytes, parse the
  JSON, require an object with exactly the two keys, both ints (not bools),
  refuse a zero denominator, answer ``2`` as JSON; 400 on bad input.
* ``GET /City/1``: look the city up in a dict and answer its HAL
  representation ``{"_links": {"self": {"href": "/City/1"}}, "name": ...,
  "population": ...}``; 404 for an unknown id.

Contenders: cosmic (``mathy`` and ``places`` APIs), a hand-written raw WSGI
app (the floor), and bottle, falcon and flask apps written by hand. The peer
frameworks are imported only when their app is built, so this module imports
with the standard library and cosmic alone (``python -m cosmic serve
bench/bench_apps.py:mathy`` and gunicorn load it).
"""

import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_HERE)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from cosmic import (  # noqa: E402
    API, BaseModel, HTTPError, Integer, NotFound, Server, String, Struct,
    required)

DIVIDE_PATH = "/actions/divide"
DIVIDE_BODY = b'{"numerator": 10, "denominator": 5}'
CITY_PATH = "/City/1"
CITIES = {
    "1": {"name": "Toronto", "population": 2800000},
    "2": {"name": "Montreal", "population": 1700000},
}
MAX_BODY = 1 << 20
JSON_TYPE = "application/json"


# -- cosmic -------------------------------------------------------------------

mathy = API("mathy")


@mathy.action(accepts=Struct([required("numerator", Integer),
                              required("denominator", Integer)]),
              returns=Integer)
def divide(numerator, denominator):
    """Integer division; a zero denominator is the caller's mistake."""
    if denominator == 0:
        raise HTTPError(400, "Cannot divide by zero")
    return numerator // denominator


places = API("places")


@places.model
class City(BaseModel):
    properties = [required("name", String), required("population", Integer)]
    methods = ["get_by_id"]

    @classmethod
    def get_by_id(cls, id):
        try:
            return CITIES[id]
        except KeyError:
            raise NotFound from None


cosmic_divide_app = Server(mathy).wsgi_app
cosmic_city_app = Server(places).wsgi_app
cosmic_city_app_no_etags = Server(places, etags=False).wsgi_app


# -- shared checks used by the hand-written apps ------------------------------

def check_divide_input(data):
    """The quotient for a parsed body, or None when the input is invalid."""
    if type(data) is not dict or len(data) != 2:
        return None
    numerator = data.get("numerator")
    denominator = data.get("denominator")
    if type(numerator) is not int or type(denominator) is not int \
            or denominator == 0:
        return None
    return numerator // denominator


def is_json_type(content_type):
    return content_type.partition(";")[0].strip().lower() == JSON_TYPE


def city_body(ident):
    """The HAL body of a city as bytes, or None when there is no such city."""
    city = CITIES.get(ident)
    if city is None:
        return None
    return json.dumps({"_links": {"self": {"href": "/City/" + ident}},
                       "name": city["name"],
                       "population": city["population"]}).encode("ascii")


def _error_body(message):
    return json.dumps({"error": message}).encode("ascii")


# -- raw WSGI (the floor) -----------------------------------------------------

def _raw_answer(start_response, status, body):
    start_response(status, [("Content-Type", JSON_TYPE),
                            ("Content-Length", str(len(body)))])
    return [body]


def raw_app(environ, start_response):
    """Plain PEP 3333 app: both routes, every check written out."""
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "")
    if path == DIVIDE_PATH:
        if method != "POST":
            return _raw_answer(start_response, "405 Method Not Allowed",
                               _error_body("Method Not Allowed"))
        if not is_json_type(environ.get("CONTENT_TYPE", "")):
            return _raw_answer(start_response, "400 Bad Request",
                               _error_body("Content-Type must be JSON"))
        length = environ.get("CONTENT_LENGTH", "")
        if not length.isdigit() or int(length) > MAX_BODY:
            return _raw_answer(start_response, "400 Bad Request",
                               _error_body("Invalid Content-Length"))
        raw = environ["wsgi.input"].read(int(length))
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:
            return _raw_answer(start_response, "400 Bad Request",
                               _error_body("Invalid JSON"))
        result = check_divide_input(data)
        if result is None:
            return _raw_answer(start_response, "400 Bad Request",
                               _error_body("Invalid data"))
        return _raw_answer(start_response, "200 OK",
                           json.dumps(result).encode("ascii"))
    if path.startswith("/City/"):
        if method != "GET":
            return _raw_answer(start_response, "405 Method Not Allowed",
                               _error_body("Method Not Allowed"))
        body = city_body(path[6:])
        if body is None:
            return _raw_answer(start_response, "404 Not Found",
                               _error_body("Not Found"))
        return _raw_answer(start_response, "200 OK", body)
    return _raw_answer(start_response, "404 Not Found",
                       _error_body("Not Found"))


# -- bottle -------------------------------------------------------------------

def make_bottle_app():
    import bottle

    app = bottle.Bottle(catchall=True)
    request, response = bottle.request, bottle.response

    def fail(status, message):
        return bottle.HTTPResponse(_error_body(message), status,
                                   {"Content-Type": JSON_TYPE})

    @app.post(DIVIDE_PATH)
    def divide_view():
        if not is_json_type(request.content_type):
            return fail(400, "Content-Type must be JSON")
        length = request.content_length
        if length < 0 or length > MAX_BODY:
            return fail(400, "Invalid Content-Length")
        try:
            data = json.loads(request.body.read(length).decode("utf-8"))
        except ValueError:
            return fail(400, "Invalid JSON")
        result = check_divide_input(data)
        if result is None:
            return fail(400, "Invalid data")
        response.content_type = JSON_TYPE
        return json.dumps(result).encode("ascii")

    @app.get("/City/<ident>")
    def city_view(ident):
        body = city_body(ident)
        if body is None:
            return fail(404, "Not Found")
        response.content_type = JSON_TYPE
        return body

    return app


# -- falcon -------------------------------------------------------------------

def make_falcon_app():
    import falcon

    def fail(resp, status, message):
        resp.status = status
        resp.content_type = JSON_TYPE
        resp.data = _error_body(message)

    class Divide:
        def on_post(self, req, resp):
            if not is_json_type(req.content_type or ""):
                return fail(resp, falcon.HTTP_400, "Content-Type must be JSON")
            length = req.content_length
            if length is None or length > MAX_BODY:
                return fail(resp, falcon.HTTP_400, "Invalid Content-Length")
            try:
                data = json.loads(req.stream.read(length).decode("utf-8"))
            except ValueError:
                return fail(resp, falcon.HTTP_400, "Invalid JSON")
            result = check_divide_input(data)
            if result is None:
                return fail(resp, falcon.HTTP_400, "Invalid data")
            resp.content_type = JSON_TYPE
            resp.data = json.dumps(result).encode("ascii")

    class CityResource:
        def on_get(self, req, resp, ident):
            body = city_body(ident)
            if body is None:
                return fail(resp, falcon.HTTP_404, "Not Found")
            resp.content_type = JSON_TYPE
            resp.data = body

    app = falcon.App()
    app.add_route(DIVIDE_PATH, Divide())
    app.add_route("/City/{ident}", CityResource())
    return app


# -- flask --------------------------------------------------------------------

def make_flask_app():
    import flask

    app = flask.Flask("bench_flask")
    request = flask.request

    def answer(status, body):
        return app.response_class(body, status=status, mimetype=JSON_TYPE)

    @app.post(DIVIDE_PATH)
    def divide_view():
        if not is_json_type(request.content_type or ""):
            return answer(400, _error_body("Content-Type must be JSON"))
        length = request.content_length
        if length is None or length > MAX_BODY:
            return answer(400, _error_body("Invalid Content-Length"))
        try:
            data = json.loads(request.get_data().decode("utf-8"))
        except ValueError:
            return answer(400, _error_body("Invalid JSON"))
        result = check_divide_input(data)
        if result is None:
            return answer(400, _error_body("Invalid data"))
        return answer(200, json.dumps(result).encode("ascii"))

    @app.get("/City/<ident>")
    def city_view(ident):
        body = city_body(ident)
        if body is None:
            return answer(404, _error_body("Not Found"))
        return answer(200, body)

    return app


PEER_FACTORIES = {
    "bottle": make_bottle_app,
    "falcon": make_falcon_app,
    "flask": make_flask_app,
}
