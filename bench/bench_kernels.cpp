// The hand-written kernels, through their raw launchers (kernels/*.h) on cairn's stream, against a
// device-to-device copy of the same number of bytes measured in the same process.
//
// Bytes are the fewest a kernel must move: each input read once, each output written once (CUB's
// and the column sum's scratch traffic is not counted: it is overhead the ratio should show).
// "of_copy_bw" = kernel GB/s / copy GB/s; the target for ReLU, bias add and the
// elementwise maps on 2^28 floats is >= 0.85. Every GPU benchmark rotates among enough input sets
// to span three L2 caches (see bench_support.h), so small shapes measure device memory too.
//
// The BM_cpu_* benchmarks are the plain C++ twins (kernels/cpu), timed by wall clock against
// memcpy: labelled CPU, so that the program says something useful on a machine without a GPU.
#include <chrono>
#include <cstring>
#include <random>

#include "bench_support.h"
#include "cairn/kernels/dropout.h"
#include "cairn/kernels/elementwise.h"
#include "cairn/kernels/norm.h"
#include "cairn/kernels/optimizer.h"
#include "cairn/kernels/pool.h"
#include "cairn/kernels/reduce.h"
#include "cairn/kernels/softmax.h"

namespace cairn::bench {
namespace {

namespace kc = kernels::cuda;
using kernels::Accumulate;
using kernels::BinaryOp;
using kernels::Broadcast;
using kernels::ReduceOp;
using kernels::UnaryOp;

constexpr int64_t kF = int64_t(sizeof(float));

// `count` device tensors of `shape`, uniform in [low, high), each with its own seed: never zeros.
std::vector<Tensor> device_sets(int count, const Shape& shape, uint64_t seed, float low = -1.0f,
                                float high = 1.0f) {
  std::vector<Tensor> sets;
  for (int i = 0; i < count; ++i) {
    sets.push_back(Tensor::uniform(shape, low, high, seed * 7919 + uint64_t(i), gpu()));
  }
  return sets;
}

std::vector<Tensor> empty_sets(int count, const Shape& shape) {
  std::vector<Tensor> sets;
  for (int i = 0; i < count; ++i) sets.push_back(Tensor::empty(shape, gpu()));
  return sets;
}

// Runs one GPU kernel benchmark: copy reference, input sets (made by `prepare` for the rotation),
// timing, counters.
void gpu_kernel(benchmark::State& state, int64_t bytes, int64_t footprint,
                const std::function<std::function<void(int, cudaStream_t)>(int sets)>& prepare) {
  if (skip_without_cuda(state)) return;
  ReleaseCacheAtExit release;
  guarded(state, [&] {
    const double copy = copy_gbps(bytes);
    const Rotation rotation = rotation_for(footprint);
    const auto launch = prepare(rotation.sets);
    const std::vector<double> per_launch = time_launches(state, rotation, launch);
    report_bandwidth(state, bytes, rotation, per_launch, copy);
  });
}

int64_t rows_of(const benchmark::State& state) { return state.range(0); }
int64_t cols_of(const benchmark::State& state) { return state.range(1); }

// ---- GPU ----

void BM_gpu_relu_forward(benchmark::State& state) {
  const int64_t n = rows_of(state) * cols_of(state);
  gpu_kernel(state, 2 * n * kF, 2 * n * kF, [&](int sets) {
    auto x = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 1));
    auto y = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {n}));
    return [=](int s, cudaStream_t stream) {
      kc::unary(UnaryOp::kRelu, (*x)[size_t(s)].data(), (*y)[size_t(s)].data(), n, stream);
    };
  });
}

void BM_gpu_relu_backward(benchmark::State& state) {
  const int64_t n = rows_of(state) * cols_of(state);
  gpu_kernel(state, 3 * n * kF, 3 * n * kF, [&](int sets) {
    auto x = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 2));
    auto dy = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 3));
    auto dx = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {n}));
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::unary_backward(UnaryOp::kRelu, (*x)[i].data(), nullptr, (*dy)[i].data(), (*dx)[i].data(),
                         n, stream);
    };
  });
}

