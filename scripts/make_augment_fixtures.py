#!/usr/bin/env python3
"""Fixtures for the augmentation operations: each op of the official two-view pipeline applied
with fixed parameters by torchvision / Pillow themselves (the calls main_moco.py's transforms
make), on an RGB and a grey test image. `tests/augment_ops.rs` requires src/data/ops.rs to match
within 1/255.

    python scripts/make_augment_fixtures.py [--out tests/fixtures]

Writes augment_ops.safetensors: `<img>.input` and `<img>.<op>` as F32 arrays of 8-bit values
([h, w, c]), with the Pillow and torchvision versions in the metadata.
"""
import argparse
import os
import sys

import numpy as np
import PIL
import torchvision
import torchvision.transforms.functional as F
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode

sys.path.insert(0, os.path.dirname(__file__))
from make_parity_fixtures import write_safetensors  # noqa: E402

import torch  # noqa: E402


def test_image(h, w, c, seed):
    """Smooth structure plus noise, so that every op has something to do."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = [128 + 100 * np.sin(x / 3.0 + k) * np.cos(y / 4.0 - k) for k in range(c)]
    arr = np.stack(base, -1) + rs.randint(-30, 31, size=(h, w, c))
    return np.clip(arr, 0, 255).astype(np.uint8)


# (name, function of a PIL image); parameters fixed.
OPS = [
    ("crop_up", lambda im: F.resized_crop(im, 2, 3, 13, 17, [24, 24], InterpolationMode.BILINEAR)),
    ("crop_down", lambda im: F.resized_crop(im, 1, 0, 19, 23, [9, 11], InterpolationMode.BILINEAR)),
    ("crop_mixed", lambda im: F.resized_crop(im, 0, 2, 10, 20, [16, 8], InterpolationMode.BILINEAR)),
    ("brightness_0.6", lambda im: F.adjust_brightness(im, 0.6)),
    ("brightness_1.37", lambda im: F.adjust_brightness(im, 1.37)),
    ("contrast_0.65", lambda im: F.adjust_contrast(im, 0.65)),
    ("contrast_1.3", lambda im: F.adjust_contrast(im, 1.3)),
    ("saturation_0.8", lambda im: F.adjust_saturation(im, 0.8)),
    ("saturation_1.2", lambda im: F.adjust_saturation(im, 1.2)),
    ("hue_-0.07", lambda im: F.adjust_hue(im, -0.07)),
    ("hue_0.09", lambda im: F.adjust_hue(im, 0.09)),
    ("grayscale", lambda im: F.rgb_to_grayscale(im, num_output_channels=3) if im.mode == "RGB" else im),
    ("blur_0.1", lambda im: im.filter(ImageFilter.GaussianBlur(radius=0.1))),
    ("blur_0.7", lambda im: im.filter(ImageFilter.GaussianBlur(radius=0.7))),
    ("blur_1.9", lambda im: im.filter(ImageFilter.GaussianBlur(radius=1.9))),
    ("solarize", lambda im: ImageOps.solarize(im, 128)),
    ("hflip", lambda im: F.hflip(im)),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    a = ap.parse_args()
    tensors = {}
    for name, arr in [("rgb", test_image(20, 24, 3, 1)), ("grey", test_image(20, 24, 1, 2))]:
        im = Image.fromarray(arr if arr.shape[2] == 3 else arr[:, :, 0])
        tensors[f"{name}.input"] = torch.from_numpy(arr.astype(np.float32))
        for op, fn in OPS:
            out = np.asarray(fn(im))
            if out.ndim == 2:
                out = out[:, :, None]
            tensors[f"{name}.{op}"] = torch.from_numpy(out.astype(np.float32))
    path = os.path.join(a.out, "augment_ops.safetensors")
    write_safetensors(path, tensors, {"pillow": PIL.__version__, "torchvision": torchvision.__version__})
    print(f"wrote {path}: {len(tensors)} arrays")


if __name__ == "__main__":
    main()
