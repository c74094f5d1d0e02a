/* fib_fs.h: the kernel record formats behind fibers.fs, parsed in C.
 *
 * inotify and fanotify both hand back a buffer of variable-length records;
 * fanotify's carry nested "info records" with flexible arrays (a file handle
 * whose size is in the handle, then a NUL-terminated name), which is plain
 * pointer arithmetic here and painful in Cython.  fibers/_fs.pyx reads the fd
 * into one large buffer and walks it with these helpers, so no record is
 * turned into a Python object before its path has been checked against the
 * roots and the exclude rules.
 *
 * Everything is static inline: the only user is _fs.pyx.
 */
#ifndef FIB_FS_H
#define FIB_FS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

/* Older C libraries lack the 5.17 names; the values are the kernel ABI. */
#ifndef FAN_RENAME
#define FAN_RENAME 0x10000000
#endif
#ifndef FAN_REPORT_TARGET_FID
#define FAN_REPORT_TARGET_FID 0x00001000
#endif
#ifndef FAN_REPORT_DFID_NAME_TARGET
#define FAN_REPORT_DFID_NAME_TARGET \
    (FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME | FAN_REPORT_TARGET_FID)
#endif
#ifndef FAN_EVENT_INFO_TYPE_OLD_DFID_NAME
#define FAN_EVENT_INFO_TYPE_OLD_DFID_NAME 10
#define FAN_EVENT_INFO_TYPE_NEW_DFID_NAME 12
#endif

/* One inotify record. */
typedef struct {
    int wd;
    uint32_t mask;
    uint32_t cookie;
    const char *name;   /* "" for events on the watched directory itself */
    size_t nlen;
} fib_fs_ino;

/* The next inotify record at *off in buf[0:len]; 1 if one was parsed, 0 at
 * the end, -EPROTO for a truncated record (never seen from a correct
 * kernel: reads return whole records). */
static inline int fib_fs_ino_next(const char *buf, size_t len, size_t *off,
                                  fib_fs_ino *ev)
{
    const struct inotify_event *ie;
    size_t at = *off;
    if (at >= len)
        return 0;
    if (len - at < sizeof(*ie))
        return -EPROTO;
    ie = (const struct inotify_event *)(buf + at);
    if (len - at < sizeof(*ie) + ie->len)
        return -EPROTO;
    ev->wd = ie->wd;
    ev->mask = ie->mask;
    ev->cookie = ie->cookie;
    ev->name = ie->len ? ie->name : "";
    ev->nlen = ie->len ? strnlen(ie->name, ie->len) : 0;
    *off = at + sizeof(*ie) + ie->len;
    return 1;
}

/* Watch exactly the directory at path (inotify): open it with O_PATH, never
 * through a final symlink, and add the watch through /proc/self/fd, so the
 * watch is on the inode whose number goes to *ino even if the path is
 * renamed meanwhile.  Without /proc (via_proc 0), the path is watched and
 * *ino is what lstat says just before.  The wd, or -errno (*ino is set if
 * the directory could be opened, else 0). */
static inline int fib_fs_ino_watch(int ifd, const char *path, uint32_t mask,
                                   int via_proc, unsigned long long *ino)
{
    char link[64];
    struct stat st;
    int fd, wd, err;
    *ino = 0;
    if (!via_proc) {
        if (lstat(path, &st) < 0)
            return -errno;
        if (!S_ISDIR(st.st_mode))
            return -ENOTDIR;
        *ino = st.st_ino;
        wd = inotify_add_watch(ifd, path, mask);
        return wd < 0 ? -errno : wd;
    }
    fd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        err = errno;
        close(fd);
        return -err;
    }
    *ino = st.st_ino;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    wd = inotify_add_watch(ifd, link, mask & ~(uint32_t)IN_DONT_FOLLOW);
    err = errno;
    close(fd);
    return wd < 0 ? -err : wd;
}

