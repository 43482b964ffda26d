/* The sandbox registry, lifecycle and reaper.  See core.h for the state machine. */
#include "core/core.h"
#include "core/internal.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

/* Host ids of sandbox i are SBX_UID_BASE + i*65536 .. +65535: far above ordinary users
 * and the 100000.. ranges that /etc/subuid hands out by default. */
#define SBX_UID_BASE 1048576u
#define SBX_MAX_SLOTS 60000

static const char *const base_env[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
};

const sbx_config_t *sbx_core_config(sbx_core_t *core)
{
    return core->cfg;
}
sbx_image_store_t *sbx_core_images(sbx_core_t *core)
{
    return core->images;
}

static void live_free(live_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n_env; i++)
        free(l->env[i]);
    free(l->env);
    free(l->workdir);
    free(l->image);
    free(l);
}

live_t *core_find_live(sbx_core_t *core, const char *id)
{
    for (live_t *l = core->live; l; l = l->next)
        if (!strcmp(l->id, id))
            return l;
    return NULL;
}

bool core_deleted_locked(sbx_core_t *core, const char *id)
{
    live_t *l = core_find_live(core, id);
    return l && l->deleted;
}

static void live_unlink(sbx_core_t *core, live_t *target)
{
    for (live_t **pp = &core->live; *pp; pp = &(*pp)->next) {
        if (*pp == target) {
            *pp = target->next;
            return;
        }
    }
}

/* Sets one "K=V" entry in a list, replacing an existing key. */
static void env_set(char ***env, size_t *n, const char *kv)
{
    size_t klen = strcspn(kv, "=");
    for (size_t i = 0; i < *n; i++) {
        if (!strncmp((*env)[i], kv, klen) && (*env)[i][klen] == '=') {
            free((*env)[i]);
            (*env)[i] = xstrdup(kv);
            return;
        }
    }
    *env = xrealloc(*env, (*n + 2) * sizeof(char *));
    (*env)[(*n)++] = xstrdup(kv);
    (*env)[*n] = NULL;
}

/* The create-time environment of a record: the base, then the record's env object. */
static void live_load_env(live_t *l, const sbx_sandbox_rec_t *rec)
{
    for (size_t i = 0; i < SBX_ARRAY_LEN(base_env); i++)
        env_set(&l->env, &l->n_env, base_env[i]);
    json_t *obj = rec->env_json ? json_loads(rec->env_json, 0, NULL) : NULL;
    const char *k;
    json_t *v;
    if (json_is_object(obj)) {
        json_object_foreach(obj, k, v)
        {
            if (!json_is_string(v))
                continue;
            _cleanup_free_ char *kv = xasprintf("%s=%s", k, json_string_value(v));
            env_set(&l->env, &l->n_env, kv);
        }
    }
    json_decref(obj);
}

static live_t *live_from_rec(const sbx_sandbox_rec_t *rec)
{
    live_t *l = xcalloc(1, sizeof *l);
    snprintf(l->id, sizeof l->id, "%s", rec->id);
    l->rt.pid = (pid_t)rec->pid;
    l->rt.pid_start = (uint64_t)rec->pid_start;
    snprintf(l->rt.sock_path, sizeof l->rt.sock_path, "%s", rec->sock_path ? rec->sock_path : "");
    l->workdir = xstrdup(rec->workdir ? rec->workdir : "/");
    l->image = xstrdup(rec->image);
    l->pooled = rec->status && !strcmp(rec->status, "pooled");
    l->last_exec_at = l->touched_at = rec->last_exec_at;
    live_load_env(l, rec);
    return l;
}

void core_activity(sbx_core_t *core)
{
    __atomic_store_n(&core->activity_ms, sbx_mono_ms(), __ATOMIC_RELAXED);
}

void core_touch(sbx_core_t *core, const char *id)
{
    core_activity(core);
    int64_t now = sbx_now_ms();
    bool write = false;
    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, id);
    if (l) {
        l->last_exec_at = now;
        if (now - l->touched_at >= 1000 || now < l->touched_at) {
            l->touched_at = now;
            write = true;
        }
    }
    pthread_mutex_unlock(&core->mu);
    if (write)
        sbx_store_sandbox_touch(core->store, id, now, NULL);
}

/* The in-memory activity clock is ahead of the record's. */
static void overlay_activity(sbx_core_t *core, sbx_sandbox_rec_t *r)
{
    live_t *l = core_find_live(core, r->id);
    if (l && l->last_exec_at > r->last_exec_at)
        r->last_exec_at = l->last_exec_at;
}

char **core_merge_env(const live_t *l, char **extra, size_t n_extra)
{
    char **env = NULL;
    size_t n = 0;
    for (size_t i = 0; i < l->n_env; i++)
        env_set(&env, &n, l->env[i]);
    for (size_t i = 0; i < n_extra; i++)
        env_set(&env, &n, extra[i]);
    if (!env)
        env = xcalloc(1, sizeof(char *));
    return env;
}

void core_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

sbx_core_t *sbx_core_new(const sbx_config_t *cfg, sbx_store_t *store, sbx_image_store_t *images,
                         const sbx_backend_t *backend, sbx_err_t *err)
{
    sbx_core_t *core = xcalloc(1, sizeof *core);
    core->cfg = cfg;
    core->store = store;
    core->images = images;
    core->be = backend;
    core->started_ms = sbx_now_ms();
    pthread_mutex_init(&core->mu, NULL);
    if (core_execs_init(core, err) < 0) {
        free(core);
        return NULL;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&core->reaper_cv, &ca);
    pthread_cond_init(&core->pool_cv, &ca);
    pthread_condattr_destroy(&ca);
    return core;
}

