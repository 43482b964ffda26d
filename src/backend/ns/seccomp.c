#include "backend/ns/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/util.h"

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

/* Syscalls that have no business in a sandbox: they manage the machine (modules, kexec,
 * swap, clock, reboot, accounting), reach into the kernel's attack surface far more than
 * ordinary programs need (bpf, perf, io_uring, userfaultfd, keyrings), escape or rebuild
 * the namespace and mount setup, or look at other processes' memory.  Most of them also
 * need a capability the bounding set no longer holds; the filter is the second wall. */
static const char *const denied[] = {
    /* mounts and namespaces */
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "unshare",
    "setns",
    /* file handles bypass path-based access checks (the "shocker" escape) */
    "open_by_handle_at",
    "name_to_handle_at",
    /* kernel and machine management */
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "iopl",
    "ioperm",
    "vhangup",
    /* time is host-wide */
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    /* large attack surfaces */
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "fanotify_init",
    /* other processes' memory and files */
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
};

static const unsigned long ns_clone_flags[] = {
    CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP,
};

static int add(scmp_filter_ctx ctx, uint32_t action, int nr, unsigned cnt, const struct scmp_arg_cmp *cmp,
               const char *what, sbx_err_t *err)
{
    int rc = seccomp_rule_add_array(ctx, action, nr, cnt, cmp);
    if (rc < 0)
        return sbx_error(err, -rc, "seccomp rule for %s", what);
    return 0;
}

static int add_rules(scmp_filter_ctx ctx, sbx_err_t *err)
{
    for (size_t i = 0; i < SBX_ARRAY_LEN(denied); i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        /* Names this architecture (or this libseccomp) does not know cannot be called. */
        if (nr == __NR_SCMP_ERROR || nr < 0)
            continue;
        if (add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0, NULL, denied[i], err) < 0)
            return -1;
    }
    /* clone with any namespace flag; clone3 passes its flags in memory the filter cannot
     * read, so it fails with ENOSYS and libc falls back to clone. */
    for (size_t i = 0; i < SBX_ARRAY_LEN(ns_clone_flags); i++) {
        struct scmp_arg_cmp c = SCMP_A0(SCMP_CMP_MASKED_EQ, ns_clone_flags[i], ns_clone_flags[i]);
        if (add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, &c, "clone", err) < 0)
            return -1;
    }
    if (add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0, NULL, "clone3", err) < 0)
        return -1;
    /* Packet sockets and raw IP sockets (CAP_NET_RAW is dropped too).  Raw netlink
     * sockets stay allowed: glibc's getaddrinfo and getifaddrs use them. */
    struct scmp_arg_cmp pkt = SCMP_A0(SCMP_CMP_EQ, AF_PACKET);
    if (add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1, &pkt, "socket", err) < 0)
        return -1;
    static const int ip_domains[] = {AF_INET, AF_INET6};
    for (size_t i = 0; i < SBX_ARRAY_LEN(ip_domains); i++) {
        struct scmp_arg_cmp raw[2] = {SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)ip_domains[i]),
                                      SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_RAW)};
        if (add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 2, raw, "socket", err) < 0)
            return -1;
    }
    /* Injecting input into a terminal another session reads from. */
    static const unsigned long tty_inject[] = {TIOCSTI, TIOCLINUX};
    for (size_t i = 0; i < SBX_ARRAY_LEN(tty_inject); i++) {
        struct scmp_arg_cmp c = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, tty_inject[i]);
        if (add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1, &c, "ioctl", err) < 0)
            return -1;
    }
    return 0;
}

/* libseccomp cannot say "personality(x) unless x is one of these" in a default-allow
 * filter (it refuses two comparisons on one argument), so that check is a few classic
 * BPF instructions put in front of the generated program.  Allowed: the values Docker
 * allows (PER_LINUX, PER_LINUX32, each with ADDR_NO_RANDOMIZE) and the 0xffffffff query;
 * anything else (READ_IMPLIES_EXEC, MMAP_PAGE_ZERO, ADDR_LIMIT_*, ...) fails with EPERM.
 * The kernel reads the argument as an unsigned int, so only its low 32 bits matter. */
static const struct sock_filter personality_prefix[] = {
    /* Every jump target 11 is the first instruction of the generated program. */
    /*  0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    /*  1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 9),
    /*  2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    /*  3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_personality, 0, 7),
    /*  4 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
    /*  5 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PER_LINUX, 5, 0),
    /*  6 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PER_LINUX32, 4, 0),
    /*  7 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PER_LINUX | ADDR_NO_RANDOMIZE, 3, 0),
    /*  8 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PER_LINUX32 | ADDR_NO_RANDOMIZE, 2, 0),
    /*  9 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xffffffffu, 1, 0),
    /* 10 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
};

/* The args[0] load above reads the low word, which is the first on little-endian. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__ || !defined(__x86_64__)
#error "the personality prefix is written for x86_64"
#endif

static int export_bpf(scmp_filter_ctx ctx, struct sock_fprog *prog, sbx_err_t *err)
{
    _cleanup_close_ int fd = memfd_create("sbx-seccomp", MFD_CLOEXEC);
    if (fd < 0)
        return sbx_error(err, errno, "memfd_create");
    int rc = seccomp_export_bpf(ctx, fd);
    if (rc < 0)
        return sbx_error(err, -rc, "seccomp_export_bpf");
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0 || size % sizeof(struct sock_filter) != 0)
        return sbx_error(err, EINVAL, "exported seccomp program has size %lld", (long long)size);
    size_t n_gen = (size_t)size / sizeof(struct sock_filter);
    size_t n_pre = SBX_ARRAY_LEN(personality_prefix);
    if (n_gen + n_pre > BPF_MAXINSNS)
        return sbx_error(err, E2BIG, "seccomp program too long");
    struct sock_filter *f = xcalloc(n_gen + n_pre, sizeof *f);
    memcpy(f, personality_prefix, sizeof personality_prefix);
    if (pread(fd, f + n_pre, (size_t)size, 0) != size) {
        free(f);
        return sbx_error(err, errno ? errno : EIO, "read back seccomp program");
    }
    prog->filter = f;
    prog->len = (unsigned short)(n_gen + n_pre);
    return 0;
}

int sbx_seccomp_build(struct sock_fprog *prog, sbx_err_t *err)
{
    prog->filter = NULL;
    prog->len = 0;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx)
        return sbx_error(err, ENOMEM, "seccomp_init");
    int rc = -1;
    /* Non-native ABIs (i386 via int 0x80, x32) are killed: the filter only speaks x86_64.
     * libseccomp's x86_64 program sends syscall numbers with the x32 bit to this action. */
    int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    if (r < 0) {
        sbx_error(err, -r, "seccomp bad-arch action");
        goto out;
    }
    /* The child sets no_new_privs itself; the exported program carries no attributes. */
    if (add_rules(ctx, err) < 0 || export_bpf(ctx, prog, err) < 0)
        goto out;
    rc = 0;
out:
    seccomp_release(ctx);
    return rc;
}

void sbx_seccomp_release(struct sock_fprog *prog)
{
    free(prog->filter);
    prog->filter = NULL;
    prog->len = 0;
}
