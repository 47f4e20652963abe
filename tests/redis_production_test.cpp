// `bulwark serve` against Redis as production runs it, each server started
// here on 127.0.0.1: a password (in the URL, or an ACL user with its
// password in a file), a wrong one, a password that Redis starts asking for
// later, TLS (a CA made here with openssl, a wrong CA, a client certificate
// the server asks for), a Redis that is full (maxmemory, noeviction) and one
// that stalls.
// The password must show nowhere: logs, bulwark config, the API, metrics,
// events, the dashboard.
#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <thread>

#include "support/http_client.hpp"
#include "support/redis_server.hpp"
#include "support/serve_process.hpp"
#include "support/tls_certs.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::testing::eventually;
using bulwark::testing::http;
using bulwark::testing::RedisServer;
using bulwark::testing::ServeProcess;
using nlohmann::json;

namespace {

constexpr const char* kPassword = "s3cret-pw%x";  // '%' goes in a URL as %25
constexpr const char* kUrlPassword = "s3cret-pw%25x";
constexpr const char* kAppPassword = "app-pw-7Qz";

std::string write_config(const std::string& path, json redis, const std::string& log_level = "info",
                         int workers = 2) {
  redis["namespace"] = "prod";
  std::ofstream(path) << json{{"workers", workers},
                              {"logging", {{"level", log_level}}},
                              {"server", {{"listen", "127.0.0.1:0"}, {"drain_timeout_ms", 1000}}},
                              {"queue", {{"backend", "redis"}}},
                              {"redis", std::move(redis)}}
                             .dump();
  return path;
}

std::string local_url(const RedisServer& server, const std::string& userinfo = "") {
  return "redis://" + userinfo + "127.0.0.1:" + std::to_string(server.port()) + "/0";
}

// What a command prints on its standard output.
std::string output_of(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

std::string submit_echo(std::uint16_t port, const json& payload) {
  const auto r = http(port, "POST", "/v1/jobs", json{{"type", "echo"}, {"payload", payload}}.dump());
  REQUIRE(r.status == 201);
  return r.json()["id"].get<std::string>();
}

bool succeeded(std::uint16_t port, const std::string& id) {
  const auto r = http(port, "GET", "/v1/jobs/" + id);
  return r.status == 200 && r.json()["state"] == "succeeded";
}

// A Redis that also listens with TLS on `port` (the fixture's own
// connections use its unix socket); `auth_clients`: "yes" wants a client
// certificate; with a `password`, it asks for it.
RedisServer::Options tls_server(const bulwark::testing::TlsCerts& certs, int port, const char* auth_clients,
                                const std::string& password = "") {
  RedisServer::Options o{.args = {"--tls-port", std::to_string(port), "--tls-cert-file", certs.crt("server"),
                                  "--tls-key-file", certs.key("server"), "--tls-ca-cert-file", certs.crt("ca"),
                                  "--tls-auth-clients", auth_clients}};
  if (!password.empty()) {
    o.args.insert(o.args.end(), {"--requirepass", password});
    o.admin_password = password;
  }
  return o;
}

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_SUITE("redis production") {
  TEST_CASE("a password in the URL or an ACL user with a password file logs in, and the password shows nowhere" *
            doctest::timeout(120)) {
    RedisServer server({.tcp = true, .args = {"--requirepass", kPassword}, .admin_password = kPassword});
    server.connect().command({"ACL", "SETUSER", "app", "on", std::string(">") + kAppPassword, "~*", "&*", "+@all"});
    const std::string secret_file = server.dir() + "/app-password";
    std::ofstream(secret_file) << kAppPassword << "\n";  // as a mounted secret: with its line break
    const std::string a_config = write_config(server.dir() + "/a.json", {{"url", local_url(server, std::string(":") + kUrlPassword + "@")}});
    const std::string b_config = write_config(server.dir() + "/b.json", {{"url", local_url(server)},
                                                                           {"username", "app"},
                                                                           {"password_file", secret_file}});
    ServeProcess a(a_config, server.dir() + "/a.err");
    ServeProcess b(b_config, server.dir() + "/b.err");
    const std::uint16_t pa = a.port_from_banner();
    const std::uint16_t pb = b.port_from_banner();

    const std::string id = submit_echo(pa, {{"n", 1}});
    CHECK(eventually([&] { return succeeded(pb, id); }, 20s));  // written by A, seen through B
    CHECK(http(pa, "GET", "/readyz").status == 200);
    CHECK(http(pb, "GET", "/readyz").status == 200);

    std::vector<std::pair<std::string, std::string>> shown;
    for (const std::uint16_t port : {pa, pb}) {
      for (const char* target : {"/v1/processes", "/v1/workers", "/metrics", "/v1/events", "/v1/stats", "/v1/jobs",
                                 "/v1/jobs/" , "/healthz", "/readyz", "/"}) {
        const std::string t = std::string(target) == "/v1/jobs/" ? "/v1/jobs/" + id : target;
        shown.emplace_back(t, http(port, "GET", t).body);
      }
    }
    CHECK(shown[0].second.find("\"host\"") != std::string::npos);  // the list is there
    for (const char* cfg : {"a", "b"}) {
      const std::string path = server.dir() + "/" + cfg + ".json";
      shown.emplace_back(std::string("config ") + cfg, output_of(std::string(BULWARK_BINARY) + " config --config " + path));
      shown.emplace_back(std::string("config --json ") + cfg,
                         output_of(std::string(BULWARK_BINARY) + " config --json --config " + path));
    }
    CHECK(shown[shown.size() - 4].second.find("<redacted>") != std::string::npos);  // a's URL, redacted
    CHECK(shown.back().second.find("password_file") != std::string::npos);
    for (ServeProcess* p : {&a, &b}) {
      ::kill(p->pid, SIGTERM);
      CHECK(p->wait_exit() == 0);
    }
    shown.emplace_back("a's log", a.stderr_text());
    shown.emplace_back("b's log", b.stderr_text());
    CHECK(shown.back().second.find("runtime started") != std::string::npos);
    for (const auto& entry : shown) {
      const std::string& where = entry.first;
      const std::string& text = entry.second;
      CAPTURE(where);
      CHECK(text.find("s3cret-pw") == std::string::npos);
      CHECK(text.find(kAppPassword) == std::string::npos);
    }
  }

  TEST_CASE("a wrong password or an unknown user stops bulwark serve at start with exit 2 and Redis's answer" *
            doctest::timeout(60)) {
    RedisServer server({.tcp = true, .args = {"--requirepass", kPassword}, .admin_password = kPassword});
    for (const json& redis : {json{{"url", local_url(server, ":wrong-pw-9@")}},
                              json{{"url", local_url(server)}, {"username", "nobody"}, {"password", "wrong-pw-9"}},
                              json{{"url", local_url(server)}}}) {
      CAPTURE(redis.dump());
      ServeProcess p(write_config(server.dir() + "/wrong.json", redis), server.dir() + "/wrong.err");
      CHECK(p.wait_exit() == 2);
      const std::string err = p.stderr_text();
      CHECK(err.find("127.0.0.1:" + std::to_string(server.port())) != std::string::npos);
      CHECK((err.find("WRONGPASS") != std::string::npos || err.find("NOAUTH") != std::string::npos));
      CHECK(err.find("wrong-pw-9") == std::string::npos);
      CHECK(count_of(err, "\n") <= 2);
    }
  }

  TEST_CASE("a Redis that starts asking for a password is told once as a change of state, and again when it is mended" *
            doctest::timeout(120)) {
    RedisServer server({.tcp = true});
    auto admin = server.connect();  // stays logged in when the password comes
    ServeProcess p(write_config(server.dir() + "/later.json", {{"url", local_url(server)}}), server.dir() + "/later.err");
    const std::uint16_t port = p.port_from_banner();
    CHECK(eventually([&] { return http(port, "GET", "/readyz").status == 200; }, 10s));
    admin.command({"CONFIG", "SET", "requirepass", "later-pw"});
    admin.command({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});  // bulwark's connections log in again
    bulwark::testing::HttpResponse ready;
    CHECK(eventually(
        [&] {
          ready = http(port, "GET", "/readyz");
          return ready.status == 503 && ready.body.find("NOAUTH") != std::string::npos;
        },
        10s));
    CHECK(http(port, "GET", "/healthz").json()["status"] == "degraded");
    std::this_thread::sleep_for(3s);  // the loops keep trying, with backoff
    const std::string during = p.stderr_text();
    const std::size_t lines = count_of(during, "cannot work");
    CHECK(lines >= 1);
    // Once per loop and change (connection closed, then NOAUTH), not once a try.
    CHECK(lines <= 10);
    std::this_thread::sleep_for(2s);
    CHECK(count_of(p.stderr_text(), "cannot work") == lines);
    const std::string metrics = http(port, "GET", "/metrics").body;
    CHECK(metrics.find("bulwark_redis_errors_total{kind=\"login\"} 0") == std::string::npos);
    CHECK(metrics.find("bulwark_redis_errors_total{kind=\"login\"}") != std::string::npos);
    const auto refused = http(port, "POST", "/v1/jobs", R"({"type": "echo", "payload": 1})");
    CHECK(refused.status == 503);
    CHECK(refused.json()["error"]["code"] == "backend_unavailable");
    CHECK(http(port, "GET", "/v1/jobs?limit=1").status == 503);

    admin.command({"CONFIG", "SET", "requirepass", ""});
    CHECK(eventually([&] { return http(port, "GET", "/readyz").status == 200; }, 10s));
    CHECK(eventually([&] { return count_of(p.stderr_text(), "works again") >= 1; }, 10s));
    const std::string id = submit_echo(port, 2);
    CHECK(eventually([&] { return succeeded(port, id); }, 10s));
    CHECK(count_of(p.stderr_text(), "cannot work") == lines);
  }

  TEST_CASE("a full Redis refuses new jobs with backend_full and still runs every job it accepted" *
            doctest::timeout(180)) {
    RedisServer server({.tcp = true, .args = {"--maxmemory", "3mb", "--maxmemory-policy", "noeviction"}});
    // A producer alone fills Redis: nothing runs yet.
    ServeProcess producer(write_config(server.dir() + "/producer.json", {{"url", local_url(server)}, {"consume", false}}),
                          server.dir() + "/producer.err");
    const std::uint16_t pp = producer.port_from_banner();
    const std::string blob(1000, 'x');
    std::vector<std::string> accepted;
    bulwark::testing::HttpResponse last;
    for (int i = 0; i < 20'000; ++i) {
      last = http(pp, "POST", "/v1/jobs", json{{"type", "echo"}, {"payload", {{"i", i}, {"blob", blob}}}}.dump());
      if (last.status != 201) break;
      accepted.push_back(last.json()["id"].get<std::string>());
    }
    REQUIRE(last.status == 503);
    CHECK(last.json()["error"]["code"] == "backend_full");
    CHECK(last.json()["error"]["message"].get<std::string>().find("maxmemory") != std::string::npos);
    CHECK(last.header("retry-after") != "");
    CHECK(accepted.size() > 100);
    CHECK(producer.stderr_text().find("Traceback") == std::string::npos);
    CHECK(count_of(producer.stderr_text(), "\n") < 20);  // no line (and no trace) per refused request

    // A consumer started now: ready, and it drains the full Redis.
    ServeProcess consumer(write_config(server.dir() + "/consumer.json", {{"url", local_url(server)}}),
                          server.dir() + "/consumer.err");
    const std::uint16_t pc = consumer.port_from_banner();
    CHECK(eventually([&] { return http(pc, "GET", "/readyz").status == 200; }, 10s));
    const auto unfinished = [&] {
      const json by_state = http(pc, "GET", "/v1/stats").json()["by_state"];
      return by_state.value("queued", 0) + by_state.value("scheduled", 0) + by_state.value("running", 0);
    };
    CHECK(eventually([&] { return unfinished() == 0; }, 120s));
    // Fifty of them, spread over the run, each asked for its end.
    const std::size_t step = std::max<std::size_t>(1, accepted.size() / 50);
    std::size_t asked = 0, ended = 0;
    for (std::size_t i = 0; i < accepted.size(); i += step, ++asked) ended += succeeded(pc, accepted[i]) ? 1 : 0;
    CHECK(ended == asked);
  }

  TEST_CASE("reads while Redis stalls answer 503 backend_unavailable, not 500" * doctest::timeout(60)) {
    RedisServer server({.tcp = true});
    ServeProcess p(write_config(server.dir() + "/stall.json", {{"url", local_url(server)}, {"command_timeout_ms", 300}}),
                   server.dir() + "/stall.err");
    const std::uint16_t port = p.port_from_banner();
    const std::string id = submit_echo(port, 3);
    CHECK(eventually([&] { return succeeded(port, id); }, 10s));
    server.connect().command({"CLIENT", "PAUSE", "2000", "ALL"});
    const auto list = http(port, "GET", "/v1/jobs?limit=1");
    const auto one = http(port, "GET", "/v1/jobs/" + id);
    CHECK(list.status == 503);
    CHECK(list.json()["error"]["code"] == "backend_unavailable");
    CHECK(list.header("retry-after") == "1");
    CHECK(one.status == 503);
    CHECK(p.stderr_text().find("internal_error") == std::string::npos);
    CHECK(eventually([&] { return http(port, "GET", "/v1/jobs?limit=1").status == 200; }, 10s));
  }

  TEST_CASE("rediss:// verifies the server against redis.tls.ca_file; a wrong CA stops serve at start with exit 2" *
            doctest::timeout(120)) {
    const bulwark::testing::TlsCerts certs;
    const int port = RedisServer::free_port();
    RedisServer server(tls_server(certs, port, "no", kPassword));
    const std::string url = "rediss://:" + std::string(kUrlPassword) + "@localhost:" + std::to_string(port) + "/0";
    {
      ServeProcess p(write_config(server.dir() + "/tls.json", {{"url", url}, {"tls", {{"ca_file", certs.crt("ca")}}}}),
                     server.dir() + "/tls.err");
      const std::uint16_t hp = p.port_from_banner();
      const std::string id = submit_echo(hp, {{"over", "tls"}});
      CHECK(eventually([&] { return succeeded(hp, id); }, 20s));
      CHECK(http(hp, "GET", "/readyz").status == 200);
      CHECK(p.stderr_text().find("cannot work") == std::string::npos);
    }
    {  // A server_name the certificate does not name is refused too.
      ServeProcess p(write_config(server.dir() + "/name.json", {{"url", url},
                                                                {"tls", {{"ca_file", certs.crt("ca")},
                                                                         {"server_name", "redis.example"}}}}),
                     server.dir() + "/name.err");
      CHECK(p.wait_exit() == 2);
      CHECK(p.stderr_text().find("certificate verify failed") != std::string::npos);
    }
    {
      ServeProcess p(write_config(server.dir() + "/wrong.json", {{"url", url}, {"tls", {{"ca_file", certs.crt("other-ca")}}}}),
                     server.dir() + "/wrong.err");
      CHECK(p.wait_exit() == 2);
      const std::string err = p.stderr_text();
      CHECK(err.find("rediss://localhost:" + std::to_string(port)) != std::string::npos);
      CHECK(err.find("certificate verify failed") != std::string::npos);
      CHECK(err.find("s3cret") == std::string::npos);
    }
    {  // verify: false takes any certificate, and says so.
      ServeProcess p(write_config(server.dir() + "/noverify.json",
                                  {{"url", url}, {"tls", {{"ca_file", certs.crt("other-ca")}, {"verify", false}}}}),
                     server.dir() + "/noverify.err");
      const std::uint16_t hp = p.port_from_banner();
      CHECK(eventually([&] { return http(hp, "GET", "/readyz").status == 200; }, 10s));
      CHECK(p.stderr_text().find("redis.tls.verify is false") != std::string::npos);
    }
  }

  TEST_CASE("a server that asks for a client certificate gets redis.tls.cert_file; without one serve stops with exit 2" *
            doctest::timeout(120)) {
    const bulwark::testing::TlsCerts certs;
    const int port = RedisServer::free_port();
    RedisServer server(tls_server(certs, port, "yes"));
    const std::string url = "redis://127.0.0.1:" + std::to_string(port) + "/0";  // TLS from redis.tls.enabled
    {
      ServeProcess p(write_config(server.dir() + "/none.json",
                                  {{"url", url}, {"tls", {{"enabled", true}, {"ca_file", certs.crt("ca")}}}}),
                     server.dir() + "/none.err");
      CHECK(p.wait_exit() == 2);
      CHECK(p.stderr_text().find("certificate") != std::string::npos);
    }
    ServeProcess p(write_config(server.dir() + "/client.json",
                                {{"url", url},
                                 {"tls",
                                  {{"enabled", true},
                                   {"ca_file", certs.crt("ca")},
                                   {"cert_file", certs.crt("client")},
                                   {"key_file", certs.key("client")}}}}),
                   server.dir() + "/client.err");
    const std::uint16_t hp = p.port_from_banner();
    const std::string id = submit_echo(hp, 7);
    CHECK(eventually([&] { return succeeded(hp, id); }, 20s));
  }
}
