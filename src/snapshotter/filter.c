/* SPDX-License-Identifier: Apache-2.0 */
/*
 * containerd's filters (github.com/containerd/containerd/filters), for the
 * snapshot fields of its snapshot adaptor.  The scanner follows
 * containerd's token by token, so the same strings are accepted and
 * refused, with these exceptions: bytes outside ASCII are taken as they
 * are (no UTF-8 check), a quoted string that decodes to a NUL byte is
 * refused (keys and labels cannot hold one), and `~=` compiles a POSIX
 * extended regular expression rather than Go's RE2 syntax.
 *
 * Matching follows containerd's selector: a missing field reads as "",
 * so `!=` and `~=` can match it, while `==` and presence need the field.
 * name, parent and kind are always present (kind when it is known);
 * labels.K is present when label K is set.  Unknown fields are missing.
 */
#include <errno.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "util.h"

typedef enum field {
	FIELD_UNKNOWN,
	FIELD_NAME,
	FIELD_PARENT,
	FIELD_KIND,
	FIELD_LABEL,
} field;

typedef enum op {
	OP_PRESENT,
	OP_EQUAL,
	OP_NOT_EQUAL,
	OP_MATCHES,
	OP_CONTAINS, /* "@=", newer containerd */
} op;

typedef struct term {
	field field;
	char *label; /* FIELD_LABEL: the path after "labels", joined by '.' */
	op op;
	char *value;
	bool has_re;
	regex_t re;
} term;

/* The terms of one filter string, all of which must match. */
typedef struct conjunction {
	term *terms;
	size_t n;
} conjunction;

struct snap_filter {
	conjunction *alts; /* any of which must match; none: everything does */
	size_t n;
};

/* ---- scanning ---- */

typedef enum token {
	TOKEN_EOF,
	TOKEN_QUOTED,	 /* decoded into scanner.text */
	TOKEN_VALUE,	 /* bare, after an operator */
	TOKEN_FIELD,	 /* [A-Za-z0-9_-]+ */
	TOKEN_SEPARATOR, /* ',' or '.' */
	TOKEN_OPERATOR,	 /* a run of '=', '!', '~', '@' */
	TOKEN_ILLEGAL,	 /* a character that starts no token */
} token;

typedef struct scanner {
	const char *input;
	size_t len;
	size_t pos;   /* the next byte */
	bool value;   /* an operator was just read: a bare word is a value */
	size_t start; /* the last token's offset and length in input */
	size_t length;
	char *text; /* TOKEN_QUOTED: the decoded string */
	strata_error *err;
	int r; /* the first error (message in err), 0 for none */
} scanner;

