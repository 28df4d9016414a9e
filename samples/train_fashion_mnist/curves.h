// Training curves: one row per epoch, kept as CSV and drawn as an SVG a person can open.
#pragma once

#include <string>
#include <vector>

namespace curves {

struct EpochRow {
  int epoch = 0;
  double train_loss = 0, train_accuracy = 0, test_accuracy = 0, seconds = 0, samples_per_second = 0;
};

// The index of the row with the highest test accuracy, the earliest of equals; `rows` must not be
// empty.
size_t best_row(const std::vector<EpochRow>& rows);

// Reads a CSV written by write_csv; a missing file gives no rows.
std::vector<EpochRow> read_csv(const std::string& path);
void write_csv(const std::string& path, const std::vector<EpochRow>& rows);
// Two panels side by side: training loss, and train/test accuracy, against the epoch.
void write_svg(const std::string& path, const std::vector<EpochRow>& rows,
               const std::string& title);

}  // namespace curves
