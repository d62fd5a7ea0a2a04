"""Training: the three hybrid models (image encoder, sequence encoder, autoencoder fusion head) and their joint loop."""
