// Work-sharing pool (see work_pool.hpp). Protocol: a job is published through `job_` and a
// generation counter. A helper announces itself in `active_` *before* it reads `job_`; the caller,
// after the counter is exhausted, clears `job_` and then waits only while `active_` is nonzero.
// With sequentially consistent atomics either the caller sees the helper (and waits for it, which
// is short: it is running) or the helper sees no job; a job is never touched after its caller returns.
#include "moe/cpu/work_pool.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace mxmoe::moe::cpu {
namespace {

struct Job {
  int64_t n;
  const std::function<void(int64_t)>* body;
  std::atomic<int64_t> next{0};
  std::atomic<int> helpers_left;  // helpers that may still join this job
};

void drain(Job& j) {
  for (int64_t i = j.next.fetch_add(1); i < j.n; i = j.next.fetch_add(1)) (*j.body)(i);
}

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void run(int64_t n, int threads, const std::function<void(int64_t)>& body) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy.owns_lock() || threads <= 1 || n <= 1) {
      for (int64_t i = 0; i < n; ++i) body(i);
      return;
    }
    Job j;
    j.n = n, j.body = &body;
    j.helpers_left.store(threads - 1);
    {
      std::lock_guard<std::mutex> g(mu_);
      while (int(threads_.size()) < threads - 1) threads_.emplace_back([this] { helper(); });
      job_.store(&j);
      ++gen_;
    }
    cv_.notify_all();
    drain(j);
    job_.store(nullptr);
    while (active_.load() != 0) std::this_thread::yield();
  }

 private:
  void helper() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> g(mu_);
        cv_.wait(g, [&] { return stop_ || gen_ != seen; });
        if (stop_) return;
        seen = gen_;
      }
      active_.fetch_add(1);
      if (Job* j = job_.load()) {
        if (j->helpers_left.fetch_sub(1) > 0) drain(*j);  // more helpers than asked for stay out
      }
      active_.fetch_sub(1);
    }
  }

  std::mutex run_mu_;  // one job at a time; concurrent callers run serially
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  std::atomic<Job*> job_{nullptr};
  std::atomic<int> active_{0};
  uint64_t gen_ = 0;
  bool stop_ = false;
};

}  // namespace

void parallel_items(int64_t n, int threads, const std::function<void(int64_t)>& body) {
  static Pool pool;
  pool.run(n, threads, body);
}

}  // namespace mxmoe::moe::cpu
