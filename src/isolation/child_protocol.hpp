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

// Exit statuses of a child that cannot serve (README, "Process isolation").
inline constexpr int kChildExitBadFd = 2;      // BULWARK_WORKER_FD is not a descriptor number
inline constexpr int kChildExitBadFrame = 3;   // the parent sent a malformed frame
inline constexpr int kChildExitNoHook = 86;    // a Runtime was started without the call

}  // namespace bulwark
