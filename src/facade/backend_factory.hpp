// make_backend: the one place that names the backends. A new backend is a
// folder under src/ that implements runtime/backend.hpp, and one case here.
//
// Thread-safe (it builds a new object); blocks only if the backend's
// constructor does (none connects before start()).
#pragma once

#include <memory>

#include "bulwark/config.hpp"
#include "runtime/backend.hpp"

namespace bulwark::detail {

// The backend `options.backend` names; throws ConfigError for a setting
// the backend cannot use (redis.url that is not a Redis address).
std::unique_ptr<Backend> make_backend(const RuntimeOptions& options);

}  // namespace bulwark::detail
