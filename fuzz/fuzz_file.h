// What both fuzz targets share: cairn's readers take paths, so each input is written to a file of
// this process's own (in the temp directory, removed at exit) and read back from there.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace cairn::fuzz {

inline const std::string& input_path(const char* stem) {
  static const std::string path = [stem] {
    const auto file = std::filesystem::temp_directory_path() /
                      (std::string("cairn_fuzz_") + stem + "_" + std::to_string(::getpid()));
    return file.string();
  }();
  static const bool cleanup_registered = [] {
    std::atexit([] { std::remove(path.c_str()); });
    return true;
  }();
  static_cast<void>(cleanup_registered);
  return path;
}

// Writes the input; aborts when it cannot, since every later result would be meaningless.
inline void write_input(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, file) != size) std::abort();
  if (std::fclose(file) != 0) std::abort();
}

}  // namespace cairn::fuzz
