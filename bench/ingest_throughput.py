"""Ingest throughput of the full pipeline next to the raw encoders, measured in one run.

The pipeline is what ``semrec ingest`` runs (``semrec.index.ingest(workspace, products,
images)`` in a fresh, empty home). The raw figures use the very same encoder
objects the pipeline loaded (``workspace.encoders.text()``/``.image()``):

- text: ``encode_text`` on every product's ``Product.text()``, in one call;
- images: ``ImageSource.load`` (PIL decode to RGB, single-threaded) and ``encode_image`` on
  the decoded images, in chunks of the pipeline's batch size; decode and encode are timed
  separately so the overhead can be stated with and without decode.

The raw passes run before *and* after the pipeline (``--raw-passes 2``, the default) and the
comparison uses their mean, so a drift in machine load biases neither side. Model loading
and a small warm-up are done before any timing and reported apart.

Overhead = pipeline_seconds / raw_seconds - 1, with raw = text encode + image decode + image
encode (the work any indexer must do) and, second, raw = text encode + image encode.

Run from the repository root::

    python -m bench.ingest_throughput --dataset ../shared/datasets/amazon-games
    python -m bench.ingest_throughput --dataset ../shared/datasets/hm-fashion --limit 2000
    python -m bench.ingest_throughput --dataset ../shared/datasets/hm-fashion \
        --image-model efficientnet-lite0

``--image-model`` picks the image encoder: an open_clip model with random weights
(``--weights``, default ViT-B-32), or a registry encoder with its bundled weights
(``efficientnet-lite0``, the same as ``SEMREC_IMAGE__MODEL=efficientnet-lite0``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import OUT, begin, dataset_parser, finish, write_result
from ingest import image_digest, load_image, read_catalog
from semrec.catalog import ImageSource, Product
from semrec.config import ImageEncoderSettings, load_settings
from semrec.encoders import Encoder, known_encoders
from semrec.index import BATCH
from semrec.index import ingest as index_products
from semrec.workspace import Workspace

DEFAULT_WEIGHTS = OUT / "vit-b-32-random.pt"


def random_clip_weights(path: Path, model: str = "ViT-B-32") -> Path:
    """A randomly initialised open_clip checkpoint at ``path`` (created once).

    No pretrained weights can be downloaded here; random weights cost exactly the same
    compute as the real ones (same architecture, same tensor shapes).
    """
    if not path.is_file():
        import open_clip
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(open_clip.create_model(model).state_dict(), path)
        print(f"created random {model} weights at {path}")
    return path


def raw_text(encoder: Encoder, texts: list[str]) -> float:
    """Seconds for ``encode_text`` on all ``texts`` in one call."""
    started = time.perf_counter()
    encoder.encode_text(texts)
    return time.perf_counter() - started


class Clock:
    """Wall and process CPU seconds (all threads) since creation."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def raw_images(encoder: Encoder, images: ImageSource, paths: list[Path]) -> tuple[float, float]:
    """(decode seconds, encode seconds) for all ``paths``, in chunks of ``BATCH``."""
    decode = encode = 0.0
    for start in range(0, len(paths), BATCH):
        started = time.perf_counter()
        decoded = [images.load(p) for p in paths[start:start + BATCH]]
        decode += time.perf_counter() - started
        started = time.perf_counter()
        encoder.encode_image(decoded)
        encode += time.perf_counter() - started
    return decode, encode


def raw_pass(text_enc: Encoder, image_enc: Encoder | None, images: ImageSource,
             texts: list[str], paths: list[Path]) -> dict[str, float]:
    """One timed pass of the raw encoders over the whole input."""
    clock = Clock()
    result = {"text_encode_s": raw_text(text_enc, texts), "image_decode_s": 0.0,
              "image_encode_s": 0.0}
    if image_enc is not None and paths:
        result["image_decode_s"], result["image_encode_s"] = raw_images(image_enc, images, paths)
    result["total_s"], result["total_cpu_s"] = clock.stop()
    return result


