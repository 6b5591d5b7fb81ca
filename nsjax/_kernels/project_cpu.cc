// Fused null-space projection for XLA:CPU, called from JAX through the XLA FFI.
//
//   out = x - (x R) R^T   (null part)      or      out = (x R) R^T   (perp part)
//
// x: (..., M, n) float32 (after the batch dims, any shape of M n values: rows of n in
// row-major order), R: (..., n, rp) float32 with rp a multiple of 16 (zero-padded columns
// are allowed), Rt = R^T: (..., rp, n).  Each leading (vmap) dim of x, R and Rt is the
// output's or 1 (broadcast: vmap_method="expand_dims", nothing copied).
// Results: out, float32, shaped like x (or any other shape of M n values after the batch
// dims), and bad (..., M) uint8, 1 for each row whose coefficients x R held a NaN or +-inf
// (i.e. the row held NaN/inf, see nsjax/_nullspace.py); M is read from bad's shape.
//
// Why a kernel: XLA:CPU runs the two skinny matmuls as separate Eigen calls and the
// subtraction as a third pass over the batch (3 reads and 2 writes of x, and the k = rp
// matmul at half the GEMM rate).  Here each tile of MR rows of x is projected while it is
// in cache: one read of x, one write of the output, register-blocked FMAs.  Both matmuls
// are plain float32 FMAs (no reduced-precision passes): the same arithmetic as
// Precision.HIGHEST, summed in a different order.
//
// Instruction sets: AVX-512F and AVX2+FMA, chosen at run time (nsjax_project_isa()); the
// body is compiled once per set from project_body.inc.  Where the CPU also has AMX-BF16
// (and Linux grants the tile state), bases of kAmxMinCols or more columns take the AMX
// kernel of project_amx.inc instead: float32 accuracy from three exact bfloat16 pieces per
// operand (see there), at 1.1-1.3x the AVX-512 speed for such bases where the tiles run at
// their nominal rate, when asked for (UseAmx: NSJAX_CPU_KERNEL=amx).  Elsewhere (or with
// -DNSJAX_NO_SIMD, to check that path compiles) the library builds with isa 0 and nsjax
// uses XLA's matmuls.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kMaxCols = 256;  // rp limit: the coefficient tile lives on the stack
constexpr int64_t kKBlock = 64;  // phase-1 summation block (see project_body.inc)

using ProjectRowsFn = void (*)(const float*, const float*, const float*, float*, uint8_t*,
                               int64_t, int64_t, int64_t, int64_t, bool, bool, bool);

// Where the rows of a patch-layout projection live (project_body.inc, patch_rows).
struct PatchGeom {
  int64_t per_image;  // patches per image, (H / ph) (W / pw)
  int64_t cols;       // patches per patch row, W / pw
  int64_t ph, seg;    // lines per patch, floats per line (pw C)
  int64_t stride;     // floats per image line (W C)
  int64_t image;      // floats per image (H W C)
};
using PatchRowsFn = void (*)(const float*, const float*, const float*, float*, uint8_t*,
                             const PatchGeom&, int64_t, int64_t, int64_t, bool, float*, float*);

}  // namespace

// The AMX kernel's tile sizes and its exact split of a float32 into three bfloat16 pieces
// (see project_amx.inc), for the basis packing in AmxBasis.
namespace amx {
constexpr int kT = 16;        // rows per tile; float32 columns per accumulator tile
constexpr int kK = 32;        // bfloat16 values per tile row: k per tile
constexpr int64_t kMB = 32;   // rows of x per block: two row tiles
constexpr int kPieces = 3;
constexpr int64_t kTileBf16 = kT * kK;  // bfloat16 values per packed B tile

// float32 -> bfloat16 bits, round to nearest even (finite values; the basis is finite).
static inline uint16_t bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
static inline float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// The three pieces of a (scalar; the basis packing).
static inline void split(float a, uint16_t p[kPieces]) {
  for (int i = 0; i < kPieces; ++i) {
    p[i] = bf16(a);
    a -= from_bf16(p[i]);
  }
}

}  // namespace amx

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(NSJAX_NO_SIMD)
#include <cpuid.h>
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#endif
namespace avx512 {
using v = __m512;
struct V {
  static constexpr int W = 16;
  static constexpr int MR = 6, NV = 4;  // 24 accumulators + 4 basis vectors + 1 broadcast
  static inline v zero() { return _mm512_setzero_ps(); }
  static inline v load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, v a) { _mm512_storeu_ps(p, a); }
  static inline void stream(float* p, v a) { _mm512_stream_ps(p, a); }
  static inline v bcast(float s) { return _mm512_set1_ps(s); }
  static inline v fma(v a, v b, v c) { return _mm512_fmadd_ps(a, b, c); }
  static inline v fnma(v a, v b, v c) { return _mm512_fnmadd_ps(a, b, c); }
  static inline v sub(v a, v b) { return _mm512_sub_ps(a, b); }
  static inline v add(v a, v b) { return _mm512_add_ps(a, b); }
  static inline __mmask16 mask(int64_t k) { return (__mmask16)((1u << k) - 1u); }
  static inline v load_tail(const float* p, int64_t k) {
    return k == W ? load(p) : _mm512_maskz_loadu_ps(mask(k), p);
  }
  static inline void store_tail(float* p, v a, int64_t k) {
    if (k == W) store(p, a); else _mm512_mask_storeu_ps(p, mask(k), a);
  }
  static inline bool has_nan(v a) {
    return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) != 0;
  }
};
#include "project_body.inc"

