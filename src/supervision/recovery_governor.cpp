#include "supervision/recovery_governor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

namespace bulwark::detail {
namespace {

std::string fixed(double v, int digits = 2) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

struct Reading {
  const char* name;
  std::optional<double> value;
  double high, low;
  const char* key;  // the config key of the high mark
  bool ms;
  bool reached;  // high when reached, not only passed (saturation: all busy)
};

std::vector<Reading> readings(const LoadSignals& s, const RecoveryOptions& o) {
  return {{"machine CPU", s.machine_cpu, o.cpu_high, o.cpu_low, "recovery.cpu_high", false, false},
          {"process CPU", s.process_cpu, o.process_cpu_high, o.process_cpu_low, "recovery.process_cpu_high", false,
           false},
          {"fresh queue wait p99", s.wait_p99_ms, static_cast<double>(o.wait_high.count()),
           static_cast<double>(o.wait_low.count()), "recovery.wait_high_ms", true, false},
          {"worker saturation", s.saturation, o.saturation_high, o.saturation_low, "recovery.saturation_high", false,
           true},
          {"failure rate", s.failure_rate, o.failure_high, o.failure_low, "recovery.failure_high", false, false}};
}

std::string value_text(const Reading& r) { return r.ms ? fixed(*r.value, 0) + " ms" : fixed(*r.value); }

}  // namespace

RecoveryGovernor::RecoveryGovernor(const RecoveryOptions& options, unsigned min, unsigned max)
    : options_(options), min_(std::max(1u, std::min(min, max))), max_(std::max(1u, max)), limit_(max_) {}

std::optional<RecoveryGovernor::Change> RecoveryGovernor::step(const LoadSignals& s) {
  if (!options_.adaptive) return std::nullopt;
  std::string high;
  bool all_calm = true;
  for (const Reading& r : readings(s, options_)) {
    if (!r.value) continue;
    const bool over = r.reached ? *r.value >= r.high : *r.value > r.high;
    if (over) {
      high += (high.empty() ? "" : "; ") + std::string(r.name) + " " + value_text(r) + (r.reached ? " at " : " over ") +
              r.key + " " +
              (r.ms ? fixed(r.high, 0) : fixed(r.high));
    }
    if (*r.value > r.low) all_calm = false;
  }
  if (!high.empty()) {
    calm_ = 0;
    const auto lowered = static_cast<unsigned>(std::floor(limit_ * options_.decrease_factor));
    const unsigned to = std::max(min_, std::min(lowered, limit_ - 1));
    if (to >= limit_) return std::nullopt;  // already at the floor
    Change c{limit_, to, false, "lowered " + std::to_string(limit_) + " -> " + std::to_string(to) + ": " + high};
    limit_ = to;
    return c;
  }
  if (!all_calm) {
    calm_ = 0;
    return std::nullopt;
  }
  if (++calm_ < options_.increase_after || limit_ >= max_) return std::nullopt;
  calm_ = 0;
  Change c{limit_, limit_ + 1, true,
           "raised " + std::to_string(limit_) + " -> " + std::to_string(limit_ + 1) + ": every signal under its low mark for " +
               std::to_string(options_.increase_after) + " evaluations (" + describe(s) + ")"};
  ++limit_;
  return c;
}

LoadProbe::Cpu LoadProbe::sample() {
  // /proc/stat's first line: cpu user nice system idle iowait irq softirq steal ...
  std::ifstream stat("/proc/stat");
  std::string cpu;
  std::uint64_t v[8] = {};
  stat >> cpu;
  for (auto& x : v) stat >> x;
  if (!stat || cpu != "cpu") return {};
  std::uint64_t total = 0;
  for (auto x : v) total += x;
  const std::uint64_t idle = v[3] + v[4];
  // /proc/self/stat: utime and stime are fields 14 and 15, after the
  // parenthesised command name (which may hold spaces).
  std::ifstream self("/proc/self/stat");
  std::string line;
  std::getline(self, line);
  const auto close = line.rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream fields(line.substr(close + 2));
  std::string field;
  std::uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  const std::uint64_t process = utime + stime;
  Cpu out;
  if (primed_ && total > total_) {
    const double span = static_cast<double>(total - total_);
    out.machine = std::clamp(1.0 - static_cast<double>(idle - std::min(idle, idle_)) / span, 0.0, 1.0);
    out.process = std::clamp(static_cast<double>(process - std::min(process, process_)) / span, 0.0, 1.0);
  }
  total_ = total;
  idle_ = idle;
  process_ = process;
  primed_ = true;
  return out;
}

std::string describe(const LoadSignals& s) {
  std::string out;
  for (const Reading& r : readings(s, RecoveryOptions{})) {
    if (!r.value) continue;
    out += (out.empty() ? "" : ", ") + std::string(r.name) + " " + value_text(r);
  }
  return out.empty() ? "no samples" : out;
}

}  // namespace bulwark::detail