// x: (rows, cols), bias: (cols) -> y: (rows, cols)
void BM_gpu_bias_add(benchmark::State& state) {
  const int64_t rows = rows_of(state), cols = cols_of(state), n = rows * cols;
  const int64_t bytes = (2 * n + cols) * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto x = std::make_shared<std::vector<Tensor>>(device_sets(sets, {rows, cols}, 4));
    auto b = std::make_shared<std::vector<Tensor>>(device_sets(sets, {cols}, 5));
    auto y = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {rows, cols}));
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::binary(BinaryOp::kAdd, (*x)[i].data(), (*b)[i].data(), (*y)[i].data(), rows, cols,
                 Broadcast::kRow, stream);
    };
  });
}

void gpu_binary_same_shape(benchmark::State& state, BinaryOp op) {
  const int64_t rows = rows_of(state), cols = cols_of(state), n = rows * cols;
  gpu_kernel(state, 3 * n * kF, 3 * n * kF, [&](int sets) {
    auto a = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 6));
    auto b = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 7));
    auto y = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {n}));
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::binary(op, (*a)[i].data(), (*b)[i].data(), (*y)[i].data(), rows, cols, Broadcast::kNone,
                 stream);
    };
  });
}
void BM_gpu_add(benchmark::State& state) { gpu_binary_same_shape(state, BinaryOp::kAdd); }
void BM_gpu_mul(benchmark::State& state) { gpu_binary_same_shape(state, BinaryOp::kMul); }

void BM_gpu_fill(benchmark::State& state) {
  const int64_t n = rows_of(state) * cols_of(state);
  gpu_kernel(state, n * kF, n * kF, [&](int sets) {
    auto y = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {n}));
    return [=](int s, cudaStream_t stream) { kc::fill((*y)[size_t(s)].data(), n, 0.5f, stream); };
  });
}

// x: (rows, cols) -> (cols): the bias gradient.
void BM_gpu_sum_columns(benchmark::State& state) {
  const int64_t rows = rows_of(state), cols = cols_of(state), n = rows * cols;
  const int64_t bytes = (n + cols) * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto x = std::make_shared<std::vector<Tensor>>(device_sets(sets, {rows, cols}, 8));
    auto out = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {cols}));
    const size_t ws_bytes = kc::sum_columns_workspace_bytes(rows, cols);
    auto ws = std::make_shared<Tensor>(
        Tensor::empty({std::max<int64_t>(1, int64_t(ws_bytes + 3) / 4)}, gpu()));
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::sum_columns((*x)[i].data(), rows, cols, (*out)[i].data(), Accumulate::kOverwrite,
                      ws->data(), ws_bytes, stream);
    };
  });
}

void BM_gpu_reduce_all_sum(benchmark::State& state) {
  const int64_t n = rows_of(state) * cols_of(state);
  const int64_t bytes = (n + 1) * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto x = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 9));
    auto out = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {1}));
    const size_t ws_bytes = kc::reduce_all_workspace_bytes(ReduceOp::kSum, n);
    auto ws = std::make_shared<Tensor>(
        Tensor::empty({std::max<int64_t>(1, int64_t(ws_bytes + 3) / 4)}, gpu()));
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::reduce_all(ReduceOp::kSum, (*x)[i].data(), n, (*out)[i].data(), ws->data(), ws_bytes,
                     stream);
    };
  });
}

Tensor random_labels(int64_t rows, int64_t classes, uint64_t seed, const Device& device) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(classes - 1));
  std::vector<int32_t> labels(static_cast<size_t>(rows));
  for (int32_t& label : labels) label = pick(rng);
  return Tensor::from_int32(labels, {rows}, device);
}

// logits: (rows, cols), labels: (rows) -> loss: (rows), probs: (rows, cols)
void BM_gpu_softmax_xent_forward(benchmark::State& state) {
  const int64_t rows = rows_of(state), cols = cols_of(state), n = rows * cols;
  const int64_t bytes = (2 * n + 2 * rows) * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto logits = std::make_shared<std::vector<Tensor>>(device_sets(sets, {rows, cols}, 10, -4, 4));
    auto labels = std::make_shared<std::vector<Tensor>>();
    for (int s = 0; s < sets; ++s) labels->push_back(random_labels(rows, cols, 11 + s, gpu()));
    auto loss = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {rows}));
    auto probs = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {rows, cols}));
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::softmax_xent_forward((*logits)[i].data(), (*labels)[i].data_int32(), rows, cols,
                               (*loss)[i].data(), (*probs)[i].data(), stream);
    };
  });
}

