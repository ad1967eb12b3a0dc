"""Hot numeric loops used by the pipeline: DTW, connected components, label propagation and the RNN-T lattice."""
