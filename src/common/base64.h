/* Standard base64 (RFC 4648) with padding. */
#ifndef SBX_COMMON_BASE64_H
#define SBX_COMMON_BASE64_H

#include <stddef.h>

/* Encodes `len` bytes; returns a NUL-terminated heap string. */
char *sbx_base64_encode(const void *data, size_t len);
/* Decodes; whitespace is ignored, padding optional.  Returns a heap buffer (NUL-terminated
 * for convenience) and its length in *out_len, or NULL if the input is not base64. */
unsigned char *sbx_base64_decode(const char *s, size_t slen, size_t *out_len);

#endif
