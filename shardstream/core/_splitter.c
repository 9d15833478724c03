/*
 * _splitter: a streaming JSON validator that cuts out the exact bytes of each
 * value found at one ijson-style prefix (e.g. "data.item").
 *
 * It accepts what ijson's yajl2_c backend (as used by parse.ItemParser)
 * accepts, and rejects the rest; see split.py for the few deliberate
 * differences. A byte-at-a-time state machine; string bodies get a fast loop.
 * Only the bytes of the item being scanned are buffered across feeds.
 *
 * Prefix semantics mirror ijson's C parse_basecoro: the prefix of a map's
 * value is  key  when the map is the top-level value, else  prefix "." key;
 * the prefix of an array element is  "item"  when the array's prefix is "",
 * else  prefix ".item". Keys are compared after unescaping them as yajl does
 * (a lone high surrogate escape decodes to "?"). The state tracks, per
 * nesting level, how many bytes of each target prefix the current prefix
 * matches (-1: not a prefix of the target any more).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include <stdint.h>

/* Word-at-a-time byte tests (a byte of x below n, or zero), for n <= 128. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
#define HAS_ZERO(x) (((x) - ONES) & ~(x) & HIGHS)
#define HAS_LESS(x, n) (((x) - ONES * (n)) & ~(x) & HIGHS)

enum {
    S_VALUE,        /* a value must come */
    S_ARR_FIRST,    /* after '[': a value or ']' */
    S_OBJ_FIRST,    /* after '{': a key or '}' */
    S_OBJ_KEY,      /* after ',' in an object: a key */
    S_COLON,        /* after a key */
    S_AFTER,        /* after a value: ',' or the closer, or (top level) only whitespace */
    S_STR,          /* inside a string */
    S_ESC,          /* after a backslash */
    S_HEX,          /* in the 4 hex digits of \u */
    S_HIGH,         /* after \uD8xx-\uDBxx: a second \u pairs with it */
    S_HIGH_BS,      /* after \uD8xx and a backslash */
    S_UTF8,         /* inside a multi-byte UTF-8 sequence */
    S_LIT,          /* inside true / false / null */
    S_NUM_MINUS, S_NUM_ZERO, S_NUM_INT, S_NUM_DOT, S_NUM_FRAC,
    S_NUM_E, S_NUM_ESIGN, S_NUM_EXP,
    S_ERROR
};

enum { T_WAIT, T_NUM, T_DONE };   /* total states */

typedef struct {
    char type;          /* '[' or '{' */
    int mi, mt;         /* matched length of this container's own prefix */
    int cmi, cmt;       /* matched length of the current child's prefix */
} Frame;

typedef struct {
    PyObject_HEAD
    char *ti; int li, lp;          /* items prefix (utf-8), its length, its parent's length */
    char *tt; int lt;              /* total prefix, lt < 0: none */
    int max_depth;
    Frame *stack; int depth, cap;  /* stack[0 .. depth-1] */
    int st;                        /* lexer/parser state */
    int is_key;                    /* the string being scanned is a key */
    int kpi, kpt;                  /* key matching positions into ti / tt */
    int str_bad;                   /* string holds something yajl passes but Python can't decode */
    unsigned hex, nhex, high, second; /* \u decoding */
    int utf_need; unsigned char utf_lo, utf_hi; /* continuation bytes left; range of the next one */
    const char *lit; int lit_pos;
    int started;                   /* the top-level value has begun */
    int done;                      /* the top-level value is complete */
    /* capture */
    int capturing, cap_depth;
    Py_ssize_t cap_start;          /* start in the current chunk, -1: in buf */
    char *buf; Py_ssize_t blen, bcap;
    /* total */
    int tstate, tdepth; int tneg_ok;
    char *tbuf; Py_ssize_t tlen, tcap;
    PyObject *total;
    int saw_list;
    PyObject *error;               /* None or message */
    PyObject *error_kind;          /* None, "malformed" or "truncated" */
    Py_ssize_t offset;
    int closed;
    int odd_ws;                    /* a \v or \f was skipped as whitespace (see SKIP_WS) */
    const char *doomed;            /* the token being lexed is not allowed here: why */
} Splitter;