static int scan_fail(scanner *s, size_t offset, const char *fmt, ...) _printf_(3, 4);
static int scan_fail(scanner *s, size_t offset, const char *fmt, ...)
{
	if (s->r < 0)
		return s->r;
	s->r = -EINVAL;
	if (!s->err)
		return s->r;
	char what[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(s->err->message, sizeof(s->err->message), "filter \"%s\": %s at offset %zu", Q(s->input), what,
		 offset);
	s->err->code = EINVAL;
	return s->r;
}

static bool is_space(int c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool is_field_char(int c)
{
	return c == '-' || c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_operator_char(int c)
{
	return c == '=' || c == '!' || c == '~' || c == '@';
}

static bool is_quote_char(int c)
{
	return c == '"' || c == '/' || c == '|';
}

/* Go's isValueRune: graphic and not ',' nor a space; any byte beyond
 * ASCII is taken as part of a graphic character. */
static bool is_value_char(int c)
{
	return c != ',' && (c > 0x20 && c != 0x7f);
}

/* The next byte, as containerd's peek: no space is skipped; -1 at the end. */
static int peek(const scanner *s)
{
	return s->pos < s->len ? (unsigned char)s->input[s->pos] : -1;
}

static int hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Appends code point `cp` in UTF-8; surrogates become U+FFFD, as Go's
 * utf8.EncodeRune makes them. */
static size_t put_utf8(char *out, unsigned long cp)
{
	if (cp >= 0xd800 && cp <= 0xdfff)
		cp = 0xfffd;
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/*
 * A quoted string from s->pos (at the opening quote), decoded as Go's
 * strconv.Unquote does for a double-quoted literal, with `/` and `|` as
 * further quote characters (containerd's quote.go): the escapes \a \b \f
 * \n \r \t \v \\, the quote character itself, \NNN (octal, at most 255),
 * \xNN, \uNNNN and \UNNNNNNNN.
 */
static int scan_quoted(scanner *s)
{
	const char q = s->input[s->pos];
	size_t i = s->pos + 1;
	/* Decoding never makes a string longer: \xNN is 4 bytes for 1, \U 10
	 * for at most 4, and everything else is at least as long. */
	char *out = malloc(s->len - s->pos + 1);
	if (!out)
		return s->r = -ENOMEM;
	size_t k = 0;
	for (;;) {
		if (i >= s->len || s->input[i] == '\n') {
			free(out);
			return scan_fail(s, i, "unterminated quoted string");
		}
		char c = s->input[i];
		if (c == q)
			break;
		if (c != '\\') {
			out[k++] = c;
			i++;
			continue;
		}

		size_t esc = i;
		char e = i + 1 < s->len ? s->input[i + 1] : '\0';
		unsigned long v = 0;
		int digits = 0, base = 16;
		i += 2;
		switch (e) {
		case 'a':
			v = '\a';
			break;
		case 'b':
			v = '\b';
			break;
		case 'f':
			v = '\f';
			break;
		case 'n':
			v = '\n';
			break;
		case 'r':
			v = '\r';
			break;
		case 't':
			v = '\t';
			break;
		case 'v':
			v = '\v';
			break;
		case '\\':
			v = '\\';
			break;
		case 'x':
			digits = 2;
			break;
		case 'u':
			digits = 4;
			break;
		case 'U':
			digits = 8;
			break;
		case '0':
		case '1':
		case '2':
		case '3':
		case '4':
		case '5':
		case '6':
		case '7':
			digits = 3;
			base = 8;
			i--; /* the first digit is part of the number */
			break;
		default:
			if (e == q) {
				v = (unsigned char)q;
				break;
			}
			free(out);
			return scan_fail(s, esc, "bad escape sequence in quoted string");
		}
		for (int d = 0; d < digits; d++, i++) {
			int x = i < s->len ? hex_value((unsigned char)s->input[i]) : -1;
			if (x < 0 || x >= base) {
				free(out);
				return scan_fail(s, esc, "bad escape sequence in quoted string");
			}
			v = v * (unsigned long)base + (unsigned long)x;
		}
		if ((base == 8 && v > 255) || v > 0x10ffff) {
			free(out);
			return scan_fail(s, esc, "escape sequence out of range in quoted string");
		}
		if (v == 0) {
			free(out);
			return scan_fail(s, esc, "NUL in quoted string");
		}
		/* \x and octal escapes are bytes; \u and \U code points. */
		if (e == 'u' || e == 'U')
			k += put_utf8(out + k, v);
		else
			out[k++] = (char)v;
	}
	out[k] = '\0';
	free(s->text);
	s->text = out;
	s->pos = i + 1;
	return 0;
}

/* The next token (containerd's scanner.scan); its place in s->start and
 * s->length.  A decoding error is TOKEN_ILLEGAL with s->r set. */
static token scan(scanner *s)
{
	while (s->pos < s->len && is_space((unsigned char)s->input[s->pos]))
		s->pos++;
	s->start = s->pos;
	s->length = 0;
	if (s->pos >= s->len)
		return TOKEN_EOF;

	int c = (unsigned char)s->input[s->pos];
	token t;
	if (is_quote_char(c)) {
		if (scan_quoted(s) < 0)
			return TOKEN_ILLEGAL;
		t = TOKEN_QUOTED;
	} else if (c == ',' || c == '.') {
		s->value = false;
		s->pos++;
		t = TOKEN_SEPARATOR;
	} else if (is_operator_char(c)) {
		while (s->pos < s->len && is_operator_char((unsigned char)s->input[s->pos]))
			s->pos++;
		s->value = true;
		t = TOKEN_OPERATOR;
	} else if (s->value) {
		/* The first byte is taken whatever it is, as containerd does. */
		s->pos++;
		while (s->pos < s->len && is_value_char((unsigned char)s->input[s->pos]))
			s->pos++;
		s->value = false;
		t = TOKEN_VALUE;
	} else if (is_field_char(c)) {
		while (s->pos < s->len && is_field_char((unsigned char)s->input[s->pos]))
			s->pos++;
		t = TOKEN_FIELD;
	} else {
		s->pos++;
		t = TOKEN_ILLEGAL;
	}
	s->length = s->pos - s->start;
	return t;
}

/* The text of the last FIELD, VALUE or QUOTED token, as a new string. */
static char *token_text(scanner *s, token t)
{
	if (t == TOKEN_QUOTED) {
		char *text = s->text;
		s->text = NULL;
		return text;
	}
	return strndup(s->input + s->start, s->length);
}

/* ---- parsing ---- */

static void term_release(term *t)
{
	free(t->label);
	free(t->value);
	if (t->has_re)
		regfree(&t->re);
	*t = (term){0};
}

static void conjunction_release(conjunction *c)
{
	for (size_t i = 0; i < c->n; i++)
		term_release(&c->terms[i]);
	free(c->terms);
	*c = (conjunction){0};
}

snap_filter *snap_filter_free(snap_filter *f)
{
	if (!f)
		return NULL;
	for (size_t i = 0; i < f->n; i++)
		conjunction_release(&f->alts[i]);
	free(f->alts);
	free(f);
	return NULL;
}

/* One field of a path: a bare word or a quoted string. */
static int parse_field(scanner *s, char **ret)
{
	token t = scan(s);
	if (s->r < 0)
		return s->r;
	if (t != TOKEN_FIELD && t != TOKEN_QUOTED)
		return scan_fail(s, s->start, "expected a field or a quoted string");
	char *f = token_text(s, t);
	if (!f)
		return s->r = -ENOMEM;
	*ret = f;
	return 0;
}

/* Appends ".part" to the label path in *label, as strings.Join does:
 * empty parts keep their dots (labels.a."".b is the label "a..b"). */
static int join_label(char **label, const char *part)
{
	size_t n = strlen(*label), m = strlen(part);
	char *j = realloc(*label, n + m + 2);
	if (!j)
		return -ENOMEM;
	j[n] = '.';
	memcpy(j + n + 1, part, m + 1);
	*label = j;
	return 0;
}

/* fieldpath := field ('.' field)*, resolved against the snapshot fields
 * as containerd's adaptor does: only the first part names the field, the
 * rest (joined by '.') names the label. */
static int parse_fieldpath(scanner *s, term *t)
{
	char *first = NULL;
	int r = parse_field(s, &first);
	if (r < 0)
		return r;
	if (strcmp(first, "name") == 0)
		t->field = FIELD_NAME;
	else if (strcmp(first, "parent") == 0)
		t->field = FIELD_PARENT;
	else if (strcmp(first, "kind") == 0)
		t->field = FIELD_KIND;
	else if (strcmp(first, "labels") == 0)
		t->field = FIELD_LABEL;
	else
		t->field = FIELD_UNKNOWN;
	free(first);

	size_t parts = 0;
	while (peek(s) == '.') {
		(void)scan(s);
		char *part = NULL;
		r = parse_field(s, &part);
		if (r < 0)
			return r;
		if (t->field == FIELD_LABEL) {
			if (parts == 0)
				t->label = part, part = NULL;
			else if (join_label(&t->label, part) < 0)
				r = s->r = -ENOMEM;
		}
		free(part);
		if (r < 0)
			return r;
		parts++;
	}
	if (t->field == FIELD_LABEL && !t->label) {
		/* Bare "labels": the label "", which no snapshot sets. */
		t->label = strdup("");
		if (!t->label)
			return s->r = -ENOMEM;
	}
	return 0;
}

/* selector := fieldpath (operator value)? */
static int parse_term(scanner *s, term *t)
{
	int r = parse_fieldpath(s, t);
	if (r < 0)
		return r;
	int c = peek(s);
	if (c == ',' || c == -1) {
		t->op = OP_PRESENT;
		return 0;
	}

	token tok = scan(s);
	if (s->r < 0)
		return s->r;
	if (tok != TOKEN_OPERATOR)
		return scan_fail(s, s->start, "expected an operator (==, !=, ~=)");
	const char *o = s->input + s->start;
	if (s->length == 2 && memcmp(o, "==", 2) == 0)
		t->op = OP_EQUAL;
	else if (s->length == 2 && memcmp(o, "!=", 2) == 0)
		t->op = OP_NOT_EQUAL;
	else if (s->length == 2 && memcmp(o, "~=", 2) == 0)
		t->op = OP_MATCHES;
	else if (s->length == 2 && memcmp(o, "@=", 2) == 0)
		t->op = OP_CONTAINS;
	else
		return scan_fail(s, s->start, "unsupported operator \"%.*s\"", s->length > 16 ? 16 : (int)s->length, o);

	tok = scan(s);
	if (s->r < 0)
		return s->r;
	if (tok != TOKEN_VALUE && tok != TOKEN_QUOTED)
		return scan_fail(s, s->start, "expected a value or a quoted string");
	size_t at = s->start;
	t->value = token_text(s, tok);
	if (!t->value)
		return s->r = -ENOMEM;

	if (t->op == OP_MATCHES) {
		int rc = regcomp(&t->re, t->value, REG_EXTENDED | REG_NOSUB);
		if (rc != 0) {
			char what[256];
			regerror(rc, &t->re, what, sizeof(what));
			if (rc == REG_ESPACE)
				return s->r = -ENOMEM;
			return scan_fail(s, at, "bad regular expression \"%s\": %s", Q(t->value), what);
		}
		t->has_re = true;
	}
	return 0;
}

/* filters := selector (',' selector)*; "" alone matches everything. */
static int parse_one(const char *input, conjunction *ret, strata_error *err)
{
	scanner s = {.input = input, .len = strlen(input), .err = err};
	conjunction c = {0};
	size_t alloc = 0;
	int r = 0;

	while (s.len > 0) {
		if (c.n == alloc) {
			size_t a = alloc ? 2 * alloc : 4;
			term *terms = realloc(c.terms, a * sizeof(*terms));
			if (!terms) {
				r = -ENOMEM;
				break;
			}
			c.terms = terms;
			alloc = a;
		}
		c.terms[c.n] = (term){0};
		r = parse_term(&s, &c.terms[c.n]);
		c.n++; /* counted even half-built, so the release below frees it */
		if (r < 0)
			break;
		int next = peek(&s);
		if (next == -1)
			break;
		if (next != ',') {
			char unexpected[2] = {(char)next, '\0'};
			r = scan_fail(&s, s.pos, "unexpected input \"%s\"", Q(unexpected));
			break;
		}
		(void)scan(&s);
	}
	free(s.text);
	if (r == -ENOMEM && err) {
		snprintf(err->message, sizeof(err->message), "filter \"%s\": out of memory", Q(input));
		err->code = ENOMEM;
	}
	if (r < 0) {
		conjunction_release(&c);
		return r;
	}
	*ret = c;
	return 0;
}

int snap_filter_parse(char *const *filters, size_t n, snap_filter **ret, strata_error *err)
{
	if (err) {
		err->code = 0;
		err->message[0] = '\0';
	}
	snap_filter *f = calloc(1, sizeof(*f));
	if (!f || (n && !(f->alts = calloc(n, sizeof(*f->alts))))) {
		free(f);
		if (err) {
			snprintf(err->message, sizeof(err->message), "filter: out of memory");
			err->code = ENOMEM;
		}
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		int r = parse_one(filters && filters[i] ? filters[i] : "", &f->alts[i], err);
		if (r < 0) {
			snap_filter_free(f);
			return r;
		}
		f->n++;
	}
	*ret = f;
	return 0;
}

/* ---- matching ---- */

/* The field's value, as containerd's snapshot adaptor gives it: true and
 * *ret set when present, false (and *ret "") when not. */
static bool field_value(const term *t, const snap_info *info, const char **ret)
{
	*ret = "";
	switch (t->field) {
	case FIELD_NAME:
		*ret = info->key ? info->key : "";
		return true;
	case FIELD_PARENT:
		*ret = info->parent ? info->parent : "";
		return true;
	case FIELD_KIND:
		switch (info->kind) {
		case SNAP_VIEW:
			*ret = "view";
			return true;
		case SNAP_ACTIVE:
			*ret = "active";
			return true;
		case SNAP_COMMITTED:
			*ret = "committed";
			return true;
		default:
			return false;
		}
	case FIELD_LABEL:
		/* A linear scan: it does not rely on the list being sorted. */
		for (size_t i = 0; i < info->labels.n; i++) {
			const strata_kv *kv = &info->labels.items[i];
			if (kv->key && strcmp(kv->key, t->label) == 0) {
				*ret = kv->value ? kv->value : "";
				return true;
			}
		}
		return false;
	case FIELD_UNKNOWN:
	default:
		return false;
	}
}

static bool term_match(const term *t, const snap_info *info)
{
	const char *v;
	bool present = field_value(t, info, &v);
	switch (t->op) {
	case OP_PRESENT:
		return present;
	case OP_EQUAL:
		return present && strcmp(v, t->value) == 0;
	case OP_NOT_EQUAL:
		return strcmp(v, t->value) != 0;
	case OP_MATCHES:
		return regexec(&t->re, v, 0, NULL, 0) == 0;
	case OP_CONTAINS:
		return strstr(v, t->value) != NULL;
	default:
		return false;
	}
}

bool snap_filter_match(const snap_filter *f, const snap_info *info)
{
	if (!f || f->n == 0)
		return true;
	for (size_t i = 0; i < f->n; i++) {
		const conjunction *c = &f->alts[i];
		bool all = true;
		for (size_t j = 0; all && j < c->n; j++)
			all = term_match(&c->terms[j], info);
		if (all)
			return true;
	}
	return false;
}
