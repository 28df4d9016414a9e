#include "cairn/core/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cairn/base/error.h"

namespace cairn {
namespace {

// A writer killed mid-write (kill -9, power loss) leaves "<path>.tmp-<pid>" behind. The next
// writer of the same path removes those whose process is gone; a live writer's (kill(pid, 0)
// succeeds, or says EPERM: it exists but is not ours) is left alone. A writer in another PID
// namespace sharing the directory looks dead from here; its commit would then fail to rename and
// report it, never leave a torn file.
void remove_stale_temporaries(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const std::string directory =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string prefix = (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp-";
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return;  // best effort: creating the temporary file will report problems
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::stol(digits);
    if (pid <= 0 || pid == long(::getpid())) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;
    ::unlink((directory + "/" + name).c_str());
  }
  ::closedir(dir);
}

}  // namespace

AtomicFile::AtomicFile(const std::string& path, const char* op)
    : path_(path), temp_path_(path + ".tmp-" + std::to_string(::getpid())), op_(op) {
  remove_stale_temporaries(path_);
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
