#ifndef CLADE_LAZY_FUSE_H
#define CLADE_LAZY_FUSE_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// What the FUSE server asks of its owner. Every callback may run on any of the loop's threads.
typedef struct clade_lazy_callbacks {
    void *context;
    /// Makes bytes [offset, offset + size) of the file readable from the data descriptor:
    /// 0 once they are, or a negative errno (the guest's fault then fails with it). `requester`
    /// is the thread that asked (a VMM's vCPU thread when a guest faulted).
    int (*ensure)(void *context, uint64_t offset, uint64_t size, int32_t requester);
    /// The open count changed (an open or a final release of the file).
    void (*opens_changed)(void *context, int open_count);
} clade_lazy_callbacks;

typedef struct clade_lazy_server clade_lazy_server;

/// Mounts a read-only filesystem at `mountpoint` holding one regular file, `name`, of `size`
/// bytes, whose bytes are read from `data_fd` once `ensure` has said they are there. `allow_other`
/// lets other users (a confined VMM's uid) open it. NULL on failure, with the reason in `error`.
clade_lazy_server *clade_lazy_mount(
    const char *mountpoint, const char *name, uint64_t size, int data_fd, int allow_other,
    const clade_lazy_callbacks *callbacks, char *error, size_t error_size);

/// Serves requests until the filesystem is unmounted or `clade_lazy_stop` is called; returns
/// the loop's result (0 on a clean end).
int clade_lazy_run(clade_lazy_server *server, int threads);

/// Ends `clade_lazy_run` from another thread and unmounts (a mapping still in use then faults).
void clade_lazy_stop(clade_lazy_server *server);

/// Places `size` bytes at `offset` of the file into the kernel's page cache (a prefetch): later
/// faults there are served without a request. 0, or a negative errno.
int clade_lazy_store(clade_lazy_server *server, uint64_t offset, const void *bytes, size_t size);


/// Frees the server once `clade_lazy_run` has returned.
void clade_lazy_destroy(clade_lazy_server *server);

#endif
