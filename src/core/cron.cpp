#include "core/cron.hpp"

#include "bulwark/config.hpp"

#include <date/tz.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <vector>

namespace bulwark::detail {

namespace {

constexpr std::array<std::string_view, 12> kMonths = {"jan", "feb", "mar", "apr", "may", "jun",
                                                      "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr std::array<std::string_view, 7> kWeekdays = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

struct Field {
  const char* name;
  int lo, hi;
  const std::string_view* names = nullptr;  // names[i] is lo + i
  std::size_t name_count = 0;
};

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t from = 0;
  for (;;) {
    const std::size_t at = s.find(sep, from);
    out.push_back(s.substr(from, at - from));
    if (at == std::string_view::npos) return out;
    from = at + 1;
  }
}

// A number or a name of the field; nullopt if neither.
std::optional<int> value_of(std::string_view text, const Field& f) {
  if (text.empty() || text.size() > 3) return std::nullopt;
  if (std::all_of(text.begin(), text.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    int n = 0;
    for (char c : text) n = n * 10 + (c - '0');
    return n;
  }
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (std::size_t i = 0; i < f.name_count; ++i) {
    if (f.names[i] == lower) return f.lo + static_cast<int>(i);
  }
  return std::nullopt;
}

// Sets the bits of one field; false with `problem` set if it is not one.
template <std::size_t N>
bool parse_field(std::string_view text, const Field& f, std::bitset<N>& bits, std::string& problem) {
  const auto fail = [&](std::string_view what) {
    problem = std::string("cron: ") + f.name + " field '" + std::string(text) + "': " + std::string(what) +
              " (expected " + std::to_string(f.lo) + "-" + std::to_string(f.hi) + ", *, a-b, */n or lists of them)";
    return false;
  };
  for (std::string_view item : split(text, ',')) {
    int step = 1;
    const std::size_t slash = item.find('/');
    std::string_view range = item.substr(0, slash);
    if (slash != std::string_view::npos) {
      const auto s = value_of(item.substr(slash + 1), Field{f.name, 0, 0});
      if (!s || *s < 1 || *s > f.hi) return fail("a bad step");
      step = *s;
    }
    int lo = f.lo, hi = f.hi;
    if (range != "*") {
      const std::size_t dash = range.find('-');
      const auto a = value_of(range.substr(0, dash), f);
      if (!a) return fail("not a number or name");
      lo = *a;
      if (dash != std::string_view::npos) {
        const auto b = value_of(range.substr(dash + 1), f);
        if (!b) return fail("not a number or name");
        hi = *b;
      } else if (slash == std::string_view::npos) {
        hi = lo;  // a single value; "a/n" runs from a to the end
      }
      if (lo < f.lo || hi > f.hi || lo > hi) return fail("out of range");
    }
    for (int v = lo; v <= hi; v += step) bits.set(static_cast<std::size_t>(v));
  }
  return true;
}

}  // namespace

std::optional<CronSchedule> CronSchedule::parse(std::string_view expression, std::string_view time_zone,
                                                std::string* problem) {
  std::string why;
  const auto fail = [&](std::string text) -> std::optional<CronSchedule> {
    if (problem != nullptr) *problem = std::move(text);
    return std::nullopt;
  };
  std::vector<std::string_view> fields;
  for (std::string_view f : split(expression, ' ')) {
    if (!f.empty()) fields.push_back(f);
  }
  if (expression.size() > 200 || fields.size() != 5) {
    return fail("cron: expected five fields (minute hour day-of-month month day-of-week), got '" +
                std::string(expression.substr(0, 200)) + "'");
  }
  CronSchedule c;
  c.expression_ = std::string(expression);
  std::bitset<8> weekdays;
  if (!parse_field(fields[0], Field{"minute", 0, 59}, c.minutes_, why) ||
      !parse_field(fields[1], Field{"hour", 0, 23}, c.hours_, why) ||
      !parse_field(fields[2], Field{"day-of-month", 1, 31}, c.days_, why) ||
      !parse_field(fields[3], Field{"month", 1, 12, kMonths.data(), kMonths.size()}, c.months_, why) ||
      !parse_field(fields[4], Field{"day-of-week", 0, 7, kWeekdays.data(), kWeekdays.size()}, weekdays, why)) {
    return fail(std::move(why));
  }
  for (std::size_t d = 0; d < 7; ++d) c.weekdays_[d] = weekdays[d];
  if (weekdays[7]) c.weekdays_[0] = true;  // 7 is Sunday too
  c.any_day_ = fields[2] == "*";
  c.any_weekday_ = fields[4] == "*";
  c.zone_name_ = time_zone.empty() ? "UTC" : std::string(time_zone);
  try {
    c.zone_ = date::locate_zone(c.zone_name_);
  } catch (const std::exception&) {
    return fail("time_zone: '" + c.zone_name_ + "' is not a time zone of the tz database (like UTC or Europe/Berlin)");
  }
  return c;
}

bool CronSchedule::day_matches(int day_of_month, unsigned weekday) const noexcept {
  const bool by_day = days_[static_cast<std::size_t>(day_of_month)];
  const bool by_weekday = weekdays_[weekday];
  if (any_day_ || any_weekday_) return by_day && by_weekday;  // `*` matches every day
  return by_day || by_weekday;
}

std::optional<CronSchedule::SysMinutes> CronSchedule::next_after(std::chrono::system_clock::time_point t) const {
  using namespace std::chrono;
  const auto after = floor<minutes>(t);
  auto local = floor<minutes>(zone_->to_local(after)) + minutes(1);
  const auto give_up = local + days(5 * 366);
  while (local < give_up) {
    const auto day = floor<date::days>(local);
    const date::year_month_day ymd(day);
    if (!months_[static_cast<unsigned>(ymd.month())]) {
      const date::year_month next = date::year_month(ymd.year(), ymd.month()) + date::months(1);
      local = date::local_days(next / 1);
      continue;
    }
    if (!day_matches(static_cast<int>(static_cast<unsigned>(ymd.day())), date::weekday(day).c_encoding())) {
      local = day + date::days(1);
      continue;
    }
    const auto in_day = local - day;
    const auto hour = duration_cast<hours>(in_day);
    if (!hours_[static_cast<std::size_t>(hour.count())]) {
      local = day + hour + hours(1);
      continue;
    }
    const auto minute = duration_cast<minutes>(in_day - hour);
    if (!minutes_[static_cast<std::size_t>(minute.count())]) {
      local += minutes(1);
      continue;
    }
    // A local time in a daylight-saving gap maps to the gap's end; one
    // that happens twice, to its first time.
    const auto at = floor<minutes>(zone_->to_sys(local, date::choose::earliest));
    if (at > after) return at;
    local += minutes(1);
  }
  return std::nullopt;
}

}  // namespace bulwark::detail

namespace bulwark {

std::string schedule_problem(std::string_view name, const ScheduleOptions& schedule, std::size_t max_id_length) {
  if (name.empty() || name.size() > 64 || name.find(':') != std::string_view::npos ||
      !is_valid_job_id(name, max_id_length)) {
    return "name: expected 1 to 64 of A-Z a-z 0-9 - _ . ~, got '" + std::string(name.substr(0, 80)) + "'";
  }
  std::string problem;
  if (!detail::CronSchedule::parse(schedule.cron, schedule.time_zone, &problem)) return problem;
  if (!schedule.job.is_object()) return "job: expected a job spec (an object)";
  try {
    const JobSpec spec = JobSpec::from_json(schedule.job, max_id_length);
    if (!spec.id.empty()) return "job.id: not allowed: each run's id is '<name>:<yyyymmddThhmmZ>'";
  } catch (const SpecError& e) {
    return std::string("job.") + e.what();
  }
  return {};
}

}  // namespace bulwark
