"""Small frozen configs, one per component, composed into a run config that is saved with every run."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridrec.dataclass_yaml import ADDED_SWITCH, ConfigError


@dataclass(frozen=True)
class ItemEncoderConfig:
    channels: tuple[int, ...] = (16, 32, 64)  # one conv + ReLU + max-pool block per entry
    kernel_size: int = 3
    downsample: int = 4  # average-pool the 192x128 poster to 48x32 first: the CNN dominates CPU cost
    attention_dim: int = 32  # spatial attention over poster regions
    text_dim: int = 32
    people_dim: int = 32
    id_dim: int = 32
    id_dropout: float = 0.2  # mask the id token of this share of training items so content alone learns to score
    # mask each content token (poster, genres, year, people, overview) of a training item with this probability: a
    # poster and its overview words identify a movie as well as its id does, and can memorise it without id dropout
    content_dropout: float = field(default=0.0, metadata=ADDED_SWITCH)
    # add the id token to the fused embedding as well as fusing it: the attention average gives the id one share of
    # seven tokens, while the order of what users watch next is often specific to one movie, not to its content.
    # On in the `full`, `evaluate` and `demo` presets (chosen on validation with data.train_gap=1, docs/training.md)
    id_residual: bool = field(default=False, metadata=ADDED_SWITCH)
    # the poster token takes part in the fusion only for items without an id token: cold items at serving time, and
    # training items whose id is dropped (id_dropout). A poster identifies a movie as its id does, and the ablation
    # without the CNN ranks higher (docs/results.md); this keeps the poster for the cold items only content can
    # carry. Level with the preset on validation under data.train_gap=1 (docs/training.md), so off
    poster_for_cold: bool = field(default=False, metadata=ADDED_SWITCH)
    # items with fewer training interactions than this have no id token, in training and at serving time: content
    # alone scores them, as it scores movies never rated in training. Meant for the cold slice (<= 5 interactions),
    # whose id rows learn from a handful of positives against every step's full-softmax push down. With 6 it was not
    # above the presets on validation under data.train_gap=1, 2 seeds (docs/training.md), so off. 0: every item with
    # an id row keeps its token
    id_min_count: int = field(default=0, metadata=ADDED_SWITCH)
    use_image: bool = True
    use_metadata: bool = True
    # LayerNorm on the fused embedding: every item then has about the same norm, so the retrieval's dot product cannot
    # carry an item's popularity in its length (SASRec-CE's free embeddings can)
    output_norm: bool = field(default=True, metadata=ADDED_SWITCH)

    def __post_init__(self) -> None:
        if self.id_min_count < 0:
            raise ConfigError(f"model.item.id_min_count must be >= 0, got {self.id_min_count}")


@dataclass(frozen=True)
class SequenceEncoderConfig:
    embedding_dim: int = 64
    hidden_dim: int = 64
    # "gru" | "lstm": the LSTM was below the GRU on validation under data.train_gap=1, 2 seeds (docs/training.md)
    cell: str = "gru"
    unk_dropout: float = 0.05  # replace history items with UNK so unseen items at serving time are not noise
    # add each history item's content embedding (the item tower's) to its id embedding; off by default: in a
    # 2-epoch check on ml-latest-small it lowered validation NDCG@10 (0.020 vs 0.036 without), and on today's presets
    # it was below a same-code refit by 0.013 on both seeds of a screen under data.train_gap=1 (docs/training.md)
    use_content: bool = False
    # share the history's id embeddings with the item tower's (needs embedding_dim == item.id_dim): each movie's id
    # vector then learns from being watched and from being a target, as SASRec-CE's tied embeddings do
    tie_item_ids: bool = field(default=False, metadata=ADDED_SWITCH)
    use_rnn: bool = True  # False (ablation): pool the history's item embeddings without any recurrence
    # on the history's item embeddings and on the RNN outputs (training only): with 0.3 the `full` preset's
    # validation NDCG@10 over epochs 5-8 averaged 0.060 (best 0.066) against 0.050 (best 0.056) without
    dropout: float = 0.3
    # run the RNN over the history's last N items only, and put the mean of the whole history's item embeddings beside
    # its outputs (None: the RNN reads the whole history, no pooled term). A long history (data.history_length 200,
    # SASRec-CE's window) then costs an embedding lookup per item instead of an RNN step in both directions. With 200
    # and a window of 50 it was level with the preset on validation under data.train_gap=1, 4 seeds; with the bag
    # (bag_dim) on, it was below on both seeds fitted (docs/training.md)
    rnn_window: int | None = field(default=None, metadata=ADDED_SWITCH)
    # the history as a bag, encoded as Mult-DAE encodes a user's row (Liang et al. 2018, the reference for the
    # autoencoder): tanh(W x / sqrt(n) + b) over its own item table, with dropout on whole items (bag_dropout),
    # concatenated with the RNN's pooled outputs before the dense layer. Its softmax over the catalog is the
    # retrieval's. None: off. EASE blended into the served ranking showed the headroom (tools/ease_headroom.py). 64 is
    # above the presets on validation under data.train_gap=1 for every seed of two 4-seed refits (+0.006, standard
    # error 0.0036 over users): on in the `full` and `evaluate` presets, which docs/results.md is fitted with, and in
    # `demo`, which trains the same model (docs/training.md). 128 and 32 were both below 64 on both seeds of a screen
    bag_dim: int | None = field(default=None, metadata=ADDED_SWITCH)
    # whole items of the bag dropped in training, as Mult-DAE's 0.5; under data.train_gap=1, 2 seeds, 0.25 was level
    # on validation and 0.75 below (docs/training.md)
    bag_dropout: float = field(default=0.5, metadata=ADDED_SWITCH)
    # weigh each bag item by a learned factor of its distance from the history's last item (exp of a per-distance
    # log-weight, 0 at init: the plain bag), the row kept at unit norm: the 200-item bag lost to 50 items, one
    # reading being that old items drown the recent ones, and the test history ends with the validation item. The
    # weights learned favour the last ~10 items, but under data.train_gap=1, 2 seeds, validation was level with the
    # presets (docs/training.md), so off
    bag_recency: bool = field(default=False, metadata=ADDED_SWITCH)
    # pool the RNN's outputs by additive attention with the last step's output as the query (NARM, Li et al. 2017:
    # which earlier items matter depends on the latest one) instead of their plain mean; the last step's output stays
    # beside it. False: the mean. Below the presets on validation under data.train_gap=1, 2 seeds (docs/training.md)
    attention_pool: bool = field(default=False, metadata=ADDED_SWITCH)
    # this many self-attention blocks (SASRec's: pre-LN, one head, a feed-forward layer of the same width) over the
    # history's item embeddings beside the RNN, every step attending to every valid step, with a learned embedding of
    # each step's distance from the last; the last step's output joins the dense layer's input. SASRec-CE, which leads
    # the hybrid on users with 18-165 training items (docs/results.md), is two such blocks. With 2 it was below the
    # presets on validation under data.train_gap=1 for both seeds fitted, and 1.3x the epoch time (docs/training.md),
    # so 0: off
    attention_blocks: int = field(default=0, metadata=ADDED_SWITCH)
    # history features beside the item ids (a training-time probe; export refuses a model that uses them, as the
    # served `history` input is ids only). rating_feature: each history item's rating (half-star levels) as a learned
    # embedding added to its step's input. recency_buckets: the time from each history item to the history's last
    # one, in log2-second buckets (this many; 0: off), likewise: which items belong to the latest session. Training
    # and the evaluation take them from the rating rows the history comes from (HistoryFeatures)
    rating_feature: bool = field(default=False, metadata=ADDED_SWITCH)
    recency_buckets: int = field(default=0, metadata=ADDED_SWITCH)

    @property
    def history_features(self) -> bool:
        """Whether the encoder reads ratings or times beside the history's ids."""
        return self.rating_feature or self.recency_buckets > 0

    def __post_init__(self) -> None:
        if self.attention_blocks < 0:
            raise ConfigError(f"model.sequence.attention_blocks must be >= 0, got {self.attention_blocks}")
        if self.recency_buckets < 0:
            raise ConfigError(f"model.sequence.recency_buckets must be >= 0, got {self.recency_buckets}")
        if self.history_features and self.rnn_window is not None:
            raise ConfigError("model.sequence.rating_feature / recency_buckets need model.sequence.rnn_window null")
        if self.rnn_window is not None and self.rnn_window < 1:
            raise ConfigError(f"model.sequence.rnn_window must be >= 1 or null, got {self.rnn_window}")
        if self.bag_dim is not None and self.bag_dim < 1:
            raise ConfigError(f"model.sequence.bag_dim must be >= 1 or null, got {self.bag_dim}")
        if not 0.0 <= self.bag_dropout < 1.0:
            raise ConfigError(f"model.sequence.bag_dropout must be in [0, 1), got {self.bag_dropout}")
        if self.bag_recency and self.bag_dim is None:
            raise ConfigError("model.sequence.bag_recency needs model.sequence.bag_dim")


