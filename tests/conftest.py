"""Fixtures shared by the whole test suite: tiny MovieLens folders written into tmp_path, a
synthetic data set with a learnable signal, and the real MovieLens-100K cache (when present).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from toolkit.data import Splits, load_splits
from toolkit.data.movielens import GROUPLENS_GENRES

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_MOVIELENS = REPO_ROOT / ".cache" / "ml-100k"

ATOMIC_INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ATOMIC_USER_HEADER = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"
ATOMIC_ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"

# user id -> (age, gender, occupation, zip code)
TINY_USERS = {
    "1": ("24", "M", "technician", "85711"),
    "2": ("53", "F", "other", "94043"),
    "3": ("23", "M", "writer", "32067"),
    "4": ("33", "F", "educator", "T8H1N"),
}

# item id -> (RecBole title, RecBole release_year, GroupLens title, GroupLens release date, genres)
# Items 267 and 1412 reproduce RecBole's unparsed years: "unkonwn" [sic] and "V".
TINY_ITEMS = {
    "1": ("Toy Story", "1995", "Toy Story (1995)", "01-Jan-1995", ("Animation", "Children's", "Comedy")),
    "2": ("Misérables, Les", "1995", "Misérables, Les (1995)", "01-Jan-1995", ("Drama", "Musical")),
    "3": ("Star Wars", "1977", "Star Wars (1977)", "01-Jan-1977", ("Action", "Adventure", "Romance", "Sci-Fi", "War")),
    "267": ("unkonwn", "unkonwn", "unknown", "", ("unknown",)),
    "1412": (
        "Land Before Time III: The Time of the Great Giving (1995)",
        "V",
        "Land Before Time III: The Time of the Great Giving (1995) (V)",
        "01-Jan-1995",
        ("Animation", "Children's"),
    ),
}

# (user id, item id, rating, timestamp)
TINY_RATINGS = [
    ("1", "1", 5, 874965758),
    ("1", "2", 3, 876893171),
    ("2", "1", 4, 888550871),
    ("2", "3", 2, 888551000),
    ("3", "267", 1, 889237455),
    ("3", "1412", 4, 889237500),
    ("4", "3", 5, 892003000),
    ("1", "3", 4, 874965800),
]


def atomic_texts(
    users: dict[str, tuple[str, ...]] = TINY_USERS,
    items: dict[str, tuple] = TINY_ITEMS,
    ratings: list[tuple] = TINY_RATINGS,
) -> dict[str, str]:
    """RecBole atomic files (name -> text) holding ``users``, ``items`` and ``ratings``."""
    inter = [ATOMIC_INTER_HEADER] + [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in ratings]
    user = [ATOMIC_USER_HEADER] + ["\t".join((uid, *fields)) for uid, fields in users.items()]
    item = [ATOMIC_ITEM_HEADER] + [f"{iid}\t{v[0]}\t{v[1]}\t{' '.join(v[4])}" for iid, v in items.items()]
    return {
        "ml-100k.inter": "\n".join(inter) + "\n",
        "ml-100k.user": "\n".join(user) + "\n",
        "ml-100k.item": "\n".join(item) + "\n",
    }


def grouplens_bytes(
    users: dict[str, tuple[str, ...]] = TINY_USERS,
    items: dict[str, tuple] = TINY_ITEMS,
    ratings: list[tuple] = TINY_RATINGS,
) -> dict[str, bytes]:
    """GroupLens files (name -> latin-1 bytes): u.data, u.user, u.item with 19 genre flags."""
    data = [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in ratings]
    user = ["|".join((uid, *fields)) for uid, fields in users.items()]
    item = []
    for iid, (_, _, title, date, genres) in items.items():
        flags = ["1" if g in genres else "0" for g in GROUPLENS_GENRES]
        url = "" if not date else "http://us.imdb.com/M/title-exact?" + title.replace(" ", "%20")
        item.append("|".join([iid, title, date, "", url, *flags]))
    return {
        "u.data": ("\n".join(data) + "\n").encode("latin-1"),
        "u.user": ("\n".join(user) + "\n").encode("latin-1"),
        "u.item": ("\n".join(item) + "\n").encode("latin-1"),
    }


def write_files(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def movielens_files() -> SimpleNamespace:
    """The writers above, for tests that build variants of the tiny data set
    (``atomic_texts``, ``grouplens_bytes``, ``write``, and the ``users``/``items``/``ratings`` tables)."""
    return SimpleNamespace(
        atomic_texts=atomic_texts,
        grouplens_bytes=grouplens_bytes,
        write=write_files,
        users=TINY_USERS,
        items=TINY_ITEMS,
        ratings=TINY_RATINGS,
    )


@pytest.fixture
def tiny_atomic_dir(tmp_path: Path) -> Path:
    """The tiny data set in RecBole's atomic layout."""
    return write_files(tmp_path / "atomic", atomic_texts())


@pytest.fixture
def tiny_grouplens_dir(tmp_path: Path) -> Path:
    """The same tiny data set in GroupLens' layout."""
    return write_files(tmp_path / "grouplens", grouplens_bytes())