/* Validates an image name: the reference's rule (no "..", no "$") plus a sane charset. */
static int check_image_name(const char *image, sbx_err_t *err)
{
    if (!image || !*image)
        return sbx_fail(err, SBX_E_INVALID, "S001", "image is required");
    if (strlen(image) > 255 || strstr(image, "..") || strchr(image, '$'))
        return sbx_fail(err, SBX_E_INVALID, "S001", "invalid image name: %s", image);
    for (const char *p = image; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == '\\' || *p == '"' || *p == '\'')
            return sbx_fail(err, SBX_E_INVALID, "S001", "invalid image name: %s", image);
    }
    return 0;
}

/* Builds the create-time env object from "K=V" entries. */
static int env_entries_to_json(char **env, size_t n, json_t *obj, sbx_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(env[i], '=');
        if (!eq || eq == env[i])
            return sbx_fail(err, SBX_E_INVALID, "S001", "env entry must be KEY=VALUE: '%s'", env[i]);
        _cleanup_free_ char *key = xstrndup(env[i], (size_t)(eq - env[i]));
        json_object_set_new(obj, key, json_string(eq + 1));
    }
    return 0;
}

static char *hostname_for(const char *id)
{
    char *h = xstrdup(id);
    for (char *p = h; *p; p++)
        if (*p == '_')
            *p = '-';
    return h;
}

/* Fills the record of a new sandbox from the request and the defaults. */
static int build_record(sbx_core_t *core, const sbx_create_req_t *req, sbx_sandbox_rec_t *rec, sbx_err_t *err)
{
    const sbx_config_t *cfg = core->cfg;
    double cpus = req->has_cpus ? req->cpus : cfg->default_cpus;
    int64_t mem = req->has_memory ? req->memory_mb : cfg->default_memory_mb;
    int64_t ttl = req->has_timeout ? req->timeout_secs : cfg->default_timeout_secs;
    int64_t idle = req->has_idle_timeout ? req->idle_timeout_secs : cfg->default_idle_timeout_secs;
    if (!(cpus > 0) || cpus > 1024)
        return sbx_fail(err, SBX_E_INVALID, "S001", "cpus must be greater than 0 (got %g)", cpus);
    if (mem < 16 || mem > 1048576)
        return sbx_fail(err, SBX_E_INVALID, "S001", "memory must be between 16 and 1048576 MiB (got %lld)",
                        (long long)mem);
    if (ttl < 1)
        return sbx_fail(err, SBX_E_INVALID, "S001", "timeout must be at least 1 second");
    if (idle < 0)
        return sbx_fail(err, SBX_E_INVALID, "S001", "idle_timeout_secs must not be negative");
    const sbx_image_cap_t *cap = sbx_config_image_cap(cfg, req->image);
    if (cap && cap->max_cpus > 0 && cpus > cap->max_cpus)
        return sbx_fail(err, SBX_E_INVALID, "S400", "cpus %g exceeds the cap of %g for image %s", cpus,
                        cap->max_cpus, req->image);
    if (cap && cap->max_memory_mb > 0 && mem > cap->max_memory_mb)
        return sbx_fail(err, SBX_E_INVALID, "S400",
                        "memory %lld MiB exceeds the cap of %lld MiB for image %s", (long long)mem,
                        (long long)cap->max_memory_mb, req->image);
    const char *workdir = req->workdir && *req->workdir ? req->workdir : cfg->workspace_dir;
    if (workdir[0] != '/' || strlen(workdir) > 1024)
        return sbx_fail(err, SBX_E_INVALID, "S001", "workdir must be an absolute path: %s", workdir);

    json_t *env = json_object();
    if (env_entries_to_json(req->env, req->n_env, env, err) < 0) {
        json_decref(env);
        return -1;
    }
    sbx_new_id("sbx", rec->id, sizeof rec->id);
    int64_t now = sbx_now_ms();
    rec->name = xstrdup(req->name && *req->name ? req->name : rec->id);
    rec->image = xstrdup(req->image);
    rec->status = xstrdup("creating");
    rec->created_at = now;
    rec->last_exec_at = now;
    rec->timeout_secs = ttl;
    rec->expires_at = now + ttl * 1000;
    rec->idle_timeout_secs = idle;
    rec->cpus = cpus;
    rec->memory_mb = mem;
    rec->disk_mb = cfg->default_disk_mb;
    rec->pids_max = cfg->default_pids_max;
    rec->network = req->network;
    rec->workdir = xstrdup(workdir);
    rec->env_json = json_dumps(env, JSON_COMPACT | JSON_SORT_KEYS);
    rec->metadata_json = xstrdup(req->metadata_json ? req->metadata_json : "{}");

    json_t *conf = json_object();
    json_object_set_new(conf, "image", json_string(req->image));
    if (req->name && *req->name)
        json_object_set_new(conf, "name", json_string(req->name));
    json_object_set_new(conf, "timeout", json_integer(ttl));
    json_object_set_new(conf, "memory", json_integer(mem));
    json_object_set_new(conf, "cpu", json_real(cpus));
    if (req->network)
        json_object_set_new(conf, "network", json_true());
    if (json_object_size(env))
        json_object_set(conf, "env", env);
    json_object_set_new(conf, "workdir", json_string(workdir));
    json_object_set_new(conf, "idle_timeout_secs", json_integer(idle));
    if (req->metadata_json)
        json_object_set_new(conf, "metadata", json_loads(req->metadata_json, 0, NULL));
    if (req->entrypoint_json)
        json_object_set_new(conf, "entrypoint", json_loads(req->entrypoint_json, 0, NULL));
    rec->config_json = json_dumps(conf, JSON_COMPACT);
    json_decref(conf);
    json_decref(env);
    return 0;
}

