// normlab_gemm: C = op(A) @ op(B) in float32 through a BLAS sgemm chosen at run time (MKL or OpenBLAS), as an
// XLA FFI custom call; normlab_gemm_step: W + alpha * op(A) @ op(B) in W's own buffer (an SGD step taken by the
// weight-gradient product itself, beta = 1: the gradient is never written out and read back). The BLAS runs single-threaded; a large product is split by columns of C into `parts`
// independent sgemm calls, one run here and the others on XLA's own intra-op thread pool, so no second thread
// pool (OpenMP) competes with XLA's for the same cores. Leading dimensions are a batch (vmapped seeds).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// cblas_sgemm with 32-bit integers (MKL's LP64 interface, scipy-openblas32).
typedef void (*Sgemm)(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                      const float* b, int ldb, float beta, float* c, int ldc);
static Sgemm sgemms[2] = {nullptr, nullptr};  // by the `blas` attribute: 0 MKL, 1 OpenBLAS
enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };
static const int64_t kMinColumnsPerPart = 64;
static const int64_t kMinFlopPerPart = 1 << 20;

extern "C" int normlab_gemm_use(int blas, void* function) {
  if (blas < 0 || blas > 1) return 1;
  sgemms[blas] = reinterpret_cast<Sgemm>(function);
  return 0;
}

namespace {

struct Product {
  Sgemm sgemm;
  const float* a;
  const float* b;
  float* c;
  int64_t m, n, k, lda, ldb;
  bool trans_a, trans_b;
  float alpha, beta;

  // Columns [begin, end) of C.
  void Columns(int64_t begin, int64_t end) const {
    const float* b_part = trans_b ? b + begin * ldb : b + begin;
    sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, m, end - begin, k, alpha, a, lda,
          b_part, ldb, beta, c + begin, n);
  }
};

// One product split into `parts` column ranges of `width`, shared with the tasks that help compute it (which may
// start after it is done: they hold it alive).
struct Work {
  Work(const Product& product, int64_t parts, int64_t width) : product(product), parts(parts), width(width) {}
  void Run() {
    for (int64_t part; (part = next.fetch_add(1, std::memory_order_relaxed)) < parts;) {
      const int64_t begin = part * width, end = begin + width < product.n ? begin + width : product.n;
      product.Columns(begin, end);
      done.fetch_add(1, std::memory_order_release);
    }
  }
  const Product product;
  const int64_t parts, width;
  std::atomic<int64_t> next{0}, done{0};
};

// C = alpha[i] * op(A) @ op(B) + beta * C for each batch item i (alpha: one per item, or null for 1).
ffi::Error Run(ffi::ThreadPool& pool, ffi::Buffer<ffi::F32>& a, ffi::Buffer<ffi::F32>& b, float* c_data,
               ffi::Span<const int64_t> cd, const float* alphas, float beta, bool trans_a, bool trans_b,
               int64_t blas, int64_t parts) {
  if (blas < 0 || blas > 1 || sgemms[blas] == nullptr)
    return ffi::Error::Internal("normlab_gemm: the program's BLAS is not loaded in this process");
  const Sgemm sgemm = sgemms[blas];
  auto ad = a.dimensions(), bd = b.dimensions();
  const size_t rank = ad.size();
  if (rank < 2 || bd.size() != rank || cd.size() != rank) return ffi::Error::InvalidArgument("normlab_gemm: ranks");
  int64_t batch = 1;
  for (size_t i = 0; i + 2 < rank; ++i) {
    if (bd[i] != ad[i] || cd[i] != ad[i]) return ffi::Error::InvalidArgument("normlab_gemm: batch dimensions");
    batch *= ad[i];
  }
  const int64_t a0 = ad[rank - 2], a1 = ad[rank - 1], b0 = bd[rank - 2], b1 = bd[rank - 1];
  const int64_t m = trans_a ? a1 : a0, k = trans_a ? a0 : a1, n = trans_b ? b0 : b1;
  if ((trans_b ? b1 : b0) != k || cd[rank - 2] != m || cd[rank - 1] != n)
    return ffi::Error::InvalidArgument("normlab_gemm: shapes do not multiply");
  if (m == 0 || n == 0) return ffi::Error::Success();

  int64_t split = parts;
  if (split > n / kMinColumnsPerPart) split = n / kMinColumnsPerPart;
  if (split > 2 * m * n * k / kMinFlopPerPart) split = 2 * m * n * k / kMinFlopPerPart;
  if (split < 1) split = 1;
  const int64_t width = (n + split - 1) / split;

  for (int64_t i = 0; i < batch; ++i) {
    const Product p{sgemm, a.typed_data() + i * a0 * a1, b.typed_data() + i * b0 * b1, c_data + i * m * n,
                    m, n, k, a1, b1, trans_a, trans_b, alphas ? alphas[i] : 1.0f, beta};
    if (k == 0) {
      if (beta == 0.0f)
        for (int64_t j = 0; j < m * n; ++j) p.c[j] = 0.0f;
      continue;
    }
    if (split == 1) {
      p.Columns(0, n);
      continue;
    }
    // Parts are taken from a shared counter by this thread and by the tasks it schedules; this thread takes
    // parts until none is left, so it never waits on a task still queued behind busy threads (XLA may run other
    // products at the same time), only on parts other threads are already computing.
    auto work = std::make_shared<Work>(p, split, width);
    for (int64_t part = 1; part < split; ++part) pool.Schedule([work] { work->Run(); });
    work->Run();
    while (work->done.load(std::memory_order_acquire) < split) std::this_thread::yield();
  }
  return ffi::Error::Success();
}

ffi::Error Gemm(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                ffi::ResultBuffer<ffi::F32> c, bool trans_a, bool trans_b, int64_t blas, int64_t parts) {
  return Run(pool, a, b, c->typed_data(), c->dimensions(), nullptr, 0.0f, trans_a, trans_b, blas, parts);
}

// `w` and the result share a buffer (the call aliases them); XLA copies `w` first where it is still read later.
ffi::Error GemmStep(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                    ffi::Buffer<ffi::F32> alpha, ffi::ResultBuffer<ffi::F32> c, bool trans_a, bool trans_b,
                    int64_t blas, int64_t parts) {
  auto cd = c->dimensions();
  if (w.dimensions().size() != cd.size() || w.element_count() != c->element_count())
    return ffi::Error::InvalidArgument("normlab_gemm_step: the weights' shape is not the product's");
  if (alpha.element_count() * cd[cd.size() - 1] * cd[cd.size() - 2] != c->element_count())
    return ffi::Error::InvalidArgument("normlab_gemm_step: one step size per batch item");
  if (w.typed_data() != c->typed_data())
    std::copy(w.typed_data(), w.typed_data() + w.element_count(), c->typed_data());
  return Run(pool, a, b, c->typed_data(), cd, alpha.typed_data(), 1.0f, trans_a, trans_b, blas, parts);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(NormlabGemm, Gemm,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("trans_a")
                                  .Attr<bool>("trans_b")
                                  .Attr<int64_t>("blas")
                                  .Attr<int64_t>("parts"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(NormlabGemmStep, GemmStep,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("trans_a")
                                  .Attr<bool>("trans_b")
                                  .Attr<int64_t>("blas")
                                  .Attr<int64_t>("parts"));
