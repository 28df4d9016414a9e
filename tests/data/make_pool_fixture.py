#!/usr/bin/env python3
"""Writes pool_fixture.txt, the golden values tests/ops/pool_test.cpp holds cairn's max_pool2d
and avg_pool2d (forward and backward) against: a float64 reference written here as plain loops
over PyTorch's rules (aten/src/ATen/native/Pool.h and cpu/{Max,Avg}PoolKernel.cpp), on inputs
and output gradients that are float32 values.

The rules: output size floor((in + 2 pad - k) / s) + 1, with ceil_mode the ceiling, less one when
the last window would start in the right padding; max pads with -inf, takes a window's first
maximum in row-major order, or its NaN (the index of the last NaN: PyTorch updates on
`v > best or isnan(v)`), and its backward adds dy into that index; average divides the window's
sum by the window clipped to the padded input (count_include_pad) or to the input, and its
backward adds dy / divisor to every input element of the window.

File format, one record a case (numbers separated by spaces, one list a line):
  case <name> <op: max | avg> N C H W kh kw sh sw ph pw ceil_mode count_include_pad
  x <values>      (N*C*H*W float32 values, %.9g: exact)
  dy <values>     (N*C*P*Q float32 values)
  y <values>      (float64 reference, %.17g)
  dx <values>     (float64 reference)

Usage: python3 tests/data/make_pool_fixture.py   (numpy; writes next to this script)
Seeded: running it again writes the same bytes. CI does not run it; the fixture is committed.
"""
import math
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def output_size(n, k, s, p, ceil_mode):
    numerator = n + 2 * p - k + (s - 1 if ceil_mode else 0)
    out = numerator // s + 1  # Python's // is floor division, as PyTorch's div_rtn
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def span(o, n, k, s, p):
    start = o * s - p
    end = min(start + k, n + p)
    padded = end - start
    return max(start, 0), min(end, n), padded


def pool(x, dy, op, kh, kw, sh, sw, ph, pw, ceil_mode, include_pad):
    N, C, H, W = x.shape
    P = output_size(H, kh, sh, ph, ceil_mode)
    Q = output_size(W, kw, sw, pw, ceil_mode)
    assert dy.shape == (N, C, P, Q)
    y = np.zeros((N, C, P, Q))
    dx = np.zeros((N, C, H, W))
    for n in range(N):
        for c in range(C):
            for oh in range(P):
                h0, h1, hp = span(oh, H, kh, sh, ph)
                for ow in range(Q):
                    w0, w1, wp = span(ow, W, kw, sw, pw)
                    assert h0 < h1 and w0 < w1
                    g = float(dy[n, c, oh, ow])
                    if op == "max":
                        best, where = -math.inf, (h0, w0)
                        for ih in range(h0, h1):
                            for iw in range(w0, w1):
                                v = float(x[n, c, ih, iw])
                                if v > best or math.isnan(v):
                                    best, where = v, (ih, iw)
                        y[n, c, oh, ow] = best
                        dx[n, c, where[0], where[1]] += g
                    else:
                        count = hp * wp if include_pad else (h1 - h0) * (w1 - w0)
                        y[n, c, oh, ow] = float(np.sum(x[n, c, h0:h1, w0:w1], dtype=np.float64)) / count
                        dx[n, c, h0:h1, w0:w1] += g / count
    return y, dx


