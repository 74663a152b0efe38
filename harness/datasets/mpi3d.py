"""Procedural MPI3D-toy: a robot arm carrying an object in front of a coloured ring.

After Gondal et al. 2019, "On the Transfer of Inductive Bias from Simulation to the Real World:
a New Disentanglement Dataset" (NeurIPS; https://github.com/rr-learning/disentanglement_dataset),
the simplistic rendered set ``mpi3d_toy``: seven factors, object_color 6 (white, green, red,
blue, brown, olive), object_shape 6 (cone, cube, cylinder, hexagonal prism, pyramid, sphere),
object_size 2, camera_height 3 (top, center, bottom), background_color 3 (purple, sea green,
salmon: the colour of the ring around the table), horizontal_axis 40 and vertical_axis 40 (the
arm's two joints); 64x64x3; 1,036,800 images, vertical_axis fastest.

This is not the MPI renderer: it matches the factor structure and the look of the public
sample animations (a dark grey table, the far arc of a coloured ring near the top, a grey arm
rising from a round foot in the middle, the object on a thin rod at its tip, flat colours),
not the pixels. The joint ranges of the original were not published in what we could find;
here the rod tilts over 180 degrees (horizontal_axis, -100..80 degrees from vertical, about a
horizontal axis) in a plane that turns 170 degrees about the vertical axis (vertical_axis,
-40..130 degrees), which is how the public animations move it. Load the original files with
``datasets.load("path/to/mpi3d_toy.npz")``.

Rendering is split in cached layers, all composed in integer arithmetic:
- background (camera_height, background_color): 9 images, the table plane ray-cast 4x4
  supersampled;
- pillar (camera_height): the arm's fixed part, ray-cast 4x4 supersampled, a sparse list of
  (pixel, alpha, grey);
- rod (camera_height, horizontal_axis, vertical_axis): the moving part, an anti-aliased 2D
  capsule between the projected joints, 4,800 sparse lists, rendered per camera;
- object sprites (shape, size, distance bin, orientation bin): 20x20 patches ray-cast 2x2
  supersampled in a frame whose axis follows the rod (24 in-plane x 5 out-of-plane orientation
  bins; 3 scales for the object's distance, the perspective that tells a pose towards the camera
  from one away from it), rendered per (shape, size), holding coverage, diffuse and specular
  light as sparse lists; the colour is one product per pixel.
An image is the background, then the pillar, rod and object in depth order (the pillar last when
the object is behind it), each blended by ``(dst * (255 - alpha) + src + 127) // 255`` on uint16,
so the same index gives the same bytes in any batch. The templates use elementwise IEEE float
arithmetic only (no BLAS, no reductions that numpy may regroup per CPU) and the scalar libm for
the angle tables, then are rounded to integers.
"""

from __future__ import annotations

import math

import numpy as np

from harness.datasets.base import GridDataset

OBJECT_COLORS = ("white", "green", "red", "blue", "brown", "olive")
OBJECT_SHAPES = ("cone", "cube", "cylinder", "hexagonal", "pyramid", "sphere")
OBJECT_SIZES = ("small", "large")
CAMERA_HEIGHTS = ("top", "center", "bottom")
BACKGROUND_COLORS = ("purple", "sea green", "salmon")

N_AXIS = 40
HORIZONTAL_DEG = np.linspace(-100.0, 80.0, N_AXIS)  # rod tilt from vertical, in its plane
VERTICAL_DEG = np.linspace(-40.0, 130.0, N_AXIS)  # the plane's turn about the vertical axis

_SIZE = 64


def _libm(fn, x):
    """A math-module function elementwise: the platform's scalar libm, not numpy's SIMD loops,
    whose last bit can differ between CPUs (AVX-512 or not). Used for the few angle tables."""
    x = np.asarray(x, dtype=np.float64)
    return np.array([fn(v) for v in x.ravel()], dtype=np.float64).reshape(x.shape)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


# colours read off the public sample animations (the lit object's mean, divided by its mean light)
_OBJECT_RGB = np.array([[250, 250, 250], [48, 185, 47], [245, 18, 12], [50, 127, 236], [104, 66, 44],
                        [148, 146, 62]], dtype=np.uint16)
_RING_RGB = np.array([[101, 76, 143], [69, 96, 92], [112, 79, 88]], dtype=np.float64)
_TABLE_GREY = 52.0

# scene, world units: y up, the arm's foot at the origin, cameras on the -z side
_TARGET = np.array([0.0, 0.5, 0.0])
_CAM_DISTANCE = 4.2
_CAM_ELEVATION_DEG = (44.0, 32.0, 20.0)
_FOCAL = 124.0  # px
_RING = (1.85, 2.15)  # inner, outer radius of the coloured ring on the table
_PIVOT_Y = 0.53  # the shoulder: top of the pillar
_SHOULDER = 0.1  # offset of the rod's joint from the pillar axis, along the tilt axis
_ROD = 0.5
_OBJECT_SCALE = (0.127, 0.184)  # small, large: half-size of the object, world units
_BACK = 0.8  # the rod meets the object's back face this far (in object units) from its centre
_LIGHT = _unit([-0.5, 0.75, -0.45])  # world, towards the light
_AMBIENT = 0.38