def synthetic_movielens(n_users: int = 120, n_items: int = 160, n_ratings: int = 6000, seed: int = 7) -> dict[str, str]:
    """Atomic-layout files of a MovieLens-like data set whose ratings follow item quality,
    user leniency and a per-genre taste, plus noise (so models can beat AUC 0.5, not reach 1)."""
    rng = np.random.default_rng(seed)
    genres = GROUPLENS_GENRES[1:]
    users = {
        str(u): (
            str(int(rng.integers(15, 70))),
            str(rng.choice(["M", "F"])),
            str(rng.choice(["student", "engineer", "artist", "other"])),
            f"{int(rng.integers(10000, 99999))}",
        )
        for u in range(1, n_users + 1)
    }
    items, item_genres = {}, {}
    for i in range(1, n_items + 1):
        gs = tuple(sorted(rng.choice(len(genres), size=int(rng.integers(1, 4)), replace=False)))
        item_genres[i] = gs
        year = str(int(rng.integers(1950, 1999))) if i % 25 else "unkonwn"
        items[str(i)] = (f"Movie {i}", year, "", "", tuple(genres[g] for g in gs))
    quality = rng.normal(0.0, 1.0, n_items + 1)
    leniency = rng.normal(0.0, 0.5, n_users + 1)
    taste = rng.normal(0.0, 0.5, len(genres))
    ratings = []
    for _ in range(n_ratings):
        u, i = int(rng.integers(1, n_users + 1)), int(rng.integers(1, n_items + 1))
        score = 3.4 + quality[i] + leniency[u] + taste[list(item_genres[i])].mean() + rng.normal(0.0, 0.8)
        ratings.append((str(u), str(i), int(np.clip(np.rint(score), 1, 5)), 880000000 + int(rng.integers(0, 10**7))))
    return atomic_texts(users, items, ratings)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6,000-rating synthetic data set in RecBole's atomic layout (read-only for tests)."""
    return write_files(tmp_path_factory.mktemp("synthetic") / "ml-100k", synthetic_movielens())


@pytest.fixture(scope="session")
def synthetic_splits(synthetic_data_dir: Path) -> Splits:
    """80/10/10 encoded splits of the synthetic data set (shared: do not modify)."""
    return load_splits(synthetic_data_dir, seed=42)


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    """The real MovieLens-100K cache that `make test` fetches; skips when it is absent."""
    if not REAL_MOVIELENS.is_dir():
        pytest.skip(f"MovieLens-100K is not cached at {REAL_MOVIELENS} (run `make data`)")
    return REAL_MOVIELENS


@pytest.fixture(scope="session")
def trained_movielens(movielens_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A small DLRM trained on the real data (1 epoch on 20,000 rows), exported and parity-checked.

    Shared read-only by the integration tests: ``checkpoint`` and ``onnx`` paths; each test builds
    its own repository from them.
    """
    from toolkit.export.checkpoint import export_checkpoint
    from toolkit.train import TrainConfig, train_checkpoint

    root = tmp_path_factory.mktemp("trained_movielens")
    checkpoint, onnx_path = root / "checkpoint", root / "onnx" / "model.onnx"
    train_checkpoint(movielens_dir, checkpoint, TrainConfig(max_epochs=1, max_train_rows=20_000), baselines=False)
    export_checkpoint(checkpoint, onnx_path, movielens_dir)
    return SimpleNamespace(checkpoint=checkpoint, onnx=onnx_path)


SMALL_DLRM_FIELDS = dict(
    num_dense=2,
    sparse_cardinalities=[11, 13, 5],
    multi_hot_cardinalities=[9],
    multi_hot_lengths=[4],
    embedding_dim=8,
    bottom_mlp=[16],
    top_mlp=[16, 8],
)


@pytest.fixture
def small_dlrm_config():
    """Factory of a small ``DLRMConfig`` (2 dense features, 3 sparse tables, one multi-hot of
    width 4, E=8); keyword arguments override fields: ``small_dlrm_config(embedding_dim=4)``."""
    from toolkit.models.dlrm import DLRMConfig

    return lambda **overrides: DLRMConfig(**{**SMALL_DLRM_FIELDS, **overrides})


@pytest.fixture
def triton_ports() -> dict[str, int]:
    """Three distinct free loopback ports, as ``TritonServer`` keyword arguments."""
    from toolkit.serving import free_ports

    http_port, grpc_port, metrics_port = free_ports(3)
    return {"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port}


@pytest.fixture
def kube_api():
    """kmock's Kubernetes API emulator over HTTP on loopback, for the autoscaler's tests (see
    ``tests/k8s_fixtures.py``, loaded by path: ``tests/`` is not a package)."""
    import importlib.util
    import sys

    name = "tritonrec_tests_k8s_fixtures"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("k8s_fixtures.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    api = module.KubeApi().start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def reordered_toy():
    """The toy architecture of ``tests/fixtures/models/reordered_toy.py`` (forward takes the inputs in
    reverse order), registered as ``reordered_toy`` for the test and unregistered after it."""
    import importlib.util
    import sys

    from toolkit.models import Architecture, registry
    from toolkit.models.architectures import config_maker, named_modules
    from toolkit.models.signature import feature_example_inputs, feature_signature

    path = Path(__file__).parent / "fixtures" / "models" / "reordered_toy.py"
    spec = importlib.util.spec_from_file_location("reordered_toy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reordered_toy"] = module  # dataclasses resolve the module of their class
    spec.loader.exec_module(module)
    arch = Architecture(
        name="reordered_toy",
        config_class=module.ReorderedToyConfig,
        model_class=module.ReorderedToy,
        signature=feature_signature,
        example_inputs=feature_example_inputs,
        embedding_tables=lambda m: named_modules(m, "sparse_embeddings", "multi_hot_embeddings"),
        prunable_blocks=lambda m: named_modules(m, "head"),
        cardinalities=lambda c: [*c.sparse_cardinalities, *c.multi_hot_cardinalities],
        config_for=config_maker(module.ReorderedToyConfig),
        source_files=(path,),
    )
    registry.register(arch)
    try:
        yield SimpleNamespace(architecture=arch, module=module)
    finally:
        registry.unregister("reordered_toy")
        sys.modules.pop("reordered_toy", None)
