/* SPDX-License-Identifier: Apache-2.0 */
/*
 * strata serve: HTTP/1.1 on a unix socket with libmicrohttpd.
 *
 * One thread per connection: a call may block as long as the library takes
 * (a mount, another call's lock on the same id, a tar of gigabytes) and a
 * slow or stuck client holds only its own thread.  Idle connections are
 * dropped after CONNECTION_TIMEOUT seconds; Docker's client reconnects.
 *
 * Clients that hold a connection without using it must not lock dockerd
 * out (the connections section below): a connection that has not sent a
 * whole request head yet is dropped after FIRST_REQUEST_TIMEOUT seconds
 * without a byte, or FIRST_REQUEST_DEADLINE seconds after it was accepted
 * whatever it sends; over CONNECTION_SOFT_CAP open connections, a new
 * connection's call gets a 503 rather than a reset.
 *
 * Every request body is taken in full before the reply, also after an
 * early error, so the client always reads a reply rather than a reset.
 * JSON bodies are capped at JSON_BODY_MAX; ApplyDiff's body, the tar, goes
 * through a pipe to strata_apply_diff as it arrives (stream.c).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "log.h"
#include "methods.h"
#include "server.h"
#include "state.h"
#include "stream.h"

#define JSON_BODY_MAX	    (64u << 10)
#define CONNECTION_MEMORY   (256u << 10)
#define DIFF_BLOCK	    (64u << 10)
#define CONTENT_TYPE_JSON   "application/vnd.docker.plugins.v1+json"
#define APPLY_DIFF	    "GraphDriver.ApplyDiff"
#define RETIRED_DRIVERS_MAX 64

/* Seconds without a byte, then a connection is closed... */
#define CONNECTION_TIMEOUT 600
/* ...or, before its first request head is in, these; and this many
 * seconds after it was accepted, whatever it sends. */
#define FIRST_REQUEST_TIMEOUT  10
#define FIRST_REQUEST_DEADLINE 30
/* Over this many open connections, a new connection's call gets 503. */
#define CONNECTION_SOFT_CAP 512
/* MHD's own limit, well above: past it, clients wait in the listen backlog. */
#define CONNECTION_HARD_CAP 4096
#define LISTEN_BACKLOG	    128
/* serve's open files soft limit at least (the hard limit if lower): enough
 * for CONNECTION_HARD_CAP connections and their calls. */
#define OPEN_FILES_WANT 8192

/* An open connection, from MHD's NOTIFY_STARTED to its NOTIFY_CLOSED. */
typedef struct conn_slot {
	struct conn_slot *prev, *next;
	int fd;
	struct timespec accepted;
	bool served; /* its first request head came in */
	bool cut;    /* the reaper shut it down */
} conn_slot;

struct plugin_server {
	const plugin_config *cfg;
	/* Open connections (guarded by conns_lock, never held with `lock`). */
	pthread_mutex_t conns_lock;
	pthread_cond_t conns_stop; /* the reaper's sleep; signalled to end it */
	conn_slot *conns;
	unsigned n_conns;
	bool reaper_stop;
	pthread_mutex_t lock; /* guards everything below */
	pthread_cond_t idle;  /* signalled when `active` drops to 0 */
	strata_driver *driver;
	/* Handles an Init replaced: calls in flight may still use them, so
	 * they are freed only at exit.  Docker inits once per start. */
	strata_driver *retired[RETIRED_DRIVERS_MAX];
	size_t n_retired;
	unsigned active; /* requests between their first byte and their end */
	bool stopping;	 /* SIGTERM came: new calls get 503 */
};

typedef struct request {
	plugin_server *server;
	char name[64]; /* the method, as logged */
	const plugin_method *method;
	bool apply;
	struct timespec start;
	/* An error found before the reply (a bad method, a body too big):
	 * the body is still read, then this is the reply. */
	int status;
	strata_error err;
	char *id, *parent; /* for the log */
	char *body;
	size_t body_len;
	bool too_large;
	plugin_stream *stream; /* ApplyDiff's tar on its way in, Diff's on its way out */
	bool stream_ended;     /* Diff: the whole tar went out */
	int apply_rc;	       /* ApplyDiff: the first write error */
} request;

const plugin_config *server_config(const plugin_server *s)
{
	return s->cfg;
}

strata_driver *server_driver(plugin_server *s)
{
	pthread_mutex_lock(&s->lock);
	strata_driver *d = s->driver;
	pthread_mutex_unlock(&s->lock);
	return d;
}

/* The library's messages that are not errors, into the log. */
static void driver_log(int level, const char *message, void *data)
{
	(void)data;
	plugin_log(level > 0 ? PLUGIN_LOG_WARN : PLUGIN_LOG_INFO, "msg=%s", LOG_VALUE(message));
}

