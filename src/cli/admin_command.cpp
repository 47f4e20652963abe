#include "cli/admin_command.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <functional>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "http/client.hpp"

namespace bulwark::cli {
namespace {

using nlohmann::json;

// What the admin commands' flags fill in (CLI11 writes here while parsing).
struct AdminArgs {
  std::string server;
  std::string token;
  bool json_output = false;
  int timeout_ms = 10'000;
  // submit
  std::string type;
  std::string payload;
  bool wait = false;
  bool ready = false;  // health --ready: /readyz instead of /healthz
  int wait_s = 0;  // 0: no limit
  int priority = 0;
  long delay_ms = 0;
  int max_attempts = 0;  // 0: the type's
  std::string id;
  // get, retry, cancel
  std::vector<std::string> ids;
  // list, dead
  std::string state;
  std::string list_type;
  std::string list_queue;
  int limit = 50;
  // pause, resume
  bool queues = false;  // the names are named queues, not job types
  std::string cursor;
  // events
  std::string event_type;
  std::string event_state;
  long count = 0;  // 0: until the server closes
  // flow show
  int depth = 8;
};

AdminArgs& args() {
  static AdminArgs a;
  return a;
}

struct Commands {
  CLI::App* submit = nullptr;
  CLI::App* get = nullptr;
  CLI::App* list = nullptr;
  CLI::App* dead = nullptr;
  CLI::App* retry = nullptr;
  CLI::App* cancel = nullptr;
  CLI::App* types = nullptr;
  CLI::App* pause = nullptr;
  CLI::App* resume = nullptr;
  CLI::App* health = nullptr;
  CLI::App* stats = nullptr;
  CLI::App* workers = nullptr;
  CLI::App* events = nullptr;
  CLI::App* flow = nullptr;
  CLI::App* flow_show = nullptr;
};

Commands& commands() {
  static Commands c;
  return c;
}

// "a%2Fb" for "a/b": ids and query values go into URLs.
std::string encode(const std::string& s) {
  std::ostringstream out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out << c;
    } else {
      out << '%' << std::uppercase << std::hex << std::setw(2) << std::setfill('0') << static_cast<int>(c)
          << std::nouppercase << std::dec;
    }
  }
  return out.str();
}

// An error answer: its message on stderr, exit 3.
int server_error(const http::ClientResponse& r) {
  std::string message = r.body;
  try {
    const json j = json::parse(r.body);
    message = j.at("error").at("code").get<std::string>() + ": " + j.at("error").at("message").get<std::string>();
  } catch (const std::exception&) {
  }
  std::cerr << "bulwark: the server answered " << r.status << ": " << message << "\n";
  return kExitServer;
}

std::string text(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// Columns padded to their widest cell.
void print_table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(head.size());
  for (std::size_t i = 0; i < head.size(); ++i) width[i] = head[i].size();
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size() && i < width.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  const auto line = [&](const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
      if (i + 1 == cells.size()) {
        std::cout << cells[i] << "\n";
      } else {
        std::cout << std::left << std::setw(static_cast<int>(width[i])) << cells[i] << "  ";
      }
    }
  };
  line(head);
  for (const auto& row : rows) line(row);
}

