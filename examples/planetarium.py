"""An in-memory ``planetarium`` API: spheres that revolve around each other.

A model with every method, a link from the model to itself, a query field
and list metadata. The data lives in a dict guarded by a lock, so it is
shared by the threads of one process and lost when the process ends.

    python -m cosmic serve examples/planetarium.py

    curl http://127.0.0.1:8000/Sphere/2
    curl 'http://127.0.0.1:8000/Sphere?name=Sun'
    curl -X POST -H 'Content-Type: application/json' \\
         -d '{"name": "Mars", "temperature": -60.0,
              "_links": {"revolves_around": {"href": "/Sphere/0"}}}' \\
         http://127.0.0.1:8000/Sphere
    curl -X PUT -H 'Content-Type: application/json' \\
         -d '{"temperature": -65.0}' http://127.0.0.1:8000/Sphere/3
    curl -X DELETE http://127.0.0.1:8000/Sphere/3
"""

import threading
from datetime import datetime, timezone

from cosmic.api import API
from cosmic.exceptions import HTTPError, NotFound
from cosmic.http import Server
from cosmic.models import BaseModel
from cosmic.types import (
    DateTime, Float, Model, String, optional, optional_link, required)

planetarium = API("planetarium")

_FIELDS = ("name", "temperature", "revolves_around")

_lock = threading.Lock()
# id -> representation (properties, plus the link as a plain id or None)
_spheres = {
    "0": {"name": "Sun", "temperature": 3000.0, "revolves_around": None},
    "1": {"name": "Earth", "temperature": 30.0, "revolves_around": "0"},
    "2": {"name": "Moon", "temperature": -50.0, "revolves_around": "1"},
}
_next_id = 3
_last_updated = datetime.now(timezone.utc)


def _touch():
    """Record that the data changed now; call it with the lock held."""
    global _last_updated
    _last_updated = datetime.now(timezone.utc)


def _check_orbit(patch):
    """Refuse a revolves_around link to a sphere that does not exist."""
    target = patch.get("revolves_around")
    if target is not None and target not in _spheres:
        raise HTTPError(400, "No Sphere with id %r" % target)


@planetarium.model
class Sphere(BaseModel):
    """A star, planet or moon."""

    methods = ["get_by_id", "get_list", "create", "update", "delete"]
    properties = [
        required("name", String),
        optional("temperature", Float, "Surface temperature in Celsius"),
    ]
    # The class is not registered while its body runs, so the link names
    # the model by its full name instead of by the class.
    links = [
        optional_link("revolves_around", Model("planetarium.Sphere"),
                      "The sphere this one orbits"),
    ]
    query_fields = [optional("name", String, "Exact name to match")]
    list_metadata = [
        required("last_updated", DateTime, "Time of the last change"),
    ]

    @classmethod
    def get_by_id(cls, id):
        """Return the sphere with this id, or raise NotFound."""
        with _lock:
            if id not in _spheres:
                raise NotFound
            return dict(_spheres[id])

    @classmethod
    def get_list(cls, name=None):
        """Return all spheres (or those with this name), oldest first."""
        with _lock:
            items = [(key, dict(rep)) for key, rep in _spheres.items()
                     if name is None or rep["name"] == name]
            return items, {"last_updated": _last_updated}

    @classmethod
    def create(cls, patch):
        """Add a sphere; return its new id and representation."""
        global _next_id
        if "name" not in patch:
            raise HTTPError(400, "Missing fields: ['name']")
        with _lock:
            _check_orbit(patch)
            new_id = str(_next_id)
            _next_id += 1
            rep = {field: patch.get(field) for field in _FIELDS}
            _spheres[new_id] = rep
            _touch()
            return new_id, dict(rep)

    @classmethod
    def update(cls, id, patch):
        """Change the fields present in the patch; keep the others."""
        with _lock:
            if id not in _spheres:
                raise NotFound
            _check_orbit(patch)
            rep = _spheres[id]
            rep.update((k, v) for k, v in patch.items() if k in _FIELDS)
            _touch()
            return dict(rep)

    @classmethod
    def delete(cls, id):
        """Remove a sphere; whatever orbited it now orbits nothing."""
        with _lock:
            if _spheres.pop(id, None) is None:
                raise NotFound
            for rep in _spheres.values():
                if rep["revolves_around"] == id:
                    rep["revolves_around"] = None
            _touch()


wsgi_app = Server(planetarium).wsgi_app
