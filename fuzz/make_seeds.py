#!/usr/bin/env python3
"""Writes the hand-made seeds in fuzz/corpus/ that reach what random mutation rarely does: deep
nesting, long headers and names, large declared sizes, gzip streams that inflate far, and the
inputs that once crashed cairn (issue 10), kept as regression seeds. libFuzzer runs every seed
before it mutates, so each CI run replays them.

    python3 fuzz/make_seeds.py        # rewrites the files; they are committed
"""
import gzip
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    path = os.path.join(ROOT, target, name)
    with open(path, "wb") as f:
        f.write(data)


def safetensors(header, data=b"", length=None):
    text = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def idx(dims, data=b""):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def main():
    # ---- safetensors ----
    # Regression (issue 10): an 80,000-deep array crashed the recursive dump() of error text.
    deep = "[" * 80000 + "]" * 80000
    write("safetensors", "crash-deep-nesting-80000", safetensors('{"a":' + deep + "}"))
    write("safetensors", "deep-metadata-1000",
          safetensors('{"__metadata__":{"k":' + "[" * 1000 + "]" * 1000 + "}}"))
    write("safetensors", "deep-objects-100", safetensors('{"a":' + '{"b":' * 100 + "1" + "}" * 101))
    # Long text: a 64 KiB tensor name with a bad dtype, a long metadata value.
    name = "n" * 65536
    write("safetensors", "long-name-64k", safetensors(json.dumps(
        {name: {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}), b"\0" * 4))
    write("safetensors", "long-metadata-value", safetensors(json.dumps(
        {"__metadata__": {"epoch": "9" * 30000}, "x": {"dtype": "F32", "shape": [1],
                                                       "data_offsets": [0, 4]}}), b"\0" * 4))
    # Large declared sizes: shapes whose products overflow, offsets at the top of uint64, a header
    # length near 2^64, a rank far beyond any tensor's.
    write("safetensors", "shape-overflows-int64", safetensors(json.dumps(
        {"x": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})))
    write("safetensors", "offsets-at-uint64-max", safetensors(json.dumps(
        {"x": {"dtype": "F32", "shape": [4611686018427387904],
               "data_offsets": [0, 18446744073709551615]}})))
    write("safetensors", "header-length-2-63", safetensors("{}", length=1 << 63))
    write("safetensors", "rank-40", safetensors(json.dumps(
        {"x": {"dtype": "F32", "shape": [1] * 40, "data_offsets": [0, 4]}}), b"\0" * 4))
    write("safetensors", "many-tensors-500", safetensors(json.dumps(
        {"t%d" % i: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
         for i in range(500)}, separators=(",", ":")), b"\0" * 2000))

    # ---- IDX ----
    # Regression (issue 10): a small gzip file whose header promises 2 GiB (the bomb inflated to
    # 2 GiB and ended in std::bad_alloc); here 1 MiB of zeros follows, about 1 KiB compressed.
    write("idx", "crash-gzip-bomb-2gib-header.gz", gz(idx([32768, 256, 256], b"\0" * (1 << 20))))
    # A stream that inflates to 8 MiB, all of it promised: large but legitimate.
    write("idx", "gzip-inflates-8mib.gz", gz(idx([8, 1024, 1024], b"\x07" * (8 << 20))))
    # Far more data than promised: the trailing bytes are counted, not kept.
    write("idx", "gzip-trailing-4mib.gz", gz(idx([4], b"abcd" + b"\0" * (4 << 20))))
    # Two gzip members back to back (zlib reads them as one stream).
    write("idx", "gzip-two-members.gz", gz(idx([2, 2]))[:] + gz(b"wxyz"))
    write("idx", "declared-huge-plain", idx([0xFFFFFFFF, 0xFFFFFFFF], b"x" * 64))
    write("idx", "declared-1gib-plain", idx([1024, 1024, 1024], b"x" * 64))


if __name__ == "__main__":
    main()