int server_init_driver(plugin_server *s, const char *home, const char *const *options, strata_error *err)
{
	strata_driver *d = NULL;
	int r = strata_driver_open(home, options, STRATA_OPEN_INIT, &d, err);
	if (r < 0)
		return r;
	r = strata_claim(d, "serve", err);
	if (r < 0) {
		strata_driver_free(d);
		return r;
	}
	strata_driver_set_log(d, driver_log, NULL);
	pthread_mutex_lock(&s->lock);
	if (s->driver && s->n_retired == RETIRED_DRIVERS_MAX) {
		pthread_mutex_unlock(&s->lock);
		strata_driver_free(d);
		snprintf(err->message, sizeof(err->message),
			 "init %s: initialised %d times already; restart strata serve", home, RETIRED_DRIVERS_MAX);
		err->code = EBUSY;
		return -EBUSY;
	}
	if (s->driver)
		s->retired[s->n_retired++] = s->driver;
	s->driver = d;
	pthread_mutex_unlock(&s->lock);
	char opts[1024] = "";
	size_t n = 0;
	for (const char *const *o = options; o && *o && n < sizeof(opts); o++)
		n += (size_t)snprintf(opts + n, sizeof(opts) - n, "%s%s", n ? "," : "", *o);
	plugin_log(PLUGIN_LOG_INFO, "msg=initialised home=%s options=%s", LOG_VALUE(home), LOG_VALUE(opts));
	r = state_save(s->cfg->socket_path, home, options);
	if (r < 0)
		plugin_log(PLUGIN_LOG_WARN,
			   "msg=\"cannot record the Init; a restarted serve will wait for dockerd's next\" "
			   "file=%s.init err=%s",
			   LOG_VALUE(s->cfg->socket_path), LOG_VALUE(strerror(-r)));
	return 0;
}

void server_forget_init(plugin_server *s)
{
	state_forget(s->cfg->socket_path);
}

/* HTTP status for a failed call: what the error was, as far as a client
 * can act on it.  Docker only needs "not 200". */
static unsigned status_for(int code)
{
	switch (code) {
	case EINVAL:
	case ENAMETOOLONG:
	case E2BIG:
	/* A tar entry through a symlink, or across a mount: bad input. */
	case ELOOP:
	case EXDEV:
	case ENOTDIR:
	case ERANGE: /* an id map out of range */
		return MHD_HTTP_BAD_REQUEST;
	case ENOENT:
		return MHD_HTTP_NOT_FOUND;
	case EEXIST:
	case EBUSY:
	case ENOTEMPTY:
		return MHD_HTTP_CONFLICT;
	default:
		return MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
}

static void request_fail(request *r, unsigned status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void request_fail(request *r, unsigned status, const char *fmt, ...)
{
	if (r->status)
		return; /* the first error is the one to report */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->err.message, sizeof(r->err.message), fmt, ap);
	va_end(ap);
	r->status = (int)status;
}

static double ms_since(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) * 1e3 + (double)(now.tv_nsec - t->tv_nsec) / 1e6;
}

static void request_log(const request *r, bool client_gone)
{
	double ms = ms_since(&r->start);
	if (client_gone)
		plugin_log(PLUGIN_LOG_WARN, "method=%s id=%s parent=%s status=%d duration=%.2fms err=%s",
			   LOG_VALUE(r->name), LOG_VALUE(r->id), LOG_VALUE(r->parent), r->status, ms,
			   LOG_VALUE(r->err.message[0] ? r->err.message : "the client closed the connection"));
	else if (r->status != MHD_HTTP_OK)
		plugin_log(r->status >= 500 ? PLUGIN_LOG_ERROR : PLUGIN_LOG_WARN,
			   "method=%s id=%s parent=%s status=%d duration=%.2fms err=%s", LOG_VALUE(r->name),
			   LOG_VALUE(r->id), LOG_VALUE(r->parent), r->status, ms, LOG_VALUE(r->err.message));
	else
		plugin_log(PLUGIN_LOG_INFO, "method=%s id=%s parent=%s status=200 duration=%.2fms", LOG_VALUE(r->name),
			   LOG_VALUE(r->id), LOG_VALUE(r->parent), ms);
}

static void request_set_ids(request *r, const char *id, const char *parent)
{
	free(r->id);
	free(r->parent);
	r->id = id && *id ? strdup(id) : NULL;
	r->parent = parent && *parent ? strdup(parent) : NULL;
}

