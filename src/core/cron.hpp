// Cron: a five-field cron expression and a time zone, as periodic jobs use
// them (schedules.<name>.cron / .time_zone).
//
//   minute hour day-of-month month day-of-week
//   0-59   0-23 1-31         1-12  0-7 (0 and 7: Sunday)
//
// Each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a
// list of these separated by commas; months and days may be named (jan-dec,
// sun-sat, any case). As in Vixie cron, when both day-of-month and
// day-of-week are restricted a day matching either one fires.
//
// Times are found in the zone's local time and converted to UTC: a local
// time skipped by a daylight-saving change fires at the first instant after
// the gap; a local time that happens twice fires once, the first time.
//
//   auto c = CronSchedule::parse("30 2 * * mon-fri", "Europe/Berlin");
//   auto next = c->next_after(std::chrono::system_clock::now());
//
// Plain values; parse() reads the system's tz database (thread-safe).
#pragma once

#include <bitset>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace date {
class time_zone;
}

namespace bulwark::detail {

class CronSchedule {
 public:
  using SysMinutes = std::chrono::time_point<std::chrono::system_clock, std::chrono::minutes>;

  // nullopt with `problem` set ("cron: ..." or "time_zone: ...") when the
  // expression or the zone is not one.
  static std::optional<CronSchedule> parse(std::string_view expression, std::string_view time_zone,
                                           std::string* problem = nullptr);

  // The first firing strictly after `t`; nullopt if none within 5 years
  // (an expression like "0 0 30 2 *" never fires).
  std::optional<SysMinutes> next_after(std::chrono::system_clock::time_point t) const;

  const std::string& expression() const noexcept { return expression_; }
  const std::string& time_zone() const noexcept { return zone_name_; }

 private:
  bool day_matches(int day_of_month, unsigned weekday) const noexcept;

  std::string expression_;
  std::string zone_name_;
  const date::time_zone* zone_ = nullptr;
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_;      // 1..31
  std::bitset<13> months_;    // 1..12
  std::bitset<7> weekdays_;   // 0..6, Sunday 0
  bool any_day_ = true;       // day-of-month was `*`
  bool any_weekday_ = true;   // day-of-week was `*`
};

}  // namespace bulwark::detail