/* Bytes of events waiting in a notification fd's queue, or -errno. */
static inline long fib_fs_queued(int fd)
{
    int n;
    if (ioctl(fd, FIONREAD, &n) < 0)
        return -errno;
    return n;
}

/* One fanotify event in FID mode with directory names: the directory that
 * holds the entry (key = fsid + file handle, usable as a cache key and with
 * open_by_handle_at) and the entry's name.  A rename has both an old and a
 * new pair. */
typedef struct {
    uint64_t mask;
    int32_t pid;
    const unsigned char *dkey;   /* fsid (8 bytes) then struct file_handle */
    size_t dkey_len;
    const char *name;            /* "" if none, "." for the directory itself */
    size_t nlen;
    const unsigned char *dkey2;  /* FAN_RENAME: the new directory */
    size_t dkey2_len;
    const char *name2;
    size_t nlen2;
    const unsigned char *tkey;   /* the object itself (FAN_REPORT_TARGET_FID) */
    size_t tkey_len;
} fib_fs_fan;

static inline void fib_fs__fan_fid(const struct fanotify_event_info_header *h,
                                   const unsigned char **key, size_t *klen,
                                   const char **name, size_t *nlen)
{
    const struct fanotify_event_info_fid *fid =
        (const struct fanotify_event_info_fid *)h;
    const struct file_handle *fh = (const struct file_handle *)fid->handle;
    const char *end = (const char *)h + h->len;
    const char *nm = (const char *)fid->handle + sizeof(*fh) + fh->handle_bytes;
    *key = (const unsigned char *)&fid->fsid;
    *klen = sizeof(fid->fsid) + sizeof(*fh) + fh->handle_bytes;
    if (name) {
        if (nm < end) {
            *name = nm;
            *nlen = strnlen(nm, (size_t)(end - nm));
        } else {
            *name = "";
            *nlen = 0;
        }
    }
}

/* The next fanotify event; 1, 0 at the end, or -EPROTO.  Any fd the event
 * carries (none in FID mode) is closed. */
static inline int fib_fs_fan_next(const char *buf, size_t len, size_t *off,
                                  fib_fs_fan *ev)
{
    const struct fanotify_event_metadata *m;
    size_t at = *off, rec;
    if (at >= len)
        return 0;
    if (len - at < FAN_EVENT_METADATA_LEN)
        return -EPROTO;
    m = (const struct fanotify_event_metadata *)(buf + at);
    if (m->event_len < FAN_EVENT_METADATA_LEN || m->event_len > len - at ||
        m->vers != FANOTIFY_METADATA_VERSION)
        return -EPROTO;
    memset(ev, 0, sizeof(*ev));
    ev->mask = m->mask;
    ev->pid = m->pid;
    ev->name = ev->name2 = "";
    if (m->fd >= 0)
        close(m->fd);
    for (rec = m->metadata_len; rec + sizeof(struct fanotify_event_info_header)
                                <= m->event_len;) {
        const struct fanotify_event_info_header *h =
            (const struct fanotify_event_info_header *)(buf + at + rec);
        if (h->len < sizeof(*h) || rec + h->len > m->event_len)
            return -EPROTO;
        switch (h->info_type) {
        case FAN_EVENT_INFO_TYPE_DFID_NAME:
        case FAN_EVENT_INFO_TYPE_OLD_DFID_NAME:
        case FAN_EVENT_INFO_TYPE_DFID:
            fib_fs__fan_fid(h, &ev->dkey, &ev->dkey_len, &ev->name,
                            &ev->nlen);
            break;
        case FAN_EVENT_INFO_TYPE_NEW_DFID_NAME:
            fib_fs__fan_fid(h, &ev->dkey2, &ev->dkey2_len, &ev->name2,
                            &ev->nlen2);
            break;
        case FAN_EVENT_INFO_TYPE_FID:
            fib_fs__fan_fid(h, &ev->tkey, &ev->tkey_len, NULL, NULL);
            break;
        default:  /* pidfd, error: not needed */
            break;
        }
        rec += h->len;
    }
    *off = at + m->event_len;
    return 1;
}