static enum MHD_Result queue(struct MHD_Connection *conn, request *r, unsigned status, struct MHD_Response *resp,
			     const char *type)
{
	if (!resp)
		return MHD_NO;
	r->status = (int)status;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	enum MHD_Result ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* Takes ownership of `reply`.  A reply that cannot be built still gets
 * one: a client must never be left with a closed connection instead. */
static enum MHD_Result queue_json(struct MHD_Connection *conn, request *r, unsigned status, json_t *reply)
{
	static const char fallback[] = "{\"Err\":\"strata serve: out of memory building the reply\"}";
	char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
	json_decref(reply);
	struct MHD_Response *resp;
	if (text) {
		resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	} else {
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
		snprintf(r->err.message, sizeof(r->err.message), "%s: out of memory building the reply", r->name);
		resp = MHD_create_response_from_buffer(sizeof(fallback) - 1, (void *)fallback, MHD_RESPMEM_PERSISTENT);
	}
	if (resp && status == MHD_HTTP_SERVICE_UNAVAILABLE)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	return queue(conn, r, status, resp, CONTENT_TYPE_JSON);
}

static enum MHD_Result queue_error(struct MHD_Connection *conn, request *r, unsigned status)
{
	if (!r->err.message[0])
		snprintf(r->err.message, sizeof(r->err.message), "%s: %s", r->name, strerror(r->err.code));
	/* Messages quote names from disk and may be cut mid-character. */
	return queue_json(conn, r, status, json_pack("{s:o}", "Err", json_string_lossy(r->err.message)));
}

static ssize_t diff_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos;
	request *r = cls;
	ssize_t n = stream_read(r->stream, buf, max, &r->err);
	if (n > 0)
		return n;
	if (n == 0) {
		r->stream_ended = true;
		return MHD_CONTENT_READER_END_OF_STREAM;
	}
	/* The tar has begun: the only way left to fail is to cut the
	 * connection, so the client sees a truncated body, never a tar that
	 * looks complete. */
	r->status = (int)status_for(r->err.code);
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

static enum MHD_Result reply_apply(struct MHD_Connection *conn, request *r)
{
	uint64_t size = 0;
	int rc = stream_apply_finish(r->stream, &size, &r->err);
	r->stream = stream_free(r->stream);
	if (rc < 0)
		return queue_error(conn, r, status_for(-rc));
	return queue_json(conn, r, MHD_HTTP_OK, json_pack("{s:I}", "Size", (json_int_t)size));
}

static enum MHD_Result reply_json_call(struct MHD_Connection *conn, request *r)
{
	plugin_server *s = r->server;
	if (r->too_large)
		return queue_error(conn, r, MHD_HTTP_CONTENT_TOO_LARGE);
	json_error_t jerr;
	json_t *args = NULL;
	size_t i = 0;
	while (i < r->body_len && (r->body[i] == ' ' || r->body[i] == '\t' || r->body[i] == '\r' || r->body[i] == '\n'))
		i++;
	/* Activate comes with no body, or "null". */
	if (i == r->body_len)
		args = json_object();
	else if (!(args = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr))) {
		request_fail(r, MHD_HTTP_BAD_REQUEST, "%s: the request is not valid JSON: %s (at byte %d)", r->name,
			     jerr.text, jerr.position);
		return queue_error(conn, r, MHD_HTTP_BAD_REQUEST);
	} else if (json_is_null(args)) {
		json_decref(args);
		args = json_object();
	}
	if (!json_is_object(args)) {
		json_decref(args);
		request_fail(r, MHD_HTTP_BAD_REQUEST, "%s: the request must be a JSON object", r->name);
		return queue_error(conn, r, MHD_HTTP_BAD_REQUEST);
	}
	plugin_call c = {.server = s,
			 .method = r->method->name,
			 .driver = server_driver(s),
			 .args = args,
			 .reply = json_object()};
	int rc;
	if (!c.reply)
		rc = -ENOMEM;
	else if (r->method->needs_driver && !c.driver) {
		snprintf(c.err.message, sizeof(c.err.message),
			 "%s: the driver is not initialised (GraphDriver.Init has not been called)", r->name);
		rc = -EPROTO;
	} else
		rc = r->method->run(&c);
	request_set_ids(r, c.id, c.parent);
	json_decref(args);
	if (rc < 0) {
		json_decref(c.reply);
		r->err = c.err;
		r->err.code = -rc;
		return queue_error(conn, r, rc == -EPROTO ? MHD_HTTP_INTERNAL_SERVER_ERROR : status_for(-rc));
	}
	if (c.diff) {
		json_decref(c.reply);
		r->stream = c.diff;
		return queue(conn, r, MHD_HTTP_OK,
			     MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, DIFF_BLOCK, diff_reader, r, NULL),
			     "application/x-tar");
	}
	return queue_json(conn, r, MHD_HTTP_OK, c.reply);
}

/* `n` bytes of `s` for a message: printable ASCII as it is, '"' and '\\'
 * escaped, anything else (a NUL above all) as \xNN.  Cut with "..." to fit. */
