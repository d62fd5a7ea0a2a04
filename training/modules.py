"""The three exported models. Each forward() takes exactly the tensors of its entry in hybridrec.spec.

Losses, samplers and other training wrappers live in training/train.py, never here, so what is exported to ONNX is
what serves. Shapes follow the spec's batch convention: axis 0 is the request (user), axis 1 the candidate items.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hybridrec import spec
from hybridrec.preprocessing import Artifacts
from hybridrec.training.config import FusionHeadConfig, ItemEncoderConfig, ModelConfig, SequenceEncoderConfig

NEG = -1.0e4  # masked attention logit; finite so ONNX/TensorRT never see inf - inf
RATING_LEVELS = 10  # MovieLens half stars, 0.5 to 5 (sequence.rating_feature)
# distances from a history's last step with their own embedding (sequence.attention_blocks); farther ones share the last
MAX_DISTANCE = 200


def sanitize_ids(ids: Tensor, vocab_size: int) -> Tensor:
    """Negative or out-of-vocabulary ids become UNK; PAD stays PAD. Serving never indexes out of range."""
    bad = (ids < 0) | (ids >= vocab_size)
    return torch.where(bad, torch.full_like(ids, spec.UNK_ID), ids)


def xavier_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.05)
            with torch.no_grad():
                m.weight[spec.PAD_ID].zero_()
        elif isinstance(m, nn.GRU | nn.LSTM):
            for name, p in m.named_parameters():
                if "weight" in name:
                    nn.init.xavier_uniform_(p)
                else:
                    nn.init.zeros_(p)


class Dropout(nn.Dropout):
    """nn.Dropout drawn from one uniform tensor: the same distribution at about a third of the cost on CPU, where
    dropout's per-element Bernoulli draws were a tenth of a training step. Identity in eval mode (and in export)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p >= 1.0:
            return torch.zeros_like(x)
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


