"""Procedural Shapes3D: a shaded room with a floor, a back wall and one object.

After Burgess & Kim 2018 (https://github.com/deepmind/3d-shapes): six factors, floor hue 10, wall
hue 10, object hue 10, scale 8 (0.75..1.25), shape 4 (cube, cylinder, sphere, capsule) and
orientation 15 (-30..30 degrees, the camera's azimuth around the object); 64x64x3; 480,000
images, orientation fastest. This is not the DeepMind renderer: it matches the factor structure
and the look (a lit 3D scene with shadows), not the pixels. Load the original file with
``datasets.load("path/to/3dshapes.h5")``.

Rendering is split in two. Geometry depends only on (shape, scale, orientation): 480 templates,
ray-traced analytically once each (2x2 supersampled) and cached, hold per pixel the light
reaching it from the floor, the wall and the object, plus a white specular term. Colour is then
one small matrix product per image: ``pixel = template[pixel] @ [floor, wall, object, white]``,
so a batch renders at memory speed.
"""

from __future__ import annotations

import colorsys

import numpy as np

from harness.datasets.base import GridDataset

HUES = np.linspace(0.0, 0.9, 10)
SCALES = np.linspace(0.75, 1.25, 8)
SHAPES = ("cube", "cylinder", "sphere", "capsule")
ORIENTATIONS_DEG = np.linspace(-30.0, 30.0, 15)

_SIZE = 64
_SS = 2  # supersampling per axis
_WALL_Z = 2.2
_LIGHT = np.array([-0.45, 0.75, -0.65]) / np.linalg.norm([-0.45, 0.75, -0.65])
_AMBIENT = 0.32
_BASE_HALF = 0.42  # half-size of the object at scale 1
_FLOOR, _WALL, _OBJECT = 0, 1, 2


def _hsv_palette(saturation: float, value: float) -> np.ndarray:
    return np.array([colorsys.hsv_to_rgb(h, saturation, value) for h in HUES], dtype=np.float32)


_FLOOR_RGB = _hsv_palette(0.7, 0.95)
_WALL_RGB = _hsv_palette(0.55, 0.9)
_OBJECT_RGB = _hsv_palette(0.85, 1.0)


def _camera_rays(azimuth_deg: float):
    """Camera origin (3,) and unit ray directions (H*SS, W*SS, 3) for a camera orbiting the object."""
    az = np.deg2rad(azimuth_deg)
    elevation, distance, target = np.deg2rad(18.0), 4.0, np.array([0.0, 0.5, 0.0])
    origin = target + distance * np.array(
        [np.sin(az) * np.cos(elevation), np.sin(elevation), -np.cos(az) * np.cos(elevation)]
    )
    forward = (target - origin) / np.linalg.norm(target - origin)
    right = np.cross(np.array([0.0, 1.0, 0.0]), forward)
    right /= np.linalg.norm(right)
    up = np.cross(forward, right)
    n = _SIZE * _SS
    half = np.tan(np.deg2rad(21.0))
    s = (np.arange(n) + 0.5) / n * 2 - 1
    sx, sy = np.meshgrid(s * half, -s * half)
    d = forward + sx[..., None] * right + sy[..., None] * up
    return origin, d / np.linalg.norm(d, axis=-1, keepdims=True)


def _hit_sphere(o, d, center, radius):
    oc = o - center
    b = np.einsum("...i,...i", d, oc)
    c = np.einsum("...i,...i", oc, oc) - radius * radius
    disc = b * b - c
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    return np.where((disc >= 0) & (t > 1e-6), t, np.inf)


def _hit_cylinder_side(o, d, radius, y0, y1):
    a = d[..., 0] ** 2 + d[..., 2] ** 2
    b = o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2]
    c = o[..., 0] ** 2 + o[..., 2] ** 2 - radius * radius
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / np.maximum(a, 1e-12)
    y = o[..., 1] + t * d[..., 1]
    return np.where((disc >= 0) & (t > 1e-6) & (y >= y0) & (y <= y1), t, np.inf)


