"""Offline evaluation of the hybrid model and its baselines (no serving involved).

Parts, each documented in its own module:

* :mod:`.splits`: the two deterministic splits: next-item chronological leave-one-out (movieId sequences, plus the
  catalog item index every scorer ranks over) and the temporal 70/15/15 split of all ratings with
  ``liked = rating >= 4``.
* :mod:`.metrics`: full-ranking HR@10 / NDCG@10 / MRR@10 against all catalog items with seen items masked, computed
  in user chunks and kept per user for paired significance tests (t-test, Wilcoxon signed-rank); the cold-item slice;
  classification metrics (threshold chosen on validation, AUC, all-positive F1).
* :mod:`.baselines`: scorers with one ``fit`` / ``score`` interface, one module per model: Popularity, item-kNN CF,
  EASE, content-based TF-IDF, SASRec with full softmax cross-entropy.
* :mod:`.recbole`: export of the leave-one-out split as RecBole atomic files (``benchmark_filename`` layout) so that
  RecBole reproduces the exact split (``hybridrec data export-split --format recbole``).
* :mod:`.hybrid`: the trained hybrid as a full-ranking scorer (what the served `recommend` ensemble ranks by).
* :mod:`.classification`: the "liked" task on the temporal split (baselines and the hybrid trained with BCE).
* :mod:`.run` and :mod:`.report`: ``hybridrec evaluate``: every model, ablation and seed, cached per (model, seed),
  written as metrics.json, a markdown table (docs/results.md) and PNG plots.

Protocol in one paragraph: every user with >= 3 interactions holds out the last (test) and second-to-last (validation)
interaction; models are fit on the rest. Validation ranks the held-out item given the training history (seen =
training items); test ranks it given training history + the validation item (seen = both). Every catalog item is a
candidate (9,742 for ml-latest-small), seen items are masked, the target itself is never masked, and score ties
count against the target. Hyper-parameters (EASE's lambda, item-kNN's k, SASRec's epoch) are chosen on validation
only.

Only :class:`.baselines.SASRec` needs torch (imported lazily); everything else is numpy and the standard library.
"""
