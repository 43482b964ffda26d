/* Image routes shared by the /sandbox surface (rest_images.c) and /v1 (v1_images.c). */
#ifndef SBX_API_REST_IMAGES_H
#define SBX_API_REST_IMAGES_H

#include <jansson.h>
#include <stdbool.h>

#include "api/server.h"

/* True when a creating or running sandbox was created from pulled image `canon`
 * (by that reference, or through a custom_images name pointing at it). */
bool sbx_api_image_in_use(sbx_api_t *api, const char *canon);

/* Pulls `image` with the daemon's registry settings (blocking). */
int sbx_api_image_pull(sbx_api_t *api, const char *image, sbx_image_info_t *out, sbx_err_t *err);

/* Removes a pulled image found by `name` (reference, id or prefix); CONFLICT when in use
 * and not forced. */
int sbx_api_image_remove(sbx_api_t *api, const char *name, bool force, sbx_err_t *err);

#endif
