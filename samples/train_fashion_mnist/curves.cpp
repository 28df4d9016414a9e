#include "curves.h"

#include <cairn/core/atomic_file.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace curves {
namespace {

void write_atomically(const std::string& path, const std::string& text) {
  cairn::AtomicFile file(path, "train_fashion_mnist");
  file.write(text);
  file.commit();
}

std::string polyline(const std::vector<EpochRow>& rows, double EpochRow::*field, double x0,
                     double y0, double width, double height, double low, double high, int max_epoch,
                     const char* colour) {
  std::ostringstream out;
  out << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\" points=\"";
  for (const EpochRow& row : rows) {
    const double x = x0 + width * (max_epoch > 1 ? double(row.epoch - 1) / (max_epoch - 1) : 0.5);
    const double t = std::clamp((row.*field - low) / (high - low), 0.0, 1.0);
    out << x << "," << (y0 + height * (1 - t)) << " ";
  }
  out << "\"/>\n";
  for (const EpochRow& row : rows) {
    const double x = x0 + width * (max_epoch > 1 ? double(row.epoch - 1) / (max_epoch - 1) : 0.5);
    const double t = std::clamp((row.*field - low) / (high - low), 0.0, 1.0);
    out << "<circle r=\"3\" fill=\"" << colour << "\" cx=\"" << x << "\" cy=\""
        << (y0 + height * (1 - t)) << "\"/>\n";
  }
  return out.str();
}

std::string panel(double x0, const std::string& label, double low, double high, int max_epoch) {
  std::ostringstream out;
  const double y0 = 50, width = 380, height = 260;
  out << "<rect x=\"" << x0 << "\" y=\"" << y0 << "\" width=\"" << width << "\" height=\"" << height
      << "\" fill=\"#fafafa\" stroke=\"#999\"/>\n";
  out << "<text x=\"" << x0 + width / 2 << "\" y=\"" << y0 - 10
      << "\" text-anchor=\"middle\" font-size=\"14\">" << label << "</text>\n";
  for (int i = 0; i <= 4; ++i) {
    const double value = low + (high - low) * i / 4, y = y0 + height * (1 - i / 4.0);
    out << "<line x1=\"" << x0 << "\" x2=\"" << x0 + width << "\" y1=\"" << y << "\" y2=\"" << y
        << "\" stroke=\"#e0e0e0\"/>\n<text x=\"" << x0 - 6 << "\" y=\"" << y + 4
        << "\" text-anchor=\"end\" font-size=\"11\">" << std::to_string(value).substr(0, 5)
        << "</text>\n";
  }
  const int step = max_epoch <= 12 ? 1 : (max_epoch + 11) / 12;
  for (int epoch = 1; epoch <= max_epoch; epoch += step) {
    const double x = x0 + width * (max_epoch > 1 ? double(epoch - 1) / (max_epoch - 1) : 0.5);
    out << "<text x=\"" << x << "\" y=\"" << y0 + height + 15
        << "\" text-anchor=\"middle\" font-size=\"11\">" << epoch << "</text>\n";
  }
  out << "<text x=\"" << x0 + width / 2 << "\" y=\"" << y0 + height + 32
      << "\" text-anchor=\"middle\" font-size=\"12\">epoch</text>\n";
  return out.str();
}

}  // namespace

size_t best_row(const std::vector<EpochRow>& rows) {
  if (rows.empty()) throw std::invalid_argument("curves::best_row: no rows");
  size_t best = 0;
  for (size_t i = 1; i < rows.size(); ++i) {
    if (rows[i].test_accuracy > rows[best].test_accuracy) best = i;
  }
  return best;
}

std::vector<EpochRow> read_csv(const std::string& path) {
  std::vector<EpochRow> rows;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    EpochRow row;
    if (std::sscanf(line.c_str(), "%d,%lf,%lf,%lf,%lf,%lf", &row.epoch, &row.train_loss,
                    &row.train_accuracy, &row.test_accuracy, &row.seconds,
                    &row.samples_per_second) == 6) {
      rows.push_back(row);
    }
  }
  return rows;
}

void write_csv(const std::string& path, const std::vector<EpochRow>& rows) {
  std::ostringstream out;
  out << "epoch,train_loss,train_accuracy,test_accuracy,seconds,samples_per_second\n";
  char line[256];
  for (const EpochRow& row : rows) {
    std::snprintf(line, sizeof line, "%d,%.6f,%.6f,%.6f,%.3f,%.1f\n", row.epoch, row.train_loss,
                  row.train_accuracy, row.test_accuracy, row.seconds, row.samples_per_second);
    out << line;
  }
  write_atomically(path, out.str());
}

void write_svg(const std::string& path, const std::vector<EpochRow>& rows,
               const std::string& title) {
  int max_epoch = 1;
  double max_loss = 0.1, min_accuracy = 1.0;
  for (const EpochRow& row : rows) {
    max_epoch = std::max(max_epoch, row.epoch);
    max_loss = std::max(max_loss, row.train_loss);
    min_accuracy = std::min({min_accuracy, row.train_accuracy, row.test_accuracy});
  }
  const double accuracy_low = std::max(0.0, std::floor(min_accuracy * 10 - 0.5) / 10);
  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"380\" "
         "font-family=\"sans-serif\">\n<rect width=\"900\" height=\"380\" fill=\"white\"/>\n";
  out << "<text x=\"450\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">" << title
      << "</text>\n";
  out << panel(60, "training loss", 0, max_loss, max_epoch);
  out << polyline(rows, &EpochRow::train_loss, 60, 50, 380, 260, 0, max_loss, max_epoch, "#1f77b4");
  out << panel(500, "accuracy (blue: train, orange: test)", accuracy_low, 1.0, max_epoch);
  out << polyline(rows, &EpochRow::train_accuracy, 500, 50, 380, 260, accuracy_low, 1.0, max_epoch,
                  "#1f77b4");
  out << polyline(rows, &EpochRow::test_accuracy, 500, 50, 380, 260, accuracy_low, 1.0, max_epoch,
                  "#ff7f0e");
  out << "</svg>\n";
  write_atomically(path, out.str());
}

}  // namespace curves