void gpu_sgd(benchmark::State& state, float momentum) {
  const int64_t n = rows_of(state) * cols_of(state);
  // w read + written, grad read; the velocity read + written when there is momentum.
  const int64_t bytes = (momentum > 0 ? 5 : 3) * n * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto w = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 12));
    auto g = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 13));
    auto v = std::make_shared<std::vector<Tensor>>(
        momentum > 0 ? device_sets(sets, {n}, 14, -0.1f, 0.1f) : std::vector<Tensor>{});
    kernels::SgdConfig config;
    config.learning_rate = 1e-3f;  // small: rotated weights stay finite over many launches
    config.momentum = momentum;
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::sgd_update((*w)[i].data(), (*g)[i].data(), v->empty() ? nullptr : (*v)[i].data(), n,
                     config, stream);
    };
  });
}
void BM_gpu_sgd_update(benchmark::State& state) { gpu_sgd(state, 0.0f); }
void BM_gpu_sgd_momentum_update(benchmark::State& state) { gpu_sgd(state, 0.9f); }

void BM_gpu_adam_update(benchmark::State& state) {
  const int64_t n = rows_of(state) * cols_of(state);
  const int64_t bytes = 7 * n * kF;  // w, mean, variance read + written; grad read
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto w = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 15));
    auto g = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 16));
    auto m = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 17, -0.1f, 0.1f));
    auto v = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 18, 0.0f, 0.1f));
    kernels::AdamConfig config;
    config.step = 10;
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::adam_update((*w)[i].data(), (*g)[i].data(), (*m)[i].data(), (*v)[i].data(), n, config,
                      stream);
    };
  });
}

// Batch norm, training forward: the per-channel statistics (with the running update) and the
// normalised output. x: (N, C, S) read once, y written once: 2 n floats at the least (the
// statistics kernel reads x twice, from L2 where a channel fits).
void BM_gpu_batch_norm_train_forward(benchmark::State& state) {
  const kernels::BatchNormShape shape{state.range(0), state.range(1), state.range(2)};
  const int64_t n = shape.elements(), C = shape.channels;
  const int64_t bytes = 2 * n * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto x = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 40, -2, 3));
    auto y = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {n}));
    auto stats = std::make_shared<std::vector<Tensor>>(empty_sets(4, {C}));
    auto wb = std::make_shared<std::vector<Tensor>>(device_sets(2, {C}, 41, 0.5f, 1.5f));
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      float* mean = (*stats)[0].data();
      float* var = (*stats)[1].data();
      kc::batch_norm_statistics((*x)[i].data(), shape, 0.1f, mean, var, (*stats)[2].data(),
                                (*stats)[3].data(), stream);
      kc::batch_norm_forward((*x)[i].data(), shape, mean, var, (*wb)[0].data(), (*wb)[1].data(),
                             1e-5f, (*y)[i].data(), stream);
    };
  });
}

// Batch norm backward through the batch statistics: x and dy read (twice: the reduction, then
// dx), dx written; counted at the least, 3 n floats.
void BM_gpu_batch_norm_backward(benchmark::State& state) {
  const kernels::BatchNormShape shape{state.range(0), state.range(1), state.range(2)};
  const int64_t n = shape.elements(), C = shape.channels;
  const int64_t bytes = 3 * n * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto x = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 42, -2, 3));
    auto dy = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 43));
    auto dx = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {n}));
    auto per_channel = std::make_shared<std::vector<Tensor>>(device_sets(5, {C}, 44, 0.5f, 1.5f));
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      const auto& pc = *per_channel;
      kc::batch_norm_backward_reduce((*x)[i].data(), (*dy)[i].data(), shape, pc[0].data(),
                                     pc[1].data(), 1e-5f, pc[3].data(), pc[4].data(), stream);
      kc::batch_norm_backward_input((*x)[i].data(), (*dy)[i].data(), shape, pc[0].data(),
                                    pc[1].data(), pc[2].data(), pc[3].data(), pc[4].data(), 1e-5f,
                                    kernels::NormStatistics::kBatch, (*dx)[i].data(), stream);
    };
  });
}

