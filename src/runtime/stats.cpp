#include "runtime/stats.hpp"

#include <vector>

namespace bulwark::detail {

HistogramSnapshot Histogram::snapshot() const {
  HistogramSnapshot s;
  s.bounds.assign(kBounds.begin(), kBounds.end());
  s.counts.assign(kBounds.size() + 1, 0);
  std::uint64_t sum_ns = 0;
  for (const Stripe& stripe : stripes_) {
    for (std::size_t i = 0; i < stripe.counts.size(); ++i) s.counts[i] += stripe.counts[i].load(std::memory_order_relaxed);
    sum_ns += stripe.sum_ns.load(std::memory_order_relaxed);
  }
  for (const std::uint64_t c : s.counts) s.count += c;
  s.sum = static_cast<double>(sum_ns) / 1e9;
  return s;
}

std::optional<double> WaitSamples::p99_since(std::int64_t since_ms) const {
  std::vector<std::int64_t> recent;
  recent.reserve(kSize);
  for (const Sample& s : samples_) {
    if (s.at_ms.load(std::memory_order_relaxed) >= since_ms) recent.push_back(s.wait_us.load(std::memory_order_relaxed));
  }
  if (recent.empty()) return std::nullopt;
  const std::size_t k = (recent.size() * 99 + 99) / 100 - 1;
  std::nth_element(recent.begin(), recent.begin() + static_cast<std::ptrdiff_t>(k), recent.end());
  return static_cast<double>(recent[k]) / 1000.0;
}

}  // namespace bulwark::detail
