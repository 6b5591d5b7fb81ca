// The fused projection kernel's row loop against this core's own FMA peak.
//
// Built and run by scripts/bench_kernel_peak.py (see there); it includes project_cpu.cc,
// so it needs the XLA FFI headers the extension is built with.  Usage:
//
//   kernel_peak ISA ROWS N COLS REPS [THREADS [BASIS]]
//       ISA: avx2 | avx512 | amx;  THREADS: default 1;  BASIS: copy (default) | shared
//
// With THREADS > 1 the threads claim chunks of rows as the kernel's call does (ProjectImpl)
// and read either a copy of the packed basis each (``copy``: what the kernel does) or the
// one copy (``shared``); the peak is then THREADS times one core's.
// Exit status 2 for bad arguments, kNoIsa where the CPU lacks ISA (for amx: AMX-BF16, or
// Linux's permission to use the tiles).
// Times the kernel's row loop (``rows`` in project_body.inc, packed basis, plain stores, the
// output buffer reused: no page faults) on a (ROWS, N) batch and an (N, COLS) basis, REPS
// calls after kWarmupSeconds of untimed ones, and a loop of independent register-only FMAs
// of the same vector width (the core's peak: no loads, no dependences that stall); prints
// one JSON object.
// For amx, the row loop of project_amx.inc (its own basis packing, AmxBasis) against a loop
// of register-only tile products (amx::tile_rate), counted in float32 vector FMAs of 16
// lanes as there, so that its rows compare with avx512's.
// ``err`` is max |out - reference| over the first and the last 64 rows (with THREADS > 1,
// rows of the first thread and, on a large batch, of another), against a float64 reference,
// in units of sqrt(N) eps max|x| (the kernel tests' unit).

#include "project_cpu.cc"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

constexpr long kPeakIters = 20000000;
constexpr double kWarmupSeconds = 0.3;
constexpr int kNoIsa = 3;  // exit status: the CPU lacks the instruction set asked for

// Vector FMAs per second of kChains independent chains, operands in registers.
__attribute__((target("avx2,fma"))) double PeakAvx2() {
  constexpr int kChains = 12;  // FMA latency x throughput on current cores, < 16 registers
  __m256 a[kChains];
  const __m256 b = _mm256_set1_ps(1.0000001f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < kChains; ++i) a[i] = _mm256_set1_ps(static_cast<float>(i));
  const auto t0 = Clock::now();
  for (long k = 0; k < kPeakIters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
  }
  const double s = Seconds(t0);
  __m256 sum = a[0];
  for (int i = 1; i < kChains; ++i) sum = _mm256_add_ps(sum, a[i]);
  volatile float sink = _mm256_cvtss_f32(sum);
  (void)sink;
  return kPeakIters * kChains / s;
}

// The kernel's own register-only loops (project_cpu.cc, project_amx.inc; main takes the
// best of three).
double PeakAvx512() { return avx512::fma_rate(kPeakIters); }
double PeakAmx() { return amx::tile_rate(kPeakIters / 16); }  // ~16 cycles or more each

