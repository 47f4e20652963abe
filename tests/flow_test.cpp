// Flows (JobSpec::children): a parent admitted with its children in one
// step, waiting as waiting_children until each has ended, then running
// with their outcomes; the failure policies, groups and chords, limits,
// cancelling a tree, and exactly one parent start when children end at
// the same moment on several workers. Runs on either backend
// (flows_on_redis).
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "bulwark/runtime.hpp"
#include "support/helpers.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::JobSpec;
using bulwark::JobState;
using bulwark::Runtime;
using nlohmann::json;

namespace {

// "gate": blocks until the test opens it (or its stop is requested);
// "sum": adds up its children's numeric results and what ctx.children()
// says, so the two views can be compared; "boom": always throws.
struct Probe {
  std::atomic<bool> open{false};
  std::atomic<int> sums{0};
  std::mutex mutex;
  std::vector<json> seen;  // each "sum" run's view: payload.children and ctx.children()

  bulwark::Registry registry() {
    bulwark::Registry r = bulwark::testing::builtins();
    r.add("gate", [this](bulwark::JobContext& ctx, const json& p) {
      while (!open.load() && !ctx.stop_requested()) std::this_thread::sleep_for(2ms);
      ctx.throw_if_stop_requested();
      return p;
    });
    r.add("sum", [this](bulwark::JobContext& ctx, const json& p) {
      ++sums;
      double total = 0;
      json from_ctx = json::array();
      for (const auto& c : ctx.children()) {
        from_ctx.push_back({{"id", c.id}, {"state", std::string(bulwark::to_string(c.state))}});
        if (c.state == JobState::succeeded && c.result.is_number()) total += c.result.get<double>();
      }
      std::lock_guard lock(mutex);
      seen.push_back({{"payload", p}, {"ctx", from_ctx}});
      return json(total);
    });
    r.add("boom", [](bulwark::JobContext&, const json&) -> json { throw std::runtime_error("boom"); });
    return r;
  }
};

JobSpec echo(json payload, std::string id = {}) { return JobSpec{.type = "echo", .payload = std::move(payload), .id = std::move(id)}; }

std::optional<bulwark::JobRecord> settle(const Runtime& rt, const std::string& id) {
  return bulwark::testing::await_terminal(rt, id, 30s);
}

}  // namespace