class SpatialAttention(nn.Module):
    """Weights the CNN's poster regions and pools them: a = softmax(v^T tanh(W r_i))."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(channels, dim)
        self.score = nn.Linear(dim, 1, bias=False)

    def forward(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        regions = feat.flatten(2).transpose(1, 2)  # [M, R, C]
        weights = torch.softmax(self.score(torch.tanh(self.proj(regions))).squeeze(-1), dim=-1)  # [M, R]
        return (weights.unsqueeze(-1) * regions).sum(1), weights


class ItemEncoder(nn.Module):
    """Stacked conv/ReLU/max-pool over the poster, spatial attention over its regions, then attention-based fusion
    of the image with embedded metadata (genres, year, cast/director, TF-IDF-weighted overview words, item id).

    Every source is one token; a missing source (no poster, no overview, cold item ...) is masked out of the fusion
    attention rather than faked. A learned bias token is always present so an item with nothing known still has a
    well-defined embedding."""

    TOKENS = ("bias", "image", "genres", "year", "people", "overview", "item_id")
    id_gate: Tensor
    mean: Tensor
    inv_std: Tensor
    word_idf: Tensor

    def __init__(self, cfg: ItemEncoderConfig, dim: int, artifacts: Artifacts) -> None:
        super().__init__()
        self.cfg = cfg
        self.dim = dim
        self.num_items, self.num_people, self.num_words = artifacts.num_items, artifacts.num_people, artifacts.num_words
        img = artifacts.image
        self.register_buffer("mean", torch.tensor(img.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(img.std).view(1, 3, 1, 1) * 255.0), persistent=False)
        blocks: list[nn.Module] = []
        c_in = spec.IMAGE_CHANNELS
        for c_out in cfg.channels:
            blocks += [
                nn.Conv2d(c_in, c_out, cfg.kernel_size, padding=cfg.kernel_size // 2),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.cnn = nn.Sequential(*blocks)
        self.spatial = SpatialAttention(c_in, cfg.attention_dim)
        self.image_proj = nn.Linear(c_in, dim)
        self.genre_proj = nn.Linear(spec.GENRE_SLOTS, dim)
        self.year_proj = nn.Linear(2, dim)
        self.people_emb = nn.Embedding(self.num_people, cfg.people_dim)
        self.people_proj = nn.Linear(cfg.people_dim, dim)
        self.word_emb = nn.Embedding(self.num_words, cfg.text_dim)
        idf = torch.zeros(self.num_words)
        idf[spec.FIRST_ID :] = torch.tensor(artifacts.word_idf, dtype=torch.float32)
        self.register_buffer("word_idf", idf)
        self.text_proj = nn.Linear(cfg.text_dim, dim)
        self.id_emb = nn.Embedding(self.num_items, cfg.id_dim)
        self.id_proj = nn.Linear(cfg.id_dim, dim)
        if cfg.id_min_count > 0:  # 1.0 where the item's id token takes part (set_id_counts), exported as a constant
            self.register_buffer("id_gate", torch.ones(self.num_items))
        self.bias_token = nn.Parameter(torch.zeros(dim))
        self.query = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        xavier_init(self)

    def forward(self, item_id: Tensor, poster: Tensor, meta: Tensor, people: Tensor, overview: Tensor) -> Tensor:
        """[B, N, ...] item tensors -> item_embedding [B, N, D]."""
        b, n = item_id.shape[0], item_id.shape[1]
        out = self.encode(
            item_id.reshape(-1),
            poster.reshape(-1, spec.IMAGE_CHANNELS, spec.IMAGE_HEIGHT, spec.IMAGE_WIDTH),
            meta.reshape(-1, spec.META_WIDTH),
            people.reshape(-1, spec.PEOPLE_SLOTS),
            overview.reshape(-1, spec.OVERVIEW_TOKENS),
        )
        return out.reshape(b, n, self.dim)

    @torch.no_grad()
    def set_id_counts(self, counts: Tensor) -> None:
        """Training interactions per item index [num_items]: ids under ``id_min_count`` lose their token."""
        if self.cfg.id_min_count > 0:
            self.id_gate.copy_((counts >= self.cfg.id_min_count).to(self.id_gate.dtype))

    def poster_features(self, poster: Tensor) -> Tensor:
        """[M, 3, H, W] uint8 posters -> [M, C]: CNN regions pooled by spatial attention (before the projection).

        Training caches these for the whole catalog once per epoch: the CNN is by far the dearest part on a CPU."""
        x = (poster.float() - self.mean) * self.inv_std
        if self.cfg.downsample > 1:
            x = F.avg_pool2d(x, self.cfg.downsample)
        pooled, _ = self.spatial(self.cnn(x))
        return pooled

    def _bag(self, emb: nn.Embedding, ids: Tensor, weights: Tensor) -> Tensor:
        """Weighted sum of embeddings [M, S] -> [M, E]. Training uses embedding_bag (its backward is far cheaper than
        the gather's when the whole catalog is encoded each step); export keeps the plain gather, which every ONNX
        runtime and TensorRT support. Both compute the same sum."""
        if self.training:
            return F.embedding_bag(ids, emb.weight, per_sample_weights=weights, mode="sum")
        return (emb(ids) * weights.unsqueeze(-1)).sum(1)

    def encode(self, item_id: Tensor, poster: Tensor, meta: Tensor, people: Tensor, overview: Tensor) -> Tensor:
        """Flat items [M, ...] -> [M, D]."""
        pooled = self.poster_features(poster) if self.cfg.use_image else None
        return self.fuse(pooled, item_id, meta, people, overview)

    def fuse(self, pooled: Tensor | None, item_id: Tensor, meta: Tensor, people: Tensor, overview: Tensor) -> Tensor:
        """Attention fusion of the pooled poster features [M, C] (None: no image branch) with the metadata tokens."""
        meta = torch.where(torch.isnan(meta) | torch.isinf(meta), torch.zeros_like(meta), meta)
        genres = meta[:, : spec.GENRE_SLOTS]
        year = meta[:, spec.GENRE_SLOTS : spec.GENRE_SLOTS + 2]
        has_year = meta[:, spec.GENRE_SLOTS + 1] > 0.5
        has_poster = meta[:, spec.GENRE_SLOTS + 2] > 0.5
        has_genres = genres.abs().sum(-1) > 0

        people = sanitize_ids(people, self.num_people)
        p_mask = (people >= spec.FIRST_ID).float()
        p_sum = self._bag(self.people_emb, people, p_mask)
        p_cnt = p_mask.sum(1, keepdim=True)
        people_tok = self.people_proj(p_sum / p_cnt.clamp(min=1.0))

        words = sanitize_ids(overview, self.num_words)
        w = self.word_idf[words] * (words >= spec.FIRST_ID).float()  # TF-IDF weights (repeats add up: TF)
        w_sum = w.sum(1, keepdim=True)
        text_tok = self.text_proj(self._bag(self.word_emb, words, w) / w_sum.clamp(min=1e-6))

        ids = sanitize_ids(item_id, self.num_items)
        has_id = ids >= spec.FIRST_ID
        if self.cfg.id_min_count > 0:
            has_id = has_id & (self.id_gate[ids] > 0.5)
        if self.training and self.cfg.id_dropout > 0:
            has_id = has_id & (torch.rand(ids.shape, device=ids.device) >= self.cfg.id_dropout)
        id_tok = self.id_proj(self.id_emb(ids))

        if self.cfg.use_image and pooled is not None:
            image_tok = self.image_proj(pooled)
        else:
            image_tok = torch.zeros_like(id_tok)
            has_poster = torch.zeros_like(has_poster)
        if self.cfg.poster_for_cold:  # the poster stands in for a missing (or dropped) id only
            has_poster = has_poster & ~has_id
        has_people, has_text = p_cnt.squeeze(1) > 0, w_sum.squeeze(1) > 0
        if not self.cfg.use_metadata:  # ablation: the metadata tokens never take part
            has_genres, has_year, has_people, has_text = (torch.zeros_like(has_id),) * 4
        tokens = torch.stack(
            [
                self.bias_token.expand_as(id_tok),
                image_tok,
                self.genre_proj(genres),
                self.year_proj(year),
                people_tok,
                text_tok,
                id_tok,
            ],
            dim=1,
        )  # [M, T, D]
        present = torch.stack(
            [
                torch.ones_like(has_id),
                has_poster,
                has_genres,
                has_year,
                has_people,
                has_text,
                has_id,
            ],
            dim=1,
        )
        if self.training and self.cfg.content_dropout > 0:
            keep = torch.rand(present.shape, device=present.device) >= self.cfg.content_dropout
            keep[:, 0] = True  # the bias token
            keep[:, -1] = True  # the id token has its own id_dropout
            present = present & keep
        fused = self.attend(tokens, present)
        if self.cfg.id_residual:  # the id's own vector on top of its attention share (absent ids add nothing)
            fused = fused + id_tok * present[:, -1:].to(fused.dtype)
        return self.norm(fused) if self.cfg.output_norm else fused

    def attend(self, tokens: Tensor, present: Tensor) -> Tensor:
        """Attention of the learned query over the present tokens [M, T, D] -> [M, D]: sum_t a_t value(t), with a =
        softmax over the present t of key(t) . query / sqrt(D). The bias token (t = 0) is always present.

        Computed as key(t) . q = t . (W_k^T q) + b_k . q and value(sum_t a_t t), as the weights sum to 1: the same
        numbers as projecting all T tokens, at 1/T of the matmuls (training encodes the whole catalog every step)."""
        query = self.key.weight.T @ self.query
        logits = (tokens @ query + self.key.bias @ self.query) / math.sqrt(self.dim)
        weights = torch.softmax(torch.where(present, logits, torch.full_like(logits, NEG)), dim=-1)
        return self.value((weights.unsqueeze(-1) * tokens).sum(1))


class SelfAttentionBlock(nn.Module):
    """A pre-LN transformer block as SASRec's (one head, a feed-forward layer as wide as the input, a residual around
    each) over a history's steps [B, L, S]. Padded steps are never attended to, so the valid steps' outputs do not
    depend on the padding; written out rather than nn.MultiheadAttention so the ONNX graph is plain matmuls."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, dim)
        self.ff2 = nn.Linear(dim, dim)
        self.drop = Dropout(dropout)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x: Tensor, valid: Tensor, at: Tensor | None = None) -> Tensor:
        """x [B, L, S], valid [B, L] -> [B, L, S]; with `at` [B, 1] (a step per history), that step's output only
        [B, 1, S]: the user embedding reads the last step alone, so the last block need not compute the others."""
        normed = self.norm1(x)
        k, v = self.key_value(normed).chunk(2, dim=-1)
        if at is not None:
            index = at.unsqueeze(-1).expand(-1, -1, x.shape[-1])
            x, normed = torch.gather(x, 1, index), torch.gather(normed, 1, index)
        scores = torch.matmul(self.query(normed), k.transpose(1, 2)) * self.scale  # [B, queries, L]
        weight = torch.softmax(scores.masked_fill(~valid.unsqueeze(1), NEG), dim=-1)
        x = x + self.drop(self.proj(torch.matmul(weight, v)))
        return x + self.drop(self.ff2(self.drop(F.relu(self.ff1(self.norm2(x))))))


