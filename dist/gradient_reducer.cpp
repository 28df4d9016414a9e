#include "cairn/dist/gradient_reducer.h"

#include "cairn/core/autograd.h"
#include "cairn/base/error.h"
#include "cairn/core/ops.h"

namespace cairn::dist {
namespace {

// dst[offset, offset + src.numel()) = src, on the tensors' device (queued on its stream).
void copy_into(Tensor& dst, int64_t offset, const Tensor& src) {
  dst.copy_elements_from(offset, src, 0, src.numel());
}

// dst = src[offset, offset + dst.numel())
void copy_out(Tensor dst, const Tensor& src, int64_t offset) {
  dst.copy_elements_from(0, src, offset, dst.numel());
}

}  // namespace

GradientReducer::GradientReducer(std::vector<Tensor> leaves, std::vector<std::string> names,
                                 CommunicatorPtr communicator, BucketOptions options)
    : leaves_(std::move(leaves)), names_(std::move(names)), communicator_(std::move(communicator)) {
  CAIRN_CHECK(communicator_ != nullptr, "GradientReducer: the communicator is null");
  CAIRN_CHECK(names_.size() == leaves_.size(), "GradientReducer: ", leaves_.size(), " leaves but ",
              names_.size(), " names");
  CAIRN_CHECK(options.bucket_bytes > 0, "GradientReducer: bucket_bytes must be positive, got ",
              options.bucket_bytes);
  const Device device = communicator_->device();
  for (size_t i = 0; i < leaves_.size(); ++i) {
    const Tensor& leaf = leaves_[i];
    CAIRN_CHECK(leaf.defined() && leaf.is_leaf() && leaf.grad().defined(), "GradientReducer: '",
                names_[i], "' is not a leaf with a gradient");
    CAIRN_CHECK(leaf.dtype() == DType::kFloat32, "GradientReducer: '", names_[i],
                "' is not float32");
    CAIRN_CHECK(leaf.device() == device, "GradientReducer: '", names_[i], "' is on ", leaf.device(),
                ", the ", communicator_->backend(), " communicator reduces on ", device);
    CAIRN_CHECK(leaf.grad_req() == GradReq::kWrite, "GradientReducer: '", names_[i],
                "' accumulates its gradient across backward calls (GradReq::kAdd); data-parallel "
                "training reduces each backward's gradient: use GradReq::kWrite");
  }
  // Reverse order: the last layers' gradients are ready first.
  bucket_of_.resize(leaves_.size());
  slot_of_.resize(leaves_.size());
  ready_.assign(leaves_.size(), false);
  int64_t bucket_elements = 0;
  for (size_t k = leaves_.size(); k-- > 0;) {
    const int64_t numel = leaves_[k].numel();
    if (buckets_.empty() ||
        (bucket_elements > 0 &&
         (bucket_elements + numel) * int64_t(sizeof(float)) > options.bucket_bytes)) {
      buckets_.emplace_back();
      bucket_elements = 0;
    }
    Bucket& bucket = buckets_.back();
    bucket_of_[k] = buckets_.size() - 1;
    slot_of_[k] = bucket.members.size();
    bucket.members.push_back(k);
    bucket.offsets.push_back(bucket_elements);
    bucket_elements += numel;
  }
  for (Bucket& bucket : buckets_) {
    int64_t total = 0;
    for (size_t member : bucket.members) total += leaves_[member].numel();
    bucket.buffer = Tensor::zeros({total}, device);
  }
  if (communicator_->size() > 1) {
    for (size_t i = 0; i < leaves_.size(); ++i) {
      autograd::add_grad_ready_hook(leaves_[i], this, [this, i] { on_ready(i); });
    }
  }
}

GradientReducer::~GradientReducer() {
  for (const Tensor& leaf : leaves_) autograd::remove_grad_ready_hooks(leaf, this);
  // Pending collectives wait in their destructors: MPI must not write into freed buffers.
}

void GradientReducer::on_ready(size_t leaf) {
  CAIRN_CHECK(!ready_[leaf], "data-parallel: '", names_[leaf],
              "' received a second gradient before Trainer::step(); each step takes one "
              "backward() (a larger batch, not accumulation)");
  if (!any_ready_) started_in_backward_ = 0;  // the first gradient of a new step
  ready_[leaf] = true;
  any_ready_ = true;
  Bucket& bucket = buckets_[bucket_of_[leaf]];
  copy_into(bucket.buffer, bucket.offsets[slot_of_[leaf]], leaves_[leaf].grad());
  ++bucket.ready;
  const size_t before = next_to_start_;
  start_full_buckets();
  started_in_backward_ += next_to_start_ - before;
  // Open MPI progresses non-blocking collectives only inside MPI calls: give it one.
  for (size_t b = 0; b < next_to_start_; ++b) {
    if (buckets_[b].pending) buckets_[b].pending->test();
  }
}

void GradientReducer::start_full_buckets() {
  while (next_to_start_ < buckets_.size() &&
         buckets_[next_to_start_].ready == buckets_[next_to_start_].members.size()) {
    start(buckets_[next_to_start_++]);
  }
}

void GradientReducer::start(Bucket& bucket) {
  bucket.pending = communicator_->start_allreduce_sum(bucket.buffer);
}

void GradientReducer::finish() {
  if (communicator_->size() == 1) return;
  // Leaves no backward reached: zeros when a backward ran (a branch not taken on this rank),
  // otherwise the gradients as they are (set by hand).
  for (size_t b = next_to_start_; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    for (size_t s = 0; s < bucket.members.size(); ++s) {
      const size_t leaf = bucket.members[s];
      if (ready_[leaf]) continue;
      if (any_ready_) {
        bucket.buffer.fill_elements(bucket.offsets[s], leaves_[leaf].numel(), 0.0f);
      } else {
        copy_into(bucket.buffer, bucket.offsets[s], leaves_[leaf].grad());
      }
      ++bucket.ready;
    }
  }
  start_full_buckets();
  const float inverse_size = 1.0f / float(communicator_->size());
  for (Bucket& bucket : buckets_) {
    bucket.pending->wait();
    bucket.pending.reset();
    // sum * (1 / size), one float multiply an element on either device, as the CPU loop did.
    const Tensor mean = ops::mul_scalar(bucket.buffer, inverse_size);
    for (size_t s = 0; s < bucket.members.size(); ++s) {
      copy_out(leaves_[bucket.members[s]].grad(), mean, bucket.offsets[s]);
    }
    bucket.ready = 0;
  }
  ready_.assign(leaves_.size(), false);
  next_to_start_ = 0;
  any_ready_ = false;
}

}  // namespace cairn::dist
