"""The accuracy landscape over the sparsity grid: the grid, the store, its filler, budget search and sweeps."""