static const char *escape_bytes(const char *s, size_t n, char *buf, size_t size)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char one[8];
		if (c == '"' || c == '\\')
			snprintf(one, sizeof(one), "\\%c", c);
		else if (c >= 0x20 && c < 0x7f)
			snprintf(one, sizeof(one), "%c", c);
		else
			snprintf(one, sizeof(one), "\\x%02x", c);
		size_t len = strlen(one);
		if (o + len + 4 > size) {
			snprintf(buf + o, size - o, "...");
			return buf;
		}
		memcpy(buf + o, one, len + 1);
		o += len;
	}
	if (o < size)
		buf[o] = 0;
	return buf;
}

/* How often the query names each of ApplyDiff's arguments, compared as
 * MHD_lookup_connection_value_n compares keys (bytes, ignoring case). */
typedef struct query_scan {
	unsigned id, parent;
	bool nul_key; /* a key holding a NUL byte: the first is `bad_key` */
	char bad_key[160];
} query_scan;

static enum MHD_Result scan_query(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
				  const char *value, size_t value_size)
{
	(void)kind;
	(void)value;
	(void)value_size;
	query_scan *q = cls;
	if (!key)
		return MHD_YES;
	if (strlen(key) != key_size) {
		if (!q->nul_key)
			escape_bytes(key, key_size, q->bad_key, sizeof(q->bad_key));
		q->nul_key = true;
	} else if (!strcasecmp(key, "id")) {
		q->id++;
	} else if (!strcasecmp(key, "parent")) {
		q->parent++;
	}
	return MHD_YES;
}

/*
 * ApplyDiff's `key` (id or parent) from the query: *ret NULL when absent.
 * MHD decodes %00 into the value, so as a C string it would end there
 * ("a%00../x" read as "a"): the value is taken with its size and refused
 * when it holds a NUL byte.  Returns false after request_fail.
 */
static bool query_value(request *r, struct MHD_Connection *conn, const char *key, const char **ret)
{
	const char *v = NULL;
	size_t n = 0;
	*ret = NULL;
	if (MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v, &n) != MHD_YES)
		return true;
	if (v && strlen(v) != n) {
		char shown[600];
		escape_bytes(v, n, shown, sizeof(shown));
		char **logged = !strcmp(key, "id") ? &r->id : &r->parent;
		free(*logged);
		*logged = strdup(shown);
		request_fail(r, MHD_HTTP_BAD_REQUEST, "%s: invalid %s \"%s\": a NUL byte at offset %zu", r->name, key,
			     shown, strlen(v));
		return false;
	}
	*ret = v; /* NULL for "?parent" without '=': as absent */
	return true;
}

/* A present id must be valid; so must a parent that is not "" (none). */
static bool query_id_valid(request *r, const char *key, const char *v)
{
	if (!v || (!*v && strcmp(key, "id")))
		return true;
	strata_error verr;
	if (strata_id_validate(v, &verr) < 0) {
		request_fail(r, MHD_HTTP_BAD_REQUEST, "%s: %s: %s", r->name, key, verr.message);
		return false;
	}
	return true;
}

/* ApplyDiff: its id and parent, checked before the apply starts. */
static void apply_start(request *r, struct MHD_Connection *conn)
{
	query_scan q = {0};
	MHD_get_connection_values_n(conn, MHD_GET_ARGUMENT_KIND, scan_query, &q);
	if (q.nul_key) {
		request_fail(r, MHD_HTTP_BAD_REQUEST, "%s: the query key \"%s\" holds a NUL byte", r->name, q.bad_key);
		return;
	}
	if (q.id > 1 || q.parent > 1) {
		request_fail(r, MHD_HTTP_BAD_REQUEST,
			     "%s: the query gives %s %u times (?id=ID&parent=PARENT, each once)", r->name,
			     q.id > 1 ? "id" : "parent", q.id > 1 ? q.id : q.parent);
		return;
	}
	const char *id, *parent;
	if (!query_value(r, conn, "id", &id) || !query_value(r, conn, "parent", &parent))
		return;
	request_set_ids(r, id, parent);
	if (!id) {
		request_fail(r, MHD_HTTP_BAD_REQUEST, "%s: the query has no id (?id=ID&parent=PARENT)", r->name);
		return;
	}
	if (!query_id_valid(r, "id", id) || !query_id_valid(r, "parent", parent))
		return;
	strata_driver *d = server_driver(r->server);
	if (!d)
		request_fail(r, MHD_HTTP_INTERNAL_SERVER_ERROR,
			     "%s: the driver is not initialised (GraphDriver.Init has not been called)", r->name);
	else if (stream_apply_start(d, id, parent, &r->stream, &r->err) < 0)
		r->status = MHD_HTTP_INTERNAL_SERVER_ERROR; /* r->err says why */
}

/* over_cap: the open connections, when this connection's first call comes
 * over the soft cap (connection_request); else 0. */
