// The dashboard's files (ui/), compiled into the program by
// cmake/embed_assets.cmake: served at / and /ui/<name>, no network or Node
// at run time. Read-only after start; thread-safe.
#pragma once

#include <string_view>
#include <vector>

namespace bulwark::http {

struct UiAsset {
  std::string_view name;          // "index.html", "app.js", ...
  std::string_view content_type;
  std::string_view bytes;
};

const std::vector<UiAsset>& ui_assets();

}  // namespace bulwark::http
