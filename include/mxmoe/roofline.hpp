// Measured ceilings of this machine, for the roofline columns of benchmarks (bytes over bandwidth,
// FLOPs over peak). Each is measured once per process and cached.
#pragma once

namespace mxmoe {

// Best of 5 copies of a 256 MiB buffer with `threads` OpenMP threads (<= 0: all), counting bytes
// read + written, in bytes per second.
double measure_copy_bandwidth(int threads = 0);
// float32 FLOP/s of one core from 12 independent AVX-512 FMA chains; 0 when the CPU has no AVX-512
// (callers then report no FLOP fraction).
double measure_fma_peak_per_core();

}  // namespace mxmoe
