// A first look at cairn's tensors: where they live, a few ops, and a gradient.
#include <cairn/cairn.h>

#include <iostream>

int main() {
  using namespace cairn;
  const Device device = default_device();
  std::cout << "device: " << device << "\n";
  Tensor x = Tensor::uniform({2, 3}, -1.0f, 1.0f, /*seed=*/42, device);
  Tensor w = Tensor::normal({4, 3}, 0.0f, 0.5f, /*seed=*/7, device);
  w.attach_grad();
  Tensor y;
  {
    autograd::RecordScope record;
    y = ops::sum(ops::relu(ops::matmul(x, w, ops::Transpose::kNo, ops::Transpose::kYes)));
  }
  y.backward();
  std::cout << "x = " << x << "\ny = " << y << "\ndy/dw = " << w.grad() << "\n";
  return 0;
}
