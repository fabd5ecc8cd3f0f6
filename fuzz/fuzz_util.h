// Helpers shared by the libFuzzer targets in fuzz/: a per-process scratch directory for the
// readers that only take a path, the rule that an accel::Error is the one acceptable way to
// refuse an input, and FUZZ_ASSERT for the invariants a target checks on accepted inputs.
// Not a test framework: a failed assertion aborts, which libFuzzer reports as a crash.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"

namespace accel::fuzz {

// Created on first use (under /dev/shm when it exists, so the writes stay in memory) and
// removed when the process exits normally.
inline const std::filesystem::path& scratch_dir() {
  struct ScratchDir {
    std::filesystem::path path;
    ScratchDir() {
      std::filesystem::path base =
          std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
      path = base / ("accel-fuzz-" + std::to_string(::getpid()));
      std::filesystem::create_directories(path);
    }
    ~ScratchDir() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  };
  static ScratchDir dir;
  return dir.path;
}

// Writes the fuzz input to scratch_dir()/name (replacing it) and returns the path.
inline std::string write_scratch_file(const std::string& name, const uint8_t* data, size_t size) {
  std::filesystem::path path = scratch_dir() / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write the scratch file %s\n", path.c_str());
    std::abort();
  }
  return path.string();
}

// Runs `body`; an accel::Error is a clean refusal of the input and is swallowed. Anything else
// (another exception type, a crash, a sanitizer report) escapes and is a finding.
template <typename Body>
void expect_only_accel_errors(Body&& body) {
  try {
    body();
  } catch (const accel::Error&) {
  }
}

}  // namespace accel::fuzz

// An invariant of an accepted input; on failure prints it and aborts (a libFuzzer crash).
#define FUZZ_ASSERT(cond)                                                                    \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)
