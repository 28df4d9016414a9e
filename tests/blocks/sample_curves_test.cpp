// The Fashion-MNIST sample's choice of its best epoch (samples/train_fashion_mnist/curves.h): the
// parameters it keeps in best.safetensors and the epoch it reports.
#include <gtest/gtest.h>

#include <stdexcept>

#include "train_fashion_mnist/curves.h"

namespace {

std::vector<curves::EpochRow> rows_with_test_accuracy(const std::vector<double>& accuracy) {
  std::vector<curves::EpochRow> rows;
  for (size_t i = 0; i < accuracy.size(); ++i) {
    curves::EpochRow row;
    row.epoch = int(i) + 1;
    row.test_accuracy = accuracy[i];
    rows.push_back(row);
  }
  return rows;
}

TEST(SampleCurves, BestRowIsTheHighestTestAccuracyAndTheEarliestOfEquals) {
  EXPECT_EQ(curves::best_row(rows_with_test_accuracy({0.80})), 0u);
  EXPECT_EQ(curves::best_row(rows_with_test_accuracy({0.80, 0.875, 0.81})), 1u);
  EXPECT_EQ(curves::best_row(rows_with_test_accuracy({0.80, 0.85, 0.86})), 2u);
  // A tie keeps the earlier epoch, so a later equal epoch does not rewrite best.safetensors.
  EXPECT_EQ(curves::best_row(rows_with_test_accuracy({0.86, 0.85, 0.86})), 0u);
  EXPECT_THROW(curves::best_row({}), std::invalid_argument);
}

}  // namespace
