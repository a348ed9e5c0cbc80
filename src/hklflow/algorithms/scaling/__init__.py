"""Scaling between the entries of a temperature from their Laue-equivalent voxels (issue 81)."""