# (name, N, C, H, W, kh, kw, sh, sw, ph, pw, ceil_mode, values): values is "random" (distinct,
# so max pooling has no ties), "ties" (a few levels, so windows tie), "negative" (all below
# zero: -inf padding differs from zero padding) or "nan" (random with NaNs).
CASES = [
    ("window_1x1", 2, 3, 4, 5, 1, 1, 1, 1, 0, 0, False, "random"),
    ("window_7x7_pad3", 1, 2, 9, 8, 7, 7, 2, 2, 3, 3, False, "random"),
    ("window_7x7_pad3_ceil", 1, 2, 9, 8, 7, 7, 2, 2, 3, 3, True, "random"),
    ("stride_larger_than_kernel", 2, 2, 8, 7, 2, 2, 3, 3, 0, 0, False, "random"),
    ("stride_1_pad_1", 1, 3, 5, 6, 3, 3, 1, 1, 1, 1, False, "random"),
    ("ceil_off_indivisible", 2, 2, 8, 6, 3, 3, 2, 2, 0, 0, False, "random"),
    ("ceil_on_indivisible", 2, 2, 8, 6, 3, 3, 2, 2, 0, 0, True, "random"),
    # ceil_mode's drop rule: the ceiling gives 4 windows, the 4th would start in the right
    # padding (3 * 2 >= 5 + 1), so there are 3.
    ("ceil_on_last_window_dropped", 1, 2, 5, 5, 2, 2, 2, 2, 1, 1, True, "random"),
    ("ceil_on_padding_2", 1, 1, 7, 9, 5, 4, 3, 2, 2, 1, True, "random"),
    ("batch_1_non_square", 1, 2, 5, 7, 2, 3, 1, 2, 1, 0, False, "random"),
    # ceil_mode lets the kernel exceed the padded input (PyTorch too): one window.
    ("ceil_kernel_past_input", 1, 2, 3, 2, 4, 3, 4, 3, 0, 0, True, "random"),
    ("ties_first_maximum", 2, 2, 6, 6, 3, 3, 2, 2, 1, 1, False, "ties"),
    ("negative_with_padding", 1, 2, 4, 4, 3, 3, 2, 2, 1, 1, True, "negative"),
    ("nan_propagates", 1, 2, 6, 5, 3, 2, 2, 2, 1, 1, False, "nan"),
]


def make_values(kind, shape, rng):
    n = int(np.prod(shape))
    if kind == "ties":
        v = rng.integers(0, 3, size=n).astype(np.float32)
    elif kind == "negative":
        v = -(rng.permutation(n).astype(np.float32) + 1.0) / 8.0
    else:
        # Distinct steps of 1/4, shuffled, each plus a fraction below 0.2: no two values within
        # 0.05, so no window ties and finite differences never move a maximum.
        v = (rng.permutation(n).astype(np.float64) - n / 2.0) / 4.0
        v = (v + rng.uniform(0.0, 0.2, size=n)).astype(np.float32)
        if kind == "nan":
            v[rng.choice(n, size=max(2, n // 8), replace=False)] = np.nan
    return v.reshape(shape)


def fmt(values, spec):
    return " ".join(spec % v if not math.isnan(v) else "nan" for v in values.reshape(-1))


def main():
    rng = np.random.default_rng(20240611)
    lines = []
    for name, N, C, H, W, kh, kw, sh, sw, ph, pw, ceil_mode, kind in CASES:
        x = make_values(kind, (N, C, H, W), rng)
        P = output_size(H, kh, sh, ph, ceil_mode)
        Q = output_size(W, kw, sw, pw, ceil_mode)
        dy = rng.uniform(-1.0, 1.0, size=(N, C, P, Q)).astype(np.float32)
        ops = [("max", True), ("avg", True), ("avg", False)]
        if kind == "nan":
            ops = [("max", True)]  # averages of NaN are NaN: nothing to learn
        for op, include_pad in ops:
            if op == "avg" and not include_pad and ph == 0 and pw == 0 and not ceil_mode:
                continue  # no window reaches padding: the same as count_include_pad
            y, dx = pool(x.astype(np.float64), dy.astype(np.float64), op, kh, kw, sh, sw, ph, pw,
                         ceil_mode, include_pad)
            case_name = name if op == "max" else f"{name}_{'incl' if include_pad else 'excl'}"
            lines.append(f"case {case_name} {op} {N} {C} {H} {W} {kh} {kw} {sh} {sw} {ph} {pw} "
                         f"{int(ceil_mode)} {int(include_pad)}")
            lines.append("x " + fmt(x, "%.9g"))
            lines.append("dy " + fmt(dy, "%.9g"))
            lines.append("y " + fmt(y, "%.17g"))
            lines.append("dx " + fmt(dx, "%.17g"))
    with open(os.path.join(HERE, "pool_fixture.txt"), "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
