#!/usr/bin/env python3
"""PyTorch's side of bench/cpu_cnn_epoch.sh: one epoch of the sample's LeNet or ResNet
(samples/train_fashion_mnist/models.cpp, layer for layer) on the CPU, with the same shapes, data
size and thread count as bench_cnn_epoch, and the same loop: shuffle, a uint8 batch to
standardised floats, forward, cross-entropy, backward, AdamW step, loss.item().

    torch_cnn_epoch.py --model lenet|resnet --threads N [--repeats R] [--samples 60000]
                       [--device cpu|cuda]

Prints one JSON line: {"model", "threads", "epoch_s": [wall seconds of each timed epoch]}. The
first epoch is a warm-up and is not reported.
"""
import argparse
import json
import time

import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, in_channels, channels, stride, projection):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = None
        if projection:
            self.shortcut = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        identity = self.shortcut_bn(self.shortcut(x)) if self.shortcut is not None else x
        return torch.relu(y + identity)


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def resnet():
    return nn.Sequential(
        nn.Conv2d(1, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
        nn.MaxPool2d(2), Residual(24, 24, 1, False), Residual(24, 48, 2, True),
        Residual(48, 96, 2, True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25),
        nn.Linear(96, 10))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["lenet", "resnet"], required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--samples", type=int, default=60000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = lenet() if args.model == "lenet" else resnet()
    model.to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (args.samples, 784), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (args.samples,), generator=generator)
    if args.device == "cuda":  # pinned, copied per batch, as cairn's loader does
        pixels, labels = pixels.pin_memory(), labels.pin_memory()

    def epoch():
        order = torch.randperm(args.samples, generator=generator)
        total = 0.0
        for start in range(0, args.samples, args.batch_size):
            index = order[start:start + args.batch_size]
            x = pixels[index].to(args.device, non_blocking=True)
            x = ((x.float() / 255.0 - 0.2860) / 0.3530).view(-1, 1, 28, 28)
            y = labels[index].to(args.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item()
        if args.device == "cuda":
            torch.cuda.synchronize()
        return total

    epoch()  # warm-up: allocator, oneDNN's primitive caches, the thread pool
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    print(json.dumps({"model": args.model, "threads": args.threads, "device": args.device,
                      "epoch_s": times,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
