// Crash-safe file writing: everything goes to "<path>.tmp-<pid>" beside the target, which is
// synced and renamed onto the target only in commit(). Until then the target is untouched; if
// anything throws first, the destructor removes the temporary file. A crash mid-write therefore
// never loses what was saved before, and never leaves half a file under the target's name. The
// temporaries of writers that died mid-write are removed by the next AtomicFile for that path.
#pragma once

#include <cstddef>
#include <cstdio>
#include <memory>
#include <string>

namespace cairn {

class AtomicFile {
 public:
  // `op` names the caller in error messages ("save_safetensors").
  AtomicFile(const std::string& path, const char* op);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  void write(const std::string& text) { write(text.data(), text.size()); }
  // fflush + fsync, close, rename onto the target, then (best effort) fsync the directory so the
  // rename itself is durable. Throws cairn::Error with the path and the system's reason.
  void commit();

 private:
  struct Closer {
    void operator()(std::FILE* file) const { std::fclose(file); }
  };
  [[noreturn]] void fail(const std::string& what) const;

  std::string path_;
  std::string temp_path_;
  const char* op_;
  std::unique_ptr<std::FILE, Closer> file_;
  bool committed_ = false;
};

}  // namespace cairn
