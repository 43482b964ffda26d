/* The warm pool: a thread keeps `pool_size` sandboxes started for each pooled image, so a
 * create can be answered by handing one over (sandbox.c, core_pool_take) instead of
 * building namespaces, mounts and cgroups on the request path.  Only images that are
 * already installed are warmed: the pool never triggers a build or a pull by itself. */
#include "core/core.h"
#include "core/internal.h"

#include <string.h>
#include <time.h>

#include "common/util.h"
#include "image/image.h"

static bool image_ready(sbx_core_t *core, const char *image)
{
    const sbx_config_t *cfg = core->cfg;
    if (!sbx_config_image_allowed(cfg, image))
        return false;
    const sbx_custom_image_t *custom = sbx_config_custom_image(cfg, image);
    bool oci = !custom && !sbx_image_is_preset(image);
    sbx_registry_opts_t reg;
    sbx_config_registry_opts(cfg, &reg);
    sbx_image_source_t src = {image, image, &reg};
    if (custom) {
        src.name = custom->name;
        src.ref = custom->ref;
    }
    sbx_image_status_t st;
    sbx_image_status(core->images, image, custom || oci ? &src : NULL, &st);
    return st.state == SBX_IMAGE_READY;
}

/* Starting a sandbox costs about as much CPU as a create on the request path, so a refill
 * waits for a moment without requests (POOL_QUIET_MS) instead of competing with them, but
 * never longer than POOL_MAX_DEFER_MS, so a steady stream of requests cannot starve it. */
#define POOL_QUIET_MS 10
#define POOL_MAX_DEFER_MS 250

/* Called and returns with core->mu held. */
static void wait_quiet(sbx_core_t *core)
{
    int64_t start = sbx_mono_ms();
    while (!core->shutting_down) {
        int64_t now = sbx_mono_ms();
        int64_t quiet = now - __atomic_load_n(&core->activity_ms, __ATOMIC_RELAXED);
        if (quiet >= POOL_QUIET_MS || now - start >= POOL_MAX_DEFER_MS)
            return;
        struct timespec ts = sbx_timespec_in(CLOCK_MONOTONIC, POOL_QUIET_MS - quiet);
        pthread_cond_timedwait(&core->pool_cv, &core->mu, &ts);
    }
}

/* Warms sandboxes of one image up to the pool size; false after a failure. */
static bool fill(sbx_core_t *core, const char *image)
{
    for (;;) {
        pthread_mutex_lock(&core->mu);
        if (core_pool_count(core, image) < core->cfg->pool_size)
            wait_quiet(core);
        bool enough = core->shutting_down || core_pool_count(core, image) >= core->cfg->pool_size;
        pthread_mutex_unlock(&core->mu);
        if (enough)
            return true;
        sbx_err_t err = SBX_ERR_INIT;
        if (core_create_pooled(core, image, &err) < 0) {
            if (err.kind != SBX_E_LIMIT)
                log_warn("warm pool: cannot start a sandbox of %s: %s", image, err.msg);
            return false;
        }
    }
}

static void *pool_main(void *arg)
{
    sbx_core_t *core = arg;
    const sbx_config_t *cfg = core->cfg;
    char **images = cfg->pool_images_set ? cfg->pool_images : cfg->image_allowlist;
    size_t n = cfg->pool_images_set ? cfg->n_pool_images : cfg->n_image_allowlist;
    pthread_mutex_lock(&core->mu);
    while (!core->shutting_down) {
        pthread_mutex_unlock(&core->mu);
        bool ok = true;
        for (size_t i = 0; i < n; i++)
            if (image_ready(core, images[i]))
                ok = fill(core, images[i]) && ok;
        pthread_mutex_lock(&core->mu);
        if (core->shutting_down)
            break;
        /* Woken at once when a create takes a warm sandbox; otherwise a slow tick notices
         * images installed since (and retries after a failure without spinning). */
        struct timespec ts = sbx_timespec_in(CLOCK_MONOTONIC, ok ? 1000 : 5000);
        pthread_cond_timedwait(&core->pool_cv, &core->mu, &ts);
    }
    pthread_mutex_unlock(&core->mu);
    return NULL;
}

int core_pool_start(sbx_core_t *core, sbx_err_t *err)
{
    if (core->cfg->pool_size <= 0)
        return 0;
    int rc = pthread_create(&core->pool_thread, NULL, pool_main, core);
    if (rc)
        return sbx_error(err, rc, "start the warm pool");
    core->pool_started = true;
    return 0;
}

void core_pool_stop(sbx_core_t *core)
{
    pthread_mutex_lock(&core->mu);
    pthread_cond_broadcast(&core->pool_cv);
    pthread_mutex_unlock(&core->mu);
    if (core->pool_started) {
        pthread_join(core->pool_thread, NULL);
        core->pool_started = false;
    }
}

int sbx_core_pool_status(sbx_core_t *core, int *total, json_t **by_image)
{
    json_t *j = json_object();
    pthread_mutex_lock(&core->mu);
    *total = core_pool_count(core, NULL);
    for (live_t *l = core->live; l; l = l->next) {
        if (!l->pooled || l->stopping)
            continue;
        json_t *v = json_object_get(j, l->image);
        json_object_set_new(j, l->image, json_integer(v ? json_integer_value(v) + 1 : 1));
    }
    pthread_mutex_unlock(&core->mu);
    *by_image = j;
    return 0;
}
