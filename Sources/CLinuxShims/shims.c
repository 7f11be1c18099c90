#define _GNU_SOURCE
#include "CLinuxShims.h"
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
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
