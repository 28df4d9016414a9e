#!/usr/bin/env python3
"""Writes the dtype fixtures that tests/blocks/safetensors_dtypes_test.cpp loads, with the
safetensors package (PyPI), numpy and ml_dtypes (for bfloat16):

  python_dtypes.safetensors    every dtype cairn reads (F16, BF16, F64, I8, U8, I16, U16, I32,
                               I64, U32, U64, BOOL), each tensor "<dtype>" next to "<dtype>.expected":
                               what numpy says it converts to (F32 for floats, I32 for integers).
  float_narrowing.safetensors  "f16.input" and "bf16.input" (F32 bit patterns: signed zeros,
                               infinities, NaNs with payloads, subnormals, exact ties, random
                               values) and "f16.expected" (F16) and "bf16.expected" (BF16): numpy's
                               and ml_dtypes' round-to-nearest-even narrowing, which save_safetensors
                               must reproduce bit for bit. Finite inputs that would overflow to
                               infinity are left out: cairn refuses to save those.

Usage: pip install safetensors numpy ml_dtypes
       python3 tests/data/make_dtype_fixtures.py   (writes next to this script)
The values are seeded, so running it again rewrites the same bytes. CI does not run it: the
fixtures are committed. tests/data/check_cairn_written.py is the other direction (Python reading
what cairn wrote), run by the C++ test when these packages are importable.
"""
import os
import sys

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

HERE = os.path.dirname(os.path.abspath(__file__))


def from_bits(bits, dtype):
    return np.array(bits, dtype=np.uint16 if np.dtype(dtype).itemsize == 2 else np.uint32).view(
        dtype)


def narrow_inputs(rng, narrow, mantissa_bits):
    """float32 bit patterns that exercise rounding to `narrow` (float16 or bfloat16)."""
    special = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000,  # zeros and infinities
               0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001,  # quiet and signalling NaNs
               0x7FA00000, 0x7F802000, 0x7F801FFF, 0x7FFFFFFF,  # payloads short and long
               0x00000001, 0x80000001, 0x007FFFFF, 0x00800000,  # float32 subnormals, min normal
               0x3F800000, 0xBF800000, 0x3F800001, 0x3F7FFFFF]  # one, and its neighbours
    if narrow == np.float16:
        special += [0x33000000, 0x33000001, 0xB3000000,  # 2^-25: a tie that goes to zero
                    0x33800000, 0x33C00000, 0x34200000,  # 2^-24 (smallest subnormal), ties
                    0x387FC000, 0x387FE000, 0x38800000,  # largest subnormal and its rounding
                    0x477FE000, 0x477FEFFF, 0xC77FEFFF]  # 65504 and the largest finite input
    else:
        special += [0x7F7F0000, 0x7F7F7FFF, 0xFF7F7FFF,  # bfloat16's largest and below the tie
                    0x3F808000, 0x3F818000, 0x00008000]  # ties to even, both ways; a subnormal
    random_bits = rng.integers(0, 2**32, 3000, dtype=np.uint64).astype(np.uint32)
    # Exact ties: a random narrow value plus half its last place.
    shift = 23 - mantissa_bits
    ties = (random_bits[:500] & ~np.uint32((1 << shift) - 1)) | np.uint32(1 << (shift - 1))
    bits = np.concatenate([np.array(special, dtype=np.uint32), random_bits, ties])
    values = bits.view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        narrowed = values.astype(narrow)
    keep = ~(np.isfinite(values) & ~np.isfinite(narrowed.astype(np.float32)))
    return values[keep], narrowed[keep]


def dtype_tensors(rng):
    f16 = np.concatenate([from_bits([0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01,
                                     0x0001, 0x03FF, 0x0400, 0x7BFF, 0x3C00, 0xBC00], np.float16),
                          rng.integers(0, 2**16, 200, dtype=np.uint16).view(np.float16)])
    bf16 = np.concatenate([from_bits([0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x7F81,
                                      0x0001, 0x007F, 0x0080, 0x7F7F, 0x3F80, 0xBF80],
                                     ml_dtypes.bfloat16),
                           rng.integers(0, 2**16, 200, dtype=np.uint16).view(ml_dtypes.bfloat16)])
    f64 = np.concatenate([np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 0.1, -0.2, 1 / 3,
                                    1 + 2.0**-24,  # a tie: rounds to even (1.0)
                                    1 + 3 * 2.0**-24,  # a tie: rounds to even (1 + 2^-22)
                                    1 + 2.0**-24 + 2.0**-40,  # just above a tie: rounds up
                                    3.4028234663852886e38,  # float32's largest value
                                    1e-40, 1e-46,  # a float32 subnormal; below half the least
                                    -1.5e-45]),  # near the least subnormal
                          rng.standard_normal(100) * 10.0 ** rng.integers(-30, 30, 100)])
    tensors = {
        "F16": f16.reshape(-1, 1), "BF16": bf16, "F64": f64.reshape(5, -1),
        "I8": np.array([-128, -1, 0, 1, 127], np.int8),
        "U8": np.array([0, 1, 128, 255], np.uint8),
        "I16": np.array([-32768, -1, 0, 32767], np.int16),
        "U16": np.array([0, 1, 40000, 65535], np.uint16),
        "I32": np.array([[-2**31, -1], [0, 2**31 - 1]], np.int32),
        "I64": np.array([-2**31, -5, 0, 2**31 - 1], np.int64),
        "U32": np.array([0, 7, 2**31 - 1], np.uint32),
        "U64": np.array([0, 9, 2**31 - 1], np.uint64),
        "BOOL": np.array([[True, False, True]]),
    }
    expected = {}
    for name, array in tensors.items():
        target = np.float32 if array.dtype.kind == "f" or name == "BF16" else np.int32
        expected[name + ".expected"] = array.astype(target)
    return tensors, expected


def main():
    rng = np.random.default_rng(12)
    tensors, expected = dtype_tensors(rng)
    both = {}
    for name in tensors:
        both[name] = tensors[name]
        both[name + ".expected"] = expected[name + ".expected"]
    path = os.path.join(HERE, "python_dtypes.safetensors")
    safetensors.numpy.save_file(both, path, metadata={"written_by": "make_dtype_fixtures.py"})
    print(f"wrote {path}")

    f16_in, f16_out = narrow_inputs(rng, np.float16, 10)
    bf16_in, bf16_out = narrow_inputs(rng, ml_dtypes.bfloat16, 7)
    path = os.path.join(HERE, "float_narrowing.safetensors")
    safetensors.numpy.save_file({"f16.input": f16_in, "f16.expected": f16_out,
                                 "bf16.input": bf16_in, "bf16.expected": bf16_out}, path)
    print(f"wrote {path} ({len(f16_in)} F16 and {len(bf16_in)} BF16 cases)")

    # Read back with the package's own parser, as a cross-check of the dtype names written.
    with open(os.path.join(HERE, "python_dtypes.safetensors"), "rb") as f:
        names = {name: info["dtype"] for name, info in safetensors.deserialize(f.read())}
    assert names["BF16"] == "BF16" and names["F16"] == "F16" and names["BOOL"] == "BOOL", names
    print(f"OK: safetensors {safetensors.__version__}, numpy {np.__version__}, "
          f"ml_dtypes {ml_dtypes.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
