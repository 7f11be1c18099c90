#ifndef CLADE_LINUX_SHIMS_H
#define CLADE_LINUX_SHIMS_H
// Linux/glibc calls that Swift's Glibc module hides behind _GNU_SOURCE, wrapped so that
// Swift sees them. The definitions live in shims.c, which alone defines _GNU_SOURCE, so
// this header does not change how system headers look to Swift.
#include <spawn.h>
// Extended attributes (the agent's file metadata); Swift's Glibc module leaves this header out.
#include <sys/xattr.h>

int clade_pipe_cloexec(int fds[2]);
int clade_accept_cloexec(int fd);
int clade_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path);
short clade_spawn_setsid_flag(void);
/// FICLONE: make `dest` share all of `src`'s extents (reflink). 0 on success, -1 + errno.
int clade_ficlone(int dest, int src);
/// The f_type of the filesystem holding `path`. 0 on success, -1 + errno.
int clade_statfs_type(const char *path, unsigned long *type);
/// Closes every descriptor from `from` up in the spawned child (glibc 2.34+).
int clade_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from);
/// Adds `length` bytes to the kernel's entropy pool, crediting them (RNDADDENTROPY on /dev/urandom's fd).
int clade_add_entropy(int fd, const unsigned char *bytes, int length);
/// Sets the hardware address of network interface `name` (SIOCSIFHWADDR). 0 on success, -1 + errno.
int clade_set_mac(const char *name, const unsigned char mac[6]);
/// Forces the kernel CRNG to reseed from its input pool now (RNDRESEEDCRNG). 0 on success, -1 + errno.
int clade_reseed_crng(int fd);
/// Starts `file` (looked up on the PATH in `envp`) in a new session as `uid`/`gid` with
/// supplementary `groups`, with the three descriptors as stdin/out/err, in `cwd` when not NULL.
/// Returns 0, or the errno of the step that failed (the child, if any, has then exited 127 and
/// its pid is still stored in `pid_out`).
int clade_spawn_as(const char *file, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd,
                   const char *cwd, unsigned uid, unsigned gid, const unsigned *groups, int group_count, int *pid_out);
/// Like `clade_spawn_as`, and more: `terminal_fd` (or -1) becomes the child's controlling terminal
/// (it must also be one of the three descriptors); the user changes only when `change_user` is set;
/// with `root` (or NULL) the child chroots there first, and `cwd` is then inside it; the
/// `limit_count` resource limits in `limits` (or NULL) are set before the user changes, so a
/// hard limit may be raised.
/// Every child spawned afterwards moves itself into the cgroup whose `cgroup.procs` is open as
/// `procs_fd` (close-on-exec) before it runs its program; -1 turns that off.
void clade_set_spawn_cgroup(int procs_fd);
/// One resource limit for `clade_spawn_child`: `resource` is an RLIMIT_ number.
struct clade_resource_limit {
    int resource;
    unsigned long long soft;
    unsigned long long hard;
};
int clade_spawn_child(const char *file, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd,
                      int terminal_fd, const char *root, const char *cwd, int change_user, unsigned uid, unsigned gid,
                      const unsigned *groups, int group_count, const struct clade_resource_limit *limits, int limit_count,
                      int *pid_out);
/// Opens a pseudo-terminal pair of the given size, both ends close-on-exec. 0, or -1 + errno.
int clade_open_pty(int *controller, int *terminal, unsigned short rows, unsigned short columns);
/// Sets a terminal's window size (TIOCSWINSZ), which also signals SIGWINCH to its foreground group.
int clade_set_window_size(int fd, unsigned short rows, unsigned short columns);
/// Reads a terminal's window size (TIOCGWINSZ). 0, or -1 + errno (not a terminal).
int clade_get_window_size(int fd, unsigned short *rows, unsigned short *columns);
#include <sys/types.h>
/// The jail a VMM starts in (see `clade_spawn_vmm`). Lists end with NULL.
struct clade_vmm_jail {
    /// Where the mount view's tmpfs goes (inside the machine's directory), or NULL for no mount view.
    const char *root;
    /// The machine's directory, bound read-write at its own path in the view.
    const char *machine;
    /// Host directories under / copied as links or bound read-only and nosuid (`usr`, `lib`...).
    const char *const *system_dirs;
    /// Device nodes under /dev bound into the view when they exist.
    const char *const *devices;
    /// Files outside the machine's directory bound read-only at their own paths (kernel, initrd,
    /// disk backing files), for a VMM that enters the view before it starts; may be NULL.
    const char *const *read_only_files;
    /// Pivot into the view before the VMM starts, dropping the old root entirely (else the VMM
    /// chroots into it itself once its files are open).
    int pivot;
    /// First enter a user namespace (this user as root inside, nobody else) and a network
    /// namespace whose loopback is up and empty: how an unprivileged clade confines a VMM.
    int user_namespace;
    /// A descriptor the VMM keeps open as descriptor 4 (a helper watches it to end with the
    /// VMM), or -1.
    int keep_fd;
};
/// Starts the VMM program `path` so that it is nobody's child: a forked child starts a session
/// and forks the VMM, then exits. The VMM runs with stdin from /dev/null, stdout and stderr on
/// `log_fd`, nothing else open but `jail->keep_fd`, in `jail` (NULL: none). Returns the VMM's pid
/// once the program runs, or -1 with errno: of a fork, or of the step that failed in the child
/// (which also wrote why to the log and exited 126).
pid_t clade_spawn_vmm(const struct clade_vmm_jail *jail, const char *path, char *const argv[], char *const envp[], int log_fd);
/// Sends `length` bytes on a unix socket with `descriptor` attached (SCM_RIGHTS), as QEMU's
/// `getfd` expects. Returns the bytes sent (a short send sent the descriptor with its first part), or -1 + errno.
int clade_send_with_descriptor(int socket_fd, const void *bytes, size_t length, int descriptor);
/// 1 when this process may make a mount namespace and mount a tmpfs in it (tried in a child), else 0.
int clade_probe_mount_view(void);
/// 1 when this process may make a user namespace, a network namespace with its loopback up and a
/// mount namespace with a tmpfs in it, as `clade_spawn_vmm` does for an unprivileged clade; else 0.
int clade_probe_user_namespace(void);
/// Opens a tap device called `name` inside the network namespace `netns_fd` (no packet
/// information, no virtio-net header) and returns its descriptor, close-on-exec, or -1 + errno.
/// The device lives as long as a descriptor of it is open.
int clade_netns_tap(int netns_fd, const char *name);
/// A TCP socket (close-on-exec) that belongs to the network namespace `netns_fd`, or -1 + errno.
int clade_netns_stream_socket(int netns_fd);
#endif
