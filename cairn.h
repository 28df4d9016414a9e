// Everything a user of cairn includes: #include <cairn/cairn.h>
#pragma once

#include "cairn/blocks/block.h"
#include "cairn/blocks/checkpoint.h"
#include "cairn/blocks/data_loader.h"
#include "cairn/blocks/hybridize.h"
#include "cairn/blocks/layers.h"
#include "cairn/blocks/loss.h"
#include "cairn/blocks/optimizer.h"
#include "cairn/blocks/trainer.h"
#include "cairn/core/autograd.h"
#include "cairn/core/cuda_context.h"
#include "cairn/core/device.h"
#include "cairn/core/error.h"
#include "cairn/core/numerics.h"
#include "cairn/core/ops.h"
#include "cairn/core/tensor.h"
#include "cairn/dist/communicator.h"
