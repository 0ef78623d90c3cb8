/* SPDX-License-Identifier: Apache-2.0 */
/*
 * containerd.services.snapshots.v1.Snapshots over gRPC on a unix socket.
 *
 * HTTP/2 and gRPC's framing are gRPC's C core; the messages are protobuf-c
 * code generated from containerd's own .proto files.  The main thread
 * takes new calls from one completion queue; each call is then served on
 * its own thread with its own (pluck) queue, so that a slow operation (a
 * remove, a publish) or a client that stops reading holds up nobody else.
 * At most MAX_WORKERS calls run at once; more wait in gRPC's queue.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "grpc_server.h"
#include "util.h"
#include "snapshots.pb-c.h"

#define MAX_WORKERS  64
#define MAX_MESSAGE  (16 << 20)
#define LIST_BATCH   100
#define SERVICE	     "/containerd.services.snapshots.v1.Snapshots/"
#define SHUTDOWN_TAG ((void *)1)

typedef struct server {
	snap_service *svc;
	grpc_server *grpc;
	grpc_completion_queue *cq;
	sem_t slots;
	atomic_int running;
	pthread_mutex_t lock;
	pthread_cond_t idle;
	snap_log_fn log;
	void *log_data;
	unsigned stall_seconds;
} server;

typedef struct call {
	server *srv;
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array md;
	grpc_completion_queue *cq; /* pluck: this call's own */
} call;

/* The layout every map<string,string> entry message has. */
typedef struct kv_entry {
	ProtobufCMessage base;
	char *key;
	char *value;
} kv_entry;

static void slog(server *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void slog(server *s, int level, const char *fmt, ...)
{
	if (!s->log)
		return;
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	s->log(level, buf, s->log_data);
}

/* Runs one batch and waits for it, at most stall_seconds: a client that
 * stops reading (or sending) has its call cancelled, so that stalled
 * clients cannot hold every worker. */
static bool batch(call *c, const grpc_op *ops, size_t n)
{
	if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK)
		return false;
	gpr_timespec deadline =
		gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(c->srv->stall_seconds, GPR_TIMESPAN));
	grpc_event ev = grpc_completion_queue_pluck(c->cq, c, deadline, NULL);
	if (ev.type == GRPC_QUEUE_TIMEOUT) {
		slog(c->srv, 1, "a client neither read nor sent for %u s: its call is cancelled",
		     c->srv->stall_seconds);
		grpc_call_cancel(c->call, NULL);
		ev = grpc_completion_queue_pluck(c->cq, c, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		return false;
	}
	return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static bool send_message(call *c, const ProtobufCMessage *msg)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	grpc_slice slice = grpc_slice_malloc(len);
	protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
	grpc_slice_unref(slice);
	grpc_op op = {.op = GRPC_OP_SEND_MESSAGE};
	op.data.send_message.send_message = bb;
	bool ok = batch(c, &op, 1);
	grpc_byte_buffer_destroy(bb);
	return ok;
}

static void send_status(call *c, int code, const char *message)
{
	int cancelled = 0;
	grpc_slice details = grpc_slice_from_copied_string(message ? message : "");
	grpc_op ops[2] = {{.op = GRPC_OP_SEND_STATUS_FROM_SERVER}, {.op = GRPC_OP_RECV_CLOSE_ON_SERVER}};
	ops[0].data.send_status_from_server.status = (grpc_status_code)code;
	ops[0].data.send_status_from_server.status_details = &details;
	ops[1].data.recv_close_on_server.cancelled = &cancelled;
	batch(c, ops, 2);
	grpc_slice_unref(details);
}

/* ---- conversions ---- */

static int labels_in(size_t n, void *const *entries, strata_kv_list *ret)
{
	*ret = (strata_kv_list){0};
	if (n == 0)
		return 0;
	ret->items = calloc(n, sizeof(strata_kv));
	if (!ret->items)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const kv_entry *e = entries[i];
		ret->items[i].key = strdup(e->key ? e->key : "");
		ret->items[i].value = strdup(e->value ? e->value : "");
		ret->n++;
		if (!ret->items[i].key || !ret->items[i].value)
			return -ENOMEM;
	}
	return 0;
}

