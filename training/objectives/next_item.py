"""The next-item objective: what the hybrid is trained for and what `recommend` serves.

Per training prefix (every prefix of every user once per epoch, or ``data.targets_per_user`` random ones):
* retrieval: softmax cross-entropy of user . item over the whole vocabulary, or over the targets plus
  ``optim.softmax_negatives`` uniform items (what `recommend` retrieves by), with ``optim.future_window`` > 1 also
  over the items that follow the target, and with ``optim.mask_seen`` over the items the user has not rated yet;
* reranking: softmax cross-entropy + BCE of the fusion head over the target, the retrieval's current hardest unseen
  negatives and a few uniform ones (what `recommend` reranks);
* the autoencoder's reconstruction MSE.
Validation ranks every vocabulary item for each user (history masked) as the served pipeline does, and picks the
served blend of retrieval and rerank (:data:`BLENDS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hybridrec import spec
from hybridrec.training import distributed
from hybridrec.training.config import RunConfig
from hybridrec.training.evaluation.metrics import ranking_values, target_ranks
from hybridrec.training.features import (
    HistoryFeatures,
    ItemTable,
    history_inputs,
    item_embeddings,
    pad_histories,
    poster_cache,
)
from hybridrec.training.modules import NEG, HybridModel

# The served logit is (1 - w) * user.item + w * fusion logit, with w picked on validation each epoch from this grid:
# w = 0 is the retrieval alone, so the served ranking is never worse than retrieval on validation. The blend is
# folded into the fusion layer's weights (see modules.fold_blend), so the exported graphs do not change.
BLENDS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
MAX_SERVED_LOGIT = 6.0  # the blend is scaled so that served sigmoid scores stay below saturation (no float32 ties)


def _retrieve(user: Tensor, items: Tensor, seen: list[np.ndarray], depth: int, reserved: int) -> tuple[Tensor, Tensor]:
    """(dot [B, I], top [B, K]): the dot-product scores and the `depth` best unseen items, as `retrieval` serves."""
    dot = user @ items.T  # [B, I]
    masked = dot.clone()
    masked[:, :reserved] = NEG
    for r, s in enumerate(seen):
        if len(s):
            masked[r, torch.from_numpy(np.asarray(s, dtype=np.int64)).to(masked.device)] = NEG
    return dot, masked.topk(min(depth, masked.shape[1]), dim=1).indices


def _reranked(dot: Tensor, top: Tensor, fused: Tensor) -> Tensor:
    """One score per item [B, I]: the retrieved `top` items by `fused`, every other item below all of them in
    dot-product order."""
    floor = fused.min(dim=1, keepdim=True).values - 1.0
    return (dot - dot.max(dim=1, keepdim=True).values + floor).scatter(1, top, fused)


def pipeline_scores(
    model: HybridModel,
    user: Tensor,
    items: Tensor,
    seen: list[np.ndarray],
    depth: int = spec.RETRIEVAL_DEPTH,
    reserved: int = spec.FIRST_ID,
) -> Tensor:
    """What the `recommend` ensemble ranks by, as one score per item [B, I]: the dot-product retrieval's top `depth`
    unseen items reranked by the fusion head (scores in (0, 1)), every other item below them in dot-product order.

    Seen items and the `reserved` first rows (PAD/UNK in vocabulary order; 0 for catalog order) are left to the
    caller's metric to mask; they are excluded from retrieval here, as the served `retrieval` model does."""
    dot, top = _retrieve(user, items, seen, depth, reserved)
    return _reranked(dot, top, model.fusion_head(user, items[top]))  # sigmoid, as served