// Vector FMAs per second of ``iters`` rounds of 24 independent chains, operands in
// registers: the core's AVX-512 FMA peak (no loads, no stalls), for the AMX probe below and
// scripts/kernel_peak.cc.
static double fma_rate(long iters) {
  constexpr int kChains = 24;
  __m512 a[kChains];
  const __m512 b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
#pragma GCC unroll 24
  for (int i = 0; i < kChains; ++i) a[i] = _mm512_set1_ps(static_cast<float>(i));
  const auto t0 = std::chrono::steady_clock::now();
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) a[i] = _mm512_fmadd_ps(a[i], b, c);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  __m512 sum = a[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, a[i]);
  volatile float sink = _mm512_reduce_add_ps(sum);
  (void)sink;
  return static_cast<double>(iters) * kChains / s;
}
}  // namespace avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace avx2 {
using v = __m256;
struct V {
  static constexpr int W = 8;
  static constexpr int MR = 6, NV = 2;  // 12 accumulators + 2 basis vectors + 1 broadcast <= 16
  static inline v zero() { return _mm256_setzero_ps(); }
  static inline v load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, v a) { _mm256_storeu_ps(p, a); }
  static inline void stream(float* p, v a) { _mm256_stream_ps(p, a); }
  static inline v bcast(float s) { return _mm256_set1_ps(s); }
  static inline v fma(v a, v b, v c) { return _mm256_fmadd_ps(a, b, c); }
  static inline v fnma(v a, v b, v c) { return _mm256_fnmadd_ps(a, b, c); }
  static inline v sub(v a, v b) { return _mm256_sub_ps(a, b); }
  static inline v add(v a, v b) { return _mm256_add_ps(a, b); }
  static inline __m256i mask(int64_t k) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline v load_tail(const float* p, int64_t k) {
    return k == W ? load(p) : _mm256_maskload_ps(p, mask(k));
  }
  static inline void store_tail(float* p, v a, int64_t k) {
    if (k == W) store(p, a); else _mm256_maskstore_ps(p, mask(k), a);
  }
  static inline bool has_nan(v a) {
    return _mm256_movemask_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q)) != 0;
  }
};
#include "project_body.inc"
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16")
#endif
#include "project_amx.inc"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace {
// AMX-BF16 with AVX512-BF16 (CPUID leaf 7), and the kernel's permission for this process
// to use the tile registers (Linux 5.16+: arch_prctl(ARCH_REQ_XCOMP_PERM)); without it the
// first tile instruction would fault.
bool AmxUsable() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool tiles = (d >> 22 & 1) && (d >> 24 & 1);  // AMX-BF16, AMX-TILE
  if (!tiles || !__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a >> 5 & 1)) return false;
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
int DetectIsa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return AmxUsable() ? 3 : 2;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
  return 0;
}
ProjectRowsFn RowsFn(int isa) {
  return isa >= 2 ? &avx512::rows : isa == 1 ? &avx2::rows : nullptr;
}
ProjectRowsFn AmxRowsFn() { return &amx::rows; }
double FmaRate(long iters) { return avx512::fma_rate(iters); }
double TileRate(long iters) { return amx::tile_rate(iters); }
PatchRowsFn PatchFn(int isa) {
  return isa >= 2 ? &avx512::patch_rows : isa == 1 ? &avx2::patch_rows : nullptr;
}
int64_t Lanes(int isa) { return isa >= 2 ? 16 : 8; }
int64_t PanelVectors(int isa) { return isa >= 2 ? avx512::V::NV : avx2::V::NV; }
void StoreFence() { _mm_sfence(); }  // orders the streaming stores before we report done
}  // namespace
#else
namespace {
int DetectIsa() { return 0; }
ProjectRowsFn RowsFn(int) { return nullptr; }
ProjectRowsFn AmxRowsFn() { return nullptr; }
double FmaRate(long) { return 0; }
double TileRate(long) { return 0; }
PatchRowsFn PatchFn(int) { return nullptr; }
int64_t Lanes(int) { return 16; }
int64_t PanelVectors(int) { return 1; }
void StoreFence() {}
}  // namespace
#endif

