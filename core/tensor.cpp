#include "cairn/core/tensor.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "cairn/core/autograd.h"
#include "cairn/core/cuda_context.h"
#include "cairn/base/error.h"
#include "cairn/core/ops.h"
#include "cairn/kernels/elementwise.h"
#include "cairn/kernels/random.h"

namespace cairn {
namespace {

std::shared_ptr<TensorImpl> make_impl(std::shared_ptr<Storage> storage, Shape shape, int64_t numel,
                                      DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = std::move(shape);
  impl->numel = numel;
  impl->dtype = dtype;
  return impl;
}

// numel * dtype size as a byte count, refusing shapes whose bytes a size_t cannot hold (with room
// to spare, so that allocators rounding the size up cannot overflow either).
size_t checked_bytes(const Shape& shape, DType dtype, const char* op, int64_t& numel) {
  numel = checked_numel(shape, op);
  const int64_t max_elements = int64_t(SIZE_MAX / dtype_size(dtype) / 2);
  CAIRN_CHECK(numel <= max_elements, op, ": shape ", shape_str(shape), " of ", dtype_name(dtype),
              " is too large to allocate");
  return size_t(numel) * dtype_size(dtype);
}

void check_device_usable(const Device& device, const char* op) {
  if (device.is_cuda()) {
    CAIRN_CHECK(device.index() < cuda_device_count(), op, ": ", device, " is not available (",
                cuda_device_count(), " CUDA devices; ", cuda_unavailable_reason(), ")");
  }
}

// Copies bytes between any two devices on the current stream of the CUDA side. Copies that land
// on the host wait for the stream, so the data is there when this returns.
void copy_bytes(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                size_t bytes, const char* op) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
  if (dst_device.is_cuda() && src_device.is_cuda()) {
    cuda::DeviceGuard guard(dst_device);
    cuda::Stream stream = cuda::current_stream(dst_device);
    if (dst_device == src_device) {
      CAIRN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
    } else {
      // The source's queued work must finish before the peer copy reads it.
      cuda::synchronize(src_device);
      CAIRN_CUDA_CHECK(
          cudaMemcpyPeerAsync(dst, dst_device.index(), src, src_device.index(), bytes, stream));
      // And the source's block must not be reused on its own stream (a temporary goes back to
      // that stream's free list as soon as the caller drops it) before the copy has read it.
      cudaEvent_t copied = nullptr;
      CAIRN_CUDA_CHECK(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming));
      const cudaError_t recorded = cudaEventRecord(copied, stream);
      cudaError_t waited = cudaSuccess;
      if (recorded == cudaSuccess) {
        cuda::DeviceGuard source_guard(src_device);
        waited = cudaStreamWaitEvent(cuda::current_stream(src_device), copied, 0);
      }
      cudaEventDestroy(copied);  // released once the wait is done
      CAIRN_CUDA_CHECK(recorded);
      CAIRN_CUDA_CHECK(waited);
    }
    return;
  }
  const Device& gpu = dst_device.is_cuda() ? dst_device : src_device;
  cuda::check_host_sync_allowed(gpu, op);
  cuda::DeviceGuard guard(gpu);
  cuda::Stream stream = cuda::current_stream(gpu);
  const cudaMemcpyKind kind =
      dst_device.is_cuda() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
  CAIRN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream));
  // Pageable host memory: wait, so that the host buffer may be reused or read at once.
  CAIRN_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace

// ---- Creation ----

Tensor Tensor::empty(Shape shape, const Device& device, DType dtype) {
  int64_t numel = 0;
  const size_t bytes = checked_bytes(shape, dtype, "Tensor::empty", numel);
  check_device_usable(device, "Tensor::empty");
  auto storage = Storage::allocate(bytes, device);
  return Tensor(make_impl(std::move(storage), std::move(shape), numel, dtype));
}

Tensor Tensor::full(const Shape& shape, float value, const Device& device) {
  Tensor out = empty(shape, device);
  if (device.is_cuda()) {
    cuda::DeviceGuard guard(device);
    kernels::cuda::fill(out.data(), out.numel(), value, cuda::current_stream(device));
  } else {
    kernels::cpu::fill(out.data(), out.numel(), value);
  }
  return out;
}