void print_record(const json& r) {
  const auto field = [&](const char* name, const json& v) {
    std::cout << std::left << std::setw(12) << name << text(v) << "\n";
  };
  field("id", r.value("id", json()));
  field("type", r.value("type", json()));
  field("state", r.value("state", json()));
  if (r.contains("parent")) field("parent", r["parent"]);
  if (r.contains("children") && r["children"].is_object()) {
    const json& k = r["children"];
    field("children", json(std::to_string(k.value("total", 0)) + ": " + std::to_string(k.value("succeeded", 0)) +
                           " succeeded, " + std::to_string(k.value("failed", 0)) + " failed, " +
                           std::to_string(k.value("cancelled", 0)) + " cancelled, " +
                           std::to_string(k.value("pending", 0)) + " pending"));
  }
  field("attempts", json(std::to_string(r.value("attempts", 0)) + " of " + text(r.value("max_attempts", json()))));
  for (const char* name : {"priority", "created_at", "started_at", "finished_at", "duration_ms"}) {
    if (r.contains(name)) field(name, r[name]);
  }
  if (r.contains("result") && !r["result"].is_null()) field("result", r["result"]);
  if (r.contains("error") && r["error"].is_object()) {
    const json& e = r["error"];
    field("error", json(text(e.value("kind", json())) + ": " + text(e.value("type", json())) + ": " +
                        text(e.value("message", json()))));
    if (e.contains("trace") && e["trace"].is_array() && !e["trace"].empty()) {
      std::cout << "thrown at\n";
      for (const json& f : e["trace"]) {
        std::cout << "  " << text(f.value("function", json("?")));
        if (f.contains("file") && !f["file"].is_null()) std::cout << "  " << text(f["file"]) << ":" << text(f["line"]);
        std::cout << "\n";
      }
    }
  }
  if (r.contains("stuck_trace") && r["stuck_trace"].is_array() && !r["stuck_trace"].empty()) {
    std::cout << "stuck at\n";
    for (const json& f : r["stuck_trace"]) std::cout << "  " << text(f.value("function", json("?"))) << "\n";
  }
}

// Prints the answer (its JSON body with --json) and returns the exit status.
int answer(const http::ClientResponse& r, const std::function<void(const json&)>& human) {
  if (r.status >= 400 || r.status == 0) return server_error(r);
  if (args().json_output) {
    std::cout << r.body << (r.body.empty() || r.body.back() != '\n' ? "\n" : "");
    return kExitOk;
  }
  human(json::parse(r.body));
  return kExitOk;
}