static PyObject *KIND_MALFORMED, *KIND_TRUNCATED;

static int grow(char **b, Py_ssize_t *cap, Py_ssize_t need)
{
    if (need <= *cap) return 0;
    Py_ssize_t n = *cap ? *cap : 256;
    while (n < need) n *= 2;
    char *p = PyMem_Realloc(*b, n);
    if (!p) { PyErr_NoMemory(); return -1; }
    *b = p; *cap = n;
    return 0;
}

static int append(char **b, Py_ssize_t *len, Py_ssize_t *cap, const char *d, Py_ssize_t n)
{
    if (grow(b, cap, *len + n) < 0) return -1;
    memcpy(*b + *len, d, n);
    *len += n;
    return 0;
}

static char *utf8_of(PyObject *s, int *len)
{
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (!u) return NULL;
    if (n > INT_MAX / 2) { PyErr_SetString(PyExc_ValueError, "prefix too long"); return NULL; }
    char *c = PyMem_Malloc(n + 1);
    if (!c) { PyErr_NoMemory(); return NULL; }
    memcpy(c, u, n + 1);
    *len = (int)n;
    return c;
}

/* The dotted join of path parts, as ItemParser's prefix string. */
static PyObject *join_parts(PyObject *parts)
{
    PyObject *dot = PyUnicode_FromString(".");
    if (!dot) return NULL;
    PyObject *r = PyUnicode_Join(dot, parts);
    Py_DECREF(dot);
    return r;
}

static int Splitter_init(Splitter *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"items_path_parts", "total_path_parts", "max_depth", NULL};
    PyObject *ip, *tp = Py_None;
    int max_depth = 10000;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!|Oi", kwlist, &PyTuple_Type, &ip, &tp, &max_depth))
        return -1;
    if (tp != Py_None && !PyTuple_Check(tp)) {
        PyErr_SetString(PyExc_TypeError, "total_path_parts must be a tuple or None");
        return -1;
    }
    if (max_depth < 1) { PyErr_SetString(PyExc_ValueError, "max_depth must be >= 1"); return -1; }
    if (self->ti) { PyErr_SetString(PyExc_RuntimeError, "already initialised"); return -1; }
    PyObject *s = join_parts(ip);
    if (!s) return -1;
    self->ti = utf8_of(s, &self->li);
    Py_DECREF(s);
    if (!self->ti) return -1;
    self->lp = 0;
    for (int i = self->li - 1; i >= 0; i--)
        if (self->ti[i] == '.') { self->lp = i; break; }
    self->lt = -1;
    if (tp != Py_None) {
        s = join_parts(tp);
        if (!s) return -1;
        self->tt = utf8_of(s, &self->lt);
        Py_DECREF(s);
        if (!self->tt) return -1;
    }
    self->max_depth = max_depth;
    self->st = S_VALUE;
    self->tstate = self->lt < 0 ? T_DONE : T_WAIT;
    Py_INCREF(Py_None); self->total = Py_None;
    Py_INCREF(Py_None); self->error = Py_None;
    Py_INCREF(Py_None); self->error_kind = Py_None;
    return 0;
}

