import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.movielens import bundled_movielens_path, load_movielens
from llmrec.data.vocab import Vocabulary
from llmrec.errors import DataValidationError, UnknownIdError
from required import skip_or_fail


def test_vocabulary_maps_ids_as_strings_both_ways() -> None:
    vocab = Vocabulary([10, 20, "x"], kind="item")
    assert len(vocab) == 3
    assert list(vocab.index([20, "10", "x"])) == [1, 0, 2]
    assert vocab.id(2) == "x"
    assert list(vocab.ids_of(np.array([[1, -1]]))[0]) == ["20", None]
    assert 10 in vocab and "30" not in vocab
    assert list(vocab.index(["30", 10], missing="negative")) == [-1, 0]
    with pytest.raises(UnknownIdError, match=r"unknown item id\(s\) \['30'\]"):
        vocab.index(["30"])
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary([1, "1"])


def test_dataset_builds_csr_with_catalogue_from_items_and_interactions() -> None:
    inter = pd.DataFrame(
        {"user_id": ["u1", "u1", "u2", "u1"], "item_id": ["a", "b", "a", "a"], "timestamp": [3, 1, 2, 5],
         "value": [4.0, 3.0, 5.0, 2.0]}
    )  # fmt: skip
    items = pd.DataFrame({"item_id": ["a", "b", "cold"], "title": ["A", "B", "Cold"], "genre": ["x", "y", "z"]})
    data = Dataset(inter, items, name="t")
    assert (data.n_users, data.n_items, len(data)) == (2, 3, 4)
    assert list(data.timestamps) == [1, 2, 3, 5]  # time-sorted
    assert data.items.loc[2, "title"] == "Cold" and data.items.loc[2, "genre"] == "z"  # cold item kept
    a = data.item_vocab.index(["a"])[0]
    u1 = data.user_vocab.index(["u1"])[0]
    assert data.matrix("binary")[u1, a] == 1.0
    assert data.matrix("count")[u1, a] == 2.0
    assert data.matrix("value")[u1, a] == 2.0  # latest value wins
    assert list(data.item_popularity) == [2, 1, 0]
    sub = data.subset(data.timestamps < 3)
    assert len(sub) == 2 and sub.item_vocab is data.item_vocab
    assert len(sub.union(data.subset(data.timestamps >= 3))) == 4


def test_bundled_movielens_matches_the_published_release(ml: Dataset) -> None:
    assert (ml.n_users, ml.n_items, len(ml)) == (610, 9742, 100836)
    assert ml.items.loc[ml.item_vocab.index(["1"])[0], "title"] == "Toy Story (1995)"
    assert ml.items["year"].notna().mean() > 0.99
    assert set(ml.interactions["event"]) == {"rating"}
    assert ml.values.min() == 0.5 and ml.values.max() == 5.0
    readme = (bundled_movielens_path() / "README.txt").read_text(encoding="utf-8")
    assert "Usage License" in readme  # the licence travels with the data


def test_bundled_files_are_byte_identical_to_the_shared_checksums() -> None:
    data_dir = Path(os.environ.get("LLMREC_DATA_DIR", "../shared/datasets"))
    sums_file = data_dir / "SHA256SUMS"
    if not sums_file.is_file():
        skip_or_fail(f"{sums_file} missing: CI expects ../shared/datasets beside the clone")
    sums = {}
    for line in sums_file.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.lstrip("*").removeprefix("./")] = digest
    for path in bundled_movielens_path().iterdir():
        key = f"movielens-latest-small/{path.name}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sums[key], path.name


def test_load_movielens_from_a_broken_folder_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="ratings.csv.*file not found"):
        load_movielens(tmp_path)
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,9.0,100\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,A (2000),Drama\n")
    with pytest.raises(DataValidationError) as err:
        load_movielens(tmp_path)
    assert (err.value.first.line, err.value.first.field) == (2, "value")
