/// @file
/// Errors: every failure in accel is an accel::Error whose message says what was expected,
/// what was found, and where. ACCEL_CHECK builds the message only when the check fails.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace accel {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}
}  // namespace detail

}  // namespace accel

/// `ACCEL_CHECK(cond, "op: expected ", a, " but got ", b);`
#define ACCEL_CHECK(cond, ...)                                       \
  do {                                                               \
    if (!(cond)) [[unlikely]] {                                      \
      throw ::accel::Error(::accel::detail::concat(__VA_ARGS__));    \
    }                                                                \
  } while (0)

#define ACCEL_FAIL(...) throw ::accel::Error(::accel::detail::concat(__VA_ARGS__))