# (radius, y0, y1, albedo): the pillar, a stack of upright cylinders on a round foot
_PILLAR = ((0.16, 0.0, 0.03, 0.9), (0.075, 0.03, 0.07, 0.45), (0.065, 0.07, 0.24, 0.7),
           (0.075, 0.24, 0.29, 0.9), (0.065, 0.29, 0.49, 0.7), (0.075, 0.49, 0.56, 0.85))

_N_ALPHA, _N_BETA = 24, 5  # object orientation bins: in-plane angle, out-of-plane angle
_BETA_MAX_DEG = 64.0
_PATCH = 20  # object sprite side, px
_DEPTH_RATIOS = (0.94, 1.06, 1.18)  # object scale for its distance (4.2 / depth; measured 0.88..1.2)
_SPRITE_SS = 2
_ROD_WINDOW = 30  # px: covers the projected rod's bounding box plus its width
_ROD_K = 88  # most pixels a rod layer touches (checked when rendered)
_SPRITE_K = 184  # most pixels an object sprite covers (checked when rendered)


def _camera(height: int):
    """Origin (3,) and the right, up, forward unit vectors of one of the three cameras."""
    e = math.radians(_CAM_ELEVATION_DEG[height])
    forward = np.array([0.0, -math.sin(e), math.cos(e)])
    up = np.array([0.0, math.cos(e), math.sin(e)])
    right = np.array([1.0, 0.0, 0.0])
    return _TARGET - _CAM_DISTANCE * forward, right, up, forward


def _dot(v, w):
    """Elementwise dot product over the last axis (no BLAS: same bits in any batch)."""
    return v[..., 0] * w[..., 0] + v[..., 1] * w[..., 1] + v[..., 2] * w[..., 2]


def _project(points, height: int):
    """Pixel x, y (continuous, pixel (i, j) centred at (j + .5, i + .5)) and depth of world points."""
    origin, right, up, forward = _camera(height)
    rel = points - origin
    depth = _dot(rel, forward)
    return _SIZE / 2 + _FOCAL * _dot(rel, right) / depth, _SIZE / 2 - _FOCAL * _dot(rel, up) / depth, depth


def _rays(height: int, ss: int):
    """Camera origin and ray directions (64*ss, 64*ss, 3), not normalised."""
    origin, right, up, forward = _camera(height)
    s = (np.arange(_SIZE * ss) + 0.5) / ss - _SIZE / 2
    px, py = np.meshgrid(s / _FOCAL, -s / _FOCAL)
    return origin, forward + px[..., None] * right + py[..., None] * up


def _downsample(a, ss: int):
    """Mean over ss x ss blocks, summed in a fixed order (numpy's reductions may regroup by CPU)."""
    n = a.shape[0] // ss
    blocks = a.reshape(n, ss, n, ss)
    return sum(blocks[:, i, :, j] for i in range(ss) for j in range(ss)) / (ss * ss)


def render_ring(height: int) -> np.ndarray:
    """float (64, 64): fraction of each pixel covered by the coloured ring on the table plane."""
    ss = 4
    origin, d = _rays(height, ss)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d[..., 1] < 0, -origin[1] / d[..., 1], np.inf)
    x, z = origin[0] + t * d[..., 0], origin[2] + t * d[..., 2]
    r2 = np.where(np.isfinite(t), x * x + z * z, np.inf)
    ring = (r2 >= _RING[0] ** 2) & (r2 <= _RING[1] ** 2)
    return _downsample(ring.astype(np.float64), ss)


