// A guest program for the live-branch tests: it stamps an iteration number into every page of a
// file-backed buffer, over and over, so a copy taken at one instant shows at most two adjacent
// numbers, and a copy smeared over time shows more.
//   page-counter write PATH MIB   create PATH (MIB MiB) and stamp pages forever: 1, 2, 3...
//   page-counter check PATH       print the lowest and highest stamp over all pages
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const size_t page = 4096;

static uint64_t *map(const char *path, size_t bytes, int create) {
    int fd = open(path, create ? O_RDWR | O_CREAT | O_TRUNC : O_RDONLY, 0644);
    if (fd < 0) { perror(path); exit(2); }
    if (create && ftruncate(fd, (off_t)bytes) != 0) { perror("ftruncate"); exit(2); }
    void *base = mmap(NULL, bytes, create ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) { perror("mmap"); exit(2); }
    close(fd);
    return base;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "write") == 0) {
        size_t bytes = (size_t)atol(argv[3]) << 20;
        volatile uint64_t *buffer = map(argv[2], bytes, 1);
        for (uint64_t iteration = 1;; iteration++)
            for (size_t offset = 0; offset < bytes; offset += page) buffer[offset / sizeof(uint64_t)] = iteration;
    }
    if (argc == 3 && strcmp(argv[1], "check") == 0) {
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) { perror(argv[2]); return 2; }
        off_t bytes = lseek(fd, 0, SEEK_END);
        close(fd);
        const uint64_t *buffer = map(argv[2], (size_t)bytes, 0);
        uint64_t low = UINT64_MAX, high = 0;
        for (off_t offset = 0; offset < bytes; offset += page) {
            uint64_t value = buffer[offset / sizeof(uint64_t)];
            if (value < low) low = value;
            if (value > high) high = value;
        }
        printf("%llu %llu\n", (unsigned long long)low, (unsigned long long)high);
        return 0;
    }
    fprintf(stderr, "usage: page-counter write PATH MIB | page-counter check PATH\n");
    return 2;
}