static void Splitter_dealloc(Splitter *self)
{
    PyMem_Free(self->ti); PyMem_Free(self->tt); PyMem_Free(self->stack);
    PyMem_Free(self->buf); PyMem_Free(self->tbuf);
    Py_XDECREF(self->total); Py_XDECREF(self->error); Py_XDECREF(self->error_kind);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- prefix arithmetic ---- */

static inline int child_item(const char *t, int l, int m)
{
    if (m < 0) return -1;
    if (m == 0) return (l >= 4 && memcmp(t, "item", 4) == 0) ? 4 : -1;
    return (l >= m + 5 && memcmp(t + m, ".item", 5) == 0) ? m + 5 : -1;
}

static inline int key_begin(const char *t, int l, int m, int root)
{
    if (m < 0) return -1;
    if (root) return 0;
    return (m < l && t[m] == '.') ? m + 1 : -1;
}

static inline void key_byte(Splitter *s, unsigned char c)
{
    if (s->kpi >= 0) s->kpi = (s->kpi < s->li && (unsigned char)s->ti[s->kpi] == c) ? s->kpi + 1 : -1;
    if (s->kpt >= 0) s->kpt = (s->kpt < s->lt && (unsigned char)s->tt[s->kpt] == c) ? s->kpt + 1 : -1;
}

static void key_codepoint(Splitter *s, unsigned cp)
{
    unsigned char b[4]; int n;
    if (cp < 0x80) { b[0] = cp; n = 1; }
    else if (cp < 0x800) { b[0] = 0xC0 | (cp >> 6); b[1] = 0x80 | (cp & 0x3F); n = 2; }
    else if (cp < 0x10000) { b[0] = 0xE0 | (cp >> 12); b[1] = 0x80 | ((cp >> 6) & 0x3F); b[2] = 0x80 | (cp & 0x3F); n = 3; }
    else { b[0] = 0xF0 | (cp >> 18); b[1] = 0x80 | ((cp >> 12) & 0x3F); b[2] = 0x80 | ((cp >> 6) & 0x3F); b[3] = 0x80 | (cp & 0x3F); n = 4; }
    for (int i = 0; i < n; i++) key_byte(s, b[i]);
}

/* ---- errors and items ---- */

static void fail(Splitter *s, PyObject *kind, const char *msg, Py_ssize_t pos)
{
    Py_SETREF(s->error, PyUnicode_FromFormat("%s (at byte %zd)", msg, pos));
    if (!s->error) { PyErr_Clear(); Py_INCREF(Py_None); s->error = Py_None; }
    Py_INCREF(kind);
    Py_SETREF(s->error_kind, kind);
    s->st = S_ERROR;
}

/* Emit the captured item, ending (exclusively) at chunk offset `end`. */
static int emit(Splitter *s, const char *chunk, Py_ssize_t end, PyObject *out)
{
    PyObject *b;
    if (s->cap_start >= 0) {
        b = PyBytes_FromStringAndSize(chunk + s->cap_start, end - s->cap_start);
    } else {
        if (end > 0 && append(&s->buf, &s->blen, &s->bcap, chunk, end) < 0) return -1;
        b = PyBytes_FromStringAndSize(s->buf, s->blen);
        s->blen = 0;
        if (s->bcap > (1 << 20)) { PyMem_Free(s->buf); s->buf = NULL; s->bcap = 0; }
    }
    if (!b) return -1;
    if (s->odd_ws) {  /* a fresh bytes object, not yet shared: mend it in place */
        char *p = PyBytes_AS_STRING(b);
        for (Py_ssize_t k = 0, n = PyBytes_GET_SIZE(b); k < n; k++)
            if (p[k] == '\v' || p[k] == '\f') p[k] = ' ';
        s->odd_ws = 0;
    }
    int r = PyList_Append(out, b);
    Py_DECREF(b);
    s->capturing = 0;
    return r;
}

static void set_total_from_tbuf(Splitter *s)
{
    /* an integer (no fraction/exponent), non-negative or -0 */
    if (s->tneg_ok) {
        if (grow(&s->tbuf, &s->tcap, s->tlen + 1) < 0) { PyErr_Clear(); return; }
        s->tbuf[s->tlen] = 0;
        if (s->tbuf[0] == '-' && !(s->tlen == 2 && s->tbuf[1] == '0')) return;  /* negative */
        PyObject *v = PyLong_FromString(s->tbuf, NULL, 10);
        if (!v) { PyErr_Clear(); return; }   /* e.g. over int_max_str_digits */
        Py_SETREF(s->total, v);
    }
}

/* A scalar or container value begins at chunk offset pos, in the current frame's child slot. */
static inline int value_begin(Splitter *s, Py_ssize_t pos, int mi, int mt, char kind)
{
    if (!s->capturing && mi == s->li) {
        s->capturing = 1; s->cap_depth = s->depth; s->cap_start = pos;
    }
    if (s->tstate == T_WAIT && mt == s->lt) {
        if (kind == '0') { s->tstate = T_NUM; s->tlen = 0; s->tneg_ok = 1; s->tdepth = s->depth; }
        else s->tstate = T_DONE;
    }
    if (kind == '[' && mi == s->lp && mi >= 0) s->saw_list = 1;
    s->started = 1;
    return 0;
}

/* A value at depth s->depth just ended; end is exclusive. Then move to S_AFTER. */
static inline int value_end(Splitter *s, const char *chunk, Py_ssize_t end, PyObject *out)
{
    if (s->capturing && s->cap_depth == s->depth) {
        if (emit(s, chunk, end, out) < 0) return -1;
    }
    if (s->depth == 0) s->done = 1;
    s->st = S_AFTER;
    return 0;
}

static int push(Splitter *s, char type, int mi, int mt)
{
    if (s->depth >= s->max_depth) return 1;
    if (s->depth == s->cap) {
        int n = s->cap ? s->cap * 2 : 32;
        Frame *f = PyMem_Realloc(s->stack, n * sizeof(Frame));
        if (!f) { PyErr_NoMemory(); return -1; }
        s->stack = f; s->cap = n;
    }
    Frame *f = &s->stack[s->depth++];
    f->type = type; f->mi = mi; f->mt = mt;
    if (type == '[') { f->cmi = child_item(s->ti, s->li, mi); f->cmt = s->lt < 0 ? -1 : child_item(s->tt, s->lt, mt); }
    else { f->cmi = -1; f->cmt = -1; }
    return 0;
}

/* whitespace as yajl sees it: also \v and \f */
static unsigned char WS[256], PLAIN[256], HEXV[256];

/* Finish a number that has just been terminated (c not consumed). */
static inline int number_end(Splitter *s, const char *chunk, Py_ssize_t i, PyObject *out)
{
    if (s->tstate == T_NUM && s->tdepth == s->depth) {
        set_total_from_tbuf(s);
        s->tstate = T_DONE;
    }
    return value_end(s, chunk, i, out);
}

/* yajl reports a token the grammar does not allow only once the lexer has
 * the whole token: an unfinished one at the end of the body is "truncated". */
static inline int doom(Splitter *s, unsigned char c, const char *why)
{
    s->doomed = why;
    if (c == '"') { s->is_key = 0; s->str_bad = 0; s->st = S_STR; return 1; }
    if (c == '-' || (c >= '0' && c <= '9')) { s->st = c == '-' ? S_NUM_MINUS : c == '0' ? S_NUM_ZERO : S_NUM_INT; return 1; }
    if (c == 't' || c == 'f' || c == 'n') {
        s->lit = c == 't' ? "true" : c == 'f' ? "false" : "null"; s->lit_pos = 1; s->st = S_LIT; return 1;
    }
    s->doomed = NULL;
    return 0;
}

/* \v and \f are whitespace to yajl but not to JSON (RFC 8259): an item that
 * holds one gets a space instead when it is emitted (outside strings, where
 * a raw control character is an error anyway, they can only be whitespace). */
#define SKIP_WS(c) do { if ((c) == '\v' || (c) == '\f') s->odd_ws = 1; } while (0)
#define FAIL(msg) do { fail(s, KIND_MALFORMED, msg, s->offset + i); goto out; } while (0)
#define CUR_MI() (s->depth ? s->stack[s->depth - 1].cmi : 0)
#define CUR_MT() (s->depth ? s->stack[s->depth - 1].cmt : (s->lt < 0 ? -1 : 0))

static PyObject *run(Splitter *s, const char *d, Py_ssize_t n, PyObject *out)
{
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)d[i];
        switch (s->st) {
        case S_VALUE: case S_ARR_FIRST:
            if (WS[c]) { SKIP_WS(c); i++; break; }
            if (s->done) FAIL("trailing garbage after the document");
            if (c == ']' && s->st == S_ARR_FIRST) {
                s->depth--; if (value_end(s, d, i + 1, out) < 0) return NULL; i++; break;
            }
            {
                int mi = CUR_MI(), mt = CUR_MT();
                if (c == '{' || c == '[') {
                    value_begin(s, i, mi, mt, c);
                    int r = push(s, c, mi, mt);
                    if (r < 0) return NULL;
                    if (r > 0) FAIL("nesting too deep");
                    s->st = c == '{' ? S_OBJ_FIRST : S_ARR_FIRST;
                    i++; break;
                }
                if (c == '"') { value_begin(s, i, mi, mt, '"'); s->is_key = 0; s->str_bad = 0; s->st = S_STR; i++; break; }
                if (c == '-' || (c >= '0' && c <= '9')) {
                    value_begin(s, i, mi, mt, '0');
                    s->st = c == '-' ? S_NUM_MINUS : c == '0' ? S_NUM_ZERO : S_NUM_INT;
                    if (s->tstate == T_NUM && append(&s->tbuf, &s->tlen, &s->tcap, (char *)&c, 1) < 0) return NULL;
                    i++; break;
                }
                if (c == 't' || c == 'f' || c == 'n') {
                    value_begin(s, i, mi, mt, 'l');
                    s->lit = c == 't' ? "true" : c == 'f' ? "false" : "null"; s->lit_pos = 1; s->st = S_LIT;
                    i++; break;
                }
                FAIL("invalid character where a value should be");
            }
        case S_OBJ_FIRST: case S_OBJ_KEY:
            if (WS[c]) { SKIP_WS(c); i++; break; }
            if (c == '}' && s->st == S_OBJ_FIRST) {
                s->depth--; if (value_end(s, d, i + 1, out) < 0) return NULL; i++; break;
            }
            if (c != '"') {
                if (doom(s, c, "an object key should be here")) { i++; break; }
                FAIL("an object key should be here");
            }
            {
                Frame *f = &s->stack[s->depth - 1];
                int root = s->depth == 1;
                s->kpi = key_begin(s->ti, s->li, f->mi, root);
                s->kpt = s->lt < 0 ? -1 : key_begin(s->tt, s->lt, f->mt, root);
            }
            s->is_key = 1; s->str_bad = 0; s->st = S_STR; i++; break;
        case S_COLON:
            if (WS[c]) { SKIP_WS(c); i++; break; }
            if (c != ':') {
                if (doom(s, c, "':' expected after an object key")) { i++; break; }
                FAIL("':' expected after an object key");
            }
            s->st = S_VALUE; i++; break;
        case S_AFTER:
            if (WS[c]) { SKIP_WS(c); i++; break; }
            if (s->depth == 0) FAIL("trailing garbage after the document");
            {
                Frame *f = &s->stack[s->depth - 1];
                if (c == ',') { s->st = f->type == '[' ? S_VALUE : S_OBJ_KEY; i++; break; }
                if ((c == ']' && f->type == '[') || (c == '}' && f->type == '{')) {
                    s->depth--; if (value_end(s, d, i + 1, out) < 0) return NULL; i++; break;
                }
                const char *why = f->type == '[' ? "',' or ']' expected in an array"
                                                 : "',' or '}' expected in an object";
                if (doom(s, c, why)) { i++; break; }
                FAIL(why);
            }
        case S_STR:
            if (!s->is_key || (s->kpi < 0 && s->kpt < 0)) {
                /* the fast loop: eight bytes at a time while none is a quote, a
                 * backslash, a control character or a non-ASCII byte */
                while (i + 8 <= n) {
                    uint64_t x;
                    memcpy(&x, d + i, 8);
                    if ((HAS_LESS(x, 0x20) | HAS_ZERO(x ^ (ONES * '"')) |
                         HAS_ZERO(x ^ (ONES * '\\')) | (x & HIGHS)) != 0) break;
                    i += 8;
                }
                while (i < n && PLAIN[(unsigned char)d[i]]) i++;
                if (i == n) break;
                c = (unsigned char)d[i];
            } else if (PLAIN[c]) { key_byte(s, c); i++; break; }
            if (c == '"') {
                if (s->doomed) FAIL(s->doomed);
                if (s->str_bad) FAIL("a string that is not valid UTF-8 once decoded");
                if (s->is_key) {
                    Frame *f = &s->stack[s->depth - 1];
                    f->cmi = s->kpi; f->cmt = s->kpt;
                    s->st = S_COLON; i++; break;
                }
                if (s->tstate == T_NUM) { /* unreachable: strings end totals at begin */ }
                if (value_end(s, d, i + 1, out) < 0) return NULL;
                i++; break;
            }
            if (c == '\\') { s->st = S_ESC; i++; break; }
            if (c < 0x20) FAIL("control character inside a string");
            /* c >= 0x80: UTF-8 as yajl checks it (lead byte class + 10xxxxxx continuations);
             * what it lets through but Python's strict decoder refuses is noted in str_bad */
            if (s->is_key) key_byte(s, c);
            if (c >= 0xC0 && c <= 0xDF) { s->utf_need = 1; if (c < 0xC2) s->str_bad = 1; s->utf_lo = 0x80; s->utf_hi = 0xBF; }
            else if (c >= 0xE0 && c <= 0xEF) {
                s->utf_need = 2; s->utf_lo = c == 0xE0 ? 0xA0 : 0x80; s->utf_hi = c == 0xED ? 0x9F : 0xBF;
            } else if (c >= 0xF0 && c <= 0xF7) {
                s->utf_need = 3; if (c > 0xF4) s->str_bad = 1;
                s->utf_lo = c == 0xF0 ? 0x90 : 0x80; s->utf_hi = c == 0xF4 ? 0x8F : 0xBF;
            } else FAIL("invalid UTF-8 byte inside a string");
            s->st = S_UTF8; i++; break;
        case S_UTF8:
            if ((c & 0xC0) != 0x80) FAIL("invalid UTF-8 continuation byte inside a string");
            if (c < s->utf_lo || c > s->utf_hi) s->str_bad = 1;
            s->utf_lo = 0x80; s->utf_hi = 0xBF;
            if (s->is_key) key_byte(s, c);
            if (--s->utf_need == 0) s->st = S_STR;
            i++; break;
        case S_ESC: {
            unsigned char e;
            switch (c) {
            case '"': e = '"'; break; case '\\': e = '\\'; break; case '/': e = '/'; break;
            case 'b': e = '\b'; break; case 'f': e = '\f'; break; case 'n': e = '\n'; break;
            case 'r': e = '\r'; break; case 't': e = '\t'; break;
            case 'u': s->hex = 0; s->nhex = 0; s->second = 0; s->st = S_HEX; i++; continue;
            default: FAIL("invalid escape in a string");
            }
            if (s->is_key) key_byte(s, e);
            s->st = S_STR; i++; break;
        }
        case S_HEX:
            if (HEXV[c] == 0xFF) FAIL("invalid \\u escape in a string");
            s->hex = (s->hex << 4) | HEXV[c];
            i++;
            if (++s->nhex < 4) break;
            if (s->second) {
                /* yajl combines a high surrogate with whatever \u follows it */
                unsigned h = s->high, cp = ((h & 0x3F) << 10) | ((((h >> 6) & 0xF) + 1) << 16) | (s->hex & 0x3FF);
                if (s->is_key) key_codepoint(s, cp);
                s->st = S_STR;
            } else if ((s->hex & 0xFC00) == 0xD800) {
                s->high = s->hex; s->st = S_HIGH;
            } else {
                if ((s->hex & 0xFC00) == 0xDC00) s->str_bad = 1;   /* lone low surrogate */
                if (s->is_key) key_codepoint(s, s->hex);
                s->st = S_STR;
            }
            break;
        case S_HIGH:
            if (c == '\\') { s->st = S_HIGH_BS; i++; break; }
            if (s->is_key) key_byte(s, '?');
            s->st = S_STR; break;                 /* reprocess c */
        case S_HIGH_BS:
            if (c == 'u') { s->hex = 0; s->nhex = 0; s->second = 1; s->st = S_HEX; i++; break; }
            if (s->is_key) key_byte(s, '?');
            s->st = S_ESC; break;                 /* reprocess c as an escape */
        case S_LIT:
            if (c != (unsigned char)s->lit[s->lit_pos]) FAIL("invalid literal");
            i++;
            if (s->lit[++s->lit_pos] == 0) {
                if (s->doomed) FAIL(s->doomed);
                if (value_end(s, d, i, out) < 0) return NULL;
            }
            break;
        default: {  /* numbers */
            int st = s->st, next = -1;
            if (c >= '0' && c <= '9') {
                switch (st) {
                case S_NUM_MINUS: next = c == '0' ? S_NUM_ZERO : S_NUM_INT; break;
                case S_NUM_INT: next = S_NUM_INT; break;
                case S_NUM_DOT: case S_NUM_FRAC: next = S_NUM_FRAC; break;
                case S_NUM_E: case S_NUM_ESIGN: case S_NUM_EXP: next = S_NUM_EXP; break;
                }
            } else if (c == '.' && (st == S_NUM_ZERO || st == S_NUM_INT)) next = S_NUM_DOT;
            else if ((c == 'e' || c == 'E') && (st == S_NUM_ZERO || st == S_NUM_INT || st == S_NUM_FRAC)) next = S_NUM_E;
            else if ((c == '+' || c == '-') && st == S_NUM_E) next = S_NUM_ESIGN;
            if (next >= 0) {
                if (s->tstate == T_NUM) {
                    if (next == S_NUM_DOT || next == S_NUM_E) s->tneg_ok = 0;
                    if (append(&s->tbuf, &s->tlen, &s->tcap, (char *)&c, 1) < 0) return NULL;
                }
                s->st = next; i++; break;
            }
            if (st == S_NUM_ZERO || st == S_NUM_INT || st == S_NUM_FRAC || st == S_NUM_EXP) {
                if (s->doomed) FAIL(s->doomed);
                if (number_end(s, d, i, out) < 0) return NULL;
                break;                            /* reprocess c */
            }
            FAIL("malformed number");
        }
        }
    }
