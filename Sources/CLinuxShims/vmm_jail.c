#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "CLinuxShims.h"
#include "child_signals.h"

// Everything the children below run comes after a fork in a multi-threaded process: only
// async-signal-safe calls (plain system calls, memcpy, strlen), no allocation.

/// In the child of `clade_spawn_vmm`: the pipe on which a failed step reports its errno.
static int report_fd = -1;

/// `a` followed by `b` into `out` (PATH_MAX bytes); 0, or -1 when it does not fit.
static int join_path(char *out, const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 1 > PATH_MAX) return -1;
    memcpy(out, a, la);
    memcpy(out + la, b, lb + 1);
    return 0;
}

/// Decimal digits of `value` into `out` (at least 12 bytes), NUL-terminated; returns the length.
static size_t format_unsigned(char *out, unsigned value) {
    char digits[12];
    size_t length = 0;
    do { digits[length++] = (char)('0' + value % 10); value /= 10; } while (value > 0);
    for (size_t index = 0; index < length; index++) out[index] = digits[length - 1 - index];
    out[length] = '\0';
    return length;
}

/// Writes "clade jail: cannot STEP PATH: errno N\n" to the log, reports errno, and exits 126.
static void fail(const char *step, const char *path) {
    int saved = errno;
    if (report_fd >= 0) (void)!write(report_fd, &saved, sizeof saved);
    char digits[12];
    format_unsigned(digits, (unsigned)saved);
    const char *parts[] = {"clade jail: cannot ", step, " ", path, ": errno ", digits, "\n"};
    for (unsigned i = 0; i < sizeof parts / sizeof parts[0]; i++) (void)!write(2, parts[i], strlen(parts[i]));
    _exit(126);
}