def full_ranking_metrics(
    model: HybridModel,
    items: Tensor,
    histories: dict[int, np.ndarray],
    targets: dict[int, int],
    length: int,
    k: int = 10,
    chunk: int = 128,
    blends: tuple[float, ...] = (),
    features: HistoryFeatures | None = None,
) -> dict[str, float]:
    """NDCG@k / HR@k of each held-out vocabulary item against every vocabulary item, the history masked, for the
    served pipeline and for the dot product alone (`dot_`). Targets outside the vocabulary are skipped here; the
    evaluation command ranks the whole catalog.

    Without `blends`, the pipeline is the model as it is served. With them (validation), each blend weight w ranks the
    retrieved items by (1 - w) * dot + w * fusion logit; the best one's metrics are the pipeline's, with `blend` = w,
    `scale` (keeps the served logits within MAX_SERVED_LOGIT) and `fusion_ndcg@10` (w = 1, the rerank alone).
    `features`: the histories' ratings and times, for a model that reads them (keyed by the users of `histories`)."""
    users = [u for u in sorted(targets) if targets[u] >= spec.FIRST_ID]
    out = {"users": float(len(users))}
    if not users:
        return out | {"ndcg@10": 0.0, "hr@10": 0.0, "dot_ndcg@10": 0.0, "dot_hr@10": 0.0, "blend": 1.0, "scale": 1.0}
    model.eval()
    names = ["dot_", *(f"w{w}_" for w in blends)] if blends else ["dot_", ""]
    ranks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    largest = dict.fromkeys(blends, 0.0)  # the largest |blended logit| of a retrieved item, per blend
    with torch.no_grad():
        for start in range(0, len(users), chunk):
            part = users[start : start + chunk]
            seen = [histories[u] for u in part]
            extra = history_inputs(features, part, seen, length, items.device)
            user = model.sequence_encoder(pad_histories(seen, length).to(items.device), *extra)
            tgt = [targets[u] for u in part]
            dot, top = _retrieve(user, items, seen, spec.RETRIEVAL_DEPTH, spec.FIRST_ID)
            scores = {"dot_": dot}
            if blends:
                logits = model.fusion_head.logits(user, items[top])[0]
                dot_top = dot.gather(1, top)
                for w in blends:
                    fused = (1.0 - w) * dot_top + w * logits
                    largest[w] = max(largest[w], float(fused.abs().max()))
                    scores[f"w{w}_"] = _reranked(dot, top, fused)
            else:
                scores[""] = _reranked(dot, top, model.fusion_head(user, items[top]))
            for name, score in scores.items():
                s = score.cpu().numpy().copy()
                s[:, : spec.FIRST_ID] = -np.inf  # PAD and UNK are never candidates
                ranks[name].append(target_ranks(s, tgt, seen))
    for name, parts in ranks.items():
        values = ranking_values(np.concatenate(parts), k)
        out[f"{name}hr@{k}"] = float(values[f"hr@{k}"].mean())
        out[f"{name}ndcg@{k}"] = float(values[f"ndcg@{k}"].mean())
    if blends:
        best = max(blends, key=lambda w: (out[f"w{w}_ndcg@{k}"], -w))  # ties: the smaller weight (closer to retrieval)
        out |= {"ndcg@10": out[f"w{best}_ndcg@{k}"], "hr@10": out[f"w{best}_hr@{k}"], "blend": best}
        out["scale"] = min(1.0, MAX_SERVED_LOGIT / largest[best]) if largest[best] > 0 else 1.0
        out["fusion_ndcg@10"] = out.get(f"w1.0_ndcg@{k}", float("nan"))
    return out


def epoch_examples(
    train_seq: dict[int, np.ndarray], users: list[int], cap: int | None, rng: np.random.Generator, gap: int = 0
) -> list[tuple[int, int]]:
    """(user, target position) pairs: every training prefix once (or `cap` random ones per user), shuffled. The last
    `gap` items of each sequence are never targets (`data.train_gap`)."""
    if gap < 0:
        raise ValueError(f"data.train_gap must be >= 0, got {gap}")
    examples = []
    for u in users:
        positions = np.arange(1, len(train_seq[u]) - gap)
        if cap is not None and len(positions) > cap:
            positions = rng.choice(positions, cap, replace=False)
        examples += [(u, int(t)) for t in positions]
    rng.shuffle(examples)
    return examples


def future_items(train_seq: dict[int, np.ndarray], batch: list[tuple[int, int]], window: int, gap: int = 0) -> Tensor:
    """[B, window - 1]: the items after each (user, target position) example's target, within `window` items of it
    and never among the sequence's last `gap` (which are never targets), PAD where there are fewer."""
    out = np.full((len(batch), max(window - 1, 0)), spec.PAD_ID, np.int64)
    for r, (u, t) in enumerate(batch):
        seq = train_seq[u]
        after = seq[t + 1 : min(t + window, len(seq) - gap)]
        out[r, : len(after)] = after
    return torch.from_numpy(out)


