#!/usr/bin/env python3
"""Writes torch_batchnorm.safetensors, what tests/blocks/norm_block_test.cpp loads into a cairn
Sequential(BatchNorm, LayerNorm): a PyTorch nn.Sequential(nn.BatchNorm2d(3), nn.LayerNorm([3, 5, 4]))
state_dict after two training steps (so the running statistics and num_batches_tracked, an I64
scalar as PyTorch keeps it, are not their initial values), under PyTorch's own names ("0.weight",
"0.running_mean", "0.num_batches_tracked", "1.weight", ...), next to
  test.input               a (2, 3, 5, 4) batch
  test.eval_output         the network's output for it in eval() mode
  test.train_output        its output in train() mode (batch statistics)
  test.running_mean_after  BatchNorm's running_mean after that training forward
  test.running_var_after   and its running_var
Usage: /work/venv/bin/python tests/data/make_torch_batchnorm_fixture.py (torch, safetensors).
Seeded; the file is committed and CI does not run this.
"""
import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    torch.manual_seed(7)
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5),
                              torch.nn.LayerNorm([3, 5, 4]))
    with torch.no_grad():
        net[0].weight.uniform_(0.5, 1.5)
        net[0].bias.uniform_(-1, 1)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-1, 1)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(4, 3, 5, 4) * 2 + 1)
    tensors = {name: value.detach().clone().contiguous() for name, value in net.state_dict().items()}
    assert tensors["0.num_batches_tracked"].dtype == torch.int64
    x = torch.randn(2, 3, 5, 4) * 3 - 0.5
    net.eval()
    with torch.no_grad():
        tensors["test.input"] = x
        tensors["test.eval_output"] = net(x).contiguous()
        net.train()
        tensors["test.train_output"] = net(x).contiguous()
        tensors["test.running_mean_after"] = net[0].running_mean.clone()
        tensors["test.running_var_after"] = net[0].running_var.clone()
    save_file(tensors, os.path.join(HERE, "torch_batchnorm.safetensors"), metadata={"format": "pt"})


if __name__ == "__main__":
    main()