def one_repeat(products: list[Product], texts: list[str], paths: list[Path],
               image_settings: ImageEncoderSettings, raw_passes: int,
               keep_home: Path | None = None) -> dict[str, Any]:
    """Fresh home (temp, or ``keep_home`` kept after): load encoders, warm up, raw pass,
    pipeline, (raw pass)."""
    with_images = image_settings.enabled
    if keep_home is not None and keep_home.exists() and any(keep_home.iterdir()):
        raise SystemExit(f"--home {keep_home} is not empty: the pipeline needs a fresh home")
    home = keep_home or Path(tempfile.mkdtemp(prefix="semrec-bench-ingest-"))
    try:
        settings = load_settings(home=home, image=image_settings)
        images = ImageSource(  # exactly as `semrec ingest` builds it
            digest=image_digest,
            load=lambda p: load_image(p, max_pixels=settings.image.max_pixels),
        )
        with Workspace(settings, role="ingest") as ws:
            started = time.perf_counter()
            text_enc = ws.encoders.text()
            image_enc = ws.encoders.image() if with_images else None
            if with_images and image_enc is None:
                raise SystemExit(f"image encoder failed to load: {ws.encoders.image_problem}")
            load_s = time.perf_counter() - started
            started = time.perf_counter()  # warm-up: first-call allocations, lazy inits
            text_enc.encode_text(texts[:64])
            if image_enc is not None:
                image_enc.encode_image([images.load(p) for p in paths[:8]])
            warmup_s = time.perf_counter() - started

            passes = [raw_pass(text_enc, image_enc, images, texts, paths)]
            print(f"  raw pass 1: {_fmt(passes[-1])}", flush=True)
            clock = Clock()
            report = index_products(ws, products, images)
            pipeline_s, pipeline_cpu_s = clock.stop()
            print(f"  pipeline: {pipeline_s:.2f} s (cpu {pipeline_cpu_s:.2f} s), stages "
                  f"{_fmt(report.seconds)}", flush=True)
            for i in range(1, raw_passes):
                passes.append(raw_pass(text_enc, image_enc, images, texts, paths))
                print(f"  raw pass {i + 1}: {_fmt(passes[-1])}", flush=True)
            indexed = ws.products.count()
            encoder_ids = {"text": text_enc.id, "image": image_enc.id if image_enc else None}
    finally:
        if keep_home is None:
            shutil.rmtree(home, ignore_errors=True)

    raw = {key: sum(p[key] for p in passes) / len(passes) for key in passes[0]}
    raw_with_decode = raw["text_encode_s"] + raw["image_decode_s"] + raw["image_encode_s"]
    raw_encode_only = raw["text_encode_s"] + raw["image_encode_s"]
    stages = report.seconds
    encoder_stage_s = stages.get("encode_text", 0.0) + stages.get("encode_image", 0.0)
    outside_encoders_s = pipeline_s - encoder_stage_s
    return {
        "encoders": encoder_ids,
        "load_encoders_s": round(load_s, 3), "warmup_s": round(warmup_s, 3),
        "raw_passes": [{k: round(v, 3) for k, v in p.items()} for p in passes],
        "raw_with_decode_s": round(raw_with_decode, 3),
        "raw_encode_only_s": round(raw_encode_only, 3),
        "raw_cpu_s": round(raw["total_cpu_s"], 3),
        "pipeline_s": round(pipeline_s, 3), "pipeline_cpu_s": round(pipeline_cpu_s, 3),
        "pipeline_stages_s": {k: round(v, 3) for k, v in stages.items()},
        "pipeline_outside_encoders_s": round(outside_encoders_s, 3),
        "report": {"added": report.added, "texts_encoded": report.texts_encoded,
                   "images_encoded": report.images_encoded,
                   "image_errors": len(report.image_errors), "indexed": indexed},
        "overhead": {
            # headline: wall time, pipeline vs text encode + decode + image encode
            "wall_vs_raw_with_decode": round(pipeline_s / raw_with_decode - 1, 4),
            "wall_vs_raw_encode_only": round(pipeline_s / raw_encode_only - 1, 4),
            # CPU seconds of this process: less sensitive to other processes on the machine
            "cpu_vs_raw_with_decode": round(pipeline_cpu_s / raw["total_cpu_s"] - 1, 4),
            # inside the pipeline run itself: time not spent in the encoders' calls, over
            # the time spent in them (immune to drift between the pipeline and raw passes)
            "outside_encoders_vs_encoders": round(outside_encoders_s / encoder_stage_s, 4),
        },
    }