int run_submit(http::Client& c) {
  const AdminArgs& a = args();
  json spec = {{"type", a.type}};
  if (!a.payload.empty()) {
    try {
      spec["payload"] = json::parse(a.payload);
    } catch (const json::exception& e) {
      std::cerr << "bulwark: PAYLOAD_JSON is not JSON: " << e.what() << "\n";
      return kExitUsage;
    }
  }
  if (a.priority != 0) spec["priority"] = a.priority;
  if (a.delay_ms != 0) spec["delay_ms"] = a.delay_ms;
  if (a.max_attempts != 0) spec["max_attempts"] = a.max_attempts;
  if (!a.id.empty()) spec["id"] = a.id;
  const http::ClientResponse r = c.request("POST", "/v1/jobs", spec.dump());
  if (r.status != 201) return server_error(r);
  const json accepted = json::parse(r.body);
  if (!a.wait) {
    return answer(r, [](const json& j) { std::cout << text(j["id"]) << "  " << text(j["state"]) << "\n"; });
  }
  // Long-polls until the job ends (or --wait-s passes).
  const std::string id = accepted["id"];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(a.wait_s);
  for (;;) {
    // Each long poll ends by --wait-s (and before the client's own read timeout).
    long long wait_ms = std::min<long long>(30'000, std::max(1, a.timeout_ms - 1000));
    if (a.wait_s > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      wait_ms = std::clamp<long long>(left.count(), 1, wait_ms);
    }
    const http::ClientResponse got = c.request("GET", "/v1/jobs/" + encode(id) + "?wait_ms=" + std::to_string(wait_ms));
    if (got.status != 200) return server_error(got);
    const json record = json::parse(got.body);
    const std::string state = record.value("state", "");
    const bool ended = state == "succeeded" || state == "failed" || state == "cancelled";
    if (ended || (a.wait_s > 0 && std::chrono::steady_clock::now() >= deadline)) {
      answer(got, print_record);
      if (!ended) {
        std::cerr << "bulwark: job " << id << " is still " << state << " after " << a.wait_s << " s\n";
        return kExitJobFailed;
      }
      return state == "succeeded" ? kExitOk : kExitJobFailed;
    }
  }
}

int run_list(http::Client& c, bool dead) {
  const AdminArgs& a = args();
  std::string target = "/v1/jobs?limit=" + std::to_string(a.limit);
  const std::string state = dead ? "failed" : a.state;
  if (!state.empty()) target += "&state=" + encode(state);
  if (!a.list_type.empty()) target += "&type=" + encode(a.list_type);
  if (!a.list_queue.empty()) target += "&queue=" + encode(a.list_queue);
  if (!a.cursor.empty()) target += "&cursor=" + encode(a.cursor);
  return answer(c.request("GET", target), [dead](const json& j) {
    std::vector<std::vector<std::string>> rows;
    for (const json& r : j["jobs"]) {
      std::vector<std::string> row = {text(r["id"]), text(r["type"]), text(r["state"]),
                                      std::to_string(r.value("attempts", 0)), text(r.value("created_at", json()))};
      if (dead) {
        const json& e = r.value("error", json());
        row.push_back(e.is_object() ? text(e.value("type", json())) + ": " + text(e.value("message", json())) : "-");
      }
      rows.push_back(std::move(row));
    }
    std::vector<std::string> head = {"ID", "TYPE", "STATE", "ATTEMPTS", "CREATED"};
    if (dead) head.emplace_back("ERROR");
    print_table(head, rows);
    if (j.contains("next_cursor") && !j["next_cursor"].is_null()) {
      std::cout << "(more: --cursor " << text(j["next_cursor"]) << ")\n";
    }
  });
}

// POST <collection><name>/<action> for each name given (job ids, job types)
// in turn, printing each answer; 3 if any was refused.
int post_each(http::Client& c, const std::string& collection, const std::string& action,
              const std::function<void(const json&)>& print) {
  int status = kExitOk;
  for (const std::string& name : args().ids) {
    const http::ClientResponse r = c.request("POST", collection + encode(name) + "/" + action);
    if (r.status != 200) {
      std::cerr << name << ": ";
      status = server_error(r);
      continue;
    }
    answer(r, print);
  }
  return status;
}

// retry and cancel.
int run_each(http::Client& c, const std::string& action) {
  return post_each(c, "/v1/jobs/", action, [](const json& j) {
    std::cout << text(j["id"]) << "  " << text(j["state"])
              << (j.value("stop_requested", false) ? "  (stop requested)" : "") << "\n";
  });
}

int run_stats(http::Client& c) {
  return answer(c.request("GET", "/v1/stats"), [](const json& j) {
    const json& t = j["totals"];
    std::cout << "submitted " << text(t["submitted"]) << ", succeeded " << text(t["succeeded"]) << ", failed "
              << text(t["failed"]) << ", cancelled " << text(t["cancelled"]) << ", retried " << text(t["retried"])
              << ", rejected " << text(t["rejected"]) << "\n";
    std::cout << "queue " << text(j["queue"]["depth"]) << " of " << text(j["queue"]["capacity"]) << "; workers "
              << text(j["workers"]["alive"]) << " alive, " << text(j["workers"]["running"]) << " running, "
              << text(j["workers"]["abandoned"]) << " abandoned\n";
    const json& rates = j["rates_per_second"];
    std::cout << std::fixed << std::setprecision(1) << "per second over the last " << rates.value("window_s", 0.0)
              << " s: " << rates.value("submitted", 0.0) << " submitted, " << rates.value("succeeded", 0.0)
              << " succeeded, " << rates.value("failed", 0.0) << " failed\n";
    std::vector<std::vector<std::string>> rows;
    for (const auto& [state, n] : j["by_state"].items()) rows.push_back({state, text(n)});
    if (!rows.empty()) print_table({"STATE", "JOBS"}, rows);
    std::vector<std::vector<std::string>> queues;
    const json named = j.value("queues", json::object());  // kept: items() refers to it
    for (const auto& [name, q] : named.items()) {
      queues.push_back({name, text(q["ready"]), text(q["waiting"]), text(q["weight"]), text(q["consumers"]),
                        q.value("paused", false) ? "paused" : ""});
    }
    if (!queues.empty()) print_table({"QUEUE", "READY", "WAITING", "WEIGHT", "CONSUMERS", ""}, queues);
  });
}

int run_workers(http::Client& c) {
  return answer(c.request("GET", "/v1/workers"), [](const json& j) {
    std::cout << "verdict " << text(j["verdict"]) << "\n";
    std::vector<std::vector<std::string>> rows;
    for (const json& w : j["workers"]) {
      rows.push_back({text(w["id"]), text(w["state"]), text(w["job"]), text(w["ms_since_heartbeat"]),
                      text(w["restarts"]), w.value("abandoned", false) ? "yes" : "no"});
    }
    print_table({"WORKER", "STATE", "JOB", "MS_SINCE_HEARTBEAT", "RESTARTS", "ABANDONED"}, rows);
    std::vector<std::vector<std::string>> processes;
    for (const json& p : j["processes"]) {
      if (p.value("state", "") == "not_started") continue;
      processes.push_back({text(p["id"]), text(p["pid"]), text(p["state"]), text(p["job"]), text(p["restarts"]),
                           text(p["last_exit"])});
    }
    if (!processes.empty()) print_table({"PROCESS", "PID", "STATE", "JOB", "RESTARTS", "LAST_EXIT"}, processes);
  });
}

int run_types(http::Client& c) {
  return answer(c.request("GET", "/v1/types"), [](const json& j) {
    std::vector<std::vector<std::string>> rows;
    for (const json& t : j["types"]) {
      const json& limits = t["limits"];
      std::string rate = "-";
      if (limits["rate"].is_object()) {
        std::ostringstream r;
        r << limits["rate"]["per_second"].get<double>() << "/s burst " << text(limits["rate"]["burst"]);
        rate = r.str();
      }
      rows.push_back({text(t["type"]), t.value("paused", false) ? "paused" : "running",
                      limits["concurrency"].is_null() ? "-" : text(limits["concurrency"]), rate, text(t["running"]),
                      text(t["held"]), text(t["counts"]["succeeded"]), text(t["breaker"])});
    }
    print_table({"TYPE", "STATE", "CONCURRENCY", "RATE", "RUNNING", "HELD", "SUCCEEDED", "BREAKER"}, rows);
  });
}

// pause and resume (of job types, or with --queues of named queues).
int run_pause(http::Client& c, const std::string& action) {
  const bool queues = args().queues;
  return post_each(c, queues ? "/v1/queues/" : "/v1/types/", action, [queues](const json& j) {
    std::cout << (queues ? std::string("queue ").append(text(j["queue"])) : text(j["type"])) << "  "
              << (j.value("paused", false) ? "paused" : "resumed") << (j.value("changed", false) ? "" : " (already)")
              << "\n";
  });
}

// GET /healthz (or /readyz): 0 when it answers 200, 3 otherwise, so a
// container's HEALTHCHECK needs no curl in the image.
int run_health(http::Client& c) {
  const http::ClientResponse r = c.request("GET", args().ready ? "/readyz" : "/healthz");
  if (r.status == 0) return server_error(r);
  if (args().json_output) {
    std::cout << r.body << (r.body.empty() || r.body.back() != '\n' ? "\n" : "");
  } else {
    const json j = json::parse(r.body);
    std::cout << (j.contains("status") ? text(j["status"]) : j.value("ready", false) ? "ready" : "not ready");
    if (j.contains("reason")) std::cout << ": " << text(j["reason"]);
    for (const json& reason : j.value("reasons", json::array())) std::cout << "\n  " << text(reason);
    std::cout << "\n";
  }
  return r.status == 200 ? kExitOk : kExitServer;
}

int run_events(http::Client& c) {
  const AdminArgs& a = args();
  std::string target = "/v1/events";
  std::string sep = "?";
  if (!a.event_type.empty()) {
    target += sep + "type=" + encode(a.event_type);
    sep = "&";
  }
  if (!a.event_state.empty()) target += sep + "state=" + encode(a.event_state);
  long seen = 0;
  std::string error;
  const int status = c.follow(
      target,
      [&](const http::StreamEvent& e) {
        if (a.json_output) {
          std::cout << e.data << std::endl;
        } else {
          json d = json::parse(e.data, nullptr, false);
          if (e.event == "job" && d.is_object()) {
            std::cout << text(d["id"]) << "  " << text(d["at"]) << "  " << text(d["job_id"]) << "  " << text(d["type"])
                      << "  " << text(d["state"]);
            if (d.contains("attempt")) std::cout << "  attempt " << text(d["attempt"]);
            if (d.contains("failure")) std::cout << "  " << text(d["failure"]);
            std::cout << std::endl;
          } else if (e.event == "supervisor" && d.is_object()) {
            std::cout << text(d["id"]) << "  " << text(d["at"]) << "  supervisor  " << text(d["action"]) << ": "
                      << text(d["message"]) << std::endl;
          } else {
            std::cout << e.event << "  " << e.data << std::endl;
          }
        }
        return a.count == 0 || ++seen < a.count;
      },
      &error);
  if (status != 200) return server_error(http::ClientResponse{status, {}, error});
  return kExitOk;
}

// One line of a flow's tree: id, type, state, how far its children are,
// why it failed.
std::string tree_line(const json& r) {
  std::string line = text(r.value("id", json())) + "  " + text(r.value("type", json())) + "  " +
                     text(r.value("state", json()));
  if (r.contains("children") && r["children"].is_object()) {
    const json& k = r["children"];
    line += "  children " + std::to_string(k.value("total", 0) - k.value("pending", 0)) + "/" +
            std::to_string(k.value("total", 0)) + " ended";
    if (k.value("failed", 0) + k.value("cancelled", 0) > 0) {
      line += " (" + std::to_string(k.value("failed", 0)) + " failed, " + std::to_string(k.value("cancelled", 0)) +
              " cancelled)";
    }
  }
  if (r.contains("error") && r["error"].is_object()) {
    line += "  " + text(r["error"].value("kind", json())) + ": " + text(r["error"].value("message", json()));
  }
  return line;
}

// The job's children, every page; each with its own children below it
// (to --depth levels), as the tree endpoint gives them. With --json, the
// tree as one JSON value: {"job", "children": [{"job", "children"}, ...]}.
json fetch_tree(http::Client& c, const json& job, int depth, int& status, std::string& error) {
  json node = {{"job", job}, {"children", json::array()}};
  if (depth <= 0 || !job.contains("children")) return node;
  std::string cursor;
  do {
    const auto r = c.request("GET", "/v1/jobs/" + encode(job["id"].get<std::string>()) + "/tree?limit=1000" +
                                        (cursor.empty() ? "" : "&cursor=" + cursor));
    if (r.status != 200) {
      status = r.status;
      error = r.body;
      return node;
    }
    const json page = json::parse(r.body);
    for (const json& child : page["children"]) node["children"].push_back(fetch_tree(c, child, depth - 1, status, error));
    cursor = page["next_cursor"].is_string() ? page["next_cursor"].get<std::string>() : std::string();
  } while (!cursor.empty() && status == 200);
  return node;
}

void print_tree(const json& node, const std::string& indent) {
  std::cout << indent << tree_line(node["job"]) << "\n";
  for (const json& child : node["children"]) print_tree(child, indent + "  ");
}

int run_flow_show(http::Client& c) {
  const AdminArgs& a = args();
  const auto root = c.request("GET", "/v1/jobs/" + encode(a.ids.front()));
  if (root.status != 200) return server_error(root);
  int status = 200;
  std::string error;
  const json tree = fetch_tree(c, json::parse(root.body), a.depth, status, error);
  if (status != 200) return server_error(http::ClientResponse{status, {}, error});
  if (a.json_output) {
    std::cout << tree.dump() << "\n";
  } else {
    print_tree(tree, "");
  }
  return kExitOk;
}

void add_connection_options(CLI::App* cmd) {
  AdminArgs& a = args();
  cmd->add_option("--server", a.server, "the server's URL (default: $BULWARK_SERVER or http://127.0.0.1:8080)");
  cmd->add_option("--token", a.token, "the API token (default: $BULWARK_TOKEN)");
  cmd->add_flag("--json", a.json_output, "print the server's JSON instead of a table");
  cmd->add_option("--timeout-ms", a.timeout_ms, "how long to wait for the server per read or write")
      ->check(CLI::Range(1, 3'600'000))
      ->capture_default_str();
}

}  // namespace

