// cairn's errors live in base/error.h, below every other layer (kernels/ use them too). This
// header stays so that code written against <cairn/core/error.h> keeps compiling.
#pragma once

#include "cairn/base/error.h"