// Layer norm forward: x read, y written, the row statistics written: (2 n + 2 rows) floats.
void BM_gpu_layer_norm_forward(benchmark::State& state) {
  const int64_t rows = rows_of(state), cols = cols_of(state), n = rows * cols;
  const int64_t bytes = (2 * n + 2 * rows) * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto x = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 45, -2, 3));
    auto y = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {n}));
    auto stats = std::make_shared<std::vector<Tensor>>(empty_sets(2, {rows}));
    auto wb = std::make_shared<std::vector<Tensor>>(device_sets(2, {cols}, 46, 0.5f, 1.5f));
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::layer_norm_forward((*x)[i].data(), rows, cols, (*wb)[0].data(), (*wb)[1].data(), 1e-5f,
                             (*y)[i].data(), (*stats)[0].data(), (*stats)[1].data(), stream);
    };
  });
}

// The reference on its own line of the report: the copy alone, same byte counts as the
// elementwise add (3 n floats moved).
void BM_gpu_copy_reference(benchmark::State& state) {
  const int64_t n = rows_of(state) * cols_of(state);
  if (skip_without_cuda(state)) return;
  ReleaseCacheAtExit release;
  guarded(state, [&] {
    const int64_t half = 3 * n * kF / 2 / 4 * 4;
    const Rotation rotation = rotation_for(2 * half);
    std::vector<Tensor> src = device_sets(rotation.sets, {half / 4}, 19);
    std::vector<Tensor> dst = empty_sets(rotation.sets, {half / 4});
    const std::vector<double> per_launch =
        time_launches(state, rotation, [&](int s, cudaStream_t stream) {
          CAIRN_CUDA_CHECK(cudaMemcpyAsync(dst[size_t(s)].data(), src[size_t(s)].data(),
                                           size_t(half), cudaMemcpyDeviceToDevice, stream));
        });
    const double t = median(per_launch);
    state.SetBytesProcessed(int64_t(state.iterations()) * rotation.reps * 2 * half);
    state.counters["us"] = t * 1e6;
    state.counters["GBps"] = double(2 * half) / t * 1e-9;
    state.counters["bytes"] = double(2 * half);
    state.counters["sets"] = rotation.sets;
  });
}

// ---- Pooling and dropout ----

// (planes, side, side) -> pooled with a square kernel/stride/padding: the bench's args.
kernels::Pool2DGeometry pool_geometry(const benchmark::State& state) {
  kernels::Pool2DGeometry g;
  g.planes = state.range(0);
  g.in_h = g.in_w = state.range(1);
  g.kernel_h = g.kernel_w = state.range(2);
  g.stride_h = g.stride_w = state.range(3);
  g.pad_h = g.pad_w = state.range(4);
  g.out_h = g.out_w = kernels::pool_output_size(g.in_h, g.kernel_h, g.stride_h, g.pad_h, false);
  return g;
}
int64_t pool_inputs(const kernels::Pool2DGeometry& g) { return g.planes * g.in_h * g.in_w; }
int64_t pool_outputs(const kernels::Pool2DGeometry& g) { return g.planes * g.out_h * g.out_w; }

// x read once, y and the int32 argmax written once (overlapping windows re-read x from cache).
void BM_gpu_max_pool2d_forward(benchmark::State& state) {
  const kernels::Pool2DGeometry g = pool_geometry(state);
  const int64_t bytes = (pool_inputs(g) + 2 * pool_outputs(g)) * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto x = std::make_shared<std::vector<Tensor>>(device_sets(sets, {pool_inputs(g)}, 20));
    auto y = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {pool_outputs(g)}));
    auto arg = std::make_shared<std::vector<Tensor>>();
    for (int s = 0; s < sets; ++s) {
      arg->push_back(Tensor::empty({pool_outputs(g)}, gpu(), DType::kInt32));
    }
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::max_pool2d_forward((*x)[i].data(), g, (*y)[i].data(), (*arg)[i].data_int32(), stream);
    };
  });
}

