"""Collaborative tokens (CoLLM-style): item vectors of a CF or sequential model as soft tokens in a prompt.

A CoLLM adapter carries three things: the item vectors of a fitted scorer (:class:`ItemTable`, e.g. ALS item
factors or SASRec item embeddings), a small MLP (the *projector*) that maps one such vector to one input embedding
of the language model, and optionally LoRA weights trained together with it. Wherever a prompt mentions an item,
the text carries :data:`ITEM_SLOT` right after the item's title; the slot is not text: it becomes that item's
projected vector in the model's ``inputs_embeds``. So the model reads "Heat" *and* what the collaborative model
knows about Heat (who else liked it), which text alone cannot tell it.

This module is the format and the runtime (what :class:`~llmrec.llm.local.LocalLM` needs to score with an adapter);
training lives in :mod:`llmrec.adapt.collm`. It sits in the ``llm`` layer because the served language model loads
adapters by name and a lower layer never imports a higher one. Files of an adapter folder (beside the registry's
``llmrec_adapter.json``, and PEFT's ``adapter_config.json`` + ``adapter_model.safetensors`` when LoRA was trained):

- :data:`COLLM_CONFIG`: format version, the scorer (name and config) the vectors came from, projector shapes;
- ``collm_projector.safetensors``: the projector's weights;
- ``collm_items.safetensors`` + ``collm_item_ids.json``: the item vectors (standardised) and their external ids.

The slot marker cannot be forged by data: every title and text a prompt shows goes through
:func:`~llmrec.llm.prompts.sanitize`, which removes anything shaped like ``<|...|>``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.errors import ConfigError, UnknownIdError

__all__ = [
    "COLLM_CONFIG",
    "ITEM_SLOT",
    "SLOT_ID",
    "CollmRuntime",
    "ItemTable",
    "ProjectorSpec",
    "encode_with_slots",
    "inputs_embeds",
    "is_collm_adapter",
    "load_collm",
    "new_projector",
    "save_collm",
]

ITEM_SLOT = "<|collm_item|>"
"""Marker placed right after an item's title in prompt text; it becomes the item's collaborative soft token."""

SLOT_ID = -1
"""Placeholder in token-id lists where a soft token goes (never a real token id)."""

COLLM_CONFIG = "collm_config.json"
"""The JSON file that marks a folder as a CoLLM adapter."""

_PROJECTOR_FILE = "collm_projector.safetensors"
_ITEMS_FILE = "collm_items.safetensors"
_IDS_FILE = "collm_item_ids.json"
_FORMAT = 1


@dataclass(frozen=True)
class ItemTable:
    """Item vectors of a fitted scorer, keyed by external item id.

    Attributes:
        ids: External item ids, one per row of ``vectors``.
        vectors: ``(n_items, dim)`` float32, standardised per dimension over the catalogue (so the projector sees
            inputs of unit scale whichever model produced them; a vector's norm still differs between items).
        scorer: Short name of the scorer the vectors came from (``als``, ``sasrec``...).
        scorer_config: That scorer's configuration (recorded for provenance; the vectors are what is used).
    """

    ids: tuple[str, ...]
    vectors: np.ndarray
    scorer: str
    scorer_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.ids) or self.vectors.shape[0] == 0:
            raise ConfigError(
                f"an item table needs one vector per item id: got {len(self.ids)} ids and vectors of shape "
                f"{self.vectors.shape}"
            )
        if not np.isfinite(self.vectors).all():
            raise ConfigError(f"the {self.scorer} item vectors hold NaN or infinite values: refit the scorer")

    @classmethod
    def from_raw(
        cls,
        ids: Sequence[object] | np.ndarray,
        raw: np.ndarray,
        scorer: str,
        scorer_config: dict[str, Any] | None = None,
    ) -> ItemTable:
        """A table of ``raw`` vectors standardised per dimension (constant dimensions are only centred)."""
        raw = np.asarray(raw, dtype=np.float64)
        std = raw.std(axis=0)
        vectors = (raw - raw.mean(axis=0)) / np.where(std > 0, std, 1.0)
        return cls(tuple(str(i) for i in ids), vectors.astype(np.float32), scorer, dict(scorer_config or {}))

    @property
    def dim(self) -> int:
        """Length of one item vector."""
        return int(self.vectors.shape[1])

    def index(self, item_ids: Sequence[object], *, adapter: str = "this CoLLM adapter") -> list[int]:
        """Row of each external item id.

        Raises:
            UnknownIdError: An id has no vector (an item added after the scorer was fitted); the message names it
                and the fix.
        """
        lookup = self._lookup
        rows, unknown = [], []
        for item in item_ids:
            row = lookup.get(str(item))
            if row is None:
                unknown.append(str(item))
            else:
                rows.append(row)
        if unknown:
            raise UnknownIdError(
                f"item id(s) {unknown[:5]} have no collaborative vector in {adapter} (its {self.scorer} model knew "
                f"{len(self.ids)} items). Fix: retrain the adapter on data that includes them "
                "(llmrec tune collm --overwrite), or rerank without this adapter"
            )
        return rows

    @cached_property
    def _lookup(self) -> dict[str, int]:
        return {item: row for row, item in enumerate(self.ids)}

    def fingerprint(self) -> str:
        """A short hash of the ids and vectors (a resumed run must train against the same table)."""
        digest = hashlib.sha256(json.dumps([self.scorer, list(self.ids)]).encode())
        digest.update(np.ascontiguousarray(self.vectors).tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ProjectorSpec:
    """Shapes of the projector: ``Linear(item_dim, hidden) -> GELU -> Linear(hidden, out_dim)``.

    Attributes:
        item_dim: Length of an item vector (the scorer's factors or embedding size).
        hidden: Width of the hidden layer.
        out_dim: The language model's hidden size (one input embedding).
    """

    item_dim: int
    hidden: int
    out_dim: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (with the layer shapes spelled out)."""
        return {
            "item_dim": self.item_dim,
            "hidden": self.hidden,
            "out_dim": self.out_dim,
            "layers": [[self.item_dim, self.hidden], [self.hidden, self.out_dim]],
            "activation": "gelu",
        }


def new_projector(spec: ProjectorSpec, embedding_rms: float | None = None) -> Any:
    """A freshly initialised projector (a ``torch.nn.Sequential``; seed torch first for a reproducible one).

    Args:
        spec: Its shapes.
        embedding_rms: Root mean square of the model's token embeddings: the last layer is scaled so that a
            standardised item vector starts at about that size, i.e. looks like a word to the model rather than a
            shout. ``None`` keeps torch's default initialisation.
    """
    import torch
    from torch import nn

    last = nn.Linear(spec.hidden, spec.out_dim)
    projector = nn.Sequential(nn.Linear(spec.item_dim, spec.hidden), nn.GELU(), last)
    if embedding_rms is not None:
        with torch.no_grad():
            probe = projector(torch.randn(256, spec.item_dim))
            rms = float(probe.pow(2).mean().sqrt())
            if rms > 0:
                last.weight.mul_(embedding_rms / rms)
                last.bias.mul_(embedding_rms / rms)
    return projector


def encode_with_slots(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` with :data:`SLOT_ID` where :data:`ITEM_SLOT` stood.

    The text between slots is tokenized piece by piece (the model never sees those pieces joined, since a soft
    token sits between them), the same way in training and at inference.
    """
    ids: list[int] = []
    pieces = text.split(ITEM_SLOT)
    for n, piece in enumerate(pieces):
        if piece:
            ids.extend(int(t) for t in tokenizer(piece, add_special_tokens=False)["input_ids"])
        if n < len(pieces) - 1:
            ids.append(SLOT_ID)
    return ids


def inputs_embeds(model: Any, projector: Any, vectors: Any, ids: Any, items: Sequence[Sequence[int]]) -> Any:
    """Input embeddings of ``ids`` ``(batch, length)`` with each slot replaced by its projected item vector.

    Args:
        model: The language model (its input embedding table embeds the ordinary tokens).
        projector: Maps ``(n, item_dim)`` item vectors to ``(n, hidden)`` embeddings.
        vectors: ``(n_items, item_dim)`` float tensor of the item table.
        ids: Long tensor with :data:`SLOT_ID` at the soft-token positions.
        items: Per row, the table rows of its slots, left to right.

    Raises:
        ConfigError: The number of slots in a row differs from the number of items given for it.
    """
    import torch

    slot = ids == SLOT_ID
    per_row = slot.sum(dim=1).tolist()
    if per_row != [len(row) for row in items]:
        raise ConfigError(
            f"the prompt has {per_row} item slots per row but {[len(r) for r in items]} item ids were given: "
            "give one item id per title marked with ITEM_SLOT"
        )
    embeds = model.get_input_embeddings()(ids.clamp(min=0))
    flat = [i for row in items for i in row]
    if not flat:
        return embeds
    soft = projector(vectors[torch.tensor(flat, dtype=torch.long)]).to(embeds.dtype)
    return embeds.index_put(slot.nonzero(as_tuple=True), soft)  # nonzero is row-major: the order of ``flat``


def is_collm_adapter(path: str | Path) -> bool:
    """Whether ``path`` is a CoLLM adapter folder (it holds :data:`COLLM_CONFIG`)."""
    return (Path(path) / COLLM_CONFIG).is_file()


def save_collm(out: Path, table: ItemTable, spec: ProjectorSpec, projector_state: dict[str, Any], lora: bool) -> None:
    """Write the CoLLM files of an adapter into ``out`` (safetensors + JSON, no pickle)."""
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in projector_state.items()}, str(out / _PROJECTOR_FILE))
    save_numpy({"vectors": np.ascontiguousarray(table.vectors)}, str(out / _ITEMS_FILE))
    (out / _IDS_FILE).write_text(json.dumps(list(table.ids)) + "\n", encoding="utf-8")
    config = {
        "format": _FORMAT,
        "scorer": {"name": table.scorer, "config": table.scorer_config},
        "n_items": len(table.ids),
        "projector": spec.to_dict(),
        "slot": ITEM_SLOT,
        "lora": lora,
        "table_fingerprint": table.fingerprint(),
    }
    (out / COLLM_CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")


@dataclass
class CollmRuntime:
    """A loaded CoLLM adapter: the item table, its vectors as a tensor, and the projector (eval mode).

    Attributes:
        name: The adapter folder's name (for messages).
        table: External ids and vectors.
        spec: Projector shapes.
        projector: The torch module.
        vectors: ``table.vectors`` as a float tensor.
        has_lora: Whether LoRA weights were trained with the projector (merged into the model on load).
    """

    name: str
    table: ItemTable
    spec: ProjectorSpec
    projector: Any
    vectors: Any
    has_lora: bool

    def rows(self, item_ids: Sequence[object]) -> list[int]:
        """Table rows of external item ids (:class:`UnknownIdError` naming the fix for unknown ones)."""
        return self.table.index(item_ids, adapter=f"CoLLM adapter {self.name!r}")

    def score(
        self,
        model: Any,
        prompt_ids: list[int],
        prompt_items: list[int],
        targets: list[list[int]],
        items: list[list[int]],
    ) -> list[Any]:
        """Log-probability of every real token of every continuation (slots are fed, never scored).

        The prompt (with its soft tokens) is computed once; the continuations run as one right-padded batch
        against its key/value cache. The caller holds the model's lock and torch's inference mode.

        Args:
            model: The language model.
            prompt_ids: Prompt token ids with :data:`SLOT_ID` at soft tokens.
            prompt_items: Table rows of the prompt's slots.
            targets: Per continuation, token ids (slots allowed, but not last: a slot has no probability).
            items: Per continuation, table rows of its slots.

        Returns:
            Per continuation, a 1-D tensor of its real tokens' log-probabilities.
        """
        import torch
        from transformers import DynamicCache
        from transformers.cache_utils import CacheLayerMixin

        if not prompt_ids:
            raise ConfigError("empty prompt: CoLLM scoring needs a chat-templated prompt")
        for t, its in zip(targets, items, strict=True):
            if sum(1 for token in t if token == SLOT_ID) != len(its):
                raise ConfigError(
                    f"a continuation has {t.count(SLOT_ID)} item slots but {len(its)} item ids were given for it: "
                    "give one item id per title marked with ITEM_SLOT"
                )
        if any(t and t[-1] == SLOT_ID for t in targets):
            raise ConfigError("a continuation ends with an item slot, which has no probability: put text after it")
        prompt = torch.tensor([prompt_ids], dtype=torch.long)
        cache = DynamicCache(config=model.config)
        embeds = inputs_embeds(model, self.projector, self.vectors, prompt, [prompt_items])
        out = model(inputs_embeds=embeds, past_key_values=cache, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        fed = [t[:-1] for t in targets]
        width = max((len(f) for f in fed), default=0)
        rows = None
        if width:
            n = len(fed)
            ids = torch.zeros(n, width, dtype=torch.long)
            real = torch.zeros(n, width, dtype=torch.long)
            fed_items = []
            for r, (f, its) in enumerate(zip(fed, items, strict=True)):
                if f:
                    ids[r, : len(f)] = torch.tensor(f, dtype=torch.long)
                    real[r, : len(f)] = 1
                fed_items.append(list(its))  # the last target is never a slot: every slot is fed
            kv = []
            for layer in cache.layers:  # linear-attention or cache-less layers have no key/value tensors to copy
                if not isinstance(layer, CacheLayerMixin) or layer.keys is None or layer.values is None:
                    raise ConfigError(
                        f"CoLLM scoring needs a key/value cache in every layer; {type(layer).__name__} has none"
                    )
                kv.append((layer.keys.expand(n, -1, -1, -1), layer.values.expand(n, -1, -1, -1)))
            batch_cache = DynamicCache(ddp_cache_data=kv, config=model.config)
            mask = torch.cat([torch.ones(n, len(prompt_ids), dtype=torch.long), real], dim=1)
            embeds = inputs_embeds(model, self.projector, self.vectors, ids, fed_items)
            out = model(inputs_embeds=embeds, attention_mask=mask, past_key_values=batch_cache)
            rows = torch.log_softmax(out.logits.float(), dim=-1)
        result = []
        for r, t in enumerate(targets):
            lps = []
            for j, token in enumerate(t):
                if token == SLOT_ID:
                    continue
                dist = first if j == 0 else rows[r, j - 1]  # type: ignore[index]
                lps.append(dist[token])
            result.append(torch.stack(lps) if lps else torch.zeros(0))
        return result


def load_collm(path: str | Path, hidden_size: int) -> CollmRuntime:
    """Load the CoLLM part of an adapter folder for a model whose input embeddings have ``hidden_size``.

    Raises:
        ConfigError: Files are missing or malformed, or the projector was trained for another hidden size.
    """
    import torch
    from safetensors.numpy import load_file as load_numpy
    from safetensors.torch import load_file

    folder = Path(path)
    try:
        config = json.loads((folder / COLLM_CONFIG).read_text(encoding="utf-8"))
        ids = json.loads((folder / _IDS_FILE).read_text(encoding="utf-8"))
        vectors = load_numpy(str(folder / _ITEMS_FILE))["vectors"]
        state = load_file(str(folder / _PROJECTOR_FILE))
        shapes = config["projector"]
        spec = ProjectorSpec(int(shapes["item_dim"]), int(shapes["hidden"]), int(shapes["out_dim"]))
        scorer = config["scorer"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{folder} is not a complete CoLLM adapter ({exc}): retrain it with `llmrec tune collm --overwrite`"
        ) from exc
    if config.get("format") != _FORMAT:
        raise ConfigError(f"{folder} has CoLLM format {config.get('format')!r}; this llmrec reads {_FORMAT}: retrain")
    if spec.out_dim != hidden_size:
        raise ConfigError(
            f"CoLLM adapter {folder.name!r} projects to {spec.out_dim} dimensions but the language model's hidden "
            f"size is {hidden_size}: use it with the base model it was trained on, or retrain it"
        )
    table = ItemTable(tuple(str(i) for i in ids), vectors, str(scorer["name"]), dict(scorer.get("config") or {}))
    if table.dim != spec.item_dim:
        raise ConfigError(f"{folder}: item vectors have {table.dim} dimensions, the projector expects {spec.item_dim}")
    projector = new_projector(spec)
    projector.load_state_dict(state)
    projector.eval()
    for p in projector.parameters():
        p.requires_grad_(False)
    return CollmRuntime(
        name=folder.name,
        table=table,
        spec=spec,
        projector=projector,
        vectors=torch.from_numpy(np.ascontiguousarray(table.vectors)),
        has_lora=bool(config.get("lora")),
    )
