"""What users look at: every picture of the steps, the slices of volumes they draw, and the
labels of previews."""
import importlib.util
import sys

# Each Artist class of matplotlib makes the docstring of its `set` method from the
# docstrings of all its setters as it is defined (kwdoc): about half the time of
# importing matplotlib's figures, for help text that no step shows.  kwdoc makes only that
# text (and the property tables interpolated into other docstrings); drawing never calls it.
# It is replaced as matplotlib.artist loads, before any module of this package imports an
# Artist class; not by importing matplotlib here: a step that only labels previews
# (transform_frames: .preview) draws nothing and need not load it.


def _without_set_docstrings(artist_module) -> None:
    artist_module.kwdoc = lambda artist: ""


class _ArtistLoaded:
    """A finder on sys.meta_path for matplotlib.artist alone: the module as the other
    finders find it, kwdoc replaced once it has run (then this finder is gone)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "matplotlib.artist":
            return None
        if _ArtistLoaded in sys.meta_path:
            sys.meta_path.remove(_ArtistLoaded)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _without_set_docstrings(module)

        spec.loader.exec_module = exec_module
        return spec


if "matplotlib.artist" in sys.modules:
    _without_set_docstrings(sys.modules["matplotlib.artist"])
else:
    sys.meta_path.insert(0, _ArtistLoaded)