static void rec_set_str(char **field, const char *v)
{
    free(*field);
    *field = v ? xstrdup(v) : NULL;
}

/* An OCI image's config: its Env is the base of the create-time env (the request's
 * entries win) and its WorkingDir the workdir when the request names none.  Its User and
 * Entrypoint are not applied: commands run as root unless a request asks otherwise. */
static void apply_image_config(sbx_core_t *core, const sbx_create_req_t *req, sbx_sandbox_rec_t *rec,
                               const char *rootfs)
{
    sbx_image_config_t ic;
    if (sbx_image_config(core->images, rootfs, &ic, NULL) < 0)
        return;
    if (ic.workdir && !(req->workdir && *req->workdir))
        rec_set_str(&rec->workdir, ic.workdir);
    if (ic.n_env) {
        json_t *env = json_object();
        for (size_t i = 0; i < ic.n_env; i++) {
            const char *eq = strchr(ic.env[i], '=');
            _cleanup_free_ char *key = xstrndup(ic.env[i], (size_t)(eq - ic.env[i]));
            json_object_set_new(env, key, json_string(eq + 1));
        }
        json_t *mine = rec->env_json ? json_loads(rec->env_json, 0, NULL) : NULL;
        if (json_is_object(mine))
            json_object_update(env, mine);
        json_decref(mine);
        free(rec->env_json);
        rec->env_json = json_dumps(env, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(env);
    }
    sbx_image_config_release(&ic);
}

static int create_request(sbx_core_t *core, const sbx_create_req_t *req, sbx_sandbox_rec_t *out,
                          sbx_err_t *err);

/* Creates a sandbox for a request, or (pooled) a warm one the pool keeps for later. */
static int create_impl(sbx_core_t *core, const sbx_create_req_t *req, bool pooled, sbx_sandbox_rec_t *out,
                       sbx_err_t *err)
{
    const sbx_config_t *cfg = core->cfg;
    if (check_image_name(req->image, err) < 0)
        return -1;
    if (!sbx_config_image_allowed(cfg, req->image))
        return sbx_fail(err, SBX_E_FORBIDDEN, "S100", "image not allowed: %s", req->image);
    const sbx_custom_image_t *custom = sbx_config_custom_image(cfg, req->image);
    bool oci = !custom && !sbx_image_is_preset(req->image);
    if (oci && !sbx_oci_looks_like_ref(req->image))
        return sbx_fail(err, SBX_E_FORBIDDEN, "S100",
                        "image not allowed: %s is neither a preset (python, node), a custom_images entry "
                        "nor an OCI reference",
                        req->image);
    if (req->network)
        return sbx_fail(err, SBX_E_INVALID, "S001",
                        "network access is not available in this version of sandboxd; sandboxes have "
                        "loopback networking only (omit \"network\" or set it to false)");

    sbx_sandbox_rec_t rec = {0};
    _cleanup_free_ char *rootfs = NULL;
    _cleanup_free_ char *hostname = NULL;
    if (build_record(core, req, &rec, err) < 0) {
        sbx_sandbox_rec_release(&rec);
        return -1;
    }

    /* Capacity check and insert under one lock, so concurrent creates cannot overshoot. */
    pthread_mutex_lock(&core->mu);
    int64_t live = 0, slot = 0;
    int rc = 0;
    if (core->shutting_down)
        rc = sbx_fail(err, SBX_E_UNAVAILABLE, NULL, "sandboxd is shutting down");
    else if (sbx_store_sandbox_count_live(core->store, &live, err) < 0)
        rc = -1;
    else if (live + (pooled ? core_pool_count(core, NULL) : 0) >= cfg->max_concurrent_sandboxes)
        rc = sbx_fail(err, SBX_E_LIMIT, "S400", "maximum sandbox limit reached: %lld",
                      (long long)cfg->max_concurrent_sandboxes);
    else if (sbx_store_free_slot(core->store, &slot, err) < 0)
        rc = -1;
    else if (slot >= SBX_MAX_SLOTS)
        rc = sbx_fail(err, SBX_E_LIMIT, "S400", "no free host id range for another sandbox");
    else {
        rec.uid_slot = slot;
        if (pooled)
            rec_set_str(&rec.status, "pooled");
        rc = sbx_store_sandbox_insert(core->store, &rec, err);
    }
    pthread_mutex_unlock(&core->mu);
    if (rc < 0) {
        sbx_sandbox_rec_release(&rec);
        return -1;
    }

    sbx_registry_opts_t reg;
    sbx_config_registry_opts(cfg, &reg);
    sbx_image_source_t src = {req->image, req->image, &reg};
    if (custom) {
        src.name = custom->name;
        src.ref = custom->ref;
    }
    if (sbx_image_resolve(core->images, req->image, custom || oci ? &src : NULL, cfg->auto_install, &rootfs,
                          err) < 0)
        goto fail_record;
    apply_image_config(core, req, &rec, rootfs);

    hostname = hostname_for(rec.id);
    sbx_sandbox_spec_t spec = {
        .id = rec.id,
        .rootfs = rootfs,
        .hostname = hostname,
        .workdir = rec.workdir,
        .uid_base = SBX_UID_BASE + (uint32_t)rec.uid_slot * 65536u,
        .memory_mb = (uint64_t)rec.memory_mb,
        .cpus = rec.cpus,
        .pids_max = (uint32_t)rec.pids_max,
        .disk_mb = (uint64_t)rec.disk_mb,
        .network = rec.network,
    };
    sbx_sandbox_rt_t rt = {0};
    if (core->be->create(&spec, &rt, err) < 0) {
        if (err->kind == SBX_E_NONE || err->kind == SBX_E_INTERNAL)
            err->kind = SBX_E_INTERNAL;
        goto fail_record;
    }

    rec.pid = rt.pid;
    rec.pid_start = (int64_t)rt.pid_start;
    rec_set_str(&rec.sock_path, rt.sock_path);
    rec_set_str(&rec.status, pooled ? "pooled" : "running");
    int64_t now = sbx_now_ms();
    rec.last_exec_at = now;
    live_t *l = live_from_rec(&rec);
    pthread_mutex_lock(&core->mu);
    bool down = core->shutting_down;
    int urc = -1;
    if (!down)
        urc = pooled ? sbx_store_sandbox_update(core->store, &rec, err)
                     : sbx_store_sandbox_update_counting(core->store, &rec, "totalCreated", err);
    if (urc == 0) {
        l->next = core->live;
        core->live = l;
        l = NULL;
    } else if (down) {
        sbx_fail(err, SBX_E_UNAVAILABLE, NULL, "sandboxd is shutting down");
    }
    pthread_mutex_unlock(&core->mu);
    if (l) {
        live_free(l);
        sbx_err_t e2 = SBX_ERR_INIT;
        core->be->destroy(rec.id, &rt, &e2);
        goto fail_record;
    }
    if (pooled) {
        log_debug("sandbox %s warmed for the pool (image %s)", rec.id, rec.image);
    } else {
        log_info("sandbox %s created (image %s, %g cpus, %lld MiB, pid %d)", rec.id, rec.image, rec.cpus,
                 (long long)rec.memory_mb, (int)rt.pid);
    }
    *out = rec;
    return 0;

fail_record : {
    sbx_err_t e2 = SBX_ERR_INIT;
    sbx_store_sandbox_delete(core->store, rec.id, &e2);
    sbx_sandbox_rec_release(&rec);
    return -1;
}
}

int sbx_core_create(sbx_core_t *core, const sbx_create_req_t *req, sbx_sandbox_rec_t *out, sbx_err_t *err)
{
    core_activity(core);
    int rc = create_request(core, req, out, err);
    core_activity(core);
    return rc;
}

static int create_request(sbx_core_t *core, const sbx_create_req_t *req, sbx_sandbox_rec_t *out,
                          sbx_err_t *err)
{
    /* A warm sandbox from the pool when one fits; the checks of the normal path (allowlist,
     * caps, capacity) run there too. */
    if (core->cfg->pool_size > 0) {
        int r = core_pool_take(core, req, out, err);
        if (r != 0)
            return r > 0 ? 0 : -1;
    }
    return create_impl(core, req, false, out, err);
}

static int stop_live(sbx_core_t *core, const char *id, const char *status, const char *reason, bool remove,
                     sbx_err_t *err);

int core_pool_count(sbx_core_t *core, const char *image)
{
    int n = 0;
    for (live_t *l = core->live; l; l = l->next)
        n += l->pooled && !l->stopping && (!image || !strcmp(l->image, image));
    return n;
}

/* The create-time env of a warm sandbox (its image's) with the request's on top. */
static char *merged_env_json(const char *base, const char *over)
{
    json_t *b = base ? json_loads(base, 0, NULL) : NULL;
    json_t *o = over ? json_loads(over, 0, NULL) : NULL;
    if (!json_is_object(b)) {
        json_decref(b);
        b = json_object();
    }
    if (json_is_object(o))
        json_object_update(b, o);
    char *text = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(b);
    json_decref(o);
    return text;
}

/* Gives a claimed warm sandbox back to the pool (the request goes the normal way). */
static void unclaim(sbx_core_t *core, const char *id)
{
    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, id);
    if (l)
        l->pooled = true;
    pthread_mutex_unlock(&core->mu);
}

