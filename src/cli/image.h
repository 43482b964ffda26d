/* `sandbox image pull|ls|inspect|rm|gc`: manage the daemon's OCI image cache. */
#ifndef SBX_CLI_IMAGE_H
#define SBX_CLI_IMAGE_H

#include "cli/cli.h"

extern const char sbx_image_usage[];
int sbx_cmd_image(sbx_cli_t *cli, int argc, char **argv);

#endif