Tensor Tensor::zeros(const Shape& shape, const Device& device) { return full(shape, 0.0f, device); }
Tensor Tensor::ones(const Shape& shape, const Device& device) { return full(shape, 1.0f, device); }
Tensor Tensor::scalar(float value, const Device& device) { return full({}, value, device); }

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape,
                           const Device& device) {
  const int64_t numel = checked_numel(shape, "Tensor::from_vector");
  CAIRN_CHECK(int64_t(values.size()) == numel, "Tensor::from_vector: ", values.size(),
              " values for shape ", shape_str(shape), " (", numel, " elements)");
  Tensor out = empty(shape, device);
  copy_bytes(out.raw_data(), device, values.data(), Device::cpu(), out.nbytes(),
             "Tensor::from_vector");
  return out;
}

Tensor Tensor::from_int32(const std::vector<int32_t>& values, const Shape& shape,
                          const Device& device) {
  const int64_t numel = checked_numel(shape, "Tensor::from_int32");
  CAIRN_CHECK(int64_t(values.size()) == numel, "Tensor::from_int32: ", values.size(),
              " values for shape ", shape_str(shape), " (", numel, " elements)");
  Tensor out = empty(shape, device, DType::kInt32);
  copy_bytes(out.raw_data(), device, values.data(), Device::cpu(), out.nbytes(),
             "Tensor::from_int32");
  return out;
}

Tensor Tensor::uniform(const Shape& shape, float low, float high, uint64_t seed,
                       const Device& device) {
  CAIRN_CHECK(std::isfinite(low) && std::isfinite(high),
              "Tensor::uniform: bounds must be finite, got low ", low, ", high ", high);
  CAIRN_CHECK(low <= high, "Tensor::uniform: low ", low, " > high ", high);
  Tensor out = empty(shape, device);
  if (device.is_cuda()) {
    cuda::DeviceGuard guard(device);
    kernels::cuda::uniform(out.data(), out.numel(), seed, low, high, cuda::current_stream(device));
  } else {
    kernels::cpu::uniform(out.data(), out.numel(), seed, low, high);
  }
  return out;
}

Tensor Tensor::normal(const Shape& shape, float mean, float stddev, uint64_t seed,
                      const Device& device) {
  CAIRN_CHECK(std::isfinite(mean) && std::isfinite(stddev),
              "Tensor::normal: mean and stddev must be finite, got mean ", mean, ", stddev ",
              stddev);
  CAIRN_CHECK(stddev >= 0.0f, "Tensor::normal: negative stddev ", stddev);
  Tensor out = empty(shape, device);
  if (device.is_cuda()) {
    cuda::DeviceGuard guard(device);
    kernels::cuda::normal(out.data(), out.numel(), seed, mean, stddev,
                          cuda::current_stream(device));
  } else {
    kernels::cpu::normal(out.data(), out.numel(), seed, mean, stddev);
  }
  return out;
}

Tensor Tensor::wrap(void* data, const Shape& shape, const Device& device, DType dtype,
                    std::optional<size_t> capacity_bytes) {
  int64_t numel = 0;
  const size_t bytes = checked_bytes(shape, dtype, "Tensor::wrap", numel);
  check_device_usable(device, "Tensor::wrap");
  CAIRN_CHECK(!capacity_bytes || bytes <= *capacity_bytes, "Tensor::wrap: shape ",
              shape_str(shape), " of ", dtype_name(dtype), " needs ", bytes, " bytes, but the ",
              "buffer holds ", *capacity_bytes);
  if (data != nullptr && (device.is_cuda() || cuda_available())) {
    cudaPointerAttributes attributes{};
    const cudaError_t status = cudaPointerGetAttributes(&attributes, data);
    if (device.is_cuda()) CAIRN_CUDA_CHECK(status);
    if (status != cudaSuccess) {
      cudaGetLastError();  // a CPU pointer the runtime cannot place: nothing says it is a GPU's
    } else if (device.is_cuda()) {
      CAIRN_CHECK(attributes.type == cudaMemoryTypeDevice ||
                      attributes.type == cudaMemoryTypeManaged,
                  "Tensor::wrap: pointer is not device memory (it is ",
                  attributes.type == cudaMemoryTypeHost ? "pinned host" : "host",
                  " memory), but ", device, " was given");
      CAIRN_CHECK(attributes.device == device.index(),
                  "Tensor::wrap: pointer lives on cuda:", attributes.device, ", but ", device,
                  " was given");
    } else {
      CAIRN_CHECK(attributes.type != cudaMemoryTypeDevice,
                  "Tensor::wrap: pointer is device memory of cuda:", attributes.device,
                  ", but cpu was given (the host cannot read it)");
    }
  }
  auto storage = Storage::borrow(data, bytes, device);
  return Tensor(make_impl(std::move(storage), shape, numel, dtype));
}

