/* sandboxd: the daemon.  Start-up is a plan executed in order: settings, single-instance
 * lock, backend (which must run before any thread exists: it moves the daemon into its own
 * mount namespace), store, images, core (recovery), HTTP.  SIGTERM/SIGINT stop accepting,
 * stop every sandbox, finish in-flight requests and leave nothing behind.  SIGUSR2 is the
 * upgrade path: stop accepting and exit at once, leaving every sandbox running with its
 * record "running", so the next sandboxd on the same state directory re-adopts them. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/rest_queue.h"
#include "api/server.h"
#include "backend/backend.h"
#include "common/util.h"
#include "core/config.h"
#include "core/core.h"
#include "core/queue.h"
#include "image/image.h"
#include "store/store.h"

#define SANDBOXD_VERSION "0.1.0"

static int fail(const sbx_err_t *err)
{
    fprintf(stderr, "sandboxd: %s\n", err->msg);
    return 1;
}

/* Takes an exclusive lock on <state_dir>/sandboxd.lock for the life of the process. */
static int lock_state_dir(const char *state_dir, sbx_err_t *err)
{
    _cleanup_free_ char *path = xasprintf("%s/sandboxd.lock", state_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return sbx_error(err, errno, "open `%s`", path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        close(fd);
        return sbx_fail(err, SBX_E_CONFLICT, NULL, "another sandboxd is already using the state directory %s",
                        state_dir);
    }
    return fd; /* kept open on purpose */
}

static int build_image_main(int argc, char **argv, char **envp)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: sandboxd build-image NAME [--state-dir DIR] [--config FILE]\n\n"
               "Builds a preset image (python, node) from Debian packages into the state directory,\n"
               "so sandboxes can start from it even with auto_install: false.\n");
        return argc < 2 ? 2 : 0;
    }
    const char *name = argv[1];
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    argv[1] = argv[0];
    int rc = sbx_config_load(&cfg, argc - 1, argv + 1, envp, &err);
    if (rc < 0)
        return fail(&err);
    if (rc == 1)
        return 0;
    if (!sbx_image_is_preset(name)) {
        fprintf(stderr, "sandboxd: %s is not a preset image (python, node)\n", name);
        sbx_config_release(&cfg);
        return 2;
    }
    if (sbx_mkdir_p(cfg.state_dir, 0711, &err) < 0)
        return fail(&err);
    sbx_image_store_t *images = sbx_image_store_new(cfg.state_dir, &err);
    if (!images || sbx_image_build(images, name, &err) < 0)
        return fail(&err);
    sbx_image_status_t st;
    sbx_image_status(images, name, NULL, &st);
    printf("%s\n", st.rootfs);
    sbx_image_store_free(images);
    sbx_config_release(&cfg);
    return 0;
}

int main(int argc, char **argv, char **envp)
{
    if (argc > 1 && !strcmp(argv[1], "build-image"))
        return build_image_main(argc - 1, argv + 1, envp);
    if (argc > 1 && !strcmp(argv[1], "--version")) {
        printf("sandboxd %s\n", SANDBOXD_VERSION);
        return 0;
    }
    /* Released on every way out, so a leak checker sees the early exits clean too. */
    __attribute__((cleanup(sbx_config_release))) sbx_config_t cfg = {0};
    sbx_err_t err = SBX_ERR_INIT;
    int rc = sbx_config_load(&cfg, argc, argv, envp, &err);
    if (rc < 0)
        return fail(&err);
    if (rc == 1)
        return 0;
    if (cfg.debug)
        sbx_log_set_level(SBX_LOG_DEBUG);
    if (geteuid() != 0) {
        fprintf(stderr, "sandboxd: must run as root (it creates namespaces, cgroups and mounts)\n");
        return 1;
    }
    umask(022);
    if (sbx_mkdir_p(cfg.state_dir, 0711, &err) < 0 || sbx_mkdir_p(cfg.run_dir, 0700, &err) < 0)
        return fail(&err);
    if (lock_state_dir(cfg.state_dir, &err) < 0)
        return fail(&err);

    /* Signals are taken synchronously by the main thread; every thread created later
     * inherits this mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    const sbx_backend_t *be = &sbx_backend_ns;
    sbx_backend_config_t bcfg = {
        .state_dir = cfg.state_dir,
        .run_dir = cfg.run_dir,
        .agent_path = cfg.agent_path,
        .cgroup_parent = "sandboxd",
        .cgroup_favor_dynmods = cfg.cgroup_favor_dynmods,
    };
    if (be->init(&bcfg, &err) < 0)
        return fail(&err);
    _cleanup_free_ char *db_path = xasprintf("%s/sandboxd.db", cfg.state_dir);
    sbx_store_t *store = sbx_store_open(db_path, &err);
    if (!store)
        return fail(&err);
    sbx_image_store_t *images = sbx_image_store_new(cfg.state_dir, &err);
    if (!images)
        return fail(&err);
    sbx_core_t *core = sbx_core_new(&cfg, store, images, be, &err);
    if (!core || sbx_core_recover(core, &err) < 0 || sbx_core_start(core, &err) < 0)
        return fail(&err);
    /* The job queue: settles jobs a crash interrupted, then its workers run. */
    sbx_queue_t *queue = sbx_queue_new(core, store, &cfg, &err);
    if (!queue || sbx_queue_start(queue, &err) < 0) {
        sbx_core_shutdown(core);
        return fail(&err);
    }
    sbx_rest_queue_attach(queue);
    sbx_api_t *api = sbx_api_start(core, &err);
    if (!api) {
        sbx_queue_quiesce(queue);
        sbx_core_shutdown(core);
        sbx_queue_stop(queue);
        return fail(&err);
    }
    log_info("sandboxd %s listening on http://%s:%d (state %s, cgroups via %s backend)", SANDBOXD_VERSION,
             cfg.listen_host, cfg.listen_port, cfg.state_dir, be->name);

    int sig = 0;
    while (sigwait(&set, &sig) == 0 && sig == SIGHUP)
        log_info("SIGHUP ignored (restart sandboxd to apply new settings)");
    if (sig == SIGUSR2) {
        /* Detach: no sandbox is touched.  In-flight requests and streams are cut (clients
         * see the connection close), jobs a worker is running stay "running" in the store
         * and the next daemon settles them as a retry.  Nothing is freed: worker threads
         * may still be inside a call, so the process leaves with _exit, which for the
         * store is no different from a crash (SQLite's journal keeps it consistent). */
        log_info("received %s: exiting, sandboxes keep running for the next sandboxd", strsignal(sig));
        sbx_api_quiesce(api);
        sbx_queue_quiesce(queue);
        sbx_core_shutdown_mode(core, true);
        log_info("sandboxd stopped (sandboxes left running)");
        fflush(NULL);
        _exit(0);
    }
    log_info("received %s: shutting down", strsignal(sig));
    sbx_api_quiesce(api);
    /* Queue workers stop claiming; the jobs they run end when core shutdown stops their
     * sandboxes (and go back to pending), then the workers can be joined. */
    sbx_queue_quiesce(queue);
    sbx_core_shutdown(core);
    sbx_queue_stop(queue);
    sbx_api_stop(api);
    sbx_rest_queue_attach(NULL);
    sbx_queue_free(queue);
    sbx_core_free(core);
    sbx_image_store_free(images);
    sbx_store_close(store);
    sbx_config_release(&cfg);
    log_info("sandboxd stopped");
    return 0;
}