int core_pool_take(sbx_core_t *core, const sbx_create_req_t *req, sbx_sandbox_rec_t *out, sbx_err_t *err)
{
    const sbx_config_t *cfg = core->cfg;
    if (req->network || !req->image || !sbx_config_image_allowed(cfg, req->image))
        return 0;
    /* Claim a warm sandbox of the image whose working directory suits the request. */
    char id[40] = "";
    int64_t live = 0;
    pthread_mutex_lock(&core->mu);
    if (!core->shutting_down && sbx_store_sandbox_count_live(core->store, &live, NULL) == 0 &&
        live < cfg->max_concurrent_sandboxes) {
        for (live_t *l = core->live; l; l = l->next) {
            if (l->pooled && !l->stopping && !strcmp(l->image, req->image) &&
                (!req->workdir || !*req->workdir || !strcmp(req->workdir, l->workdir))) {
                l->pooled = false;
                snprintf(id, sizeof id, "%s", l->id);
                break;
            }
        }
    }
    pthread_cond_broadcast(&core->pool_cv); /* refill */
    pthread_mutex_unlock(&core->mu);
    if (!id[0])
        return 0;

    sbx_sandbox_rec_t fresh = {0}, rec = {0};
    if (build_record(core, req, &fresh, err) < 0) {
        sbx_sandbox_rec_release(&fresh);
        unclaim(core, id);
        return -1;
    }
    if (sbx_store_sandbox_get(core->store, id, &rec, err) < 0) {
        sbx_sandbox_rec_release(&fresh);
        return 0;
    }
    if (fresh.cpus != rec.cpus || fresh.memory_mb != rec.memory_mb) {
        sbx_sandbox_spec_t spec = {.id = id,
                                   .memory_mb = (uint64_t)fresh.memory_mb,
                                   .cpus = fresh.cpus,
                                   .pids_max = (uint32_t)rec.pids_max};
        sbx_err_t e2 = SBX_ERR_INIT;
        if (!core->be->update || core->be->update(id, &spec, &e2) < 0) {
            log_warn("sandbox %s: cannot resize a warm sandbox (%s); creating a new one", id, e2.msg);
            stop_live(core, id, NULL, "resize failed", true, &e2);
            sbx_sandbox_rec_release(&fresh);
            sbx_sandbox_rec_release(&rec);
            return 0;
        }
    }
    /* The request's record, under the warm sandbox's identity (id, uid range, process). */
    rec_set_str(&rec.name, req->name && *req->name ? req->name : rec.id);
    rec_set_str(&rec.status, "running");
    rec.created_at = fresh.created_at;
    rec.expires_at = fresh.expires_at;
    rec.last_exec_at = fresh.last_exec_at;
    rec.timeout_secs = fresh.timeout_secs;
    rec.idle_timeout_secs = fresh.idle_timeout_secs;
    rec.cpus = fresh.cpus;
    rec.memory_mb = fresh.memory_mb;
    char *env = merged_env_json(rec.env_json, fresh.env_json);
    free(rec.env_json);
    rec.env_json = env;
    rec_set_str(&rec.metadata_json, fresh.metadata_json);
    json_t *conf = json_loads(fresh.config_json, 0, NULL);
    json_object_set_new(conf, "workdir", json_string(rec.workdir));
    if (req->name && *req->name)
        json_object_set_new(conf, "name", json_string(req->name));
    free(rec.config_json);
    rec.config_json = json_dumps(conf, JSON_COMPACT);
    json_decref(conf);
    sbx_sandbox_rec_release(&fresh);

    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, id);
    int rc =
        l && !l->stopping ? sbx_store_sandbox_update_counting(core->store, &rec, "totalCreated", err) : -1;
    if (rc == 0) {
        l->last_exec_at = l->touched_at = rec.last_exec_at;
        for (size_t i = 0; i < l->n_env; i++)
            free(l->env[i]);
        free(l->env);
        l->env = NULL;
        l->n_env = 0;
        live_load_env(l, &rec);
    }
    pthread_mutex_unlock(&core->mu);
    if (rc < 0) {
        sbx_sandbox_rec_release(&rec);
        sbx_err_clear(err);
        return 0;
    }
    log_info("sandbox %s created from the warm pool (image %s, %g cpus, %lld MiB)", rec.id, rec.image,
             rec.cpus, (long long)rec.memory_mb);
    *out = rec;
    return 1;
}

