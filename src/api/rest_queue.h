/* The `/sandbox` dialect's job queue routes (rest-wire.md §7.2): submit, status, cancel and
 * the dead letter queue.  Their table, sbx_queue_table, is declared in api/server.h. */
#ifndef SBX_API_REST_QUEUE_H
#define SBX_API_REST_QUEUE_H

#include "core/queue.h"

/* Hands the routes the queue they serve (borrowed; NULL detaches).  Until a queue is
 * attached, the routes answer 503. */
void sbx_rest_queue_attach(sbx_queue_t *q);

#endif