def image_settings_for(model: str, weights: Path, with_images: bool) -> ImageEncoderSettings:
    """A registry encoder with its own weights, or open_clip ``model`` with random ones."""
    if not with_images:
        return ImageEncoderSettings(enabled=False)
    if model in known_encoders():
        return ImageEncoderSettings(model=model, fallback="")
    return ImageEncoderSettings(model=model, pretrained=str(random_clip_weights(weights, model)),
                                allow_download=False, fallback="")


def run(dataset: Path, limit: int | None, weights: Path, text_only: bool,
        raw_passes: int, repeats: int, keep_home: Path | None = None,
        image_model: str = "ViT-B-32") -> dict[str, Any]:
    """Load the catalog; per repeat, time raw encoders and the pipeline in a fresh home."""
    catalog = read_catalog(dataset / "catalog.csv")
    products: list[Product] = catalog.items[:limit] if limit else catalog.items
    with_images = not text_only and any(p.image is not None for p in products)
    texts = [p.text() for p in products]
    paths = [p.image for p in products if p.image is not None] if with_images else []
    image_settings = image_settings_for(image_model, weights, with_images)
    random_weights = with_images and image_model not in known_encoders()
    runs = []
    for i in range(repeats):
        print(f"repeat {i + 1}/{repeats}", flush=True)
        runs.append(one_repeat(products, texts, paths, image_settings, raw_passes,
                               keep_home if i == repeats - 1 else None))
    n = len(products)
    best = min(runs, key=lambda r: r["pipeline_s"])
    return {
        "dataset": str(dataset), "products": n, "images": len(paths),
        "text_only": not with_images, "limit": limit, "repeats": repeats,
        "image_model": image_model if with_images else None,
        "image_weights": str(weights) if random_weights else None,
        "runs": runs,
        "throughput_per_s_fastest_repeat": {
            "pipeline": round(n / best["pipeline_s"], 2),
            "raw_with_decode": round(n / best["raw_with_decode_s"], 2),
            "raw_encode_only": round(n / best["raw_encode_only_s"], 2),
        },
    }


def _fmt(seconds: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.2f}" for k, v in seconds.items())


def main() -> None:
    """Parse arguments, run, print and save the result."""
    parser = dataset_parser(__doc__, " (and images/), e.g. ../shared/datasets/hm-fashion")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help="open_clip checkpoint for an open_clip --image-model (random one "
                             "created if absent)")
    parser.add_argument("--image-model", default="ViT-B-32",
                        help="open_clip model (random --weights) or a registry image encoder "
                             "with its bundled weights, e.g. efficientnet-lite0")
    parser.add_argument("--text-only", action="store_true",
                        help="ignore images even if the catalog has them")
    parser.add_argument("--raw-passes", type=int, default=2, choices=(1, 2),
                        help="raw encoder passes: 1 = before the pipeline, 2 = before and "
                             "after (mean used)")
    parser.add_argument("--home", type=Path, default=None,
                        help="run the last repeat's pipeline in this new/empty home and keep "
                             "it (e.g. for bench.query_latency --home); default: temp homes")
    parser.add_argument("--repeats", type=int, default=1,
                        help="independent repeats, each in a fresh temp home")
    args = parser.parse_args()
    head = begin()
    result = run(args.dataset.resolve(), args.limit, args.weights.resolve(), args.text_only,
                 args.raw_passes, args.repeats, args.home.resolve() if args.home else None,
                 args.image_model)
    result = finish(head, result)
    n = result["products"]
    print(f"products: {n} (images: {result['images']})")
    for i, r in enumerate(result["runs"], 1):
        o = r["overhead"]
        print(f"repeat {i}: pipeline {r['pipeline_s']:.2f} s = {n / r['pipeline_s']:.2f}/s; "
              f"raw text+decode+image {r['raw_with_decode_s']:.2f} s = "
              f"{n / r['raw_with_decode_s']:.2f}/s; raw encode only "
              f"{r['raw_encode_only_s']:.2f} s; overhead wall {o['wall_vs_raw_with_decode']:+.1%}"
              f" (vs encode only {o['wall_vs_raw_encode_only']:+.1%}), cpu "
              f"{o['cpu_vs_raw_with_decode']:+.1%}, outside-encoder time in the pipeline "
              f"{r['pipeline_outside_encoders_s']:.2f} s = "
              f"{o['outside_encoders_vs_encoders']:+.1%} of encoder time")
    write_result("ingest_throughput", result)


if __name__ == "__main__":
    main()
