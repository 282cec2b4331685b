// Helpers shared by the CLI command groups: option parsing into QuantParams, error metrics,
// table printing. Each command group registers its subcommands on the app.
#pragma once
#include <CLI/CLI.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "mxmoe/quant.hpp"
#include "mxmoe/tensor.hpp"

namespace mxmoe::cli {

void add_quant_commands(CLI::App& app);  // qdq, quantize, dequantize (cmd_quant.cpp)
void add_info_commands(CLI::App& app);   // inspect, formats, compare (cmd_info.cpp)
void add_moe_commands(CLI::App& app);    // moe, bench-moe (cmd_moe.cpp)
void add_demo_command(CLI::App& app);    // demo (cmd_demo.cpp)

// Options every quantizing command takes, as the user typed them ("" = not given).
struct QuantOptions {
  std::string scheme, rule, rounding;
  double global_scale = 0;  // 0 = not given
  void add_to(CLI::App* sub, bool with_global_scale);
  // Checks the combination and returns the params; `default_rule` applies to MX when --scale-rule is absent.
  QuantParams resolve(ScaleRule default_rule) const;
};

// Error metrics of y against x (both read as float32), in double precision.
struct ErrorStats {
  double signal = 0, noise = 0;  // sum x^2, sum (x - y)^2
  double sqnr_db() const { return noise == 0 ? INFINITY : 10.0 * std::log10(signal / noise); }
  double rel_l2() const { return signal == 0 ? (noise == 0 ? 0.0 : INFINITY) : std::sqrt(noise / signal); }
};
ErrorStats error_stats(const Tensor& x, const Tensor& y);
std::string fmt_db(double db);

// A plain text table: columns sized to their widest cell; `right` marks right-aligned columns.
class Table {
 public:
  Table(std::vector<std::string> header, std::vector<bool> right = {});
  void add(std::vector<std::string> row);
  void print() const;  // to stdout
  size_t rows() const { return rows_.size(); }

 private:
  std::vector<std::string> header_;
  std::vector<bool> right_;
  std::vector<std::vector<std::string>> rows_;
};

std::string human_bytes(uint64_t n);
bool is_qdq_dtype(DType d);  // F32, BF16, F16

}  // namespace mxmoe::cli
