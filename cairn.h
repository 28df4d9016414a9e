// Everything a user of cairn includes: #include <cairn/cairn.h>
#pragma once

#include "cairn/core/autograd.h"
#include "cairn/core/cuda_context.h"
#include "cairn/core/device.h"
#include "cairn/core/error.h"
#include "cairn/core/ops.h"
#include "cairn/core/tensor.h"
