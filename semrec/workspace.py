"""A data directory opened by one process: its parts, opened on demand, and no policy.

    state      SQLite: catalog rows, the frozen feature cache, events (``semrec.state``)
    models     saved tower versions and the served one (``ModelRegistry``)
    stores     one vector store per model version (``semrec.store.open_store``)
    encoders   the configured frozen encoders, each loaded on first need

Every stage takes what it needs from a ``Workspace``: indexing (``semrec.index``), training,
evaluation and verification use it directly, and serving builds its recommender and API on
it. A workspace that ``own_index`` holds the data directory's owner lock (Qdrant Edge allows
one process per shard); one that does not may read state, the registry and cached features
beside the owner, and build a *new* version's store (a shard folder nobody else has open).
"""

from __future__ import annotations

import threading
from typing import Any

from semrec.config import Settings
from semrec.encoders import (
    Encoder,
    EncoderUnavailable,
    create_image_encoder,
    create_text_encoder,
    image_dim,
    image_encoder_id,
    text_dim,
    text_encoder_id,
)
from semrec.errors import UserError
from semrec.faults import failpoint
from semrec.home import Home, OwnerLock
from semrec.state import EventLog, FeatureCache, ProductTable, connect
from semrec.store import VectorStore, open_store
from semrec.towers import ItemTower, ItemTowerConfig, ModelManifest, ModelRegistry, VersionItems
from semrec.towers.user import UserTower, load_user_tower


class ModelMismatch(UserError):
    """The configured encoders differ from those the served model was built on."""


class EmptyIndex(UserError, LookupError):
    def __init__(self, home: Any = "the data directory") -> None:
        super().__init__(f"no products indexed in {home} yet: run `semrec ingest CATALOG` first")


