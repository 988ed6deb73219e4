// libjpeg-turbo's TurboJPEG API (Debian: libturbojpeg0-dev, pkg-config libturbojpeg). Unlike the
// classic jpeg_* API, whose error handler ends in exit() or a longjmp across the caller's frames,
// every TurboJPEG call returns -1 and keeps its message for tjGetErrorStr2(), so it is safe to call
// from Swift (its setjmp/longjmp stay inside libturbojpeg).
#include <turbojpeg.h>
