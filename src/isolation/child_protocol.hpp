// Internal: what the parent and a child worker process agree on besides the
// frames (wire.hpp): how the child finds its socket, and which signals mean
// "stop the job" and "dump your stack".
#pragma once

#include <signal.h>

#include <cstddef>

namespace bulwark {

inline constexpr const char* kChildFdEnv = "BULWARK_WORKER_FD";
inline constexpr int kChildStopSignal = SIGUSR1;
inline constexpr std::size_t kChildAltStackBytes = 256 * 1024;
inline int child_dump_signal() noexcept { return SIGRTMIN + 3; }

}  // namespace bulwark
