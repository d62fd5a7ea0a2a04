"""Export the leave-one-out split as RecBole atomic files, so RecBole models are compared on exactly our split.

:func:`export_recbole` writes ``<out_dir>/<name>/`` with

* ``<name>.train.inter``, ``<name>.valid.inter``, ``<name>.test.inter``: header
  ``user_id:token  item_id:token  rating:float  timestamp:float`` (tab-separated), one row per rating of that part of
  :func:`hybridrec.training.evaluation.splits.leave_one_out_split`, users ascending, each user's rows in
  chronological ``(timestamp, movieId)`` order; ids are the MovieLens userId / movieId. Users with < 3 ratings appear
  in the train file only.
* ``<name>.item``: ``item_id:token  genre:token_seq  title:token_seq``, every catalog movie (so items without
  training interactions are still candidates in full ranking); genres with spaces are joined by ``_``
  (``Science_Fiction``), the title is split on whitespace.

With ``benchmark_filename`` RecBole loads the three files in order, concatenates them and cuts them back at the same
row counts, and skips all its own filtering (no de-duplication, no k-core), so train / validation / test are exactly
ours. For general (non-sequential) models, full-sort evaluation masks, per user, the items of the earlier parts (train
for validation; train + validation for test), as :mod:`hybridrec.training.evaluation.metrics` does; ties are broken
by ``torch.topk`` there, pessimistically here. Config (``recbole_ours.yaml``)::

    data_path: <out_dir>              # the folder that holds <name>/
    dataset: <name>
    benchmark_filename: [train, valid, test]
    field_separator: "\\t"
    seq_separator: " "
    USER_ID_FIELD: user_id
    ITEM_ID_FIELD: item_id
    RATING_FIELD: rating
    TIME_FIELD: timestamp
    load_col:
      inter: [user_id, item_id, rating, timestamp]
      item: [item_id, genre, title]
    eval_args:
      group_by: user
      order: TO
      mode: full
    metrics: [Hit, NDCG, MRR]
    topk: [10]
    valid_metric: NDCG@10

and ``recbole.quick_start.run_recbole(model="EASE", dataset="<name>", config_file_list=["recbole_ours.yaml"])``.

Sequential models (RecBole's ``SASRec``, ``GRU4Rec``, ...) read benchmark files differently: RecBole then does no
data augmentation and expects each row to carry its history. ``export_recbole(..., sequential=True)`` writes the same
three files with the header ``user_id:token  item_id_list:token_seq  item_id:token  rating:float  timestamp:float``:
one train row per training position >= 1 (history = the up to ``max_len`` preceding training items), the validation
row (history = the training sequence) and the test row (history = training sequence + validation item), so the
targets are exactly ours. Add ``MAX_ITEM_LIST_LENGTH: 50`` and ``inter: [user_id, item_id_list, item_id, rating,
timestamp]`` to ``load_col`` (and ``loss_type: CE``, ``train_neg_sample_args: ~`` for SASRec-CE). Note RecBole's
full-sort evaluation of sequential models does not mask history items, unlike ours.

:func:`read_recbole` parses the exported files back (used by the round-trip test).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hybridrec.data import MovieLensData
from hybridrec.training.evaluation.splits import TEST, TRAIN, VALID, LeaveOneOutSplit, leave_one_out_split

__all__ = ["PARTS", "export_recbole", "read_recbole"]

PARTS = ("train", "valid", "test")
INTER_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
SEQ_HEADER = ("user_id:token", "item_id_list:token_seq", "item_id:token", "rating:float", "timestamp:float")
ITEM_HEADER = ("item_id:token", "genre:token_seq", "title:token_seq")


def _tokens(values: Sequence[str]) -> str:
    return " ".join("_".join(v.split()) for v in values if v.strip())


def _float(value: float) -> str:
    return repr(float(value))  # shortest text that parses back to the same float64


def _write(path: Path, header: Sequence[str], rows: list[list[str]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write("\t".join(header) + "\n")
        fh.writelines("\t".join(row) + "\n" for row in rows)
    tmp.replace(path)


def export_recbole(
    data: MovieLensData,
    out_dir: str | Path,
    dataset_name: str,
    *,
    split: LeaveOneOutSplit | None = None,
    sequential: bool = False,
    max_len: int = 50,
) -> Path:
    """Write the RecBole files of the leave-one-out split into ``out_dir/dataset_name`` and return that folder."""
    if not dataset_name or any(c in dataset_name for c in "/\\.") or dataset_name.strip() != dataset_name:
        raise ValueError(f"dataset_name must be a plain folder name without dots or slashes, got {dataset_name!r}")
    split = split or leave_one_out_split(data)
    folder = Path(out_dir) / dataset_name
    folder.mkdir(parents=True, exist_ok=True)
    r = split.ratings
    users = r.user_ids.tolist()
    items = r.movie_ids.tolist()
    ratings = [_float(v) for v in r.ratings.tolist()]
    stamps = [str(int(t)) for t in r.timestamps.tolist()]
    roles = split.role
    if not sequential:
        for part, role in zip(PARTS, (TRAIN, VALID, TEST), strict=True):
            idx = np.flatnonzero(roles == role).tolist()
            rows = [[str(users[i]), str(items[i]), ratings[i], stamps[i]] for i in idx]
            _write(folder / f"{dataset_name}.{part}.inter", INTER_HEADER, rows)
    else:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        out: dict[int, list[list[str]]] = {TRAIN: [], VALID: [], TEST: []}
        starts = np.concatenate(([0], np.flatnonzero(np.diff(r.user_ids)) + 1)).tolist() if len(r) else []
        ends = [*starts[1:], len(r)] if starts else []
        for start, end in zip(starts, ends, strict=True):
            for i in range(start + 1, end):  # the user's first rating has no history: never a target
                history = " ".join(str(m) for m in items[max(start, i - max_len) : i])
                out[int(roles[i])].append([str(users[i]), history, str(items[i]), ratings[i], stamps[i]])
        for part, role in zip(PARTS, (TRAIN, VALID, TEST), strict=True):
            _write(folder / f"{dataset_name}.{part}.inter", SEQ_HEADER, out[role])
    item_rows = [[str(mid), _tokens(m.genres), _tokens(m.title.split())] for mid, m in sorted(data.movies.items())]
    _write(folder / f"{dataset_name}.item", ITEM_HEADER, item_rows)
    return folder


def read_recbole(folder: str | Path, dataset_name: str) -> dict[str, list[dict[str, str]]]:
    """The exported files as rows of ``{field name: text}`` (``train``, ``valid``, ``test`` and ``item``), in file
    order; field names without their ``:type`` suffix."""
    folder = Path(folder)
    out: dict[str, list[dict[str, str]]] = {}
    for part in (*PARTS, "item"):
        path = folder / (f"{dataset_name}.item" if part == "item" else f"{dataset_name}.{part}.inter")
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = [h.split(":")[0] for h in next(reader)]
            out[part] = [dict(zip(header, row, strict=True)) for row in reader]
    return out