out:
    return out;
}

static PyObject *Splitter_feed(Splitter *s, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = PyList_New(0);
    if (!out) { PyBuffer_Release(&view); return NULL; }
    if (s->st == S_ERROR) { PyBuffer_Release(&view); return out; }
    if (s->closed) {
        PyErr_SetString(PyExc_ValueError, "feed() after close()");
        goto bad;
    }
    const char *d = view.buf;
    Py_ssize_t n = view.len;
    if (!run(s, d, n, out)) goto bad;
    if (s->st != S_ERROR && s->capturing) {   /* keep the unfinished item's bytes */
        Py_ssize_t from = s->cap_start >= 0 ? s->cap_start : 0;
        if (append(&s->buf, &s->blen, &s->bcap, d + from, n - from) < 0) goto bad;
        s->cap_start = -1;
    }
    s->offset += n;
    PyBuffer_Release(&view);
    return out;
bad:
    PyBuffer_Release(&view);
    Py_DECREF(out);
    return NULL;
}

static PyObject *Splitter_close(Splitter *s, PyObject *noarg)
{
    PyObject *out = PyList_New(0);
    if (!out || s->st == S_ERROR || s->closed) return out;
    s->closed = 1;
    int st = s->st;
    if (!s->doomed && (st == S_NUM_ZERO || st == S_NUM_INT || st == S_NUM_FRAC || st == S_NUM_EXP)) {
        /* like yajl_complete_parse: the number ends here; the total is not
         * updated any more (ItemParser never closes its total coroutine) */
        if (s->tstate == T_NUM) s->tstate = T_DONE;
        if (value_end(s, "", 0, out) < 0) { Py_DECREF(out); return NULL; }
    }
    if (!s->done) fail(s, KIND_TRUNCATED, "the body ended before the JSON document did", s->offset);
    return out;
}

