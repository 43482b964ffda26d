/* Image layers: the bytes are a layer blob (tar, possibly compressed) unpacked by
 * sbx_unpack_layer into an empty directory.  Besides memory errors, the target checks
 * the property the unpacker exists for: nothing is ever created outside the root, even
 * through symlinks, hardlinks, ".." or absolute names planted by earlier entries.  A
 * sibling directory of the root, "outside", must stay empty. */
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "image/unpack.h"

#define CHECK(c)                                                                                             \
    do {                                                                                                     \
        if (!(c))                                                                                            \
            abort();                                                                                         \
    } while (0)

static char base[64];

/* Removes everything below dfd (borrowed), making directories writable first. */
static void empty_dir(int dfd)
{
    int dup = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dup < 0)
        return;
    DIR *d = fdopendir(dup);
    if (!d) {
        close(dup);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            /* A 0000 directory from the layer must become readable to be emptied. */
            int ignored = fchmodat(dfd, de->d_name, 0700, 0);
            (void)ignored;
            int sub = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0) {
                empty_dir(sub);
                close(sub);
            }
            unlinkat(dfd, de->d_name, AT_REMOVEDIR);
        } else {
            unlinkat(dfd, de->d_name, 0);
        }
    }
    closedir(d);
}

static bool is_empty(const char *path)
{
    DIR *d = opendir(path);
    CHECK(d);
    struct dirent *de;
    bool empty = true;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            empty = false;
    closedir(d);
    return empty;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 20)
        return 0;
    if (!base[0]) {
        snprintf(base, sizeof base, "/tmp/sbx-fuzz-layer-%d", (int)getpid());
        mkdir(base, 0700);
        /* Refused entries are logged as warnings; the fuzzer wants silence. */
        sbx_log_set_level(SBX_LOG_ERROR);
    }
    _cleanup_free_ char *root = xasprintf("%s/root", base);
    _cleanup_free_ char *outside = xasprintf("%s/outside", base);
    _cleanup_free_ char *layer = xasprintf("%s/layer", base);
    mkdir(root, 0755);
    mkdir(outside, 0755);
    FILE *f = fopen(layer, "wb");
    CHECK(f);
    fwrite(data, 1, size, f);
    fclose(f);
    int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(rootfd >= 0);
    sbx_unpack_stats_t stats;
    sbx_err_t err = SBX_ERR_INIT;
    if (sbx_unpack_layer(rootfd, layer, &stats, &err) < 0)
        CHECK(err.msg[0]);
    empty_dir(rootfd);
    close(rootfd);
    unlink(layer);
    CHECK(is_empty(outside));
    return 0;
}