/* An Info message pointing into `info` (valid while info is); the
 * arrays are the caller's to free (info_out_free). */
typedef struct info_out {
	Containerd__Services__Snapshots__V1__Info msg;
	Google__Protobuf__Timestamp created, updated;
	Containerd__Services__Snapshots__V1__Info__LabelsEntry *entries;
	Containerd__Services__Snapshots__V1__Info__LabelsEntry **ptrs;
} info_out;

static int info_out_init(info_out *o, const snap_info *info)
{
	*o = (info_out){0};
	containerd__services__snapshots__v1__info__init(&o->msg);
	google__protobuf__timestamp__init(&o->created);
	google__protobuf__timestamp__init(&o->updated);
	o->msg.name = info->key;
	o->msg.parent = info->parent ? info->parent : (char *)"";
	o->msg.kind = (Containerd__Services__Snapshots__V1__Kind)info->kind;
	o->created.seconds = info->created_ns / 1000000000;
	o->created.nanos = (int32_t)(info->created_ns % 1000000000);
	o->updated.seconds = info->updated_ns / 1000000000;
	o->updated.nanos = (int32_t)(info->updated_ns % 1000000000);
	o->msg.created_at = &o->created;
	o->msg.updated_at = &o->updated;
	size_t n = info->labels.n;
	if (n) {
		o->entries = calloc(n, sizeof(*o->entries));
		o->ptrs = calloc(n, sizeof(*o->ptrs));
		if (!o->entries || !o->ptrs)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			containerd__services__snapshots__v1__info__labels_entry__init(&o->entries[i]);
			o->entries[i].key = info->labels.items[i].key;
			o->entries[i].value = info->labels.items[i].value;
			o->ptrs[i] = &o->entries[i];
		}
		o->msg.n_labels = n;
		o->msg.labels = o->ptrs;
	}
	return 0;
}

static void info_out_free(info_out *o)
{
	free(o->entries);
	free(o->ptrs);
}

/* Sends a mounts response (Prepare, View and Mounts share its layout). */
static bool send_mounts(call *c, const ProtobufCMessageDescriptor *desc, const strata_mount_spec *m)
{
	Containerd__Types__Mount mount;
	containerd__types__mount__init(&mount);
	mount.type = m->type;
	mount.source = m->source;
	size_t n = 0;
	while (m->options[n])
		n++;
	mount.n_options = n;
	mount.options = m->options;
	Containerd__Types__Mount *list[1] = {&mount};
	/* All three responses are { repeated Mount mounts = 1; }. */
	Containerd__Services__Snapshots__V1__MountsResponse resp;
	containerd__services__snapshots__v1__mounts_response__init(&resp);
	resp.base.descriptor = desc;
	resp.n_mounts = 1;
	resp.mounts = list;
	return send_message(c, &resp.base);
}

/* ---- methods ---- */

static bool varint(const uint8_t **p, const uint8_t *end, uint64_t *ret)
{
	uint64_t v = 0;
	for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*ret = v;
			return true;
		}
	}
	return false;
}

/*
 * No string field of the message (nested messages included) holds a NUL
 * byte: protobuf-c hands strings over NUL-terminated, so "a\0b" would be
 * read as the key "a", someone else's.  The nesting followed is the
 * descriptors' (at most three levels here), never the input's.
 */
static bool strings_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len, unsigned depth)
{
	const uint8_t *end = p + len;
	while (p < end) {
		uint64_t tag, n;
		if (!varint(&p, end, &tag))
			return false;
		switch (tag & 7) {
		case 0:
			if (!varint(&p, end, &n))
				return false;
			break;
		case 1:
			if (end - p < 8)
				return false;
			p += 8;
			break;
		case 5:
			if (end - p < 4)
				return false;
			p += 4;
			break;
		case 2: {
			if (!varint(&p, end, &n) || n > (uint64_t)(end - p))
				return false;
			const ProtobufCFieldDescriptor *f =
				tag >> 3 <= UINT32_MAX
					? protobuf_c_message_descriptor_get_field(desc, (unsigned)(tag >> 3))
					: NULL;
			if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(p, 0, n))
				return false;
			if (f && f->type == PROTOBUF_C_TYPE_MESSAGE && depth < 4 &&
			    !strings_ok(f->descriptor, p, n, depth + 1))
				return false;
			p += n;
			break;
		}
		default:
			return false;
		}
	}
	return true;
}