static PyObject *get_saw_list(Splitter *s, void *c) { return PyBool_FromLong(s->saw_list); }
static PyObject *get_done(Splitter *s, void *c) { return PyBool_FromLong(s->done); }
static PyObject *get_depth(Splitter *s, void *c) { return PyLong_FromLong(s->depth); }
static PyObject *get_buffered(Splitter *s, void *c) { return PyLong_FromSsize_t(s->blen); }

static PyGetSetDef Splitter_getset[] = {
    {"saw_list", (getter)get_saw_list, NULL, "an array began at the items prefix's parent", NULL},
    {"done", (getter)get_done, NULL, "the top-level value is complete", NULL},
    {"depth", (getter)get_depth, NULL, "current nesting depth", NULL},
    {"buffered", (getter)get_buffered, NULL, "bytes of the unfinished item held", NULL},
    {NULL}
};

static PyMemberDef Splitter_members[] = {
    {"total", T_OBJECT, offsetof(Splitter, total), READONLY, "the total (int >= 0) or None"},
    {"error", T_OBJECT, offsetof(Splitter, error), READONLY, "None, or what was wrong"},
    {"error_kind", T_OBJECT, offsetof(Splitter, error_kind), READONLY,
     "None, 'malformed' or 'truncated'"},
    {"offset", T_PYSSIZET, offsetof(Splitter, offset), READONLY, "bytes fed so far"},
    {NULL}
};