int core_create_pooled(sbx_core_t *core, const char *image, sbx_err_t *err)
{
    sbx_create_req_t req = {.image = image};
    sbx_sandbox_rec_t rec = {0};
    if (create_impl(core, &req, true, &rec, err) < 0)
        return -1;
    sbx_sandbox_rec_release(&rec);
    return 0;
}

/* Warm sandboxes in the pool belong to nobody yet, and deleted ones whose teardown is still
 * running belong to nobody any more: no surface sees either. */
static bool is_pooled(const sbx_sandbox_rec_t *r)
{
    return r->status && (!strcmp(r->status, "pooled") || !strcmp(r->status, "deleting"));
}

int sbx_core_get(sbx_core_t *core, const char *id, sbx_sandbox_rec_t *out, sbx_err_t *err)
{
    if (sbx_store_sandbox_get(core->store, id, out, err) < 0)
        return -1;
    if (is_pooled(out)) {
        sbx_sandbox_rec_release(out);
        return sbx_fail(err, SBX_E_NOT_FOUND, "S002", "sandbox not found: %s", id);
    }
    pthread_mutex_lock(&core->mu);
    overlay_activity(core, out);
    pthread_mutex_unlock(&core->mu);
    return 0;
}

int sbx_core_list(sbx_core_t *core, sbx_sandbox_rec_t **out, size_t *n, sbx_err_t *err)
{
    if (sbx_store_sandbox_list(core->store, out, n, err) < 0)
        return -1;
    size_t k = 0;
    pthread_mutex_lock(&core->mu);
    for (size_t i = 0; i < *n; i++) {
        if (is_pooled(&(*out)[i])) {
            sbx_sandbox_rec_release(&(*out)[i]);
        } else {
            overlay_activity(core, &(*out)[i]);
            (*out)[k++] = (*out)[i];
        }
    }
    pthread_mutex_unlock(&core->mu);
    *n = k;
    return 0;
}

int sbx_core_execs_in_flight(sbx_core_t *core, const char *id)
{
    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, id);
    int n = l ? l->inflight : 0;
    pthread_mutex_unlock(&core->mu);
    return n;
}

/* Tears a live sandbox down and records the final status (or removes the record when
 * `remove` is set).  Returns NOT_FOUND if it is not live. */
