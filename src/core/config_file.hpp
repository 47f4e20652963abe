// Reading configuration: a file's JSON, shared by RuntimeOptions::from_file
// and load_config; one schedule's fields, shared by the configuration and
// the schedules added through the API.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "bulwark/config.hpp"

namespace bulwark::detail {

// One schedule's fields ({"cron", "time_zone", "job", "missed",
// "exclusive"}, and "name" if `named`: the API's form), the one reader of
// them for the configuration, the API and schedules kept in Redis. Throws
// ConfigError as "<path>.<key>: ..." ("<key>: ..." for an empty path). The
// cron, time zone and job are checked by schedule_problem, not here.
ScheduleOptions read_schedule(const nlohmann::json& value, const std::string& path, bool named);

// "host:port" or "[IPv6]:port" (a sentinel's address) as the host (without
// brackets) and a port of 1 to 65535; nullopt if it is not one.
std::optional<std::pair<std::string, int>> host_and_port(const std::string& text);

// The file's JSON (at most 16 MiB, the outside-input depth limit). Throws
// ConfigError naming the file for I/O and syntax errors.
nlohmann::json read_config_file(const std::string& path);

}  // namespace bulwark::detail
