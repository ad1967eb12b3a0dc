"""Hot numeric loops used by the pipeline: DTW (and later the RNN-T lattice and propagation)."""
