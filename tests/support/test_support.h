// Shared test tools: the GPU fixture that skips without a device, error expectations, closeness
// with atol + rtol * |ref|, NaN poisoning, and central finite differences.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "cairn/cairn.h"

namespace cairn::testing {

// GPU tests derive from this: without a usable device they skip and say why (or fail, where
// CAIRN_REQUIRE_GPU=1 says a GPU was meant to be there, as in the Docker image). Nothing here runs
// at static-initialisation time, so listing the tests never touches CUDA.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_available()) return;
    const char* required = std::getenv("CAIRN_REQUIRE_GPU");
    if (required != nullptr && std::string(required) == "1") {
      GTEST_FAIL() << "CAIRN_REQUIRE_GPU=1 but no CUDA device: " << cuda_unavailable_reason();
    }
    GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  }
};

// Whether the CUDA device is cairn's fake one (tests/fake_cuda/, the CAIRN_FAKE_CUDA build): it
// says so in its name. Its memory is this machine's, not an H200's.
inline bool on_fake_cuda_device() {
  if (!cuda_available()) return false;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return false;
  return std::string(prop.name).find("cairn fake CUDA device") != std::string::npos;
}

// For tests whose tensors need more memory than the fake device can hold (above 2^31 elements):
// they skip there, saying so, and stay required on a real GPU.
#define CAIRN_SKIP_ON_FAKE_CUDA_FOR_MEMORY()                                                  \
  do {                                                                                        \
    if (::cairn::testing::on_fake_cuda_device()) {                                            \
      GTEST_SKIP() << "needs more device memory than the fake CUDA device holds (it is host " \
                      "memory); required on a real GPU";                                      \
    }                                                                                         \
  } while (0)

// After the last test: free everything cairn keeps for the process's lifetime and reset the
// devices, so that compute-sanitizer --leak-check full (which reports what is still allocated
// when a context is destroyed) reports only real leaks. Registered once per test binary; a no-op
// without a GPU.
class CudaShutdownEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    if (!cuda_available()) return;
    try {
      cuda::shutdown();
    } catch (const std::exception& error) {
      ADD_FAILURE() << "cuda::shutdown: " << error.what();
    }
    for (int index = 0; index < cuda_device_count(); ++index) {
      if (cudaSetDevice(index) == cudaSuccess) cudaDeviceReset();
    }
  }
};
inline ::testing::Environment* const kCudaShutdownEnvironment =
    ::testing::AddGlobalTestEnvironment(new CudaShutdownEnvironment);

// Runs `body`, expecting a cairn::Error whose message contains every one of `fragments`.
inline void expect_error(const std::function<void()>& body,
                         const std::vector<std::string>& fragments) {
  try {
    body();
  } catch (const Error& error) {
    const std::string message = error.what();
    for (const std::string& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "message lacks \"" << fragment << "\": " << message;
    }
    return;
  } catch (const std::exception& other) {
    ADD_FAILURE() << "expected cairn::Error, got another exception: " << other.what();
    return;
  }
  ADD_FAILURE() << "expected cairn::Error containing \"" << (fragments.empty() ? "" : fragments[0])
                << "\", nothing was thrown";
}

// |actual - expected| <= atol + rtol * |expected| elementwise; NaN never passes.
inline void expect_close(const std::vector<float>& actual, const std::vector<float>& expected,
                         double atol, double rtol, const std::string& what = "") {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  size_t failures = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    const bool ok = std::isfinite(a) == std::isfinite(e) &&
                    (!std::isfinite(e) ? (std::isnan(e) ? std::isnan(a) : a == e)
                                       : std::abs(a - e) <= atol + rtol * std::abs(e));
    if (!ok && failures++ < 5) {
      ADD_FAILURE() << what << " element " << i << ": got " << a << ", expected " << e << " (atol "
                    << atol << ", rtol " << rtol << ")";
    }
  }
  EXPECT_EQ(failures, 0u) << what << ": " << failures << " of " << actual.size()
                          << " elements differ";
}

inline void expect_close(const Tensor& actual, const Tensor& expected, double atol, double rtol,
                         const std::string& what = "") {
  ASSERT_EQ(shape_str(actual.shape()), shape_str(expected.shape())) << what;
  expect_close(actual.to_vector(), expected.to_vector(), atol, rtol, what);
}

// ---- elementwise ops (kernels/elementwise_ops.h) ----

