// Workflows: resize every image of an album side by side, then build the
// album once all of them have ended, with their results (a chord); and a
// group, whose built-in parent collects its children's results.
#include <bulwark/runtime.hpp>

#include <iostream>
#include <stdexcept>

int main() {
  bulwark::Registry registry;
  registry.add("resize", [](bulwark::JobContext&, const nlohmann::json& image) {
    if (image.at("name") == "broken.png") throw std::runtime_error("not a PNG file");
    return nlohmann::json{{"name", image.at("name")}, {"bytes", image.at("bytes").get<int>() / 4}};
  });
  registry.add("album", [](bulwark::JobContext& ctx, const nlohmann::json& album) {
    int bytes = 0, missing = 0;
    for (const bulwark::ChildOutcome& child : ctx.children()) {  // in the order they were given
      if (child.state == bulwark::JobState::succeeded) {
        bytes += child.result.at("bytes").get<int>();
      } else {
        ++missing;  // on_child_failure "ignore": the album is built without it
      }
    }
    return nlohmann::json{{"title", album.at("title")}, {"bytes", bytes}, {"missing", missing}};
  });

  bulwark::Runtime runtime(std::move(registry), {.workers = 4, .logging = {.level = "off"}});

  std::vector<bulwark::JobSpec> images;
  for (const char* name : {"a.png", "b.png", "broken.png", "c.png"}) {
    images.push_back({.type = "resize", .payload = {{"name", name}, {"bytes", 4000}}, .max_attempts = 2});
  }
  bulwark::JobSpec album = bulwark::chord(images, {.type = "album", .payload = {{"title", "Lisbon"}}});
  album.on_child_failure = bulwark::ChildFailure::ignore;
  const bulwark::Submitted submitted = runtime.submit(album);
  std::cout << "album " << submitted.id << ": " << bulwark::to_string(submitted.state) << "\n";

  const bulwark::Submitted sizes = runtime.submit(bulwark::group({{.type = "resize", .payload = {{"name", "x.png"}, {"bytes", 80}}},
                                                                  {.type = "resize", .payload = {{"name", "y.png"}, {"bytes", 40}}}}));
  runtime.wait_idle(std::chrono::seconds(10));

  const bulwark::JobRecord built = *runtime.get(submitted.id);
  std::cout << "album: " << bulwark::to_string(built.state) << " " << built.result.dump() << "\n";
  std::cout << "children: " << built.children->succeeded << " succeeded, " << built.children->failed << " failed\n";
  std::cout << "group: " << runtime.get(sizes.id)->result.dump() << "\n";
}