static request *request_new(plugin_server *s, struct MHD_Connection *conn, const char *url, const char *http_method,
			    const char *version, unsigned over_cap)
{
	request *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->server = s;
	clock_gettime(CLOCK_MONOTONIC, &r->start);
	snprintf(r->name, sizeof(r->name), "%s", url[0] == '/' ? url + 1 : url);
	pthread_mutex_lock(&s->lock);
	bool stopping = s->stopping;
	pthread_mutex_unlock(&s->lock);
	if (stopping) {
		request_fail(r, MHD_HTTP_SERVICE_UNAVAILABLE, "%s: strata serve is shutting down", LOG_VALUE(r->name));
		return r;
	}
	if (over_cap) {
		request_fail(r, MHD_HTTP_SERVICE_UNAVAILABLE,
			     "%s: strata serve is at its connection limit (%u connections open, %u allowed); try again",
			     LOG_VALUE(r->name), over_cap, (unsigned)CONNECTION_SOFT_CAP);
		return r;
	}
	/* HTTP/1.0 has no chunked encoding: a Diff that fails midway would end
	 * like a complete one.  Docker speaks HTTP/1.1. */
	if (strcmp(version, MHD_HTTP_VERSION_1_1)) {
		request_fail(r, MHD_HTTP_HTTP_VERSION_NOT_SUPPORTED, "%s: %s is not supported (HTTP/1.1 only)",
			     LOG_VALUE(r->name), LOG_VALUE(version));
		return r;
	}
	if (strcmp(http_method, MHD_HTTP_METHOD_POST)) {
		request_fail(r, MHD_HTTP_METHOD_NOT_ALLOWED, "%s: method %s not allowed (plugin calls are POST)",
			     LOG_VALUE(r->name), LOG_VALUE(http_method));
		return r;
	}
	if (!strcmp(r->name, APPLY_DIFF)) {
		r->apply = true;
		apply_start(r, conn);
		return r;
	}
	r->method = plugin_method_find(r->name);
	if (!r->method)
		request_fail(r, MHD_HTTP_NOT_FOUND, "unknown method %s (not a graphdriver plugin call)",
			     LOG_VALUE(r->name));
	return r;
}

static void request_body(request *r, const char *data, size_t len)
{
	if (r->status)
		return; /* failed already: the rest of the body is dropped */
	if (r->apply) {
		if (r->stream && !r->apply_rc) {
			int rc = stream_write(r->stream, data, len);
			/* EPIPE: the apply stopped reading; its result tells why. */
			if (rc < 0 && rc != -EPIPE)
				r->apply_rc = rc;
		}
		return;
	}
	if (r->too_large || r->body_len + len > JSON_BODY_MAX) {
		if (!r->too_large)
			snprintf(r->err.message, sizeof(r->err.message), "%s: the request body is over %u bytes",
				 r->name, JSON_BODY_MAX);
		r->too_large = true;
		return;
	}
	char *b = realloc(r->body, r->body_len + len);
	if (!b) {
		request_fail(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s: out of memory", r->name);
		return;
	}
	memcpy(b + r->body_len, data, len);
	r->body = b;
	r->body_len += len;
}

/* ---- connections ----
 *
 * MHD calls on_connection(STARTED) in its listening thread, after accept
 * and before it starts the connection's thread, and on_connection(CLOSED)
 * in MHD_cleanup_connections, after that thread has been joined and before
 * MHD closes the socket (libmicrohttpd 0.9.75 daemon.c:
 * new_connection_process_ and MHD_cleanup_connections; the same in 1.0).
 * The connection's thread itself only ever shuts its socket down.  So a
 * slot's fd is that connection's open socket for as long as the slot is
 * in the list, and the reaper, which shuts sockets down with conns_lock
 * held, can never hit a descriptor that was closed and reused.
 */

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	plugin_server *s = cls;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		/* A connection's thread reads its timeout at each turn of its
		 * poll loop (thread_main_handle_connection), and it does not
		 * run yet: setting it here is safe in thread-per-connection mode. */
		MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)FIRST_REQUEST_TIMEOUT);
		const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		conn_slot *slot = info ? calloc(1, sizeof(*slot)) : NULL;
		*socket_context = slot;
		if (!slot)
			return; /* neither counted nor reaped; the timeout still holds */
		slot->fd = info->connect_fd;
		clock_gettime(CLOCK_MONOTONIC, &slot->accepted);
		pthread_mutex_lock(&s->conns_lock);
		slot->next = s->conns;
		if (s->conns)
			s->conns->prev = slot;
		s->conns = slot;
		s->n_conns++;
		pthread_mutex_unlock(&s->conns_lock);
		return;
	}
	conn_slot *slot = *socket_context;
	if (!slot)
		return;
	pthread_mutex_lock(&s->conns_lock);
	if (slot->prev)
		slot->prev->next = slot->next;
	else
		s->conns = slot->next;
	if (slot->next)
		slot->next->prev = slot->prev;
	s->n_conns--;
	pthread_mutex_unlock(&s->conns_lock);
	free(slot);
	*socket_context = NULL;
}

