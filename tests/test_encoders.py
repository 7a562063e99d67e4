"""The bundled EfficientNet-Lite0 image encoder, checked on real photos shipped inside
installed wheels (matplotlib, scikit-learn, scikit-image): ImageNet classes that name what
is in them, and features that put two views of one object closer than other photos; and
both image encoders (it and the tiny CLIP) on images of every awkward mode and shape."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from semrec.config import ImageEncoderSettings
from semrec.encoders import (
    Encoder,
    create_image_encoder,
    image_dim,
    image_encoder_id,
    known_encoders,
    to_rgb,
    weights_digest,
)


def photo(package: str, *parts: str) -> Image.Image:
    """A real photo shipped in an installed package, decoded to RGB."""
    with Image.open(resources.files(package).joinpath(*parts)) as image:
        return image.convert("RGB")


PHOTOS = {
    "grace_hopper": ("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
    "china": ("sklearn", "datasets", "images", "china.jpg"),
    "flower": ("sklearn", "datasets", "images", "flower.jpg"),
    "chelsea": ("skimage", "data", "chelsea.png"),
    "coffee": ("skimage", "data", "coffee.png"),
    "astronaut": ("skimage", "data", "astronaut.png"),
    "rocket": ("skimage", "data", "rocket.jpg"),
    "motorcycle_left": ("skimage", "data", "motorcycle_left.png"),
    "motorcycle_right": ("skimage", "data", "motorcycle_right.png"),
}


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: photo(*where) for name, where in PHOTOS.items()}


@pytest.fixture(scope="module")
def effnet() -> Encoder:
    return create_image_encoder(ImageEncoderSettings(model="efficientnet-lite0"))


@pytest.fixture(scope="module")
def clip(tiny_clip: dict) -> Encoder:
    return create_image_encoder(ImageEncoderSettings(**tiny_clip, allow_download=False))


def imagenet_top5(encoder: Encoder, image: Image.Image) -> list[str]:
    from torchvision.models import ResNet18_Weights

    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    logits = encoder.classify([image])[0]
    return [categories[i] for i in np.argsort(-logits)[:5]]


@pytest.mark.parametrize(("name", "expected"), [
    ("grace_hopper", {"military uniform"}),  # the TensorFlow label_image example
    ("coffee", {"espresso"}),
    ("chelsea", {"tabby", "tiger cat", "Egyptian cat"}),
    ("china", {"palace", "monastery", "bell cote"}),
    ("flower", {"daisy"}),
    ("motorcycle_left", {"moped", "motor scooter"}),
])
def test_efficientnet_names_what_is_in_real_photos(effnet: Encoder, photos: dict,
                                                   name: str, expected: set[str]) -> None:
    assert expected & set(imagenet_top5(effnet, photos[name]))


def test_efficientnet_features_are_unit_rows_named_by_their_weights(
        effnet: Encoder, photos: dict) -> None:
    vectors = effnet.encode_image([photos["coffee"], photos["coffee"], photos["rocket"]])
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[1])  # frozen, eval mode
    spec = known_encoders()["efficientnet-lite0"]
    weights = Path(str(resources.files(spec["package"]).joinpath(spec["weights"])))
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    settings = ImageEncoderSettings(model="efficientnet-lite0")
    expected = f"efficientnet-lite:efficientnet-lite0:sha256={sha[:16]}"
    assert effnet.id == image_encoder_id(settings) == expected
    assert image_dim(settings) == effnet.dim == 1280


def views(image: Image.Image) -> list[Image.Image]:
    """Two other views of the same photo: a mirror image, and an off-centre crop of 80 %."""
    width, height = image.size
    crop = image.crop((width // 10, 0, width // 10 + int(0.8 * width), int(0.8 * height)))
    return [ImageOps.mirror(image), crop]


def test_two_views_of_one_object_are_closer_than_other_photos(
        effnet: Encoder, photos: dict) -> None:
    names = [n for n in PHOTOS if n != "motorcycle_right"]
    base = effnet.encode_image([photos[n] for n in names])
    others = base @ base.T
    np.fill_diagonal(others, -1)
    nearest_other = others.max(axis=1)
    for i, name in enumerate(names):
        for view in effnet.encode_image(views(photos[name])):
            assert view @ base[i] > nearest_other[i], name
            assert int(np.argmax(base @ view)) == i, name
    # The stereo pair: one motorcycle photographed from two points, closer to each other
    # than either is to any other photo.
    left, right = effnet.encode_image([photos["motorcycle_left"], photos["motorcycle_right"]])
    rest = base[[i for i, n in enumerate(names) if n != "motorcycle_left"]]
    assert left @ right > max((rest @ left).max(), (rest @ right).max())


def awkward_images(source: Image.Image) -> dict[str, Image.Image]:
    """One real photo in every mode a catalog image may come in, and two odd shapes."""
    small = source.resize((96, 64))
    rgba = small.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(small.size))
    grey16 = Image.fromarray(np.asarray(small.convert("L"), np.uint16) * 257)
    return {
        "L": small.convert("L"), "1": small.convert("1"), "CMYK": small.convert("CMYK"),
        "P": small.convert("P", palette=Image.Palette.ADAPTIVE), "RGBA": rgba,
        "LA": rgba.convert("LA"), "I;16": grey16, "I": grey16.convert("I"),
        "F": small.convert("F"), "1x1": small.resize((1, 1)),
        "strip 10000x20": small.resize((10_000, 20)), "strip 20x10000": small.resize((20, 10_000)),
    }


@pytest.mark.parametrize("encoder_name", ["effnet", "clip"])
def test_images_of_any_mode_and_shape_encode_to_finite_unit_vectors(
        request: pytest.FixtureRequest, photos: dict, encoder_name: str) -> None:
    encoder: Encoder = request.getfixturevalue(encoder_name)
    images = awkward_images(photos["coffee"])
    vectors = encoder.encode_image(list(images.values()))
    assert vectors.shape == (len(images), encoder.dim)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_to_rgb_scales_16_bit_and_composites_alpha_on_white(photos: dict) -> None:
    grey = photos["coffee"].resize((40, 30)).convert("L")
    expected = np.asarray(grey)
    for wide in (Image.fromarray(expected.astype(np.uint16) * 257),  # I;16
                 Image.fromarray(expected.astype(np.int32) * 257, mode="I"),
                 Image.fromarray(expected.astype(np.float32) / 255, mode="F")):
        rgb = to_rgb(wide)
        assert rgb.mode == "RGB", wide.mode
        np.testing.assert_array_equal(np.asarray(rgb)[..., 0], expected, err_msg=wide.mode)
    clear = Image.new("LA", (4, 4), (0, 0))  # black, fully transparent
    assert to_rgb(clear).getpixel((0, 0)) == (255, 255, 255)
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # pure red
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)


def test_weights_digest_follows_the_bytes_not_the_place(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "model", tmp_path / "b" / "model"
    for folder in (first, second):
        (folder / "1_Pooling").mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "1_Pooling" / "config.json").write_text("{}")
        (folder / "README.md").write_text(f"docs of {folder}")  # not part of the model
    assert weights_digest(first) == weights_digest(second)
    (second / "model.safetensors").write_bytes(b"other weights")
    assert weights_digest(first) != weights_digest(second)
    single = first / "model.safetensors"
    assert weights_digest(single) == hashlib.sha256(b"weights").hexdigest()[:16]
