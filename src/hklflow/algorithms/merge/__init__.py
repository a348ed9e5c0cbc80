"""Volumes summed and symmetrised (the Laue group's operators on voxel indices)."""
