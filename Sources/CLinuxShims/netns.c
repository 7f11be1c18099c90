// Descriptors made inside another network namespace: a pod's tap device and sockets that reach
// its guest. A thread enters the namespace for one call and comes back before returning.
#define _GNU_SOURCE
#include "CLinuxShims.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/// Runs `make` with the calling thread in the namespace `netns_fd`, then returns the thread to
/// its own. A thread that cannot return would go on in a pod's namespace: that is never safe, so
/// the process ends instead.
static int in_namespace(int netns_fd, int (*make)(const void *), const void *context) {
    int own = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (own < 0) return -1;
    if (setns(netns_fd, CLONE_NEWNET) != 0) {
        int saved = errno;
        close(own);
        errno = saved;
        return -1;
    }
    int result = make(context);
    int saved = errno;
    if (setns(own, CLONE_NEWNET) != 0) abort();
    close(own);
    errno = saved;
    return result;
}

static int make_tap(const void *context) {
    const char *name = context;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    // No IFF_VNET_HDR: the guest's NIC then offers the offloads it offered on user-mode
    // networking when its snapshot was taken, so a restore finds the features it negotiated.
    request.ifr_flags = IFF_TAP | IFF_NO_PI;
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &request) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int clade_netns_tap(int netns_fd, const char *name) {
    return in_namespace(netns_fd, make_tap, name);
}

static int make_stream_socket(const void *context) {
    (void)context;
    return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

int clade_netns_stream_socket(int netns_fd) {
    return in_namespace(netns_fd, make_stream_socket, NULL);
}
