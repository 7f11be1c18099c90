// clade's FUSE server core: one read-only-in-effect file whose bytes are made ready by the
// owner (the Swift side fetches and verifies them) before the kernel is answered.
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "CLazyFuse.h"

enum { ROOT_INODE = 1, FILE_INODE = 2 };
// The file never changes size or identity while mounted, so the kernel may keep what it learns.
static const double attribute_seconds = 86400.0;

struct clade_lazy_server {
    struct fuse_session *session;
    char *name;
    uint64_t size;
    int data_fd;
    clade_lazy_callbacks callbacks;
    pthread_mutex_t lock;
    int opens;
};

static struct clade_lazy_server *server_of(fuse_req_t request) {
    return (struct clade_lazy_server *)fuse_req_userdata(request);
}

static void fill_attributes(const struct clade_lazy_server *server, fuse_ino_t inode, struct stat *attributes) {
    memset(attributes, 0, sizeof *attributes);
    attributes->st_ino = inode;
    attributes->st_uid = getuid();
    attributes->st_gid = getgid();
    if (inode == ROOT_INODE) {
        attributes->st_mode = S_IFDIR | 0755;
        attributes->st_nlink = 2;
    } else {
        // QEMU opens a memory file read-write even to map it private; writes never come back.
        attributes->st_mode = S_IFREG | 0644;
        attributes->st_nlink = 1;
        attributes->st_size = (off_t)server->size;
        attributes->st_blksize = 4096;
        attributes->st_blocks = (blkcnt_t)((server->size + 511) / 512);
    }
}

static void on_lookup(fuse_req_t request, fuse_ino_t parent, const char *name) {
    struct clade_lazy_server *server = server_of(request);
    if (parent != ROOT_INODE || strcmp(name, server->name) != 0) {
        fuse_reply_err(request, ENOENT);
        return;
    }
    struct fuse_entry_param entry;
    memset(&entry, 0, sizeof entry);
    entry.ino = FILE_INODE;
    entry.attr_timeout = attribute_seconds;
    entry.entry_timeout = attribute_seconds;
    fill_attributes(server, FILE_INODE, &entry.attr);
    fuse_reply_entry(request, &entry);
}

static void on_getattr(fuse_req_t request, fuse_ino_t inode, struct fuse_file_info *info) {
    (void)info;
    if (inode != ROOT_INODE && inode != FILE_INODE) {
        fuse_reply_err(request, ENOENT);
        return;
    }
    struct stat attributes;
    fill_attributes(server_of(request), inode, &attributes);
    fuse_reply_attr(request, &attributes, attribute_seconds);
}

static void count_open(struct clade_lazy_server *server, int delta) {
    pthread_mutex_lock(&server->lock);
    server->opens += delta;
    int now = server->opens;
    pthread_mutex_unlock(&server->lock);
    if (server->callbacks.opens_changed) server->callbacks.opens_changed(server->callbacks.context, now);
}

static void on_open(fuse_req_t request, fuse_ino_t inode, struct fuse_file_info *info) {
    if (inode != FILE_INODE) {
        fuse_reply_err(request, EISDIR);
        return;
    }
    if (info->flags & O_TRUNC) {
        fuse_reply_err(request, EROFS);
        return;
    }
    // Keep the page cache across opens: siblings forked later share the pages already read.
    info->keep_cache = 1;
    count_open(server_of(request), 1);
    if (fuse_reply_open(request, info) != 0) count_open(server_of(request), -1);
}

static void on_release(fuse_req_t request, fuse_ino_t inode, struct fuse_file_info *info) {
    (void)info;
    if (inode == FILE_INODE) count_open(server_of(request), -1);
    fuse_reply_err(request, 0);
}

static void on_read(fuse_req_t request, fuse_ino_t inode, size_t size, off_t offset, struct fuse_file_info *info) {
    (void)info;
    struct clade_lazy_server *server = server_of(request);
    if (inode != FILE_INODE) {
        fuse_reply_err(request, EISDIR);
        return;
    }
    if (offset < 0 || (uint64_t)offset >= server->size) {
        fuse_reply_buf(request, NULL, 0);
        return;
    }
    if ((uint64_t)offset + size > server->size) size = (size_t)(server->size - (uint64_t)offset);
    const struct fuse_ctx *caller = fuse_req_ctx(request);
    int ready = server->callbacks.ensure(server->callbacks.context, (uint64_t)offset, (uint64_t)size, caller ? (int32_t)caller->pid : 0);
    if (ready < 0) {
        fuse_reply_err(request, -ready);
        return;
    }
    char *bytes = malloc(size);
    if (bytes == NULL) {
        fuse_reply_err(request, ENOMEM);
        return;
    }
    size_t done = 0;
    while (done < size) {
        ssize_t count = pread(server->data_fd, bytes + done, size - done, offset + (off_t)done);
        if (count < 0 && errno == EINTR) continue;
        if (count < 0) {
            int error = errno;
            free(bytes);
            fuse_reply_err(request, error);
            return;
        }
        if (count == 0) {
            // Past the assembled file's end: a sparse tail, which reads as zeros.
            memset(bytes + done, 0, size - done);
            break;
        }
        done += (size_t)count;
    }
    fuse_reply_buf(request, bytes, size);
    free(bytes);
}

