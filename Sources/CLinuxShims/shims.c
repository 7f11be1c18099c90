#define _GNU_SOURCE
#include "CLinuxShims.h"
#include "child_signals.h"
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <errno.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/if_arp.h>

int clade_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
int clade_accept_cloexec(int fd) { return accept4(fd, 0, 0, SOCK_CLOEXEC); }
int clade_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}
short clade_spawn_setsid_flag(void) { return POSIX_SPAWN_SETSID; }
int clade_ficlone(int dest, int src) { return ioctl(dest, FICLONE, src); }
int clade_statfs_type(const char *path, unsigned long *type) {
    struct statfs info;
    if (statfs(path, &info) != 0) return -1;
    *type = (unsigned long)info.f_type;
    return 0;
}
int clade_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}
int clade_add_entropy(int fd, const unsigned char *bytes, int length) {
    struct rand_pool_info *info = malloc(sizeof(struct rand_pool_info) + (size_t)length);
    if (!info) return -1;
    info->entropy_count = length * 8;
    info->buf_size = length;
    memcpy(info->buf, bytes, (size_t)length);
    int result = ioctl(fd, RNDADDENTROPY, info);
    free(info);
    return result;
}
int clade_set_mac(const char *name, const unsigned char mac[6]) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    request.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(request.ifr_hwaddr.sa_data, mac, 6);
    int result = ioctl(fd, SIOCSIFHWADDR, &request);
    close(fd);
    return result;
}
int clade_reseed_crng(int fd) { return ioctl(fd, RNDRESEEDCRNG); }

#include <grp.h>
#include <signal.h>
#include <errno.h>
int clade_spawn_as(const char *file, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd,
                   const char *cwd, unsigned uid, unsigned gid, const unsigned *groups, int group_count, int *pid_out) {
    return clade_spawn_child(file, argv, envp, in_fd, out_fd, err_fd, -1, NULL, cwd, 1, uid, gid, groups, group_count, NULL, 0, pid_out);
}

static int spawn_cgroup_fd = -1;

void clade_set_spawn_cgroup(int procs_fd) { spawn_cgroup_fd = procs_fd; }

int clade_spawn_child(const char *file, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd,
                      int terminal_fd, const char *root, const char *cwd, int change_user, unsigned uid, unsigned gid,
                      const unsigned *groups, int group_count, const struct clade_resource_limit *limits, int limit_count,
                      int *pid_out) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return errno;
    pid_t pid = fork();
    if (pid < 0) {
        int saved = errno;
        close(report[0]);
        close(report[1]);
        return saved;
    }
    if (pid == 0) {
        // Only async-signal-safe calls from here: the parent has other threads.
        clade_reset_child_signals();
        setsid();
        // Before the program allocates anything, so its memory is charged to the user group.
        if (spawn_cgroup_fd >= 0) (void)!write(spawn_cgroup_fd, "0", 1);
        int saved = 0;
        // A new session has no controlling terminal; taking the PTY's makes ^C, job control and
        // SIGHUP on hang-up work as in a login shell.
        if (terminal_fd >= 0 && ioctl(terminal_fd, TIOCSCTTY, 0) != 0) goto fail;
        if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) goto fail;
        // Before the user changes: only root may chroot.
        if (root && (chroot(root) != 0 || chdir("/") != 0)) goto fail;
        for (int index = 0; index < limit_count; index++) {
            struct rlimit limit = {.rlim_cur = limits[index].soft, .rlim_max = limits[index].hard};
            if (setrlimit(limits[index].resource, &limit) != 0) goto fail;
        }
        if (change_user) {
            if (setgroups((size_t)group_count, (const gid_t *)groups) != 0) goto fail;
            if (setgid(gid) != 0) goto fail;
            if (setuid(uid) != 0) goto fail;
        }
        if (cwd && chdir(cwd) != 0) goto fail;
        execvpe(file, argv, envp);
    fail:
        saved = errno;
        (void)!write(report[1], &saved, sizeof saved);
        _exit(127);
    }
    close(report[1]);
    int child_errno = 0;
    ssize_t count;
    do { count = read(report[0], &child_errno, sizeof child_errno); } while (count < 0 && errno == EINTR);
    close(report[0]);
    *pid_out = pid;
    return count == (ssize_t)sizeof child_errno ? child_errno : 0;
}

int clade_open_pty(int *controller, int *terminal, unsigned short rows, unsigned short columns) {
    int main_fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (main_fd < 0) return -1;
    char name[128];
    if (grantpt(main_fd) != 0 || unlockpt(main_fd) != 0 || ptsname_r(main_fd, name, sizeof name) != 0) {
        int saved = errno;
        close(main_fd);
        errno = saved;
        return -1;
    }
    int terminal_fd = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (terminal_fd < 0) {
        int saved = errno;
        close(main_fd);
        errno = saved;
        return -1;
    }
    struct winsize size = {.ws_row = rows, .ws_col = columns};
    ioctl(main_fd, TIOCSWINSZ, &size);
    *controller = main_fd;
    *terminal = terminal_fd;
    return 0;
}

int clade_set_window_size(int fd, unsigned short rows, unsigned short columns) {
    struct winsize size = {.ws_row = rows, .ws_col = columns};
    return ioctl(fd, TIOCSWINSZ, &size);
}

int clade_get_window_size(int fd, unsigned short *rows, unsigned short *columns) {
    struct winsize size;
    if (ioctl(fd, TIOCGWINSZ, &size) != 0) return -1;
    *rows = size.ws_row;
    *columns = size.ws_col;
    return 0;
}

int clade_send_with_descriptor(int socket_fd, const void *bytes, size_t length, int descriptor) {
    struct iovec vector = {.iov_base = (void *)bytes, .iov_len = length};
    union {
        char buffer[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.buffer, .msg_controllen = sizeof control.buffer};
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &descriptor, sizeof(int));
    ssize_t sent;
    do { sent = sendmsg(socket_fd, &message, MSG_NOSIGNAL); } while (sent < 0 && errno == EINTR);
    return sent < 0 ? -1 : (int)sent;
}
