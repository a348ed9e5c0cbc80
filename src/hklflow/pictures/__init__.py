"""What users look at: every picture of the steps, the slices of volumes they draw, and the
labels of previews."""
import matplotlib.artist

# Each Artist class of matplotlib makes the docstring of its `set` method from the
# docstrings of all its setters as it is defined (kwdoc): about half the time of
# importing matplotlib's figures, for help text that no step shows.  kwdoc makes only that
# text (and the property tables interpolated into other docstrings); drawing never calls it.
# Here, so that it comes before any module of this package imports an Artist class.
matplotlib.artist.kwdoc = lambda artist: ""
