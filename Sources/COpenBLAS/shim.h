// OpenBLAS's CBLAS interface plus its thread controls (openblas_set_num_threads, openblas_get_config).
#include <cblas.h>
