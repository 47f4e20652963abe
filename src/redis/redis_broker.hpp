// RedisBroker: the Broker of a queue shared through Redis by many processes,
// with at-least-once delivery.
//
// Jobs are admitted straight into their named queue's part of Redis (one
// script: capacity, duplicate id, record, ready set; parts.hpp). A feeder
// thread keeps up to `workers + prefetch` of them per queue this process
// consumes leased to it and waiting in a local JobQueue, which picks among
// the queues by weight (or strictly), so workers fetch without a round trip; it also extends the leases of the jobs held here,
// promotes jobs whose time has come, and takes over leases that expired in
// other processes: each such job is handed to the lease-lost listener
// (set_on_lease_lost), which ends the lost attempt as every failed attempt
// ends (kind `lease_lost`). An ack that leaves room for a batch wakes the
// feeder at once. An attempt's end (finish or retry, fenced by owner and
// lease fence) is handed by the worker to an acker thread that writes the
// ends waiting, up to 256 with one script call: a worker never waits for
// Redis. Ends that cannot reach Redis wait and are written once it is back.
// A lease this process finds taken over (at a renewal, or when its end is
// refused) has its attempt's stop token set and its result dropped, with a
// warning and a count (results_dropped). Posted callables cannot cross
// processes: they stay in the local queue.
//
// Thread-safe. admit() blocks for a Redis round trip (at most the command
// timeout); ack() does not; fetch() blocks until a job is there.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <string>
#include <vector>

#include "bulwark/detail/thread_annotations.hpp"
#include "redis/connection.hpp"
#include "redis/keys.hpp"
#include "redis/parts.hpp"
#include "redis/status.hpp"
#include "runtime/job_queue.hpp"
#include "runtime/reporter.hpp"
#include "support/wake.hpp"