// dy and argmax read, dx written.
void BM_gpu_max_pool2d_backward(benchmark::State& state) {
  const kernels::Pool2DGeometry g = pool_geometry(state);
  const int64_t bytes = (2 * pool_outputs(g) + pool_inputs(g)) * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto dy = std::make_shared<std::vector<Tensor>>(device_sets(sets, {pool_outputs(g)}, 21));
    auto dx = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {pool_inputs(g)}));
    auto arg = std::make_shared<std::vector<Tensor>>();
    for (int s = 0; s < sets; ++s) {
      // Real argmaxes, from a forward over random inputs.
      const Tensor x = Tensor::uniform({pool_inputs(g)}, -1.0f, 1.0f, 22 + uint64_t(s), gpu());
      const Tensor y = Tensor::empty({pool_outputs(g)}, gpu());
      arg->push_back(Tensor::empty({pool_outputs(g)}, gpu(), DType::kInt32));
      kc::max_pool2d_forward(x.data(), g, y.data(), arg->back().data_int32(),
                             cuda::current_stream(gpu()));
    }
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::max_pool2d_backward((*dy)[i].data(), (*arg)[i].data_int32(), g, (*dx)[i].data(), stream);
    };
  });
}

void BM_gpu_avg_pool2d_forward(benchmark::State& state) {
  const kernels::Pool2DGeometry g = pool_geometry(state);
  const int64_t bytes = (pool_inputs(g) + pool_outputs(g)) * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto x = std::make_shared<std::vector<Tensor>>(device_sets(sets, {pool_inputs(g)}, 23));
    auto y = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {pool_outputs(g)}));
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::avg_pool2d_forward((*x)[i].data(), g, kernels::AvgDivisor::kIncludePadding,
                             (*y)[i].data(), stream);
    };
  });
}

void BM_gpu_avg_pool2d_backward(benchmark::State& state) {
  const kernels::Pool2DGeometry g = pool_geometry(state);
  const int64_t bytes = (pool_outputs(g) + pool_inputs(g)) * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto dy = std::make_shared<std::vector<Tensor>>(device_sets(sets, {pool_outputs(g)}, 24));
    auto dx = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {pool_inputs(g)}));
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::avg_pool2d_backward((*dy)[i].data(), g, kernels::AvgDivisor::kIncludePadding,
                              (*dx)[i].data(), stream);
    };
  });
}

// x read, y and the mask written; then the one-thread advance of the state (counted in the time:
// it is part of every dropout call).
void BM_gpu_dropout(benchmark::State& state) {
  const int64_t n = rows_of(state) * cols_of(state);
  const int64_t bytes = 3 * n * kF;
  gpu_kernel(state, bytes, bytes, [&](int sets) {
    auto x = std::make_shared<std::vector<Tensor>>(device_sets(sets, {n}, 25));
    auto y = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {n}));
    auto mask = std::make_shared<std::vector<Tensor>>(empty_sets(sets, {n}));
    auto generator = std::make_shared<DropoutGenerator>(26);
    int32_t* state_words = generator->state(gpu()).data_int32();
    return [=](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      kc::dropout((*x)[i].data(), n, 0.5f, 2.0f, state_words, (*y)[i].data(), (*mask)[i].data(),
                  stream);
      kc::advance_dropout_state(state_words, n, stream);
    };
  });
}

void pool_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"planes", "side", "kernel", "stride", "pad"});
  // ResNet's stem pool (64 channels of 112x112, batch 32) and a 2x2 pool of 128 x 56x56 maps.
  b->Args({32 * 64, 112, 3, 2, 1})->Args({32 * 128, 56, 2, 2, 0});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

void elementwise_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols"});
  b->Args({256, 256})->Args({4096, 1024})->Args({int64_t(1) << 18, 1024});  // the last: 2^28
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}
void softmax_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols"});
  b->Args({256, 10})->Args({4096, 10})->Args({int64_t(1) << 18, 1024});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}
