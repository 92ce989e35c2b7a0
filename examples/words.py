"""The tutorial's API: python -m cosmic serve examples/words.py"""

from cosmic.api import API
from cosmic.http import Server
from cosmic.types import String

words = API("words")


@words.action(accepts=String, returns=String)
def pluralize(word):
    """The plural of an English noun (a very naive one)."""
    if word.endswith("y"):
        return word[:-1] + "ies"
    return word + "s"


wsgi_app = Server(words).wsgi_app