static void on_write(fuse_req_t request, fuse_ino_t inode, const char *bytes, size_t size, off_t offset, struct fuse_file_info *info) {
    (void)inode; (void)bytes; (void)size; (void)offset; (void)info;
    fuse_reply_err(request, EROFS);
}

static void on_readdir(fuse_req_t request, fuse_ino_t inode, size_t size, off_t offset, struct fuse_file_info *info) {
    (void)info;
    struct clade_lazy_server *server = server_of(request);
    if (inode != ROOT_INODE) {
        fuse_reply_err(request, ENOTDIR);
        return;
    }
    const char *names[] = {".", "..", server->name};
    const fuse_ino_t inodes[] = {ROOT_INODE, ROOT_INODE, FILE_INODE};
    char *buffer = calloc(1, size);
    if (buffer == NULL) {
        fuse_reply_err(request, ENOMEM);
        return;
    }
    size_t used = 0;
    for (off_t index = offset; index < 3; index++) {
        struct stat attributes;
        memset(&attributes, 0, sizeof attributes);
        attributes.st_ino = inodes[index];
        attributes.st_mode = inodes[index] == FILE_INODE ? S_IFREG : S_IFDIR;
        size_t needed = fuse_add_direntry(request, buffer + used, size - used, names[index], &attributes, index + 1);
        if (needed > size - used) break;
        used += needed;
    }
    fuse_reply_buf(request, buffer, used);
    free(buffer);
}

static const struct fuse_lowlevel_ops operations = {
    .lookup = on_lookup,
    .getattr = on_getattr,
    .open = on_open,
    .release = on_release,
    .read = on_read,
    .write = on_write,
    .readdir = on_readdir,
};

clade_lazy_server *clade_lazy_mount(
    const char *mountpoint, const char *name, uint64_t size, int data_fd, int allow_other,
    const clade_lazy_callbacks *callbacks, char *error, size_t error_size) {
    struct clade_lazy_server *server = calloc(1, sizeof *server);
    if (server == NULL) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    server->name = strdup(name);
    server->size = size;
    server->data_fd = data_fd;
    server->callbacks = *callbacks;
    pthread_mutex_init(&server->lock, NULL);
    char options[128];
    snprintf(options, sizeof options, "fsname=clade-lazy,subtype=clade%s", allow_other ? ",allow_other" : "");
    char *arguments[] = {"clade-lazy", "-o", options, NULL};
    struct fuse_args parsed = FUSE_ARGS_INIT(3, arguments);
    server->session = fuse_session_new(&parsed, &operations, sizeof operations, server);
    if (server->session == NULL) {
        snprintf(error, error_size, "libfuse refused the session options '%s'", options);
        goto failed;
    }
    if (fuse_session_mount(server->session, mountpoint) != 0) {
        snprintf(error, error_size, "cannot mount a FUSE filesystem at %s (is /dev/fuse there, and may this user mount?)", mountpoint);
        fuse_session_destroy(server->session);
        goto failed;
    }
    return server;
failed:
    free(server->name);
    pthread_mutex_destroy(&server->lock);
    free(server);
    return NULL;
}

int clade_lazy_run(clade_lazy_server *server, int threads) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) return -ENOMEM;
    fuse_loop_cfg_set_max_threads(config, (unsigned)threads);
    int result = fuse_session_loop_mt(server->session, config);
    fuse_loop_cfg_destroy(config);
    return result;
}

void clade_lazy_stop(clade_lazy_server *server) {
    fuse_session_exit(server->session);
    fuse_session_unmount(server->session);
}

int clade_lazy_store(clade_lazy_server *server, uint64_t offset, const void *bytes, size_t size) {
    struct fuse_bufvec buffers = FUSE_BUFVEC_INIT(size);
    buffers.buf[0].mem = (void *)bytes;
    return fuse_lowlevel_notify_store(server->session, FILE_INODE, (off_t)offset, &buffers, 0);
}

void clade_lazy_destroy(clade_lazy_server *server) {
    fuse_session_destroy(server->session);
    free(server->name);
    pthread_mutex_destroy(&server->lock);
    free(server);
}

