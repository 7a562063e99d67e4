"""What one process opens on a data directory, wired from the config tree.

Front objects stay thin: this module only builds and hands out the stage objects
(store, tower, builder, recommender); each does its own work.
"""

from __future__ import annotations

import threading
from typing import Any

from semrec.config import Settings
from semrec.encoders import (
    Encoder,
    create_image_encoder,
    create_text_encoder,
    image_dim,
    image_encoder_id,
    text_dim,
    text_encoder_id,
)
from semrec.faults import failpoint
from semrec.home import Home, OwnerLock
from semrec.index import VectorStore, open_store
from semrec.index.builder import ImageSource, IndexBuilder
from semrec.serving.recommender import Recommender
from semrec.state import EventLog, FeatureCache, ProductTable, connect
from semrec.towers import ItemTower, ItemTowerConfig, ModelManifest, ModelRegistry
from semrec.towers.registry import VersionItems
from semrec.towers.user import PoolingUserTower, UserTower, load_user_tower


class ModelMismatch(RuntimeError):
    """The configured encoders differ from those the current model was built on."""


class Semrec:
    """The data directory opened by one process. Use as a context manager."""

    def __init__(self, settings: Settings, role: str = "cli", own_index: bool = True) -> None:
        self.settings = settings
        self.home = Home(settings.home)
        self._lock: OwnerLock | None = None
        if own_index and not settings.store:  # only the embedded store is single-owner
            self._lock = self.home.lock(role)
            self._lock.acquire()
        self.conn = connect(self.home.db_path)
        self.models = ModelRegistry(self.home.models)
        self.events = EventLog(self.conn)
        self.products = ProductTable(self.conn)
        self.features = FeatureCache(self.conn)
        self._store: VectorStore | None = None
        self._store_version: str | None = None
        self._user_tower: tuple[str | None, UserTower] | None = None
        self._items: dict[str, VersionItems] = {}  # per version, read once
        self._boost: dict[str, float] = {}  # per version: [feed] settings are fixed
        self._text_encoder: Encoder | None = None
        self._encoder_lock = threading.Lock()
        self._open_lock = threading.Lock()

    # -- model ---------------------------------------------------------------------------
    def encoder_ids(self) -> dict[str, Any]:
        return {"text": text_encoder_id(self.settings.text),
                "image": image_encoder_id(self.settings.image)}

    def current_model(self, create: bool = False) -> tuple[ItemTower, ModelManifest] | None:
        """The served tower version; with ``create``, an untrained one if there is none."""
        version = self.models.current_version()
        if version is None:
            if not create:
                return None
            manifest = self._create_initial_model()
            version = manifest.version
        tower, manifest, _ = self.models.load(version)
        self._check_encoders(manifest)
        return tower, manifest

    def _create_initial_model(self) -> ModelManifest:
        s = self.settings
        config = ItemTowerConfig(
            text_dim=text_dim(s.text), image_dim=image_dim(s.image), dim=s.tower.dim,
            text_weight=s.tower.text_weight, image_weight=s.tower.image_weight, seed=s.tower.seed,
        )
        manifest = self.models.save(ItemTower(config), kind="init", encoders=self._encoder_names())
        failpoint("model:saved")
        self.models.promote(manifest.version)
        return manifest

    def _encoder_names(self) -> dict[str, str]:
        return {"text": self.settings.text.model, "image": self.settings.image.model}

    def _check_encoders(self, manifest: ModelManifest) -> None:
        configured = self._encoder_names()
        if manifest.encoders != configured:
            raise ModelMismatch(
                f"model {manifest.version} was built on encoders {manifest.encoders}, but the "
                f"config names {configured}; use a new --home for different encoders"
            )

    # -- stages --------------------------------------------------------------------------
    @property
    def store(self) -> VectorStore:
        """The store of the served version (opened once; see ``refresh`` for a swap)."""
        if self._store is None:
            with self._open_lock:  # concurrent first queries open it once
                if self._store is None:
                    model = self.current_model(create=False)
                    if model is None:
                        raise EmptyIndex(self.settings.home)
                    tower, manifest = model
                    store = self.open_store(manifest.version, tower.config.dim)
                    self._store_version = manifest.version
                    self._store = store
        return self._store

    @property
    def store_version(self) -> str | None:
        """The model version whose store is open now (None before the first query)."""
        return self._store_version

    def open_store(self, version: str, dim: int) -> VectorStore:
        return open_store(self.settings.store, self.home.index, version, dim)

    def builder(self, images: ImageSource) -> IndexBuilder:
        """An index builder for the served version, writing into the open store.

        The first build on a data directory creates the initial (untrained) model; on a
        server store it also points the served alias at the version's collection.
        """
        tower, manifest = self.current_model(create=True)
        if self._store_version != manifest.version:
            self._close_store()
            self._store = self.open_store(manifest.version, tower.config.dim)
            self._store_version = manifest.version
            self._store.activate()
        s = self.settings
        return IndexBuilder(
            self.conn, self.store, self.version_items(manifest.version),
            text_encoder=self.text_encoder,
            image_encoder=(lambda: create_image_encoder(s.image)) if s.image.enabled else None,
            encoder_ids=self.encoder_ids(), images=images,
        )

    def text_encoder(self) -> Encoder:
        """The configured text encoder, loaded once per process on first need (so a server
        loads it once for all its ``PUT /items`` calls, and may load it ahead of time)."""
        with self._encoder_lock:
            if self._text_encoder is None:
                self._text_encoder = create_text_encoder(self.settings.text)
            return self._text_encoder

    def recommender(self) -> Recommender:
        """Queries on the served version, with the user tower that version was trained with."""
        store = self.store
        return Recommender(store, self.events, self.products, self.settings.user,
                           self.user_tower(self.store_version),
                           new_boost=self.new_boost(self.store_version))

    def new_boost(self, version: str | None) -> float:
        """The new-product boost in cosine units for ``version`` (its training temperature
        times the boost its training chose on validation, else ``[feed]
        new_product_boost``); 0 for a version never trained."""
        if version is None:
            return 0.0
        if version not in self._boost:
            trained = self.version_items(version).trained is not None
            metrics = self.models.manifest(version).metrics
            temperature = float(metrics["train"]["temperature"]) if trained else 0.0
            chosen = metrics.get("new_product_boost")  # chosen on validation by `semrec train`
            feed = (self.settings.feed if chosen is None
                    else self.settings.feed.model_copy(update={"new_product_boost": chosen}))
            self._boost[version] = feed.cosine_boost(temperature)
        return self._boost[version]

    def version_items(self, version: str) -> VersionItems:
        """``version``'s tower, ID table and trained products (read once per version: a
        version's files never change)."""
        if version not in self._items:
            self._items[version] = self.models.items(version)
        return self._items[version]

    def user_tower(self, version: str | None) -> UserTower:
        """The user tower of ``version`` (loaded once per version)."""
        cached = self._user_tower
        if cached is None or cached[0] != version:
            tower: UserTower = PoolingUserTower(self.settings.user)
            if version is not None:
                _, manifest, extra = self.models.load(version)
                tower = load_user_tower(manifest, extra, self.settings.user)
            cached = self._user_tower = (version, tower)
        return cached[1]

    def promote(self, version: str, store: VectorStore) -> None:
        """Serve ``version``, whose index ``store`` is fully built: the server alias moves
        first, then ``models/CURRENT`` (both atomic). Readers never see a partial index."""
        self.models.manifest(version)  # must exist
        store.activate()
        self.models.promote(version)

    def refresh(self) -> bool:
        """Follow a promotion made since the store was opened: close the old version's store
        and open the new one. True when the served version changed. Cheap (one small file
        read), so a long-running server calls it per request."""
        if self._store is None or self.models.current_version() == self._store_version:
            return False
        self._close_store()
        return True

    def delete_products(self, product_ids: list[str]) -> int:
        """Remove products from the index, then from the catalog; gone from every query
        when this returns. A crash in between leaves catalog rows without vectors (searches
        never return them; popularity still could): deleting again finishes the job.
        Returns how many were in the catalog."""
        known = self.products.known(product_ids)
        self.store.delete(product_ids)
        with self.conn:
            self.products.delete(product_ids)
        return len(known)

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
        self._store = None
        self._store_version = None

    def info(self) -> dict[str, Any]:
        version = self.models.current_version()
        model = self.models.manifest(version) if version else None
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
        self._close_store()
        self.conn.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Semrec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmptyIndex(LookupError):
    def __init__(self, home: Any = "the data directory") -> None:
        super().__init__(f"no products indexed in {home} yet: run `semrec ingest CATALOG` first")