/*
 * A request head came in (the access handler's first call for it).  The
 * connection's first one gives it back the keep-alive timeout, and is
 * refused when too many connections are open: returns their number then,
 * else 0.  Connections that were served before are not refused, so
 * dockerd's kept-alive ones go on working through a flood.
 */
static unsigned connection_request(plugin_server *s, struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	conn_slot *slot = info ? info->socket_context : NULL;
	bool first = true;
	unsigned over = 0;
	if (slot) {
		pthread_mutex_lock(&s->conns_lock);
		first = !slot->served;
		slot->served = true;
		if (first && s->n_conns > CONNECTION_SOFT_CAP)
			over = s->n_conns;
		pthread_mutex_unlock(&s->conns_lock);
	}
	if (first)
		MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT);
	return over;
}

/*
 * The first-request deadline: MHD's timeout counts from the last byte, so
 * a client sending one byte every few seconds would hold its connection
 * (and a thread) for ever.  Once a second, connections accepted more than
 * FIRST_REQUEST_DEADLINE seconds ago that still have not sent a whole
 * request head are shut down; MHD then sees the end of the stream and
 * closes them as usual.
 */
static void *reaper_main(void *p)
{
	plugin_server *s = p;
	pthread_mutex_lock(&s->conns_lock);
	while (!s->reaper_stop) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		for (conn_slot *c = s->conns; c; c = c->next) {
			if (c->served || c->cut || now.tv_sec - c->accepted.tv_sec < FIRST_REQUEST_DEADLINE)
				continue;
			/* conns_lock is held: c->fd is still this connection's. */
			(void)shutdown(c->fd, SHUT_RDWR);
			c->cut = true;
			plugin_log(PLUGIN_LOG_WARN,
				   "msg=\"no complete request within %ds of connecting; connection closed\" fd=%d",
				   FIRST_REQUEST_DEADLINE, c->fd);
		}
		struct timespec next = {.tv_sec = now.tv_sec + 1, .tv_nsec = now.tv_nsec};
		pthread_cond_timedwait(&s->conns_stop, &s->conns_lock, &next);
	}
	pthread_mutex_unlock(&s->conns_lock);
	return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	plugin_server *s = cls;
	request *r = *con_cls;
	if (!r) {
		r = request_new(s, conn, url, method, version, connection_request(s, conn));
		if (!r)
			return MHD_NO;
		*con_cls = r;
		pthread_mutex_lock(&s->lock);
		s->active++;
		pthread_mutex_unlock(&s->lock);
		return MHD_YES;
	}
	if (*upload_data_size) {
		request_body(r, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (r->status)
		return queue_error(conn, r, (unsigned)r->status);
	if (r->apply) {
		if (r->apply_rc) {
			/* The pipe broke some other way: the apply must not
			 * finish on a partial tar. */
			r->stream = stream_free(r->stream);
			snprintf(r->err.message, sizeof(r->err.message), "apply %s: feed the tar: %s", r->id,
				 strerror(-r->apply_rc));
			return queue_error(conn, r, MHD_HTTP_INTERNAL_SERVER_ERROR);
		}
		return reply_apply(conn, r);
	}
	return reply_json_call(conn, r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	(void)conn;
	plugin_server *s = cls;
	request *r = *con_cls;
	if (!r)
		return;
	*con_cls = NULL;
	/* A stream still running here was cut off: an apply is cancelled (its
	 * partial tar never becomes a layer), a diff stops on EPIPE.  A reply
	 * that was queued whole counts as sent even if the client hung up
	 * before MHD saw the end of it. */
	bool ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
	bool cut = !ok && r->stream != NULL && !r->stream_ended;
	r->stream = stream_free(r->stream);
	request_log(r, cut || (!ok && r->status == 0));
	free(r->id);
	free(r->parent);
	free(r->body);
	free(r);
	pthread_mutex_lock(&s->lock);
	if (--s->active == 0)
		pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&s->lock);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[1024];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = 0;
	plugin_log(PLUGIN_LOG_DEBUG, "msg=%s", LOG_VALUE(msg));
}

/* ---- the socket ---- */

static int socket_error(strata_error *err, int code, const char *path, const char *what)
{
	snprintf(err->message, sizeof(err->message), "serve %s: %s%s%s", path, what, code ? ": " : "",
		 code ? strerror(code) : "");
	err->code = code ? code : EINVAL;
	return -err->code;
}

/* mkdir -p for the socket's directory (Docker's /run/docker/plugins). */
static int make_parent_dirs(const char *path, strata_error *err)
{
	char *dir = strdup(path);
	if (!dir)
		return socket_error(err, ENOMEM, path, "out of memory");
	for (char *p = dir + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			int e = errno;
			char what[600];
			snprintf(what, sizeof(what), "mkdir %s", dir);
			free(dir);
			return socket_error(err, e, path, what);
		}
		*p = '/';
	}
	free(dir);
	return 0;
}

