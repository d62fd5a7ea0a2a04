"""Training: the three hybrid models (item encoder: poster CNN + metadata; sequence encoder; autoencoder fusion
head) and their joint loop."""