namespace {

// p rounded up to a 64-byte boundary, a cache line (the buffers keep 64 bytes spare).
template <class T>
T* Align64(T* p) {
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
}

std::atomic<int> g_isa_cap{3};  // nsjax_project_cap_isa: test the AVX2/AVX-512 paths

// Whether wide bases take the AMX kernel where the CPU has it: only when asked for
// (nsjax_project_amx_mode).  The tiles' rate differs between hosts of one CPU model and,
// on one VM, from one moment to the next, and below about twice the AVX-512 FMA peak the
// FMA body is the faster; a timed choice, made once per process, took the tiles in some
// processes and not in others on one machine, so the results' last bits differed between
// runs (docs/results/performance.md, thirteenth session).  So the default is the FMA body,
// the same bits on every AVX-512 CPU, and ProbeAmx only reports: the tiles' register-only
// rate against the AVX-512 FMA peak, both in float32 vector FMAs (a tile product, 16 x 16
// x 32 bfloat16 MACs spent six to a float32 MAC, is worth 8192 / 6 / 16 of them), best of
// kProbeRounds each; nominal is 85.3 / 16 against 2 per cycle, 2.67, and the tiles pay
// from about kAmxMinPeakRatio.
constexpr double kAmxMinPeakRatio = 2.0;
constexpr int kProbeRounds = 5;
constexpr long kProbeFmaIters = 40000, kProbeTileIters = 4000;  // ~0.2-0.5 ms each
std::atomic<bool> g_amx{false};  // nsjax_project_amx_mode

double ProbeAmx() {  // the tiles' peak over the FMA peak (only where DetectIsa() is 3)
  static const double ratio = [] {
    double fma = 0, tile = 0;
    for (int i = 0; i < kProbeRounds; ++i) {
      fma = std::max(fma, FmaRate(kProbeFmaIters));
      tile = std::max(tile, TileRate(kProbeTileIters));
    }
    return fma > 0 ? tile / fma : 0.0;
  }();
  return ratio;
}

bool UseAmx() { return g_amx.load(); }  // where Isa() is 3
std::atomic<bool> g_advise{true};  // nsjax_project_set_hugepages: measure without

// Transparent huge pages for a large output buffer: asked for on the whole buffer before
// the workers write it, and withdrawn from the rest of it when its faults turn out slow
// (below).  XLA:CPU's fresh output buffers come from malloc, i.e. from a new
// mmap for anything this large, and on a kernel whose THP mode is ``madvise`` (a common
// default) they are otherwise faulted in 4 KiB at a time: 45,938 faults for a (60000, 784)
// float32 output, which on a VM cost more than the projection.  NumPy asks for huge pages on
// its own large arrays too.
//
// But a huge page is not always the cheaper one.  On a VM whose balloon driver reports free
// memory to the host (virtio free page reporting, e.g. Firecracker), memory the process has
// not reused for a few seconds goes back to the host, and faulting a huge page of it in took
// ~13 ms per 2 MiB where 4 KiB pages took ~0.8 ms per 2 MiB (docs/results/performance.md,
// "Huge pages after idle").  So the first touch of each whole 2 MiB region is timed, by the
// worker about to write it, and the advice holds while the regions probed so far took no
// longer than their 4 KiB faults would have: an allowance of g_fault_allowance_ns (1 ms) per
// region, plus kSlackRegions allowances, so that one slow region or a preempted worker does
// not end it.  Past that, the rest of the buffer is marked MADV_NOHUGEPAGE (so also where
// THP mode is ``always``) and faulted in 4 KiB pages.  A fast probe costs nothing extra
// (the page was to be faulted in anyway).  A worker only probes regions that start in rows
// it alone writes: the probe writes a zero there before the kernel writes the row.  A
// failing madvise (old kernel, THP off) leaves the buffer as it was, so its result is
// ignored.
constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
constexpr int64_t kAdviseMinBytes = int64_t{4} << 20;
constexpr double kSlackRegions = 20;
std::atomic<int64_t> g_fault_allowance_ns{1'000'000};  // nsjax_project_set_fault_allowance_ns
std::atomic<int64_t> g_advice_stats[3];  // the last advised call: regions, probed, stopped

struct HugePageAdvisor {
  uintptr_t start = 0, end = 0;  // the buffer's whole 2 MiB regions; empty: no advice
  double allowance_ns = 0;
  std::atomic<bool> stopped{false};
  std::atomic<int64_t> probed{0}, probe_ns{0};

  void Init(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes < kAdviseMinBytes || !g_advise.load(std::memory_order_relaxed)) return;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    start = (a + kHugePage - 1) & ~(kHugePage - 1);
    end = std::max(start, (a + static_cast<uintptr_t>(bytes)) & ~(kHugePage - 1));
    allowance_ns = static_cast<double>(g_fault_allowance_ns.load(std::memory_order_relaxed));
    if (end > start) (void)madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
  }

  // Before a worker writes bytes [b, e) of the buffer (bytes no other worker writes).
  void Before(const void* b, const void* e) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t stop = std::min(reinterpret_cast<uintptr_t>(e), end);
    for (uintptr_t r = std::max(start, (reinterpret_cast<uintptr_t>(b) + kHugePage - 1) &
                                           ~(kHugePage - 1));
         r < stop && !stopped.load(std::memory_order_relaxed); r += kHugePage) {
      const auto t0 = std::chrono::steady_clock::now();
      *reinterpret_cast<volatile char*>(r) = 0;  // the first touch faults the page in
      const int64_t dt = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now() - t0).count();
      const int64_t k = probed.fetch_add(1) + 1, total = probe_ns.fetch_add(dt) + dt;
      if (static_cast<double>(total) > allowance_ns * (static_cast<double>(k) + kSlackRegions) &&
          !stopped.exchange(true) && r + kHugePage < end)
        (void)madvise(reinterpret_cast<void*>(r + kHugePage), end - r - kHugePage,
                      MADV_NOHUGEPAGE);
    }
#else
    (void)b;
    (void)e;
#endif
  }

  // After the call: what nsjax_project_advice_stats reports.
  void Record() const {
    if (end == start) return;
    g_advice_stats[0] = static_cast<int64_t>((end - start) / kHugePage);
    g_advice_stats[1] = probed.load();
    g_advice_stats[2] = stopped.load() ? 1 : 0;
  }
};

