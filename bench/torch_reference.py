#!/usr/bin/env python3
"""PyTorch reference for bench_train_step: the same training steps, on the same GPU.

MLPs 784-256-10 and 784-1024-1024-10 (Linear + ReLU, last layer plain), softmax cross-entropy
averaged over the batch, SGD with learning rate 0.1 and no momentum, batch 64, 256 and 4096;
synthetic data resident on the device (uniform inputs in [0, 1), random int64 labels). Float32
matrix products (TF32 off, as cairn's default).

Two modes, as cairn's:
  eager   forward, backward, optimizer.step() each step (zero_grad(set_to_none=True) first)
  graphs  the whole step captured once with torch.cuda.graph (static input, target, gradients;
          the recipe of PyTorch's "CUDA Graphs" notes, whole-network capture) and replayed; each
          step copies the batch into the static tensors first, as CapturedStep.run() does

Timing: torch.cuda.Event around STEPS_PER_INTERVAL steps after a warm-up; the median over
intervals of interval / steps, in microseconds. Prints one JSON document on stdout. Without torch,
or without a CUDA device, it prints a JSON document saying it skipped, and exits 0.
"""

import json
import statistics
import sys

WARMUP_STEPS = 10
STEPS_PER_INTERVAL = 50
INTERVALS = 20
LEARNING_RATE = 0.1
MLPS = {"mlp_784_256_10": [784, 256, 10], "mlp_784_1024_1024_10": [784, 1024, 1024, 10]}
BATCHES = [64, 256, 4096]


def skipped(reason):
    print(json.dumps({"skipped": reason}, indent=2))
    return 0


def build(widths, torch):
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i + 2 < len(widths):
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).cuda()


def time_steps(run_step, torch):
    for _ in range(WARMUP_STEPS):
        run_step()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    per_step_us = []
    for _ in range(INTERVALS):
        start.record()
        for _ in range(STEPS_PER_INTERVAL):
            run_step()
        stop.record()
        stop.synchronize()
        per_step_us.append(start.elapsed_time(stop) * 1e3 / STEPS_PER_INTERVAL)
    return statistics.median(per_step_us), per_step_us


def eager(widths, batch, torch):
    torch.manual_seed(42)
    model = build(widths, torch)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.rand(batch, widths[0], device="cuda")
    y = torch.randint(0, widths[-1], (batch,), device="cuda")

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    return time_steps(step, torch)


def graphs(widths, batch, torch):
    torch.manual_seed(42)
    model = build(widths, torch)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()
    data_x = torch.rand(batch, widths[0], device="cuda")
    data_y = torch.randint(0, widths[-1], (batch,), device="cuda")
    static_x = data_x.clone()
    static_y = data_y.clone()

    # Warm up on a side stream (PyTorch's recipe), then capture the whole step.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(static_x), static_y).backward()
            optimizer.step()
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = loss_fn(model(static_x), static_y)
        static_loss.backward()
        optimizer.step()

    def step():
        static_x.copy_(data_x)
        static_y.copy_(data_y)
        graph.replay()

    return time_steps(step, torch)


def main():
    try:
        import torch
    except Exception as error:  # ImportError, or a broken install
        return skipped(f"torch not importable: {error}")
    if not torch.cuda.is_available():
        return skipped(f"no CUDA device visible to torch {torch.__version__}")

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results = []
    for name, widths in MLPS.items():
        for batch in BATCHES:
            for mode, run in (("eager", eager), ("graphs", graphs)):
                try:
                    median_us, samples = run(widths, batch, torch)
                    results.append({"mlp": name, "batch": batch, "mode": mode,
                                    "us_per_step": median_us,
                                    "min_us": min(samples), "max_us": max(samples)})
                except Exception as error:  # report, keep going
                    results.append({"mlp": name, "batch": batch, "mode": mode,
                                    "error": f"{type(error).__name__}: {error}"})
                print(f"torch {name} batch {batch} {mode}: {results[-1]}", file=sys.stderr)
    print(json.dumps({
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tf32": False,
        "steps_per_interval": STEPS_PER_INTERVAL,
        "intervals": INTERVALS,
        "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
