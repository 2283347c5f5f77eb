"""Files shipped inside the package (see README.md in this folder for their origin).

- :data:`PHOTO`: a real photograph (NASA, public domain) for pipeline and export tests;
- :data:`SYNTHETIC_IMAGE`: a held-out image of the synthetic DensePose world (test split,
  seed 2, image 2, 384x576: :func:`synthetic_image_truth` renders its labels again);
- :data:`DEMO_MODEL`: the demo model (AMANet head, half-width ResNet-18-FPN) trained by
  ``amanet train`` on the synthetic world; config embedded, weights stored as float16.
"""
from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
PHOTO = ASSETS_DIR / "astronaut.jpg"
SYNTHETIC_IMAGE = ASSETS_DIR / "synthetic_people.jpg"
DEMO_MODEL = ASSETS_DIR / "demo_ama_r18_synthetic.pth"

#: how SYNTHETIC_IMAGE was rendered: render_sample(seed, image_id, image_size, people)
SYNTHETIC_IMAGE_RECIPE = {"seed": 2, "image_id": 2, "image_size": (384, 576), "people": (2, 3)}


def synthetic_image_truth():
    """The ground truth of :data:`SYNTHETIC_IMAGE` (a :class:`~amanet.data.synthetic.SyntheticSample`)."""
    from ..data.synthetic import render_sample

    r = SYNTHETIC_IMAGE_RECIPE
    return render_sample(r["seed"], r["image_id"], r["image_size"], r["people"])