class Encoders:
    """The configured frozen encoders, each loaded once on first need (thread-safe), so an
    unchanged catalog never loads one and a server loads each once for all its writes. An
    image encoder that cannot load is remembered (``image_problem``): the process indexes
    text only and says why, once, instead of retrying on every batch."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._text: Encoder | None = None
        self._image: Encoder | None = None
        self.image_problem: str | None = (None if settings.image.enabled
                                          else "image encoder disabled")
        self._lock = threading.Lock()

    def ids(self) -> dict[str, str | None]:
        """The feature-cache identity of each encoder (model and weights), known without
        loading it: for images, of the encoder that runs (a fallback when it stands in)."""
        image = image_encoder_id(self.settings.image) if self.settings.image.enabled else None
        return {"text": text_encoder_id(self.settings.text), "image": image}

    def names(self) -> dict[str, str]:
        """The encoders a model version records it was built on: their exact identities
        (weights included; ``""`` for images when disabled)."""
        ids = self.ids()
        return {"text": ids["text"] or "", "image": ids["image"] or ""}

    def text(self) -> Encoder:
        with self._lock:
            if self._text is None:
                self._text = create_text_encoder(self.settings.text)
            return self._text

    def image(self) -> Encoder | None:
        """The image encoder, or None (with ``image_problem``) when it cannot be had."""
        with self._lock:
            if self._image is None and self.image_problem is None:
                try:
                    self._image = create_image_encoder(self.settings.image)
                except EncoderUnavailable as exc:
                    self.image_problem = str(exc)
            return self._image


class Workspace:
    """The data directory ``settings.home``, opened by one process. Use as a context manager.

    Parts open on first use and are kept: a version's store, tower, ID table and user tower
    never change once saved, so they are read once per version."""

    def __init__(self, settings: Settings, role: str = "cli", own_index: bool = True,
                 wait: bool = False) -> None:
        self.settings = settings
        self.home = Home(settings.home)
        self._lock: OwnerLock | None = None
        if own_index and not settings.store:  # only the embedded store is single-owner
            self._lock = self.home.lock(role)
            self._lock.acquire(wait=wait)
        self.conn = connect(self.home.db_path)
        self.models = ModelRegistry(self.home.models)
        self.events = EventLog(self.conn)
        self.products = ProductTable(self.conn)
        self.features = FeatureCache(self.conn)
        self.encoders = Encoders(settings)
        self._stores: dict[str, VectorStore] = {}
        self._items: dict[str, VersionItems] = {}
        self._user_towers: dict[str, UserTower] = {}
        self._open_lock = threading.Lock()

    @property
    def owns_index(self) -> bool:
        return self._lock is not None or bool(self.settings.store)

    # -- versions --------------------------------------------------------------------------
    def served_version(self, create: bool = False) -> str:
        """The version ``models/CURRENT`` names; with ``create``, an untrained one is made
        and served on a data directory that has none. ``EmptyIndex`` without one."""
        version = self.models.current_version()
        if version is None:
            if not create:
                raise EmptyIndex(self.settings.home)
            version = self.new_untrained()
            self.models.promote(version, self.store(version))
        return version

    def new_untrained(self) -> str:
        """Save an untrained version on the configured encoders (not served yet)."""
        s = self.settings
        config = ItemTowerConfig(
            text_dim=text_dim(s.text), image_dim=image_dim(s.image), dim=s.tower.dim,
            text_weight=s.tower.text_weight, image_weight=s.tower.image_weight, seed=s.tower.seed,
        )
        manifest = self.models.save(ItemTower(config), kind="init", encoders=self.encoders.names())
        failpoint("model:saved")
        return manifest.version

    def built_on_configured_encoders(self, version: str) -> bool:
        """Whether ``version`` was built on exactly the configured encoders and weights."""
        return self.manifest(version).encoders == self.encoders.names()

    def check_text_encoder(self, version: str) -> None:
        """``ModelMismatch`` unless ``version`` was built on the configured text encoder
        (what encodes new text, e.g. a search query, must match the index)."""
        built_on = self.manifest(version).encoders.get("text")
        configured = text_encoder_id(self.settings.text)  # the image side is not looked up
        if built_on != configured:
            raise ModelMismatch(
                f"model {version} was built on the text encoder {built_on}, but the config "
                f"names {configured}; run `semrec ingest CATALOG` to re-encode with it")

    def manifest(self, version: str) -> ModelManifest:
        return self.models.manifest(version)

    def items(self, version: str) -> VersionItems:
        """``version``'s tower, ID table and trained products, as indexing uses them."""
        if version not in self._items:
            self._items[version] = self.models.items(version)
        return self._items[version]

    def user_tower(self, version: str) -> UserTower:
        """The user tower ``version`` was saved with (pooling settings included)."""
        if version not in self._user_towers:
            _, manifest, extra = self.models.load(version)
            self._user_towers[version] = load_user_tower(manifest, extra, self.settings.user)
        return self._user_towers[version]

    # -- stores ----------------------------------------------------------------------------
    def store(self, version: str) -> VectorStore:
        """``version``'s vector store (opened once; concurrent first callers open it once).
        Only an owner opens the served version's Edge shard; any process may open a
        version nobody serves yet, to build it."""
        if version not in self._stores:
            with self._open_lock:
                if version not in self._stores:
                    dim = self.items(version).tower.config.dim
                    self._stores[version] = open_store(self.settings.store, self.home.index,
                                                       version, dim)
        return self._stores[version]

    def served_store(self) -> VectorStore:
        """The store of the served version."""
        return self.store(self.served_version())

    def close_store(self, version: str) -> None:
        store = self._stores.pop(version, None)
        if store is not None:
            store.close()

    def open_versions(self) -> list[str]:
        return list(self._stores)

    # -- lifecycle -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        version = self.models.current_version()
        model = self.manifest(version) if version else None
        return {
            "home": str(self.settings.home.resolve()),
            "products": self.products.count(),
            "users": self.events.user_count(),
            "events": self.events.count(),
            "features_cached": self.features.count(),
            "store": self.settings.store or f"edge://{self.home.index.resolve()}",
            "model": None if model is None else {
                "version": model.version, "kind": model.kind, "encoders": model.encoders,
                "dim": model.item_tower["dim"],
            },
            "model_versions": self.models.versions(),
        }

    def close(self) -> None:
        for version in list(self._stores):
            self.close_store(version)
        self.conn.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
