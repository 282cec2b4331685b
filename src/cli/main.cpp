// mxmoe command line: the subcommands live in one file per group (cmd_quant.cpp, cmd_info.cpp, cmd_moe.cpp,
// cmd_demo.cpp);
// shared helpers in common.cpp. Errors go to stderr as "mxmoe: error: ..." with exit status 1
// (2 for command-line usage errors); --help exits 0.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "cli/common.hpp"
#include "mxmoe/error.hpp"


int main(int argc, char** argv) {
  CLI::App app{"mxmoe: NVFP4 / OCP-MX emulated Mixture-of-Experts"};
  app.name("mxmoe");
  app.require_subcommand(1);
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return fmt::format("mxmoe: error: {}\nRun with --help for more information.\n", e.what());
  });
  mxmoe::cli::add_quant_commands(app);
  mxmoe::cli::add_info_commands(app);
  mxmoe::cli::add_moe_commands(app);
  mxmoe::cli::add_demo_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mxmoe::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "mxmoe: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "mxmoe: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
