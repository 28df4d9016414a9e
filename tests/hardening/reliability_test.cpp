// Reliability: the inputs that once crashed the process, broke a documented promise or gave silent
// garbage (issue 10), each kept as a regression test. Every one must now end in a cairn::Error
// that names what was wrong, or, for the long graph, simply work.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cairn/blocks/checkpoint.h"
#include "cairn/blocks/data_loader.h"
#include "cairn/blocks/idx.h"
#include "cairn/blocks/safetensors.h"
#include "support/temp_dir.h"
#include "support/test_support.h"

namespace cairn {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

const Device kCpu = Device::cpu();

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// A safetensors file: the 8-byte little-endian length, the header, then `data`.
std::string safetensors_bytes(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char(uint64_t(header.size()) >> (8 * i) & 0xFF);
  return out + header + data;
}

// An IDX header for unsigned bytes with the given dimensions (big-endian).
std::string idx_header(const std::vector<uint32_t>& dims) {
  std::string out{'\0', '\0', '\x08', char(dims.size())};
  for (uint32_t dim : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(char(dim >> shift & 0xFF));
  }
  return out;
}

std::string gzip(const std::string& bytes) {
  z_stream stream{};
  EXPECT_EQ(deflateInit2(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY),
            Z_OK);
  std::string out(deflateBound(&stream, uLong(bytes.size())), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  stream.avail_in = uInt(bytes.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = uInt(out.size());
  EXPECT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

class ReliabilityFiles : public testing::TempDirTest {};

// ---- 1. A long autograd graph is torn down without recursion. ----

TEST(Reliability, MillionOpGraphIsDestroyedWithoutOverflowingTheStack) {
  // Recursive teardown overflowed an 8 MiB stack at about 100,000 ops (less under ASan).
  constexpr int kOps = 1'000'000;
  Tensor x = Tensor::ones({}, kCpu);
  x.attach_grad();
  Tensor middle;
  {
    Tensor y = x;
    autograd::RecordScope record;
    for (int i = 0; i < kOps; ++i) {
      y = y + 0.0f;
      if (i == 1000) middle = y;
    }
  }  // all but the first 1,001 ops die here, in one loop
  // What a live tensor still needs survives the teardown of the rest: backward through what
  // remains reaches the leaf.
  ASSERT_TRUE(middle.defined());
  EXPECT_FALSE(middle.is_leaf());
  middle.backward();
  EXPECT_EQ(x.grad().item(), 1.0f);
  middle = Tensor();  // and the rest here
}

// ---- 2. safetensors headers: nesting and long text. ----

TEST_F(ReliabilityFiles, DeeplyNestedSafetensorsHeaderIsRefused) {
  // 80,000 levels crashed nlohmann's recursive dump() while the error text was being built.
  const std::string deep = std::string(80'000, '[') + std::string(80'000, ']');
  write_bytes(path("deep.safetensors"), safetensors_bytes("{\"a\":" + deep + "}"));
  expect_error([&] { load_safetensors(path("deep.safetensors")); },
               {"load_safetensors: " + path("deep.safetensors"), "nests deeper than 64 levels"});
  // The same inside the metadata, and as a tensor's shape.
  write_bytes(path("meta.safetensors"),
              safetensors_bytes("{\"__metadata__\":{\"k\":" + deep + "}}"));
  expect_error([&] { load_safetensors(path("meta.safetensors")); }, {"nests deeper than 64"});
  // Nesting the format never uses, but within the bound, is named by type, not dumped.
  write_bytes(path("shallow.safetensors"),
              safetensors_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[[[[1]]]],"
                                "\"data_offsets\":[0,4]}}",
                                std::string(4, '\0')));
  expect_error([&] { load_safetensors(path("shallow.safetensors")); },
               {"tensor 'a'", "shape entries must be integers, got an array of 1 elements"});
}

TEST_F(ReliabilityFiles, LongTextFromAHeaderIsCutInMessages) {
  const std::string long_name(1'000'000, 'n');
  write_bytes(path("name.safetensors"), safetensors_bytes("{\"" + long_name +
                                                              "\":{\"dtype\":\"Q7\",\"shape\":[1],"
                                                              "\"data_offsets\":[0,4]}}",
                                                          std::string(4, '\0')));
  try {
    load_safetensors(path("name.safetensors"));
    FAIL() << "expected a cairn::Error";
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_LT(message.size(), 600u) << message.substr(0, 600);
    EXPECT_NE(message.find("(1000000 bytes)"), std::string::npos) << message;
    EXPECT_NE(message.find("unsupported dtype Q7 for"), std::string::npos) << message;
  }
  const std::string long_value(500'000, 'v');
  write_bytes(path("value.safetensors"), safetensors_bytes("{\"a\":{\"dtype\":\"" + long_value +
                                                               "\",\"shape\":[1],"
                                                               "\"data_offsets\":[0,4]}}",
                                                           std::string(4, '\0')));
  try {
    load_safetensors(path("value.safetensors"));
    FAIL() << "expected a cairn::Error";
  } catch (const Error& error) {
    EXPECT_LT(std::string(error.what()).size(), 600u);
  }
  // A shape longer than any tensor has (or any long array) is refused while it is parsed.
  std::string dims = "1";
  for (int i = 0; i < 100'000; ++i) dims += ",1";
  write_bytes(path("rank.safetensors"), safetensors_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[" +
                                                              dims + "],\"data_offsets\":[0,4]}}",
                                                          std::string(4, '\0')));
  expect_error([&] { load_safetensors(path("rank.safetensors")); },
               {"an array of more than 32 elements", "shapes of up to 32 axes"});
}

// ---- 3. IDX: sizes from the file never drive allocation past the bound. ----

TEST_F(ReliabilityFiles, GzipBombIdxIsRefusedByItsHeader) {
  // A 2 GiB promise in a small gzip file (the bomb inflated to 2 GiB and ended in
  // std::bad_alloc): over the documented 1 GiB default, refused before any data is read.
  const std::string header = idx_header({32768, 256, 256});
  write_bytes(path("bomb.idx.gz"), gzip(header + std::string(size_t(4) << 20, '\0')));
  expect_error([&] { read_idx(path("bomb.idx.gz")); },
               {"read_idx: " + path("bomb.idx.gz"), "(32768, 256, 256)",
                "promise more than the limit of 1073741824 bytes"});
}

TEST_F(ReliabilityFiles, IdxCallersBoundWhatTheyAccept) {
  // 1 MiB that compresses to about a kilobyte: within the default bound it reads...
  const std::string data(size_t(1) << 20, '\x05');
  write_bytes(path("mib.idx.gz"), gzip(idx_header({1024, 1024}) + data));
  EXPECT_EQ(read_idx(path("mib.idx.gz")).data.size(), data.size());
  // ...and a caller that expects less refuses it from the header alone.
  expect_error([&] { read_idx(path("mib.idx.gz"), 60000); },
               {"(1024, 1024)", "promise more than the limit of 60000 bytes"});
  // Data that keeps coming after the promise is counted, not stored, and refused.
  write_bytes(path("long.idx.gz"), gzip(idx_header({16}) + data));
  expect_error([&] { read_idx(path("long.idx.gz"), 64); },
               {"trailing data: ", "after the 16 bytes"});
}

// ---- 4. Cycles of blocks. ----

TEST(Reliability, BlockCyclesAreRefusedWhenAdded) {
  auto s = make<Sequential>();
  expect_error([&] { s->add(s); }, {"Sequential", "cycle", "cannot contain itself"});
  auto a = make<Sequential>(), b = make<Sequential>(), c = make<Sequential>();
  a->add(b);
  b->add(c);
  expect_error([&] { c->add(a); }, {"cycle", "already contains this one"});
  EXPECT_TRUE(c->children().empty()) << "the refused child was registered anyway";
  // Sharing without a cycle is fine: a block reachable twice.
  auto shared = make<Dense>(2, "", 2);
  auto net = make<Sequential>();
  net->add(shared, shared);
  a->add(net);
  a->initialize(init::xavier(), kCpu, 1);
  EXPECT_EQ(a->collect_params().size(), 2u);
}

// ---- 5. Tensor::wrap checks its sizes like Tensor::empty. ----

TEST(Reliability, WrapRefusesShapesWhoseBytesOverflow) {
  expect_error([] { Tensor::wrap(nullptr, {int64_t(1) << 62}, Device::cpu()); },
               {"Tensor::wrap", "too large"});
  expect_error(
      [] {
        Tensor::wrap(nullptr, {int64_t(1) << 61, 4}, Device::cpu());
      },
      {"Tensor::wrap", "more elements than int64_t can count"});
  expect_error([] { Tensor::wrap(nullptr, {4}, Device::cpu()); },
               {"Tensor::wrap", "null pointer for 16 bytes"});
  float buffer[4] = {1, 2, 3, 4};
  EXPECT_EQ(ops::sum(Tensor::wrap(buffer, {4}, Device::cpu())).item(), 10.0f);
}

// ---- 6. load_checkpoint changes nothing when it fails. ----

TEST_F(ReliabilityFiles, FailedCheckpointLoadLeavesDeferredParametersAlone) {
  auto source = make<Sequential>();
  source->add(make<Dense>(4, "relu", 5), make<Dense>(3, "", 4));
  source->initialize(init::xavier(), kCpu, 1);
  Trainer source_trainer(source->collect_params(), std::make_shared<SGD>(0.1f));
  save_checkpoint(path("c.safetensors"), *source, source_trainer, {{"epoch", "1"}});

  // Deferred input sizes: 0.weight (4, 0) fits the file's (4, 5); 1.weight (2, 0) does not fit
  // (3, 4), though the ranks agree.
  auto target = make<Sequential>();
  target->add(make<Dense>(4, "relu"), make<Dense>(2));
  target->initialize(init::xavier(), kCpu, 1);
  Trainer target_trainer(target->collect_params(), std::make_shared<SGD>(0.1f));
  expect_error([&] { load_checkpoint(path("c.safetensors"), *target, target_trainer, kCpu); },
               {"load_checkpoint: " + path("c.safetensors"), "'1.weight'", "file has shape (3, 4)",
                "expects (2, 0)"});
  const ParameterDict params = target->collect_params();
  EXPECT_FALSE(params.at("0.weight")->is_initialized()) << "changed before the failure";
  EXPECT_EQ(params.at("0.weight")->shape(), (Shape{4, 0}));
  // The network still works as the deferred network it was.
  EXPECT_EQ((*target)(Tensor::ones({2, 7}, kCpu)).shape(), (Shape{2, 2}));
}

TEST_F(ReliabilityFiles, CheckpointSlotsMustMatchTheirParameterInTheSameFile) {
  // A deferred parameter's slots can only be checked against the file's value of it.
  auto source = make<Dense>(4, "", 5);
  source->initialize(init::xavier(), kCpu, 1);
  Trainer source_trainer(source->collect_params(), std::make_shared<SGD>(0.1f, 0.9f));
  NamedTensors tensors = {{"weight", source->weight()->data()},
                          {"bias", Tensor::zeros({4}, kCpu)},
                          {"optimizer.weight.momentum", Tensor::zeros({4, 6}, kCpu)},
                          {"optimizer.bias.momentum", Tensor::zeros({4}, kCpu)}};
  auto metadata = source_trainer.state_metadata();
  metadata["format"] = "pt";
  save_safetensors(path("slots.safetensors"), tensors, metadata);

  auto target = make<Dense>(4);
  target->initialize(init::xavier(), kCpu, 1);
  Trainer target_trainer(target->collect_params(), std::make_shared<SGD>(0.1f, 0.9f));
  expect_error(
      [&] { load_checkpoint(path("slots.safetensors"), *target, target_trainer, kCpu); },
      {"load_checkpoint: " + path("slots.safetensors"), "'optimizer.weight.momentum': shape (4, 6)",
       "the file's 'weight' has shape (4, 5)"});
  EXPECT_FALSE(target->weight()->is_initialized());
}

// ---- 7. No silent garbage. ----

TEST(Reliability, EmptyMaximaAreRefused) {
  expect_error([] { ops::max(Tensor::zeros({0}, kCpu)); }, {"max", "empty tensor", "(0,)"});
  expect_error([] { ops::max(Tensor::zeros({3, 0}, kCpu)); }, {"max", "(3, 0)"});
  expect_error(
      [] {
        ops::max_rows(Tensor::zeros({3, 0}, kCpu));
      },
      {"max_rows", "rows of length 0", "(3, 0)"});
  EXPECT_EQ(ops::max_rows(Tensor::zeros({0, 4}, kCpu)).shape(), (Shape{0}));  // no rows: fine
  EXPECT_EQ(ops::max(Tensor::from_vector({-3, 2, 1}, {3}, kCpu)).item(), 2.0f);
}

TEST(Reliability, DataLoaderRefusesNormalisationThatCannotGiveNumbers) {
  auto data = std::make_shared<LabelledImages>();
  data->count = 2;
  data->features = 3;
  data->classes = 2;
  data->pixels = {0, 1, 2, 3, 4, 255};
  data->labels = {0, 1};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  LoaderOptions options;
  options.mean = nan;
  expect_error([&] { DataLoader(data, options, kCpu); }, {"DataLoader", "mean must be finite"});
  options.mean = 0.0f;
  for (float stddev : {nan, inf, -inf}) {
    options.stddev = stddev;
    expect_error([&] { DataLoader(data, options, kCpu); },
                 {"DataLoader", "stddev must be finite and positive"});
  }
  options.stddev = 1e-40f;  // positive and finite, but 1 / (255 * stddev) is not
  expect_error([&] { DataLoader(data, options, kCpu); }, {"DataLoader", "beyond the float range"});
  options.stddev = 0.5f;
  DataLoader fine(data, options, kCpu);
  Batch batch;
  ASSERT_TRUE(fine.next(batch));
  for (float value : batch.x.to_vector()) EXPECT_TRUE(std::isfinite(value));
}

TEST(Reliability, UpdateCountsThatCannotGrowAreRefusedBeforeTheStep) {
  auto net = make<Dense>(2, "", 2);
  net->initialize(init::xavier(), kCpu, 1);
  Trainer trainer(net->collect_params(), std::make_shared<SGD>(0.1f));
  auto metadata = trainer.state_metadata();
  const std::string max = std::to_string(std::numeric_limits<int64_t>::max());
  metadata["trainer.updates.weight"] = max;
  trainer.load_state({}, metadata);
  Tensor loss;
  {
    autograd::RecordScope record;
    loss = ops::sum((*net)(Tensor::ones({1, 2}, kCpu)));
  }
  loss.backward();
  const std::vector<float> before = net->weight()->data().to_vector();
  expect_error([&] { trainer.step(1); },
               {"Trainer::step", "'weight'", max, "cannot grow any further"});
  EXPECT_EQ(net->weight()->data().to_vector(), before) << "a refused step changed a weight";
  metadata.erase("trainer.updates.weight");
  metadata["trainer.steps"] = max;
  trainer.load_state({}, metadata);
  expect_error([&] { trainer.step(1); }, {"Trainer::step", "step count", max});
}

// ---- 8. Temporaries of killed writers. ----

TEST_F(ReliabilityFiles, StaleTemporariesOfDeadWritersAreRemovedOnTheNextSave) {
  const std::string target = path("m.safetensors");
  // A pid that is certainly dead: a child that has exited and been reaped.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  const std::string dead = target + ".tmp-" + std::to_string(child);
  const std::string live = target + ".tmp-" + std::to_string(::getppid());  // our parent: alive
  const std::string other = target + ".tmp-notapid";
  const std::string neighbour = path("other.safetensors.tmp-" + std::to_string(child));
  for (const std::string& file : {dead, live, other, neighbour}) write_bytes(file, "partial");

  save_safetensors(target, {{"x", Tensor::ones({2}, kCpu)}});
  EXPECT_FALSE(fs::exists(dead)) << "a dead writer's temporary file was left behind";
  EXPECT_TRUE(fs::exists(live)) << "a live writer's temporary file was removed";
  EXPECT_TRUE(fs::exists(other)) << "a file that is no writer's temporary was removed";
  EXPECT_TRUE(fs::exists(neighbour)) << "another target's temporary file was removed";
  EXPECT_EQ(load_safetensors(target).tensors.size(), 1u);
}

// ---- Messages. ----

TEST(Reliability, ErrorsNameSourceFilesRelativeToTheSourceRoot) {
  const std::string data_dir = CAIRN_TEST_DATA_DIR;  // <source root>/tests/data
  const std::string root = data_dir.substr(0, data_dir.rfind("/tests/data") + 1);
  try {
    make<Sequential>()->add(BlockPtr());
    FAIL() << "expected a cairn::Error";
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("[blocks/block.cpp:"), std::string::npos) << message;
    EXPECT_EQ(message.find(root), std::string::npos) << "absolute source path in: " << message;
  }
}

TEST(Reliability, HeadGradientOfAnotherDtypeIsNamedAsSuch) {
  Tensor x = Tensor::ones({3}, kCpu);
  x.attach_grad();
  Tensor y;
  {
    autograd::RecordScope record;
    y = x * 2.0f;
  }
  expect_error(
      [&] {
        y.backward(Tensor::from_int32({1, 1, 1}, {3}, kCpu));
      },
      {"backward", "head gradient int32", "float32"});
}

}  // namespace
}  // namespace cairn
