#!/usr/bin/env python3
"""Writes torch_cnn_state_dict.safetensors and torch_cnn_io.safetensors with PyTorch itself.

The network is the kind cairn's users bring: convolutions (padded, strided, grouped, without
bias), batch normalisation, max and average pooling, dropout, flatten, linear layers and a layer
norm, trained for a few steps so that the running statistics and num_batches_tracked (int64, as
PyTorch writes it) are not their initial values. The state_dict file is exactly what
safetensors.torch.save_file(model.state_dict()) writes; the io file holds an input batch, the
network's outputs for it in eval mode, and, after one more forward in train mode, the outputs and
the first BatchNorm's updated running statistics. tests/blocks/torch_cnn_test.cpp builds the same
network in cairn layer for layer, loads the state_dict and compares.

    python3 tests/data/make_torch_cnn_fixture.py tests/data    # needs torch and safetensors
"""
import os
import sys

import torch
from safetensors.torch import save_file
from torch import nn


def network():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),                            # 0
        nn.BatchNorm2d(6),                                        # 1
        nn.ReLU(),                                                # 2
        nn.MaxPool2d(2),                                          # 3
        nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2, bias=False),  # 4
        nn.BatchNorm2d(8),                                        # 5
        nn.ReLU(),                                                # 6
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),  # 7
        nn.Dropout(0.25),                                         # 8
        nn.Flatten(),                                             # 9
        nn.Linear(8 * 4 * 4, 16),                                 # 10
        nn.LayerNorm(16),                                         # 11
        nn.ReLU(),                                                # 12
        nn.Linear(16, 10),                                        # 13
    )


def main(directory):
    torch.manual_seed(20)
    model = network()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(5):
        x = torch.randn(8, 1, 28, 28)
        y = torch.randint(0, 10, (8,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    state = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, os.path.join(directory, "torch_cnn_state_dict.safetensors"))

    x = torch.randn(3, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        eval_output = model(x)
    # One training-mode forward: batch statistics, and the running statistics move by momentum
    # 0.1 with the unbiased batch variance. Dropout is off for it (p = 0), so that the output does
    # not depend on PyTorch's generator.
    model.train()
    model[8].p = 0.0
    with torch.no_grad():
        train_output = model(x)
    save_file(
        {
            "input": x.contiguous(),
            "eval_output": eval_output.contiguous(),
            "train_output": train_output.contiguous(),
            "train_running_mean_1": model[1].running_mean.clone().contiguous(),
            "train_running_var_1": model[1].running_var.clone().contiguous(),
        },
        os.path.join(directory, "torch_cnn_io.safetensors"),
        metadata={"torch": torch.__version__},
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