int DetectedIsa() {
  static const int isa = DetectIsa();
  return isa;
}
int Isa() { return std::min(DetectedIsa(), g_isa_cap.load()); }

// R (n, rp) and Rt (rp, n) of ``bases`` bases, repacked into the column panels that
// project_body.inc reads (see there) for an ISA of w lanes and panels of nv vectors: basis
// b's R panels at r + b n rp, its Rt panels at rt + b npad rp, npad = n rounded up to w.
// The inner loops then read each panel front to back, a few cache lines per step, instead
// of lines rp or n floats apart; 64-byte aligned.  Up to kPackCacheFloats the panels live in
// a buffer the calling thread keeps for its next call (no allocation, no page faults on a
// small call); larger ones in a buffer of their own.  A pool task of an earlier call that
// starts late claims no chunk, so it never reads a buffer that was reused.
constexpr int64_t kPackCacheFloats = int64_t{2} << 20;  // 8 MiB
constexpr int64_t kPackMinRows = 1024;  // rows of x per basis from which packing pays
// Basis columns (padded) from which the AMX kernel is used: measured on 2 cores against
// the AVX-512 body, (60000, 784) rows: 1.05-1.17x at 112 columns, 1.28-1.34x at 256,
// 0.91-1.05x at 64; (200000, 100) x 48: 0.87-1.01x (docs/results/performance.md, eighth
// session; scripts/bench_cpu_isa.py).
constexpr int64_t kAmxMinCols = 96;
// Rows of x per basis from which the AMX kernel is used: packing its basis (three pieces,
// tile layout) takes ~1 ms.  (784, 108), two threads, AMX vs AVX-512: 1024 rows 2.1-2.9 vs
// 1.5 ms, 2048 3.0 vs 2.7, 4096 4.9-5.1 vs 5.1-5.2, 8192 8.7-9.1 vs 10.2.
constexpr int64_t kAmxMinRows = 4096;
struct PackedBasis {
  std::vector<float> own;
  float *r = nullptr, *rt = nullptr;
  int64_t rt_size = 0;  // floats per basis in rt

  PackedBasis(const float* r_in, const float* rt_in, int64_t bases, int64_t n, int64_t rp,
              int64_t w, int64_t nv) {
    static thread_local std::vector<float> cache;
    const int64_t r_size = n * rp, npad = (n + w - 1) / w * w;
    rt_size = npad * rp;
    const int64_t need = bases * (r_size + rt_size) + 16;
    std::vector<float>& buf = need <= kPackCacheFloats ? cache : own;
    if (static_cast<int64_t>(buf.size()) < need) buf.resize(need);
    r = Align64(buf.data());
    rt = r + bases * r_size;
    const int64_t panel = nv * w;
    for (int64_t b = 0; b < bases; ++b) {
      const float* src = r_in + b * r_size;
      for (int64_t j0 = 0; j0 < rp; j0 += panel) {
        const int64_t pw = std::min(panel, rp - j0);
        float* dst = r + b * r_size + j0 * n;
        for (int64_t k = 0; k < n; ++k)
          std::copy(src + k * rp + j0, src + k * rp + j0 + pw, dst + k * pw);
      }
      const float* srct = rt_in + b * r_size;
      for (int64_t j = 0; j < n;) {
        // whole panels, then the whole vectors left, then the last n % w columns padded
        const int64_t pw = n - j >= panel ? panel : n - j >= w ? (n - j) / w * w : w;
        const int64_t valid = std::min(pw, n - j);
        float* dst = rt + b * rt_size + j * rp;
        for (int64_t l = 0; l < rp; ++l) {
          std::copy(srct + l * n + j, srct + l * n + j + valid, dst + l * pw);
          std::fill(dst + l * pw + valid, dst + (l + 1) * pw, 0.0f);
        }
        j += pw;
      }
    }
  }
};

// R (n, rp) and Rt (rp, n) of ``bases`` bases as the AMX kernel's B tiles
// (project_amx.inc): for each basis, R's three pieces of ceil(n / 32) k-blocks x rp / 16
// column tiles at b1 + b b1_size, Rt's three pieces of ceil(rp / 32) x ceil(n / 16) at
// b2 + b b2_size (sizes in floats: two bfloat16 per float), zero-padded, 64-byte aligned.
struct AmxBasis {
  std::vector<uint16_t> own;
  float *b1 = nullptr, *b2 = nullptr;
  int64_t b1_size = 0, b2_size = 0;