void batch_norm_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "C", "S"});
  // A ResNet stage (N 256, C 64, 56 x 56), an MLP's (N 4096, C 1024), few wide channels.
  b->Args({256, 64, 56 * 56})->Args({4096, 1024, 1})->Args({32, 8, 1 << 16});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}
void layer_norm_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols"});
  // Transformer rows (768, 1024 on the warp path; 4096 on the block path).
  b->Args({8192, 768})->Args({16384, 1024})->Args({4096, 4096});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}
void optimizer_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols"});
  // MLP weights (256 x 784, 1024 x 1024), then 2^28 parameters.
  b->Args({256, 784})->Args({1024, 1024})->Args({int64_t(1) << 18, 1024});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

// ---- conv2d (ops::conv2d: im2col + cuBLAS + layout pass), compute-bound: GFLOP/s, not bandwidth ----

// x: (n, c, h, h), weight: (k, c, r, r), stride, padding; one input set (no rotation: the GEMMs,
// not memory, set the time).
ops::Conv2DParams conv_params(const benchmark::State& state) {
  ops::Conv2DParams p;
  p.stride_h = p.stride_w = state.range(5);
  p.pad_h = p.pad_w = state.range(6);
  return p;
}

void gpu_conv(benchmark::State& state, bool backward) {
  if (skip_without_cuda(state)) return;
  ReleaseCacheAtExit release;
  guarded(state, [&] {
    const int64_t n = state.range(0), c = state.range(1), h = state.range(2), k = state.range(3),
                  r = state.range(4);
    const ops::Conv2DParams params = conv_params(state);
    Tensor x = Tensor::uniform({n, c, h, h}, -1.0f, 1.0f, 31, gpu());
    Tensor w = Tensor::uniform({k, c, r, r}, -1.0f, 1.0f, 32, gpu());
    Tensor b = Tensor::uniform({k}, -1.0f, 1.0f, 33, gpu());
    if (backward) {
      x.attach_grad();
      w.attach_grad();
      b.attach_grad();
    }
    const int64_t p = (h + 2 * params.pad_h - r) / params.stride_h + 1;
    const Tensor head = Tensor::uniform({n, k, p, p}, -1.0f, 1.0f, 34, gpu());
    const Rotation rotation{1, 10};
    const std::vector<double> per_launch =
        time_launches(state, rotation, [&](int, cudaStream_t) {
          if (!backward) {
            ops::conv2d(x, w, b, params);
            return;
          }
          autograd::RecordScope record;
          ops::conv2d(x, w, b, params).backward(head);
        });
    const double t = median(per_launch);
    // 2 flops a multiply-add; backward is two GEMMs of the forward's size (dx, dw).
    const double flops = 2.0 * double(n * k * p * p) * double(c * r * r) * (backward ? 2 : 1);
    state.counters["us"] = t * 1e6;
    state.counters["GFLOPps"] = flops / t * 1e-9;
  });
}

void BM_gpu_conv2d_forward(benchmark::State& state) { gpu_conv(state, false); }
void BM_gpu_conv2d_backward(benchmark::State& state) { gpu_conv(state, true); }

