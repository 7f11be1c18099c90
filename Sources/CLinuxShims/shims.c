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
