from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from encode_fakes import CountingEncoder

from llmrec.data.store import Store
from llmrec.encode.cache import EMBEDDINGS, CachedEncoder, EmbeddingCache, memory_cache, text_hash
from llmrec.encode.encoder import TextEncoder
from llmrec.errors import ConfigError, StoreError
from recording import RecordingEncoder


def test_migration_creates_the_embeddings_table_as_declared(store: Store) -> None:
    store.migrate()
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, kind, reflected, other: kind != "table" or name == "embeddings",
            },
        )
        assert compare_metadata(context, EMBEDDINGS.metadata) == []
        pk = sa.inspect(conn).get_pk_constraint("embeddings")
    assert pk["constrained_columns"] == ["model_id", "text_hash"]


def test_text_hash_is_sha256_of_the_exact_text() -> None:
    assert text_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert text_hash("abc ") != text_hash("abc")


def test_unchanged_text_is_never_embedded_twice(cache: EmbeddingCache, fake: CountingEncoder) -> None:
    encoder = CachedEncoder(fake, cache)
    first = encoder.encode(["Heat (1995)", "Toy Story (1995)"])
    assert fake.embedded == ["Heat (1995)", "Toy Story (1995)"]
    again = encoder.encode(["Toy Story (1995)", "Heat (1995)"])
    assert len(fake.calls) == 1, "cached texts reached the encoder"
    np.testing.assert_array_equal(again, first[::-1])
    assert (encoder.last.hits, encoder.last.embedded) == (2, 0)
    assert first.dtype == np.float32 and first.shape == (2, fake.dim)
    cache.clear(fake.model_id)


def test_changed_text_is_embedded_again(cache: EmbeddingCache, fake: CountingEncoder) -> None:
    encoder = CachedEncoder(fake, cache)
    encoder.encode(["Heat (1995)", "Toy Story (1995)"])
    out = encoder.encode(["Heat (1995)", "Toy Story (1995). Genres: Animation"])
    assert fake.calls[1] == ["Toy Story (1995). Genres: Animation"]
    np.testing.assert_array_equal(out[1], fake.encode(["Toy Story (1995). Genres: Animation"])[0])
    assert cache.count(fake.model_id) == 3
    cache.clear(fake.model_id)


def test_duplicates_in_one_call_are_embedded_once_and_returned_in_order(
    cache: EmbeddingCache, fake: CountingEncoder
) -> None:
    encoder = CachedEncoder(fake, cache)
    out = encoder.encode(["a", "b", "a", "c", "a", "b"])
    assert fake.embedded == ["a", "b", "c"]
    assert (encoder.last.texts, encoder.last.unique, encoder.last.embedded) == (6, 3, 3)
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[4])
    np.testing.assert_array_equal(out[1], out[5])
    assert not np.array_equal(out[0], out[1])
    cache.clear(fake.model_id)


def test_a_different_model_does_not_share_entries(cache: EmbeddingCache, fake: CountingEncoder) -> None:
    other = CountingEncoder()
    CachedEncoder(fake, cache).encode(["a"])
    CachedEncoder(other, cache).encode(["a"])
    assert other.embedded == ["a"]
    cache.clear(fake.model_id)
    cache.clear(other.model_id)


def test_vectors_persist_across_store_instances(store_url: str, fake: CountingEncoder) -> None:
    texts = [f"item {i}" for i in range(30)]
    with Store(store_url) as first_store:
        original = CachedEncoder(fake, EmbeddingCache(first_store, chunk_size=7)).encode(texts)
    with Store(store_url) as second_store:
        cache = EmbeddingCache(second_store, chunk_size=7)
        reread = CachedEncoder(fake, cache).encode(texts)
        assert len(fake.calls) == 1 and len(fake.embedded) == 30
        np.testing.assert_array_equal(reread, original)  # float32 bytes round-trip exactly
        assert cache.persistent
        assert cache.clear(fake.model_id) == 30
        assert cache.count(fake.model_id) == 0


def test_empty_input_and_progress(cache: EmbeddingCache, fake: CountingEncoder) -> None:
    encoder = CachedEncoder(fake, cache, chunk_size=2)
    assert encoder.encode([]).shape == (0, fake.dim)
    out = encoder.encode(["x", "y", "z"], show_progress=True)
    assert out.shape == (3, fake.dim)
    assert fake.calls == [["x", "y"], ["z"]]  # chunked
    cache.clear(fake.model_id)


def test_a_failed_write_stores_nothing(tmp_path, fake: CountingEncoder) -> None:
    store = Store(f"sqlite:///{tmp_path / 'e.db'}")
    cache = EmbeddingCache(store, chunk_size=1)
    cache.count()  # migrate first
    calls = {"n": 0}

    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT INTO embeddings"):
            calls["n"] += 1
            if calls["n"] == 2:
                statement = statement.replace("INSERT INTO embeddings", "INSERT INTO no_such_table", 1)
        return statement, parameters

    sa.event.listen(store.engine, "before_cursor_execute", before, retval=True)
    with pytest.raises(StoreError, match="embedding cache"):
        CachedEncoder(fake, cache).encode(["a", "b", "c"])
    sa.event.remove(store.engine, "before_cursor_execute", before)
    assert cache.count() == 0


def test_memory_cache_is_shared_per_process(fake: CountingEncoder) -> None:
    CachedEncoder(fake, memory_cache()).encode(["shared text"])
    CachedEncoder(fake, memory_cache()).encode(["shared text"])
    assert fake.embedded == ["shared text"]
    assert not memory_cache().persistent
    memory_cache().clear(fake.model_id)
    with pytest.raises(ConfigError):
        EmbeddingCache(None, chunk_size=0)


def test_real_encoder_through_the_cache(text_encoder: TextEncoder, tmp_path) -> None:
    proxy = RecordingEncoder(text_encoder)
    cache = EmbeddingCache(Store(f"sqlite:///{tmp_path / 'e.db'}"))
    texts = ["Toy Story (1995). Genres: Animation", "Heat (1995). Genres: Action, Crime"]
    cached = CachedEncoder(proxy, cache).encode(texts)
    np.testing.assert_allclose(cached, text_encoder.encode(texts), atol=1e-5)
    CachedEncoder(proxy, cache).encode(texts)
    assert proxy.embedded == texts
    assert cache.count(text_encoder.model_id) == 2
