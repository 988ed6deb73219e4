// libwebp's simple decoding API.
#include <webp/decode.h>
