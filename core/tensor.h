// Tensor: a cheap, shared handle to storage + shape + dtype + device, plus its autograd state.
//
// Copying a Tensor copies the handle, not the data. Tensors are contiguous and row-major. Nothing
// moves between host and device unless asked for (to(), to_host(), to_vector(), item()).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "cairn/core/device.h"
#include "cairn/core/shape.h"
#include "cairn/core/storage.h"

namespace cairn {

// How backward() treats a leaf's gradient (Gluon's grad_req): overwrite it, add into it across
// backward calls, or never compute it (constants).
enum class GradReq { kNull, kWrite, kAdd };

namespace autograd {
struct Node;
}

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  int64_t numel = 0;
  DType dtype = DType::kFloat32;
  // Autograd: a leaf asks for a gradient through grad_req; a recorded result points at the node
  // that made it.
  GradReq grad_req = GradReq::kNull;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;
  // A leaf's hooks, run by backward() once its gradient is final (autograd::add_grad_ready_hook),
  // each under the key of whoever added it.
  std::vector<std::pair<const void*, std::function<void()>>> grad_ready_hooks;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: holds nothing
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- Creation. Device defaults to default_device(). ----
  // The shape by value: a temporary ({rows, cols}) moves in instead of being copied.
  static Tensor empty(Shape shape, const Device& device, DType dtype = DType::kFloat32);
  static Tensor empty(const Shape& shape) { return empty(shape, default_device()); }
  static Tensor full(const Shape& shape, float value, const Device& device);
  static Tensor zeros(const Shape& shape, const Device& device);
  static Tensor ones(const Shape& shape, const Device& device);
  static Tensor zeros(const Shape& shape) { return zeros(shape, default_device()); }
  static Tensor ones(const Shape& shape) { return ones(shape, default_device()); }
  static Tensor scalar(float value, const Device& device);
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape,
                            const Device& device);
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape) {
    return from_vector(values, shape, default_device());
  }
  static Tensor from_int32(const std::vector<int32_t>& values, const Shape& shape,
                           const Device& device);
  // Seeded fills: the same seed gives the same numbers on every device (see kernels/random.h).
  static Tensor uniform(const Shape& shape, float low, float high, uint64_t seed,
                        const Device& device);
  static Tensor normal(const Shape& shape, float mean, float stddev, uint64_t seed,
                       const Device& device);
  // Wraps memory the caller owns (a cudaMalloc'd buffer of a CUDA application, say) without
  // copying. cairn never frees it; the caller keeps it alive while the tensor is used. The
  // pointer's memory kind must match `device` (device memory of that GPU for a CUDA device; host
  // memory, pageable or pinned, for the CPU: asked of the CUDA runtime where there is one), and
  // when `capacity_bytes` is given the shape must fit in it.
  static Tensor wrap(void* data, const Shape& shape, const Device& device,
                     DType dtype = DType::kFloat32,
                     std::optional<size_t> capacity_bytes = std::nullopt);

  // ---- Properties. ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t ndim() const { return int64_t(shape().size()); }
  int64_t dim(int64_t axis) const;  // negative axes count from the end
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }

  // Raw pointers, on the tensor's device. data() checks that the dtype is float32.
  float* data() const;
  int32_t* data_int32() const;
  void* raw_data() const;

  // ---- Transfers. ----
  // A copy on `device`; the same tensor when it is already there.
  Tensor to(const Device& device) const;
  Tensor to_host() const { return to(Device::cpu()); }
  Tensor clone() const;  // always a new copy, same device; not recorded
  std::vector<float> to_vector() const;
  std::vector<int32_t> to_int32_vector() const;
  float item() const;  // the value of a one-element float tensor
  // Overwrites this tensor's data with src's (same shape and dtype; any devices). Not recorded:
  // for loading, initialising and optimizer updates.
  void copy_from(const Tensor& src);
  // Element ranges of the flat data, for packing buffers (dist::GradientReducer's buckets); not
  // recorded. copy_elements_from overwrites [offset, offset + count) with src's
  // [src_offset, src_offset + count) (same dtype; any devices, as copy_from); fill_elements
  // writes `value` there (float32). Both ranges must lie inside their tensors.
  void copy_elements_from(int64_t offset, const Tensor& src, int64_t src_offset, int64_t count);
  void fill_elements(int64_t offset, int64_t count, float value);

  // ---- Shape (recorded like any op). -1 in one place is inferred. ----
  Tensor reshape(const Shape& shape) const;

  // ---- Autograd. ----
  // Makes this tensor a leaf that receives a gradient (allocated as zeros now).
  void attach_grad(GradReq request = GradReq::kWrite);
  GradReq grad_req() const;
  void set_grad_req(GradReq request);
  bool requires_grad() const;  // a leaf with a grad request, or a recorded result
  bool is_leaf() const;
  Tensor grad() const;  // undefined when no gradient is attached
  void zero_grad();
  // Runs the recorded graph backwards from this tensor. Without a head gradient the tensor must
  // have one element (a loss).
  void backward(const Tensor& head_grad = Tensor()) const;
  // The same data, cut from the graph: a leaf with no grad request.
  Tensor detach() const;

  // ---- Identity and printing. ----
  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }
  std::string str() const;  // shape, device and (some of) the values

 private:
  const TensorImpl& checked_impl(const char* what) const;
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& out, const Tensor& tensor);

}  // namespace cairn