  // Tile (piece, kb, jt) of a (K, N) row-major matrix a, elements (k, j) with
  // k < K, j < N, at dst + ((piece kbs + kb) jts + jt) 512.
  static void Pack(const float* a, int64_t rows, int64_t cols, uint16_t* dst) {
    const int64_t kbs = (rows + amx::kK - 1) / amx::kK, jts = (cols + amx::kT - 1) / amx::kT;
    for (int64_t k = 0; k < rows; ++k)
      for (int64_t j = 0; j < cols; ++j) {
        uint16_t p[amx::kPieces];
        amx::split(a[k * cols + j], p);
        const int64_t in_tile = (k % amx::kK) / 2 * amx::kK + 2 * (j % amx::kT) + k % 2;
        for (int q = 0; q < amx::kPieces; ++q)
          dst[((q * kbs + k / amx::kK) * jts + j / amx::kT) * amx::kTileBf16 + in_tile] = p[q];
      }
  }
  AmxBasis(const float* r_in, const float* rt_in, int64_t bases, int64_t n, int64_t rp) {
    const int64_t t1 = (n + amx::kK - 1) / amx::kK * (rp / amx::kT);
    const int64_t t2 = (rp + amx::kK - 1) / amx::kK * ((n + amx::kT - 1) / amx::kT);
    const int64_t s1 = amx::kPieces * t1 * amx::kTileBf16, s2 = amx::kPieces * t2 * amx::kTileBf16;
    own.assign(bases * (s1 + s2) + 64, uint16_t{0});
    uint16_t* base = Align64(own.data());
    for (int64_t b = 0; b < bases; ++b) {
      Pack(r_in + b * n * rp, n, rp, base + b * s1);
      Pack(rt_in + b * n * rp, rp, n, base + bases * s1 + b * s2);
    }
    b1 = reinterpret_cast<float*>(base);
    b2 = reinterpret_cast<float*>(base + bases * s1);
    b1_size = s1 / 2;
    b2_size = s2 / 2;
  }
};

// A packed basis as one block of floats: the workers after the first read their own copy,
// since two cores reading one copy each ran their row loop ~1.5x slower than alone
// (docs/results/performance.md, fourteenth session; scripts/bench_kernel_peak.py
// --threads 2).  The copy (up to kPackCacheFloats; ~0.1 ms for 700 KB) lives in a buffer
// the worker thread keeps for its next call; a worker makes it only once it has claimed a
// chunk, so a late task of an earlier call never writes it while a chunk of that call still
// reads it.
struct SharedBasis {
  const float* block = nullptr;  // r; the copy replaces r and rt (rt - r floats after it)
  int64_t floats = 0;            // 0: every worker reads r and rt as given

  void Init(const float* r, const float* rt, int64_t total_floats, int64_t workers) {
    if (workers > 1 && total_floats <= kPackCacheFloats && rt > r &&
        rt - r < total_floats) {
      block = r;
      floats = total_floats;
    }
  }
  // r and rt for a worker that is not the caller: a copy in the thread's own buffer.
  void Copy(const float*& r, const float*& rt) const {
    if (floats == 0) return;
    static thread_local std::vector<float> copy;
    CopyBlock(block, floats, copy, r, rt);
  }
  // ``floats`` floats from ``block`` (= r) into ``buf`` (grown as needed, 64-byte aligned);
  // r and rt moved onto the copy.
  static void CopyBlock(const float* block, int64_t floats, std::vector<float>& buf,
                        const float*& r, const float*& rt) {
    if (static_cast<int64_t>(buf.size()) < floats + 16) buf.resize(floats + 16);
    float* d = Align64(buf.data());
    std::memcpy(d, block, static_cast<size_t>(floats) * sizeof(float));
    rt = d + (rt - r);
    r = d;
  }
};

// Chunks of rows per worker thread.  Whoever finishes early claims the next chunk, so the
// most a worker that is preempted or slowed (a busy core, a VM's other tenants) can hold
// back the call is the rest of one chunk: small chunks bound that wait, and each costs
// only an atomic increment.
constexpr int64_t kChunksPerWorker = 16;

// Rows per chunk for ``rows`` rows on ``workers`` threads: ~kChunksPerWorker chunks per
// worker, each a whole number of ``unit`` rows.
int64_t ChunkRows(int64_t rows, int64_t workers, int64_t unit) {
  const int64_t chunk = (rows + kChunksPerWorker * workers - 1) / (kChunksPerWorker * workers);
  return std::max<int64_t>(unit, (chunk + unit - 1) / unit * unit);
}

// Work shared by the calling thread and the tasks it schedules on XLA's intra-op pool, in
// ``total`` chunks.  Chunks are claimed with an atomic counter, so the caller only ever
// waits for chunks a running thread has already claimed: no deadlock however busy the pool
// is, and a task that starts late finds nothing left and returns.  Job and PatchJob add
// what their chunks compute and a Work(bool caller) that claims them (Claim, then Finish).
struct Chunks {
  int64_t total = 0;
  HugePageAdvisor advice;
  SharedBasis shared_basis;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable cv;

  // Claims chunks until none is left and calls each(c, r, rt) for chunk c, with r and rt
  // the caller's basis or, on the other workers, their copy of it (made once the first
  // chunk is claimed, see SharedBasis); returns how many chunks this worker did.
  template <class F>
  int64_t Claim(bool caller, const float* r, const float* rt, F&& each) {
    int64_t finished = 0;
    for (int64_t c; (c = next.fetch_add(1)) < total; ++finished) {
      if (!caller && finished == 0) shared_basis.Copy(r, rt);
      each(c, r, rt);
    }
    return finished;
  }
  // Reports a worker's ``finished`` chunks done, waking Run once all are.
  void Finish(int64_t finished) {
    if (finished && done.fetch_add(finished) + finished == total) {
      std::lock_guard<std::mutex> lock(mu);
      cv.notify_all();
    }
  }
};

