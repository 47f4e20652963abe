// Internal: hooks for bulwark's own tests and benchmarks, never for users.
//
// Thread-safe.
#pragma once

namespace bulwark::detail::hooks {

// Called from inside a job: the worker running it dies after the job, as if
// its loop had failed outside the guarded frame. For supervisor tests.
void end_current_worker() noexcept;
// True once on the thread that called end_current_worker(), then false.
bool take_end_request() noexcept;

// Benchmarks only: runs jobs without the guarded frame, to measure what the
// frame costs on the happy path. A job that throws then ends the process.
void set_unguarded(bool unguarded) noexcept;
bool unguarded() noexcept;

}  // namespace bulwark::detail::hooks