// ---- Properties ----

const TensorImpl& Tensor::checked_impl(const char* what) const {
  CAIRN_CHECK(impl_ != nullptr, what, ": the tensor is undefined (default-constructed)");
  return *impl_;
}

const Shape& Tensor::shape() const { return checked_impl("Tensor::shape").shape; }
int64_t Tensor::numel() const { return checked_impl("Tensor::numel").numel; }
DType Tensor::dtype() const { return checked_impl("Tensor::dtype").dtype; }
Device Tensor::device() const { return checked_impl("Tensor::device").storage->device(); }

int64_t Tensor::dim(int64_t axis) const {
  const int64_t rank = ndim();
  const int64_t resolved = axis < 0 ? axis + rank : axis;
  CAIRN_CHECK(resolved >= 0 && resolved < rank, "Tensor::dim: axis ", axis,
              " is out of range for shape ", shape_str(shape()));
  return shape()[size_t(resolved)];
}

void* Tensor::raw_data() const { return checked_impl("Tensor::raw_data").storage->data(); }

float* Tensor::data() const {
  CAIRN_CHECK(dtype() == DType::kFloat32, "Tensor::data: tensor is ", dtype_name(dtype()),
              ", not float32");
  return static_cast<float*>(raw_data());
}

int32_t* Tensor::data_int32() const {
  CAIRN_CHECK(dtype() == DType::kInt32, "Tensor::data_int32: tensor is ", dtype_name(dtype()),
              ", not int32");
  return static_cast<int32_t*>(raw_data());
}

// ---- Transfers ----

Tensor Tensor::to(const Device& device) const {
  checked_impl("Tensor::to");
  if (device == this->device()) return *this;
  Tensor out = empty(shape(), device, dtype());
  copy_bytes(out.raw_data(), device, raw_data(), this->device(), nbytes(), "Tensor::to");
  return out;
}

Tensor Tensor::clone() const {
  checked_impl("Tensor::clone");
  Tensor out = empty(shape(), device(), dtype());
  copy_bytes(out.raw_data(), device(), raw_data(), device(), nbytes(), "Tensor::clone");
  return out;
}

std::vector<float> Tensor::to_vector() const {
  CAIRN_CHECK(dtype() == DType::kFloat32, "Tensor::to_vector: tensor is ", dtype_name(dtype()),
              "; use to_int32_vector()");
  std::vector<float> values(static_cast<size_t>(numel()));
  copy_bytes(values.data(), Device::cpu(), raw_data(), device(), nbytes(), "Tensor::to_vector");
  return values;
}

std::vector<int32_t> Tensor::to_int32_vector() const {
  CAIRN_CHECK(dtype() == DType::kInt32, "Tensor::to_int32_vector: tensor is ", dtype_name(dtype()));
  std::vector<int32_t> values(static_cast<size_t>(numel()));
  copy_bytes(values.data(), Device::cpu(), raw_data(), device(), nbytes(),
             "Tensor::to_int32_vector");
  return values;
}

float Tensor::item() const {
  CAIRN_CHECK(numel() == 1, "Tensor::item: tensor has ", numel(), " elements (shape ",
              shape_str(shape()), "), item() needs exactly one");
  CAIRN_CHECK(dtype() == DType::kFloat32, "Tensor::item: tensor is ", dtype_name(dtype()));
  float value = 0.0f;
  copy_bytes(&value, Device::cpu(), raw_data(), device(), sizeof(float), "Tensor::item");
  return value;
}

void Tensor::copy_from(const Tensor& src) {
  checked_impl("Tensor::copy_from");
  CAIRN_CHECK(src.defined(), "Tensor::copy_from: source is undefined");
  CAIRN_CHECK(src.shape() == shape() && src.dtype() == dtype(), "Tensor::copy_from: source ",
              shape_str(src.shape()), " ", dtype_name(src.dtype()), " does not match ",
              shape_str(shape()), " ", dtype_name(dtype()));
  copy_bytes(raw_data(), device(), src.raw_data(), src.device(), nbytes(), "Tensor::copy_from");
}

namespace {

void check_element_range(const char* op, const char* role, const Tensor& t, int64_t offset,
                         int64_t count) {
  CAIRN_CHECK(offset >= 0 && count >= 0 && offset <= t.numel() && count <= t.numel() - offset, op,
              ": elements [", offset, ", +", count, ") of the ", role, " lie outside its ",
              t.numel(), " elements (shape ", shape_str(t.shape()), ")");
}

}  // namespace