// Runs ``job`` (a Job or PatchJob, its chunks set up) on ``workers`` threads: the calling
// thread and up to workers - 1 pool tasks; returns when every chunk is done.
template <class J>
void Run(ffi::ThreadPool& pool, const std::shared_ptr<J>& job, int64_t workers) {
  for (int64_t t = 1; t < std::min(workers, job->total); ++t)
    pool.Schedule([job] { job->Work(false); });
  job->Work(true);
  std::unique_lock<std::mutex> lock(job->mu);
  job->cv.wait(lock, [&] { return job->done.load() == job->total; });
  job->advice.Record();
}

struct Job : Chunks {
  ProjectRowsFn fn;
  const float *x, *r, *rt;  // R and Rt as given, or packed (then ``basis`` owns them)
  std::unique_ptr<PackedBasis> basis;
  std::unique_ptr<AmxBasis> amx_basis;
  int64_t r_size, rt_size;  // floats per basis in r and rt
  float* out;
  uint8_t* bad;
  std::vector<int64_t> x_of, basis_of;  // output slab g: x slab x_of[g], basis basis_of[g]
  int64_t m, n, rp, chunk_rows, chunks_per_slab;
  bool null_part, nt;

  void Work(bool caller) {
    const int64_t finished = Claim(caller, r, rt, [&](int64_t c, const float* wr,
                                                      const float* wrt) {
      const int64_t g = c / chunks_per_slab, k = c % chunks_per_slab, b = basis_of[g];
      const int64_t r0 = k * chunk_rows, r1 = std::min(m, r0 + chunk_rows);
      advice.Before(out + (g * m + r0) * n, out + (g * m + r1) * n);
      fn(x + x_of[g] * m * n, wr + b * r_size, wrt + b * rt_size, out + g * m * n,
         bad + g * m, r0, r1, n, rp, null_part, nt, basis != nullptr);
    });
    if (nt) StoreFence();  // the streaming stores land before the call reports done
    Finish(finished);
  }
};

ffi::Error ProjectImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> r,
                       ffi::Buffer<ffi::F32> rt, ffi::ResultBuffer<ffi::F32> out,
                       ffi::ResultBuffer<ffi::U8> bad, bool null_part) {
  const int isa = Isa();
  if (isa == 0) return ffi::Error::Internal("nsjax_project_f32: no AVX2/AVX-512 on this CPU");
  auto xd = x.dimensions(), rd = r.dimensions(), td = rt.dimensions();
  auto od = out->dimensions(), bd = bad->dimensions();
  if (rd.size() < 2 || td.size() != rd.size() || bd.size() + 1 != rd.size() ||
      xd.size() < bd.size() || od.size() < bd.size())
    return ffi::Error::InvalidArgument("nsjax_project_f32: expected R (..., n, rp), "
                                       "Rt (..., rp, n), bad (..., M), and x and out "
                                       "(..., any shape of M n values)");
  const size_t nb = rd.size() - 2;
  const int64_t m = bd[nb], n = rd[nb], rp = rd[nb + 1];
  // After the batch dims, x and out may have any shape of M n values (row-major): a
  // reshape here is free, where XLA copies a reshaped custom-call result on its way out
  // (and then an output that aliases x could not keep x's shape).
  int64_t x_values = 1, out_values = 1;
  for (size_t i = nb; i < xd.size(); ++i) x_values *= xd[i];
  for (size_t i = nb; i < od.size(); ++i) out_values *= od[i];
  if (x_values != m * n || out_values != m * n || td[nb] != rp || td[nb + 1] != n ||
      rp % Lanes(isa) != 0 || rp > kMaxCols || rp <= 0)
    return ffi::Error::InvalidArgument("nsjax_project_f32: expected R (n, rp), Rt (rp, n) with "
                                       "0 < rp <= 256, rp a multiple of 16, and M n values of "
                                       "x and of out per batch element");
  int64_t slabs = 1;
  bool shared = true;  // one basis, x not broadcast: treat x as one (slabs * M, n) slab
  for (size_t i = 0; i < nb; ++i) {
    if (td[i] != rd[i] || (rd[i] != od[i] && rd[i] != 1) || (xd[i] != od[i] && xd[i] != 1) ||
        bd[i] != od[i])
      return ffi::Error::InvalidArgument("nsjax_project_f32: a batch dim of x, R or Rt is "
                                         "neither the output's nor 1");
    shared = shared && rd[i] == 1 && xd[i] == od[i];
    slabs *= od[i];
  }
  if (m == 0 || slabs == 0) return ffi::Error::Success();
  if (n == 0) {  // nothing to project; no coefficient can be NaN
    std::fill(bad->typed_data(), bad->typed_data() + slabs * m, uint8_t{0});
    return ffi::Error::Success();
  }

  auto job = std::make_shared<Job>();
  job->fn = RowsFn(isa);
  job->x = x.typed_data();
  job->out = out->typed_data();
  job->bad = bad->typed_data();
  job->n = n;
  job->rp = rp;
  job->null_part = null_part;
  int64_t bases = 1;
  for (size_t i = 0; i < nb; ++i) bases *= rd[i];
  job->r = r.typed_data();
  job->rt = rt.typed_data();
  job->r_size = job->rt_size = rp * n;
  const bool amx = isa == 3 && rp >= kAmxMinCols && slabs * m >= kAmxMinRows * bases &&
                   UseAmx();
  if (amx) {
    job->fn = AmxRowsFn();
    job->amx_basis = std::make_unique<AmxBasis>(job->r, job->rt, bases, n, rp);
    job->r = job->amx_basis->b1;
    job->rt = job->amx_basis->b2;
    job->r_size = job->amx_basis->b1_size;
    job->rt_size = job->amx_basis->b2_size;
  } else if (slabs * m >= kPackMinRows * bases) {  // below, the copy costs more than it saves
    job->basis = std::make_unique<PackedBasis>(job->r, job->rt, bases, n, rp, Lanes(isa),
                                                PanelVectors(isa));
    job->r = job->basis->r;
    job->rt = job->basis->rt;
    job->rt_size = job->basis->rt_size;
  }
  if (shared) {
    job->m = slabs * m;
    job->x_of.assign(1, 0);
    job->basis_of.assign(1, 0);
  } else {  // row-major indices of slab g's x and basis, size-1 dims broadcast
    job->m = m;
    job->x_of.resize(slabs);
    job->basis_of.resize(slabs);
    for (int64_t g = 0; g < slabs; ++g) {
      int64_t rest = g, xi = 0, bi = 0, xs = 1, bs = 1;
      for (size_t i = nb; i-- > 0;) {
        const int64_t idx = rest % od[i];
        rest /= od[i];
        if (xd[i] != 1) xi += idx * xs;
        if (rd[i] != 1) bi += idx * bs;
        xs *= xd[i];
        bs *= rd[i];
      }
      job->x_of[g] = xi;
      job->basis_of[g] = bi;
    }
  }
  const int64_t groups = static_cast<int64_t>(job->basis_of.size());
  const int64_t bytes = slabs * m * n * 4;
  const int64_t vec_bytes = Lanes(isa) * 4;
  // Streaming stores skip the read-for-ownership of output lines; only worth it when the
  // output is far larger than the caches, and only legal on aligned rows.
  job->nt = bytes >= (int64_t{32} << 20) &&
            reinterpret_cast<uintptr_t>(job->out) % vec_bytes == 0 && (n * 4) % vec_bytes == 0;
  if (job->out != job->x) job->advice.Init(job->out, bytes);  // in place: pages are touched
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const double flops = 4.0 * slabs * m * n * rp;
  const int64_t workers = flops < 4e6 ? 1 : threads;  // below ~20 us, scheduling costs more
  // chunks of whole MR-row tiles of both FMA bodies (24 rows) or, for the AMX kernel, of
  // its 32-row blocks
  job->chunk_rows = std::min(ChunkRows(slabs * m, workers, amx ? amx::kMB : 24), job->m);
  job->chunks_per_slab = (job->m + job->chunk_rows - 1) / job->chunk_rows;
  job->total = job->chunks_per_slab * groups;

  if (job->basis || job->amx_basis)
    job->shared_basis.Init(job->r, job->rt, bases * (job->r_size + job->rt_size),
                           std::min(workers, job->total));
  Run(pool, job, workers);
  return ffi::Error::Success();
}

