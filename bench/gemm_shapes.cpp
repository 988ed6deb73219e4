// GEMM library choice: OpenBLAS's cblas_sgemm against oneDNN's dnnl_sgemm on the shapes a UNet
// training step makes at SD1.5 size (attention products single-threaded, as they run inside pool
// tasks; linear layers on all threads). Best of 7 after a warm-up, GFLOP/s.
// Build and run (Debian: libopenblas-dev, libdnnl-dev):
//   g++ -O2 bench/gemm_shapes.cpp -o /tmp/gemm_shapes -ldnnl -lopenblas -fopenmp && /tmp/gemm_shapes
#include <cblas.h>
#include <dnnl.h>
#include <omp.h>
#include <chrono>
#include <cstdio>
#include <vector>

static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

template <class F> static double best(F f, int repeats = 7) {
    f();
    double b = 1e9;
    for (int i = 0; i < repeats; i++) { double t = now(); f(); t = now() - t; if (t < b) b = t; }
    return b;
}

// Row-major C[M,N] = op(A) op(B); ta/tb are 'N' or 'T' as in dnnl_sgemm.
static void run(const char *name, char ta, char tb, int m, int n, int k, int threads) {
    std::vector<float> a((size_t)m * k, 0.1f), b((size_t)k * n, 0.2f), c((size_t)m * n);
    int lda = ta == 'N' ? k : m, ldb = tb == 'N' ? n : k;
    openblas_set_num_threads(threads);
    omp_set_num_threads(threads);
    double flops = 2.0 * m * n * k;
    double open = best([&] {
        cblas_sgemm(CblasRowMajor, ta == 'N' ? CblasNoTrans : CblasTrans, tb == 'N' ? CblasNoTrans : CblasTrans,
                    m, n, k, 1, a.data(), lda, b.data(), ldb, 0, c.data(), n);
    });
    double dnnl = best([&] { dnnl_sgemm(ta, tb, m, n, k, 1, a.data(), lda, b.data(), ldb, 0, c.data(), n); });
    printf("%-24s %c%c %5dx%5dx%5d threads %d  OpenBLAS %6.1f  oneDNN %6.1f GFLOP/s\n", name, ta, tb, m, n, k, threads,
           flops / open / 1e9, flops / dnnl / 1e9);
}

int main() {
    run("attention S = Q K^T", 'N', 'T', 1024, 4096, 40, 1);
    run("attention O = P V", 'N', 'N', 1024, 40, 4096, 1);
    run("attention dQ = dS K", 'N', 'N', 1024, 40, 4096, 1);
    run("attention dK = dS^T Q", 'T', 'N', 4096, 40, 1024, 1);
    run("cross-attention Q K^T", 'N', 'T', 4096, 77, 40, 1);
    run("linear 4096x320<-320", 'N', 'T', 4096, 320, 320, 2);
    run("linear 4096x2560<-320", 'N', 'T', 4096, 2560, 320, 2);
    run("linear dx 4096x320<-1280", 'N', 'N', 4096, 320, 1280, 2);
    run("linear 1024x5120<-640", 'N', 'T', 1024, 5120, 640, 2);
    run("linear 256x10240<-1280", 'N', 'T', 256, 10240, 1280, 2);
    run("linear 64x10240<-1280", 'N', 'T', 64, 10240, 1280, 2);
    run("square 3072", 'N', 'N', 3072, 3072, 3072, 2);
}
