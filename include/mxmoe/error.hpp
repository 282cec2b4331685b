// The one exception type of the library. Every failure carries the file:line where it was raised,
// so a CLI user (or a test) can see exactly which check fired.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace mxmoe {

class Error : public std::runtime_error {
 public:
  Error(const char* file, int line, const std::string& msg)
      : std::runtime_error(fmt::format("{} ({}:{})", msg, short_file(file), line)), message_(msg) {}
  // The message without the file:line, for output where the failure is expected (an informational line).
  const std::string& message() const { return message_; }

 private:
  std::string message_;

  static const char* short_file(const char* f) {
    // Keep the path from the repository root: "src/io/safetensors.cpp" rather than an absolute path.
    const char* best = f;
    for (const char* p = f; *p; ++p)
      if ((p[0] == 's' && p[1] == 'r' && p[2] == 'c' && p[3] == '/') ||
          (p[0] == 'i' && p[1] == 'n' && p[2] == 'c' && p[3] == 'l' && p[4] == 'u' && p[5] == 'd'))
        best = p;
    return best;
  }
};

}  // namespace mxmoe

// Throws mxmoe::Error with a fmt-formatted message.
#define MXMOE_THROW(...) throw ::mxmoe::Error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
// Checks a condition; the message should say what was expected and what was found.
#define MXMOE_CHECK(cond, ...)       \
  do {                               \
    if (!(cond)) MXMOE_THROW(__VA_ARGS__); \
  } while (0)
