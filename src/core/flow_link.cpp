#include "core/flow_link.hpp"

#include "bulwark/detail/task.hpp"
#include "bulwark/job_context.hpp"

namespace bulwark {

namespace detail {

nlohmann::json payload_with_children(const nlohmann::json& payload, const FlowLink* flow) {
  if (flow == nullptr || !flow->is_parent()) return payload;
  const auto outcomes = flow->released();
  nlohmann::json out = payload.is_object() ? payload : nlohmann::json::object();
  out["children"] = outcomes ? *outcomes : nlohmann::json::array();
  return out;
}

}  // namespace detail

std::vector<ChildOutcome> JobContext::children() const {
  std::vector<ChildOutcome> out;
  const detail::FlowLink* flow = task_.spec().flow.get();
  if (flow == nullptr) return out;
  const auto outcomes = flow->released();
  if (!outcomes) return out;
  out.reserve(outcomes->size());
  for (const auto& entry : *outcomes) {
    if (auto child = child_outcome_from_json(entry)) out.push_back(std::move(*child));
  }
  return out;
}

}  // namespace bulwark