static int stop_live(sbx_core_t *core, const char *id, const char *status, const char *reason, bool remove,
                     sbx_err_t *err)
{
    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, id);
    if (!l || l->stopping) {
        pthread_mutex_unlock(&core->mu);
        return sbx_fail(err, SBX_E_NOT_FOUND, "S002", "sandbox not found: %s", id);
    }
    l->stopping = true;
    sbx_sandbox_rt_t rt = l->rt;
    pthread_mutex_unlock(&core->mu);

    sbx_err_t derr = SBX_ERR_INIT;
    if (core->be->destroy(id, &rt, &derr) < 0)
        log_error("sandbox %s: cleanup failed: %s", id, derr.msg);

    pthread_mutex_lock(&core->mu);
    live_unlink(core, l);
    pthread_mutex_unlock(&core->mu);
    live_free(l);

    int rc;
    if (remove) {
        rc = sbx_store_sandbox_delete(core->store, id, err);
        core_execs_forget_sandbox(core, id);
    } else {
        sbx_sandbox_rec_t rec = {0};
        rc = sbx_store_sandbox_get(core->store, id, &rec, err);
        if (rc == 0) {
            rec_set_str(&rec.status, status);
            rec_set_str(&rec.stop_reason, reason);
            rec.stopped_at = sbx_now_ms();
            rec.pid = 0;
            rec.pid_start = 0;
            rc = sbx_store_sandbox_update(core->store, &rec, err);
        }
        sbx_sandbox_rec_release(&rec);
    }
    log_info("sandbox %s stopped (%s)", id, reason);
    return rc;
}

/* At most this many deleted sandboxes are torn down in the background at once; past it a
 * delete does its teardown itself, so a create/delete loop cannot pile work up. */
#define MAX_TEARDOWNS 8

typedef struct {
    sbx_core_t *core;
    live_t *l;
} teardown_t;

static void *teardown_main(void *arg)
{
    teardown_t *t = arg;
    sbx_core_t *core = t->core;
    live_t *l = t->l;
    free(t);
    sbx_err_t err = SBX_ERR_INIT;
    if (core->be->destroy(l->id, &l->rt, &err) < 0)
        log_error("sandbox %s: cleanup failed: %s", l->id, err.msg);
    core_execs_forget_sandbox(core, l->id);
    /* The record (and with it the uid range) is released only now, once nothing of the
     * sandbox is left on the host. */
    sbx_err_clear(&err);
    if (sbx_store_sandbox_delete(core->store, l->id, &err) < 0)
        log_error("sandbox %s: %s", l->id, err.msg);
    pthread_mutex_lock(&core->mu);
    live_unlink(core, l);
    core->teardowns--;
    pthread_cond_broadcast(&core->reaper_cv);
    pthread_mutex_unlock(&core->mu);
    live_free(l);
    return NULL;
}

/* Deletes a live sandbox with its teardown off the request path: its processes are killed
 * and its record marked "deleting" (hidden everywhere, its uid range still reserved)
 * before this returns; unmounting, removing the cgroups and the directory, and dropping
 * the record happen on a background thread.  Returns 1 when it handled the sandbox, 0 when
 * the caller should tear it down in place, -1 on error. */
static int delete_live(sbx_core_t *core, sbx_sandbox_rec_t *rec, sbx_err_t *err)
{
    const char *id = rec->id;
    pthread_mutex_lock(&core->mu);
    live_t *l = core_find_live(core, id);
    if (!l || l->stopping || core->shutting_down || core->teardowns >= MAX_TEARDOWNS || !core->be->kill) {
        pthread_mutex_unlock(&core->mu);
        return 0;
    }
    l->stopping = true;
    l->deleted = true;
    core->teardowns++;
    pthread_mutex_unlock(&core->mu);

    core->be->kill(&l->rt);
    rec_set_str(&rec->status, "deleting");
    rec_set_str(&rec->stop_reason, "deleted");
    rec->stopped_at = sbx_now_ms();
    int rc = sbx_store_sandbox_update_counting(core->store, rec, "totalKilled", err);
    if (rc < 0)
        log_warn("sandbox %s: cannot mark it deleted (%s); tearing it down anyway", id, err->msg);

    teardown_t *t = xcalloc(1, sizeof *t);
    t->core = core;
    t->l = l;
    if (sbx_thread_detached(teardown_main, t) != 0)
        teardown_main(t); /* no thread: tear down in place */
    log_info("sandbox %s deleted", id);
    return rc < 0 ? -1 : 1;
}

static int delete_request(sbx_core_t *core, const char *id, sbx_err_t *err);

int sbx_core_delete(sbx_core_t *core, const char *id, sbx_err_t *err)
{
    core_activity(core);
    int rc = delete_request(core, id, err);
    core_activity(core);
    return rc;
}

static int delete_request(sbx_core_t *core, const char *id, sbx_err_t *err)
{
    sbx_sandbox_rec_t rec = {0};
    if (sbx_core_get(core, id, &rec, err) < 0)
        return -1;
    bool creating = rec.status && !strcmp(rec.status, "creating");
    int d = creating ? 0 : delete_live(core, &rec, err);
    sbx_sandbox_rec_release(&rec);
    if (creating)
        return sbx_fail(err, SBX_E_CONFLICT, "S004",
                        "sandbox %s is still being created; delete it once it runs", id);
    if (d != 0)
        return d < 0 ? -1 : 0;
    sbx_err_t e = SBX_ERR_INIT;
    if (stop_live(core, id, NULL, "deleted", true, &e) == 0) {
        sbx_store_counter_add(core->store, "totalKilled", 1, NULL);
        return 0;
    }
    if (e.kind != SBX_E_NOT_FOUND) {
        *err = e;
        return -1;
    }
    /* Not live: a stopped record, or one a concurrent delete is tearing down. */
    if (sbx_store_sandbox_delete(core->store, id, err) < 0)
        return -1;
    core_execs_forget_sandbox(core, id);
    return 0;
}