// The values every elementwise row is run on, bit for bit the same on every device: both zeros,
// both infinities, NaNs with payloads and either sign (quiet and signaling), subnormals, the
// extremes of the finite floats, and a few ordinary values.
inline std::vector<float> special_values() {
  const uint32_t bits[] = {
      0x00000000u, 0x80000000u,  // +0, -0
      0x7f800000u, 0xff800000u,  // +inf, -inf
      0x7fc00000u, 0xffc00000u,  // the quiet NaNs of PyTorch and of x86
      0x7fc12345u, 0xffd00001u,  // quiet NaNs with payloads
      0x7f800001u, 0xff812345u,  // signaling NaNs
      0x00000001u, 0x80000001u,  // the smallest subnormals
      0x007fffffu, 0x807fffffu,  // the largest subnormals
      0x00800000u, 0x80800000u,  // the smallest normals
      0x7f7fffffu, 0xff7fffffu,  // the largest finite floats
      0x3f800000u, 0xbf800000u,  // +-1
      0x3f000000u, 0xc0200000u, 0x41a00000u, 0xc2c80000u, 0x3dcccccdu  // 0.5, -2.5, 20, -100, 0.1
  };
  std::vector<float> values;
  for (uint32_t b : bits) {
    float v;
    std::memcpy(&v, &b, sizeof v);
    values.push_back(v);
  }
  return values;
}

inline uint32_t float_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

// Distance in representable floats (0 for +0 against -0: a sign of zero is judged by bits).
inline int64_t ulp_distance(float a, float b) {
  auto ordered = [](float v) {
    const int64_t b = int32_t(float_bits(v));
    return b < 0 ? int64_t(INT32_MIN) - b : b;
  };
  const int64_t d = ordered(a) - ordered(b);
  return d < 0 ? -d : d;
}

// Every element the same bits (ulps == 0), or within `ulps` floats or `atol` of `expected`, NaN
// where expected is NaN and never elsewhere.
inline void expect_within_ulps(const std::vector<float>& actual, const std::vector<float>& expected,
                               int ulps, double atol, const std::string& what,
                               const std::vector<float>& inputs = {}) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  size_t failures = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const float a = actual[i], e = expected[i];
    bool ok;
    if (ulps == 0) {
      ok = float_bits(a) == float_bits(e);
    } else if (std::isnan(e) || std::isnan(a)) {
      ok = std::isnan(a) && std::isnan(e);
    } else {
      ok = ulp_distance(a, e) <= ulps || std::abs(double(a) - double(e)) <= atol;
    }
    if (!ok && failures++ < 5) {
      std::ostringstream message;
      message << what << " element " << i;
      if (i < inputs.size())
        message << " (input " << inputs[i] << ", bits 0x" << std::hex << float_bits(inputs[i])
                << std::dec << ")";
      message << ": got " << a << " (0x" << std::hex << float_bits(a) << "), expected " << e
              << " (0x" << float_bits(e) << std::dec << "), " << ulp_distance(a, e)
              << " ulps apart, allowed " << ulps;
      ADD_FAILURE() << message.str();
    }
  }
}

// Random test data: a seeded uniform fill on the CPU, moved to `device`.
inline Tensor random_tensor(const Shape& shape, uint64_t seed, const Device& device,
                            float low = -1.0f, float high = 1.0f) {
  return Tensor::uniform(shape, low, high, seed, Device::cpu()).to(device);
}

// Fills a tensor with NaN, so that an output a kernel forgot to write fails every comparison.
inline void poison(Tensor& tensor) {
  tensor.copy_from(Tensor::full(tensor.shape(), std::nanf(""), tensor.device()));
}

// Central differences of a scalar function of `inputs` (all on the CPU), compared with the
// gradients backward() puts on them. The function is evaluated in float32, so `eps` is large-ish
// and the tolerance loose enough for that, tight enough to catch a wrong formula.
// `f` must build its result from the given inputs inside the recording scope this sets up.
inline void expect_gradients_match(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                   std::vector<Tensor> inputs, double eps = 1e-2,
                                   double atol = 2e-3, double rtol = 2e-2) {
  for (Tensor& input : inputs) input.attach_grad();
  {
    autograd::RecordScope record;
    Tensor out = f(inputs);
    ASSERT_EQ(out.numel(), 1) << "gradient check needs a scalar function";
    out.backward();
  }
  for (size_t which = 0; which < inputs.size(); ++which) {
    std::vector<float> analytic = inputs[which].grad().to_vector();
    std::vector<float> numeric(analytic.size());
    std::vector<float> values = inputs[which].to_vector();
    for (size_t i = 0; i < values.size(); ++i) {
      auto evaluate = [&](float shifted) {
        std::vector<float> moved = values;
        moved[i] = shifted;
        std::vector<Tensor> args = inputs;
        args[which] = Tensor::from_vector(moved, inputs[which].shape(), inputs[which].device());
        return double(f(args).item());
      };
      numeric[i] =
          float((evaluate(values[i] + float(eps)) - evaluate(values[i] - float(eps))) / (2 * eps));
    }
    expect_close(analytic, numeric, atol, rtol, "gradient of input " + std::to_string(which));
  }
}

}  // namespace cairn::testing