void Tensor::copy_elements_from(int64_t offset, const Tensor& src, int64_t src_offset,
                                int64_t count) {
  constexpr const char* kOp = "Tensor::copy_elements_from";
  checked_impl(kOp);
  CAIRN_CHECK(src.defined(), kOp, ": source is undefined");
  CAIRN_CHECK(src.dtype() == dtype(), kOp, ": source is ", dtype_name(src.dtype()),
              ", this tensor ", dtype_name(dtype()));
  check_element_range(kOp, "destination", *this, offset, count);
  check_element_range(kOp, "source", src, src_offset, count);
  const size_t element = dtype_size(dtype());
  copy_bytes(static_cast<char*>(raw_data()) + size_t(offset) * element, device(),
             static_cast<const char*>(src.raw_data()) + size_t(src_offset) * element, src.device(),
             size_t(count) * element, kOp);
}

void Tensor::fill_elements(int64_t offset, int64_t count, float value) {
  constexpr const char* kOp = "Tensor::fill_elements";
  checked_impl(kOp);
  check_element_range(kOp, "tensor", *this, offset, count);
  if (count == 0) return;
  float* first = data() + offset;
  if (device().is_cuda()) {
    cuda::DeviceGuard guard(device());
    kernels::cuda::fill(first, count, value, cuda::current_stream(device()));
  } else {
    kernels::cpu::fill(first, count, value);
  }
}

// ---- Autograd state ----

void Tensor::attach_grad(GradReq request) {
  checked_impl("Tensor::attach_grad");
  CAIRN_CHECK(dtype() == DType::kFloat32, "attach_grad: only float32 tensors have gradients");
  impl_->grad_req = request;
  impl_->grad_fn = nullptr;  // attaching a gradient makes this tensor a leaf, as in Gluon
  impl_->grad = request == GradReq::kNull ? nullptr : zeros(shape(), device()).impl();
}

GradReq Tensor::grad_req() const { return checked_impl("Tensor::grad_req").grad_req; }

void Tensor::set_grad_req(GradReq request) {
  checked_impl("Tensor::set_grad_req");
  if (request == GradReq::kNull) {
    impl_->grad_req = GradReq::kNull;
    impl_->grad = nullptr;
  } else if (impl_->grad == nullptr) {
    attach_grad(request);
  } else {
    impl_->grad_req = request;
  }
}

bool Tensor::requires_grad() const {
  return impl_ != nullptr && (impl_->grad_fn != nullptr || impl_->grad_req != GradReq::kNull);
}

bool Tensor::is_leaf() const { return checked_impl("Tensor::is_leaf").grad_fn == nullptr; }

Tensor Tensor::grad() const { return Tensor(checked_impl("Tensor::grad").grad); }

void Tensor::zero_grad() {
  if (impl_ == nullptr || impl_->grad == nullptr) return;
  Tensor grad(impl_->grad);
  if (grad.device().is_cuda()) {
    cuda::DeviceGuard guard(grad.device());
    kernels::cuda::fill(grad.data(), grad.numel(), 0.0f, cuda::current_stream(grad.device()));
  } else {
    kernels::cpu::fill(grad.data(), grad.numel(), 0.0f);
  }
}

void Tensor::backward(const Tensor& head_grad) const { autograd::backward(*this, head_grad); }

Tensor Tensor::detach() const {
  const TensorImpl& impl = checked_impl("Tensor::detach");
  return Tensor(make_impl(impl.storage, impl.shape, impl.numel, impl.dtype));
}

Tensor Tensor::reshape(const Shape& requested) const { return ops::reshape(*this, requested); }

// ---- Printing ----

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream out;
  out << "Tensor" << shape_str(shape()) << " " << dtype_name(dtype()) << " on " << device();
  constexpr int64_t kShown = 8;
  const int64_t shown = std::min(numel(), kShown);
  if (cuda::is_capturing(device())) return out.str();  // values cannot be read mid-capture
  out << " [";
  if (dtype() == DType::kFloat32) {
    const Tensor head = reshape({numel()});
    const std::vector<float> values = head.to_vector();
    for (int64_t i = 0; i < shown; ++i) out << (i ? ", " : "") << values[size_t(i)];
  } else {
    const std::vector<int32_t> values = to_int32_vector();
    for (int64_t i = 0; i < shown; ++i) out << (i ? ", " : "") << values[size_t(i)];
  }
  if (numel() > shown) out << ", ...";
  out << "]";
  return out.str();
}

std::ostream& operator<<(std::ostream& out, const Tensor& tensor) { return out << tensor.str(); }

}  // namespace cairn
