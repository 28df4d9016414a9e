#!/usr/bin/env python3
"""Writes norm_fixture.txt, the float64 golden values tests/ops/norm_test.cpp checks batch_norm
and layer_norm against: PyTorch's formulas (torch.nn.functional.batch_norm / layer_norm and their
autograd) written out in numpy, in float64, on float32-representable inputs.

Format, one tensor a line:  <case>.<name> <ndim> <dims...> <values...>
Values are written with repr() (17 significant digits), so they read back exactly.

Cases:
  bn_train_4d     x (2, 3, 3, 5): odd C, H, W; weight, bias, running stats; momentum 0.1
  bn_train_2d     x (5, 7): spatial 1; weight, bias; momentum 0.3
  bn_train_pair   x (1, 2, 2, 1): two values per channel, the fewest training allows; no affine
  bn_predict_4d   x (3, 3, 2, 3): running statistics, their backward a per-channel affine map
  ln_single_row   x (1, 7): one row (N = 1); weight, bias over the last axis
  ln_3d           x (2, 3, 5), normalised over the last two axes; weight, bias (3, 5)
  ln_noaffine     x (4, 6), normalised over the last axis, no weight or bias

Usage: /work/venv/bin/python tests/data/make_norm_fixture.py   (numpy only; writes next to this
script). Seeded: running it again writes the same file. CI does not run it: the file is committed.
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
EPS = 1e-5


def f32(a):
    """float32-representable values, held in float64."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def batch_norm(x, w, b, rm, rv, training, momentum, dy):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    count = x.size // x.shape[1]
    out = {}
    if training:
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)  # biased, what the output is normalised by
        if rm is not None:
            out["running_mean_after"] = (1 - momentum) * rm + momentum * mean
            out["running_var_after"] = (1 - momentum) * rv + momentum * x.var(axis=axes, ddof=1)
    else:
        mean, var = rm, rv
    invstd = 1.0 / np.sqrt(var + EPS)
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    wv = w if w is not None else np.ones(x.shape[1])
    y = xhat * wv.reshape(shape) + (b.reshape(shape) if b is not None else 0.0)
    out["y"] = y
    g = dy * wv.reshape(shape)
    if training:
        # d/dx of (x - mean) * invstd with mean and var functions of x (PyTorch's formula).
        dx = invstd.reshape(shape) / count * (
            count * g - g.sum(axis=axes).reshape(shape) -
            xhat * (g * xhat).sum(axis=axes).reshape(shape))
    else:
        dx = g * invstd.reshape(shape)
    out["dx"] = dx
    if w is not None:
        out["dweight"] = (dy * xhat).sum(axis=axes)
    if b is not None:
        out["dbias"] = dy.sum(axis=axes)
    return out


def layer_norm(x, axes_count, w, b, dy):
    axes = tuple(range(x.ndim - axes_count, x.ndim))
    lead = tuple(range(x.ndim - axes_count))
    count = int(np.prod(x.shape[x.ndim - axes_count:]))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    invstd = 1.0 / np.sqrt(var + EPS)
    xhat = (x - mean) * invstd
    wv = w if w is not None else 1.0
    out = {"y": xhat * wv + (b if b is not None else 0.0)}
    g = dy * wv
    out["dx"] = invstd / count * (count * g - g.sum(axis=axes, keepdims=True) -
                                  xhat * (g * xhat).sum(axis=axes, keepdims=True))
    if w is not None:
        out["dweight"] = (dy * xhat).sum(axis=lead)
    if b is not None:
        out["dbias"] = dy.sum(axis=lead)
    return out


def main():
    rng = np.random.default_rng(20240611)
    lines = []

    def put(case, name, a):
        a = np.asarray(a, dtype=np.float64)
        dims = " ".join(str(d) for d in a.shape)
        values = " ".join(repr(float(v)) for v in a.ravel())
        lines.append(f"{case}.{name} {a.ndim} {dims} {values}".replace("  ", " "))

    def bn_case(case, shape, affine, training, momentum, running, offset=0.0):
        c = shape[1]
        x = f32(rng.normal(offset, 2.0, shape))
        dy = f32(rng.normal(0.0, 1.0, shape))
        w = f32(rng.uniform(0.5, 1.5, c)) if affine else None
        b = f32(rng.uniform(-1, 1, c)) if affine else None
        rm = f32(rng.uniform(-0.5, 0.5, c)) if running else None
        rv = f32(rng.uniform(0.5, 2.0, c)) if running else None
        put(case, "x", x)
        put(case, "dy", dy)
        if affine:
            put(case, "weight", w)
            put(case, "bias", b)
        if running:
            put(case, "running_mean", rm)
            put(case, "running_var", rv)
        put(case, "momentum", [momentum])
        for name, value in batch_norm(x, w, b, rm, rv, training, momentum, dy).items():
            put(case, name, value)

    def ln_case(case, shape, axes_count, affine):
        x = f32(rng.normal(0.5, 3.0, shape))
        dy = f32(rng.normal(0.0, 1.0, shape))
        normalized = shape[len(shape) - axes_count:]
        w = f32(rng.uniform(0.5, 1.5, normalized)) if affine else None
        b = f32(rng.uniform(-1, 1, normalized)) if affine else None
        put(case, "x", x)
        put(case, "dy", dy)
        put(case, "axes", [axes_count])
        if affine:
            put(case, "weight", w)
            put(case, "bias", b)
        for name, value in layer_norm(x, axes_count, w, b, dy).items():
            put(case, name, value)

    bn_case("bn_train_4d", (2, 3, 3, 5), True, True, 0.1, True, offset=3.0)
    bn_case("bn_train_2d", (5, 7), True, True, 0.3, True)
    bn_case("bn_train_pair", (1, 2, 2, 1), False, True, 0.1, True)
    bn_case("bn_predict_4d", (3, 3, 2, 3), True, False, 0.1, True)
    ln_case("ln_single_row", (1, 7), 1, True)
    ln_case("ln_3d", (2, 3, 5), 2, True)
    ln_case("ln_noaffine", (4, 6), 1, False)

    with open(os.path.join(HERE, "norm_fixture.txt"), "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
