#!/usr/bin/env python3
"""Turns bench/results/raw/*.json into one markdown report of ratios against the issue's targets.

  python3 bench/compare.py --raw bench/results/raw --out bench/results/<name>.md \
      --device "NVIDIA H100 80GB HBM3" --commit abc1234 [--dirty] [--cpu-only]

Inputs (any may be missing; what is missing is reported as not measured):
  kernels.json, gemm.json, train_step.json   Google Benchmark --benchmark_format=json output
  torch.json                                 bench/torch_reference.py's output

Only the standard library: it runs wherever the benchmarks do.
"""

import argparse
import datetime
import json
import os
import re
import sys

TARGETS = {
    "eager_vs_torch": 0.5,     # cairn eager step time / PyTorch eager step time, at most
    "graph_vs_torch": 1.0,     # cairn hybridized / PyTorch with CUDA graphs, at most
    "of_copy_bw": 0.85,        # elementwise kernels on 2^28 floats, at least
    "dense_of_cublas": 0.95,   # Dense 8192^3 within 5% of raw cuBLAS, at least
}
TARGET_SHAPE_ROWS = 1 << 18  # rows:262144/cols:1024 is 2^28 floats
MLP_NAMES = ["mlp_784_256_10", "mlp_784_1024_1024_10"]


def load(path):
    if not os.path.exists(path):
        return None, f"{os.path.basename(path)} missing"
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, ValueError) as error:
        return None, f"{os.path.basename(path)} unreadable: {error}"


def runs(doc):
    """Google Benchmark runs keyed by run_name: the median aggregate when there are repetitions,
    else the single run; errored runs keep their message."""
    out = {}
    if not doc:
        return out
    for b in doc.get("benchmarks", []):
        name = b.get("run_name", b.get("name", ""))
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                out[name] = b
            continue
        if name in out and out[name].get("run_type") == "aggregate":
            continue
        if name not in out or b.get("error_occurred"):
            out[name] = b
    return out


def fmt(value, digits=3):
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def status(value, target, at_most):
    if value is None:
        return "not measured"
    ok = value <= target if at_most else value >= target
    return "**met**" if ok else "**missed**"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |")
    return "\n".join(lines)


def params(name):
    """'BM_x/rows:256/cols:10/manual_time' -> ('BM_x', {'rows': '256', 'cols': '10'}, rest)"""
    parts = name.split("/")
    kv, rest = {}, []
    for p in parts[1:]:
        if ":" in p:
            k, v = p.split(":", 1)
            kv[k] = v
        elif p not in ("manual_time", "real_time"):
            rest.append(p)
    return parts[0], kv, rest


