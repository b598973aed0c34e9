// parallel_for over XLA's intra-op thread pool, shared by the native CPU kernels.
//
// Runs task(i) for i in [0, n) on the calling thread and up to pool.num_threads() helpers and returns
// when every task has finished. Tasks are claimed from an atomic counter, so the calling thread never
// waits for a helper to start (no deadlock when the pool is busy: it simply does the work itself);
// helpers that start late find nothing left and exit, touching only the state they co-own.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace trellis {

inline void parallel_for(xla::ffi::ThreadPool& pool, int64_t n, const std::function<void(int64_t)>& task) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    const std::function<void(int64_t)>* task;
  };
  auto state = std::make_shared<State>();
  state->task = &task;
  auto drain = [](State& s, int64_t n) {
    for (int64_t i; (i = s.next.fetch_add(1)) < n;) {
      (*s.task)(i);
      s.done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n - 1);
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([state, n, drain] { drain(*state, n); });
  drain(*state, n);
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

}  // namespace trellis