@dataclass(frozen=True)
class FusionHeadConfig:
    hidden_dim: int = 128
    bottleneck_dim: int = 32
    residual_blocks: int = 1
    dropout: float = 0.5
    reconstruction_weight: float = 0.1
    use_autoencoder: bool = True  # False (ablation): F_ae = 0 and no reconstruction loss


@dataclass(frozen=True)
class ModelConfig:
    # F_cnn and F_rnn width (D). 128 was level with 64 on validation under data.train_gap=1, 2 seeds, with epochs
    # about 15% dearer (docs/training.md)
    embedding_dim: int = 64
    item: ItemEncoderConfig = field(default_factory=ItemEncoderConfig)  # poster CNN + metadata fusion
    sequence: SequenceEncoderConfig = field(default_factory=SequenceEncoderConfig)
    fusion: FusionHeadConfig = field(default_factory=FusionHeadConfig)


@dataclass(frozen=True)
class DataConfig:
    path: str | None = None  # None: --data flag, HYBRIDREC_DATA, then ../shared/data/movielens-small
    max_users: int | None = None  # train on the first N users (CI and smoke runs)
    history_length: int = 50
    targets_per_user: int | None = None  # prefixes sampled per user and epoch (None: every prefix once)
    # leave each user's last N training items out of the training targets. Test's history ends with the validation
    # item, which was never a target for that user; with 1, validation's history ends the same way, with an item the
    # model saw only in other users' sequences, so choices made on validation are made under test's conditions
    train_gap: int = field(default=0, metadata=ADDED_SWITCH)

    def __post_init__(self) -> None:  # refused when the config loads, before any run folder is written
        if self.train_gap < 0:
            raise ConfigError(f"data.train_gap must be >= 0, got {self.train_gap}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-6  # L2
    batch_size: int = 128
    softmax_negatives: int | None = 2048  # uniform catalog items per step in the retrieval softmax (None: all items)
    hard_negatives: int = 32  # fusion-head negatives: the retrieval's current top items (what the head reranks)
    random_negatives: int = 32  # plus uniform catalog negatives
    # batch rows the fusion head trains on per step (None: all). Its 1 + H + R pairs per row cost more than both
    # towers: at batch 512, 128 rows made a step 1.6x faster (`python -m hybridrec.training.throughput`). All 512
    # rows were below 128 on validation for both seeds under data.train_gap=1 (docs/training.md)
    rerank_rows: int | None = 128
    live_posters: int = 32  # posters run through the CNN with gradients per step; the rest use a per-epoch cache
    epochs: int = 6
    patience: int = 2  # early stopping on validation NDCG@10
    max_minutes: float | None = None  # wall-time budget: stop after the epoch that crosses it
    seed: int = 0
    threads: int | None = None
    # exponential moving average of the weights (decay per step; None: off): validation, the kept model and what is
    # served use the average, training steps the raw weights. 0.998 in the `full` and `evaluate` presets, 0.995 in
    # `demo` (chosen on each: docs/training.md)
    ema_decay: float | None = field(default=None, metadata=ADDED_SWITCH)
    # "linear": the learning rate falls linearly from `lr` to 0 over `epochs` epochs (per step); "constant": no decay.
    # A run cut short by its epoch count (`make demo`) then ends on small, averaging steps. Off: decayed to 0 over the 9
    # epochs of the `evaluate` guard it was below the constant rate on validation under data.train_gap=1 for 3 of 4
    # seeds (docs/training.md)
    lr_decay: str = field(default="constant", metadata=ADDED_SWITCH)
    # the poster CNN's learning rate (conv blocks and spatial attention) as a share of `lr`. At 1.0 its pooled
    # features moved by 69% of their norm in the full preset's 8th epoch (cosine 0.78 to the epoch's start): the
    # per-epoch poster cache that every non-live item trains against goes stale. 0.1 was level with 1.0 on
    # validation under data.train_gap=1 (docs/training.md)
    cnn_lr_scale: float = field(default=1.0, metadata=ADDED_SWITCH)
    # the retrieval's softmax scores each prefix's next item and, averaged at the same total weight, the N - 1 items
    # after it (never the last data.train_gap ones): a multinomial likelihood over what the user watches next, as
    # Mult-VAE's over a user's whole bag (the reference for the autoencoder) and PinnerFormer's dense
    # all-action loss. 1: the next item only. Windows of 10 and 3 were below the preset on validation under
    # data.train_gap=1, every seed (docs/training.md), so off
    future_window: int = field(default=1, metadata=ADDED_SWITCH)
    # the retrieval's softmax leaves out the movies each prefix's user rated before its target, as `recommend`
    # masks every rated movie: the loss then spends no gradient pushing down what is never served (training only).
    # Level with the presets on validation under data.train_gap=1 over 4 seeds, below on the demo (docs/training.md)
    mask_seen: bool = field(default=False, metadata=ADDED_SWITCH)
    # with mask_seen, the last N items before each target stay in the softmax (and are pushed down as any other
    # negative). Ratings entered in one go are ordered by movieId, so a same-second target is the next id after the
    # history's last few: the hypothesis was that the mask took away the negatives that teach that order. With 5 it
    # was below mask_seen alone on validation under data.train_gap=1 for each of 4 seeds, on both slices
    # (docs/training.md), so 0: every rated item masked
    mask_seen_skip_last: int = field(default=0, metadata=ADDED_SWITCH)
    # the retrieval softmax's target smoothed with this share spread evenly over every scored (unmasked) column: the
    # full softmax over 9.7k movies otherwise drives each prefix's target to probability 1, as label smoothing
    # regularises a classifier's over-confidence. 0: plain cross-entropy. 0.1 was level with the presets on seed 0's
    # validation and below on seed 1's under data.train_gap=1, and 0.05 failed its screen against a same-code refit
    # (docs/training.md), so off
    label_smoothing: float = field(default=0.0, metadata=ADDED_SWITCH)
    # clip each top-level module's gradient norm on its own (item tower, sequence tower, fusion head) instead of the
    # whole model's: the fusion head trains on detached inputs, yet its gradient is most of the global norm and its
    # spikes (3x the clip) shrank the towers' steps through the shared clip. Below det8 on validation for both seeds
    # under data.train_gap=1 (docs/training.md), so off
    clip_per_module: bool = field(default=False, metadata=ADDED_SWITCH)

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"optim.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.mask_seen_skip_last < 0:
            raise ConfigError(f"optim.mask_seen_skip_last must be >= 0, got {self.mask_seen_skip_last}")
        if self.mask_seen_skip_last and not self.mask_seen:
            raise ConfigError("optim.mask_seen_skip_last needs optim.mask_seen true")
        if not self.cnn_lr_scale >= 0.0:
            raise ConfigError(f"optim.cnn_lr_scale must be >= 0, got {self.cnn_lr_scale}")
        if self.future_window < 1:
            raise ConfigError(f"optim.future_window must be >= 1, got {self.future_window}")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