/// mkdir -p below `root` of `path` (absolute), or of its parent when `parent_only` is set.
static void make_directories(const char *root, const char *path, int parent_only) {
    char target[PATH_MAX];
    if (join_path(target, root, path) != 0) { errno = ENAMETOOLONG; fail("name", path); }
    if (parent_only) {
        char *slash = strrchr(target, '/');
        if (slash == NULL || slash <= target + strlen(root)) return;
        *slash = '\0';
    }
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

/// Remounts the bind at `target` read-only and nosuid, keeping the flags its source's mount has
/// (in a user namespace a bind may not drop nodev or noexec it inherited).
static void make_read_only(const char *source, const char *target) {
    struct statvfs info;
    if (statvfs(source, &info) != 0) fail("inspect", source);
    unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID;
    if (info.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (info.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    if (info.f_flag & ST_NOATIME) flags |= MS_NOATIME;
    if (info.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (info.f_flag & ST_RELATIME) flags |= MS_RELATIME;
    if (mount(NULL, target, NULL, flags, NULL) != 0) fail("make read-only", target);
}

/// Binds the file `source` at the same path below `root`, read-only when `read_only` is set.
static void bind_file(const char *root, const char *source, int read_only) {
    char target[PATH_MAX];
    if (join_path(target, root, source) != 0) { errno = ENAMETOOLONG; fail("name", source); }
    make_directories(root, source, 1);
    int placeholder = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (placeholder < 0) fail("create", target);
    close(placeholder);
    if (mount(source, target, NULL, MS_BIND, NULL) != 0) fail("bind", source);
    if (read_only) make_read_only(source, target);
}

/// Writes `text` to the proc file `path`.
static void write_proc(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) fail("open", path);
    ssize_t length = (ssize_t)strlen(text);
    if (write(fd, text, (size_t)length) != length) fail("write", path);
    close(fd);
}

/// Enters a new user namespace (this user as root inside, nobody else mapped) and a new network
/// namespace whose loopback is up and empty.
static void enter_user_namespace(void) {
    char uid_map[40] = "0 ", gid_map[40] = "0 ";
    size_t length = format_unsigned(uid_map + 2, (unsigned)getuid()) + 2;
    memcpy(uid_map + length, " 1", 3);
    length = format_unsigned(gid_map + 2, (unsigned)getgid()) + 2;
    memcpy(gid_map + length, " 1", 3);
    if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) fail("unshare", "the user and network namespaces");
    write_proc("/proc/self/setgroups", "deny");
    write_proc("/proc/self/uid_map", uid_map);
    write_proc("/proc/self/gid_map", gid_map);
    int probe = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (probe < 0) fail("open a socket in", "the network namespace");
    struct ifreq request;
    memset(&request, 0, sizeof request);
    memcpy(request.ifr_name, "lo", 3);
    if (ioctl(probe, SIOCGIFFLAGS, &request) != 0) fail("read the flags of", "lo");
    request.ifr_flags |= IFF_UP;
    if (ioctl(probe, SIOCSIFFLAGS, &request) != 0) fail("bring up", "lo");
    close(probe);
}

/// Builds the jail's mount view (see the header) in this process, which then runs the VMM.
static void build_mount_view(const struct clade_vmm_jail *jail) {
    const char *root = jail->root;
    if (unshare(CLONE_NEWNS) != 0) fail("unshare", "the mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) fail("make private", "/");
    if (mount("clade-jail", root, "tmpfs", MS_NOSUID, "mode=0755,size=1m") != 0) fail("mount a tmpfs on", root);
    char source[PATH_MAX], target[PATH_MAX], link[PATH_MAX];
    for (const char *const *name = jail->system_dirs; *name; name++) {
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
            make_read_only(source, target);
        }
    }
    if (join_path(target, root, "/dev") != 0 || mkdir(target, 0755) != 0) fail("mkdir", "dev");
    for (const char *const *name = jail->devices; *name; name++) {
        if (join_path(source, "/dev/", *name) != 0) { errno = ENAMETOOLONG; fail("name", *name); }
        if (access(source, F_OK) != 0) continue;
        bind_file(root, source, 0);
    }
    if (jail->read_only_files != NULL) {
        for (const char *const *file = jail->read_only_files; *file; file++) bind_file(root, *file, 1);
    }
    make_directories(root, jail->machine, 0);
    if (join_path(target, root, jail->machine) != 0) { errno = ENAMETOOLONG; fail("name", jail->machine); }
    if (mount(jail->machine, target, NULL, MS_BIND, NULL) != 0) fail("bind", jail->machine);
    if (jail->pivot) {
        // The old root goes entirely: a VMM with capabilities in its own namespace could
        // otherwise climb out of a chroot back to it.
        if (chdir(root) != 0) fail("enter", root);
        if (syscall(SYS_pivot_root, ".", ".") != 0) fail("pivot into", root);
        if (umount2(".", MNT_DETACH) != 0) fail("detach", "the old root");
        if (chdir("/") != 0) fail("enter", "/");
    }
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

pid_t clade_spawn_vmm(const struct clade_vmm_jail *jail, const char *path, char *const argv[], char *const envp[], int log_fd) {
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
        int keep = jail != NULL ? jail->keep_fd : -1;
        if (keep >= 0 && (dup2(keep, 4) < 0 || fcntl(4, F_SETFD, 0) != 0)) fail("set up", "the kept descriptor");
        close_range(keep >= 0 ? 5 : 4, ~0U, 0);
        if (jail != NULL && jail->user_namespace) enter_user_namespace();
        if (jail != NULL && jail->root != NULL) build_mount_view(jail);
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

/// Waits for the probe child `pid`; 1 when it exited 0.
static int exited_cleanly(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return 0;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int clade_probe_mount_view(void) {
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) != 0) _exit(1);
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) _exit(1);
        _exit(mount("clade-probe", "/", "tmpfs", MS_NOSUID, "size=4k") == 0 ? 0 : 1);
    }
    return exited_cleanly(pid);
}

int clade_probe_user_namespace(void) {
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        int null_fd = open("/dev/null", O_WRONLY);
        if (null_fd >= 0) dup2(null_fd, 2);
        enter_user_namespace();
        if (unshare(CLONE_NEWNS) != 0) _exit(1);
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) _exit(1);
        _exit(mount("clade-probe", "/", "tmpfs", MS_NOSUID, "size=4k") == 0 ? 0 : 1);
    }
    return exited_cleanly(pid);
}
