"""Data on disk: the MNIST IDX files, images to predict, and model files (.npz weights)."""