def mask_seen_(dot: Tensor, cols: Tensor, seen: list[np.ndarray], label: Tensor, skip_last: int = 0) -> None:
    """Set each row's score of the items its user rated before the target to NEG, in place, as `recommend` masks
    them: a movie already rated is never a candidate, so the softmax need not spend its gradient pushing it down.
    `cols` are the sorted item ids of `dot`'s columns; the row's target column (`label`) is never masked, nor are
    the last `skip_last` items of each row's history (optim.mask_seen_skip_last)."""
    if skip_last:
        seen = [s[: max(len(s) - skip_last, 0)] for s in seen]
    lengths = torch.tensor([len(s) for s in seen])
    if not int(lengths.sum()):
        return
    rows = torch.repeat_interleave(torch.arange(len(seen)), lengths).to(dot.device)
    items = torch.from_numpy(np.concatenate(seen).astype(np.int64)).to(dot.device)
    col = torch.searchsorted(cols, items).clamp(max=len(cols) - 1)
    keep = (cols[col] == items) & (col != label[rows])  # in the columns (sampled softmax), and not the target
    dot[rows[keep], col[keep]] = NEG


def smoothed_cross_entropy(dot: Tensor, label: Tensor, smoothing: float) -> Tensor:
    """Cross-entropy of each row's `label` column with `smoothing` of the target spread evenly over the row's scored
    columns: those at NEG (PAD, UNK, masked items) never enter, where F.cross_entropy's own smoothing would put mass on
    them too. 0: F.cross_entropy itself."""
    if smoothing == 0.0:
        return F.cross_entropy(dot, label)
    logp = torch.log_softmax(dot, dim=1)
    nll = -logp.gather(1, label.unsqueeze(1)).squeeze(1)
    scored = (dot > NEG / 2).float()
    uniform = -(logp * scored).sum(1) / scored.sum(1).clamp(min=1.0)
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()


def future_loss(dot: Tensor, cols: Tensor, future: Tensor) -> Tensor:
    """The mean negative log-likelihood of each row's `future` items (PAD: none) under the softmax of its `dot`
    scores over the sorted item columns `cols`; rows without any future item count for nothing."""
    present = future != spec.PAD_ID
    col = torch.searchsorted(cols, future).clamp(max=len(cols) - 1)
    nll = -(torch.log_softmax(dot, dim=1).gather(1, col) * present)
    count = present.sum(1)
    rows = count > 0
    if not bool(rows.any()):
        return dot.new_zeros(())
    return (nll.sum(1)[rows] / count[rows]).mean()


