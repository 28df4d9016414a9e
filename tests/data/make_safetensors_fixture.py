#!/usr/bin/env python3
"""Writes python_written.safetensors, the fixture that tests/blocks/safetensors_test.cpp loads.

The file is built by hand with numpy only (no safetensors or torch needed), following the format:
an 8-byte little-endian header length, a JSON header padded with spaces so that the data starts
8-byte aligned, then the raw little-endian tensor bytes. The names are those of the PyTorch
state_dict of nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), plus an int32 scalar.
If the safetensors package is installed, the file is also read back with it as a cross-check.

Usage: python3 tests/data/make_safetensors_fixture.py   (writes next to this script; needs numpy:
       pip install numpy, and optionally safetensors for the cross-check)
If the values change, change the expectations in safetensors_test.cpp with them.
"""
import json
import os
import struct
import sys

import numpy as np


def fixture_tensors():
    return {
        "0.weight": (np.arange(12, dtype=np.float64) * 0.25 - 1).reshape(3, 4).astype("<f4"),
        "0.bias": (np.arange(3, dtype=np.float64) * 0.5 - 0.5).astype("<f4"),
        "2.weight": (0.5 - np.arange(6, dtype=np.float64) * 0.125).reshape(2, 3).astype("<f4"),
        # Not exactly representable: the C++ test compares with the float literals 0.1f, -0.2f.
        "2.bias": np.array([0.1, -0.2], dtype="<f4"),
        # All four bytes non-zero and a sign bit elsewhere would show a byte-order mistake.
        "step": np.array(123456789, dtype="<i4"),
    }


def write_safetensors(path, tensors, metadata):
    dtype_names = {np.dtype("<f4"): "F32", np.dtype("<i4"): "I32"}
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name, array in tensors.items():
        blob = array.tobytes()
        header[name] = {
            "dtype": dtype_names[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for blob in blobs:
            out.write(blob)


def write_state_dict_fixture(directory):
    """torch_mlp_state_dict.safetensors: only the state_dict of
    nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), as torch's save_file would write
    it, and the network's output for two inputs, computed here in float64 for the C++ test."""
    tensors = {k: v for k, v in fixture_tensors().items() if k != "step"}
    write_safetensors(os.path.join(directory, "torch_mlp_state_dict.safetensors"), tensors,
                      {"format": "pt"})
    x = np.array([[1.0, -2.0, 0.5, 3.0], [0.25, 0.0, -1.0, 2.0]])
    hidden = np.maximum(x @ tensors["0.weight"].astype(np.float64).T
                        + tensors["0.bias"].astype(np.float64), 0)
    y = hidden @ tensors["2.weight"].astype(np.float64).T + tensors["2.bias"].astype(np.float64)
    print("expected output of the state-dict network for", x.tolist(), ":", y.tolist())


def main():
    write_state_dict_fixture(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "python_written.safetensors")
    tensors = fixture_tensors()
    metadata = {"format": "pt"}
    write_safetensors(path, tensors, metadata)
    print(f"wrote {path}")

    try:
        import safetensors
        import safetensors.numpy
    except ImportError:
        print("safetensors is not installed: skipped the cross-check")
        return 0
    loaded = safetensors.numpy.load_file(path)
    assert sorted(loaded) == sorted(tensors), loaded.keys()
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype, (name, loaded[name].dtype)
        assert loaded[name].shape == array.shape, (name, loaded[name].shape)
        assert np.array_equal(loaded[name], array), name
    with safetensors.safe_open(path, framework="numpy") as opened:
        assert opened.metadata() == metadata, opened.metadata()
    print(f"OK: safetensors {safetensors.__version__} reads it back identically")
    return 0


if __name__ == "__main__":
    sys.exit(main())