def _hit_disc_top(o, d, radius, y):
    t = (y - o[..., 1]) / np.where(np.abs(d[..., 1]) < 1e-12, 1e-12, d[..., 1])
    px, pz = o[..., 0] + t * d[..., 0], o[..., 2] + t * d[..., 2]
    return np.where((t > 1e-6) & (px * px + pz * pz <= radius * radius), t, np.inf)


def _intersect_object(shape: int, half: float, o, d):
    """Distance along each ray to the object (inf for a miss) and a normal function of the hit point."""
    if shape == 0:  # cube on the floor, axis-aligned with the room
        lo, hi = np.array([-half, 0.0, -half]), np.array([half, 2 * half, half])
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (lo - o) / d, (hi - o) / d
        tnear = np.nanmax(np.minimum(t1, t2), axis=-1)
        tfar = np.nanmin(np.maximum(t1, t2), axis=-1)
        t = np.where((tfar >= tnear) & (tnear > 1e-6), tnear, np.inf)

        def normal(p):
            q = (p - np.array([0.0, half, 0.0])) / half
            axis = np.argmax(np.abs(q), axis=-1)
            n = np.zeros_like(p)
            np.put_along_axis(n, axis[..., None], np.sign(np.take_along_axis(q, axis[..., None], -1)), -1)
            return n

        return t, normal
    if shape == 1:  # upright cylinder
        r, height = half, 2 * half
        t = np.minimum(_hit_cylinder_side(o, d, r, 0.0, height), _hit_disc_top(o, d, r, height))

        def normal(p):
            side = np.stack([p[..., 0], np.zeros(p.shape[:-1]), p[..., 2]], -1) / r
            top = p[..., 1:2] >= height - 1e-4
            return np.where(top, np.array([0.0, 1.0, 0.0]), side)

        return t, normal
    if shape == 2:  # sphere resting on the floor
        center = np.array([0.0, half * 1.05, 0.0])
        r = half * 1.05
        return _hit_sphere(o, d, center, r), lambda p: (p - center) / r
    # capsule: an upright cylinder with hemispherical ends, taller than wide
    r = half * 0.72
    y0, y1 = r, 2.5 * half - r
    a, b = np.array([0.0, y0, 0.0]), np.array([0.0, y1, 0.0])
    t = np.minimum(_hit_cylinder_side(o, d, r, y0, y1), np.minimum(_hit_sphere(o, d, a, r), _hit_sphere(o, d, b, r)))

    def normal(p):
        axis_y = np.clip(p[..., 1], y0, y1)
        q = p - np.stack([np.zeros_like(axis_y), axis_y, np.zeros_like(axis_y)], -1)
        return q / np.linalg.norm(q, axis=-1, keepdims=True)

    return t, normal


