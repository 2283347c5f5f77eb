"""Moving people in the synthetic world: clips with exact ground truth on every frame.

A clip keeps its background and its people's looks; each person walks from one place to another
(and grows or shrinks a little, as if coming closer) while the body moves smoothly from one
random pose to another, eased in and out. Every frame is a :class:`SyntheticSample` (image,
I / U / V / person maps, DensePose-COCO annotations), so per-frame AP and the temporal
stability of the part labels can both be measured against the truth
(:mod:`amanet.benchmarks.temporal`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np

from .synthetic import (BodyShape, Pose, SyntheticSample, _background, _finish_sample,
                        _new_buffers, _person_look, _place_person, _project_bounds,
                        coco_annotations, pose_body, sample_pose, write_dataset_json)

#: first entry of every clip's random stream (keeps clips apart from the still images' streams)
_CLIP_STREAM = 0x71DE0


def blend_pose(a: Pose, b: Pose, t: float) -> Pose:
    """The pose a fraction ``t`` of the way from ``a`` to ``b`` (every angle linearly; the view
    ``yaw`` the short way round)."""
    out = replace(a)
    for f in fields(Pose):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict):
            setattr(out, f.name, {k: (1 - t) * x[k] + t * y[k] for k in x})
        elif f.name == "yaw":
            d = math.remainder(y - x, 2 * math.pi)
            setattr(out, f.name, x + t * d)
        else:
            setattr(out, f.name, (1 - t) * x + t * y)
    return out


@dataclass
class _Mover:
    pose_a: Pose
    pose_b: Pose
    k: Tuple[float, float]             # scale at the start and the end (px per body unit)
    start: Tuple[float, float]         # (ox, oy) at the start
    end: Tuple[float, float]


def _movers(rng: np.random.Generator, H: int, W: int, n: int, shape: BodyShape,
            turn: float, travel: float) -> List[_Mover]:
    out = []
    for _ in range(n):
        a = sample_pose(rng)
        b = sample_pose(rng)
        b.yaw = a.yaw + float(rng.uniform(-turn, turn))
        height = float(rng.uniform(0.45, 0.9)) * H
        k0 = height / 1.75
        k1 = k0 * float(rng.uniform(0.9, 1.1))
        places = []
        for pose, k in ((a, k0), (b, k1)):
            xmin, xmax, ymin, ymax = _project_bounds(pose_body(pose, shape), k)
            places.append((float(rng.uniform(-xmin - 0.1 * (xmax - xmin),
                                             W - xmax + 0.1 * (xmax - xmin))),
                           float(rng.uniform(-ymin - 0.05 * (ymax - ymin),
                                             H - ymax + 0.05 * (ymax - ymin)))))
        # walk at most ``travel`` x the frame width
        (x0, y0), (x1, y1) = places
        step = math.hypot(x1 - x0, y1 - y0)
        limit = travel * W
        if step > limit:
            x1, y1 = x0 + (x1 - x0) * limit / step, y0 + (y1 - y0) * limit / step
        out.append(_Mover(a, b, (k0, k1), (x0, y0), (x1, y1)))
    out.sort(key=lambda m: m.k[0])        # small (far) first, larger in front
    return out


def render_clip(seed: int, clip_id: int, num_frames: int,
                image_size: Tuple[int, int] = (256, 256), people: Tuple[int, int] = (1, 2),
                shape: BodyShape = BodyShape(), turn: float = 0.8, travel: float = 0.35,
                points_per_person: int = 100) -> Iterator[SyntheticSample]:
    """The frames of clip ``clip_id`` of the world ``seed`` (deterministic), one at a time.

    ``turn``: the most a person turns (radians of view) over the clip; ``travel``: the most a
    person walks, as a fraction of the frame width.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    rng = np.random.default_rng([int(seed), _CLIP_STREAM, int(clip_id)])
    H, W = int(image_size[0]), int(image_size[1])
    background = _background(rng, H, W)
    n = int(rng.integers(people[0], people[1] + 1))
    movers = _movers(rng, H, W, n, shape, turn, travel)
    looks = [_person_look(rng) for _ in movers]
    for t in range(int(num_frames)):
        s = 0.5 - 0.5 * math.cos(math.pi * t / max(num_frames - 1, 1))   # eased 0 -> 1
        buf = _new_buffers(H, W)
        infos = []
        for idx, m in enumerate(movers):
            pose = blend_pose(m.pose_a, m.pose_b, s)
            k = (1 - s) * m.k[0] + s * m.k[1]
            ox = (1 - s) * m.start[0] + s * m.end[0]
            oy = (1 - s) * m.start[1] + s * m.end[1]
            infos.append({"pose": pose, **_place_person(pose_body(pose, shape), k, ox, oy, idx,
                                                        buf)})
        frame_rng = np.random.default_rng([int(seed), _CLIP_STREAM, int(clip_id), t])
        yield _finish_sample(background, buf, looks, infos, frame_rng, shape, points_per_person)


@dataclass
class ClipFiles:
    """A clip on disk: ``frames`` (a folder of PNG frames, an input :func:`open_video` reads),
    ``annotations`` (DensePose-COCO JSON, image ``id`` = frame index + 1) and ``truth``
    (npz: ``I`` uint8 ``[T, H, W]`` part labels, ``person`` int16 ``[T, H, W]``, -1 = none)."""
    frames: Path
    annotations: Path
    truth: Path
    num_frames: int


def write_clip(out_dir, seed: int, clip_id: int, num_frames: int,
               image_size: Tuple[int, int] = (256, 256), people: Tuple[int, int] = (1, 2),
               **kwargs: Any) -> ClipFiles:
    """Render a clip (:func:`render_clip`) into ``out_dir``: lossless frames + ground truth."""
    from PIL import Image

    out = Path(out_dir)
    frames = out / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    labels, persons = [], []
    for t, sample in enumerate(render_clip(seed, clip_id, num_frames, image_size, people,
                                           **kwargs)):
        name = f"{t:06d}.png"
        Image.fromarray(np.ascontiguousarray(sample.image[:, :, ::-1])).save(frames / name)
        images.append({"id": t + 1, "file_name": os.path.join("frames", name),
                       "height": int(image_size[0]), "width": int(image_size[1])})
        annotations.extend(coco_annotations(sample, t + 1, len(annotations) + 1))
        labels.append(sample.I)
        persons.append(sample.person)
    ann = out / "annotations.json"
    write_dataset_json(str(ann), images, annotations, seed, image_size, people)
    truth = out / "truth.npz"
    np.savez_compressed(truth, I=np.stack(labels), person=np.stack(persons))
    return ClipFiles(frames, ann, truth, int(num_frames))
