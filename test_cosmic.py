"""Tests for cosmic.py (stdlib unittest): python -m unittest -v"""

import os
import unittest

from cosmic.types import *  # noqa: F401,F403
from cosmic.types import (Array, Integer, String, Struct, ValidationError,
                          optional, required)

REQUIRE_EXTRAS = os.environ.get("COSMIC_REQUIRE_EXTRAS") == "1"


class TestArray(unittest.TestCase):
    def test_error_names_the_index(self):
        with self.assertRaises(ValidationError) as cm:
            Array(Integer).from_json([1, 2, True])
        self.assertEqual(str(cm.exception), "Item at [2] Invalid Integer: True")

    def test_integral_floats_become_ints(self):
        self.assertEqual(Array(Integer).from_json([1, 2.0]), [1, 2])

    def test_every_error_has_a_pointer(self):
        schema = Struct([required("rows", Array(Struct([
            required("id", Integer), optional("name", String)])))])
        with self.assertRaises(ValidationError) as cm:
            schema.from_json({"rows": [{"id": 1}, {"id": "x"}, {"id": 2,
                                                                "name": 3}]})
        self.assertEqual(
            [(e["pointer"], e["message"]) for e in cm.exception.errors],
            [("/rows/1/id", "Invalid Integer: 'x'"),
             ("/rows/2/name", "Invalid String: 3")])


if __name__ == "__main__":
    unittest.main()
