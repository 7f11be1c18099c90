// C shims live in include/CLinuxShims.h.