typedef struct {
    sbx_core_t *core;
    char id[40];
} async_delete_t;

static void *async_delete_main(void *arg)
{
    async_delete_t *job = arg;
    sbx_core_t *core = job->core;
    sbx_err_t err = SBX_ERR_INIT;
    if (sbx_core_delete(core, job->id, &err) < 0 && err.kind != SBX_E_NOT_FOUND)
        log_error("sandbox %s: background stop failed: %s", job->id, err.msg);
    free(job);
    pthread_mutex_lock(&core->mu);
    core->async_deletes--;
    pthread_cond_broadcast(&core->reaper_cv);
    pthread_mutex_unlock(&core->mu);
    return NULL;
}

int sbx_core_delete_async(sbx_core_t *core, const char *id, sbx_err_t *err)
{
    sbx_sandbox_rec_t rec = {0};
    if (sbx_store_sandbox_get(core->store, id, &rec, err) < 0)
        return -1;
    sbx_sandbox_rec_release(&rec);
    async_delete_t *job = xcalloc(1, sizeof *job);
    job->core = core;
    snprintf(job->id, sizeof job->id, "%s", id);
    pthread_mutex_lock(&core->mu);
    if (core->shutting_down) {
        pthread_mutex_unlock(&core->mu);
        free(job);
        return sbx_fail(err, SBX_E_UNAVAILABLE, NULL, "sandboxd is shutting down");
    }
    core->async_deletes++;
    pthread_mutex_unlock(&core->mu);
    if (sbx_thread_detached(async_delete_main, job) != 0) {
        pthread_mutex_lock(&core->mu);
        core->async_deletes--;
        pthread_mutex_unlock(&core->mu);
        free(job);
        return sbx_core_delete(core, id, err); /* no thread: stop in place */
    }
    return 0;
}

/* One pass of the reaper. */
static void reap_once(sbx_core_t *core)
{
    sbx_sandbox_rec_t *recs = NULL;
    size_t n = 0;
    sbx_err_t err = SBX_ERR_INIT;
    if (sbx_store_sandbox_list(core->store, &recs, &n, &err) < 0) {
        log_error("reaper: %s", err.msg);
        return;
    }
    int64_t now = sbx_now_ms();
    for (size_t i = 0; i < n && !core->shutting_down; i++) {
        sbx_sandbox_rec_t *r = &recs[i];
        sbx_err_clear(&err);
        if (!strcmp(r->status, "running")) {
            pthread_mutex_lock(&core->mu);
            live_t *l = core_find_live(core, r->id);
            bool known = l && !l->stopping;
            sbx_sandbox_rt_t rt = l ? l->rt : (sbx_sandbox_rt_t){0};
            int inflight = l ? l->inflight : 0;
            overlay_activity(core, r);
            pthread_mutex_unlock(&core->mu);
            if (!known)
                continue;
            if (!core->be->alive(&rt)) {
                stop_live(core, r->id, "failed", "the sandbox's agent exited", false, &err);
            } else if (r->expires_at && r->expires_at <= now) {
                if (stop_live(core, r->id, "expired", "timeout (TTL) reached", false, &err) == 0)
                    sbx_store_counter_add(core->store, "totalExpired", 1, NULL);
            } else if (r->idle_timeout_secs > 0 && inflight == 0 &&
                       now - r->last_exec_at > r->idle_timeout_secs * 1000) {
                if (stop_live(core, r->id, "stopped", "idle timeout reached", false, &err) == 0)
                    sbx_store_counter_add(core->store, "totalExpired", 1, NULL);
            }
        } else if (!strcmp(r->status, "pooled")) {
            pthread_mutex_lock(&core->mu);
            live_t *l = core_find_live(core, r->id);
            bool dead = l && l->pooled && !l->stopping && !core->be->alive(&l->rt);
            pthread_mutex_unlock(&core->mu);
            if (dead)
                stop_live(core, r->id, NULL, "a warm sandbox's agent exited", true, &err);
        } else if (strcmp(r->status, "creating") != 0 && strcmp(r->status, "deleting") != 0) {
            if (now - r->stopped_at > core->cfg->stopped_retention_secs * 1000 &&
                sbx_store_sandbox_delete(core->store, r->id, &err) == 0)
                core_execs_forget_sandbox(core, r->id);
        }
    }
    sbx_sandbox_recs_free(recs, n);
}

static void *reaper_main(void *arg)
{
    sbx_core_t *core = arg;
    pthread_mutex_lock(&core->mu);
    while (!core->shutting_down) {
        int64_t secs = core->cfg->reaper_interval_secs > 0 ? core->cfg->reaper_interval_secs : 10;
        struct timespec ts = sbx_timespec_in(CLOCK_MONOTONIC, secs * 1000);
        pthread_cond_timedwait(&core->reaper_cv, &core->mu, &ts);
        if (core->shutting_down)
            break;
        pthread_mutex_unlock(&core->mu);
        reap_once(core);
        pthread_mutex_lock(&core->mu);
    }
    pthread_mutex_unlock(&core->mu);
    return NULL;
}

