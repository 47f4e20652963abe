#include <doctest/doctest.h>

#include "bulwark/job.hpp"

using nlohmann::json;

namespace {

std::string spec_error(const json& j) {
  try {
    bulwark::JobSpec::from_json(j);
  } catch (const bulwark::SpecError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_SUITE("JobSpec") {
  TEST_CASE("reads every field of the contract") {
    auto spec = bulwark::JobSpec::from_json(json::parse(R"({"type": "fail", "payload": {"throw": "int"},
        "id": "client-1", "priority": 7, "max_attempts": 3, "timeout_ms": 250, "delay_ms": 40})"));
    CHECK(spec.type == "fail");
    CHECK(spec.payload["throw"] == "int");
    CHECK(spec.id == "client-1");
    CHECK(spec.priority == 7);
    CHECK(spec.max_attempts == 3);
    CHECK(spec.timeout.count() == 250);
    CHECK(spec.delay.count() == 40);
  }

  TEST_CASE("only type is required") {
    auto spec = bulwark::JobSpec::from_json(json{{"type", "echo"}});
    CHECK(spec.payload.is_null());
    CHECK(spec.id.empty());
    CHECK(spec.priority == 0);
    CHECK_FALSE(spec.max_attempts.has_value());
  }

  TEST_CASE("errors name the field") {
    CHECK(spec_error(json::array()) == "expected a JSON object");
    CHECK(spec_error(json::object()) == "type: required");
    CHECK(spec_error(json{{"type", 5}}) == "type: expected a non-empty string");
    CHECK(spec_error(json{{"type", "echo"}, {"priority", "high"}}) == "priority: expected an integer");
    CHECK(spec_error(json{{"type", "echo"}, {"priority", 10}}) ==
          "priority: expected an integer from 0 to 9, got 10");
    CHECK(spec_error(json{{"type", "echo"}, {"max_attempts", 0}}).rfind("max_attempts:", 0) == 0);
    CHECK(spec_error(json{{"type", "echo"}, {"delay_ms", -1}}).rfind("delay_ms:", 0) == 0);
    CHECK(spec_error(json{{"type", "echo"}, {"id", ""}}).rfind("id:", 0) == 0);
    CHECK(spec_error(json{{"type", "echo"}, {"priorty", 1}}) == "priorty: unknown field");
  }

  TEST_CASE("job states round-trip through their names") {
    for (auto s : {bulwark::JobState::queued, bulwark::JobState::scheduled, bulwark::JobState::running,
                   bulwark::JobState::succeeded, bulwark::JobState::failed, bulwark::JobState::cancelled,
                   bulwark::JobState::rejected}) {
      CHECK(bulwark::parse_job_state(bulwark::to_string(s)) == s);
    }
    CHECK_FALSE(bulwark::parse_job_state("done").has_value());
    CHECK(bulwark::is_terminal(bulwark::JobState::failed));
    CHECK_FALSE(bulwark::is_terminal(bulwark::JobState::scheduled));
  }

  TEST_CASE("a record renders as the bulwark run output line") {
    bulwark::JobRecord r;
    r.id = "x";
    r.type = "echo";
    r.state = bulwark::JobState::succeeded;
    r.attempts = 1;
    r.result = 5;
    const auto j = bulwark::to_json(r, true, false);
    CHECK(j.dump() == R"({"id":"x","type":"echo","state":"succeeded","attempts":1,"result":5,"duration_ms":0.0,"error":null})");
  }
}