class StepLoss(nn.Module):
    """One training step's loss on a batch of (user, target position) examples, as a module so that
    DistributedDataParallel can wrap it (its gradient sync hooks need the step to run through a forward call); in a
    single process it is called directly, without any wrapper."""

    def __init__(
        self,
        model: HybridModel,
        table: ItemTable,
        train_seq: dict[int, np.ndarray],
        cfg: RunConfig,
        features: HistoryFeatures | None = None,
    ) -> None:
        super().__init__()
        self.features = features
        self.model = model
        self.table, self.train_seq, self.o = table, train_seq, cfg.optim
        self.hist_len, self.n_items = cfg.data.history_length, len(table)
        self.use_ae, self.recon_weight = cfg.model.fusion.use_autoencoder, cfg.model.fusion.reconstruction_weight
        self.gap = cfg.data.train_gap
        self.dev = table.tensors["item_id"].device  # the CPU, or the rank's GPU under DDP; random draws stay on the CPU

    def forward(self, batch: list[tuple[int, int]], cache: Tensor | None) -> Tensor:
        o = self.o
        b = len(batch)
        seen = [self.train_seq[u][:t] for u, t in batch]
        hist = pad_histories([s[-self.hist_len :] for s in seen], self.hist_len).to(self.dev)
        targets = torch.tensor([int(self.train_seq[u][t]) for u, t in batch]).to(self.dev)
        future = future_items(self.train_seq, batch, o.future_window, self.gap).to(self.dev)  # [B, window - 1]
        # Candidate set: every item (full softmax) or the batch's targets plus `softmax_negatives` uniform items
        # (sampled softmax: uniform sampling needs no logQ correction, and far cheaper steps buy more updates).
        if o.softmax_negatives is None:
            cols = torch.arange(self.n_items).to(self.dev)
        else:
            negatives = torch.randint(spec.FIRST_ID, self.n_items, (o.softmax_negatives,))
            cols = torch.unique(torch.cat([targets, future[future != spec.PAD_ID], negatives.to(self.dev)]))
        label = torch.searchsorted(cols, targets)  # column of each row's target (cols is sorted and unique)
        pooled = None if cache is None else cache[cols]
        if pooled is not None and o.live_posters > 0:
            # The CNN learns through a few live posters per step; every other item uses this epoch's cache.
            live = torch.searchsorted(cols, torch.unique(targets))
            live = live[torch.randperm(len(live))[: o.live_posters].to(self.dev)]
            live_feat = self.model.item_encoder.poster_features(self.table.tensors["poster"][cols[live]])
            pooled = pooled.index_put((live,), live_feat)
        t = self.table.tensors
        items = self.model.item_encoder.fuse(
            pooled, t["item_id"][cols], t["meta"][cols], t["people"][cols], t["overview"][cols]
        )
        extra = history_inputs(self.features, [u for u, _ in batch], seen, self.hist_len, self.dev)
        user = self.model.sequence_encoder(hist, *extra)  # [B, D]
        # Retrieval: softmax cross-entropy of user . item (SASRec-CE style), as `recommend` retrieves by it.
        dot = user @ items.T
        # PAD/UNK never score. cols is sorted, so they are its first columns: a slice filled in place (matmul keeps
        # its inputs, not its output), not a masked copy of the whole [B, I] score matrix.
        dot[:, : int((cols < spec.FIRST_ID).sum())] = NEG
        if o.mask_seen:
            mask_seen_(dot, cols, seen, label, skip_last=o.mask_seen_skip_last)
        retrieval_loss = smoothed_cross_entropy(dot, label, o.label_smoothing)
        if future.shape[1]:  # optim.future_window: the next few items as a bag, beside the next one
            retrieval_loss = retrieval_loss + future_loss(dot, cols, future)
        # Fusion head: rerank the retrieval's hardest current negatives (plus random ones) against the target,
        # i.e. exactly the candidates it sees when serving `recommend`. Its inputs are detached: the head learns
        # to rerank on top of the two towers without its noisier gradients moving the retrieval embeddings.
        # The head trains on `rerank_rows` random rows of the batch: its pairwise MLP over 1 + H + R candidates per
        # row costs more than the towers, and its detached inputs make a row subset an unbiased, cheaper step.
        rows = torch.arange(b)
        if o.rerank_rows is not None and o.rerank_rows < b:
            rows = torch.randperm(b)[: o.rerank_rows].sort().values
        br, row_label = len(rows), label[rows.to(self.dev)]
        with torch.no_grad():
            hard_scores = dot.detach()[rows.to(self.dev)].clone()
            hard_scores[torch.arange(br, device=self.dev), row_label] = NEG
            in_set = torch.zeros(self.n_items, dtype=torch.long, device=self.dev)
            in_set[cols] = torch.arange(len(cols), device=self.dev) + 1
            for r, i in enumerate(rows.tolist()):
                # none of the user's items, past or future, is a negative: future ones are false negatives that
                # would teach the reranker to demote exactly what the user watches next
                pos = in_set[torch.from_numpy(self.train_seq[batch[i][0]]).to(self.dev)]
                hard_scores[r, pos[pos > 0] - 1] = NEG
            hard = hard_scores.topk(min(o.hard_negatives, len(cols) - 1), dim=1).indices
            rnd = torch.randint(0, len(cols), (br, o.random_negatives)).to(self.dev)
            cand = torch.cat([row_label.unsqueeze(1), hard, rnd], dim=1)  # [rows, 1 + H + R] columns of `items`
        logits, x, z = self.model.fusion_head.logits(user.detach()[rows.to(self.dev)], items.detach()[cand])
        collide = cand == row_label.unsqueeze(1)
        collide[:, 0] = False
        zeros = torch.zeros(br, dtype=torch.long, device=self.dev)
        rank_loss = F.cross_entropy(logits.masked_fill(collide, NEG), zeros)
        # The served score is sigma(logit): the pointwise BCE keeps the logits calibrated, so the scores of the top
        # candidates never saturate at 1.0 in float32 (ties there would make the reranked order arbitrary).
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        keep = ~collide
        rank_loss = rank_loss + F.binary_cross_entropy_with_logits(logits[keep], labels[keep])
        loss = retrieval_loss + rank_loss
        if self.use_ae:
            recon = F.mse_loss(self.model.fusion_head.decoder(z[:, 0]), x[:, 0].detach())
            loss = loss + self.recon_weight * recon
        return loss


