"""Training objectives of the one fit loop (training/fit.py): next-item ranking and liked classification."""
