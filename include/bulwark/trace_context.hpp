// TraceContext: the W3C trace context (https://www.w3.org/TR/trace-context/)
// a job carries from the request that caused it, so its log lines and its
// record can be found from that request's trace.
//
// A job submitted with a traceparent (the HTTP header on POST /v1/jobs, the
// "trace_parent" field of a spec, JobSpec::trace_parent) keeps it; each of
// its attempts is a span of its own, a child of that parent, with a new span
// id. The trace id and the attempt's span id go on every log line about the
// job (ECS trace.id, span.id), on its record, and are available to the
// handler through JobContext to pass on to the services it calls:
//
//   auto r = http.post(url, body, {{"traceparent", ctx.traceparent()}});
//
// Plain values; functions are thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bulwark {

struct TraceContext {
  static constexpr std::size_t kMaxStateBytes = 512;  // tracestate kept: W3C's minimum to propagate

  std::string trace_id{};   // 32 lowercase hex digits, not all zero
  std::string parent_id{};  // 16 lowercase hex digits: the caller's span
  std::uint8_t flags = 0;   // trace-flags; bit 0: sampled
  std::string state{};      // tracestate as received (vendors' data)

  // Reads a traceparent (version 00, or a later version's first four
  // fields) and a tracestate; nullopt with `problem` set when traceparent is
  // not one, or tracestate is longer than kMaxStateBytes or not printable.
  static std::optional<TraceContext> parse(std::string_view traceparent, std::string_view tracestate = {},
                                           std::string* problem = nullptr);

  // "00-<trace_id>-<parent_id>-<flags>": the traceparent as received.
  std::string traceparent() const;
  // The traceparent of a child span of this context: `span_id` as parent.
  std::string traceparent(std::string_view span_id) const;
};

// A new span id: 16 lowercase hex digits of a random, non-zero number.
std::string new_span_id();

}  // namespace bulwark
