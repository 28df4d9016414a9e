#include "cairn/blocks/lr_schedule.h"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "cairn/base/error.h"

namespace cairn {
namespace {

constexpr double kPi = 3.141592653589793;
const std::string kPrefix = "lr_schedule.";

// The shortest "%g" text that reads back as the same float: 0.1f is "0.1", not "0.100000001".
std::string exact(float value) {
  char text[32];
  for (int digits = 6; digits <= 9; ++digits) {
    std::snprintf(text, sizeof(text), "%.*g", digits, static_cast<double>(value));
    if (std::strtof(text, nullptr) == value) break;
  }
  return text;
}

}  // namespace

LearningRateSchedule LearningRateSchedule::constant(float base_rate, int64_t warmup_steps,
                                                    int64_t start_step) {
  LearningRateSchedule schedule;
  schedule.kind = Kind::kConstant;
  schedule.base_rate = base_rate;
  schedule.warmup_steps = warmup_steps;
  schedule.start_step = start_step;
  schedule.validate();
  return schedule;
}

LearningRateSchedule LearningRateSchedule::cosine(float base_rate, int64_t horizon_steps,
                                                  int64_t warmup_steps, int64_t start_step) {
  LearningRateSchedule schedule;
  schedule.kind = Kind::kCosine;
  schedule.base_rate = base_rate;
  schedule.horizon_steps = horizon_steps;
  schedule.warmup_steps = warmup_steps;
  schedule.start_step = start_step;
  schedule.validate();
  return schedule;
}

const char* LearningRateSchedule::kind_name(Kind kind) {
  return kind == Kind::kCosine ? "cosine" : "constant";
}

void LearningRateSchedule::validate() const {
  CAIRN_CHECK(kind == Kind::kConstant || kind == Kind::kCosine,
              "LearningRateSchedule: unknown kind ", int(kind));
  CAIRN_CHECK(std::isfinite(base_rate) && base_rate >= 0.0f,
              "LearningRateSchedule: base_rate must be finite and >= 0, got ", base_rate);
  CAIRN_CHECK(start_step >= 0, "LearningRateSchedule: start_step must be >= 0, got ", start_step);
  CAIRN_CHECK(warmup_steps >= 0, "LearningRateSchedule: warmup_steps must be >= 0, got ",
              warmup_steps);
  if (kind == Kind::kCosine) {
    CAIRN_CHECK(horizon_steps > warmup_steps && horizon_steps <= INT64_MAX - start_step,
                "LearningRateSchedule: a cosine schedule's horizon_steps (", horizon_steps,
                ") must be more than its warmup_steps (", warmup_steps, ")");
  } else {
    CAIRN_CHECK(horizon_steps == 0,
                "LearningRateSchedule: a constant schedule has no horizon, "
                "got horizon_steps ",
                horizon_steps);
  }
}

int64_t LearningRateSchedule::end_step() const {
  return kind == Kind::kCosine ? start_step + horizon_steps : INT64_MAX;
}

float LearningRateSchedule::rate(int64_t step) const {
  CAIRN_CHECK(step >= start_step, "LearningRateSchedule::rate: step ", step,
              " comes before the schedule, which starts at step ", start_step);
  CAIRN_CHECK(step < end_step(), "LearningRateSchedule::rate: step ", step, " is past the end of ",
              str());
  const int64_t k = step - start_step;
  if (k < warmup_steps) {
    return float(double(base_rate) * double(k + 1) / double(warmup_steps));
  }
  if (kind == Kind::kConstant) return base_rate;
  const double t = double(k - warmup_steps), total = double(horizon_steps - warmup_steps);
  return float(double(base_rate) * 0.5 * (1.0 + std::cos(kPi * t / total)));
}

bool LearningRateSchedule::operator==(const LearningRateSchedule& other) const {
  // Bits, not float equality: a resumed run must take the very same rates.
  return kind == other.kind && exact(base_rate) == exact(other.base_rate) &&
         start_step == other.start_step && horizon_steps == other.horizon_steps &&
         warmup_steps == other.warmup_steps;
}

std::string LearningRateSchedule::str() const {
  std::string text;
  if (kind == Kind::kCosine) {
    text = "cosine from " + exact(base_rate) + " to 0 over " + std::to_string(horizon_steps) +
           " steps (steps " + std::to_string(start_step) + " to " +
           std::to_string(start_step + horizon_steps - 1) + ")";
  } else {
    text = "constant " + exact(base_rate) + " from step " + std::to_string(start_step);
  }
  return text + (warmup_steps == 0 ? ", no warm-up"
                                   : ", warm-up " + std::to_string(warmup_steps) + " steps");
}

std::map<std::string, std::string> LearningRateSchedule::metadata() const {
  return {{kPrefix + "kind", kind_name(kind)},
          {kPrefix + "base_rate", exact(base_rate)},
          {kPrefix + "start_step", std::to_string(start_step)},
          {kPrefix + "horizon_steps", std::to_string(horizon_steps)},
          {kPrefix + "warmup_steps", std::to_string(warmup_steps)}};
}

bool LearningRateSchedule::in_metadata(const std::map<std::string, std::string>& metadata) {
  return metadata.count(kPrefix + "kind") > 0;
}

LearningRateSchedule LearningRateSchedule::from_metadata(
    const std::map<std::string, std::string>& metadata) {
  std::string problems;
  auto text = [&](const std::string& field) -> const std::string* {
    const auto found = metadata.find(kPrefix + field);
    if (found == metadata.end()) {
      problems += "\n  '" + kPrefix + field + "': missing";
      return nullptr;
    }
    return &found->second;
  };
  auto bad = [&](const std::string& field, const std::string& value, const char* expected) {
    problems += "\n  '" + kPrefix + field + "': '" + value.substr(0, 40) + "' is not " + expected;
  };
  auto count = [&](const std::string& field) -> int64_t {
    const std::string* value = text(field);
    if (value == nullptr) return 0;
    char* end = nullptr;
    errno = 0;
    const long long parsed = std::strtoll(value->c_str(), &end, 10);
    if (value->empty() || (*value)[0] < '0' || (*value)[0] > '9' ||
        end != value->c_str() + value->size() || errno == ERANGE) {
      bad(field, *value, "a whole number >= 0");
      return 0;
    }
    return int64_t(parsed);
  };
  LearningRateSchedule schedule;
  if (const std::string* kind = text("kind")) {
    if (*kind == "cosine") {
      schedule.kind = Kind::kCosine;
    } else if (*kind != "constant") {
      bad("kind", *kind, "constant or cosine");
    }
  }
  if (const std::string* rate = text("base_rate")) {
    char* end = nullptr;
    errno = 0;
    schedule.base_rate = std::strtof(rate->c_str(), &end);
    if (rate->empty() || end != rate->c_str() + rate->size() || errno == ERANGE) {
      bad("base_rate", *rate, "a float");
    }
  }
  schedule.start_step = count("start_step");
  schedule.horizon_steps = count("horizon_steps");
  schedule.warmup_steps = count("warmup_steps");
  CAIRN_CHECK(problems.empty(),
              "LearningRateSchedule::from_metadata: the schedule's entries "
              "are incomplete or unreadable:",
              problems);
  schedule.validate();
  return schedule;
}

std::vector<std::pair<std::string, std::string>> LearningRateSchedule::quantities() const {
  return {{"learning-rate schedule", kind_name(kind)},
          {"learning-rate schedule: base rate", exact(base_rate)},
          {"learning-rate schedule: start step", std::to_string(start_step)},
          {"learning-rate schedule: horizon (steps)", std::to_string(horizon_steps)},
          {"learning-rate schedule: warm-up (steps)", std::to_string(warmup_steps)}};
}

}  // namespace cairn