class NextItemObjective:
    """:class:`hybridrec.training.fit.Objective` of next-item training: batches of (user, target position) examples,
    the :class:`StepLoss` (wrapped in DistributedDataParallel under torchrun) and the full-ranking validation."""

    def __init__(
        self,
        model: HybridModel,
        table: ItemTable,
        train_seq: dict[int, np.ndarray],
        val: dict[int, int],
        cfg: RunConfig,
        ctx: distributed.DistContext,
        features: HistoryFeatures | None = None,
    ) -> None:
        self.model, self.table, self.train_seq, self.val, self.cfg, self.ctx = model, table, train_seq, val, cfg, ctx
        self.features = features
        self.users = [u for u, s in train_seq.items() if len(s) >= 2]
        self.step_loss: nn.Module = StepLoss(model, table, train_seq, cfg, features)
        self.batch_size = cfg.optim.batch_size
        self.cache: Tensor | None = None
        self.validated: tuple[Tensor | None, Tensor] | None = None  # features computed by the last validation
        if ctx.enabled:
            o, m, f = cfg.optim, cfg.model, cfg.model.fusion
            # Ablations leave parameters without gradients, which DDP must then look for after every step.
            unused = not (m.item.use_image and m.item.use_metadata and o.live_posters > 0 and f.use_autoencoder)
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.step_loss = nn.parallel.DistributedDataParallel(
                self.step_loss, device_ids=ids, find_unused_parameters=unused
            )
            self.batch_size = max(1, o.batch_size // ctx.world)  # the global batch stays o.batch_size (if divisible)

    def batches(self, epoch: int) -> Sequence[list[tuple[int, int]]]:
        rng, d = np.random.default_rng(self.cfg.optim.seed * 1000 + epoch), self.cfg.data
        examples = self.ctx.shard(epoch_examples(self.train_seq, self.users, d.targets_per_user, rng, d.train_gap))
        self.model.eval()
        with torch.no_grad():
            # the last validation's features when it ran (same weights, eval mode): no second pass over the posters.
            # With a weight average, validation ran on the averaged weights, not on those training continues from.
            reuse = self.validated if self.cfg.optim.ema_decay is None else None
            self.cache, items = reuse or self._item_features()
            self.validated = None
            # this epoch's content features of the history items (see SequenceEncoder)
            self.model.sequence_encoder.set_item_content(items)
        b = self.batch_size
        return [examples[i : i + b] for i in range(0, len(examples), b)]

    def loss(self, batch: list[tuple[int, int]]) -> Tensor:
        return self.step_loss(batch, self.cache)

    def _item_features(self) -> tuple[Tensor | None, Tensor]:
        """(pooled poster features, item embeddings [I, D]) of the whole vocabulary under the current weights."""
        cache = poster_cache(self.model, self.table)
        return cache, item_embeddings(self.model, self.table, cache)

    def validate(self) -> dict[str, float]:
        self.validated = self._item_features()
        items = self.validated[1]
        length = self.cfg.data.history_length
        m = full_ranking_metrics(
            self.model, items, self.train_seq, self.val, length, blends=BLENDS, features=self.features
        )
        return {
            "score": m["ndcg@10"],
            "val_hr@10": m["hr@10"],
            "val_ndcg@10": m["ndcg@10"],
            "val_dot_ndcg@10": m["dot_ndcg@10"],
            "val_fusion_ndcg@10": m.get("fusion_ndcg@10", 0.0),
            "blend": m["blend"],
            "scale": m["scale"],
        }
