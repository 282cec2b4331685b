#include <CLI/CLI.hpp>
#include <cstdio>

#include "mxmoe/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"mxmoe: NVFP4 / OCP-MX emulated Mixture-of-Experts"};
  app.require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mxmoe::Error& e) {
    std::fprintf(stderr, "mxmoe: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