TEST_SUITE("flows") {
  TEST_CASE("a parent waits for its children, then runs once with their outcomes in order" * doctest::timeout(60)) {
    Probe probe;
    Runtime rt(probe.registry(), bulwark::testing::test_options(2));
    JobSpec parent{.type = "sum", .payload = {{"order", 7}}};
    parent.children = {echo(1), JobSpec{.type = "gate", .payload = 2}, echo(3)};
    const auto s = rt.submit(parent);
    REQUIRE(s);
    CHECK(s.state == JobState::waiting_children);
    // Every child's id is fixed at submit: <parent>.c<N>.
    for (int i = 0; i < 3; ++i) REQUIRE(rt.get(s.id + ".c" + std::to_string(i)));
    CHECK(rt.get(s.id + ".c0")->parent == s.id);
    // While the gate child runs, the parent waits and says how far it is.
    REQUIRE(bulwark::testing::eventually([&] {
      return rt.get(s.id + ".c2")->state == JobState::succeeded && rt.get(s.id + ".c1")->state == JobState::running;
    }));
    auto waiting = rt.get(s.id);
    REQUIRE(waiting);
    CHECK(waiting->state == JobState::waiting_children);
    REQUIRE(waiting->children);
    CHECK(waiting->children->total == 3);
    CHECK(waiting->children->succeeded == 2);
    CHECK(waiting->children->pending() == 1);
    CHECK(to_json(*waiting)["children"]["pending"] == 1);
    CHECK(rt.stats().by_state.at("waiting_children") == 1);  // counted by state, on both backends
    CHECK(probe.sums.load() == 0);
    probe.open = true;
    const auto done = settle(rt, s.id);
    REQUIRE(done);
    CHECK(done->state == JobState::succeeded);
    CHECK(done->result == 6.0);
    CHECK(done->children->succeeded == 3);
    const auto by_state = rt.stats().by_state;
    CHECK((by_state.count("waiting_children") == 0 || by_state.at("waiting_children") == 0));
    CHECK(probe.sums.load() == 1);
    std::lock_guard lock(probe.mutex);
    REQUIRE(probe.seen.size() == 1);
    const json& view = probe.seen[0];
    CHECK(view["payload"]["order"] == 7);  // its own payload, with "children" added
    REQUIRE(view["payload"]["children"].size() == 3);
    for (int i = 0; i < 3; ++i) {
      const json& c = view["payload"]["children"][i];
      CHECK(c["id"] == s.id + ".c" + std::to_string(i));
      CHECK(c["state"] == "succeeded");
      CHECK(c["result"] == i + 1);
      CHECK(view["ctx"][i]["id"] == c["id"]);
    }
  }

  TEST_CASE("children of children: each level runs when the one below has ended" * doctest::timeout(60)) {
    Probe probe;
    Runtime rt(probe.registry(), bulwark::testing::test_options(2));
    JobSpec mid{.type = "sum", .id = "mid-a"};
    mid.children = {echo(10), echo(20)};
    JobSpec top{.type = "sum"};
    top.children = {mid, echo(5)};
    const auto s = rt.submit(top);
    REQUIRE(s);
    const auto done = settle(rt, s.id);
    REQUIRE(done);
    CHECK(done->state == JobState::succeeded);
    CHECK(done->result == 35.0);  // 5 + (10 + 20)
    CHECK(rt.get("mid-a.c1")->result == 20);  // a named child's own children are named after it
    CHECK(rt.get("mid-a")->parent == s.id);
  }

  TEST_CASE("on_child_failure fail: a dead child fails the parent and cancels the children not started" * doctest::timeout(60)) {
    Probe probe;
    auto o = bulwark::testing::test_options(2);
    Runtime rt(probe.registry(), o);
    JobSpec parent{.type = "sum"};
    JobSpec bad{.type = "boom", .max_attempts = 2};
    JobSpec later = echo(1);
    later.delay = 10s;  // not started when its sibling dies
    parent.children = {bad, later};
    const auto s = rt.submit(parent);
    REQUIRE(s);
    const auto done = settle(rt, s.id);
    REQUIRE(done);
    CHECK(done->state == JobState::failed);
    REQUIRE(done->error);
    CHECK(done->error->kind == bulwark::FailureKind::child_failed);
    CHECK(done->error->message.find(s.id + ".c0") != std::string::npos);
    CHECK(done->error->message.find("boom") != std::string::npos);
    CHECK(rt.get(s.id + ".c0")->attempts == 2);  // it retried under its own policy first
    const auto sibling = settle(rt, s.id + ".c1");
    REQUIRE(sibling);
    CHECK(sibling->state == JobState::cancelled);
    CHECK(probe.sums.load() == 0);
    rt.shutdown(200ms);  // a cancelled delayed job still holds the drain until its time (not this test's concern)
  }

  TEST_CASE("on_child_failure ignore keeps the failed child in the list; remove leaves it out" * doctest::timeout(60)) {
    Probe probe;
    Runtime rt(probe.registry(), bulwark::testing::test_options(2));
    JobSpec ignoring{.type = "sum"};
    ignoring.on_child_failure = bulwark::ChildFailure::ignore;
    ignoring.children = {echo(1), JobSpec{.type = "boom"}};
    JobSpec removing{.type = "sum"};
    removing.on_child_failure = bulwark::ChildFailure::ignore;
    JobSpec dropped{.type = "boom"};
    dropped.parent_on_failure = bulwark::ChildFailure::remove;  // this child's own policy
    removing.children = {echo(2), dropped};
    const auto a = rt.submit(ignoring);
    const auto b = rt.submit(removing);
    REQUIRE(a);
    REQUIRE(b);
    const auto ra = settle(rt, a.id);
    const auto rb = settle(rt, b.id);
    REQUIRE(ra);
    REQUIRE(rb);
    CHECK(ra->state == JobState::succeeded);
    CHECK(rb->state == JobState::succeeded);
    CHECK(ra->children->failed == 1);
    CHECK(rb->children->failed == 1);
    std::lock_guard lock(probe.mutex);
    REQUIRE(probe.seen.size() == 2);
    for (const json& view : probe.seen) {
      const json& list = view["payload"]["children"];
      if (list[0]["result"] == 1) {
        REQUIRE(list.size() == 2);
        CHECK(list[1]["state"] == "failed");
        CHECK(list[1]["error"]["message"] == "boom");
        CHECK(list[1]["error"]["kind"] == "exception");
      } else {
        CHECK(list.size() == 1);
        CHECK(list[0]["result"] == 2);
      }
    }
  }

  TEST_CASE("groups collect their children's results; a chord's body gets its header's; then composes" * doctest::timeout(60)) {
    Probe probe;
    Runtime rt(probe.registry(), bulwark::testing::test_options(2));
    const auto g = rt.submit(bulwark::group({echo("a"), echo("b"), echo(3)}));
    REQUIRE(g);
    const auto rg = settle(rt, g.id);
    REQUIRE(rg);
    CHECK(rg->type == "collect");
    CHECK(rg->result == json::array({"a", "b", 3}));
    JobSpec body{.type = "sum"};
    body.then = {{"type", "echo"}, {"id", "after-chord"}};
    JobSpec child = echo(4);
    child.then = {{"type", "echo"}, {"id", "after-child"}};
    const auto c = rt.submit(bulwark::chord({child, echo(5)}, body));
    REQUIRE(c);
    const auto rc = settle(rt, c.id);
    REQUIRE(rc);
    CHECK(rc->result == 9.0);
    const auto after = settle(rt, "after-chord");
    REQUIRE(after);
    CHECK(after->result["previous"]["result"] == 9.0);
    const auto after_child = settle(rt, "after-child");
    REQUIRE(after_child);
    CHECK(after_child->result["previous"]["result"] == 4);
    // The JSON form of a group.
    const auto j = rt.submit(JobSpec::from_json(json::parse(R"({"type":"collect","children":[{"type":"echo","payload":1}]})")));
    REQUIRE(j);
    CHECK(settle(rt, j.id)->result == json::array({1}));
  }

  TEST_CASE("a bad child refuses the whole flow, naming the child's path" * doctest::timeout(60)) {
    Probe probe;
    auto o = bulwark::testing::test_options(1);
    o.limits.flow_children = 5;
    o.limits.flow_depth = 2;
    Runtime rt(probe.registry(), o);
    JobSpec deep{.type = "sum", .id = "refused-root"};
    JobSpec mid{.type = "sum"};
    mid.children = {JobSpec{.type = "nope"}};
    deep.children = {echo(1), mid};
    auto s = rt.submit(deep);
    REQUIRE_FALSE(s);
    CHECK(s.error->message.rfind("children[1].children[0].type: unknown job type 'nope'", 0) == 0);
    CHECK_FALSE(rt.get("refused-root"));
    CHECK_FALSE(rt.get("refused-root.c0"));  // all or none
    // The limits, by name.
    JobSpec wide{.type = "collect"};
    for (int i = 0; i < 6; ++i) wide.children.push_back(echo(i));
    s = rt.submit(wide);
    REQUIRE_FALSE(s);
    CHECK(s.error->code == bulwark::SubmitError::Code::invalid);
    CHECK(s.error->message.find("limits.flow_children (5)") != std::string::npos);
    JobSpec tall{.type = "collect"};
    JobSpec level2{.type = "collect"};
    JobSpec level1{.type = "collect"};
    level2.children = {echo(1)};
    level1.children = {level2};
    tall.children = {level1};
    s = rt.submit(tall);
    REQUIRE_FALSE(s);
    CHECK(s.error->message.rfind("children[0].children[0].children: the flow is deeper than limits.flow_depth (2", 0) == 0);
    // JSON: the path of a bad field, and a payload that cannot take "children".
    CHECK_THROWS_WITH_AS(JobSpec::from_json(json::parse(R"({"type":"sum","children":[{"type":"echo"},{"type":"echo","priority":"x"}]})")),
                         doctest::Contains("children[1].priority"), bulwark::SpecError);
    CHECK_THROWS_WITH_AS(JobSpec::from_json(json::parse(R"({"type":"sum","payload":3,"children":[{"type":"echo"}]})")),
                         doctest::Contains("payload: expected an object"), bulwark::SpecError);
    CHECK_THROWS_WITH_AS(JobSpec::from_json(json::parse(R"({"type":"sum","on_child_failure":"maybe"})")),
                         doctest::Contains("on_child_failure"), bulwark::SpecError);
    // Nesting past what limits.flow_depth may ever allow stops the reader itself.
    json nested = {{"type", "echo"}};
    for (int i = 0; i < 150; ++i) nested = {{"type", "collect"}, {"children", json::array({nested})}};
    CHECK_THROWS_WITH_AS(JobSpec::from_json(nested), doctest::Contains("children: nested more than 100 levels"),
                         bulwark::SpecError);
    // A child's id taken already refuses the flow too.
    REQUIRE(rt.submit(echo(1, "taken")));
    JobSpec clash{.type = "collect", .id = "clash-root"};
    clash.children = {echo(1, "taken")};
    s = rt.submit(clash);
    REQUIRE_FALSE(s);
    CHECK(s.error->code == bulwark::SubmitError::Code::duplicate_id);
    CHECK(s.error->message.rfind("children[0].id", 0) == 0);
    CHECK_FALSE(rt.get("clash-root"));
    // A child's unique key held by another job refuses the flow, naming the child.
    JobSpec holder = echo(1);
    holder.unique_key = "once";
    holder.unique_for = 60s;
    REQUIRE(rt.submit(holder));
    JobSpec again{.type = "collect", .id = "unique-root"};
    again.children = {echo(2), holder};
    s = rt.submit(again);
    REQUIRE_FALSE(s);
    CHECK(s.error->code == bulwark::SubmitError::Code::duplicate_id);
    CHECK(s.error->message.rfind("children[1].unique_key: held by job ", 0) == 0);
    CHECK_FALSE(rt.get("unique-root"));
    CHECK_FALSE(rt.get("unique-root.c0"));
  }

  TEST_CASE("cancelling a parent cancels its tree: running children get their stop" * doctest::timeout(60)) {
    Probe probe;
    Runtime rt(probe.registry(), bulwark::testing::test_options(2));
    JobSpec parent{.type = "sum"};
    JobSpec queued = echo(1);
    queued.delay = 10s;
    parent.children = {JobSpec{.type = "gate"}, queued};
    const auto s = rt.submit(parent);
    REQUIRE(s);
    REQUIRE(bulwark::testing::eventually([&] { return rt.get(s.id + ".c0")->state == JobState::running; }));
    CHECK(rt.cancel(s.id) == bulwark::CancelResult::cancelled);
    for (const std::string& id : {s.id, s.id + ".c0", s.id + ".c1"}) {
      const auto r = settle(rt, id);
      REQUIRE(r);
      CHECK(r->state == JobState::cancelled);
    }
    CHECK(probe.sums.load() == 0);
    rt.shutdown(200ms);
  }

  TEST_CASE("retention keeps a flow's finished records until its root ends, then forgets them as any job's" *
            doctest::timeout(60)) {
    Probe probe;
    auto o = bulwark::testing::test_options(2);
    o.retention_max_finished = 3;
    Runtime rt(probe.registry(), o);
    JobSpec parent{.type = "sum", .id = "kept"};
    for (int i = 0; i < 5; ++i) parent.children.push_back(echo(i));
    parent.children.push_back(JobSpec{.type = "gate", .payload = 0});
    REQUIRE(rt.submit(parent));
    REQUIRE(bulwark::testing::eventually([&] { return rt.get("kept")->children->succeeded == 5; }));
    const auto others = [&] {
      for (int i = 0; i < 8; ++i) {
        const auto s = rt.submit(echo(i));
        REQUIRE(s);
        REQUIRE(settle(rt, s.id));
      }
    };
    others();  // more finished jobs than retention keeps
    for (int i = 0; i < 5; ++i) {
      INFO("child " << i);
      CHECK(rt.get("kept.c" + std::to_string(i)));  // still there: their root has not ended
    }
    probe.open = true;
    REQUIRE(settle(rt, "kept"));
    others();
    for (int i = 0; i < 5; ++i) {
      INFO("child " << i);
      CHECK_FALSE(rt.get("kept.c" + std::to_string(i)));  // retained as any job once the root ended
    }
  }

  TEST_CASE("children ending at the same moment on four workers start their parent exactly once" * doctest::timeout(120)) {
    Probe probe;
    Runtime rt(probe.registry(), bulwark::testing::test_options(4));
    for (int round = 0; round < 20; ++round) {
      probe.open = false;
      JobSpec parent{.type = "sum"};
      for (int i = 0; i < 4; ++i) parent.children.push_back(JobSpec{.type = "gate", .payload = 1});
      const auto s = rt.submit(parent);
      REQUIRE(s);
      // All four running, then released together.
      REQUIRE(bulwark::testing::eventually([&] {
        for (int i = 0; i < 4; ++i) {
          if (rt.get(s.id + ".c" + std::to_string(i))->state != JobState::running) return false;
        }
        return true;
      }));
      probe.open = true;
      const auto done = settle(rt, s.id);
      REQUIRE(done);
      CHECK(done->result == 4.0);
    }
    CHECK(rt.wait_idle(10s));
    CHECK(probe.sums.load() == 20);
  }
}