// The patch-layout projection: x (B, H, W, C), R (ph pw C, rp), Rt (rp, ph pw C); out like
// x, bad (B P) with P = (H / ph) (W / pw) patches per image.  Same arithmetic as
// ProjectImpl on the patchified rows; no transposed copy of x or of the output.
struct PatchJob : Chunks {
  PatchRowsFn fn;
  const float* x;
  std::unique_ptr<PackedBasis> basis;
  float* out;
  uint8_t* bad;
  PatchGeom geom;
  int64_t rows, n, rp, chunk_rows;
  bool null_part;

  void Work(bool caller) {
    std::vector<float> buf;
    Finish(Claim(caller, basis->r, basis->rt, [&](int64_t c, const float* wr,
                                                  const float* wrt) {
      if (buf.empty()) buf.resize(2 * 16 * n + 32);  // two tiles of <= 16 rows, + alignment
      float* xt = Align64(buf.data());
      const int64_t r0 = c * chunk_rows, r1 = std::min(rows, r0 + chunk_rows);
      // the images whose patches all lie in [r0, r1): no other worker writes them
      const int64_t i0 = (r0 + geom.per_image - 1) / geom.per_image, i1 = r1 / geom.per_image;
      if (i1 > i0) advice.Before(out + i0 * geom.image, out + i1 * geom.image);
      fn(x, wr, wrt, out, bad, geom, r0, r1, rp, null_part, xt, xt + 16 * n);
    }));
  }
};