void add_admin_commands(CLI::App& app) {
  AdminArgs& a = args();
  Commands& c = commands();
  const std::string footer =
      "\nTalks to a running `bulwark serve`. Exit status: 0 ok, 1 the job did not succeed (submit --wait), "
      "2 usage, 3 the server is unreachable or answered an error.";
  c.submit = app.add_subcommand("submit", "submit a job to a running server");
  c.submit->add_option("TYPE", a.type, "the job type")->required();
  c.submit->add_option("PAYLOAD_JSON", a.payload, "the payload, as JSON");
  c.submit->add_flag("--wait", a.wait, "wait for the job's end and print its record");
  c.submit->add_option("--wait-s", a.wait_s, "with --wait, give up after this many seconds (0: never)")
      ->check(CLI::Range(0, 86'400));
  c.submit->add_option("--priority", a.priority, "0 (default) to 9, higher first")->check(CLI::Range(0, 9));
  c.submit->add_option("--delay-ms", a.delay_ms, "run no earlier than this from now")->check(CLI::NonNegativeNumber);
  c.submit->add_option("--max-attempts", a.max_attempts, "attempts before the dead-letter list")
      ->check(CLI::Range(1, 1000));
  c.submit->add_option("--id", a.id, "the job's id (default: one the server makes)");
  c.get = app.add_subcommand("get", "print a job's record, its throw-site trace included");
  c.get->add_option("ID", a.ids, "the job's id")->required()->expected(1);
  c.list = app.add_subcommand("list", "list jobs, newest first");
  c.list->add_option("--state", a.state, "only jobs in this state");
  c.list->add_option("--type", a.list_type, "only jobs of this type");
  c.dead = app.add_subcommand("dead", "list the dead letters (failed jobs), newest first");
  c.dead->add_option("--type", a.list_type, "only jobs of this type");
  for (CLI::App* cmd : {c.list, c.dead}) {
    cmd->add_option("--queue", a.list_queue, "only jobs of this named queue");
    cmd->add_option("--limit", a.limit, "at most this many (1-1000)")->check(CLI::Range(1, 1000))->capture_default_str();
    cmd->add_option("--cursor", a.cursor, "the next page, as the previous one printed");
  }
  c.retry = app.add_subcommand("retry", "put failed jobs back in the queue with fresh attempts");
  c.retry->add_option("ID", a.ids, "job ids")->required();
  c.cancel = app.add_subcommand("cancel", "cancel jobs (a running one is asked to stop)");
  c.cancel->add_option("ID", a.ids, "job ids")->required();
  c.stats = app.add_subcommand("stats", "counts, queue depth and rates");
  c.types = app.add_subcommand("types", "every job type with its limits, pause state and counts");
  c.pause = app.add_subcommand("pause", "pause job types (or, with --queues, named queues): their jobs stay queued until resumed");
  c.pause->add_option("TYPE", a.ids, "job types (with --queues: queue names)")->required();
  c.resume = app.add_subcommand("resume", "resume paused job types (or, with --queues, named queues)");
  c.resume->add_option("TYPE", a.ids, "job types (with --queues: queue names)")->required();
  for (CLI::App* cmd : {c.pause, c.resume}) cmd->add_flag("--queues", a.queues, "the names are named queues, not job types");
  c.health = app.add_subcommand("health", "the server's health verdict (/healthz); exit 0 healthy or degraded, 3 not");
  c.health->add_flag("--ready", a.ready, "readiness (/readyz) instead: exit 0 when it takes traffic");
  c.workers = app.add_subcommand("workers", "the supervisor's verdict and every worker");
  c.events = app.add_subcommand("events", "follow the event stream (job transitions, supervisor actions)");
  c.events->add_option("--type", a.event_type, "only jobs of this type");
  c.events->add_option("--state", a.event_state, "only transitions into this state");
  c.events->add_option("--count", a.count, "stop after this many events (0: follow until interrupted)")
      ->check(CLI::NonNegativeNumber);
  c.flow = app.add_subcommand("flow", "flows: a job and the children it waits for");
  c.flow_show = c.flow->add_subcommand("show", "print a flow's tree: each job with its state, children indented below");
  c.flow_show->add_option("ID", a.ids, "the id of a job of the flow (its root shows all of it)")->required()->expected(1);
  c.flow_show->add_option("--depth", a.depth, "levels of children to show")->check(CLI::Range(0, 100))->capture_default_str();
  c.flow->require_subcommand(1);
  for (CLI::App* cmd : {c.submit, c.get, c.list, c.dead, c.retry, c.cancel, c.stats, c.types, c.pause, c.resume, c.health,
                        c.workers, c.events, c.flow_show}) {
    add_connection_options(cmd);
    cmd->footer(footer);
  }
}

int admin_command(CLI::App&) {
  Commands& c = commands();
  AdminArgs& a = args();
  CLI::App* given = nullptr;
  for (CLI::App* cmd : {c.submit, c.get, c.list, c.dead, c.retry, c.cancel, c.stats, c.types, c.pause, c.resume,
                        c.health, c.workers, c.events, c.flow_show}) {
    if (cmd != nullptr && cmd->parsed()) given = cmd;
  }
  if (given == nullptr) return -1;
  if (a.server.empty()) {
    const char* env = std::getenv("BULWARK_SERVER");
    a.server = env != nullptr && *env != '\0' ? env : "http://127.0.0.1:8080";
  }
  if (a.token.empty()) {
    const char* env = std::getenv("BULWARK_TOKEN");
    if (env != nullptr) a.token = env;
  }
  try {
    http::Client client(a.server, a.token, std::chrono::milliseconds(a.timeout_ms));
    if (given == c.submit) return run_submit(client);
    if (given == c.get) {
      return answer(client.request("GET", "/v1/jobs/" + encode(a.ids.front())), print_record);
    }
    if (given == c.list) return run_list(client, false);
    if (given == c.dead) return run_list(client, true);
    if (given == c.retry) return run_each(client, "retry");
    if (given == c.cancel) return run_each(client, "cancel");
    if (given == c.stats) return run_stats(client);
    if (given == c.types) return run_types(client);
    if (given == c.pause) return run_pause(client, "pause");
    if (given == c.resume) return run_pause(client, "resume");
    if (given == c.health) return run_health(client);
    if (given == c.workers) return run_workers(client);
    if (given == c.flow_show) return run_flow_show(client);
    return run_events(client);
  } catch (const http::ClientError& e) {
    std::cerr << "bulwark: " << e.what() << "\n";
    return kExitServer;
  } catch (const nlohmann::json::exception& e) {
    std::cerr << "bulwark: the server's answer is not the JSON expected: " << e.what() << "\n";
    return kExitServer;
  }
}

}  // namespace bulwark::cli