def _hit_upright_cylinder(origin, d, radius, y0, y1):
    """Distance to an upright capped cylinder around the y axis (inf on a miss), and whether it is the top cap."""
    a = d[..., 0] ** 2 + d[..., 2] ** 2
    b = origin[0] * d[..., 0] + origin[2] * d[..., 2]
    c = origin[0] ** 2 + origin[2] ** 2 - radius * radius
    disc = b * b - a * c
    t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    y = origin[1] + t_side * d[..., 1]
    t_side = np.where((disc >= 0) & (y >= y0) & (y <= y1), t_side, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_top = (y1 - origin[1]) / d[..., 1]
    px, pz = origin[0] + t_top * d[..., 0], origin[2] + t_top * d[..., 2]
    t_top = np.where((d[..., 1] < 0) & (px * px + pz * pz <= radius * radius), t_top, np.inf)
    return np.minimum(t_side, t_top), t_top < t_side


def render_pillar(height: int):
    """The arm's fixed part seen from one camera: float (64, 64) coverage and premultiplied grey (0..1)."""
    ss = 4
    origin, d = _rays(height, ss)
    t_best = np.full(d.shape[:-1], np.inf)
    shade = np.zeros(d.shape[:-1])
    for radius, y0, y1, albedo in _PILLAR:
        t, top = _hit_upright_cylinder(origin, d, radius, y0, y1)
        p = origin + np.where(np.isfinite(t), t, 0.0)[..., None] * d
        side_n = np.stack([p[..., 0] / radius, np.zeros(t.shape), p[..., 2] / radius], -1)
        normal = np.where(top[..., None], np.array([0.0, 1.0, 0.0]), side_n)
        light = albedo * (_AMBIENT + (1 - _AMBIENT) * np.clip(_dot(normal, _LIGHT), 0.0, None))
        closer = t < t_best
        shade = np.where(closer, light, shade)
        t_best = np.where(closer, t, t_best)
    hit = np.isfinite(t_best)
    return _downsample(hit.astype(np.float64), ss), _downsample(np.where(hit, shade, 0.0), ss)


def _rod_points(height: int):
    """Projected shoulder, rod joint and object centres for every (horizontal, vertical) pose.

    Returns pixel coordinates (40, 40, 2) of the pillar top and of the rod's joint, the object
    centre for each size (2, 40, 40, 2) and its depth (2, 40, 40), the large object's depth minus
    the pillar axis' depth (40, 40), and the rod direction in camera coordinates (40, 40, 3):
    x right, y up, z towards the camera.
    """
    tilt = np.deg2rad(HORIZONTAL_DEG)[:, None]
    turn = np.deg2rad(VERTICAL_DEG)[None, :]
    zeros = np.zeros((N_AXIS, N_AXIS))
    cos_turn, sin_turn = _libm(math.cos, turn) + zeros, _libm(math.sin, turn) + zeros
    in_plane = np.stack([cos_turn, zeros, sin_turn], -1)  # the tilt's direction
    axis = np.stack([-sin_turn, zeros, cos_turn], -1)  # the tilt joint's axis
    up = np.array([0.0, 1.0, 0.0])
    rod = (_libm(math.cos, tilt) + zeros)[..., None] * up + (_libm(math.sin, tilt) + zeros)[..., None] * in_plane
    shoulder = np.array([0.0, _PIVOT_Y, 0.0])
    joint = shoulder + _SHOULDER * axis
    centres = [joint + (_ROD + _BACK * s) * rod for s in _OBJECT_SCALE]
    _, right, cam_up, forward = _camera(height)
    sx, sy, _ = _project(shoulder, height)
    jx, jy, _ = _project(joint, height)
    cxy = np.stack([np.stack(_project(c, height)[:2], -1) for c in centres])
    depth = np.stack([_project(c, height)[2] for c in centres])
    tip_depth = depth[1]
    axis_points = np.stack([zeros, centres[1][..., 1], zeros], -1)
    _, _, axis_depth = _project(axis_points, height)
    rod_cam = np.stack([_dot(rod, right), _dot(rod, cam_up), -_dot(rod, forward)], -1)
    return (np.broadcast_to(np.array([sx, sy]), (N_AXIS, N_AXIS, 2)), np.stack([jx, jy], -1), cxy, depth,
            tip_depth - axis_depth, rod_cam)


def _capsule_coverage(x, y, a, b, half_width):
    """Anti-aliased coverage (float32) of the 2D capsule a-b (T, 2) at pixel centres x, y (T, W, W).

    Coverage falls linearly from 1 to 0 over the pixel around the capsule's edge.
    """
    a, b = a.astype(np.float32), b.astype(np.float32)
    abx, aby = (b[:, 0] - a[:, 0])[:, None, None], (b[:, 1] - a[:, 1])[:, None, None]
    apx, apy = x - a[:, 0][:, None, None], y - a[:, 1][:, None, None]
    length2 = np.maximum(abx * abx + aby * aby, np.float32(1e-12))
    u = np.clip((apx * abx + apy * aby) / length2, 0, 1)
    dx, dy = apx - u * abx, apy - u * aby
    return np.clip(np.float32(half_width + 0.5) - np.sqrt(dx * dx + dy * dy), 0, 1)


def _sparse(used, k: int, pad: int, pixel, *values):
    """Keep the ``used`` entries of each row of (T, W) arrays: (T, k) pixel indices and values.

    Unused slots point at pixel ``pad`` with each value's fill (alpha 0), which the blend leaves
    unchanged; no row uses ``pad`` itself (checked), so a slot never overwrites a real one.
    """
    slot = np.cumsum(used, axis=1, dtype=np.int16) - 1  # rows are at most 4096 long
    if slot[:, -1].max(initial=-1) >= k:
        raise AssertionError(f"mpi3d layer touches {slot[:, -1].max() + 1} pixels, more than its {k} slots")
    rows, cols = np.nonzero(used)
    where = (rows, slot[rows, cols])
    out = [np.full((used.shape[0], k), pad, dtype=np.intp)]
    out[0][where] = np.broadcast_to(pixel, used.shape)[rows, cols]
    if (out[0][where] == pad).any():
        raise AssertionError("mpi3d layer uses its padding pixel")
    for v, fill in values:
        v = np.broadcast_to(v, used.shape)
        out.append(np.full((used.shape[0], k), fill, dtype=v.dtype))
        out[-1][where] = v[rows, cols]
    return out


def _grey_layer(alpha, grey, pixel, k: int):
    """Float coverage and premultiplied grey (T, W) -> pixel (T, k), 255 - alpha, 255 * grey + 127 (uint16)."""
    a8 = np.rint(alpha * 255).astype(np.int32)
    g8 = np.minimum(np.rint(grey * 255).astype(np.int32), a8)  # premultiplied: grey <= alpha
    if ((pixel < 0) | (pixel >= _SIZE * _SIZE))[a8 > 0].any():
        raise AssertionError("mpi3d layer outside the image")
    pixel, inv_alpha, grey255 = _sparse(a8 > 0, k, 0, pixel, (255 - a8, 255), (255 * g8 + 127, 127))
    return pixel, inv_alpha.astype(np.uint16), grey255.astype(np.uint16)


# --------------------------------------------------------------------------- object sprites

def _prism_planes(sides: int, apothem: float, h0: float, h1: float, apex: float | None = None):
    """Half-spaces n . p <= c (rows n_a, n_h, n_b, c) of a regular prism, or a pyramid if ``apex`` is set.

    Coordinates (a, h, b): h along the object's axis. A pyramid's base has apothem ``apothem`` at
    h0 and its sides meet at h = apex.
    """
    psi = 2 * np.pi * np.arange(sides) / sides
    if apex is None:
        sides_rows = np.stack([_libm(math.cos, psi), np.zeros(sides), _libm(math.sin, psi),
                               np.full(sides, apothem)], -1)
    else:
        slope = apothem / (apex - h0)
        sides_rows = np.stack([_libm(math.cos, psi), np.full(sides, slope), _libm(math.sin, psi),
                               np.full(sides, slope * apex)], -1)
    caps = [[0.0, -1.0, 0.0, -h0]] + ([[0.0, 1.0, 0.0, h1]] if apex is None else [])
    return np.concatenate([sides_rows, np.array(caps)])


# shape -> its half-spaces, in object units (the size's half-size is 1); the cone and the cylinder
# are 20-sided, shaded with the round solid's normals
_CONE = (0.78, -0.8, 1.1)  # base radius, base h, apex h
_CYLINDER = (0.62, -0.88, 0.88)
_SHAPE_PLANES = {
    0: _prism_planes(20, _CONE[0], _CONE[1], None, apex=_CONE[2]),
    1: _prism_planes(4, 0.72, -0.72, 0.72),
    2: _prism_planes(20, _CYLINDER[0], _CYLINDER[1], _CYLINDER[2]),
    3: _prism_planes(6, 0.95 * math.cos(math.pi / 6), -0.42, 0.42),
    4: _prism_planes(4, 0.88, -0.55, None, apex=0.75),
}
_SPHERE_RADIUS = 0.88
_OBJECT_RADIUS = 1.38  # every shape lies within this distance of its centre (checked by the tests)


def _object_frames():
    """Object axes (alpha bins, beta bins, 3 axes, 3) in camera coordinates: axis, across, third.

    The axis follows the rod; the object keeps one face turned 25 degrees from the camera so that
    boxes show two sides.
    """
    alpha = 2 * np.pi * np.arange(_N_ALPHA) / _N_ALPHA
    beta = np.deg2rad(np.linspace(-_BETA_MAX_DEG, _BETA_MAX_DEG, _N_BETA))
    al, be = np.meshgrid(alpha, beta, indexing="ij")
    cos_be, sin_be = _libm(math.cos, be), _libm(math.sin, be)
    axis = np.stack([cos_be * _libm(math.cos, al), cos_be * _libm(math.sin, al), sin_be], -1)
    view = np.array([0.0, 0.0, 1.0])
    across = view - (axis[..., 2:3]) * axis
    across /= np.sqrt(_dot(across, across))[..., None]
    third = np.stack([axis[..., 1] * across[..., 2] - axis[..., 2] * across[..., 1],
                      axis[..., 2] * across[..., 0] - axis[..., 0] * across[..., 2],
                      axis[..., 0] * across[..., 1] - axis[..., 1] * across[..., 0]], -1)
    c, s = math.cos(math.radians(25.0)), math.sin(math.radians(25.0))
    across, third = c * across + s * third, c * third - s * across
    return np.stack([axis, across, third], -2)


def _pow_int(x, n: int):
    """x ** n by multiplications (bit-identical everywhere, unlike a SIMD pow)."""
    out = np.ones_like(x)
    base = x.copy()
    while n:
        if n & 1:
            out = out * base
        base = base * base
        n >>= 1
    return out


def _split_planes(planes, frames):
    """Per frame, the planes a ray along -z enters and those it leaves, as t = c0 - gx * cx - gy * cy.

    A ray from z = 10 along -z meets the plane n . p = c at t = (c - 10 n_z - n_x x - n_y y) / -n_z.
    Returns for entering and for exiting planes the coefficients (F, M, 3) as float32, padded with
    planes at t = -inf (entering) / +inf (exiting), and the camera-space normals (F, M, 3) and
    original indices (F, M) of the entering planes. A plane parallel to the rays counts as entering
    at -inf when the ray is inside it and at +inf (a miss) when outside.
    """
    # (F, Np, xyz): n_a * across + n_h * axis + n_b * third
    n_cam = (planes[None, :, 0:1] * frames[:, None, 1, :] + planes[None, :, 1:2] * frames[:, None, 0, :]
             + planes[None, :, 2:3] * frames[:, None, 2, :])
    den = -n_cam[..., 2]
    den = np.where(den == 0, -1e-30, den)  # parallel: t = -huge inside, +huge outside
    coef = np.stack([(planes[None, :, 3] - 10.0 * n_cam[..., 2]) / den, n_cam[..., 0] / den,
                     n_cam[..., 1] / den], -1)
    out = []
    for enter in (True, False):
        mask = den < 0 if enter else den > 0
        m = int(mask.sum(axis=1).max())
        order = np.argsort(~mask, axis=1, kind="stable")[:, :m]
        keep = np.take_along_axis(mask, order, 1)[..., None]
        pad = np.array([-np.inf if enter else np.inf, 0.0, 0.0])
        out.append(np.where(keep, np.take_along_axis(coef, order[..., None], 1), pad).astype(np.float32))
        if enter:
            out.append(np.take_along_axis(n_cam, order[..., None], 1))
            out.append(np.where(keep[..., 0], order, -1))
    return out


def render_sprites(shape: int, size: int):
    """uint8 (depth bins, alpha bins * beta bins, 20*20, 3): coverage, diffuse and specular light.

    Orthographic rays (the object is small) are cast only inside the object's bounding circle;
    a ray's hit on a convex solid is the latest entering plane, if before the earliest exiting
    one. Float32, elementwise: every sprite's bits are fixed by its own parameters.
    """
    ss = _SPRITE_SS
    f32 = np.float32
    frames = _object_frames().reshape(-1, 3, 3)  # (F, axis/across/third, camera xyz)
    n_frames = 1 if shape == 5 else len(frames)
    frames = frames[:n_frames]
    light_cam = _unit([-0.45, 0.62, 0.64])
    half = _unit(light_cam + np.array([0.0, 0.0, 1.0]))
    if shape != 5:
        enter, normals, enter_index, leave = _split_planes(_SHAPE_PLANES[shape], frames)
        n_sides = len(_SHAPE_PLANES[shape]) - (1 if shape in (0, 4) else 2)
    result = []
    for ratio in _DEPTH_RATIOS:
        px_per_unit = _FOCAL / _CAM_DISTANCE * _OBJECT_SCALE[size] * ratio
        s = ((np.arange(_PATCH * ss) + 0.5) / ss - _PATCH / 2) / px_per_unit
        gx, gy = np.meshgrid(s, -s)  # camera x right, y up, in object units, centred on the object
        gx, gy = gx.reshape(-1), gy.reshape(-1)
        cast = gx * gx + gy * gy <= _OBJECT_RADIUS**2
        gx, gy = gx[cast].astype(f32), gy[cast].astype(f32)
        if shape == 5:  # sphere: orthographic, the visible point is (x, y, sqrt(r^2 - x^2 - y^2))
            z2 = f32(_SPHERE_RADIUS**2) - gx * gx - gy * gy
            hit = (z2 >= 0)[None]
            normal = [v[None] / f32(_SPHERE_RADIUS) for v in (gx, gy, np.sqrt(np.maximum(z2, 0)))]
        else:
            gxb, gyb = gx[None, :, None], gy[None, :, None]
            t_enter = enter[:, None, :, 0] - gxb * enter[:, None, :, 1] - gyb * enter[:, None, :, 2]
            which = np.argmax(t_enter, axis=-1)  # (F, R)
            t_in = np.take_along_axis(t_enter, which[..., None], -1)[..., 0]
            t_out = (leave[:, None, :, 0] - gxb * leave[:, None, :, 1] - gyb * leave[:, None, :, 2]).min(-1)
            hit = t_in <= t_out
            normal = [np.take_along_axis(normals[..., k], which, 1).astype(f32) for k in range(3)]
            if shape in (0, 2):  # smooth normals on the round sides, from the hit point's radial direction
                z = f32(10.0) - np.where(hit, t_in, f32(10.0))
                fr = frames.astype(f32)
                pa = gx * fr[:, None, 1, 0] + gy * fr[:, None, 1, 1] + z * fr[:, None, 1, 2]  # across
                pb = gx * fr[:, None, 2, 0] + gy * fr[:, None, 2, 1] + z * fr[:, None, 2, 2]  # third
                rho = np.sqrt(pa * pa + pb * pb) + f32(1e-12)
                slope = f32(_CONE[0] / (_CONE[2] - _CONE[1]) if shape == 0 else 0.0)
                side_index = np.take_along_axis(enter_index, which, 1)
                side = (side_index >= 0) & (side_index < n_sides)
                smooth = [(pa / rho) * fr[:, None, 1, k] + slope * fr[:, None, 0, k]
                          + (pb / rho) * fr[:, None, 2, k] for k in range(3)]
                normal = [np.where(side, sm, nv) for sm, nv in zip(smooth, normal)]
            norm = np.sqrt(normal[0] * normal[0] + normal[1] * normal[1] + normal[2] * normal[2])
            normal = [v / norm for v in normal]
        n_dot_l = normal[0] * f32(light_cam[0]) + normal[1] * f32(light_cam[1]) + normal[2] * f32(light_cam[2])
        n_dot_h = normal[0] * f32(half[0]) + normal[1] * f32(half[1]) + normal[2] * f32(half[2])
        diffuse = f32(_AMBIENT) + f32(1 - _AMBIENT) * np.clip(n_dot_l, 0, None)
        specular = f32(0.35) * _pow_int(np.clip(n_dot_h, 0, 1), 32)
        diffuse = np.minimum(diffuse, 1 - specular)  # diffuse + specular <= 1 keeps the blend in uint16
        hit_f = hit.astype(f32)
        layers = np.zeros((n_frames, cast.size, 3), dtype=f32)
        layers[:, cast] = np.stack([hit_f, hit_f * diffuse, hit_f * specular], -1)
        layers = layers.reshape(n_frames, _PATCH, ss, _PATCH, ss, 3)
        layers = sum(layers[:, :, i, :, j] for i in range(ss) for j in range(ss)) / (ss * ss)  # fixed order
        out = np.round(layers.reshape(n_frames, -1, 3) * 255).astype(np.int64)
        out[..., 1] = np.minimum(out[..., 1], out[..., 0])
        out[..., 2] = np.minimum(out[..., 2], out[..., 0] - out[..., 1])
        result.append(np.repeat(out, _N_ALPHA * _N_BETA, axis=0) if shape == 5 else out)
    return np.stack(result).astype(np.uint8)


class MPI3DToy(GridDataset):
    """Procedural MPI3D-toy: 1,036,800 64x64x3 images of a robot arm holding an object.

    Every factor changes the image: colour and shape change the object, size scales it, camera
    height moves the viewpoint (the ring's arc, the arm's foreshortening), background colour
    recolours the ring, and the two joints move the rod and the object across the frame. No two
    values of one factor give the same image (tested on random base points); the sphere looks
    the same from every orientation, but its position still moves with both joints.
    ``factor_values`` names the values of the five named factors.
    """

    name = "mpi3d_toy"
    factor_names = ["object_color", "object_shape", "object_size", "camera_height", "background_color",
                    "horizontal_axis", "vertical_axis"]
    factor_sizes = [6, 6, 2, 3, 3, 40, 40]
    observation_shape = (64, 64, 3)
    source = "procedural (after Gondal et al. 2019, mpi3d_toy)"
    factor_values = {
        "object_color": list(OBJECT_COLORS),
        "object_shape": list(OBJECT_SHAPES),
        "object_size": list(OBJECT_SIZES),
        "camera_height": list(CAMERA_HEIGHTS),
        "background_color": list(BACKGROUND_COLORS),
    }
    montage_base = (2, 1, 1, 1, 0, 30, 14)  # a large red cube, centre camera, the rod up and to the right

    _BATCH = 2048  # images composed at once: bounds the gathered uint16 temporaries (~5 MB)

    def __init__(self):
        n_pose = 3 * N_AXIS * N_AXIS  # (camera, horizontal, vertical)
        self._backgrounds = None  # (9, 64, 64, 3) uint8: camera * 3 + background colour
        self._pillar = [None, None, None]  # per camera: flat pixel, 255 - alpha, 255 * grey + 127
        self._rod = (np.zeros((n_pose, _ROD_K), dtype=np.intp), np.full((n_pose, _ROD_K), 255, dtype=np.uint16),
                     np.full((n_pose, _ROD_K), 127, dtype=np.uint16))
        self._behind = np.zeros(n_pose, dtype=bool)  # object farther than the pillar: the pillar is drawn last
        self._origin = np.zeros((n_pose, 2), dtype=np.intp)  # per pose and size: the sprite's top-left flat pixel
        self._sprite_bin = np.zeros(n_pose, dtype=np.intp)  # orientation bin of the object
        self._depth_bin = np.zeros((n_pose, 2), dtype=np.intp)  # per pose and size: scale bin for the distance
        n_sprite = (6, 2, len(_DEPTH_RATIOS), _N_ALPHA * _N_BETA, _SPRITE_K)
        # per sprite pixel: offset from the sprite's top-left, 255 - alpha, diffuse, 255 * specular + 127
        self._sprites = (np.zeros(n_sprite, dtype=np.intp), np.full(n_sprite, 255, dtype=np.uint16),
                         np.zeros(n_sprite, dtype=np.uint16), np.full(n_sprite, 127, dtype=np.uint16))
        self._camera_ready = np.zeros(3, dtype=bool)
        self._sprite_ready = np.zeros((6, 2), dtype=bool)

    @staticmethod
    def cache_cover() -> np.ndarray:
        """Factor rows (4,800) whose rendering fills every cache: each (camera, pose) once, each
        (camera, background) and each (shape, size) at least once (sprites are rendered per
        (shape, size), every depth and orientation bin at once)."""
        n = np.arange(3 * N_AXIS * N_AXIS)
        cam, pose = np.divmod(n, N_AXIS * N_AXIS)
        hor, ver = np.divmod(pose, N_AXIS)
        return np.stack([np.zeros_like(n), n % 6, (n // 6) % 2, cam, n % 3, hor, ver], -1)

    # ---- caches, filled per camera and per (shape, size): their contents never depend on the request

    def _ensure_backgrounds(self):
        if self._backgrounds is not None:
            return
        bg = np.empty((9, _SIZE, _SIZE, 3), dtype=np.uint8)
        for cam in range(3):
            ring = render_ring(cam)[..., None]
            for k in range(3):
                bg[cam * 3 + k] = np.round(_TABLE_GREY * (1 - ring) + _RING_RGB[k] * ring).astype(np.uint8)
        self._backgrounds = bg

    def _ensure_camera(self, cam: int):
        if self._camera_ready[cam]:
            return
        alpha, grey = render_pillar(cam)
        pixel = np.arange(_SIZE * _SIZE)[None, :]
        k = int((np.round(alpha * 255) > 0).sum())
        self._pillar[cam] = tuple(a[0] for a in _grey_layer(alpha.reshape(1, -1), grey.reshape(1, -1), pixel, k))

        shoulder, joint, centres, depth, depth_gap, rod_cam = _rod_points(cam)
        shoulder, joint, tip = shoulder.reshape(-1, 2), joint.reshape(-1, 2), centres[1].reshape(-1, 2)
        w = _ROD_WINDOW
        lo = np.floor(np.minimum(np.minimum(shoulder, joint), tip)).astype(np.int64) - 2
        hi = np.ceil(np.maximum(np.maximum(shoulder, joint), tip)).astype(np.int64) + 2
        if (hi - lo > w).any():
            raise AssertionError("mpi3d rod window too small")
        span = np.arange(w)
        col = lo[:, 0][:, None, None] + span[None, None, :]
        row = lo[:, 1][:, None, None] + span[None, :, None]
        x, y = (col + 0.5).astype(np.float32), (row + 0.5).astype(np.float32)
        block = _capsule_coverage(x, y, shoulder, joint, 1.3)  # the shoulder block, dark
        rod = _capsule_coverage(x, y, joint, tip, 0.6)  # the rod, light
        alpha = rod + block * (1 - rod)
        grey = rod * np.float32(0.66) + block * (1 - rod) * np.float32(0.36)
        inside = (row >= 0) & (row < _SIZE) & (col >= 0) & (col < _SIZE)
        alpha = np.where(inside, alpha, np.float32(0))
        n = N_AXIS * N_AXIS
        sl = slice(cam * n, (cam + 1) * n)
        pixel = np.broadcast_to(row * _SIZE + col, alpha.shape).reshape(n, -1)
        for table, part in zip(self._rod, _grey_layer(alpha.reshape(n, -1), grey.reshape(n, -1), pixel, _ROD_K)):
            table[sl] = part
        self._behind[sl] = depth_gap.reshape(-1) > 0

        top_left = np.floor(centres - _PATCH / 2 + 0.5).astype(np.int64)  # (2 sizes, 40, 40, xy)
        if (top_left < 0).any() or (top_left + _PATCH > _SIZE).any():
            raise AssertionError("mpi3d object leaves the frame")
        self._origin[sl] = (top_left[..., 1] * _SIZE + top_left[..., 0]).reshape(2, -1).T
        log_ratio = _libm(math.log, _CAM_DISTANCE / depth)  # (2 sizes, 40, 40)
        bins = np.abs(log_ratio[..., None] - _libm(math.log, _DEPTH_RATIOS)).argmin(-1)
        self._depth_bin[sl] = bins.reshape(2, -1).T

        alpha_angle = np.array([math.atan2(y, x) for y, x in zip(rod_cam[..., 1].ravel(), rod_cam[..., 0].ravel())])
        beta = _libm(math.asin, np.clip(rod_cam[..., 2], -1.0, 1.0)).ravel()
        a_bin = np.round(alpha_angle / (2 * np.pi / _N_ALPHA)).astype(np.int64) % _N_ALPHA
        b_step = 2 * np.deg2rad(_BETA_MAX_DEG) / (_N_BETA - 1)
        b_bin = np.clip(np.round((beta + np.deg2rad(_BETA_MAX_DEG)) / b_step), 0, _N_BETA - 1).astype(np.int64)
        self._sprite_bin[sl] = (a_bin * _N_BETA + b_bin).reshape(-1)
        self._camera_ready[cam] = True

    def _ensure_sprites(self, shape: int, size: int):
        if self._sprite_ready[shape, size]:
            return
        light = render_sprites(shape, size).astype(np.int64)  # (depth, orientation, P*P, alpha/diffuse/specular)
        light = light.reshape(-1, _PATCH * _PATCH, 3)
        offset = (np.arange(_PATCH)[:, None] * _SIZE + np.arange(_PATCH)[None, :]).reshape(1, -1)
        # pad: the sprite's top-left pixel, never inside an object (checked by _sparse)
        parts = _sparse(light[..., 0] > 0, _SPRITE_K, 0, offset, (255 - light[..., 0], 255), (light[..., 1], 0),
                        (255 * light[..., 2] + 127, 127))
        for table, part in zip(self._sprites, parts):
            table[shape, size] = part.reshape(table.shape[2:])
        self._sprite_ready[shape, size] = True

    # ---- composition

    @staticmethod
    def _blend(flat, idx, inv_alpha, add):
        """``flat[idx] = (flat[idx] * inv_alpha + add) // 255`` in uint16 (the sum stays <= 65152)."""
        cur = np.take(flat, idx, axis=0).astype(np.uint16)
        cur *= inv_alpha
        cur += add
        cur //= 255
        flat[idx] = cur

    def _blend_pillar(self, flat, rows, cam, select):
        for c in np.unique(cam[select]):
            pixel, inv_alpha, grey = self._pillar[c]
            r = rows[select & (cam == c)]
            idx = (r[:, None] * (_SIZE * _SIZE) + pixel).reshape(-1)
            self._blend(flat, idx, np.tile(inv_alpha, len(r))[:, None], np.tile(grey, len(r))[:, None])

    def render(self, factors: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        factors = np.asarray(factors, dtype=np.int64).reshape(-1, 7)
        color, shape, size, cam, bgc, hor, ver = factors.T
        self._ensure_backgrounds()
        for c in np.unique(cam):
            self._ensure_camera(int(c))
        for s, z in np.unique(factors[:, 1:3], axis=0):
            self._ensure_sprites(int(s), int(z))
        pose = (cam * N_AXIS + hor) * N_AXIS + ver
        n = len(factors)
        out = np.empty((n, _SIZE, _SIZE, 3), dtype=np.uint8)
        for a in range(0, n, self._BATCH):
            b = min(a + self._BATCH, n)
            p, c = pose[a:b], cam[a:b]
            block = out[a:b]
            np.take(self._backgrounds, c * 3 + bgc[a:b], axis=0, out=block)
            flat = block.reshape(-1, 3)
            rows = np.arange(b - a)
            base = rows[:, None] * (_SIZE * _SIZE)
            behind = self._behind[p]
            self._blend_pillar(flat, rows, c, ~behind)
            pixel, inv_alpha, grey = (t[p] for t in self._rod)
            used = np.flatnonzero(inv_alpha < 255)  # the tables' padding slots need no work
            self._blend(flat, (base + pixel).ravel()[used], inv_alpha.ravel()[used, None], grey.ravel()[used, None])
            # the object: its colour times the diffuse light, plus the white specular light
            key = (shape[a:b], size[a:b], self._depth_bin[p, size[a:b]], self._sprite_bin[p])
            offset, inv_alpha, diffuse, specular = (t[key] for t in self._sprites)
            used = np.flatnonzero(inv_alpha < 255)
            add = diffuse.ravel()[used, None] * _OBJECT_RGB[color[a:b][used // _SPRITE_K]]
            add += specular.ravel()[used, None]
            idx = (base + self._origin[p, size[a:b]][:, None] + offset).ravel()[used]
            self._blend(flat, idx, inv_alpha.ravel()[used, None], add)
            self._blend_pillar(flat, rows, c, behind)
        return out
