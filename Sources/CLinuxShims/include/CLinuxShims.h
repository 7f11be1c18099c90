#ifndef CLADE_LINUX_SHIMS_H
#define CLADE_LINUX_SHIMS_H
// Linux/glibc calls that Swift's Glibc module hides behind _GNU_SOURCE, wrapped so that
// Swift sees them. Kept tiny on purpose: anything with logic lives in Swift.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/fs.h>

static inline int clade_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
static inline int clade_accept_cloexec(int fd) { return accept4(fd, 0, 0, SOCK_CLOEXEC); }
static inline int clade_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}
static inline short clade_spawn_setsid_flag(void) { return POSIX_SPAWN_SETSID; }
/// FICLONE: make `dest` share all of `src`'s extents (reflink). 0 on success, -1 + errno.
static inline int clade_ficlone(int dest, int src) { return ioctl(dest, FICLONE, src); }
#endif
