// Internal: what the parent and a child worker process agree on besides the
// frames (wire.hpp): how the child finds its socket, and which signal means
// "stop the job" (the stack-dump signal and the alternate stack are
// support/signals.hpp's, shared with the worker threads).
#pragma once

#include <signal.h>

#include <cstddef>

namespace bulwark {

inline constexpr const char* kChildFdEnv = "BULWARK_WORKER_FD";
inline constexpr int kChildStopSignal = SIGUSR1;

// Exit statuses of a child that cannot serve (README, "Process isolation").
inline constexpr int kChildExitBadFd = 2;      // BULWARK_WORKER_FD is not a descriptor number
inline constexpr int kChildExitBadFrame = 3;   // the parent sent a malformed frame
inline constexpr int kChildExitNoHook = 86;    // a Runtime was started without the call

}  // namespace bulwark
