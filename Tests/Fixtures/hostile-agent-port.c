// A hostile guest process for the isolation tests: run as root inside a guest, it takes the
// agent's channels away from clade-agent (PID 1) and writes what a compromised guest might.
//
//   hostile-agent-port garbage  N   answer N of clade's connections to the agent's TCP port
//                                   with up to 1 GiB of random bytes each
//   hostile-agent-port longline N   answer N connections with one 100 MiB line
//   hostile-agent-port serial       write 1 GiB of random bytes into the agent's virtio-serial port
//                                   (the host end reads nothing from it; QEMU must not choke)
//
// The agent's descriptors are copied out of PID 1 with pidfd_getfd (root may). For TCP this
// process then accepts on the agent's own listening socket, side by side with the agent, so
// clade cannot tell its connections from the agent's. Built static on the host: `cc -static -O2 -o hostile hostile-agent-port.c`.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

static const unsigned agent_port = 8888;

// The inode of the socket listening on agent_port, from /proc/net/tcp.
static unsigned long listener_inode(void) {
    FILE *table = fopen("/proc/net/tcp", "r");
    if (!table) return 0;
    char line[512];
    unsigned long found = 0;
    while (fgets(line, sizeof line, table)) {
        unsigned local_port, state;
        unsigned long inode;
        if (sscanf(line, " %*d: %*x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu", &local_port, &state, &inode) == 3
            && local_port == agent_port && state == 0x0A) {
            found = inode;
        }
    }
    fclose(table);
    return found;
}

// The number of PID 1's descriptor whose link reads `target`, or -1.
static int find_descriptor(const char *target) {
    DIR *directory = opendir("/proc/1/fd");
    if (!directory) return -1;
    struct dirent *entry;
    int found = -1;
    while ((entry = readdir(directory))) {
        char path[300], link[256];
        snprintf(path, sizeof path, "/proc/1/fd/%s", entry->d_name);
        ssize_t length = readlink(path, link, sizeof link - 1);
        if (length <= 0) continue;
        link[length] = 0;
        if (strcmp(link, target) == 0) found = atoi(entry->d_name);
    }
    closedir(directory);
    return found;
}

// The device of the virtio-serial port named clade.agent, e.g. /dev/vport2p1.
static int serial_port(char *device, size_t size) {
    DIR *directory = opendir("/sys/class/virtio-ports");
    if (!directory) return 0;
    struct dirent *entry;
    int found = 0;
    while (!found && (entry = readdir(directory))) {
        if (entry->d_name[0] == '.') continue;
        char path[300], name[64] = {0};
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", entry->d_name);
        FILE *file = fopen(path, "r");
        if (!file) continue;
        if (fgets(name, sizeof name, file) && strncmp(name, "clade.agent", 11) == 0) {
            snprintf(device, size, "/dev/%s", entry->d_name);
            found = 1;
        }
        fclose(file);
    }
    closedir(directory);
    return found;
}

static int steal(int number) {
    int pidfd = (int)syscall(SYS_pidfd_open, 1, 0);
    if (pidfd < 0) { perror("pidfd_open"); exit(2); }
    int fd = (int)syscall(SYS_pidfd_getfd, pidfd, number, 0);
    if (fd < 0) { perror("pidfd_getfd"); exit(2); }
    return fd;
}

static uint64_t state = 0x9E3779B97F4A7C15ull;
static void fill_random(unsigned char *buffer, size_t size) {
    for (size_t i = 0; i + 8 <= size; i += 8) {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        memcpy(buffer + i, &state, 8);
    }
}

// Writes `total` bytes made by `fill`; returns how many went out before the peer stopped reading.
static long long flood(int fd, long long total, int random) {
    static unsigned char buffer[1 << 16];
    if (!random) memset(buffer, 'A', sizeof buffer);
    long long sent = 0;
    while (sent < total) {
        if (random) fill_random(buffer, sizeof buffer);
        size_t chunk = (size_t)(total - sent < (long long)sizeof buffer ? total - sent : (long long)sizeof buffer);
        ssize_t written = write(fd, buffer, chunk);
        if (written <= 0) break;
        sent += written;
    }
    return sent;
}

// A copy of the agent's own listening socket: this process and the agent then accept from
// the same queue, so some of clade's connections reach this process instead.
static int share_listener(void) {
    unsigned long inode = listener_inode();
    char target[64];
    snprintf(target, sizeof target, "socket:[%lu]", inode);
    int number = inode ? find_descriptor(target) : -1;
    if (number < 0) { fprintf(stderr, "the agent's listener on port %u was not found\n", agent_port); exit(2); }
    return steal(number);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s garbage|longline N | serial\n", argv[0]); return 2; }
    const char *mode = argv[1];
    // clade closes a connection as soon as it has seen enough; the next write must fail, not kill us.
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(mode, "serial") == 0) {
        // The agent opens its port only while the host end is connected; otherwise it is free.
        char device[300];
        if (!serial_port(device, sizeof device)) { fprintf(stderr, "no virtio-serial port named clade.agent\n"); return 2; }
        int number = find_descriptor(device);
        int fd = number >= 0 ? steal(number) : -1;
        for (int attempt = 0; fd < 0 && attempt < 100; attempt++) {
            fd = open(device, O_RDWR);
            if (fd < 0) usleep(20000);
        }
        if (fd < 0) { perror(device); return 2; }
        long long sent = flood(fd, 1LL << 30, 1);
        printf("serial: wrote %lld bytes into %s\n", sent, device);
        return 0;
    }
    int connections = argc > 2 ? atoi(argv[2]) : 1;
    int listener = share_listener();
    printf("accepting on the agent's port %u\n", agent_port);
    fflush(stdout);
    for (int i = 0; i < connections; i++) {
        int connection = accept(listener, NULL, NULL);
        if (connection < 0) continue;
        long long sent = strcmp(mode, "longline") == 0 ? flood(connection, 100LL << 20, 0) : flood(connection, 1LL << 30, 1);
        printf("%s: connection %d took %lld bytes before it closed\n", mode, i + 1, sent);
        fflush(stdout);
        close(connection);
    }
    return 0;
}
