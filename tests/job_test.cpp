#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

#include "bulwark/job.hpp"
#include "bulwark/json_input.hpp"

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

  TEST_CASE("a named queue: 1 to 64 of A-Z a-z 0-9 - _ ., the default when none") {
    CHECK(bulwark::JobSpec::from_json(json{{"type", "echo"}, {"queue", "gpu-2.large_x"}}).queue == "gpu-2.large_x");
    CHECK(bulwark::JobSpec::from_json(json{{"type", "echo"}}).queue.empty());
    CHECK(spec_error(json{{"type", "echo"}, {"queue", 3}}) == "queue: expected a string");
    CHECK(spec_error(json{{"type", "echo"}, {"queue", ""}}) == "queue: expected 1 to 64 bytes, got 0");
    CHECK(spec_error(json{{"type", "echo"}, {"queue", std::string(65, 'q')}}) == "queue: expected 1 to 64 bytes, got 65");
    CHECK(spec_error(json{{"type", "echo"}, {"queue", "{ns}"}}) == "queue: only A-Z a-z 0-9 - _ . are allowed");
    CHECK(spec_error(json{{"type", "a"}, {"then", {{"type", "b"}, {"queue", "a:b"}}}}) ==
          "then.queue: only A-Z a-z 0-9 - _ . are allowed");
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

  TEST_CASE("unique_key and unique_for_ms: both or neither, each bounded") {
    auto spec = bulwark::JobSpec::from_json(
        json::parse(R"({"type": "echo", "unique_key": "user:42 résumé", "unique_for_ms": 60000})"));
    CHECK(spec.unique_key == "user:42 résumé");
    CHECK(spec.unique_for.count() == 60000);
    CHECK(spec_error(json{{"type", "echo"}, {"unique_key", "k"}}) == "unique_for_ms: required with unique_key");
    CHECK(spec_error(json{{"type", "echo"}, {"unique_for_ms", 5}}) == "unique_key: required with unique_for_ms");
    CHECK(spec_error(json{{"type", "echo"}, {"unique_key", 5}, {"unique_for_ms", 5}}) == "unique_key: expected a string");
    CHECK(spec_error(json{{"type", "echo"}, {"unique_key", "k"}, {"unique_for_ms", 0}}).rfind("unique_for_ms:", 0) == 0);
    CHECK(spec_error(json{{"type", "echo"}, {"unique_key", "k"}, {"unique_for_ms", 2'592'000'001LL}})
              .rfind("unique_for_ms:", 0) == 0);
    CHECK(spec_error(json{{"type", "echo"}, {"unique_key", std::string(201, 'k')}, {"unique_for_ms", 5}})
              .rfind("unique_key: longer than 200", 0) == 0);
    CHECK(spec_error(json{{"type", "echo"}, {"unique_key", "a\tb"}, {"unique_for_ms", 5}}) ==
          "unique_key: control characters are not allowed");
  }

  TEST_CASE("then: a job spec, its errors named from then; follow_up_id is stable and bounded") {
    auto spec = bulwark::JobSpec::from_json(json::parse(R"({"type": "a", "then": {"type": "b", "payload": {"x": 1}}})"));
    CHECK(spec.then["type"] == "b");
    CHECK(spec_error(json{{"type", "a"}, {"then", 5}}) == "then: expected a job spec (an object)");
    CHECK(spec_error(json{{"type", "a"}, {"then", {{"type", "b"}, {"prio", 1}}}}) == "then.prio: unknown field");
    CHECK(spec_error(json{{"type", "a"}, {"then", {{"type", "b"}, {"then", {{"x", 1}}}}}}) == "then.then.x: unknown field");
    CHECK(spec_error(json{{"type", "a"}, {"then", {{"type", "b"}, {"payload", "text"}}}}).rfind("then.payload:", 0) == 0);
    CHECK(bulwark::follow_up_id("job-1") == "job-1.then");
    const std::string long_id(198, 'j');
    const std::string hashed = bulwark::follow_up_id(long_id);
    CHECK(hashed.rfind("then-", 0) == 0);
    CHECK(hashed.size() == 21);
    CHECK(bulwark::is_valid_job_id(hashed));
    CHECK(bulwark::follow_up_id(long_id) == hashed);
    CHECK(bulwark::follow_up_id(long_id + "x") != hashed);
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

TEST_SUITE("parse_json") {
  using bulwark::parse_json;

  std::string nested(std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

  TEST_CASE("nesting up to the limit is accepted, one level more is refused while parsing") {
    CHECK(bulwark::json_depth(parse_json(nested(128), 128), 1000) == 128);
    CHECK_THROWS_AS(parse_json(nested(129), 128), bulwark::JsonDepthError);
    // 200,000 levels: refused at level 129, no recursion on the way.
    CHECK_THROWS_WITH_AS(parse_json(nested(200'000), 128), doctest::Contains("nested deeper than 128"),
                         bulwark::JsonDepthError);
    CHECK_THROWS_AS(parse_json(R"({"a":{"b":{"c":1}}})", 2), bulwark::JsonDepthError);
  }

  TEST_CASE("a number past the range of a double is bad input, not an abort") {
    CHECK_THROWS_WITH_AS(parse_json(R"({"type":"echo","payload":1e309})"), doctest::Contains("1e309"),
                         bulwark::InputError);
    CHECK_THROWS_WITH_AS(parse_json(R"({"workers": 1e309})"), doctest::Contains("'workers'"), bulwark::InputError);
    CHECK_THROWS_AS(parse_json("-1e400"), bulwark::InputError);
  }

  TEST_CASE("syntax errors and bad UTF-8 are InputError with the position") {
    CHECK_THROWS_WITH_AS(parse_json("{\"a\": }"), doctest::Contains("column"), bulwark::InputError);
    CHECK_THROWS_AS(parse_json("\"\xff\""), bulwark::InputError);
    CHECK_THROWS_AS(parse_json("{} trailing"), bulwark::InputError);
    CHECK_THROWS_AS(parse_json(""), bulwark::InputError);
  }

  TEST_CASE("json_depth counts levels without recursing") {
    CHECK(bulwark::json_depth(json(1), 10) == 0);
    CHECK(bulwark::json_depth(json::array(), 10) == 1);
    CHECK(bulwark::json_depth(json{{"a", {1, {2}}}}, 10) == 3);
  }
}

TEST_SUITE("JobSpec ids and numbers") {
  using bulwark::JobSpec;

  TEST_CASE("ids come from a safe alphabet: no CR/LF, no spaces, no '+', '?', '/' or '%'") {
    CHECK(JobSpec::from_json(json{{"type", "echo"}, {"id", "order:42~retry.1_a-B"}}).id == "order:42~retry.1_a-B");
    for (const char* bad : {"x\r\nSet-Cookie: pwned=1", "a b", "a+b", "a?b", "a/b", "a%41", ".", "..", "é"}) {
      CAPTURE(bad);
      CHECK_THROWS_WITH_AS(JobSpec::from_json(json{{"type", "echo"}, {"id", bad}}), doctest::Contains("id:"),
                           bulwark::SpecError);
    }
    CHECK_THROWS_WITH_AS(JobSpec::from_json(json{{"type", "echo"}, {"id", std::string(201, 'a')}}),
                         doctest::Contains("201 bytes"), bulwark::SpecError);
    CHECK(JobSpec::from_json(json{{"type", "echo"}, {"id", std::string(300, 'a')}}, 300).id.size() == 300);
  }

  TEST_CASE("out-of-range integers are reported as sent, not wrapped") {
    CHECK_THROWS_WITH_AS(JobSpec::from_json(json::parse(R"({"type":"echo","priority":18446744073709551615})")),
                         doctest::Contains("got 18446744073709551615"), bulwark::SpecError);
    CHECK_THROWS_WITH_AS(JobSpec::from_json(json::parse(R"({"type":"echo","delay_ms":9223372036854775808})")),
                         doctest::Contains("got 9223372036854775808"), bulwark::SpecError);
    CHECK_THROWS_WITH_AS(JobSpec::from_json(json::parse(R"({"type":"echo","max_attempts":-1})")),
                         doctest::Contains("got -1"), bulwark::SpecError);
  }
}

TEST_SUITE("TraceContext") {
  using bulwark::TraceContext;
  constexpr const char* kValid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

  TEST_CASE("parse reads version 00 and gives it back") {
    const auto c = TraceContext::parse(kValid, "congo=t61rcWkgMzE");
    REQUIRE(c.has_value());
    CHECK(c->trace_id == "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(c->parent_id == "00f067aa0ba902b7");
    CHECK(c->flags == 1);
    CHECK(c->state == "congo=t61rcWkgMzE");
    CHECK(c->traceparent() == kValid);
    CHECK(c->traceparent("b7ad6b7169203331") == "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01");
  }

  TEST_CASE("a later version's extra fields are allowed; version 00 must end after the flags") {
    CHECK(TraceContext::parse(std::string("01") + (kValid + 2) + "-what-the-future-adds").has_value());
    CHECK_FALSE(TraceContext::parse(std::string(kValid) + "-x").has_value());
    CHECK_FALSE(TraceContext::parse(std::string("01") + (kValid + 2) + "x").has_value());
  }

  TEST_CASE("what W3C calls invalid is refused, saying why") {
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"", "expected a W3C traceparent"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "expected a W3C traceparent"},
        {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "lowercase"},
        {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version ff"},
        {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "trace id in traceparent is all zeros"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "parent id in traceparent is all zeros"},
        {"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", "expected a W3C traceparent"},
    };
    for (const auto& b : bad) {  // not a structured binding: clang 14's CAPTURE cannot name one
      CAPTURE(b.first);
      std::string problem;
      CHECK_FALSE(TraceContext::parse(b.first, "", &problem).has_value());
      CHECK(problem.find(b.second) != std::string::npos);
    }
    std::string problem;
    CHECK_FALSE(TraceContext::parse(kValid, std::string(513, 'a'), &problem));
    CHECK(problem == "tracestate is longer than 512 bytes");
    CHECK_FALSE(TraceContext::parse(kValid, "a=\n", &problem));
  }

  TEST_CASE("new_span_id: 16 lowercase hex digits, not zero, not repeating") {
    std::set<std::string> ids;
    for (int i = 0; i < 1000; ++i) {
      const std::string id = bulwark::new_span_id();
      REQUIRE(id.size() == 16);
      CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
      CHECK(id != "0000000000000000");
      ids.insert(id);
    }
    CHECK(ids.size() == 1000);
  }

  TEST_CASE("JobSpec reads trace_parent and trace_state, strictly") {
    const auto spec = bulwark::JobSpec::from_json(json{{"type", "echo"}, {"trace_parent", kValid}, {"trace_state", "a=b"}});
    CHECK(spec.trace_parent == kValid);
    CHECK(spec.trace_state == "a=b");
    const auto error = [](const json& j) {
      try {
        bulwark::JobSpec::from_json(j);
      } catch (const bulwark::SpecError& e) {
        return std::string(e.what());
      }
      return std::string();
    };
    CHECK(error({{"type", "echo"}, {"trace_parent", 5}}) == "trace_parent: expected a string");
    CHECK(error({{"type", "echo"}, {"trace_parent", "00-xyz"}}).find("trace_parent: expected a W3C traceparent") == 0);
    CHECK(error({{"type", "echo"}, {"trace_state", "a=b"}}) == "trace_state: needs trace_parent");
    CHECK(error({{"type", "echo"}, {"trace_parent", kValid}, {"trace_state", std::string(600, 'x')}}) ==
          "trace_state: tracestate is longer than 512 bytes");
  }
}
