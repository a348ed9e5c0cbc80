"""Orientation: indexing from scratch, least-squares refinement, the diagnosis of a parent that does not index, and the parent/child strategy over a temperature's entries."""
