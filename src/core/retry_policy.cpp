#include "bulwark/retry_policy.hpp"

#include <algorithm>
#include <cmath>

namespace bulwark {

std::chrono::milliseconds RetryPolicy::delay_after(int attempt, double unit) const noexcept {
  const double cap = static_cast<double>(max.count());
  const double exponent = std::max(0, attempt - 1);
  double base = static_cast<double>(initial.count()) * std::pow(std::max(1.0, multiplier), exponent);
  base = std::min(base, cap);  // also tames an overflow to inf
  const double spread = std::clamp(jitter, 0.0, 1.0) * (2.0 * std::clamp(unit, 0.0, 1.0) - 1.0);
  const double delay = std::clamp(base * (1.0 + spread), 0.0, cap);
  return std::chrono::milliseconds(static_cast<long long>(delay));
}

}  // namespace bulwark
