"""Baseline scorers for the full-ranking leave-one-out evaluation, all behind one interface (:class:`Scorer`).

One module per model, each documented there: :mod:`.popularity` (training users per item, the same for everyone),
:mod:`.item_knn` (item-based CF, cosine, top-k neighbours), :mod:`.ease` (Steck's closed form, dual when users <
items), :mod:`.content_tfidf` (per-field TF-IDF of genres, overview, cast and directors), :mod:`.sasrec` (SASRec-CE,
causal self-attention) and :mod:`.gru4rec` (GRU4Rec-CE, a GRU), the two sequence models trained with full softmax
cross-entropy by the loop in :mod:`.sequence_ce` (the only modules that need torch, imported lazily). :mod:`.scorer`
holds the interface and the validation-only hyper-parameter search the models share, :mod:`.sparse` the numpy
sparse helpers of the item-kNN, EASE and content scorers. Everything is re-exported here, so
``from hybridrec.training.evaluation.baselines import EASE, SASRec`` works.
"""

from hybridrec.training.evaluation.baselines.content_tfidf import FIELDS, ContentTFIDF, item_fields, item_tokens
from hybridrec.training.evaluation.baselines.ease import EASE
from hybridrec.training.evaluation.baselines.gru4rec import GRU4Rec, GRU4RecConfig
from hybridrec.training.evaluation.baselines.item_knn import ItemKNN
from hybridrec.training.evaluation.baselines.popularity import Popularity
from hybridrec.training.evaluation.baselines.sasrec import SASRec, SASRecConfig
from hybridrec.training.evaluation.baselines.scorer import LOWEST, Scorer, tune_on_validation, validation_ndcg
from hybridrec.training.evaluation.baselines.sequence_ce import SequenceCE, torch_threads

__all__ = [
    "EASE",
    "FIELDS",
    "LOWEST",
    "ContentTFIDF",
    "GRU4Rec",
    "GRU4RecConfig",
    "ItemKNN",
    "Popularity",
    "SASRec",
    "SASRecConfig",
    "Scorer",
    "SequenceCE",
    "item_fields",
    "item_tokens",
    "torch_threads",
    "tune_on_validation",
    "validation_ndcg",
]
