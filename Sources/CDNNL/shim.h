// oneDNN (Debian libdnnl-dev, built with its OpenMP runtime): dnnl_sgemm and the convolution
// primitives. The OpenMP calls set how many threads oneDNN's next call from the calling thread
// uses (a per-thread setting in libgomp), so calls from inside our own thread pool run on one.
#include <dnnl.h>

int omp_get_max_threads(void);
void omp_set_num_threads(int n);
int omp_get_thread_num(void);

// libgomp's entry for `#pragma omp parallel` (the ABI GCC emits since 4.9): runs fn(data) on a team
// of num_threads threads, the caller being thread 0, and returns when all are done. ThreadPool runs
// its parallel loops on this team, so oneDNN's GEMMs and our loops share one set of threads.
void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