static PyMethodDef Splitter_methods[] = {
    {"feed", (PyCFunction)Splitter_feed, METH_O,
     "feed(data) -> list[bytes]: the items this chunk completed; check .error afterwards"},
    {"close", (PyCFunction)Splitter_close, METH_NOARGS,
     "close() -> list[bytes]: end of input; check .error afterwards"},
    {NULL}
};

static PyTypeObject SplitterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shardstream.core._splitter.Splitter",
    .tp_basicsize = sizeof(Splitter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Splitter(items_path_parts, total_path_parts=None, max_depth=10000)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Splitter_init,
    .tp_dealloc = (destructor)Splitter_dealloc,
    .tp_methods = Splitter_methods,
    .tp_members = Splitter_members,
    .tp_getset = Splitter_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_splitter", "Native JSON item splitter.", -1};

PyMODINIT_FUNC PyInit__splitter(void)
{
    for (int c = 0; c < 256; c++) {
        WS[c] = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
        PLAIN[c] = c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
        HEXV[c] = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 0xFF;
    }
    KIND_MALFORMED = PyUnicode_InternFromString("malformed");
    KIND_TRUNCATED = PyUnicode_InternFromString("truncated");
    if (!KIND_MALFORMED || !KIND_TRUNCATED) return NULL;
    if (PyType_Ready(&SplitterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&SplitterType);
    if (PyModule_AddObject(m, "Splitter", (PyObject *)&SplitterType) < 0) {
        Py_DECREF(&SplitterType); Py_DECREF(m); return NULL;
    }
    return m;
}
