#include "cairn/blocks/initializer.h"

#include <cmath>

#include "cairn/base/error.h"

namespace cairn {
namespace {

class ConstantInit final : public Initializer {
 public:
  explicit ConstantInit(float value) : value_(value) {
    CAIRN_CHECK(std::isfinite(value), "init::constant: value must be finite, got ", value);
  }
  void fill(Tensor& data, const std::string&, uint64_t) const override {
    data.copy_from(Tensor::full(data.shape(), value_, data.device()));
  }
  std::string str() const override { return "Constant(" + std::to_string(value_) + ")"; }

 private:
  float value_;
};

class UniformInit final : public Initializer {
 public:
  explicit UniformInit(float scale) : scale_(scale) {
    // Checked here, where the argument is the user's, rather than as Tensor::uniform's bounds.
    CAIRN_CHECK(std::isfinite(scale) && scale >= 0.0f,
                "init::uniform: scale must be finite and >= 0 (values are drawn from "
                "[-scale, scale]), got ",
                scale);
  }
  void fill(Tensor& data, const std::string&, uint64_t seed) const override {
    data.copy_from(Tensor::uniform(data.shape(), -scale_, scale_, seed, data.device()));
  }
  std::string str() const override { return "Uniform(" + std::to_string(scale_) + ")"; }

 private:
  float scale_;
};

class NormalInit final : public Initializer {
 public:
  explicit NormalInit(float sigma) : sigma_(sigma) {
    CAIRN_CHECK(std::isfinite(sigma) && sigma >= 0.0f,
                "init::normal: sigma must be finite and >= 0, got ", sigma);
  }
  void fill(Tensor& data, const std::string&, uint64_t seed) const override {
    data.copy_from(Tensor::normal(data.shape(), 0.0f, sigma_, seed, data.device()));
  }
  std::string str() const override { return "Normal(" + std::to_string(sigma_) + ")"; }

 private:
  float sigma_;
};

class XavierInit final : public Initializer {
 public:
  XavierInit(float magnitude, std::string factor)
      : magnitude_(magnitude), factor_(std::move(factor)) {
    CAIRN_CHECK(std::isfinite(magnitude) && magnitude >= 0.0f,
                "init::xavier: magnitude must be finite and >= 0, got ", magnitude);
    CAIRN_CHECK(factor_ == "avg" || factor_ == "in" || factor_ == "out",
                "init::xavier: factor must be \"avg\", \"in\" or \"out\", got \"", factor_, "\"");
  }
  void fill(Tensor& data, const std::string& name, uint64_t seed) const override {
    CAIRN_CHECK(data.ndim() >= 2, "init::xavier: parameter '", name,
                "' needs at least 2 dimensions, got ", shape_str(data.shape()));
    // Weight (out, in, ...): the trailing dimensions are a receptive field.
    const double receptive = double(data.numel()) / double(data.dim(0) * data.dim(1));
    const double fan_out = double(data.dim(0)) * receptive;
    const double fan_in = double(data.dim(1)) * receptive;
    const double fan = factor_ == "avg"  ? (fan_in + fan_out) / 2
                       : factor_ == "in" ? fan_in
                                         : fan_out;
    const float scale = float(std::sqrt(magnitude_ / fan));
    data.copy_from(Tensor::uniform(data.shape(), -scale, scale, seed, data.device()));
  }
  std::string str() const override { return "Xavier(" + factor_ + ")"; }

 private:
  float magnitude_;
  std::string factor_;
};

}  // namespace

namespace init {
InitializerPtr constant(float value) { return std::make_shared<ConstantInit>(value); }
InitializerPtr zeros() { return constant(0.0f); }
InitializerPtr ones() { return constant(1.0f); }
InitializerPtr uniform(float scale) { return std::make_shared<UniformInit>(scale); }
InitializerPtr normal(float sigma) { return std::make_shared<NormalInit>(sigma); }
InitializerPtr xavier(float magnitude, const std::string& factor) {
  return std::make_shared<XavierInit>(magnitude, factor);
}
}  // namespace init

uint64_t mix_seed(uint64_t seed, const std::string& name) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : name) hash = (hash ^ c) * 0x100000001b3ull;
  uint64_t z = seed + hash + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace cairn