/*
 * A listening socket at `path`, mode 0600 from the moment it exists (umask
 * around bind, checked after).  A socket
 * file nobody listens on is a leftover of a server that died, and is
 * replaced; a live one, or anything that is not a socket, is refused.
 */
static int listen_on(const char *path, int *ret_fd, struct stat *ret_id, strata_error *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return socket_error(err, ENAMETOOLONG, path, "socket path too long");
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int r = make_parent_dirs(path, err);
	if (r < 0)
		return r;
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return socket_error(err, EEXIST, path, "exists and is not a socket");
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe < 0)
			return socket_error(err, errno, path, "socket");
		int live = connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0 ? 1
			   : errno == ECONNREFUSED				   ? 0
										   : -errno;
		close(probe);
		if (live > 0)
			return socket_error(err, EADDRINUSE, path, "another server is listening there");
		if (live < 0)
			return socket_error(err, -live, path, "cannot tell whether a server listens there");
		if (unlink(path) < 0 && errno != ENOENT)
			return socket_error(err, errno, path, "remove the stale socket");
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return socket_error(err, errno, path, "socket");
	mode_t old = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	int e = errno;
	umask(old);
	if (r < 0) {
		close(fd);
		return socket_error(err, e, path, "bind");
	}
	if (lstat(path, &st) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		e = errno;
		close(fd);
		unlink(path);
		return socket_error(err, e, path, "listen");
	}
	if (!S_ISSOCK(st.st_mode) || (st.st_mode & 0177)) {
		close(fd);
		unlink(path);
		return socket_error(err, EPERM, path, "the new socket is not mode 0600");
	}
	*ret_fd = fd;
	*ret_id = st;
	return 0;
}

/* Removes the socket file if it is still ours (not one a newer server made). */
static void unlink_socket(const char *path, const struct stat *ours)
{
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == ours->st_dev && st.st_ino == ours->st_ino)
		unlink(path);
}

static void wait_idle(plugin_server *s, unsigned seconds)
{
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += seconds;
	pthread_mutex_lock(&s->lock);
	while (s->active > 0)
		if (pthread_cond_timedwait(&s->idle, &s->lock, &deadline) == ETIMEDOUT)
			break;
	unsigned left = s->active;
	pthread_mutex_unlock(&s->lock);
	if (left)
		plugin_log(PLUGIN_LOG_WARN, "msg=\"calls still running after %us; closing their connections\" calls=%u",
			   seconds, left);
}

static void reaper_join(plugin_server *s, pthread_t reaper)
{
	pthread_mutex_lock(&s->conns_lock);
	s->reaper_stop = true;
	pthread_cond_signal(&s->conns_stop);
	pthread_mutex_unlock(&s->conns_lock);
	pthread_join(reaper, NULL);
}

/* Reopens the store of the last Init, if any (state.h says why). */
static void resume(plugin_server *s)
{
	char *home = NULL, **options = NULL;
	int r = state_load(s->cfg->socket_path, &home, &options);
	if (r == -ENOENT)
		return;
	if (r < 0) {
		plugin_log(PLUGIN_LOG_WARN,
			   "msg=\"cannot read the last Init; waiting for dockerd's\" file=%s.init err=%s",
			   LOG_VALUE(s->cfg->socket_path), LOG_VALUE(strerror(-r)));
		return;
	}
	strata_error err;
	if (strata_driver_open(home, (const char *const *)options, STRATA_OPEN_INIT, &s->driver, &err) >= 0) {
		strata_driver_set_log(s->driver, driver_log, NULL);
		if (strata_claim(s->driver, "serve", &err) < 0)
			s->driver = strata_driver_free(s->driver);
	}
	if (!s->driver)
		plugin_log(PLUGIN_LOG_WARN,
			   "msg=\"cannot reopen the store of the last Init; waiting for dockerd's\" err=%s",
			   LOG_VALUE(err.message));
	else
		plugin_log(PLUGIN_LOG_INFO, "msg=\"reopened the store of the last Init\" home=%s", LOG_VALUE(home));
	for (char **o = options; *o; o++)
		free(*o);
	free(options);
	free(home);
}

/* One fd per connection: the usual soft limit (1024) would keep
 * CONNECTION_HARD_CAP out of reach, and MHD stops accepting at EMFILE.  A
 * higher limit (systemd units often set 1048576) is kept. */
