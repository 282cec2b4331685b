// A tiny work-sharing pool for the CPU experts: the calling thread and persistent helper threads
// claim item indices from one atomic counter. Unlike an OpenMP fork-join, the caller never waits
// for a helper that has not started yet: on a machine shared with other jobs a helper may get a CPU
// only milliseconds after it is woken (measured: each OpenMP region cost ~8 ms at load 3-4 on 2
// cores, a 1 ms layer took 24-32 ms), so late helpers simply find no work left.
#pragma once
#include <cstdint>
#include <functional>

namespace mxmoe::moe::cpu {

// Calls body(i) once for every i in [0, n), on the calling thread and up to threads - 1 helpers.
// Runs serially when threads <= 1, n <= 1, or another parallel_items call is in flight.
void parallel_items(int64_t n, int threads, const std::function<void(int64_t)>& body);

}  // namespace mxmoe::moe::cpu