void conv_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "c", "h", "k", "r", "stride", "pad"});
  b->Args({256, 6, 14, 16, 5, 1, 0});    // LeNet's second convolution
  b->Args({128, 64, 32, 64, 3, 1, 1});   // a ResNet block's 3x3
  b->Args({128, 64, 32, 128, 3, 2, 1});  // its down-sampling 3x3
  b->Args({128, 256, 16, 64, 1, 1, 0});  // a bottleneck's 1x1 (no im2col)
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_gpu_copy_reference)->Apply(elementwise_shapes);
BENCHMARK(BM_gpu_relu_forward)->Apply(elementwise_shapes);
BENCHMARK(BM_gpu_relu_backward)->Apply(elementwise_shapes);
BENCHMARK(BM_gpu_bias_add)->Apply(elementwise_shapes);
BENCHMARK(BM_gpu_add)->Apply(elementwise_shapes);
BENCHMARK(BM_gpu_mul)->Apply(elementwise_shapes);
BENCHMARK(BM_gpu_fill)->Apply(elementwise_shapes);
BENCHMARK(BM_gpu_sum_columns)->Apply(elementwise_shapes);
BENCHMARK(BM_gpu_reduce_all_sum)->Apply(elementwise_shapes);
BENCHMARK(BM_gpu_softmax_xent_forward)->Apply(softmax_shapes);
BENCHMARK(BM_gpu_sgd_update)->Apply(optimizer_shapes);
BENCHMARK(BM_gpu_sgd_momentum_update)->Apply(optimizer_shapes);
BENCHMARK(BM_gpu_adam_update)->Apply(optimizer_shapes);
BENCHMARK(BM_gpu_conv2d_forward)->Apply(conv_shapes);
BENCHMARK(BM_gpu_conv2d_backward)->Apply(conv_shapes);
BENCHMARK(BM_gpu_max_pool2d_forward)->Apply(pool_shapes);
BENCHMARK(BM_gpu_max_pool2d_backward)->Apply(pool_shapes);
BENCHMARK(BM_gpu_avg_pool2d_forward)->Apply(pool_shapes);
BENCHMARK(BM_gpu_avg_pool2d_backward)->Apply(pool_shapes);
BENCHMARK(BM_gpu_dropout)->Apply(elementwise_shapes);
BENCHMARK(BM_gpu_batch_norm_train_forward)->Apply(batch_norm_shapes);
BENCHMARK(BM_gpu_batch_norm_backward)->Apply(batch_norm_shapes);
BENCHMARK(BM_gpu_layer_norm_forward)->Apply(layer_norm_shapes);

// ---- CPU twins (kernels/cpu), wall clock, against memcpy of the same bytes ----