def errors_of(all_runs):
    bad = [(n, r.get("error_message", "")) for n, r in all_runs.items() if r.get("error_occurred")]
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="unknown")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--dirty", action="store_true")
    ap.add_argument("--cpu-only", action="store_true")
    args = ap.parse_args()

    docs, problems = {}, []
    for key in ("kernels", "gemm", "train_step", "torch"):
        doc, problem = load(os.path.join(args.raw, f"{key}.json"))
        docs[key] = doc
        if problem:
            problems.append(problem)
    kernels, gemm, train = runs(docs["kernels"]), runs(docs["gemm"]), runs(docs["train_step"])
    torch_doc = docs["torch"] or {}

    out = []
    title = "CPU-only run (no GPU)" if args.cpu_only else args.device
    out.append(f"# cairn speed report: {title}, commit {args.commit}"
               + (" (with uncommitted changes)" if args.dirty else ""))
    out.append("")
    out.append(f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by "
               "`bash bench/run_all.sh`. Method and targets: `docs/performance.md`.")
    context = (docs["kernels"] or docs["train_step"] or docs["gemm"] or {}).get("context", {})
    if context:
        out.append("")
        out.append(f"- device (cairn): {context.get('cuda_device', 'unknown')}")
        out.append(f"- host: {context.get('host_name', '?')}, {context.get('num_cpus', '?')} CPUs "
                   f"at {context.get('mhz_per_cpu', '?')} MHz; Google Benchmark library built as "
                   f"{context.get('library_build_type', '?')} (its own build; cairn is Release)")
    if args.cpu_only:
        out.append("")
        out.append("> **CPU-only.** No GPU was visible (`nvidia-smi` absent or failing), so every "
                   "GPU benchmark was skipped and none of the issue's targets is measured here. "
                   "The CPU numbers below only show that the command works end to end; run "
                   "`bash bench/run_all.sh` on a GPU machine for the real report.")
    if "skipped" in torch_doc:
        out.append("")
        out.append(f"- PyTorch reference skipped: {torch_doc['skipped']}")
    elif torch_doc:
        out.append(f"- PyTorch reference: torch {torch_doc.get('torch')} (CUDA "
                   f"{torch_doc.get('cuda')}) on {torch_doc.get('device')}, TF32 "
                   f"{'on' if torch_doc.get('tf32') else 'off'}")
    for problem in problems:
        out.append(f"- input {problem}")

    # ---- torch reference lookup ----
    torch_us = {}
    for r in torch_doc.get("results", []):
        if "us_per_step" in r:
            torch_us[(r["mlp"], r["batch"], r["mode"])] = r["us_per_step"]

    def step_us(kind, mlp, batch):
        base = f"BM_{kind}/{mlp}/batch:{batch}"
        r = train.get(f"{base}/manual_time") or train.get(f"{base}/real_time") or train.get(base)
        if not r or r.get("error_occurred"):
            return None, r
        return r.get("us_per_step"), r

    # ---- targets ----
    rows = []
    e_us, _ = step_us("gpu_train_step_eager", "mlp_784_256_10", 256)
    h_us, h_run = step_us("gpu_train_step_hybridized", "mlp_784_256_10", 256)
    te = torch_us.get(("mlp_784_256_10", 256, "eager"))
    tg = torch_us.get(("mlp_784_256_10", 256, "graphs"))
    ratio_e = e_us / te if e_us and te else None
    ratio_g = h_us / tg if h_us and tg else None
    rows.append(["training step 784-256-10, batch 256: cairn eager / PyTorch eager",
                 f"<= {TARGETS['eager_vs_torch']}", ratio_e,
                 status(ratio_e, TARGETS["eager_vs_torch"], True)])
    captured_note = ""
    if h_run and not h_run.get("error_occurred") and h_run.get("captured", 1) == 0:
        captured_note = f" (stayed eager: {h_run.get('label', '')})"
    rows.append(["training step 784-256-10, batch 256: cairn hybridized / PyTorch CUDA graphs",
                 f"<= {TARGETS['graph_vs_torch']}", ratio_g,
                 status(ratio_g, TARGETS["graph_vs_torch"], True) + captured_note])
    for kernel in ("relu_forward", "relu_backward", "bias_add", "add", "mul"):
        r = kernels.get(f"BM_gpu_{kernel}/rows:{TARGET_SHAPE_ROWS}/cols:1024/manual_time")
        v = r.get("of_copy_bw") if r and not r.get("error_occurred") else None
        rows.append([f"{kernel} on 2^28 floats: GB/s / device copy GB/s",
                     f">= {TARGETS['of_copy_bw']}", v, status(v, TARGETS["of_copy_bw"], False)])
    for precision in ("f32", "tf32"):
        r = gemm.get(f"BM_gpu_dense_{precision}/m:8192/k:8192/n:8192/manual_time")
        v = r.get("of_cublas") if r and not r.get("error_occurred") else None
        rows.append([f"Dense 8192^3 ({precision}): cairn TFLOP/s / raw cuBLAS TFLOP/s",
                     f">= {TARGETS['dense_of_cublas']}", v,
                     status(v, TARGETS["dense_of_cublas"], False)])
    out += ["", "## The issue's targets", "",
            table(["target", "goal", "measured", "status"], rows)]

    # ---- training steps ----
    rows = []
    for mlp in MLP_NAMES:
        for batch in (64, 256, 4096):
            e, _ = step_us("gpu_train_step_eager", mlp, batch)
            h, hr = step_us("gpu_train_step_hybridized", mlp, batch)
            c, _ = step_us("cpu_train_step_eager", mlp, batch)
            te = torch_us.get((mlp, batch, "eager"))
            tg = torch_us.get((mlp, batch, "graphs"))
            captured = None
            if hr and not hr.get("error_occurred"):
                captured = "yes" if hr.get("captured") == 1 else "no"
            rows.append([mlp.replace("mlp_", "").replace("_", "-"), str(batch), e, te,
                         e / te if e and te else None, h, tg, h / tg if h and tg else None,
                         captured or "–", c])
    out += ["", "## Training step (microseconds per step, median)", "",
            "Forward, softmax cross-entropy, backward, SGD step; ratios are cairn time / "
            "PyTorch time (lower is better for cairn).", "",
            table(["MLP", "batch", "cairn eager", "torch eager", "ratio", "cairn graph",
                   "torch graphs", "ratio", "captured", "cairn CPU eager"], rows)]

    # ---- kernels ----
    rows = []
    for name, r in kernels.items():
        base, kv, _ = params(name)
        if not base.startswith("BM_gpu_") or r.get("error_occurred"):
            continue
        rows.append([base[len("BM_gpu_"):], f"{kv.get('rows')} x {kv.get('cols')}", r.get("us"),
                     r.get("GBps"), r.get("copy_GBps"), r.get("of_copy_bw"), r.get("sets")])
    if rows:
        out += ["", "## GPU kernels (raw launchers) against a device-to-device copy", "",
                "Bytes: each input read once, each output written once. `of_copy_bw` = kernel "
                "GB/s / cudaMemcpyAsync GB/s for the same bytes, same process. `sets`: input sets "
                "rotated so that launches do not hit in L2.", "",
                table(["kernel", "shape", "us", "GB/s", "copy GB/s", "of_copy_bw", "sets"], rows)]

    # ---- gemm ----
    rows = []
    for name, r in gemm.items():
        base, kv, _ = params(name)
        if not base.startswith("BM_gpu_") or r.get("error_occurred"):
            continue
        rows.append([base[len("BM_gpu_"):], f"{kv.get('m')} x {kv.get('k')} -> {kv.get('n')}",
                     r.get("us"), r.get("TFLOPs"), r.get("cublas_TFLOPs"), r.get("of_cublas")])
    if rows:
        out += ["", "## Matrix products against raw cublasSgemm (same handle, stream, shape)", "",
                "y (m, n) = x (m, k) W^T. `of_cublas` = cairn TFLOP/s / raw cuBLAS TFLOP/s.", "",
                table(["op", "m x k -> n", "us", "TFLOP/s", "cuBLAS TFLOP/s", "of_cublas"], rows)]

    # ---- CPU ----
    rows = []
    for doc_name, group in (("kernels", kernels), ("gemm", gemm), ("train_step", train)):
        for name, r in group.items():
            base, kv, rest = params(name)
            if not base.startswith("BM_cpu_") or r.get("error_occurred"):
                continue
            shape = ", ".join(rest + [f"{k}={v}" for k, v in kv.items()])
            counters = []
            for key in ("us", "GBps", "memcpy_GBps", "of_memcpy_bw", "GFLOPs", "us_per_step"):
                if key in r:
                    counters.append(f"{key} {fmt(r[key])}")
            rows.append([base[len("BM_cpu_"):], shape,
                         f"{fmt(r.get('real_time'))} {r.get('time_unit', '')}",
                         "; ".join(counters)])
    if rows:
        out += ["", "## CPU (the plain C++ twins; wall clock)", "",
                "Labelled CPU: these say nothing about the GPU targets. Kernels are held "
                "against memcpy of the same bytes.", "",
                table(["benchmark", "shape", "time", "counters"], rows)]

    # ---- skipped ----
    skipped = errors_of(kernels) + errors_of(gemm) + errors_of(train)
    if skipped:
        messages = {}
        for name, message in skipped:
            messages.setdefault(message, []).append(name)
        out += ["", "## Skipped or failed", ""]
        for message, names in messages.items():
            out.append(f"- {len(names)} benchmark(s): {message}")
            if len(names) <= 5:
                for n in names:
                    out.append(f"  - `{n}`")

    text = "\n".join(out) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