/* Open the directory a fanotify key names, wherever it is now (flags: e.g.
 * O_RDONLY | O_DIRECTORY); the fd, or a negative errno (-ESTALE once the
 * directory is gone).  mount_fd is any fd on the same filesystem.  A reader
 * behind the kernel lists a directory this way: its path in the watcher's
 * tree is the one it had when the queued events were made, not now. */
static inline int fib_fs_fan_open(int mount_fd, const unsigned char *key,
                                  size_t klen, int flags)
{
    int fd;
    /* the handle follows the 8-byte fsid; copy it for alignment */
    union { struct file_handle fh; char raw[sizeof(struct file_handle) + MAX_HANDLE_SZ]; } h;
    if (klen < 8 + sizeof(struct file_handle) ||
        klen - 8 > sizeof(h.raw))
        return -EINVAL;
    memcpy(h.raw, key + 8, klen - 8);
    if (sizeof(struct file_handle) + h.fh.handle_bytes != klen - 8)
        return -EINVAL;
    fd = open_by_handle_at(mount_fd, &h.fh, flags | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* The key (fsid, then the struct file_handle) of the directory called name
 * in the directory dirfd, into out[0:cap]; its length, or a negative errno
 * (-ENOTDIR if it is not a directory).  The entry is opened once (O_PATH,
 * never through a symlink) and both its inode number (*ino) and its key
 * come from that open file, so they are of one directory even if the name
 * is replaced meanwhile. */
static inline ssize_t fib_fs_key_at(int dirfd, const char *name,
                                    unsigned char *out, size_t cap,
                                    unsigned long long *ino)
{
    struct statfs s;
    struct stat st;
    int mount_id, fd, err = 0;
    union { struct file_handle fh; char raw[sizeof(struct file_handle) + MAX_HANDLE_SZ]; } h;
    size_t n = 0;
    fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    h.fh.handle_bytes = MAX_HANDLE_SZ;
    if (fstat(fd, &st) < 0)
        err = errno;
    else if (!S_ISDIR(st.st_mode))
        err = ENOTDIR;
    else if (name_to_handle_at(fd, "", &h.fh, &mount_id, AT_EMPTY_PATH) < 0)
        err = errno;
    else if (fstatfs(fd, &s) < 0)
        err = errno;
    else {
        n = sizeof(struct file_handle) + h.fh.handle_bytes;
        if (8 + n > cap)
            err = ENAMETOOLONG;
    }
    close(fd);
    if (err)
        return -err;
    *ino = st.st_ino;
    memcpy(out, &s.f_fsid, 8);
    memcpy(out + 8, h.raw, n);
    return (ssize_t)(8 + n);
}

/* The key a fanotify record would name path by (fsid, then the struct
 * file_handle), into out[0:cap]: its length, or a negative errno.  Used to
 * know a root's own entry, and its parent's, when records name them. */
static inline ssize_t fib_fs_key(const char *path, unsigned char *out,
                                 size_t cap)
{
    struct statfs s;
    int mount_id;
    union { struct file_handle fh; char raw[sizeof(struct file_handle) + MAX_HANDLE_SZ]; } h;
    size_t n;
    h.fh.handle_bytes = MAX_HANDLE_SZ;
    if (name_to_handle_at(AT_FDCWD, path, &h.fh, &mount_id, 0) < 0)
        return -errno;
    if (statfs(path, &s) < 0)
        return -errno;
    n = sizeof(struct file_handle) + h.fh.handle_bytes;
    if (8 + n > cap)
        return -ENAMETOOLONG;
    memcpy(out, &s.f_fsid, 8);
    memcpy(out + 8, h.raw, n);
    return (ssize_t)(8 + n);
}

/* The filesystem id of path, as fanotify's records carry it (8 bytes). */
static inline int fib_fs_fsid(const char *path, unsigned char *out)
{
    struct statfs s;
    if (statfs(path, &s) < 0)
        return -errno;
    memcpy(out, &s.f_fsid, 8);
    return 0;
}

#endif
