#!/usr/bin/env python3
"""Checks that Python reads what cairn wrote, bit for bit, in every dtype cairn writes.

Run by tests/blocks/safetensors_dtypes_test.cpp (PythonReadsWhatCairnWrites) after it saved, into
DIR, the same float32 tensors "x" (shape (N,)) and "m" (shape (2, 3)) and an int32 tensor "ids"
three times: values.f32.safetensors (F32), values.f16.safetensors and values.bf16.safetensors
(float32 tensors as F16 and BF16; int32 stays I32), each with the metadata {"producer": "cairn"}.
Every file is parsed by the safetensors package; the F16 and BF16 bytes must equal numpy's and
ml_dtypes' narrowing of the F32 file's values, bit for bit.

Usage: check_cairn_written.py DIR
Exit status: 0 checked, 1 a mismatch (printed), 77 numpy, ml_dtypes or safetensors is missing.
"""
import os
import sys

try:
    import ml_dtypes
    import numpy as np
    import safetensors
except ImportError as missing:
    print(f"skipped: {missing}")
    sys.exit(77)


def read(path):
    """{name: (dtype, shape, raw bytes)} and the metadata, as the safetensors package parses them."""
    with open(path, "rb") as f:
        data = f.read()
    tensors = {name: (info["dtype"], tuple(info["shape"]), bytes(info["data"]))
               for name, info in safetensors.deserialize(data)}
    with safetensors.safe_open(path, framework="numpy") as opened:
        metadata = opened.metadata()
    return tensors, metadata


def main(directory):
    files = {fmt: read(os.path.join(directory, f"values.{fmt}.safetensors"))
             for fmt in ("f32", "f16", "bf16")}
    failures = []
    reference, _ = files["f32"]
    narrow_types = {"f32": ("F32", np.float32), "f16": ("F16", np.float16),
                    "bf16": ("BF16", ml_dtypes.bfloat16)}
    for fmt, (tensors, metadata) in files.items():
        if metadata != {"producer": "cairn"}:
            failures.append(f"{fmt}: metadata {metadata}")
        if sorted(tensors) != ["ids", "m", "x"]:
            failures.append(f"{fmt}: tensors {sorted(tensors)}")
            continue
        dtype_name, numpy_type = narrow_types[fmt]
        for name in ("x", "m"):
            dtype, shape, raw = tensors[name]
            source = np.frombuffer(reference[name][2], dtype=np.float32).reshape(reference[name][1])
            with np.errstate(over="ignore", invalid="ignore"):
                expected = source.astype(numpy_type).tobytes()
            if dtype != dtype_name or shape != source.shape:
                failures.append(f"{fmt}: {name} is {dtype} {shape}, expected {dtype_name} "
                                f"{source.shape}")
            elif raw != expected:
                got = np.frombuffer(raw, dtype=np.uint8)
                want = np.frombuffer(expected, dtype=np.uint8)
                first = int(np.nonzero(got != want)[0][0]) if len(got) == len(want) else -1
                failures.append(f"{fmt}: {name}'s bytes differ from numpy's (first at byte "
                                f"{first})")
        if tensors["ids"][0] != "I32" or tensors["ids"] != reference["ids"]:
            failures.append(f"{fmt}: ids is {tensors['ids'][:2]}, expected the F32 file's I32")
    for failure in failures:
        print("MISMATCH", failure)
    if not failures:
        print(f"OK: safetensors {safetensors.__version__} reads cairn's F32, F16, BF16 and I32 "
              f"files; the bytes equal numpy {np.__version__} / ml_dtypes "
              f"{ml_dtypes.__version__} narrowing")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
