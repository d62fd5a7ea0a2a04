"""Properties of the three models that serving relies on."""

from __future__ import annotations

import pytest
import torch

from hybridrec import spec
from hybridrec.dataclass_yaml import ConfigError
from hybridrec.preprocessing import Artifacts
from hybridrec.training.config import ItemEncoderConfig, ModelConfig, SequenceEncoderConfig
from hybridrec.training.modules import Dropout, HybridModel, SequenceEncoder

ART = Artifacts(
    item_ids=tuple(range(100, 140)),
    genres=("A", "B"),
    people=("p",),
    words=("w",),
    word_idf=(1.0,),
    year_mean=2000.0,
    year_std=10.0,
)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_sequence_encoder_ignores_appended_padding(cell: str) -> None:
    torch.manual_seed(0)
    enc = SequenceEncoder(SequenceEncoderConfig(cell=cell), 16, ART).eval()
    h = torch.tensor([[5, 6, 7, 8, 0], [9, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    longer = torch.cat([h, torch.zeros(3, 20, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(enc(h), enc(longer), rtol=0, atol=1e-6)
        # and the order of the history matters (the backward direction really is a reverse pass)
        assert not torch.allclose(enc(h[:1]), enc(torch.tensor([[8, 7, 6, 5, 0]])))


def test_unknown_and_negative_ids_map_to_unk_not_crash() -> None:
    model = HybridModel(ModelConfig(), ART).eval()
    batch = spec.example_batch(spec.RANK_CONTENT, 1, {"N": 4, "L": 6}, id_high=40)
    batch["history"][0, :3] = [-5, 10**9, 3]
    batch["item_id"][0, :2] = [-1, 10**9]
    batch["meta"][0, 0, 0] = float("nan")
    with torch.no_grad():
        scores = model.score(
            torch.from_numpy(batch["history"]), {t.name: torch.from_numpy(batch[t.name]) for t in spec.ITEM_INPUTS}
        )
    assert scores.shape == (1, 4) and torch.isfinite(scores).all()


def test_items_are_scored_independently_of_their_neighbours() -> None:
    model = HybridModel(ModelConfig(), ART).eval()
    b = spec.example_batch(spec.RANK_CONTENT, 1, {"N": 5, "L": 6}, id_high=40)
    items = {t.name: torch.from_numpy(b[t.name]) for t in spec.ITEM_INPUTS}
    with torch.no_grad():
        full = model.score(torch.from_numpy(b["history"]), items)
        first = model.score(torch.from_numpy(b["history"]), {k: v[:, :2] for k, v in items.items()})
    torch.testing.assert_close(full[:, :2], first, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "seq_cfg",
    [
        SequenceEncoderConfig(use_rnn=False),
        SequenceEncoderConfig(use_content=True),
        SequenceEncoderConfig(dropout=0.3),
        SequenceEncoderConfig(rnn_window=2),
        SequenceEncoderConfig(rnn_window=2, use_rnn=False),
        SequenceEncoderConfig(bag_dim=8),
        SequenceEncoderConfig(bag_dim=8, rnn_window=2),
        SequenceEncoderConfig(attention_pool=True),
        SequenceEncoderConfig(attention_pool=True, use_rnn=False),
        SequenceEncoderConfig(attention_blocks=2),
        SequenceEncoderConfig(attention_blocks=1, use_rnn=False, bag_dim=8),
    ],
    ids=[
        "no-rnn",
        "content",
        "dropout",
        "window",
        "window-no-rnn",
        "bag",
        "bag-window",
        "attention",
        "attention-no-rnn",
        "self-attention",
        "self-attention-no-rnn-bag",
    ],
)
def test_sequence_variants_stay_padding_invariant(seq_cfg: SequenceEncoderConfig) -> None:
    torch.manual_seed(0)
    enc = SequenceEncoder(seq_cfg, 16, ART).eval()
    enc.set_item_content(torch.randn(ART.num_items, 16))
    assert not enc.item_content[spec.PAD_ID].any()  # padding never carries content
    h = torch.tensor([[5, 6, 7, 0], [0, 0, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(
            enc(h), enc(torch.cat([h, torch.zeros(2, 9, dtype=torch.long)], 1)), rtol=0, atol=1e-6
        )


def test_the_rnn_window_reads_the_last_items_and_the_pooled_term_the_whole_history() -> None:
    h = torch.tensor([[5, 6, 7, 8, 0], [9, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    assert SequenceEncoder._last_items(h, 3).tolist() == [[6, 7, 8], [9, 0, 0], [0, 0, 0], [3, 4, 5]]
    assert SequenceEncoder._last_items(h, 7).tolist() == [[*r, 0, 0] for r in h.tolist()]  # wider than the input
    torch.manual_seed(0)
    enc = SequenceEncoder(SequenceEncoderConfig(rnn_window=2), 16, ART).eval()
    with torch.no_grad():
        # items before the window still count, through the mean embedding only
        assert not torch.allclose(enc(torch.tensor([[5, 7, 8]])), enc(torch.tensor([[6, 7, 8]])))
        torch.testing.assert_close(enc(torch.tensor([[9, 9, 7, 8]])), enc(torch.tensor([[9, 9, 7, 8, 0]])))
        assert torch.isfinite(enc(torch.zeros(1, 4, dtype=torch.long))).all()  # an empty history
    with pytest.raises(ConfigError, match="rnn_window"):
        SequenceEncoderConfig(rnn_window=0)


def test_the_bag_reads_every_history_item_as_an_unordered_set_and_drops_whole_items_in_training() -> None:
    torch.manual_seed(0)
    cfg = SequenceEncoderConfig(bag_dim=8, bag_dropout=0.5)
    enc = SequenceEncoder(cfg, 16, ART).eval()
    with torch.no_grad():
        bag = enc._bag(torch.tensor([[5, 6, 7, 0], [7, 5, 6, 0], [0, 0, 0, 0]]))
        torch.testing.assert_close(bag[0], bag[1])  # order-free
        assert not bag[2].any()  # an empty history: tanh(0 + zero bias)
        assert torch.isfinite(enc(torch.zeros(1, 4, dtype=torch.long))).all()
        enc.train()
        dropped = torch.stack([enc._bag(torch.tensor([[5, 6, 7, 8]])) for _ in range(20)])
    assert len({tuple(r.flatten().tolist()) for r in dropped}) > 1  # training masks differ between steps
    with pytest.raises(ConfigError, match="bag_dim"):
        SequenceEncoderConfig(bag_dim=0)
    with pytest.raises(ConfigError, match="bag_dropout"):
        SequenceEncoderConfig(bag_dropout=1.0)


def test_the_recency_weighted_bag_starts_as_the_plain_bag_and_then_weighs_items_by_distance_from_the_last() -> None:
    torch.manual_seed(0)
    plain = SequenceEncoder(SequenceEncoderConfig(bag_dim=8), 16, ART).eval()
    recent = SequenceEncoder(SequenceEncoderConfig(bag_dim=8, bag_recency=True), 16, ART).eval()
    recent.load_state_dict(plain.state_dict() | {"bag_recency": recent.bag_recency})
    hist = torch.tensor([[5, 6, 7, 0], [7, 5, 6, 0], [0, 0, 0, 0], [5, 0, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(recent._bag(hist), plain._bag(hist))  # zero log-weights: the plain bag
        assert recent.bag_recency is not None
        recent.bag_recency[1:] = -2.0  # only the last item counts, nearly
        bag = recent._bag(hist)
        assert not torch.allclose(bag[0], bag[1])  # the order now matters
        assert not bag[2].any()  # an empty history still gives tanh(0 + zero bias)
        torch.testing.assert_close(recent._bag(torch.tensor([[9, 5]])), recent._bag(torch.tensor([[9, 5, 0]])))
    with pytest.raises(ConfigError, match="bag_recency"):
        SequenceEncoderConfig(bag_recency=True)


def test_ids_under_the_minimum_count_lose_their_token_in_training_and_serving() -> None:
    torch.manual_seed(0)
    model = HybridModel(ModelConfig(item=ItemEncoderConfig(id_min_count=3, id_dropout=0.0)), ART)
    enc = model.item_encoder
    counts = torch.zeros(ART.num_items, dtype=torch.long)
    counts[spec.FIRST_ID] = 3  # the first item keeps its id token; the second (1 interaction) does not
    counts[spec.FIRST_ID + 1] = 1
    enc.set_id_counts(counts)
    ids = torch.tensor([spec.FIRST_ID, spec.FIRST_ID + 1])
    items = (
        ids,
        torch.zeros(2, spec.IMAGE_CHANNELS, spec.IMAGE_HEIGHT, spec.IMAGE_WIDTH, dtype=torch.uint8),
        torch.zeros(2, spec.META_WIDTH),
        torch.zeros(2, spec.PEOPLE_SLOTS, dtype=torch.long),
        torch.zeros(2, spec.OVERVIEW_TOKENS, dtype=torch.long),
    )
    for mode in (enc.eval, enc.train):
        mode()
        with torch.no_grad():
            before = enc.encode(*items)
            enc.id_emb.weight.add_(1.0)  # move every id row: only the kept id's embedding may follow
            after = enc.encode(*items)
            enc.id_emb.weight.sub_(1.0)
        assert not torch.allclose(before[0], after[0])
        torch.testing.assert_close(before[1], after[1])
    assert "item_encoder.id_gate" in model.state_dict()  # exported and checkpointed with the weights
    assert "item_encoder.id_gate" not in HybridModel(ModelConfig(), ART).state_dict()  # off: checkpoints are unchanged
    with pytest.raises(ConfigError, match="id_min_count"):
        ItemEncoderConfig(id_min_count=-1)


def test_fusion_layer_starts_at_the_retrieval_score_and_ablating_the_autoencoder_zeroes_f_ae() -> None:
    from hybridrec.training.config import FusionHeadConfig
    from hybridrec.training.modules import FusionHead

    torch.manual_seed(0)
    user, items = torch.randn(3, 16), torch.randn(3, 5, 16)
    head = FusionHead(FusionHeadConfig(), 16).eval()
    logits, _, _ = head.logits(user, items)
    # at initialisation the reranker reproduces the dot-product order it is handed
    torch.testing.assert_close(logits, (items @ user.unsqueeze(-1)).squeeze(-1), rtol=1e-5, atol=1e-5)
    off = FusionHead(FusionHeadConfig(use_autoencoder=False), 16).eval()
    _, _, z = off.logits(user, items)
    assert not z.any()


@pytest.mark.parametrize("blend", [0.0, 0.3, 1.0])
def test_the_served_blend_folds_into_the_fusion_layer(blend: float) -> None:
    from hybridrec.training.config import FusionHeadConfig
    from hybridrec.training.modules import FusionHead, fold_blend

    torch.manual_seed(1)
    user, items = torch.randn(2, 16), torch.randn(2, 7, 16)
    head = FusionHead(FusionHeadConfig(), 16).eval()
    with torch.no_grad():  # a trained-looking layer, far from its dot-product start
        head.fusion.weight.normal_()
        head.fusion.bias.fill_(0.7)
    logits = head.logits(user, items)[0]
    dot = (items @ user.unsqueeze(-1)).squeeze(-1)
    want = 0.5 * ((1 - blend) * dot + blend * logits)
    w, b = fold_blend(head.fusion.weight, head.fusion.bias, 16, blend, 0.5)
    with torch.no_grad():
        head.fusion.weight.copy_(w)
        head.fusion.bias.copy_(b)
    torch.testing.assert_close(head.logits(user, items)[0], want, rtol=1e-5, atol=1e-5)


def test_sequence_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    enc = SequenceEncoder(SequenceEncoderConfig(dropout=0.5, unk_dropout=0.0), 16, ART)
    h = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        enc.train()
        assert not torch.allclose(enc(h), enc(h))  # two draws of the mask
        enc.eval()
        torch.testing.assert_close(enc(h), enc(h), rtol=0, atol=0)
    # no weights of its own: a state dict saved without it loads into a model with it
    plain = SequenceEncoder(SequenceEncoderConfig(), 16, ART).state_dict()
    enc.load_state_dict(plain)


def test_tied_item_ids_share_one_parameter_and_round_trip_a_state_dict() -> None:
    cfg = ModelConfig(
        item=ItemEncoderConfig(id_dim=16, output_norm=False),
        sequence=SequenceEncoderConfig(embedding_dim=16, tie_item_ids=True),
    )
    model = HybridModel(cfg, ART)
    assert model.sequence_encoder.item_emb.weight is model.item_encoder.id_emb.weight
    assert len(list(model.parameters())) == len({id(p) for p in model.parameters()})
    copy = HybridModel(cfg, ART)
    copy.load_state_dict(model.state_dict())
    assert copy.sequence_encoder.item_emb.weight is copy.item_encoder.id_emb.weight
    torch.testing.assert_close(copy.item_encoder.id_emb.weight, model.item_encoder.id_emb.weight)
    with pytest.raises(ValueError, match="tie_item_ids"):
        HybridModel(ModelConfig(sequence=SequenceEncoderConfig(tie_item_ids=True)), ART)


def test_content_dropout_masks_content_tokens_in_training_only() -> None:
    """content_dropout=1: a training item is its bias and id tokens alone (its poster and metadata change nothing);
    in eval every present token takes part again."""
    torch.manual_seed(0)
    model = HybridModel(ModelConfig(item=ItemEncoderConfig(content_dropout=1.0, id_dropout=0.0)), ART)
    enc = model.item_encoder
    b = spec.example_batch(spec.RANK_CONTENT, 1, {"N": 4, "L": 6}, id_high=40)
    items = [torch.from_numpy(b[t.name]) for t in spec.ITEM_INPUTS]
    other = [x.clone() for x in items]
    other[1] = 255 - other[1]  # another poster
    other[2] = torch.rand_like(other[2])  # other genres and year
    with torch.no_grad():
        enc.train()
        torch.testing.assert_close(enc(*items), enc(*other), rtol=0, atol=1e-6)
        enc.eval()
        assert not torch.allclose(enc(*items), enc(*other), atol=1e-4)


def test_id_residual_adds_the_id_vector_of_known_items_only() -> None:
    """id_residual: a known item's embedding is the fused one plus its id token (before the LayerNorm); an UNK or
    cold item, which has no id token, is unchanged."""
    torch.manual_seed(0)
    plain = HybridModel(ModelConfig(item=ItemEncoderConfig(output_norm=False)), ART).eval()
    model = HybridModel(ModelConfig(item=ItemEncoderConfig(output_norm=False, id_residual=True)), ART).eval()
    model.load_state_dict(plain.state_dict())
    b = spec.example_batch(spec.RANK_CONTENT, 1, {"N": 4, "L": 6}, id_high=40)
    b["item_id"][0, :] = [5, 6, spec.UNK_ID, 7]
    items = [torch.from_numpy(b[t.name]) for t in spec.ITEM_INPUTS]
    with torch.no_grad():
        enc = model.item_encoder
        id_tok = enc.id_proj(enc.id_emb(items[0][0]))
        diff = enc(*items)[0] - plain.item_encoder(*items)[0]
    torch.testing.assert_close(diff[[0, 1, 3]], id_tok[[0, 1, 3]], rtol=0, atol=1e-5)
    torch.testing.assert_close(diff[2], torch.zeros_like(diff[2]), rtol=0, atol=1e-6)


def test_poster_for_cold_uses_the_poster_only_for_items_without_an_id_token() -> None:
    """poster_for_cold: another poster changes nothing for items with an id; an UNK (cold) item's embedding, and a
    training item's whose id is dropped, follow their poster."""
    torch.manual_seed(0)
    model = HybridModel(ModelConfig(item=ItemEncoderConfig(poster_for_cold=True, id_dropout=1.0)), ART)
    enc = model.item_encoder
    b = spec.example_batch(spec.RANK_CONTENT, 1, {"N": 4, "L": 6}, id_high=40)
    b["item_id"][0, :] = [5, 6, spec.UNK_ID, 7]
    b["meta"][0, :, spec.GENRE_SLOTS + 2] = 1.0  # every item has a poster
    items = [torch.from_numpy(b[t.name]) for t in spec.ITEM_INPUTS]
    other = [x.clone() for x in items]
    other[1] = 255 - other[1]
    with torch.no_grad():
        enc.eval()
        moved = (enc(*items) - enc(*other))[0].abs().amax(-1)
        assert moved[[0, 1, 3]].max() < 1e-6 and moved[2] > 1e-4
        enc.train()  # id_dropout=1: no training item keeps its id token, so every poster counts
        assert (enc(*items) - enc(*other))[0].abs().amax(-1).min() > 1e-4


def test_attention_pooling_weighs_the_history_by_its_last_step() -> None:
    torch.manual_seed(0)
    enc = SequenceEncoder(SequenceEncoderConfig(attention_pool=True), 16, ART).eval()
    out = torch.randn(2, 4, 2 * enc.cfg.hidden_dim)
    valid = torch.tensor([[True, True, True, False], [False, False, False, False]])
    with torch.no_grad():
        summary = enc._attend(out, out[:, 2], valid)
        assert not summary[1].any()  # an empty history: zeros
        # a convex combination of the valid steps only: the padded step's output never counts
        moved = out.clone()
        moved[0, 3] += 100.0
        torch.testing.assert_close(enc._attend(moved, out[:, 2], valid), summary)
        assert not torch.allclose(summary[0], out[0, :3].mean(0))  # not the plain mean
        assert torch.isfinite(enc(torch.zeros(1, 5, dtype=torch.long))).all()


def test_self_attention_blocks_read_every_valid_step_and_never_the_padding() -> None:
    torch.manual_seed(0)
    enc = SequenceEncoder(SequenceEncoderConfig(attention_blocks=2), 16, ART).eval()
    emb = torch.randn(2, 4, enc.cfg.embedding_dim)
    valid = torch.tensor([[True, True, True, False], [True, False, False, False]])
    pos, length = torch.arange(4).unsqueeze(0), torch.tensor([[3], [1]])
    with torch.no_grad():
        attended = enc._self_attend(emb, valid, pos, length)  # [B, E]: the last valid step's output
        moved = emb.clone()
        # random changes, not constant shifts: the blocks' LayerNorm removes a constant shift of a step, so the
        # checks would pass (or, below, fail) on rounding noise alone
        moved[:, 3] += 100.0 * torch.randn(enc.cfg.embedding_dim)  # a padded step
        moved[1, 1:] -= 50.0 * torch.randn(3, enc.cfg.embedding_dim)
        torch.testing.assert_close(enc._self_attend(moved, valid, pos, length), attended)
        # an earlier valid step reaches the last one through the attention
        moved[0, 0] += torch.randn(enc.cfg.embedding_dim)
        assert not torch.allclose(enc._self_attend(moved, valid, pos, length)[0], attended[0])
        # the last block's single query equals computing every step and reading the last
        x = emb + enc.distance_emb((length - 1 - pos).clamp(min=0))
        full = enc.blocks[1](enc.blocks[0](x, valid), valid)
        torch.testing.assert_close(enc.blocks_norm(full)[[0, 1], [2, 0]], attended)
        assert torch.isfinite(enc(torch.zeros(1, 5, dtype=torch.long))).all()  # an empty history
    assert enc.dense.in_features == 4 * enc.cfg.hidden_dim + enc.cfg.embedding_dim  # mean, last, attended
    assert not list(SequenceEncoder(SequenceEncoderConfig(), 16, ART).blocks)  # off by default: no weights
    with pytest.raises(ConfigError, match="attention_blocks"):
        SequenceEncoderConfig(attention_blocks=-1)


def test_item_attention_equals_projecting_every_token() -> None:
    """ItemEncoder.attend contracts the query through the key layer and applies the value layer after pooling: the
    same result as the textbook form, softmax(key(t) . q) over the present tokens, then the weighted sum of value(t)."""
    torch.manual_seed(0)
    enc = HybridModel(ModelConfig(), ART).item_encoder.eval()
    tokens = torch.randn(6, len(enc.TOKENS), enc.dim)
    present = torch.rand(6, len(enc.TOKENS)) > 0.4
    present[:, 0] = True  # the bias token always takes part
    logits = (enc.key(tokens) @ enc.query) / enc.dim**0.5
    weights = torch.softmax(logits.masked_fill(~present, float("-inf")), dim=-1)
    expected = (weights.unsqueeze(-1) * enc.value(tokens)).sum(1)
    with torch.no_grad():
        torch.testing.assert_close(enc.attend(tokens, present), expected, rtol=1e-5, atol=1e-5)


def test_dropout_keeps_the_mean_in_training_and_is_the_identity_otherwise() -> None:
    torch.manual_seed(0)
    x = torch.ones(200, 500)
    drop = Dropout(0.3).train()
    y = drop(x)
    assert abs(float((y == 0).float().mean()) - 0.3) < 0.01  # the share dropped
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))  # inverted-dropout scaling
    assert abs(float(y.mean()) - 1.0) < 0.01
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    assert Dropout(0.0).train()(x) is x and drop.eval()(x) is x


def test_history_features_enter_the_sequence_encoder_padding_invariantly() -> None:
    torch.manual_seed(0)
    enc = SequenceEncoder(SequenceEncoderConfig(rating_feature=True, recency_buckets=32), 16, ART).eval()
    h = torch.tensor([[5, 6, 7, 0], [9, 0, 0, 0]])
    rating = torch.tensor([[4.0, 0.5, 5.0, 0.0], [3.5, 0.0, 0.0, 0.0]])
    time = torch.tensor([[1_000, 1_000_000, 1_000_100, 0], [7, 0, 0, 0]])
    pad = torch.zeros(2, 3, dtype=torch.long)
    with torch.no_grad():
        base = enc(h, rating, time)
        # appended padding, whatever its feature values, changes nothing
        torch.testing.assert_close(
            base, enc(torch.cat([h, pad], 1), torch.cat([rating, pad + 3.0], 1), torch.cat([time, pad + 9], 1))
        )
        assert not torch.allclose(base[:1], enc(h[:1], rating[:1].flip(1).roll(-1, 1), time[:1]))  # ratings count
        assert not torch.allclose(base[:1], enc(h[:1], rating[:1], time[:1] * 0))  # so do the times
        # only times relative to the last item count
        torch.testing.assert_close(base[:1], enc(h[:1], rating[:1], time[:1] + 5_000 * (h[:1] != 0)))
        # features left out read as unknown, like explicit zeros for the ratings
        torch.testing.assert_close(enc(h, None, time), enc(h, torch.zeros_like(rating), time))
    with pytest.raises(ConfigError, match="recency_buckets"):
        SequenceEncoderConfig(recency_buckets=-1)
    with pytest.raises(ConfigError, match="rnn_window"):
        SequenceEncoderConfig(rating_feature=True, rnn_window=2)
