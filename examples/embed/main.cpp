// Embedding bulwark: register a job type, submit jobs, post a closure, and
// see where a failure was thrown.
#include <bulwark/runtime.hpp>

#include <iostream>
#include <stdexcept>

__attribute__((noinline)) void check_stock(int sku) {
  if (sku == 13) throw std::out_of_range("sku 13 is out of stock");
}
__attribute__((noinline)) void reserve(int sku) { check_stock(sku); asm volatile(""); }

int main() {
  bulwark::Registry registry;
  registry.add("reserve", [](bulwark::JobContext& ctx, const nlohmann::json& order) {
    ctx.on_failure([&] { std::cout << "rolling back order " << ctx.id() << "\n"; });
    reserve(order.at("sku").get<int>());
    return nlohmann::json{{"reserved", order.at("sku")}};
  }, {.max_attempts = 2});

  bulwark::Runtime runtime(std::move(registry), {.workers = 2, .logging = {.level = "off"}});
  auto good = runtime.submit({.type = "reserve", .payload = {{"sku", 7}}});
  auto bad = runtime.submit({.type = "reserve", .payload = {{"sku", 13}}});
  auto sum = runtime.post([] { return 20 + 22; });
  runtime.wait_idle(std::chrono::seconds(10));

  std::cout << "posted closure returned " << sum.get() << "\n";
  std::cout << "good: " << bulwark::to_string(runtime.get(good.id)->state) << "\n";
  bulwark::JobRecord failed = *runtime.get(bad.id);
  std::cout << "bad: " << bulwark::to_string(failed.state) << " after " << failed.attempts << " attempts: "
            << failed.error->type << ": " << failed.error->message << "\n";
  for (const bulwark::Frame& f : bulwark::symbolize(failed.error->trace)) {
    std::cout << "  thrown at: " << f.function << " " << f.file << ":" << f.line << "\n";
    break;  // the innermost frame is the throw site
  }
}
