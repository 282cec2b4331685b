// MXMOE_HD: a function for both host and device code under nvcc (forced inline), a plain inline function
// for the host compiler. For headers shared by kernels and host code (tests, upload-time packing).
#pragma once

#if defined(__CUDACC__)
#define MXMOE_HD __host__ __device__ __forceinline__
#else
#define MXMOE_HD inline
#endif