def render_template(shape: int, scale: int, orientation: int) -> np.ndarray:
    """float32 (64*64, 4): light per pixel from floor, wall, object, and white specular."""
    half = _BASE_HALF * SCALES[scale]
    origin, d = _camera_rays(ORIENTATIONS_DEG[orientation])
    o = np.broadcast_to(origin, d.shape)
    with np.errstate(divide="ignore"):
        t_floor = np.where(d[..., 1] < 0, -origin[1] / d[..., 1], np.inf)
        t_wall = np.where(d[..., 2] > 0, (_WALL_Z - origin[2]) / d[..., 2], np.inf)
    t_obj, normal_of = _intersect_object(shape, half, o, d)
    t_room = np.minimum(t_floor, t_wall)
    region = np.where(t_obj < t_room, _OBJECT, np.where(t_floor < t_wall, _FLOOR, _WALL))
    t = np.minimum(t_obj, t_room)
    p = origin + t[..., None] * d

    normal = np.empty_like(p)
    normal[region == _FLOOR] = (0.0, 1.0, 0.0)
    normal[region == _WALL] = (0.0, 0.0, -1.0)
    on_obj = region == _OBJECT
    if on_obj.any():
        normal[on_obj] = normal_of(p[on_obj])

    # shadows: does a ray from the point towards the light hit the object?
    lit = np.ones(region.shape, dtype=bool)
    room = ~on_obj
    start = p[room] + 1e-4 * normal[room]
    t_shadow, _ = _intersect_object(shape, half, start, np.broadcast_to(_LIGHT, start.shape))
    lit[room] = ~np.isfinite(t_shadow)
    diffuse = np.clip(normal @ _LIGHT, 0.0, None) * lit
    light = _AMBIENT + (1 - _AMBIENT) * diffuse
    # a little depth cue on the room: farther floor and wall are darker
    light = np.where(room, light * np.clip(1.25 - 0.06 * t, 0.6, 1.0), light)
    specular = np.zeros(region.shape)
    if on_obj.any():
        reflect = 2 * (normal[on_obj] @ _LIGHT)[:, None] * normal[on_obj] - _LIGHT
        specular[on_obj] = 0.45 * np.clip(-(reflect * d[on_obj]).sum(-1), 0, None) ** 24

    weights = np.zeros(region.shape + (4,), dtype=np.float64)
    for k in (_FLOOR, _WALL, _OBJECT):
        weights[..., k] = np.where(region == k, light, 0.0)
    weights[..., 3] = specular
    n = _SIZE
    weights = weights.reshape(n, _SS, n, _SS, 4).mean(axis=(1, 3))
    return weights.reshape(n * n, 4).astype(np.float32)


class Shapes3D(GridDataset):
    """Procedural Shapes3D: 480,000 shaded 64x64x3 images of a room and one object.

    Every factor changes the image: the three hues colour the floor, wall and object, scale
    and shape change the object, orientation turns the camera (the wall-floor edge tilts and the
    cube shows a different face). There are no symmetries: the wall pins the camera angle.
    """

    name = "shapes3d"
    factor_names = ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]
    factor_sizes = [10, 10, 10, 8, 4, 15]
    observation_shape = (64, 64, 3)
    source = "procedural (after Burgess & Kim 2018)"
    montage_base = (0, 4, 7, 5, 0, 4)

    _BATCH = 512  # images per matrix product, bounds the float32 working set (~34 MB)

    def __init__(self):
        self._templates = np.zeros((4 * 8 * 15, _SIZE * _SIZE, 4), dtype=np.float32)
        self._ready = np.zeros(4 * 8 * 15, dtype=bool)

    def _template_ids(self, factors):
        scale, shape, orient = factors[:, 3], factors[:, 4], factors[:, 5]
        return (shape * 8 + scale) * 15 + orient

    def _ensure(self, tids):
        for tid in np.unique(tids[~self._ready[tids]]):
            rest, orient = divmod(int(tid), 15)
            shape, scale = divmod(rest, 8)
            self._templates[tid] = render_template(shape, scale, orient)
            self._ready[tid] = True

    def render(self, factors: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        factors = np.asarray(factors, dtype=np.int64).reshape(-1, 6)
        tids = self._template_ids(factors)
        self._ensure(tids)
        out = np.empty((len(factors), _SIZE, _SIZE, 3), dtype=np.uint8)
        white = np.ones((1, 3), dtype=np.float32)
        for a in range(0, len(factors), self._BATCH):
            f = factors[a : a + self._BATCH]
            palette = np.stack(
                [_FLOOR_RGB[f[:, 0]], _WALL_RGB[f[:, 1]], _OBJECT_RGB[f[:, 2]], np.repeat(white, len(f), 0)], axis=1
            )  # (n, 4, 3)
            rgb = np.matmul(self._templates[tids[a : a + self._BATCH]], palette)
            np.multiply(rgb, 255.0, out=rgb)
            np.clip(rgb, 0, 255, out=rgb)
            out[a : a + len(f)] = (rgb + 0.5).astype(np.uint8).reshape(len(f), _SIZE, _SIZE, 3)
        return out