namespace bulwark::detail::redis {

struct BrokerOptions {
  ConnectOptions redis;  // where and how to connect; its status is the backend's
  std::string ns = "bulwark";
  std::chrono::milliseconds lease{30'000};
  unsigned workers = 1;           // 0: this process only admits; it fetches nothing
  unsigned prefetch = 1;          // jobs held beyond one per worker
  std::size_t capacity = 100'000; // jobs waiting in Redis (ready + scheduled)
  unsigned max_retries = 2;       // retries admitted at once in this process
  unsigned retry_priority_offset = 0;  // recovery.priority_offset
  std::size_t keep_finished = 10'000;
  std::size_t keep_dead = 100'000;
  std::chrono::milliseconds finished_ttl{0};  // 0: no age limit
  std::chrono::milliseconds dead_ttl{0};
  std::chrono::milliseconds poll{5};  // how long the feeder waits when Redis had nothing
  unsigned min_replicas_ack = 0;      // WAIT for this many replicas after a submit or an end; 0: none
  std::chrono::milliseconds replica_ack_timeout{1'000};
  // The named queues this process fetches from (`queues`), greatest weight
  // first (ties by name), and their own capacities (0: none); strict: by
  // weight, not drawn at random.
  struct Queue {
    std::string name;
    unsigned weight = 1;
    std::size_t capacity = 0;
  };
  std::vector<Queue> queues{{"default", 1, 0}};
  bool strict = false;
};

// The finish time (ms since the epoch) before which retention forgets a
// record: "0" (nothing) when `ttl` is 0.
std::string retention_cutoff(std::chrono::milliseconds ttl, long long now_ms);

// A job as fetched from Redis.
struct FetchedJob {
  std::string id, type, payload;
  int priority = 0;
  int max_attempts = 1;
  long long timeout_ms = 0;
  int attempt = 1;
  long long seq = 0;
  bool retry = false;
  long long created_ms = 0;
  std::string traceparent, tracestate;  // W3C trace context; empty: none
  std::string then;                     // the follow-up spec as JSON; empty: none
  std::uint64_t fence = 0;              // the lease's fencing token
  std::string queue;                    // its named queue; empty: the default
  std::string parent;                   // a flow's child: its parent; empty: none
  std::string policy;                   // and how the parent takes its failure
  std::optional<std::vector<std::string>> children;  // a flow's parent: its children's entries, in order
};

// Cancels job `id` of `queue` (the cancel script); a flow's parent that
// waited for its children takes its tree with it, each child found in
// whichever queue holds it. The script's answer for `id` (scripts.hpp,
// kCancel). Blocks for the round trips; throws RedisError.
long long cancel_job(Parts& parts, const BrokerOptions& options, const std::string& queue, const JobId& id);

// A lease this process took over from a process that died or stalled.
struct LostLease {
  int attempt = 0;            // the attempt that was lost
  std::string holder;         // the process that held it (host:pid:tag)
  long long holder_seen_ms = 0;  // that process's last heartbeat; 0: unknown
  bool cancel = false;        // a cancel was asked for while it ran
};

// Builds the local task for a fetched job (spec, type entry, record);
// null if this process does not know its type.
using TaskFactory = std::function<std::shared_ptr<Task>(const FetchedJob&)>;

// Milliseconds since the epoch of a steady-clock time point.
long long epoch_ms(Clock::time_point t);

class RedisBroker final : public Broker {
 public:
  RedisBroker(BrokerOptions options, std::string owner, TaskFactory factory);
  ~RedisBroker() override;

  // What the heartbeat tells the other processes about this one (JSON
  // text: verdict, workers); called on the feeder thread. Set before start().
  void set_describe(std::function<std::string()> describe) { describe_ = std::move(describe); }
  // Told, every heartbeat (about a second), which job types are paused in
  // Redis, and pause_epoch() as it was before Redis was asked: a listener
  // that sees another epoch now must not apply it (a pause or resume of
  // this process came in between). Called on the feeder thread. Set before start().
  void set_on_paused(std::function<void(const std::set<std::string>&, std::uint64_t epoch)> fn) {
    on_paused_ = std::move(fn);
  }
  // Told of every lease this process took over (on the feeder thread): the
  // job's task with its lease, now held here under a new fence, to end
  // through the failure path. Set before start().
  void set_on_lease_lost(std::function<void(Lease, const LostLease&)> fn) { on_lease_lost_ = std::move(fn); }
  // Where warnings go (lost leases, dropped results). Set before start().
  void set_reporter(Reporter& reporter) {
    reporter_ = &reporter;
    if (options_.redis.status) options_.redis.status->set_reporter(&reporter);
  }
  // Results of attempts whose lease was taken over before their end was
  // written: dropped (bulwark_results_dropped_total).
  std::uint64_t results_dropped() const noexcept { return results_dropped_.load(std::memory_order_relaxed); }
  // Counts this process's pauses and resumes (set_paused).
  std::uint64_t pause_epoch() const noexcept { return pause_epoch_.load(std::memory_order_acquire); }
  // Pauses or resumes a job type for every process on the queue (kept in
  // Redis); resuming gives its jobs set aside back to the ready set.
  // True if that changed it. Blocks for a round trip; throws RedisError
  // when Redis cannot be reached.
  bool set_paused(const std::string& type, bool paused);
  // Pauses or resumes a named queue for every process (kept in Redis; the
  // others see it at their next heartbeat, within about a second): no job of
  // it is fetched or started while paused. True if that changed it.
  // Blocks for a round trip; throws RedisError.
  bool set_queue_paused(const std::string& name, bool paused);
  // Starts the feeder thread (the factory may be called from then on).
  void start();
  // Takes no more jobs from Redis (shutdown has begun); the feeder goes on
  // extending the leases of the jobs held here.
  void stop_fetching() noexcept { fetching_.store(false, std::memory_order_release); }

  bool try_reserve(const Task& task) noexcept override { return local_.try_reserve(task); }
  void unreserve(const Task& task) noexcept override { local_.unreserve(task); }
  void enqueue(TaskPtr task, Clock::time_point due, Clock::time_point now) override {
    local_.enqueue(std::move(task), due, now);
  }
  Admitted admit(const TaskPtr& task, Clock::time_point due, Clock::time_point now,
                 const std::function<bool()>& record) override;
  void admit_many(std::vector<Admission>& batch, Clock::time_point now) override;
  void admit_flow(std::vector<Admission>& flow, Clock::time_point now) override;
  // Carries ends of flow children in other slots to their parents (a
  // cluster's relay sets); each is counted there once.
  void relay(Links& links, const std::string& queue, const std::string& now);
  void cancel_written(const JobId& root, const std::string& queue);
  // Queued for the acker, which writes it before the ends that follow it.
  void admit_soon(TaskPtr task, Clock::time_point due, Clock::time_point now, std::function<bool()> record,
                  std::function<void(Admitted)> answer) override;
  std::size_t fetch(std::vector<Lease>& out, std::size_t max) override { return local_.fetch(out, max); }
  void ack(Lease lease, Ack how, Clock::time_point due = {}) override;
  void set_retry_limit(unsigned limit) override { local_.set_retry_limit(limit); }
  void set_aside(std::ptrdiff_t delta) noexcept override;
  bool keeps_unique_locks() const noexcept override { return true; }
  void close() override;
  std::vector<TaskPtr> drain() override;
  std::optional<Clock::time_point> next_due() override { return local_.next_due(); }
  std::size_t size() const noexcept override { return local_.size(); }
  std::size_t ready() const noexcept override { return local_.ready(); }
  std::size_t capacity() const noexcept override { return options_.capacity; }
  std::vector<std::size_t> ready_by_priority() const override { return local_.ready_by_priority(); }

  // A running job's progress (JobContext::progress), written to its record
  // in Redis by the acker thread soon after; a later note of the same job
  // replaces one not yet written. Never blocks on Redis.
  void note_progress(const std::string& id, const JobProgress& progress);

  // A cancel reached a job held here: it will not start, and if it runs its
  // stop token is set. Other processes learn of cancels by polling the
  // held jobs' records every sweep.
  void stop_local(const std::string& id);

  const std::string& owner() const noexcept { return owner_; }
  // Where Redis's state is kept (a Status of no one's when the options
  // carry none: a test's broker).
  Status& status() const {
    static Status nobody("");
    return options_.redis.status ? *options_.redis.status : nobody;
  }
  // False while the feeder or acker cannot reach Redis or log in.
  bool reachable() const { return !options_.redis.status || options_.redis.status->reachable(); }

  // Jobs of Redis leased to this process now (waiting here or running).
  std::size_t held() const;
  // Acks (and admissions through admit_soon) that did not reach Redis yet.
  std::size_t pending_acks() const;

 private:
  struct Held {
    int attempt = 0;
    std::uint64_t fence = 0;
    TaskPtr task;
    std::string queue;  // "" for the default
  };
  // An attempt's end on its way to Redis.
  struct PendingAck {
    std::string queue;  // "" for the default
    std::string id;
    int attempt = 0;
    std::uint64_t fence = 0;
    Ack how = Ack::done;
    std::string state;    // for done: succeeded, failed or cancelled
    std::string outcome;  // JSON text
    long long due_ms = 0; // for retry
    std::string entry;    // a flow's child that ended: its entry in its parent's list
  };


  // A job admitted without waiting (admit_soon): its enqueue arguments,
  // written by the acker.
  struct SoonAdmission {
    std::string queue;
    std::vector<std::string> args;  // the enqueue script's fourteen for this job
    std::function<bool()> record;
    std::function<void(Admitted)> answer;
  };

  // The enqueue script's answer for one job.
  struct EnqueueAnswer {
    long long seq = 0;   // > 0: admitted; -1 id taken; -2 full
    std::string holder;  // set: a unique job holds the key
    JobState holder_state = JobState::queued;
  };

  void release_retry_slot() noexcept override {}  // slots belong to local_'s leases
  void enqueue_args(std::vector<std::string>& args, const Keys& keys, const TaskSpec& s, Clock::time_point due,
                           const std::string& now_ms);
  // The enqueue script's first arguments for `jobs` jobs of `queue` (for a
  // named queue: noted in the namespace the first time, a round trip; on a
  // cluster, sequence numbers reserved, another); throws RedisError.
  std::vector<std::string> enqueue_head(const Keys& keys, std::size_t jobs);
  // Whether the enqueue script numbers `keys`' jobs from the namespace's
  // sequence itself: always but on a cluster, where only the default
  // queue's script may touch it (same slot) and the others reserve numbers
  // first (enqueue_head).
  bool seq_in_script(const Keys& keys) const;
  // One enqueue call on `c`; `args` from enqueue_head and enqueue_args.
  Value run_enqueue(Connection& c, const Keys& keys, const std::vector<std::string>& args) const;
  std::optional<std::vector<EnqueueAnswer>> send_enqueue(const Keys& keys, const std::vector<std::string>& jobs,
                                                         std::size_t count, Admitted& refused);
  // One job's answer in the enqueue script's reply.
  static EnqueueAnswer answer_of(const Value& e);
  // `out` (if given) gets the holder of a unique job's key.
  static Admitted admitted(const EnqueueAnswer& answer, const std::function<bool()>& record, Admission* out);
  // Held jobs at or below which the feeder fetches again at once.
  std::size_t low_water() const noexcept;
  std::size_t flush_batch(Links& links);
  // Writes the first `n` admissions of soon_ and answers them; throws
  // RedisError (those not written stay).
  void flush_soon(Links& links, std::size_t n);
  void send_acks(std::stop_token stop);
  void feed(std::stop_token stop);
  // Promotes, takes expired leases over and applies retention in the
  // queues this process consumes (every known queue when `all`).
  void feed_once(Links& links, bool all);
  std::size_t refill(Links& links);
  std::size_t refill(Connection& c, const std::string& queue, std::size_t budget);
  void extend_all(Links& links);
  void flush_pending(Links& links);
  void check_cancels(Links& links);
  void heartbeat(Connection& c);
  // Reads the namespace's state at each heartbeat: paused types and
  // queues, the queues jobs named, and how many jobs wait in each.
  void read_shared(Links& links);
  void take_over(const Value& row, long long holder_seen_ms);
  // The promote script on `queue`'s keys: due jobs to ready, and held jobs
  // whose type is not in `paused` back to it.
  void promote(Connection& c, const std::string& queue, const std::string& now_ms,
               const std::vector<std::string>& paused);
  // Jobs waiting in the queues other than `queue`, as last counted.
  long long waiting_elsewhere(const std::string& queue) const;
  std::size_t held_in(const std::string& queue) const BULWARK_REQUIRES(mutex_);
  // The lease of `id` under `fence` is not this process's any more: `holder`
  // has it. Its attempt is asked to stop; its end will be dropped.
  void lost_here(const std::string& id, std::uint64_t fence, const std::string& holder);
  // A result that will not be written: logged and counted.
  void drop_result(const std::string& id, int attempt, const std::string& holder);
  void warn(std::string text) const;
  // WAIT for redis.min_replicas_ack replicas on `c` (what it wrote so far);
  // throws RedisError (unavailable) when fewer acknowledged in time.
  void replicated(Connection& c, const char* what);
  void write_progress(Links& links);

  const BrokerOptions options_;
  Parts parts_;
  const Keys& keys_;  // the default queue's, with the namespace's
  const std::string owner_;
  const long long started_ms_;
  const TaskFactory factory_;
  std::function<std::string()> describe_;  // set before start(); the feeder's
  std::function<void(const std::set<std::string>&, std::uint64_t)> on_paused_;  // likewise
  std::function<void(Lease, const LostLease&)> on_lease_lost_;  // likewise
  Reporter* reporter_ = nullptr;  // likewise
  std::atomic<std::uint64_t> results_dropped_{0};
  std::atomic<std::uint64_t> pause_epoch_{0};
  std::atomic<std::uint64_t> queue_pause_epoch_{0};  // counts set_queue_paused calls
  JobQueue local_;

  mutable Mutex mutex_;
  std::map<std::string, Held> held_ BULWARK_GUARDED_BY(mutex_);
  // Attempts running here whose lease was taken over: id -> (fence, holder),
  // until their end comes and is dropped.
  std::map<std::string, std::pair<std::uint64_t, std::string>> lost_ BULWARK_GUARDED_BY(mutex_);
  std::deque<PendingAck> pending_ BULWARK_GUARDED_BY(mutex_);
  // Admissions waiting for the acker, oldest first; each goes to Redis
  // before any end queued after it.
  std::deque<SoonAdmission> soon_ BULWARK_GUARDED_BY(mutex_);
  struct ProgressNote {
    std::string queue;
    std::uint64_t fence = 0;
    std::string json;  // {"fraction", "note", "at_ms"}
  };
  std::map<std::string, ProgressNote> progress_ BULWARK_GUARDED_BY(mutex_);  // waiting for the acker  // ends Redis has not taken yet, oldest first
  bool closed_ BULWARK_GUARDED_BY(mutex_) = false;
  // The namespace's state as last read (read_shared), or as changed here;
  // a mutex of its own, apart from the one every ack takes.
  mutable Mutex shared_mutex_;
  std::vector<std::string> paused_types_ BULWARK_GUARDED_BY(shared_mutex_);
  std::set<std::string> paused_queues_ BULWARK_GUARDED_BY(shared_mutex_);
  std::vector<std::string> known_queues_ BULWARK_GUARDED_BY(shared_mutex_){std::string()};  // "" first
  std::map<std::string, long long> waiting_ BULWARK_GUARDED_BY(shared_mutex_);  // by queue; empty with one queue
  std::atomic<bool> fetching_{true};
  std::atomic<std::ptrdiff_t> aside_{0};  // held leases the workers set aside (set_aside)

  Wake feed_wake_;  // an ack left room for a batch
  Wake ack_wake_;   // an end to write

  // Last: started after everything above exists.
  std::jthread acker_;   // writes ends to Redis
  std::jthread feeder_;  // fetches, extends, sweeps
};

}  // namespace bulwark::detail::redis