int Usage(const char* why, int status = 2) {
  std::fprintf(stderr,
               "kernel_peak: %s\nusage: kernel_peak avx2|avx512|amx ROWS N COLS REPS "
               "[THREADS [copy|shared]]\n", why);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6 || argc > 8) return Usage("expected 5 to 7 arguments");
  const std::string isa = argv[1];
  const int64_t rows = std::atol(argv[2]), n = std::atol(argv[3]), rp = std::atol(argv[4]);
  const int reps = std::atoi(argv[5]);
  const int threads = argc > 6 ? std::atoi(argv[6]) : 1;
  const std::string basis_mode = argc > 7 ? argv[7] : "copy";
  if (threads < 1 || threads > 256 || (basis_mode != "copy" && basis_mode != "shared"))
    return Usage("THREADS must be 1 to 256 and BASIS copy or shared");
  __builtin_cpu_init();
  int64_t lanes, nv;
  ProjectRowsFn fn;
  double (*peak)();
  if (isa == "avx2") {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
      return Usage("this CPU has no AVX2+FMA", kNoIsa);
    lanes = avx2::V::W, nv = avx2::V::NV, fn = &avx2::rows, peak = &PeakAvx2;
  } else if (isa == "avx512") {
    if (!__builtin_cpu_supports("avx512f")) return Usage("this CPU has no AVX-512F", kNoIsa);
    lanes = avx512::V::W, nv = avx512::V::NV, fn = &avx512::rows, peak = &PeakAvx512;
  } else if (isa == "amx") {
    if (DetectIsa() < 3)
      return Usage("this CPU has no AMX-BF16, or Linux does not grant the tile state", kNoIsa);
    lanes = avx512::V::W, nv = avx512::V::NV, fn = AmxRowsFn(), peak = &PeakAmx;
  } else {
    return Usage("ISA must be avx2, avx512 or amx");
  }
  if (rows <= 0 || n <= 0 || reps <= 0 || rp <= 0 || rp % lanes || rp > kMaxCols || rp > n)
    return Usage("need ROWS, N, REPS > 0 and 0 < COLS <= min(N, 256), COLS a multiple of "
                 "the vector width (8 for avx2, 16 for avx512)");

  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> unit;
  std::vector<float> r(n * rp), rt(rp * n);
  std::vector<uint8_t> bad(rows);
  // x and the output 64-byte aligned, as XLA's buffers are (an unaligned row start splits
  // vector loads and stores across cache lines)
  const size_t bytes = (static_cast<size_t>(rows * n) * 4 + 63) / 64 * 64;
  std::unique_ptr<float, decltype(&std::free)> xbuf(
      static_cast<float*>(std::aligned_alloc(64, bytes)), &std::free),
      obuf(static_cast<float*>(std::aligned_alloc(64, bytes)), &std::free);
  float *x = xbuf.get(), *out = obuf.get();
  if (x == nullptr || out == nullptr) return Usage("out of memory");
  const float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < rp; ++j) rt[j * n + k] = r[k * rp + j] = normal(gen) * scale;
  for (int64_t i = 0; i < rows * n; ++i) x[i] = unit(gen);
  std::fill(out, out + rows * n, 0.0f);
  // the basis as the kernel's call packs it (ProjectImpl in project_cpu.cc)
  const float *pr, *prt;
  std::unique_ptr<PackedBasis> packed;
  std::unique_ptr<AmxBasis> tiles;
  if (isa == "amx") {
    tiles = std::make_unique<AmxBasis>(r.data(), rt.data(), 1, n, rp);
    pr = tiles->b1, prt = tiles->b2;
  } else {
    packed = std::make_unique<PackedBasis>(r.data(), rt.data(), 1, n, rp, lanes, nv);
    pr = packed->r, prt = packed->rt;
  }

  // one copy of the packed block (r, then rt) per extra thread, made as the kernel's workers
  // make theirs (SharedBasis::CopyBlock), once, before timing: these threads start anew for
  // each call
  const int64_t block = isa == "amx" ? tiles->b1_size + tiles->b2_size
                                     : n * rp + packed->rt_size;
  std::vector<std::vector<float>> copies(threads);
  std::vector<const float*> thread_r(threads, pr), thread_rt(threads, prt);
  for (int t = 1; t < threads && basis_mode == "copy"; ++t)
    SharedBasis::CopyBlock(pr, block, copies[t], thread_r[t], thread_rt[t]);
  const int64_t chunk = ChunkRows(rows, threads, isa == "amx" ? amx::kMB : 24);  // as ProjectImpl
  auto call = [&] {
    if (threads == 1) return fn(x, pr, prt, out, bad.data(), 0, rows, n, rp, true, false, true);
    std::atomic<int64_t> next{0};
    auto work = [&](int t) {
      for (int64_t r0; (r0 = next.fetch_add(chunk)) < rows;)
        fn(x, thread_r[t], thread_rt[t], out, bad.data(), r0, std::min(rows, r0 + chunk), n,
           rp, true, false, true);
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
    work(0);
    for (auto& th : pool) th.join();
  };
  // Warm up for a while, not for a number of calls: a core that was idle runs the first
  // ~0.1 s of calls slower (docs/results/performance.md, ninth session).
  for (const auto t0 = Clock::now(); Seconds(t0) < kWarmupSeconds;) call();
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    call();
    times.push_back(Seconds(t0));
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];

  double err = 0, xmax = 0;
  for (int64_t i = 0; i < rows; i = i + 1 == 64 ? std::max<int64_t>(64, rows - 64) : i + 1) {
    std::vector<double> c(rp, 0.0);
    for (int64_t k = 0; k < n; ++k) {
      xmax = std::max(xmax, std::fabs(double{x[i * n + k]}));
      for (int64_t j = 0; j < rp; ++j) c[j] += double{x[i * n + k]} * r[k * rp + j];
    }
    for (int64_t k = 0; k < n; ++k) {
      double ref = x[i * n + k];
      for (int64_t j = 0; j < rp; ++j) ref -= c[j] * rt[j * n + k];
      err = std::max(err, std::fabs(ref - out[i * n + k]));
    }
  }
  const double unit_err = std::sqrt(static_cast<double>(n)) * 0x1p-23 * xmax;

  double best = 0;
  for (int i = 0; i < 3; ++i) best = std::max(best, peak());
  best *= threads;  // one core's register-only rate, on every thread
  const double vfma = 2.0 * rows * n * rp / lanes;
  std::printf("{\"isa\": \"%s\", \"rows\": %lld, \"n\": %lld, \"cols\": %lld, \"reps\": %d, "
              "\"threads\": %d, \"basis\": \"%s\", "
              "\"kernel_ms\": %.4f, \"kernel_vfma_per_s\": %.4e, \"peak_vfma_per_s\": %.4e, "
              "\"fraction_of_peak\": %.4f, \"err\": %.4f}\n",
              isa.c_str(), static_cast<long long>(rows), static_cast<long long>(n),
              static_cast<long long>(rp), reps, threads,
              threads > 1 ? basis_mode.c_str() : "-", median * 1e3, vfma / median, best,
              vfma / median / best, err / unit_err);
  return 0;
}
