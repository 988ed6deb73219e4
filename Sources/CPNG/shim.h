// libpng's simplified API (png_image_*): errors come back as return codes and `message`, with no
// setjmp/longjmp, so it is safe to call from Swift. Macros Swift cannot import are wrapped.
#include <png.h>

static inline png_uint_32 cpng_image_version(void) { return PNG_IMAGE_VERSION; }
static inline png_uint_32 cpng_format_rgb(void) { return PNG_FORMAT_RGB; }
static inline size_t cpng_row_stride_rgb(png_uint_32 width) { return (size_t)width * 3; }