/* Marks a sandbox whose agent cannot be used any more as failed (called by exec). */
void core_mark_failed(sbx_core_t *core, const char *id, const char *reason)
{
    sbx_err_t err = SBX_ERR_INIT;
    stop_live(core, id, "failed", reason, false, &err);
}

int sbx_core_recover(sbx_core_t *core, sbx_err_t *err)
{
    sbx_sandbox_rec_t *recs = NULL;
    size_t n = 0;
    core_execs_recover(core);
    if (sbx_store_sandbox_list(core->store, &recs, &n, err) < 0)
        return -1;
    int adopted = 0, cleaned = 0;
    for (size_t i = 0; i < n; i++) {
        sbx_sandbox_rec_t *r = &recs[i];
        sbx_err_t e = SBX_ERR_INIT;
        if (!strcmp(r->status, "running")) {
            live_t *l = live_from_rec(r);
            if (core->be->alive(&l->rt)) {
                l->next = core->live;
                core->live = l;
                adopted++;
                continue;
            }
            core->be->destroy(r->id, &l->rt, &e);
            live_free(l);
            rec_set_str(&r->status, "failed");
            rec_set_str(&r->stop_reason, "the sandbox was not running when sandboxd restarted");
            r->stopped_at = sbx_now_ms();
            r->pid = 0;
            sbx_store_sandbox_update(core->store, r, &e);
            cleaned++;
        } else if (!strcmp(r->status, "creating") || !strcmp(r->status, "pooled") ||
                   !strcmp(r->status, "deleting")) {
            /* An interrupted create, a warm sandbox nobody owns (the pool warms anew), or a
             * deleted one whose teardown the crash cut short. */
            core->be->destroy(r->id, NULL, &e);
            sbx_store_sandbox_delete(core->store, r->id, &e);
            cleaned++;
        } else {
            core->be->destroy(r->id, NULL, &e);
        }
    }
    sbx_sandbox_recs_free(recs, n);

    char **ids = NULL;
    int nl = core->be->list_leftovers ? core->be->list_leftovers(&ids, err) : 0;
    for (int i = 0; i < nl; i++) {
        sbx_err_t e = SBX_ERR_INIT;
        sbx_sandbox_rec_t r = {0};
        if (sbx_store_sandbox_get(core->store, ids[i], &r, &e) < 0) {
            core->be->destroy(ids[i], NULL, &e);
            cleaned++;
        }
        sbx_sandbox_rec_release(&r);
        free(ids[i]);
    }
    free(ids);
    if (adopted || cleaned)
        log_info("recovery: %d sandbox(es) re-adopted, %d cleaned up", adopted, cleaned);
    return 0;
}

int sbx_core_start(sbx_core_t *core, sbx_err_t *err)
{
    int rc = pthread_create(&core->reaper, NULL, reaper_main, core);
    if (rc)
        return sbx_error(err, rc, "start reaper thread");
    core->reaper_started = true;
    return core_pool_start(core, err);
}

void sbx_core_shutdown(sbx_core_t *core)
{
    sbx_core_shutdown_mode(core, false);
}

void sbx_core_shutdown_mode(sbx_core_t *core, bool keep_sandboxes)
{
    pthread_mutex_lock(&core->mu);
    core->shutting_down = true;
    pthread_cond_broadcast(&core->reaper_cv);
    pthread_mutex_unlock(&core->mu);
    core_pool_stop(core);
    if (core->reaper_started) {
        pthread_join(core->reaper, NULL);
        core->reaper_started = false;
    }
    pthread_mutex_lock(&core->mu);
    while (core->async_deletes > 0 || core->teardowns > 0)
        pthread_cond_wait(&core->reaper_cv, &core->mu);
    pthread_mutex_unlock(&core->mu);
    if (keep_sandboxes) {
        pthread_mutex_lock(&core->mu);
        int n = 0;
        for (live_t *l = core->live; l; l = l->next)
            n += !l->stopping;
        pthread_mutex_unlock(&core->mu);
        log_info("%d sandbox(es) left running", n);
        return;
    }
    for (;;) {
        pthread_mutex_lock(&core->mu);
        live_t *l = core->live;
        while (l && l->stopping)
            l = l->next;
        char id[40] = "";
        bool pooled = l && l->pooled;
        if (l)
            snprintf(id, sizeof id, "%s", l->id);
        pthread_mutex_unlock(&core->mu);
        if (!id[0])
            break;
        sbx_err_t err = SBX_ERR_INIT;
        stop_live(core, id, "stopped", "sandboxd shut down", pooled, &err);
    }
}

void sbx_core_free(sbx_core_t *core)
{
    if (!core)
        return;
    while (core->live) {
        live_t *l = core->live;
        core->live = l->next;
        live_free(l);
    }
    core_execs_release(core);
    pthread_mutex_destroy(&core->mu);
    pthread_cond_destroy(&core->reaper_cv);
    pthread_cond_destroy(&core->pool_cv);
    free(core);
}

int sbx_core_metrics(sbx_core_t *core, sbx_core_metrics_t *m, sbx_err_t *err)
{
    memset(m, 0, sizeof *m);
    if (sbx_store_sandbox_count_live(core->store, &m->active, err) < 0)
        return -1;
    sbx_store_counter_get(core->store, "totalCreated", &m->total_created, NULL);
    sbx_store_counter_get(core->store, "totalKilled", &m->total_killed, NULL);
    sbx_store_counter_get(core->store, "totalExpired", &m->total_expired, NULL);
    m->uptime_secs = (sbx_now_ms() - core->started_ms) / 1000;
    return 0;
}
