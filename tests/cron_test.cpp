// Cron expressions and time zones for periodic jobs: parsing, the next
// firing time, daylight-saving changes. Pure functions of their inputs.
#include <doctest/doctest.h>

#include <date/date.h>

#include "core/cron.hpp"

using bulwark::detail::CronSchedule;
using namespace std::chrono;

namespace {

system_clock::time_point utc(int y, unsigned mo, unsigned d, int h, int mi) {
  return date::sys_days(date::year(y) / mo / d) + hours(h) + minutes(mi);
}

std::string next(const char* cron, system_clock::time_point after, const char* zone = "UTC") {
  std::string problem;
  const auto c = CronSchedule::parse(cron, zone, &problem);
  REQUIRE_MESSAGE(c, problem);
  const auto n = c->next_after(after);
  return n ? date::format("%F %R", *n) : "never";
}

std::string problem_of(const char* cron, const char* zone = "UTC") {
  std::string problem;
  CHECK_FALSE(CronSchedule::parse(cron, zone, &problem));
  return problem;
}

}  // namespace

TEST_SUITE("cron") {
  TEST_CASE("each field: numbers, ranges, steps, lists and names") {
    const auto t = utc(2026, 11, 30, 10, 7);  // a Monday
    CHECK(next("* * * * *", t) == "2026-11-30 10:08");
    CHECK(next("*/15 * * * *", t) == "2026-11-30 10:15");
    CHECK(next("0 */6 * * *", t) == "2026-11-30 12:00");
    CHECK(next("5,7,9 10 * * *", t) == "2026-11-30 10:09");
    CHECK(next("0 3 * * *", t) == "2026-12-01 03:00");
    CHECK(next("30 2 1 * *", t) == "2026-12-01 02:30");
    CHECK(next("0 0 1 jan *", t) == "2027-01-01 00:00");
    CHECK(next("0 9 * * sat,SUN", t) == "2026-12-05 09:00");
    CHECK(next("0 9 * * 7", t) == "2026-12-06 09:00");  // 7 is Sunday
    CHECK(next("0 9 * * 1-5", utc(2026, 12, 4, 10, 0)) == "2026-12-07 09:00");  // Friday after 9: Monday
    CHECK(next("10-20/5 * * * *", t) == "2026-11-30 10:10");
    CHECK(next("50/5 * * * *", t) == "2026-11-30 10:50");  // a/n: from a to the end
    CHECK(next("0 0 29 2 *", t) == "2028-02-29 00:00");
    CHECK(next("0 0 30 2 *", t) == "never");
  }

  TEST_CASE("day-of-month and day-of-week both restricted: either one fires (Vixie cron)") {
    // The 15th, or any Friday: from Monday 30 Nov 2026, Friday 4 Dec comes first.
    CHECK(next("0 12 15 * fri", utc(2026, 11, 30, 0, 0)) == "2026-12-04 12:00");
    CHECK(next("0 12 1 * fri", utc(2026, 11, 30, 0, 0)) == "2026-12-01 12:00");
  }

  TEST_CASE("local time of the zone, daylight-saving gaps and repeats") {
    // 03:00 in Berlin is 02:00 UTC in winter.
    CHECK(next("0 3 * * *", utc(2026, 11, 30, 10, 0), "Europe/Berlin") == "2026-12-01 02:00");
    // 29 March 2026: Berlin skips 02:00-03:00; 02:30 fires when the gap ends (03:00 CEST = 01:00 UTC).
    CHECK(next("30 2 * * *", utc(2026, 3, 28, 12, 0), "Europe/Berlin") == "2026-03-29 01:00");
    // 25 October 2026: 02:30 happens twice; it fires once, the first time (00:30 UTC).
    CHECK(next("30 2 * * *", utc(2026, 10, 24, 12, 0), "Europe/Berlin") == "2026-10-25 00:30");
    CHECK(next("30 2 * * *", utc(2026, 10, 25, 0, 30), "Europe/Berlin") == "2026-10-26 01:30");
    CHECK(next("0 9 * * *", utc(2026, 6, 1, 0, 0), "America/New_York") == "2026-06-01 13:00");
  }

  TEST_CASE("what is wrong is named") {
    CHECK(problem_of("* * * *").rfind("cron: expected five fields", 0) == 0);
    CHECK(problem_of("60 * * * *").rfind("cron: minute field '60': out of range", 0) == 0);
    CHECK(problem_of("* 24 * * *").rfind("cron: hour field '24'", 0) == 0);
    CHECK(problem_of("* * 0 * *").rfind("cron: day-of-month field '0'", 0) == 0);
    CHECK(problem_of("* * * 13 *").rfind("cron: month field '13'", 0) == 0);
    CHECK(problem_of("* * * * 8").rfind("cron: day-of-week field '8'", 0) == 0);
    CHECK(problem_of("*/0 * * * *").rfind("cron: minute field '*/0': a bad step", 0) == 0);
    CHECK(problem_of("5-1 * * * *").rfind("cron: minute field '5-1': out of range", 0) == 0);
    CHECK(problem_of("x * * * *").rfind("cron: minute field 'x': not a number or name", 0) == 0);
    CHECK(problem_of("* * * * *", "Mars/Olympus") ==
          "time_zone: 'Mars/Olympus' is not a time zone of the tz database (like UTC or Europe/Berlin)");
  }
}
