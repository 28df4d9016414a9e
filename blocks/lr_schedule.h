// Learning-rate schedules as data: what a checkpoint records, so that a resumed run continues the
// schedule it was trained under exactly (or is refused), and what a data-parallel job's ranks
// compare before their first step.
//
//   const auto schedule = LearningRateSchedule::cosine(0.1f, epochs * loader.batches_per_epoch());
//   ...
//   trainer.set_learning_rate(schedule.rate(global_step));  // global_step: 0, 1, 2, ...
//   trainer.step(1);
//   save_checkpoint(path, *net, trainer, schedule.metadata());
//
// The rate is a pure function of the global step (every step of the run, counted from 0), so a
// run resumed at step s takes the rates the uninterrupted run took. A schedule may start later
// than step 0 (start_step): that is a schedule restarted at a resumed run's step.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cairn {

struct LearningRateSchedule {
  enum class Kind {
    kConstant,  // base_rate throughout (after the warm-up)
    kCosine,    // base_rate * (1 + cos(pi * t / T)) / 2: from base_rate to 0 over the horizon
  };

  Kind kind = Kind::kConstant;
  float base_rate = 0.1f;
  int64_t start_step = 0;     // the global step at which the schedule begins
  int64_t horizon_steps = 0;  // cosine: its length in steps, warm-up included; constant: 0
  // Linear warm-up: the k-th step of the schedule (k from 0) takes base_rate * (k + 1) / warmup.
  // A cosine schedule then decays over the remaining horizon_steps - warmup_steps steps.
  int64_t warmup_steps = 0;

  static LearningRateSchedule constant(float base_rate, int64_t warmup_steps = 0,
                                       int64_t start_step = 0);
  static LearningRateSchedule cosine(float base_rate, int64_t horizon_steps,
                                     int64_t warmup_steps = 0, int64_t start_step = 0);

  // Throws a cairn::Error naming the field for a negative or non-finite rate, a negative step,
  // a cosine horizon not longer than its warm-up, or a constant schedule with a horizon.
  void validate() const;
  // The rate of global step `step`; throws for a step before start_step or, for a cosine
  // schedule, at or past its end (start_step + horizon_steps): a run longer than its schedule
  // would otherwise train on rates nobody chose.
  float rate(int64_t step) const;
  // The first global step past the schedule (cosine), or INT64_MAX (constant).
  int64_t end_step() const;

  bool operator==(const LearningRateSchedule& other) const;
  bool operator!=(const LearningRateSchedule& other) const { return !(*this == other); }
  // "cosine from 0.1 to 0 over 60 steps (steps 0 to 59), no warm-up"
  std::string str() const;
  static const char* kind_name(Kind kind);  // "constant", "cosine"

  // Header entries for a checkpoint: "lr_schedule.kind", "lr_schedule.base_rate" (to the bit),
  // "lr_schedule.start_step", "lr_schedule.horizon_steps", "lr_schedule.warmup_steps".
  std::map<std::string, std::string> metadata() const;
  // Whether `metadata` records a schedule at all (checkpoints written before schedules were
  // recorded do not).
  static bool in_metadata(const std::map<std::string, std::string>& metadata);
  // Reads metadata() back, validated; every missing or unreadable entry is named in one
  // cairn::Error.
  static LearningRateSchedule from_metadata(const std::map<std::string, std::string>& metadata);
  // Each field as a named value, for Trainer::enable_data_parallel's must_agree.
  std::vector<std::pair<std::string, std::string>> quantities() const;
};

}  // namespace cairn
