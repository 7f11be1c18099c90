#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "CLinuxShims.h"
#include "child_signals.h"

// Everything the children below run comes after a fork in a multi-threaded process: only
// async-signal-safe calls (plain system calls, memcpy, strlen), no allocation.

/// `a` followed by `b` into `out` (PATH_MAX bytes); 0, or -1 when it does not fit.
static int join_path(char *out, const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 1 > PATH_MAX) return -1;
    memcpy(out, a, la);
    memcpy(out + la, b, lb + 1);
    return 0;
}

/// In the child of `clade_spawn_vmm`: the pipe on which a failed step reports its errno.
static int report_fd = -1;

/// Writes "clade mount view: STEP PATH: errno N\n" to the log, reports errno, and exits 126.
static void fail(const char *step, const char *path) {
    int saved = errno;
    if (report_fd >= 0) (void)!write(report_fd, &saved, sizeof saved);
    char digits[16];
    int length = 0;
    int value = saved;
    do { digits[length++] = (char)('0' + value % 10); value /= 10; } while (value > 0 && length < 15);
    const char *parts[] = {"clade mount view: cannot ", step, " ", path, ": errno "};
    for (unsigned i = 0; i < sizeof parts / sizeof parts[0]; i++) (void)!write(2, parts[i], strlen(parts[i]));
    while (length > 0) (void)!write(2, &digits[--length], 1);
    (void)!write(2, "\n", 1);
    _exit(126);
}

/// mkdir -p of `path` (absolute) below `root`.
static void make_parents(const char *root, const char *path) {
    char target[PATH_MAX];
    if (join_path(target, root, path) != 0) { errno = ENAMETOOLONG; fail("name", path); }
    size_t skip = strlen(root) + 1;
    for (char *cursor = target + skip; ; cursor++) {
        if (*cursor == '/' || *cursor == '\0') {
            char saved = *cursor;
            *cursor = '\0';
            if (mkdir(target, 0755) != 0 && errno != EEXIST) fail("mkdir", target);
            *cursor = saved;
            if (saved == '\0') break;
        }
    }
}

/// Builds the mount view (see the header) in this process, which then runs the VMM.
static void build_mount_view(const char *root, const char *machine, const char *const *system_dirs, const char *const *devices) {
    if (unshare(CLONE_NEWNS) != 0) fail("unshare", "the mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) fail("make private", "/");
    if (mount("clade-jail", root, "tmpfs", MS_NOSUID, "mode=0755,size=1m") != 0) fail("mount a tmpfs on", root);
    char source[PATH_MAX], target[PATH_MAX], link[PATH_MAX];
    for (const char *const *name = system_dirs; *name; name++) {
        if (join_path(source, "/", *name) != 0 || join_path(target, root, source) != 0) { errno = ENAMETOOLONG; fail("name", *name); }
        struct stat status;
        if (lstat(source, &status) != 0) continue;
        if (S_ISLNK(status.st_mode)) {
            ssize_t count = readlink(source, link, sizeof link - 1);
            if (count < 0) fail("readlink", source);
            link[count] = '\0';
            if (symlink(link, target) != 0) fail("link", target);
        } else if (S_ISDIR(status.st_mode)) {
            if (mkdir(target, 0755) != 0) fail("mkdir", target);
            if (mount(source, target, NULL, MS_BIND, NULL) != 0) fail("bind", source);
            if (mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, NULL) != 0) fail("make read-only", target);
        }
    }
    if (join_path(target, root, "/dev") != 0 || mkdir(target, 0755) != 0) fail("mkdir", "dev");
    for (const char *const *name = devices; *name; name++) {
        if (join_path(source, "/dev/", *name) != 0 || join_path(target, root, source) != 0) { errno = ENAMETOOLONG; fail("name", *name); }
        if (access(source, F_OK) != 0) continue;
        int placeholder = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (placeholder < 0) fail("create", target);
        close(placeholder);
        if (mount(source, target, NULL, MS_BIND, NULL) != 0) fail("bind", source);
    }
    make_parents(root, machine);
    if (join_path(target, root, machine) != 0) { errno = ENAMETOOLONG; fail("name", machine); }
    if (mount(machine, target, NULL, MS_BIND, NULL) != 0) fail("bind", machine);
}

/// Reads exactly `length` bytes unless the pipe ends first; returns how many came.
static ssize_t read_fully(int fd, void *buffer, size_t length) {
    size_t done = 0;
    while (done < length) {
        ssize_t count = read(fd, (char *)buffer + done, length - done);
        if (count < 0 && errno == EINTR) continue;
        if (count <= 0) break;
        done += (size_t)count;
    }
    return (ssize_t)done;
}

pid_t clade_spawn_vmm(const char *root, const char *machine, const char *const *system_dirs, const char *const *devices,
                      const char *path, char *const argv[], char *const envp[], int log_fd) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -1;
    pid_t middle = fork();
    if (middle < 0) {
        int saved = errno;
        close(report[0]);
        close(report[1]);
        errno = saved;
        return -1;
    }
    if (middle == 0) {
        clade_reset_child_signals();
        close(report[0]);
        if (setsid() < 0) _exit(126);
        pid_t vmm = fork();
        if (vmm != 0) {
            if (vmm < 0) {
                int saved = errno;
                pid_t none = -1;
                (void)!write(report[1], &none, sizeof none);
                (void)!write(report[1], &saved, sizeof saved);
            }
            _exit(0);
        }
        pid_t self = getpid();
        (void)!write(report[1], &self, sizeof self);
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) fail("set up", "standard descriptors");
        // The report pipe moves to descriptor 3, still close-on-exec: a successful exec closes it.
        if (report[1] != 3 && (dup2(report[1], 3) < 0 || fcntl(3, F_SETFD, FD_CLOEXEC) != 0)) fail("set up", "the report pipe");
        report_fd = 3;
        close_range(4, ~0U, 0);
        if (root != NULL) build_mount_view(root, machine, system_dirs, devices);
        execve(path, argv, envp);
        fail("run", path);
    }
    close(report[1]);
    int status = 0;
    while (waitpid(middle, &status, 0) < 0 && errno == EINTR) {}
    pid_t vmm = -1;
    int failure = 0;
    ssize_t got = read_fully(report[0], &vmm, sizeof vmm);
    ssize_t failed = got == sizeof vmm ? read_fully(report[0], &failure, sizeof failure) : 0;
    close(report[0]);
    if (got != sizeof vmm) {
        errno = ECHILD;
        return -1;
    }
    if (failed == sizeof failure) {
        errno = failure;
        return -1;
    }
    return vmm;
}

int clade_probe_mount_view(void) {
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) != 0) _exit(1);
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) _exit(1);
        _exit(mount("clade-probe", "/", "tmpfs", MS_NOSUID, "size=4k") == 0 ? 0 : 1);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return 0;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
