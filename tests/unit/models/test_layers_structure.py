"""``replaced_tables``/``apply_structure`` (a checkpoint's ``structure.json``) for ``nn.EmbeddingBag`` tables
made ``RowwiseInt8EmbeddingBag`` in place: recorded with their shape and options, re-applied to the
model a config builds so that its state dict loads and it answers like the compressed module, and
a record that does not fit refused naming the module path and the field."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from toolkit.compress.quantize_embeddings import RowwiseInt8EmbeddingBag as ReExported
from toolkit.compress.quantize_embeddings import quantize_embeddings
from toolkit.models.layers import RowwiseInt8Embedding, RowwiseInt8EmbeddingBag, apply_structure, replaced_tables


class Bags(nn.Module):
    """Two bags (one with padding, mean, offsets ending at the last id), a shared bag and a table."""

    def __init__(self) -> None:
        super().__init__()
        self.items = nn.Embedding(12, 4)
        self.tower = nn.ModuleDict(
            {"genres": nn.EmbeddingBag(9, 4, mode="sum"), "tags": nn.EmbeddingBag(7, 4, mode="mean", padding_idx=-1)}
        )
        self.flat = nn.EmbeddingBag(5, 4, mode="max", include_last_offset=True)
        self.alias = self.tower["genres"]  # one table under two paths

    def forward(self, items, genres, tags, flat, offsets) -> torch.Tensor:
        return self.items(items) + self.tower["genres"](genres) + self.alias(genres) + self.tower["tags"](tags) + self.flat(flat, offsets)


def _inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    tags = torch.randint(0, 7, (16, 5), generator=g)
    tags[0] = 6  # a bag of padding only (padding_idx -1 is row 6)
    flat = torch.randint(0, 5, (40,), generator=g)
    offsets = torch.tensor([0, *sorted(torch.randint(0, 40, (15,), generator=g).tolist()), 40])  # 16 bags and the end
    return torch.randint(0, 12, (16,), generator=g), torch.randint(0, 9, (16, 3), generator=g), tags, flat, offsets


def _bag_entry(**changes) -> dict:
    entry = {"path": "tower.tags", "type": "RowwiseInt8EmbeddingBag", "num_embeddings": 7, "embedding_dim": 4}
    return {"format_version": 1, "replaced_modules": [{**entry, "mode": "mean", "padding_idx": 6, "include_last_offset": False, **changes}]}


def test_the_int8_bag_is_the_one_quantize_embeddings_re_exports() -> None:
    assert ReExported is RowwiseInt8EmbeddingBag


def test_int8_bags_are_recorded_with_their_options_and_rebuild_a_model_that_answers_exactly_the_same() -> None:
    torch.manual_seed(0)
    model = Bags().eval()
    quantized = quantize_embeddings(model)
    structure = replaced_tables(quantized, Bags())
    assert structure["replaced_modules"] == [
        {"path": "items", "type": "RowwiseInt8Embedding", "num_embeddings": 12, "embedding_dim": 4},
        {
            "path": "tower.genres",
            "type": "RowwiseInt8EmbeddingBag",
            "num_embeddings": 9,
            "embedding_dim": 4,
            "mode": "sum",
            "padding_idx": None,
            "include_last_offset": False,
        },
        {
            "path": "tower.tags",
            "type": "RowwiseInt8EmbeddingBag",
            "num_embeddings": 7,
            "embedding_dim": 4,
            "mode": "mean",
            "padding_idx": 6,  # nn.EmbeddingBag's -1, as both store it
            "include_last_offset": False,
        },
        {
            "path": "flat",
            "type": "RowwiseInt8EmbeddingBag",
            "num_embeddings": 5,
            "embedding_dim": 4,
            "mode": "max",
            "padding_idx": None,
            "include_last_offset": True,
        },
        {
            "path": "alias",
            "type": "RowwiseInt8EmbeddingBag",
            "num_embeddings": 9,
            "embedding_dim": 4,
            "mode": "sum",
            "padding_idx": None,
            "include_last_offset": False,
        },
    ]
    # on the meta device (what a checkpoint's save builds) the record is the same
    with torch.device("meta"):
        assert replaced_tables(quantized, Bags()) == structure

    torch.manual_seed(1)  # another draw of the float tables: load_state_dict must replace every value
    rebuilt = apply_structure(Bags(), copy.deepcopy(structure))
    assert rebuilt.alias is rebuilt.tower["genres"] and isinstance(rebuilt.alias, RowwiseInt8EmbeddingBag)
    assert isinstance(rebuilt.items, RowwiseInt8Embedding) and rebuilt.tower["tags"].padding_idx == 6
    rebuilt.load_state_dict(quantized.state_dict())
    rebuilt.eval()
    # the same modules, the same int8 buffers, the same kernels: equal, not close
    with torch.no_grad():
        assert torch.equal(rebuilt(*_inputs()), quantized(*_inputs()))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "median"}, r"module tower.tags: mode must be one of \['sum', 'mean', 'max'\], got 'median'"),
        ({"mode": "sum"}, r"module tower.tags: recorded with \{'mode': 'sum'.*the config builds an nn.EmbeddingBag with \{'mode': 'mean'"),
        ({"padding_idx": 7}, r"module tower.tags: padding_idx must be null or an integer in \[0, 7\), got 7"),
        ({"padding_idx": "6"}, r"module tower.tags: padding_idx must be null or an integer in \[0, 7\), got '6'"),
        ({"padding_idx": None}, r"module tower.tags: recorded with \{.*'padding_idx': None.*config builds.*'padding_idx': 6"),
        ({"include_last_offset": 0}, r"module tower.tags: include_last_offset must be true or false, got 0"),
        ({"num_embeddings": 8, "padding_idx": None}, r"module tower.tags: recorded as 8 x 4, but the config builds 7 x 4"),
        ({"embedding_dim": 0}, r"module tower.tags: num_embeddings and embedding_dim must be positive integers, got \(7, 0\)"),
        ({"path": "items"}, r"module items: is a Embedding in the model its config builds, not an nn.EmbeddingBag"),
        ({"path": "tower.topics"}, r"module tower.topics: not in the Bags its config builds"),
        ({"type": "Int4EmbeddingBag"}, r"module tower.tags: unknown type 'Int4EmbeddingBag'"),
    ],
)
def test_a_bag_entry_that_does_not_fit_is_refused_naming_its_path_and_field(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_structure(Bags(), _bag_entry(**changes))


def test_a_bag_entry_without_its_options_is_refused_naming_what_it_lacks() -> None:
    structure = _bag_entry()
    del structure["replaced_modules"][0]["mode"], structure["replaced_modules"][0]["include_last_offset"]
    with pytest.raises(ValueError, match="module tower.tags: a RowwiseInt8EmbeddingBag entry needs .*; it lacks mode, include_last_offset"):
        apply_structure(Bags(), structure)


def test_an_int8_bag_takes_padding_idx_as_nn_embedding_bag_does() -> None:
    assert RowwiseInt8EmbeddingBag(7, 4, padding_idx=-1).padding_idx == nn.EmbeddingBag(7, 4, padding_idx=-1).padding_idx == 6
    with pytest.raises(ValueError, match=r"padding_idx must lie in \[-7, 7\), got 7"):
        RowwiseInt8EmbeddingBag(7, 4, padding_idx=7)
    with pytest.raises(ValueError, match="mode must be 'sum', 'mean' or 'max', got 'median'"):
        RowwiseInt8EmbeddingBag(7, 4, mode="median")
