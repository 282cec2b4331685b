# CUDA backend (included by CMakeLists.txt when MXMOE_CUDA is ON).
#
# - mxmoe_cuda: static library of src/**/cuda/*.cu and *.cpp, linked into mxmoe_core (so every user of
#   mxmoe_core gets it, with MXMOE_HAVE_CUDA defined and CUDA::cudart linked).
# - Architectures default to "90a;80": sm_90a (Hopper, allows wgmma/TMA) and an sm_80 build of every
#   kernel. Override with -DCMAKE_CUDA_ARCHITECTURES=... (or the CUDAARCHS environment variable).
# - No --use_fast_math: IEEE division, no flush-to-zero and exact rounding are part of the bit-exact
#   contract with mxmoe::ref.
# - mxmoe_cuda_tests: tests/cuda/*.cpp|*.cu, CTest label `cuda`; the tests skip (with the reason)
#   when no CUDA device is usable, so CPU-only machines stay green.

if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
  set(CMAKE_CUDA_ARCHITECTURES "90a;80" CACHE STRING "CUDA architectures to build for")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
# C++20 for device code too. Older CMake (3.25) knows no CUDA20 dialect flag for nvcc: teach it.
if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION OR "${CMAKE_CUDA20_STANDARD_COMPILE_OPTION}" STREQUAL "")
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
message(STATUS "mxmoe: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")

# Directory-wide options (e.g. MXMOE_SANITIZE's -fsanitize flags) are host-compiler flags: keep them
# away from nvcc.
function(mxmoe_cuda_host_only_options target)
  get_target_property(opts ${target} COMPILE_OPTIONS)
  if(opts)
    set(wrapped "")
    foreach(o IN LISTS opts)
      list(APPEND wrapped "$<$<NOT:$<COMPILE_LANGUAGE:CUDA>>:${o}>")
    endforeach()
    set_target_properties(${target} PROPERTIES COMPILE_OPTIONS "${wrapped}")
  endif()
endfunction()

# One CUDA runtime: the shared libcudart of CUDA::cudart (not CMake's default static one on top).
set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
set(MXMOE_CUDA_FLAGS --expt-relaxed-constexpr -lineinfo)

file(GLOB_RECURSE MXMOE_CUDA_SOURCES CONFIGURE_DEPENDS
     ${CMAKE_SOURCE_DIR}/src/*/cuda/*.cu ${CMAKE_SOURCE_DIR}/src/*/cuda/*.cpp)
add_library(mxmoe_cuda STATIC ${MXMOE_CUDA_SOURCES})
mxmoe_cuda_host_only_options(mxmoe_cuda)
target_include_directories(mxmoe_cuda PUBLIC ${CMAKE_SOURCE_DIR}/include PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_compile_definitions(mxmoe_cuda PUBLIC MXMOE_HAVE_CUDA)
target_compile_options(mxmoe_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${MXMOE_CUDA_FLAGS}>
                                          $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra>)
# A static-library cycle (CMake repeats both on link lines): CUDA sources may call into the core, and
# the core (and so the CLI and every test) can call the CUDA backend.
target_link_libraries(mxmoe_cuda PUBLIC CUDA::cudart fmt::fmt nlohmann_json::nlohmann_json mxmoe_core)
target_link_libraries(mxmoe_core PUBLIC mxmoe_cuda)

if(MXMOE_TESTS)
  enable_testing()
  find_package(GTest REQUIRED)
  include(GoogleTest)
  set(MXMOE_SHARED_DIR "${CMAKE_SOURCE_DIR}/../shared" CACHE PATH "Folder holding golden/ for the CUDA tests")
  file(GLOB MXMOE_CUDA_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/cuda/*.cpp
       ${CMAKE_SOURCE_DIR}/tests/cuda/*.cu)
  if(MXMOE_CUDA_TEST_SOURCES)
    add_executable(mxmoe_cuda_tests ${MXMOE_CUDA_TEST_SOURCES})
    mxmoe_cuda_host_only_options(mxmoe_cuda_tests)
    target_include_directories(mxmoe_cuda_tests PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/tests)
    target_compile_options(mxmoe_cuda_tests PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${MXMOE_CUDA_FLAGS}>)
    target_link_libraries(mxmoe_cuda_tests PRIVATE mxmoe_cuda mxmoe_core GTest::gtest GTest::gtest_main)
    target_compile_definitions(mxmoe_cuda_tests PRIVATE MXMOE_SHARED_DIR="${MXMOE_SHARED_DIR}")
    gtest_discover_tests(mxmoe_cuda_tests DISCOVERY_TIMEOUT 60 PROPERTIES LABELS cuda)
  endif()
  # ptxas may serialize a kernel's wgmma (register pressure, or operands it sees written after the fence):
  # still correct, several times slower, so no other test sees it. Needs only nvcc: label cpu (CI runs it).
  if("${CMAKE_CUDA_ARCHITECTURES}" MATCHES "90a")
    string(TOUPPER "${CMAKE_BUILD_TYPE}" build_type)
    separate_arguments(check_flags UNIX_COMMAND "${CMAKE_CUDA_FLAGS} ${CMAKE_CUDA_FLAGS_${build_type}}")
    add_test(NAME ptxas_wgmma_not_serialized
             COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cuda/ptxas_wgmma_check.sh ${CMAKE_CUDA_COMPILER} ${CMAKE_SOURCE_DIR}
                     -std=c++20 ${check_flags} ${MXMOE_CUDA_FLAGS})
    set_tests_properties(ptxas_wgmma_not_serialized PROPERTIES LABELS cpu TIMEOUT 900)
  endif()
endif()

# CUDA benchmarks: bench/cuda/*.cpp, plain programs (no Google Benchmark), run by scripts/device/bench.sh.
file(GLOB MXMOE_CUDA_BENCH_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/bench/cuda/*.cpp)
foreach(src ${MXMOE_CUDA_BENCH_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  mxmoe_cuda_host_only_options(${name})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(${name} PRIVATE mxmoe_cuda mxmoe_core)
endforeach()