#define UNPACK(type, fn)                                                                                               \
	if (!strings_ok(&fn##__descriptor, data, len, 0)) {                                                            \
		send_status(c, SNAP_INVALID_ARGUMENT, "malformed request message (or a NUL byte in a string)");        \
		return;                                                                                                \
	}                                                                                                              \
	type *req = fn##__unpack(NULL, len, data);                                                                     \
	if (!req) {                                                                                                    \
		send_status(c, SNAP_INVALID_ARGUMENT, "malformed request message");                                    \
		return;                                                                                                \
	}

static void do_prepare(call *c, const uint8_t *data, size_t len, bool view)
{
	/* The two requests have the same fields and numbers. */
	UNPACK(Containerd__Services__Snapshots__V1__PrepareSnapshotRequest,
	       containerd__services__snapshots__v1__prepare_snapshot_request)
	snap_status st = {0};
	strata_kv_list labels = {0};
	strata_mount_spec m = {0};
	if (labels_in(req->n_labels, (void *const *)req->labels, &labels) < 0)
		snprintf(st.message, sizeof(st.message), "%s %s: out of memory", view ? "view" : "prepare", req->key),
			st.code = SNAP_INTERNAL;
	else
		snap_prepare(c->srv->svc, req->key, req->parent, &labels, view, &m, &st);
	if (st.code == 0 &&
	    !send_mounts(c,
			 view ? &containerd__services__snapshots__v1__view_snapshot_response__descriptor
			      : &containerd__services__snapshots__v1__prepare_snapshot_response__descriptor,
			 &m))
		st.code = -1;
	if (st.code >= 0)
		send_status(c, st.code, st.message);
	strata_mount_spec_clear(&m);
	strata_kv_list_clear(&labels);
	containerd__services__snapshots__v1__prepare_snapshot_request__free_unpacked(req, NULL);
}

static void do_mounts(call *c, const uint8_t *data, size_t len)
{
	UNPACK(Containerd__Services__Snapshots__V1__MountsRequest, containerd__services__snapshots__v1__mounts_request)
	snap_status st = {0};
	strata_mount_spec m = {0};
	snap_mounts(c->srv->svc, req->key, &m, &st);
	if (st.code == 0 && !send_mounts(c, &containerd__services__snapshots__v1__mounts_response__descriptor, &m))
		st.code = -1;
	if (st.code >= 0)
		send_status(c, st.code, st.message);
	strata_mount_spec_clear(&m);
	containerd__services__snapshots__v1__mounts_request__free_unpacked(req, NULL);
}

static bool send_empty(call *c)
{
	Google__Protobuf__Empty e;
	google__protobuf__empty__init(&e);
	return send_message(c, &e.base);
}

static void finish(call *c, snap_status *st)
{
	if (st->code == 0 && !send_empty(c))
		return;
	send_status(c, st->code, st->message);
}

static void do_commit(call *c, const uint8_t *data, size_t len)
{
	UNPACK(Containerd__Services__Snapshots__V1__CommitSnapshotRequest,
	       containerd__services__snapshots__v1__commit_snapshot_request)
	snap_status st = {0};
	strata_kv_list labels = {0};
	if (labels_in(req->n_labels, (void *const *)req->labels, &labels) < 0)
		st.code = SNAP_INTERNAL, snprintf(st.message, sizeof(st.message), "commit %s: out of memory", req->key);
	else
		snap_commit(c->srv->svc, req->name, req->key, &labels, &st);
	finish(c, &st);
	strata_kv_list_clear(&labels);
	containerd__services__snapshots__v1__commit_snapshot_request__free_unpacked(req, NULL);
}

static void do_remove(call *c, const uint8_t *data, size_t len)
{
	UNPACK(Containerd__Services__Snapshots__V1__RemoveSnapshotRequest,
	       containerd__services__snapshots__v1__remove_snapshot_request)
	snap_status st = {0};
	snap_remove(c->srv->svc, req->key, &st);
	finish(c, &st);
	containerd__services__snapshots__v1__remove_snapshot_request__free_unpacked(req, NULL);
}

static void reply_info(call *c, const ProtobufCMessageDescriptor *desc, const snap_info *info, snap_status *st)
{
	info_out o;
	if (info_out_init(&o, info) < 0) {
		info_out_free(&o);
		send_status(c, SNAP_INTERNAL, "out of memory");
		return;
	}
	/* Stat's and Update's responses are both { Info info = 1; }. */
	Containerd__Services__Snapshots__V1__StatSnapshotResponse resp;
	containerd__services__snapshots__v1__stat_snapshot_response__init(&resp);
	resp.base.descriptor = desc;
	resp.info = &o.msg;
	bool ok = send_message(c, &resp.base);
	info_out_free(&o);
	if (ok)
		send_status(c, st->code, st->message);
}

static void do_stat(call *c, const uint8_t *data, size_t len)
{
	UNPACK(Containerd__Services__Snapshots__V1__StatSnapshotRequest,
	       containerd__services__snapshots__v1__stat_snapshot_request)
	snap_status st = {0};
	snap_info info = {0};
	if (snap_stat(c->srv->svc, req->key, &info, &st) == 0)
		reply_info(c, &containerd__services__snapshots__v1__stat_snapshot_response__descriptor, &info, &st);
	else
		send_status(c, st.code, st.message);
	snap_info_release(&info);
	containerd__services__snapshots__v1__stat_snapshot_request__free_unpacked(req, NULL);
}

static void do_update(call *c, const uint8_t *data, size_t len)
{
	UNPACK(Containerd__Services__Snapshots__V1__UpdateSnapshotRequest,
	       containerd__services__snapshots__v1__update_snapshot_request)
	snap_status st = {0};
	snap_info in = {0}, out = {0};
	if (!req->info) {
		send_status(c, SNAP_INVALID_ARGUMENT, "update: no info in the request");
	} else if (labels_in(req->info->n_labels, (void *const *)req->info->labels, &in.labels) < 0) {
		send_status(c, SNAP_INTERNAL, "update: out of memory");
	} else {
		in.key = req->info->name;
		size_t n = req->update_mask ? req->update_mask->n_paths : 0;
		char **paths = req->update_mask ? req->update_mask->paths : NULL;
		if (snap_update(c->srv->svc, &in, paths, n, &out, &st) == 0)
			reply_info(c, &containerd__services__snapshots__v1__update_snapshot_response__descriptor, &out,
				   &st);
		else
			send_status(c, st.code, st.message);
	}
	in.key = NULL;
	snap_info_release(&in);
	snap_info_release(&out);
	containerd__services__snapshots__v1__update_snapshot_request__free_unpacked(req, NULL);
}

/* List: the matches in batches, each batch one message. */
typedef struct list_state {
	call *c;
	snap_info *batch;
	size_t n;
	bool broken; /* the client is gone */
} list_state;

static void info_copy_release(snap_info *i)
{
	snap_info_release(i);
}

static bool flush_list(list_state *l)
{
	if (l->n == 0 || l->broken)
		return !l->broken;
	info_out *outs = calloc(l->n, sizeof(*outs));
	Containerd__Services__Snapshots__V1__Info **ptrs = calloc(l->n, sizeof(*ptrs));
	bool ok = outs && ptrs;
	for (size_t i = 0; ok && i < l->n; i++) {
		ok = info_out_init(&outs[i], &l->batch[i]) == 0;
		ptrs[i] = &outs[i].msg;
	}
	if (ok) {
		Containerd__Services__Snapshots__V1__ListSnapshotsResponse resp;
		containerd__services__snapshots__v1__list_snapshots_response__init(&resp);
		resp.n_info = l->n;
		resp.info = ptrs;
		ok = send_message(l->c, &resp.base);
	}
	for (size_t i = 0; outs && i < l->n; i++)
		info_out_free(&outs[i]);
	free(outs);
	free(ptrs);
	for (size_t i = 0; i < l->n; i++)
		info_copy_release(&l->batch[i]);
	l->n = 0;
	l->broken = !ok;
	return ok;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Called under the service's lock: copies, sends nothing. */
static int list_collect(const snap_info *info, void *data)
{
	list_state *l = data;
	snap_info *copy = realloc(l->batch, (l->n + 1) * sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	l->batch = copy;
	snap_info *d = &l->batch[l->n];
	*d = (snap_info){.kind = info->kind, .created_ns = info->created_ns, .updated_ns = info->updated_ns};
	d->key = dup_or_null(info->key);
	d->parent = dup_or_null(info->parent);
	d->id = dup_or_null(info->id);
	l->n++;
	if (!d->key || (info->parent && !d->parent) || (info->id && !d->id))
		return -ENOMEM;
	if (info->labels.n) {
		d->labels.items = calloc(info->labels.n, sizeof(strata_kv));
		if (!d->labels.items)
			return -ENOMEM;
		for (size_t i = 0; i < info->labels.n; i++) {
			d->labels.items[i].key = strdup(info->labels.items[i].key);
			d->labels.items[i].value = strdup(info->labels.items[i].value);
			d->labels.n++;
			if (!d->labels.items[i].key || !d->labels.items[i].value)
				return -ENOMEM;
		}
	}
	return 0;
}

static void do_list(call *c, const uint8_t *data, size_t len)
{
	UNPACK(Containerd__Services__Snapshots__V1__ListSnapshotsRequest,
	       containerd__services__snapshots__v1__list_snapshots_request)
	snap_status st = {0};
	list_state l = {.c = c};
	/* Collected under the lock, sent without it: a client that stops
	 * reading blocks only its own call. */
	if (snap_list(c->srv->svc, req->filters, req->n_filters, list_collect, &l, &st) == 0) {
		size_t total = l.n;
		snap_info *all = l.batch;
		for (size_t at = 0; at < total && !l.broken; at += LIST_BATCH) {
			l.batch = all + at;
			l.n = total - at < LIST_BATCH ? total - at : LIST_BATCH;
			flush_list(&l);
		}
		for (size_t i = 0; i < total; i++)
			snap_info_release(&all[i]);
		free(all);
		if (!l.broken)
			send_status(c, 0, "");
	} else {
		for (size_t i = 0; i < l.n; i++)
			snap_info_release(&l.batch[i]);
		free(l.batch);
		send_status(c, st.code, st.message);
	}
	containerd__services__snapshots__v1__list_snapshots_request__free_unpacked(req, NULL);
}

static void do_usage(call *c, const uint8_t *data, size_t len)
{
	UNPACK(Containerd__Services__Snapshots__V1__UsageRequest, containerd__services__snapshots__v1__usage_request)
	snap_status st = {0};
	int64_t size = 0, inodes = 0;
	if (snap_usage(c->srv->svc, req->key, &size, &inodes, &st) == 0) {
		Containerd__Services__Snapshots__V1__UsageResponse resp;
		containerd__services__snapshots__v1__usage_response__init(&resp);
		resp.size = size;
		resp.inodes = inodes;
		if (send_message(c, &resp.base))
			send_status(c, 0, "");
	} else {
		send_status(c, st.code, st.message);
	}
	containerd__services__snapshots__v1__usage_request__free_unpacked(req, NULL);
}

static void do_cleanup(call *c, const uint8_t *data, size_t len)
{
	UNPACK(Containerd__Services__Snapshots__V1__CleanupRequest,
	       containerd__services__snapshots__v1__cleanup_request)
	snap_status st = {0};
	snap_cleanup(c->srv->svc, &st);
	finish(c, &st);
	containerd__services__snapshots__v1__cleanup_request__free_unpacked(req, NULL);
}

static void dispatch(call *c, const char *method, const uint8_t *data, size_t len)
{
	if (!strcmp(method, "Prepare"))
		do_prepare(c, data, len, false);
	else if (!strcmp(method, "View"))
		do_prepare(c, data, len, true);
	else if (!strcmp(method, "Mounts"))
		do_mounts(c, data, len);
	else if (!strcmp(method, "Commit"))
		do_commit(c, data, len);
	else if (!strcmp(method, "Remove"))
		do_remove(c, data, len);
	else if (!strcmp(method, "Stat"))
		do_stat(c, data, len);
	else if (!strcmp(method, "Update"))
		do_update(c, data, len);
	else if (!strcmp(method, "List"))
		do_list(c, data, len);
	else if (!strcmp(method, "Usage"))
		do_usage(c, data, len);
	else if (!strcmp(method, "Cleanup"))
		do_cleanup(c, data, len);
	else {
		char msg[256];
		snprintf(msg, sizeof(msg), "unknown method %s", Q(method));
		send_status(c, SNAP_UNIMPLEMENTED, msg);
	}
}

static void call_free(call *c)
{
	if (c->call)
		grpc_call_unref(c->call);
	grpc_call_details_destroy(&c->details);
	grpc_metadata_array_destroy(&c->md);
	if (c->cq) {
		grpc_completion_queue_shutdown(c->cq);
		grpc_completion_queue_destroy(c->cq);
	}
	free(c);
}

static void *serve_call(void *arg)
{
	call *c = arg;
	server *s = c->srv;
	char method[256] = "";
	grpc_slice m = c->details.method;
	size_t ml = GRPC_SLICE_LENGTH(m);
	const char *mp = (const char *)GRPC_SLICE_START_PTR(m);
	size_t sl = strlen(SERVICE);
	bool ours = ml > sl && ml - sl < sizeof(method) && !memcmp(mp, SERVICE, sl);
	if (ours)
		memcpy(method, mp + sl, ml - sl), method[ml - sl] = '\0';

	grpc_byte_buffer *in = NULL;
	grpc_op ops[2] = {{.op = GRPC_OP_SEND_INITIAL_METADATA}, {.op = GRPC_OP_RECV_MESSAGE}};
	ops[1].data.recv_message.recv_message = &in;
	if (!batch(c, ops, 2)) {
		/* The client went away before its request arrived. */
	} else if (!ours) {
		send_status(c, SNAP_UNIMPLEMENTED, "unknown service or method");
	} else if (!in) {
		send_status(c, SNAP_INVALID_ARGUMENT, "no request message");
	} else {
		grpc_byte_buffer_reader reader;
		if (!grpc_byte_buffer_reader_init(&reader, in)) {
			send_status(c, SNAP_INVALID_ARGUMENT, "unreadable request message");
		} else {
			grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
			grpc_byte_buffer_reader_destroy(&reader);
			dispatch(c, method, GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all));
			grpc_slice_unref(all);
		}
	}
	if (in)
		grpc_byte_buffer_destroy(in);
	call_free(c);
	sem_post(&s->slots);
	pthread_mutex_lock(&s->lock);
	if (atomic_fetch_sub(&s->running, 1) == 1)
		pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static call *request_call(server *s)
{
	call *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->srv = s;
	grpc_call_details_init(&c->details);
	grpc_metadata_array_init(&c->md);
	c->cq = grpc_completion_queue_create_for_pluck(NULL);
	if (grpc_server_request_call(s->grpc, &c->call, &c->details, &c->md, c->cq, s->cq, c) != GRPC_CALL_OK) {
		call_free(c);
		return NULL;
	}
	return c;
}

/* A stale socket from a killed snapshotter is replaced; a live one (or
 * anything that is not a socket) is refused, never removed. */
static int claim_socket(const char *path, strata_error *err)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err->message, sizeof(err->message), "snapshotter: %s exists and is not a socket", path);
		return err->code = EEXIST, -EEXIST;
	}
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int r = connect(fd, (struct sockaddr *)&a, sizeof(a));
	int e = errno;
	close(fd);
	if (r == 0) {
		snprintf(err->message, sizeof(err->message), "snapshotter: something already serves on %s", path);
		return err->code = EADDRINUSE, -EADDRINUSE;
	}
	if (e != ECONNREFUSED)
		return -e;
	return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

int snap_grpc_serve(snap_service *svc, const char *socket_path, unsigned stall_seconds, const sigset_t *stop_signals,
		    snap_log_fn log, void *log_data, strata_error *err)
{
	if (strlen(socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		snprintf(err->message, sizeof(err->message), "snapshotter: socket path %s is too long", socket_path);
		return err->code = ENAMETOOLONG, -ENAMETOOLONG;
	}
	int r = claim_socket(socket_path, err);
	if (r < 0) {
		if (!err->message[0])
			snprintf(err->message, sizeof(err->message), "snapshotter: socket %s: %s", socket_path,
				 strerror(-r)),
				err->code = -r;
		return r;
	}
	server s = {.svc = svc, .log = log, .log_data = log_data, .stall_seconds = stall_seconds ? stall_seconds : 60};
	sem_init(&s.slots, 0, MAX_WORKERS);
	pthread_mutex_init(&s.lock, NULL);
	pthread_cond_init(&s.idle, NULL);
	grpc_init();
	grpc_arg args[2] = {
		{.type = GRPC_ARG_INTEGER,
		 .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
		 .value.integer = MAX_MESSAGE},
		{.type = GRPC_ARG_INTEGER,
		 .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
		 .value.integer = MAX_MESSAGE},
	};
	grpc_channel_args chargs = {.num_args = 2, .args = args};
	s.grpc = grpc_server_create(&chargs, NULL);
	s.cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(s.grpc, s.cq, NULL);
	char *addr = NULL;
	if (asprintf(&addr, "unix:%s", socket_path) < 0)
		addr = NULL;
	grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
	int port = addr ? grpc_server_add_http2_port(s.grpc, addr, creds) : 0;
	grpc_server_credentials_release(creds);
	free(addr);
	if (port == 0) {
		snprintf(err->message, sizeof(err->message), "snapshotter: cannot listen on %s", socket_path);
		err->code = EADDRNOTAVAIL;
		r = -EADDRNOTAVAIL;
		grpc_server_destroy(s.grpc);
	} else {
		chmod(socket_path, 0600);
		grpc_server_start(s.grpc);
		slog(&s, 0, "serving on %s", socket_path);
		call *next = request_call(&s);
		for (;;) {
			grpc_event ev = grpc_completion_queue_next(
				s.cq,
				gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200, GPR_TIMESPAN)),
				NULL);
			if (ev.type == GRPC_QUEUE_TIMEOUT) {
				sigset_t pending;
				if (stop_signals && sigpending(&pending) == 0) {
					bool stop = false;
					for (int sig = 1; sig < NSIG && !stop; sig++)
						stop = sigismember(stop_signals, sig) == 1 &&
						       sigismember(&pending, sig) == 1;
					if (stop)
						break;
				}
				if (!next)
					next = request_call(&s);
				continue;
			}
			if (ev.type != GRPC_OP_COMPLETE)
				break;
			call *c = ev.tag;
			next = NULL;
			if (ev.success) {
				sem_wait(&s.slots);
				atomic_fetch_add(&s.running, 1);
				pthread_t t;
				pthread_attr_t attr;
				pthread_attr_init(&attr);
				pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
				if (pthread_create(&t, &attr, serve_call, c) != 0) {
					slog(&s, 1, "cannot start a thread for a call: refused");
					call_free(c);
					sem_post(&s.slots);
					atomic_fetch_sub(&s.running, 1);
				}
				pthread_attr_destroy(&attr);
			} else {
				call_free(c);
			}
			next = request_call(&s);
		}
		slog(&s, 0, "stopping: cancelling the calls in progress");
		grpc_server_shutdown_and_notify(s.grpc, s.cq, SHUTDOWN_TAG);
		grpc_server_cancel_all_calls(s.grpc);
		for (;;) {
			grpc_event ev = grpc_completion_queue_next(s.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
			if (ev.type != GRPC_OP_COMPLETE || ev.tag == SHUTDOWN_TAG)
				break;
			call_free(ev.tag); /* the pending request_call, failed */
		}
		pthread_mutex_lock(&s.lock);
		while (atomic_load(&s.running) > 0)
			pthread_cond_wait(&s.idle, &s.lock);
		pthread_mutex_unlock(&s.lock);
		grpc_server_destroy(s.grpc);
		unlink(socket_path);
	}
	grpc_completion_queue_shutdown(s.cq);
	while (grpc_completion_queue_next(s.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(s.cq);
	grpc_shutdown();
	pthread_cond_destroy(&s.idle);
	pthread_mutex_destroy(&s.lock);
	sem_destroy(&s.slots);
	return r;
}
