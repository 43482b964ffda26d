/* Kernel attack surface that a sandbox has no business touching: kexec, modules, bpf,
 * perf, keyrings, userfaultfd, io_uring, block devices, raw and packet sockets, file
 * handles ("shocker"). */
#include "attack.h"

#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

static void machine(int argc, char **argv)
{
    (void)argc, (void)argv;
    EXPECT_DENIED("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    EXPECT_DENIED("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, "", 0));
    static char image[64] = "\177ELF";
    EXPECT_DENIED("init_module", syscall(SYS_init_module, image, sizeof image, ""));
    int fd = open("/bin/busybox", O_RDONLY | O_CLOEXEC);
    EXPECT_DENIED("finit_module", syscall(SYS_finit_module, fd, "", 0));
    close(fd);
    EXPECT_DENIED("delete_module", syscall(SYS_delete_module, "sbx_no_such_module", O_NONBLOCK));
    EXPECT_DENIED("reboot",
                  syscall(SYS_reboot, 0xfee1dead, 672274793, 0x89abcdef /* CAD_ON: harmless */, NULL));
    EXPECT_DENIED("swapoff", syscall(SYS_swapoff, "/dev/null"));
    /* Sets the clock to what it already is: harmless should the call ever be allowed. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    EXPECT_DENIED("clock_settime", syscall(SYS_clock_settime, CLOCK_REALTIME, &now));
}

static void surface(int argc, char **argv)
{
    (void)argc, (void)argv;
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    EXPECT_DENIED("bpf map create", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    struct perf_event_attr pe;
    memset(&pe, 0, sizeof pe);
    pe.type = PERF_TYPE_SOFTWARE;
    pe.size = sizeof pe;
    pe.config = PERF_COUNT_SW_CPU_CLOCK;
    pe.exclude_kernel = 1;
    EXPECT_DENIED("perf_event_open", syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0));
    EXPECT_DENIED("add_key", syscall(SYS_add_key, "user", "sbx-test", "x", 1, -2 /* session keyring */));
    EXPECT_DENIED("keyctl join session", syscall(SYS_keyctl, 1 /* JOIN_SESSION_KEYRING */, NULL));
    EXPECT_DENIED("request_key", syscall(SYS_request_key, "user", "sbx-test", NULL, 0));
    EXPECT_DENIED("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC));
    static char params[120];
    EXPECT_DENIED("io_uring_setup", syscall(SYS_io_uring_setup, 8, params));
    EXPECT_DENIED("fanotify_init", syscall(SYS_fanotify_init, 0, O_RDONLY));
    EXPECT_DENIED("syslog read", syscall(SYS_syslog, 3, params, sizeof params));
    EXPECT_DENIED("iopl", syscall(SYS_iopl, 3));
}

static void devices(int argc, char **argv)
{
    (void)argc, (void)argv;
    EXPECT_DENIED("mknod block 8:0", mknod("/tmp/sda", S_IFBLK | 0600, makedev(8, 0)));
    EXPECT_DENIED("mknod char mem 1:1", mknod("/tmp/mem", S_IFCHR | 0600, makedev(1, 1)));
    /* The device cgroup and nodev mounts are further walls: even an existing node would
     * be unusable.  /dev holds bind mounts of harmless nodes only. */
    EXPECT_FAIL("open /dev/sda", open("/dev/sda", O_RDONLY));
    EXPECT_FAIL("open /dev/mem", open("/dev/mem", O_RDONLY));
    EXPECT_FAIL("open /dev/kmsg", open("/dev/kmsg", O_RDONLY));
}

static void sockets(int argc, char **argv)
{
    (void)argc, (void)argv;
    EXPECT_DENIED("socket AF_INET SOCK_RAW", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    EXPECT_DENIED("socket AF_INET SOCK_RAW tcp", socket(AF_INET, SOCK_RAW, IPPROTO_TCP));
    EXPECT_DENIED("socket AF_INET6 SOCK_RAW", socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6));
    EXPECT_DENIED("socket AF_PACKET SOCK_RAW", socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)));
    EXPECT_DENIED("socket AF_PACKET SOCK_DGRAM", socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_ALL)));
    EXPECT_DENIED("socket SOCK_PACKET", socket(AF_INET, SOCK_PACKET, htons(ETH_P_ALL)));
}

/* The "shocker" escape: open_by_handle_at with a guessed handle (inode 2 = the root of an
 * ext4 file system) resolves on the whole file system behind a mount, bypassing the mount
 * tree.  Needs CAP_DAC_READ_SEARCH in the host namespace; the filter denies it anyway. */
static void shocker(int argc, char **argv)
{
    (void)argc, (void)argv;
    struct {
        struct file_handle fh;
        unsigned char bytes[8];
    } h;
    memset(&h, 0, sizeof h);
    h.fh.handle_bytes = 8;
    h.fh.handle_type = 1; /* FILEID_INO32_GEN */
    unsigned int ino = 2;
    memcpy(h.fh.f_handle, &ino, sizeof ino);
    const char *mounts[] = {"/", "/bin/busybox", "/proc", "/dev/null", "/etc"};
    char name[80];
    for (size_t i = 0; i < sizeof mounts / sizeof mounts[0]; i++) {
        int fd = open(mounts[i], O_RDONLY | O_CLOEXEC);
        snprintf(name, sizeof name, "open_by_handle_at via %s", mounts[i]);
        EXPECT_DENIED(name, syscall(SYS_open_by_handle_at, fd, &h.fh, O_RDONLY));
        close(fd);
    }
    struct {
        struct file_handle fh;
        unsigned char bytes[128];
    } out;
    int mnt;
    out.fh.handle_bytes = 128;
    EXPECT_DENIED("name_to_handle_at /bin/busybox",
                  syscall(SYS_name_to_handle_at, AT_FDCWD, "/bin/busybox", &out.fh, &mnt, 0));
}

static const struct attack attacks[] = {
    {"machine", machine}, {"surface", surface}, {"devices", devices},
    {"sockets", sockets}, {"shocker", shocker}, {NULL, NULL},
};

int main(int argc, char **argv)
{
    return attack_main(attacks, argc, argv);
}