static void set_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	rlim_t want = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < OPEN_FILES_WANT ? rl.rlim_max : OPEN_FILES_WANT;
	if (rl.rlim_cur < want) {
		unsigned long long from = (unsigned long long)rl.rlim_cur;
		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			plugin_log(PLUGIN_LOG_WARN, "msg=\"cannot set the open files limit\" from=%llu to=%llu err=%s",
				   from, (unsigned long long)want, LOG_VALUE(strerror(errno)));
			getrlimit(RLIMIT_NOFILE, &rl);
		} else {
			plugin_log(PLUGIN_LOG_DEBUG, "msg=\"set the open files limit\" from=%llu to=%llu", from,
				   (unsigned long long)rl.rlim_cur);
		}
	}
	if (rl.rlim_cur < CONNECTION_HARD_CAP + 256)
		plugin_log(PLUGIN_LOG_WARN,
			   "msg=\"the open files limit is below what the connection limit needs\" limit=%llu "
			   "connections=%u",
			   (unsigned long long)rl.rlim_cur, (unsigned)CONNECTION_HARD_CAP);
}

int plugin_serve(const plugin_config *cfg, strata_error *err)
{
	plugin_server s = {.cfg = cfg};
	pthread_mutex_init(&s.lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s.idle, &ca);
	pthread_mutex_init(&s.conns_lock, NULL);
	pthread_cond_init(&s.conns_stop, &ca);
	pthread_condattr_destroy(&ca);
	set_nofile();

	/* A client gone mid-reply must be an EPIPE, not the end of us. */
	signal(SIGPIPE, SIG_IGN);
	/* SIGTERM and SIGINT are taken by sigwait below; every thread made
	 * from here on inherits the mask. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);

	int fd = -1;
	struct stat ours;
	int r = listen_on(cfg->socket_path, &fd, &ours, err);
	if (r < 0)
		return r;
	resume(&s);
	pthread_t reaper;
	r = pthread_create(&reaper, NULL, reaper_main, &s);
	if (r) {
		close(fd);
		unlink_socket(cfg->socket_path, &ours);
		return socket_error(err, r, cfg->socket_path, "start the connection reaper thread");
	}
	struct MHD_Daemon *daemon = MHD_start_daemon(
		MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0, NULL,
		NULL, on_request, &s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, &s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, &s,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTION_HARD_CAP, MHD_OPTION_CONNECTION_TIMEOUT,
		(unsigned)CONNECTION_TIMEOUT, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
		MHD_OPTION_THREAD_STACK_SIZE, (size_t)PLUGIN_THREAD_STACK, MHD_OPTION_END);
	if (!daemon) {
		reaper_join(&s, reaper);
		close(fd);
		unlink_socket(cfg->socket_path, &ours);
		return socket_error(err, EIO, cfg->socket_path, "start the HTTP server (libmicrohttpd) failed");
	}
	plugin_log(PLUGIN_LOG_INFO, "msg=listening socket=%s driver=%s pid=%ld", LOG_VALUE(cfg->socket_path),
		   LOG_VALUE(cfg->name), (long)getpid());

	int sig = 0;
	while (sigwait(&stop, &sig) != 0)
		;
	plugin_log(PLUGIN_LOG_INFO, "msg=\"shutting down\" signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");

	/* No new connections; the socket goes so nobody tries.  Calls on open
	 * keep-alive connections get 503 from here on. */
	int lfd = MHD_quiesce_daemon(daemon);
	unlink_socket(cfg->socket_path, &ours);
	pthread_mutex_lock(&s.lock);
	s.stopping = true;
	pthread_mutex_unlock(&s.lock);
	wait_idle(&s, cfg->grace_seconds);
	MHD_stop_daemon(daemon);
	/* Only now: MHD's threads may use the fd until they are gone. */
	if (lfd >= 0)
		close(lfd);
	reaper_join(&s, reaper);

	r = 0;
	if (s.driver) {
		strata_error cerr;
		if (strata_cleanup(s.driver, &cerr) < 0) {
			plugin_log(PLUGIN_LOG_ERROR, "msg=\"cleanup failed\" err=%s", LOG_VALUE(cerr.message));
			*err = cerr;
			r = -cerr.code;
		} else {
			plugin_log(PLUGIN_LOG_INFO, "msg=\"unmounted everything\" root=%s",
				   LOG_VALUE(strata_driver_root(s.driver)));
		}
	}
	strata_driver_free(s.driver);
	for (size_t i = 0; i < s.n_retired; i++)
		strata_driver_free(s.retired[i]);
	pthread_cond_destroy(&s.idle);
	pthread_mutex_destroy(&s.lock);
	pthread_cond_destroy(&s.conns_stop);
	pthread_mutex_destroy(&s.conns_lock);
	plugin_log(PLUGIN_LOG_INFO, "msg=stopped");
	return r;
}
