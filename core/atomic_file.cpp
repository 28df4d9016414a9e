#include "cairn/core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cairn/core/error.h"

namespace cairn {

AtomicFile::AtomicFile(const std::string& path, const char* op)
    : path_(path), temp_path_(path + ".tmp-" + std::to_string(::getpid())), op_(op) {
  file_.reset(std::fopen(temp_path_.c_str(), "wb"));
  if (file_ == nullptr) fail("cannot create the temporary file " + temp_path_);
}

AtomicFile::~AtomicFile() {
  if (!committed_) {
    file_.reset();
    std::remove(temp_path_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t bytes) {
  if (bytes == 0) return;
  if (std::fwrite(data, 1, bytes, file_.get()) != bytes) {
    fail("write to " + temp_path_ + " failed");
  }
}

void AtomicFile::commit() {
  // fsync before rename: otherwise a crash can leave the new name pointing at data that never
  // reached the disk, which is exactly what the temporary file is there to prevent.
  if (std::fflush(file_.get()) != 0) fail("flushing " + temp_path_ + " failed");
  if (::fsync(::fileno(file_.get())) != 0) fail("fsync of " + temp_path_ + " failed");
  if (std::fclose(file_.release()) != 0) fail("closing " + temp_path_ + " failed");
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    fail("cannot rename " + temp_path_ + " onto it");
  }
  committed_ = true;
  // Best effort: some file systems refuse fsync on a directory, and the file is complete and in
  // place either way.
  const size_t slash = path_.find_last_of('/');
  const std::string directory =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void AtomicFile::fail(const std::string& what) const {
  const int error = errno;
  CAIRN_FAIL(op_, ": ", path_, ": ", what, ": ", std::strerror(error));
}

}  // namespace cairn