ffi::Error ProjectPatchesImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                              ffi::Buffer<ffi::F32> r, ffi::Buffer<ffi::F32> rt,
                              ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::U8> bad,
                              bool null_part, int64_t ph, int64_t pw) {
  const int isa = Isa();
  if (isa == 0) return ffi::Error::Internal("nsjax_project_patches_f32: no AVX2/AVX-512");
  auto xd = x.dimensions(), rd = r.dimensions(), td = rt.dimensions(), od = out->dimensions();
  if (xd.size() != 4 || od.size() != 4 || rd.size() != 2 || td.size() != 2)
    return ffi::Error::InvalidArgument("nsjax_project_patches_f32: expected x (B, H, W, C), "
                                       "R (d, rp), Rt (rp, d)");
  const int64_t b = xd[0], h = xd[1], w = xd[2], ch = xd[3], n = ph * pw * ch, rp = rd[1];
  for (int i = 0; i < 4; ++i)
    if (od[i] != xd[i]) return ffi::Error::InvalidArgument("nsjax_project_patches_f32: out");
  if (ph <= 0 || pw <= 0 || h % ph || w % pw || rd[0] != n || td[0] != rp || td[1] != n ||
      rp % Lanes(isa) != 0 || rp > kMaxCols || rp <= 0)
    return ffi::Error::InvalidArgument("nsjax_project_patches_f32: expected H, W multiples "
                                       "of the patch, R (ph pw C, rp), 0 < rp <= 256");
  const int64_t per_image = (h / ph) * (w / pw), rows = b * per_image;
  if (rows == 0) return ffi::Error::Success();
  if (n == 0) {
    std::fill(bad->typed_data(), bad->typed_data() + rows, uint8_t{0});
    return ffi::Error::Success();
  }
  auto job = std::make_shared<PatchJob>();
  job->fn = PatchFn(isa);
  job->x = x.typed_data();
  job->basis = std::make_unique<PackedBasis>(r.typed_data(), rt.typed_data(), 1, n, rp,
                                             Lanes(isa), PanelVectors(isa));
  job->out = out->typed_data();
  job->bad = bad->typed_data();
  job->geom = PatchGeom{per_image, w / pw, ph, pw * ch, w * ch, h * w * ch};
  job->rows = rows;
  job->n = n;
  job->rp = rp;
  job->null_part = null_part;
  const int64_t bytes = rows * n * 4;
  if (job->out != job->x) job->advice.Init(job->out, bytes);
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t workers = 4.0 * rows * n * rp < 4e6 ? 1 : threads;
  job->chunk_rows = std::min(ChunkRows(rows, workers, 48), rows);
  job->total = (rows + job->chunk_rows - 1) / job->chunk_rows;
  job->shared_basis.Init(job->basis->r, job->basis->rt, n * rp + job->basis->rt_size,
                         std::min(workers, job->total));
  Run(pool, job, workers);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(NsjaxProjectPatchesF32, ProjectPatchesImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x (B, H, W, C)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // R (ph pw C, rp)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // Rt (rp, ph pw C)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out (B, H, W, C)
                                  .Ret<ffi::Buffer<ffi::U8>>()   // bad (B P)
                                  .Attr<bool>("null_part")
                                  .Attr<int64_t>("ph")
                                  .Attr<int64_t>("pw"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(NsjaxProjectF32, ProjectImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x (..., M, n)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // R (..., n, rp)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // Rt (..., rp, n)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out (..., M, n)
                                  .Ret<ffi::Buffer<ffi::U8>>()   // bad (..., M)
                                  .Attr<bool>("null_part"));

// 3: AVX-512F + AMX-BF16 (the AMX kernel for wide bases), 2: AVX-512F, 1: AVX2 + FMA, 0: no
// kernel (nsjax falls back to XLA's matmuls).
extern "C" int nsjax_project_isa() { return Isa(); }

// Use at most instruction set ``cap`` from now on (NSJAX_CPU_KERNEL=avx2 or avx512); returns the new
// nsjax_project_isa().
extern "C" int nsjax_project_cap_isa(int cap) {
  g_isa_cap.store(std::max(0, std::min(cap, 3)));
  return Isa();
}

// Whether wide bases take the AMX kernel (where nsjax_project_isa() is 3): 1 yes, 0 no (the
// default).  Returns the previous setting.
extern "C" int nsjax_project_amx_mode(int on) { return g_amx.exchange(on != 0) ? 1 : 0; }

// The AMX probe (probing now if nothing has yet): the tiles' register-only peak over the
// AVX-512 FMA peak, in float32 MACs; 0 where the CPU or Linux gives no AMX.  Sets *uses to
// whether wide bases take the AMX kernel now (the mode and the ISA cap), and *min_ratio to
// kAmxMinPeakRatio, the ratio from which the tiles pay.
extern "C" double nsjax_project_amx_probe(int* uses, double* min_ratio) {
  *min_ratio = kAmxMinPeakRatio;
  *uses = 0;
  if (DetectedIsa() < 3) return 0;
  *uses = Isa() == 3 && UseAmx() ? 1 : 0;
  return ProbeAmx();
}

// Whether the kernel advises huge pages on its large outputs (1, the default) or not (0),
// for measuring the difference; returns the previous setting.
extern "C" int nsjax_project_set_hugepages(int on) { return g_advise.exchange(on != 0) ? 1 : 0; }

// The time a 2 MiB region may take to fault in before huge pages count as the slower choice
// (default 1 ms; see HugePageAdvisor); returns the previous value.  For tests and
// benchmarks: 0 ends the advice at the first probe, a huge value never.
extern "C" int64_t nsjax_project_set_fault_allowance_ns(int64_t ns) {
  return g_fault_allowance_ns.exchange(ns);
}

// The last call that gave advice: stats[0] whole 2 MiB regions in its output, stats[1] of
// them probed (their first touch timed), stats[2] 1 if the probes went over budget (the
// regions after that probe, if any, were marked MADV_NOHUGEPAGE).
extern "C" void nsjax_project_advice_stats(int64_t* stats) {
  for (int i = 0; i < 3; ++i) stats[i] = g_advice_stats[i].load();
}
