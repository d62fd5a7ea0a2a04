"""hybridrec: a hybrid CNN + bidirectional-RNN + autoencoder movie recommender served by NVIDIA Triton."""

__version__ = "0.1.0"
