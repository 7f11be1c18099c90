#define _GNU_SOURCE
#include "CLinuxShims.h"
#include "child_signals.h"
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

// The guest agent starts every command through here. A plain fork() copies the agent's page
// tables and then takes a copy-on-write fault for each page the agent's threads touch until
// the child execs; under TCG that cost ~20 ms per command, most of a `clade exec`. The child
// here shares the agent's memory (CLONE_VM) and the calling thread waits until it has exec'd
// or failed (CLONE_VFORK), as posix_spawn does, which cannot change user, chroot or take a
// terminal. Sharing memory constrains the child: it writes nothing of the parent's but the
// error slot, and changes credentials with raw system calls (glibc's setuid and friends would
// signal every thread of the process the child believes it is, and wait for them forever).

static int spawn_cgroup_fd = -1;

void clade_set_spawn_cgroup(int procs_fd) { spawn_cgroup_fd = procs_fd; }

struct spawn_request {
    const char *file;
    char *const *argv;
    char *const *envp;
    int in_fd, out_fd, err_fd, terminal_fd;
    const char *root;
    const char *cwd;
    int change_user;
    unsigned uid, gid;
    const unsigned *groups;
    int group_count;
    const struct clade_resource_limit *limits;
    int limit_count;
    /// Set by the child when a step before the program runs fails; 0 once it has exec'd.
    volatile int error;
};

static int spawned_child(void *argument) {
    struct spawn_request *request = argument;
    clade_reset_child_signals();
    setsid();
    // Before the program allocates anything, so its memory is charged to the user group.
    if (spawn_cgroup_fd >= 0) (void)!write(spawn_cgroup_fd, "0", 1);
    // A new session has no controlling terminal; taking the PTY's makes ^C, job control and
    // SIGHUP on hang-up work as in a login shell.
    if (request->terminal_fd >= 0 && ioctl(request->terminal_fd, TIOCSCTTY, 0) != 0) goto fail;
    if (dup2(request->in_fd, 0) < 0 || dup2(request->out_fd, 1) < 0 || dup2(request->err_fd, 2) < 0) goto fail;
    // Before the user changes: only root may chroot.
    if (request->root && (chroot(request->root) != 0 || chdir("/") != 0)) goto fail;
    for (int index = 0; index < request->limit_count; index++) {
        struct rlimit limit = {.rlim_cur = request->limits[index].soft, .rlim_max = request->limits[index].hard};
        if (setrlimit(request->limits[index].resource, &limit) != 0) goto fail;
    }
    if (request->change_user) {
        if (syscall(SYS_setgroups, (size_t)request->group_count, request->groups) != 0) goto fail;
        if (syscall(SYS_setresgid, request->gid, request->gid, request->gid) != 0) goto fail;
        if (syscall(SYS_setresuid, request->uid, request->uid, request->uid) != 0) goto fail;
    }
    if (request->cwd && chdir(request->cwd) != 0) goto fail;
    execvpe(request->file, request->argv, request->envp);
fail:
    request->error = errno ? errno : EINVAL;
    _exit(127);
}

int clade_spawn_child(const char *file, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd,
                      int terminal_fd, const char *root, const char *cwd, int change_user, unsigned uid, unsigned gid,
                      const unsigned *groups, int group_count, const struct clade_resource_limit *limits, int limit_count,
                      int *pid_out) {
    struct spawn_request request = {
        .file = file, .argv = argv, .envp = envp, .in_fd = in_fd, .out_fd = out_fd, .err_fd = err_fd,
        .terminal_fd = terminal_fd, .root = root, .cwd = cwd, .change_user = change_user, .uid = uid, .gid = gid,
        .groups = groups, .group_count = group_count, .limits = limits, .limit_count = limit_count, .error = 0,
    };
    // The child's own stack (execvpe builds each candidate path on it); untouched pages cost nothing.
    const size_t stack_size = 256 * 1024;
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return errno;
    // No handler of the parent's may run on the child's side before the child has reset them.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t pid = clone(spawned_child, (char *)stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &request);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    munmap(stack, stack_size);
    if (pid < 0) return saved;
    *pid_out = pid;
    return request.error;
}

int clade_spawn_as(const char *file, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd,
                   const char *cwd, unsigned uid, unsigned gid, const unsigned *groups, int group_count, int *pid_out) {
    return clade_spawn_child(file, argv, envp, in_fd, out_fd, err_fd, -1, NULL, cwd, 1, uid, gid, groups, group_count, NULL, 0, pid_out);
}
