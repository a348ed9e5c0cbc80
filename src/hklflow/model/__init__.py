"""The model of an experiment: lab frame, detector and goniometer (geometry), the crystal, the (H, K, L) grid, and NXRefine's parameters as an adapter at the edge."""