// Wall-clock seconds of one call of `run`.
double wall_seconds(const std::function<void()>& run) {
  const auto start = std::chrono::steady_clock::now();
  run();
  benchmark::ClobberMemory();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double cpu_memcpy_gbps(int64_t bytes_moved) {
  const size_t half = size_t(std::max<int64_t>(bytes_moved / 2, 1));
  std::vector<char> src(half, 1), dst(half, 0);
  auto copy = [&] {
    std::memcpy(dst.data(), src.data(), half);
    benchmark::DoNotOptimize(dst.data());
  };
  for (int i = 0; i < 3; ++i) copy();
  std::vector<double> samples;
  for (int i = 0; i < 15; ++i) samples.push_back(wall_seconds(copy));
  return double(2 * half) / median(samples) * 1e-9;
}

// Medians of wall-clock time a call: the CPU is often shared, and the median shrugs off the
// moments another process had it.
void cpu_kernel(benchmark::State& state, int64_t bytes, const std::function<void()>& run) {
  const double copy = cpu_memcpy_gbps(bytes);
  run();  // warm-up: first touch of the output pages
  std::vector<double> samples;
  for (auto _ : state) samples.push_back(wall_seconds(run));
  state.SetBytesProcessed(int64_t(state.iterations()) * bytes);
  state.SetLabel("CPU");
  const double gbps = double(bytes) / median(samples) * 1e-9;
  state.counters["us"] = median(samples) * 1e6;
  state.counters["GBps"] = gbps;
  state.counters["memcpy_GBps"] = copy;
  state.counters["of_memcpy_bw"] = gbps / copy;
  state.counters["bytes"] = double(bytes);
}

Tensor cpu_random(const Shape& shape, uint64_t seed) {
  return Tensor::uniform(shape, -1.0f, 1.0f, seed, Device::cpu());
}

void BM_cpu_relu_forward(benchmark::State& state) {
  const int64_t n = rows_of(state) * cols_of(state);
  const Tensor x = cpu_random({n}, 1), y = Tensor::empty({n}, Device::cpu());
  cpu_kernel(state, 2 * n * kF,
             [&] { kernels::cpu::unary(UnaryOp::kRelu, x.data(), y.data(), n); });
}

void BM_cpu_bias_add(benchmark::State& state) {
  const int64_t rows = rows_of(state), cols = cols_of(state);
  const Tensor x = cpu_random({rows, cols}, 2), b = cpu_random({cols}, 3);
  const Tensor y = Tensor::empty({rows, cols}, Device::cpu());
  cpu_kernel(state, (2 * rows * cols + cols) * kF, [&] {
    kernels::cpu::binary(BinaryOp::kAdd, x.data(), b.data(), y.data(), rows, cols, Broadcast::kRow);
  });
}

void BM_cpu_add(benchmark::State& state) {
  const int64_t rows = rows_of(state), cols = cols_of(state), n = rows * cols;
  const Tensor a = cpu_random({n}, 4), b = cpu_random({n}, 5),
               y = Tensor::empty({n}, Device::cpu());
  cpu_kernel(state, 3 * n * kF, [&] {
    kernels::cpu::binary(BinaryOp::kAdd, a.data(), b.data(), y.data(), rows, cols,
                         Broadcast::kNone);
  });
}

void BM_cpu_sum_columns(benchmark::State& state) {
  const int64_t rows = rows_of(state), cols = cols_of(state);
  const Tensor x = cpu_random({rows, cols}, 6), out = Tensor::empty({cols}, Device::cpu());
  cpu_kernel(state, (rows * cols + cols) * kF, [&] {
    kernels::cpu::sum_columns(x.data(), rows, cols, out.data(), Accumulate::kOverwrite);
  });
}

void BM_cpu_sgd_update(benchmark::State& state) {
  const int64_t n = rows_of(state) * cols_of(state);
  const Tensor w = cpu_random({n}, 7), g = cpu_random({n}, 8);
  kernels::SgdConfig config;
  config.learning_rate = 1e-3f;
  cpu_kernel(state, 3 * n * kF,
             [&] { kernels::cpu::sgd_update(w.data(), g.data(), nullptr, n, config); });
}

void BM_cpu_max_pool2d_forward(benchmark::State& state) {
  // (rows, cols) planes of 3x3 windows, stride 2, padding 1: rows = planes, cols = side.
  kernels::Pool2DGeometry g;
  g.planes = rows_of(state);
  g.in_h = g.in_w = cols_of(state);
  g.kernel_h = g.kernel_w = 3;
  g.stride_h = g.stride_w = 2;
  g.pad_h = g.pad_w = 1;
  g.out_h = g.out_w = kernels::pool_output_size(g.in_h, 3, 2, 1, false);
  const int64_t in = pool_inputs(g), out = pool_outputs(g);
  const Tensor x = cpu_random({in}, 9), y = Tensor::empty({out}, Device::cpu());
  const Tensor arg = Tensor::empty({out}, Device::cpu(), DType::kInt32);
  cpu_kernel(state, (in + 2 * out) * kF,
             [&] { kernels::cpu::max_pool2d_forward(x.data(), g, y.data(), arg.data_int32()); });
}

void BM_cpu_dropout(benchmark::State& state) {
  const int64_t n = rows_of(state) * cols_of(state);
  const Tensor x = cpu_random({n}, 10), y = Tensor::empty({n}, Device::cpu()),
               mask = Tensor::empty({n}, Device::cpu());
  DropoutGenerator generator(11);
  int32_t* words = generator.state(Device::cpu()).data_int32();
  cpu_kernel(state, 3 * n * kF, [&] {
    kernels::cpu::dropout(x.data(), n, 0.5f, 2.0f, words, y.data(), mask.data());
    kernels::cpu::advance_dropout_state(words, n);
  });
}

void cpu_pool_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"planes", "side"});
  b->Args({256, 56})->Args({64, 112});
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

void cpu_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols"});
  b->Args({256, 256})->Args({4096, 1024});
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_cpu_relu_forward)->Apply(cpu_shapes);
BENCHMARK(BM_cpu_bias_add)->Apply(cpu_shapes);
BENCHMARK(BM_cpu_add)->Apply(cpu_shapes);
BENCHMARK(BM_cpu_sum_columns)->Apply(cpu_shapes);
BENCHMARK(BM_cpu_sgd_update)->Apply(cpu_shapes);
BENCHMARK(BM_cpu_max_pool2d_forward)->Apply(cpu_pool_shapes);
BENCHMARK(BM_cpu_dropout)->Apply(cpu_shapes);

}  // namespace
}  // namespace cairn::bench

int main(int argc, char** argv) { return cairn::bench::run_main(argc, argv); }
