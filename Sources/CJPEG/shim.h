// libjpeg(-turbo)'s API; jpeglib.h needs stdio.h (FILE) included first.
#include <stdio.h>
#include <jpeglib.h>
