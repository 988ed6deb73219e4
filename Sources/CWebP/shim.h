// libwebp's decoding API: WebPGetInfo/WebPGetFeatures for the header, WebPDecode into a buffer the
// caller owns. Errors come back as VP8StatusCode values (no longjmp).
#include <webp/decode.h>
