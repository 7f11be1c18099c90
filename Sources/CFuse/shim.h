// libfuse3's low-level API, at the version clade's FUSE server is written against (3.5 and up).
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
