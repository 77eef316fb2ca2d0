"""Images reach a model's input size as torchvision's Resize + CenterCrop (or an exact resize) would bring them."""

import io

import numpy as np
import pytest
import torchvision.transforms as T
from PIL import Image
from skimage import data

from shared.images.decode import decode_image
from shared.images.geometry import CIFAR, InputSize

LANCZOS = T.InterpolationMode.LANCZOS


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def _torchvision(pil: Image.Image, size: InputSize) -> np.ndarray:
    """The oracle: torchvision's transforms, with the smallest Resize side whose output covers the input."""
    if size.resize == "squash":
        return np.asarray(T.Resize((size.height, size.width), interpolation=LANCZOS)(pil))
    side = min(size.height, size.width)  # no smaller side can cover the input
    while True:
        resized = T.Resize(side, interpolation=LANCZOS)(pil)
        if resized.size[0] >= size.width and resized.size[1] >= size.height:
            return np.asarray(T.CenterCrop((size.height, size.width))(resized))
        side += 1


PHOTOS = {"landscape": data.chelsea(), "portrait": np.ascontiguousarray(data.chelsea().transpose(1, 0, 2)),
          "tall crop": np.ascontiguousarray(data.astronaut()[:, 60:380])}


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("size", [InputSize(224, 224, "shorter-side"), InputSize(160, 224, "shorter-side"),
                                  InputSize(224, 160, "shorter-side"), InputSize(96, 200, "squash")], ids=str)
def test_decoding_equals_torchvisions_transforms(photo, size):
    image = PHOTOS[photo]
    ours = decode_image(_png(image), size)
    assert ours.shape == (size.height, size.width, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, _torchvision(Image.fromarray(image), size))


def test_a_jpeg_decoded_at_reduced_scale_keeps_the_full_resolution_result_within_a_few_grey_levels():
    """Pillow's draft mode decodes a large JPEG at 1/2, 1/4 or 1/8 scale: never below what the crop needs."""
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((2048, 2048), Image.Resampling.LANCZOS))
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=95)
    size = InputSize(224, 160, "shorter-side")
    drafted = decode_image(buf.getvalue(), size).astype(int)
    full = _torchvision(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), size).astype(int)
    assert drafted.shape == full.shape and np.abs(drafted - full).mean() < 2.0


def test_an_int_is_the_historical_square_squash_and_cifar_is_32():
    assert InputSize.of(32) == CIFAR == InputSize(32, 32, "squash") and InputSize.of((48, 40)).text == "48x40"
    image = data.chelsea()
    np.testing.assert_array_equal(decode_image(_png(image), 32), decode_image(_png(image), CIFAR))
    with pytest.raises(ValueError, match="resize must be one of shorter-side, squash"):
        InputSize(8, 8, "crop")