class SequenceEncoder(nn.Module):
    """Bidirectional GRU/LSTM over the chronological history (each step: the item's id embedding plus its projected
    content embedding); forward and backward outputs are concatenated per step,
    pooled over the valid steps and passed through a dense layer.

    The backward direction runs a forward RNN over each history reversed *within its own length*, so padding appended
    after the last item never reaches either direction: the output is exactly invariant to padding.

    With ``bag_dim``, the history is also read as an unordered bag by Mult-DAE's encoder (the interaction autoencoder
    of the issue's reference, Liang et al. 2018), whose code joins the dense layer's input; the retrieval's softmax
    over the catalog plays its decoder. With ``attention_pool``, an attention over the steps keyed by the last one
    (NARM) replaces the plain mean of the outputs."""

    item_content: Tensor

    def __init__(self, cfg: SequenceEncoderConfig, dim: int, artifacts: Artifacts) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items = artifacts.num_items
        self.item_emb = nn.Embedding(self.num_items, cfg.embedding_dim)
        # Item content in the sequence: a snapshot of the item tower's embeddings (posters, metadata, overview),
        # refreshed by training once per epoch and exported as a constant, so the exported model's input stays ids.
        self.register_buffer("item_content", torch.zeros(self.num_items, dim))
        self.content_proj = nn.Linear(dim, cfg.embedding_dim) if cfg.use_content else None
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}.get(cfg.cell)
        if rnn is None:
            raise ValueError(f"sequence.cell must be 'gru' or 'lstm', got {cfg.cell!r}")
        self.forward_rnn = rnn(cfg.embedding_dim, cfg.hidden_dim, batch_first=True) if cfg.use_rnn else None
        self.backward_rnn = rnn(cfg.embedding_dim, cfg.hidden_dim, batch_first=True) if cfg.use_rnn else None
        # ablation (use_rnn=False): the same mean + last pooling over the item embeddings themselves
        pooled = 4 * cfg.hidden_dim if cfg.use_rnn else 2 * cfg.embedding_dim
        # rnn_window: the whole history's mean item embedding joins the windowed RNN's pooled outputs
        pooled += cfg.embedding_dim if cfg.rnn_window is not None else 0
        self.bag_emb = nn.Embedding(self.num_items, cfg.bag_dim) if cfg.bag_dim is not None else None
        self.bag_bias = nn.Parameter(torch.zeros(cfg.bag_dim)) if cfg.bag_dim is not None else None
        # bag_recency: a log-weight per distance from the last item; zeros, so training starts from the plain bag
        self.bag_recency = nn.Parameter(torch.zeros(MAX_DISTANCE)) if cfg.bag_recency else None
        step = 2 * cfg.hidden_dim if cfg.use_rnn else cfg.embedding_dim  # one step's output width
        pooled += cfg.embedding_dim if cfg.attention_blocks else 0  # the self-attention's last step
        self.dense = nn.Linear(pooled + (cfg.bag_dim or 0), dim)
        self.attn_query = nn.Linear(step, step, bias=False) if cfg.attention_pool else None
        self.attn_key = nn.Linear(step, step) if cfg.attention_pool else None
        self.attn_score = nn.Linear(step, 1, bias=False) if cfg.attention_pool else None
        self.drop = Dropout(cfg.dropout)  # no weights: checkpoints without it load unchanged
        # self-attention (cfg.attention_blocks) over the item embeddings beside the RNN, as SASRec's input: over the
        # RNN's 2H-wide outputs an epoch took 2.6x the preset's
        width = cfg.embedding_dim
        self.blocks = nn.ModuleList(SelfAttentionBlock(width, cfg.dropout) for _ in range(cfg.attention_blocks))
        self.distance_emb = nn.Embedding(MAX_DISTANCE, width) if cfg.attention_blocks else None
        self.blocks_norm = nn.LayerNorm(width) if cfg.attention_blocks else None
        # history features (cfg.rating_feature, cfg.recency_buckets): row 0 is "unknown or padding"
        self.rating_emb = nn.Embedding(RATING_LEVELS + 1, cfg.embedding_dim) if cfg.rating_feature else None
        self.recency_emb = nn.Embedding(cfg.recency_buckets + 1, cfg.embedding_dim) if cfg.recency_buckets else None
        xavier_init(self)

    def forward(self, history: Tensor, rating: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        """history [B, L] item indices (0 = padding) -> user_embedding [B, D]. With the history features on,
        `rating` [B, L] (0.5 to 5 stars, 0 unknown) and `time` [B, L] (unix seconds), aligned with `history`; None
        reads as unknown."""
        ids = sanitize_ids(history, self.num_items)
        extra = self._features(ids, rating, time)
        if self.training and self.cfg.unk_dropout > 0:
            drop = (torch.rand(ids.shape, device=ids.device) < self.cfg.unk_dropout) & (ids != spec.PAD_ID)
            ids = torch.where(drop, torch.full_like(ids, spec.UNK_ID), ids)
        whole: list[Tensor] = [] if self.bag_emb is None else [self._bag(ids)]
        if self.cfg.rnn_window is not None:
            whole.append(self._mean_embedding(ids))
            ids = self._last_items(ids, self.cfg.rnn_window)
        valid = ids != spec.PAD_ID  # [B, L]
        pos, length = self._positions(ids)
        rev = torch.where(pos < length, length - 1 - pos, pos.expand_as(ids))  # reverse inside the prefix
        emb = self._embed(ids, extra)
        rnn = self.forward_rnn is not None and self.backward_rnn is not None
        out = self.drop(self._bidirectional(emb, rev)) if rnn else emb
        mask = valid.unsqueeze(-1).float()
        last_idx = (length - 1).clamp(min=0).unsqueeze(-1).expand(-1, 1, out.shape[-1])
        last = torch.gather(out, 1, last_idx).squeeze(1) * (length > 0).float()  # empty history -> zeros
        summary = self._attend(out, last, valid) if self.cfg.attention_pool else self._masked_mean(out, mask)
        if self.blocks_norm is not None:
            whole.insert(0, self._self_attend(emb, valid, pos, length) * (length > 0).float())
        return self.dense(torch.cat([summary, last, *whole], dim=-1))

    def _self_attend(self, emb: Tensor, valid: Tensor, pos: Tensor, length: Tensor) -> Tensor:
        """The self-attention blocks over the item embeddings [B, L, E], each step first given its distance from the
        last: the last step's output [B, E]."""
        assert self.distance_emb is not None and self.blocks_norm is not None
        x = emb + self.distance_emb((length - 1 - pos).clamp(min=0, max=MAX_DISTANCE - 1))
        last = (length - 1).clamp(min=0)
        for i, block in enumerate(self.blocks):
            x = block(x, valid, last if i == len(self.blocks) - 1 else None)
        return self.blocks_norm(x).squeeze(1)

    @staticmethod
    def _masked_mean(out: Tensor, mask: Tensor) -> Tensor:
        return (out * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def _attend(self, out: Tensor, last: Tensor, valid: Tensor) -> Tensor:
        """NARM's attentive summary [B, S]: softmax over the valid steps of v . sigmoid(A1 last + A2 out_j), the
        weighted sum of out_j. Padding gets exactly zero weight, so the summary stays invariant to padding; an empty
        history gives zeros."""
        assert self.attn_query is not None and self.attn_key is not None and self.attn_score is not None
        energy = self.attn_score(torch.sigmoid(self.attn_query(last).unsqueeze(1) + self.attn_key(out))).squeeze(-1)
        weight = torch.softmax(energy.masked_fill(~valid, NEG), dim=1) * valid.float()  # [B, L]
        return (weight.unsqueeze(-1) * out).sum(1)

    def _features(self, ids: Tensor, rating: Tensor | None, time: Tensor | None) -> Tensor | None:
        """[B, L, E] embeddings of the history features (None when off): the rating's half-star level, and the
        log2-second bucket of the time from each item to the history's last one (bucket 1: the same second)."""
        out: Tensor | None = None
        valid = ids != spec.PAD_ID
        unknown = torch.zeros_like(ids)
        if self.rating_emb is not None:
            level = unknown if rating is None else torch.round(rating.float() * 2).long().clamp(0, RATING_LEVELS)
            out = self.rating_emb(torch.where(valid, level, unknown))
        if self.recency_emb is not None:
            bucket = unknown
            if time is not None:
                _, length = self._positions(ids)
                last = torch.gather(time.long(), 1, (length - 1).clamp(min=0))  # [B, 1]
                age = (last - time.long()).clamp(min=0).float()
                bucket = (torch.floor(torch.log2(age + 1.0)).long() + 1).clamp(max=self.cfg.recency_buckets)
            emb = self.recency_emb(torch.where(valid, bucket, unknown))
            out = emb if out is None else out + emb
        return out

    def _embed(self, ids: Tensor, extra: Tensor | None = None) -> Tensor:
        """[B, L] ids -> [B, L, E] item embeddings (plus the history features' `extra`; dropout in training), zero
        at padding."""
        emb = self.item_emb(ids)
        if extra is not None:
            emb = emb + extra
        if self.content_proj is not None:
            emb = emb + self.content_proj(self.item_content[ids])
        return self.drop(emb) * (ids != spec.PAD_ID).unsqueeze(-1).float()

    def _mean_embedding(self, ids: Tensor) -> Tensor:
        """The mean item embedding over a history's valid items [B, E] (zeros for an empty history)."""
        valid = (ids != spec.PAD_ID).unsqueeze(-1).float()
        return self._embed(ids).sum(1) / valid.sum(1).clamp(min=1.0)

    def _bag(self, ids: Tensor) -> Tensor:
        """Mult-DAE's encoder over the history as a bag [B, bag_dim]: tanh(W x + b) with x the multi-hot row scaled
        to unit norm (1 / sqrt(n); with ``bag_recency``, each item first weighed by its distance from the last) and,
        in training, whole items dropped with inverted-dropout scaling."""
        assert self.bag_emb is not None and self.bag_bias is not None
        valid = (ids != spec.PAD_ID).float()
        if self.bag_recency is not None:  # learned weights by distance from the last item, the row at unit norm
            pos, length = self._positions(ids)
            valid = valid * torch.exp(self.bag_recency[(length - 1 - pos).clamp(min=0, max=MAX_DISTANCE - 1)])
        weight = valid / valid.square().sum(1, keepdim=True).clamp(min=1e-6).sqrt()  # an empty row stays 0
        if self.training and self.cfg.bag_dropout > 0:
            keep = (torch.rand(ids.shape, device=ids.device) >= self.cfg.bag_dropout).float()
            weight = weight * keep / (1.0 - self.cfg.bag_dropout)
        return torch.tanh((self.bag_emb(ids) * weight.unsqueeze(-1)).sum(1) + self.bag_bias)

    @staticmethod
    def _positions(ids: Tensor) -> tuple[Tensor, Tensor]:
        """Positions [1, L] and each history's length [B, 1] (its last valid position + 1)."""
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        return pos, ((ids != spec.PAD_ID).long() * (pos + 1)).max(dim=1, keepdim=True).values

    @staticmethod
    def _last_items(ids: Tensor, window: int) -> Tensor:
        """The last `window` items of each 0-padded history [B, L] -> [B, window], again 0-padded at the end.

        Indices are clamped to each history's own last item, never to the input's width, so the exported graph
        needs no shape arithmetic and accepts any L (shorter or longer than the window)."""
        _, length = SequenceEncoder._positions(ids)
        start = (length - window).clamp(min=0)
        step = torch.arange(window, device=ids.device).unsqueeze(0)  # [1, W]
        idx = torch.minimum(start + step, (length - 1).clamp(min=0))
        picked = torch.gather(ids, 1, idx)
        return torch.where(step < length - start, picked, torch.full_like(picked, spec.PAD_ID))

    @torch.no_grad()
    def set_item_content(self, item_embedding: Tensor) -> None:
        """Snapshot the item tower's [num_items, D] embeddings as the sequence's content features."""
        self.item_content.copy_(item_embedding.detach())
        self.item_content[spec.PAD_ID].zero_()

    def _bidirectional(self, emb: Tensor, rev: Tensor) -> Tensor:
        assert self.forward_rnn is not None and self.backward_rnn is not None
        fwd, _ = self.forward_rnn(emb)
        rev_idx = rev.unsqueeze(-1).expand(-1, -1, emb.shape[-1])
        bwd_rev, _ = self.backward_rnn(torch.gather(emb, 1, rev_idx))
        bwd = torch.gather(bwd_rev, 1, rev.unsqueeze(-1).expand(-1, -1, bwd_rev.shape[-1]))
        return torch.cat([fwd, bwd], dim=-1)  # [B, L, 2H]


class ResidualBlock(nn.Module):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop(self.fc2(F.relu(self.fc1(self.norm(x)))))


class FeatureAttention(nn.Module):
    """Attention over feature dimensions: a sigmoid gate computed from the features themselves."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.gate(x))


def _coder(d_in: int, hidden: int, d_out: int, cfg: FusionHeadConfig) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden),
        nn.ReLU(),
        Dropout(cfg.dropout),
        *[ResidualBlock(hidden, cfg.dropout) for _ in range(cfg.residual_blocks)],
        FeatureAttention(hidden),
        nn.Linear(hidden, d_out),
    )


class FusionHead(nn.Module):
    """Enhanced autoencoder over the (item, user) pair plus the fusion layer sigma(W [F_cnn; F_rnn; F_ae] + b).

    The autoencoder's input is [item; user; item * user]; F_ae is its bottleneck together with the interaction
    item * user it encodes, so the linear fusion layer can express the user-item match (which [F_cnn; F_rnn] alone
    cannot) and starts from the retrieval's dot product. The decoder is used only by the training loss (reconstruction
    MSE); serving runs encoder + fusion."""

    def __init__(self, cfg: FusionHeadConfig, dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = _coder(3 * dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg)
        self.decoder = _coder(cfg.bottleneck_dim, cfg.hidden_dim, 3 * dim, cfg)
        # F_ae = [bottleneck z ; item * user]: the interaction the autoencoder encodes, passed on beside its code
        self.fusion = nn.Linear(3 * dim + cfg.bottleneck_dim, 1)
        xavier_init(self)
        with torch.no_grad():
            # Start the fusion layer at the retrieval score (weight 1 on item * user, 0 elsewhere), so that reranking
            # the retrieved candidates starts from the dot-product order and learns corrections to it.
            self.fusion.weight.zero_()
            self.fusion.weight[0, 2 * dim + cfg.bottleneck_dim :] = 1.0

    @staticmethod
    def pair_features(user: Tensor, items: Tensor) -> Tensor:
        u = user.unsqueeze(1).expand_as(items)
        return torch.cat([items, u, items * u], dim=-1)

    def logits(self, user_embedding: Tensor, item_embedding: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """user [B, D], items [B, N, D] -> (logits [B, N], autoencoder input [B, N, 3D], bottleneck [B, N, Z])."""
        x = self.pair_features(user_embedding, item_embedding)
        z = self.encoder(x)
        if not self.cfg.use_autoencoder:  # ablation: F_ae is absent (zeros keep the exported I/O unchanged)
            z = torch.zeros_like(z)
        u = user_embedding.unsqueeze(1).expand_as(item_embedding)
        return self.fusion(torch.cat([item_embedding, u, z, item_embedding * u], dim=-1)).squeeze(-1), x, z

    def forward(self, user_embedding: Tensor, item_embedding: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(user_embedding, item_embedding)[0])


@torch.no_grad()
def fold_blend(weight: Tensor, bias: Tensor, dim: int, blend: float, scale: float) -> tuple[Tensor, Tensor]:
    """The fusion layer's (weight [1, F], bias [1]) whose logit is scale * ((1 - blend) * user.item + blend * logit).

    The fusion layer's input ends with item * user (see :class:`FusionHead`), whose sum is the retrieval's dot
    product: the blend is again one linear layer over [F_cnn; F_rnn; F_ae], so the served graph keeps its form."""
    dot = torch.zeros_like(weight)
    dot[..., -dim:] = 1.0
    return scale * (blend * weight + (1.0 - blend) * dot), scale * blend * bias


class HybridModel(nn.Module):
    """The three exported models side by side; a container for joint training and checkpoints, never exported."""

    def __init__(self, cfg: ModelConfig, artifacts: Artifacts) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_encoder = ItemEncoder(cfg.item, cfg.embedding_dim, artifacts)
        self.sequence_encoder = SequenceEncoder(cfg.sequence, cfg.embedding_dim, artifacts)
        self.fusion_head = FusionHead(cfg.fusion, cfg.embedding_dim)
        if cfg.sequence.tie_item_ids:
            if cfg.sequence.embedding_dim != cfg.item.id_dim:
                raise ValueError(
                    "sequence.tie_item_ids needs sequence.embedding_dim == item.id_dim, got "
                    f"{cfg.sequence.embedding_dim} and {cfg.item.id_dim}"
                )
            # one Parameter under both names: the state dict keeps both keys, so export and checkpoints are unchanged
            self.sequence_encoder.item_emb = self.item_encoder.id_emb

    def exported(self) -> dict[str, nn.Module]:
        """spec model name -> module, in the spec's order."""
        return {
            "item_encoder": self.item_encoder,
            "sequence_encoder": self.sequence_encoder,
            "fusion_head": self.fusion_head,
        }

    def score(self, history: Tensor, items: dict[str, Tensor]) -> Tensor:
        """Eager reference of the `rank` ensemble: [B, L] + [B, N, ...] item tensors -> scores [B, N]."""
        user = self.sequence_encoder(history)
        item = self.item_encoder(*(items[t.name] for t in spec.ITEM_INPUTS))
        return self.fusion_head(user, item)
