// The MX golden qdq files, case by case, for every qdq implementation (CPU API, CUDA, host emulation).
#pragma once
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "mxmoe/quant.hpp"
#include "mxmoe/safetensors.hpp"
#include "test_util.hpp"

namespace mxmoe::test {

inline nlohmann::json golden_cases(const SafetensorsFile& f) { return nlohmann::json::parse(f.metadata().at("cases")); }

// microxcaling quantize_mx_op (mx_floor_qdq.safetensors): floor rule, rounding even / nearest, six
// formats. `qdq(x, params)` returns the qdq of x in x's dtype. Returns the number of cases checked.
template <class Qdq>
int check_mx_floor_golden(const std::string& path, Qdq&& qdq) {
  const auto f = SafetensorsFile::open(path);
  const std::map<std::string, Scheme> formats = {
      {"fp4_e2m1", Scheme::MXFP4},      {"fp6_e2m3", Scheme::MXFP6_E2M3}, {"fp6_e3m2", Scheme::MXFP6_E3M2},
      {"fp8_e4m3", Scheme::MXFP8_E4M3}, {"fp8_e5m2", Scheme::MXFP8_E5M2}, {"int8", Scheme::MXINT8}};
  int n = 0;
  for (const auto& c : golden_cases(f)) {
    const std::string name = c["name"];
    const QuantParams p{formats.at(c["format"]), ScaleRule::Floor, parse_rounding(std::string(c["rounding"]))};
    EXPECT_EQ(count_bit_mismatches(qdq(f.load(name + ".x"), p), f.load(name + ".y"), name), 0);
    ++n;
  }
  return n;
}

// vLLM's torch reference of Quark's MXFP4 qdq (mxfp4_even_qdq.safetensors): even rule, RNE.
template <class Qdq>
int check_mxfp4_even_golden(const std::string& path, Qdq&& qdq) {
  const auto f = SafetensorsFile::open(path);
  int n = 0;
  for (const auto& c : golden_cases(f)) {
    const std::string name = c["name"];
    EXPECT_EQ(count_bit_mismatches(qdq(f.load(name + ".x"), QuantParams{Scheme::MXFP4, ScaleRule::Even, Rounding::RNE}),
                                   f.load(name + ".y"), name),
              0);
    ++n;
  }
  return n;
}

}  // namespace mxmoe::test
