#!/usr/bin/env python3
"""Writes conv_cases.txt, the golden values tests/ops/conv_test.cpp holds conv2d against.

Each case draws x, weight, bias and an output gradient dy (float32 values), then computes in
float64, straight from PyTorch's definition of conv2d (zero padding, cross-correlation, groups):
    y[n, k, p, q] = b[k] + sum_{c, r, s} w[k, c, r, s] * xpad[n, g*C/G + c, p*sh + r*dh, q*sw + s*dw]
and its gradients dx, dw, db for the loss sum(y * dy).

Format, one item a line: "case NAME", "params N C H W K R S sh sw ph pw dh dw groups has_bias",
then "x", "w", "b" (absent without bias), "dy", "y", "dx", "dw", "db" (absent without bias), each
"NAME COUNT v0 v1 ...", then "end".

Usage: /work/venv/bin/python tests/data/make_conv_fixture.py   (needs numpy; writes next to itself)
"""
import os

import numpy as np

# name, (N, C, H, W), (K, R, S), stride, padding, dilation, groups, bias
CASES = [
    ("pointwise_1x1", (2, 3, 5, 4), (4, 1, 1), (1, 1), (0, 0), (1, 1), 1, True),
    ("kernel_7x7_padded", (1, 2, 9, 8), (3, 7, 7), (1, 1), (3, 3), (1, 1), 1, True),
    ("stride_2_odd_sizes", (2, 3, 7, 5), (2, 3, 3), (2, 2), (1, 1), (1, 1), 1, True),
    ("stride_3_leftover", (2, 2, 10, 11), (3, 3, 3), (3, 3), (0, 0), (1, 1), 1, True),
    ("padding_beyond_half_kernel", (2, 2, 4, 5), (2, 3, 3), (1, 1), (2, 3), (1, 1), 1, True),
    ("dilation_2", (2, 2, 9, 7), (3, 3, 3), (1, 1), (1, 1), (2, 2), 1, True),
    ("groups_2", (2, 4, 6, 5), (6, 3, 3), (1, 1), (1, 1), (1, 1), 2, True),
    ("depthwise_stride_2", (2, 3, 7, 6), (6, 3, 3), (2, 2), (1, 1), (1, 1), 3, True),
    ("no_bias_rectangular", (3, 2, 5, 6), (2, 2, 3), (2, 1), (0, 1), (1, 1), 1, False),
    ("batch_1_1x1_stride_2", (1, 3, 5, 5), (2, 1, 1), (2, 2), (0, 0), (1, 1), 1, True),
    ("pointwise_groups_2", (2, 4, 3, 3), (2, 1, 1), (1, 1), (0, 0), (1, 1), 2, False),
    ("mixed_stride_dilation", (2, 3, 8, 9), (4, 2, 3), (1, 2), (1, 0), (3, 2), 1, True),
]


def conv2d_and_grads(x, w, b, dy, stride, padding, dilation, groups):
    n, c, h, width = x.shape
    k, cg, r_size, s_size = w.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw_ = dilation
    p_out, q_out = dy.shape[2], dy.shape[3]
    kg = k // groups
    xpad = np.zeros((n, c, h + 2 * ph, width + 2 * pw))
    xpad[:, :, ph:ph + h, pw:pw + width] = x
    y = np.zeros((n, k, p_out, q_out))
    dxpad = np.zeros_like(xpad)
    dw = np.zeros_like(w)
    for g in range(groups):
        ks, cs = slice(g * kg, (g + 1) * kg), slice(g * cg, (g + 1) * cg)
        for r in range(r_size):
            rows = slice(r * dh, r * dh + sh * (p_out - 1) + 1, sh)
            for s in range(s_size):
                cols = slice(s * dw_, s * dw_ + sw * (q_out - 1) + 1, sw)
                patch = xpad[:, cs, rows, cols]  # (N, C/G, P, Q)
                y[:, ks] += np.einsum("kc,ncpq->nkpq", w[ks, :, r, s], patch)
                dw[ks, :, r, s] += np.einsum("nkpq,ncpq->kc", dy[:, ks], patch)
                dxpad[:, cs, rows, cols] += np.einsum("kc,nkpq->ncpq", w[ks, :, r, s], dy[:, ks])
    if b is not None:
        y += b[None, :, None, None]
    dx = dxpad[:, :, ph:ph + h, pw:pw + width]
    db = dy.sum(axis=(0, 2, 3)) if b is not None else None
    return y, dx, dw, db


def out_size(size, kernel, stride, pad, dilation):
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def main():
    rng = np.random.default_rng(20240607)
    lines = []

    def emit(name, array):
        values = np.asarray(array, dtype=np.float64).ravel()
        lines.append(f"{name} {values.size} " + " ".join(f"{v:.9g}" for v in values))

    for name, (n, c, h, w), (k, r, s), stride, pad, dil, groups, has_bias in CASES:
        p = out_size(h, r, stride[0], pad[0], dil[0])
        q = out_size(w, s, stride[1], pad[1], dil[1])
        f32 = lambda shape: rng.uniform(-1, 1, shape).astype(np.float32).astype(np.float64)
        x = f32((n, c, h, w))
        wt = f32((k, c // groups, r, s))
        b = f32((k,)) if has_bias else None
        dy = f32((n, k, p, q))
        y, dx, dw, db = conv2d_and_grads(x, wt, b, dy, stride, pad, dil, groups)
        lines.append(f"case {name}")
        lines.append("params " + " ".join(str(v) for v in (
            n, c, h, w, k, r, s, stride[0], stride[1], pad[0], pad[1], dil[0], dil[1], groups,
            int(has_bias))))
        emit("x", x)
        emit("w", wt)
        if has_bias:
            emit("b", b)
        emit("dy", dy)
        emit("y", y)
        emit("dx", dx)
        emit("dw", dw)
        if has_bias:
            emit("db", db)
        lines.append("end")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv_cases.txt")
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")
    print(f"wrote {path}: {len(CASES)} cases")


if __name__ == "__main__":
    main()
