// Time as a dependency. Logic that needs "now" takes a Clock& instead of
// calling absl::Now(), so that tests advance time by hand (ManualClock in
// libs/testing) instead of sleeping.
//
//   RateWindow window(sb::RealClock());
#pragma once

#include "absl/time/time.h"

namespace sb {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// The system clock; lives for the whole process.
Clock& RealClock();

}  // namespace sb
