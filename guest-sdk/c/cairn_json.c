/* JSON values for the Cairn C SDK: parse, build, read and write. */

#include "cairn.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cairn_json {
    cairn_json_type type;
    bool boolean;
    /* A number's literal text, or a string's UTF-8 bytes (NUL-terminated). */
    char *text;
    /* Array elements or object values, with object keys beside them. */
    cairn_json **items;
    char **keys;
    size_t length;
    size_t capacity;
};

static void *checked(void *p) {
    if (p == NULL) {
        fputs("cairn: out of memory\n", stderr);
        abort();
    }
    return p;
}

static char *copy(const char *s) { return checked(strdup(s)); }

static cairn_json *make(cairn_json_type type) {
    cairn_json *value = checked(calloc(1, sizeof *value));
    value->type = type;
    return value;
}

void cairn_json_free(cairn_json *value) {
    if (value == NULL) return;
    for (size_t i = 0; i < value->length; i++) {
        cairn_json_free(value->items[i]);
        if (value->keys) free(value->keys[i]);
    }
    free(value->items);
    free(value->keys);
    free(value->text);
    free(value);
}

cairn_json *cairn_json_null(void) { return make(CAIRN_JSON_NULL); }

cairn_json *cairn_json_bool(bool b) {
    cairn_json *value = make(CAIRN_JSON_BOOL);
    value->boolean = b;
    return value;
}

static cairn_json *number(const char *text) {
    cairn_json *value = make(CAIRN_JSON_NUMBER);
    value->text = copy(text);
    return value;
}

cairn_json *cairn_json_int(int64_t n) {
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, n);
    return number(text);
}

cairn_json *cairn_json_uint(uint64_t n) {
    char text[24];
    snprintf(text, sizeof text, "%" PRIu64, n);
    return number(text);
}

cairn_json *cairn_json_double(double n) {
    if (!isfinite(n)) return cairn_json_null();
    /* The shortest digits that read back as n, then laid out as Rust's ryu
     * (and so serde_json) lays them out: "1.0", "0.001", "1e+16", "1.5e-7". */
    char text[40];
    for (int precision = 0; precision < 17; precision++) {
        snprintf(text, sizeof text, "%.*e", precision, n);
        if (strtod(text, NULL) == n) break;
    }
    char digits[24];
    int count = 0;
    const char *p = text;
    bool negative = *p == '-';
    if (negative) p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[count++] = *p;
    while (count > 1 && digits[count - 1] == '0') count--;
    int point = atoi(p + 1) + 1; /* digits before the decimal point */
    char out[48];
    int o = 0;
    if (negative) out[o++] = '-';
    if (count <= point && point <= 16) {
        for (int i = 0; i < point; i++) out[o++] = i < count ? digits[i] : '0';
        out[o++] = '.';
        out[o++] = '0';
    } else if (0 < point && point <= 16) {
        for (int i = 0; i < count; i++) {
            if (i == point) out[o++] = '.';
            out[o++] = digits[i];
        }
    } else if (-5 < point && point <= 0) {
        out[o++] = '0';
        out[o++] = '.';
        for (int i = point; i < 0; i++) out[o++] = '0';
        for (int i = 0; i < count; i++) out[o++] = digits[i];
    } else {
        out[o++] = digits[0];
        if (count > 1) {
            out[o++] = '.';
            for (int i = 1; i < count; i++) out[o++] = digits[i];
        }
        o += snprintf(out + o, sizeof out - (size_t)o, point > 0 ? "e+%d" : "e%d", point - 1);
    }
    out[o] = 0;
    return number(out);
}

cairn_json *cairn_json_string(const char *s) {
    if (s == NULL) return cairn_json_null();
    cairn_json *value = make(CAIRN_JSON_STRING);
    value->text = copy(s);
    return value;
}

cairn_json *cairn_json_array(void) { return make(CAIRN_JSON_ARRAY); }
cairn_json *cairn_json_object(void) { return make(CAIRN_JSON_OBJECT); }

static void grow(cairn_json *container) {
    if (container->length < container->capacity) return;
    container->capacity = container->capacity ? container->capacity * 2 : 4;
    container->items = checked(realloc(container->items, container->capacity * sizeof *container->items));
    if (container->type == CAIRN_JSON_OBJECT)
        container->keys = checked(realloc(container->keys, container->capacity * sizeof *container->keys));
}

cairn_json *cairn_json_append(cairn_json *array, cairn_json *item) {
    if (array == NULL || array->type != CAIRN_JSON_ARRAY) {
        cairn_json_free(item);
        return array;
    }
    grow(array);
    array->items[array->length++] = item ? item : cairn_json_null();
    return array;
}

cairn_json *cairn_json_set(cairn_json *object, const char *key, cairn_json *value) {
    if (object == NULL || object->type != CAIRN_JSON_OBJECT || key == NULL) {
        cairn_json_free(value);
        return object;
    }
    if (value == NULL) value = cairn_json_null();
    for (size_t i = 0; i < object->length; i++) {
        if (strcmp(object->keys[i], key) == 0) {
            cairn_json_free(object->items[i]);
            object->items[i] = value;
            return object;
        }
    }
    grow(object);
    object->keys[object->length] = copy(key);
    object->items[object->length++] = value;
    return object;
}

cairn_json *cairn_json_clone(const cairn_json *value) {
    if (value == NULL) return NULL;
    cairn_json *clone = make(value->type);
    clone->boolean = value->boolean;
    if (value->text) clone->text = copy(value->text);
    for (size_t i = 0; i < value->length; i++) {
        if (value->type == CAIRN_JSON_OBJECT)
            cairn_json_set(clone, value->keys[i], cairn_json_clone(value->items[i]));
        else
            cairn_json_append(clone, cairn_json_clone(value->items[i]));
    }
    return clone;
}

cairn_json_type cairn_json_typeof(const cairn_json *value) { return value ? value->type : CAIRN_JSON_NULL; }

const cairn_json *cairn_json_get(const cairn_json *object, const char *key) {
    if (object == NULL || object->type != CAIRN_JSON_OBJECT || key == NULL) return NULL;
    for (size_t i = 0; i < object->length; i++)
        if (strcmp(object->keys[i], key) == 0) return object->items[i];
    return NULL;
}

size_t cairn_json_length(const cairn_json *value) {
    return value && (value->type == CAIRN_JSON_ARRAY || value->type == CAIRN_JSON_OBJECT) ? value->length : 0;
}

const cairn_json *cairn_json_at(const cairn_json *value, size_t index) {
    return index < cairn_json_length(value) ? value->items[index] : NULL;
}

const char *cairn_json_key_at(const cairn_json *object, size_t index) {
    return object && object->type == CAIRN_JSON_OBJECT && index < object->length ? object->keys[index] : NULL;
}

const char *cairn_json_as_string(const cairn_json *value) {
    return value && value->type == CAIRN_JSON_STRING ? value->text : NULL;
}

const char *cairn_json_get_string(const cairn_json *object, const char *key) {
    return cairn_json_as_string(cairn_json_get(object, key));
}

bool cairn_json_as_bool(const cairn_json *value, bool *out) {
    if (value == NULL || value->type != CAIRN_JSON_BOOL) return false;
    *out = value->boolean;
    return true;
}

static bool is_integer_text(const char *text) { return strpbrk(text, ".eE") == NULL; }

bool cairn_json_as_u64(const cairn_json *value, uint64_t *out) {
    if (value == NULL || value->type != CAIRN_JSON_NUMBER || !is_integer_text(value->text) || value->text[0] == '-')
        return false;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(value->text, &end, 10);
    if (errno || *end) return false;
    *out = n;
    return true;
}

bool cairn_json_as_i64(const cairn_json *value, int64_t *out) {
    if (value == NULL || value->type != CAIRN_JSON_NUMBER || !is_integer_text(value->text)) return false;
    char *end;
    errno = 0;
    long long n = strtoll(value->text, &end, 10);
    if (errno || *end) return false;
    *out = n;
    return true;
}

bool cairn_json_as_double(const cairn_json *value, double *out) {
    if (value == NULL || value->type != CAIRN_JSON_NUMBER) return false;
    *out = strtod(value->text, NULL);
    return true;
}

/* ------------------------------------------------------------- writing -- */

typedef struct {
    char *data;
    size_t length;
    size_t capacity;
} buffer;

static void put(buffer *b, const char *s, size_t n) {
    if (b->length + n + 1 > b->capacity) {
        while (b->length + n + 1 > b->capacity) b->capacity = b->capacity ? b->capacity * 2 : 64;
        b->data = checked(realloc(b->data, b->capacity));
    }
    memcpy(b->data + b->length, s, n);
    b->length += n;
    b->data[b->length] = 0;
}

static void puts_(buffer *b, const char *s) { put(b, s, strlen(s)); }

static void put_string(buffer *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': puts_(b, "\\\""); break;
        case '\\': puts_(b, "\\\\"); break;
        case '\b': puts_(b, "\\b"); break;
        case '\f': puts_(b, "\\f"); break;
        case '\n': puts_(b, "\\n"); break;
        case '\r': puts_(b, "\\r"); break;
        case '\t': puts_(b, "\\t"); break;
        default:
            if (*p < 0x20) {
                char escaped[] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
                put(b, escaped, sizeof escaped);
            } else {
                put(b, (const char *)p, 1);
            }
        }
    }
    put(b, "\"", 1);
}

static void write_value(buffer *b, const cairn_json *value) {
    switch (cairn_json_typeof(value)) {
    case CAIRN_JSON_NULL: puts_(b, "null"); break;
    case CAIRN_JSON_BOOL: puts_(b, value->boolean ? "true" : "false"); break;
    case CAIRN_JSON_NUMBER: puts_(b, value->text); break;
    case CAIRN_JSON_STRING: put_string(b, value->text); break;
    case CAIRN_JSON_ARRAY:
        put(b, "[", 1);
        for (size_t i = 0; i < value->length; i++) {
            if (i) put(b, ",", 1);
            write_value(b, value->items[i]);
        }
        put(b, "]", 1);
        break;
    case CAIRN_JSON_OBJECT:
        put(b, "{", 1);
        for (size_t i = 0; i < value->length; i++) {
            if (i) put(b, ",", 1);
            put_string(b, value->keys[i]);
            put(b, ":", 1);
            write_value(b, value->items[i]);
        }
        put(b, "}", 1);
        break;
    }
}

char *cairn_json_dump(const cairn_json *value) {
    buffer b = {0};
    write_value(&b, value);
    return b.data;
}

/* ------------------------------------------------------------- reading -- */

enum { MAX_DEPTH = 256 };

typedef struct {
    const char *p;
    const char *start;
    const char *end;
    char *error;
} parser;

static void fail(parser *ps, const char *what) {
    if (ps->error) return;
    size_t offset = (size_t)(ps->p - ps->start);
    size_t n = (size_t)snprintf(NULL, 0, "%s at byte %zu", what, offset) + 1;
    ps->error = checked(malloc(n));
    snprintf(ps->error, n, "%s at byte %zu", what, offset);
}

static void skip_space(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static bool literal(parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return false;
    ps->p += n;
    return true;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_hex4(parser *ps, uint32_t *out) {
    if (ps->end - ps->p < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(ps->p[i]);
        if (d < 0) return false;
        v = v * 16 + (uint32_t)d;
    }
    ps->p += 4;
    *out = v;
    return true;
}

static void put_utf8(buffer *b, uint32_t c) {
    char s[4];
    if (c < 0x80) {
        s[0] = (char)c;
        put(b, s, 1);
    } else if (c < 0x800) {
        s[0] = (char)(0xc0 | (c >> 6));
        s[1] = (char)(0x80 | (c & 0x3f));
        put(b, s, 2);
    } else if (c < 0x10000) {
        s[0] = (char)(0xe0 | (c >> 12));
        s[1] = (char)(0x80 | ((c >> 6) & 0x3f));
        s[2] = (char)(0x80 | (c & 0x3f));
        put(b, s, 3);
    } else {
        s[0] = (char)(0xf0 | (c >> 18));
        s[1] = (char)(0x80 | ((c >> 12) & 0x3f));
        s[2] = (char)(0x80 | ((c >> 6) & 0x3f));
        s[3] = (char)(0x80 | (c & 0x3f));
        put(b, s, 4);
    }
}

/* A string's contents after the opening quote; NULL on error. */
static char *read_string(parser *ps) {
    buffer b = {0};
    put(&b, "", 0);
    while (ps->p < ps->end) {
        unsigned char c = (unsigned char)*ps->p++;
        if (c == '"') return b.data;
        if (c < 0x20) {
            ps->p--;
            fail(ps, "control character in a string");
            break;
        }
        if (c == 0) {
            fail(ps, "NUL in a string");
            break;
        }
        if (c != '\\') {
            put(&b, (const char *)&c, 1);
            continue;
        }
        if (ps->p >= ps->end) break;
        char e = *ps->p++;
        switch (e) {
        case '"': put(&b, "\"", 1); break;
        case '\\': put(&b, "\\", 1); break;
        case '/': put(&b, "/", 1); break;
        case 'b': put(&b, "\b", 1); break;
        case 'f': put(&b, "\f", 1); break;
        case 'n': put(&b, "\n", 1); break;
        case 'r': put(&b, "\r", 1); break;
        case 't': put(&b, "\t", 1); break;
        case 'u': {
            uint32_t code;
            if (!read_hex4(ps, &code)) {
                fail(ps, "bad \\u escape");
                free(b.data);
                return NULL;
            }
            if (code >= 0xd800 && code < 0xdc00) {
                uint32_t low;
                if (!literal(ps, "\\u") || !read_hex4(ps, &low) || low < 0xdc00 || low >= 0xe000) {
                    fail(ps, "unpaired surrogate in a \\u escape");
                    free(b.data);
                    return NULL;
                }
                code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
            } else if (code >= 0xdc00 && code < 0xe000) {
                fail(ps, "unpaired surrogate in a \\u escape");
                free(b.data);
                return NULL;
            } else if (code == 0) {
                fail(ps, "\\u0000 in a string");
                free(b.data);
                return NULL;
            }
            put_utf8(&b, code);
            break;
        }
        default:
            fail(ps, "bad escape in a string");
            free(b.data);
            return NULL;
        }
    }
    fail(ps, "unterminated string");
    free(b.data);
    return NULL;
}

static cairn_json *read_number(parser *ps) {
    const char *start = ps->p;
    if (ps->p < ps->end && *ps->p == '-') ps->p++;
    if (ps->p >= ps->end) goto bad;
    if (*ps->p == '0') {
        ps->p++;
    } else if (*ps->p >= '1' && *ps->p <= '9') {
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    } else {
        goto bad;
    }
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') goto bad;
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') goto bad;
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    }
    {
        char *text = checked(strndup(start, (size_t)(ps->p - start)));
        if (isinf(strtod(text, NULL))) {
            /* As serde_json: a number no double can hold is an error. */
            free(text);
            ps->p = start;
            fail(ps, "number out of range");
            return NULL;
        }
        cairn_json *value = make(CAIRN_JSON_NUMBER);
        value->text = text;
        return value;
    }
bad:
    fail(ps, "bad number");
    return NULL;
}

static cairn_json *read_value(parser *ps, int depth) {
    skip_space(ps);
    if (depth > MAX_DEPTH) {
        fail(ps, "nested too deeply");
        return NULL;
    }
    if (ps->p >= ps->end) {
        fail(ps, "unexpected end of input");
        return NULL;
    }
    char c = *ps->p;
    if (c == '{') {
        ps->p++;
        cairn_json *object = cairn_json_object();
        skip_space(ps);
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return object;
        }
        for (;;) {
            skip_space(ps);
            if (ps->p >= ps->end || *ps->p != '"') {
                fail(ps, "expected a key");
                break;
            }
            ps->p++;
            char *key = read_string(ps);
            if (key == NULL) break;
            skip_space(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                free(key);
                fail(ps, "expected ':'");
                break;
            }
            ps->p++;
            cairn_json *member = read_value(ps, depth + 1);
            if (member == NULL) {
                free(key);
                break;
            }
            cairn_json_set(object, key, member);
            free(key);
            skip_space(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == '}') {
                ps->p++;
                return object;
            }
            fail(ps, "expected ',' or '}'");
            break;
        }
        cairn_json_free(object);
        return NULL;
    }
    if (c == '[') {
        ps->p++;
        cairn_json *array = cairn_json_array();
        skip_space(ps);
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return array;
        }
        for (;;) {
            cairn_json *item = read_value(ps, depth + 1);
            if (item == NULL) break;
            cairn_json_append(array, item);
            skip_space(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == ']') {
                ps->p++;
                return array;
            }
            fail(ps, "expected ',' or ']'");
            break;
        }
        cairn_json_free(array);
        return NULL;
    }
    if (c == '"') {
        ps->p++;
        char *text = read_string(ps);
        if (text == NULL) return NULL;
        cairn_json *value = make(CAIRN_JSON_STRING);
        value->text = text;
        return value;
    }
    if (literal(ps, "null")) return cairn_json_null();
    if (literal(ps, "true")) return cairn_json_bool(true);
    if (literal(ps, "false")) return cairn_json_bool(false);
    if (c == '-' || (c >= '0' && c <= '9')) return read_number(ps);
    fail(ps, "unexpected character");
    return NULL;
}

cairn_json *cairn_json_parse(const char *text, size_t len, char **error) {
    parser ps = {.p = text, .start = text, .end = text + len, .error = NULL};
    cairn_json *value = text ? read_value(&ps, 0) : NULL;
    if (value) {
        skip_space(&ps);
        if (ps.p != ps.end) {
            fail(&ps, "trailing characters");
            cairn_json_free(value);
            value = NULL;
        }
    } else if (!ps.error) {
        fail(&ps, "no input");
    }
    if (error) *error = ps.error;
    else free(ps.error);
    return value;
}

/* ------------------------------------------------------------ failures -- */

cairn_failure cairn_failure_new(const char *kind, const char *message) {
    cairn_failure failure = {copy(kind ? kind : "error"), copy(message ? message : ""), NULL};
    return failure;
}

char *cairn_failure_to_string(const cairn_failure *failure) {
    const char *kind = failure->kind ? failure->kind : "error";
    const char *message = failure->message ? failure->message : "";
    size_t n = strlen(kind) + strlen(message) + 3;
    char *text = checked(malloc(n));
    snprintf(text, n, "%s: %s", kind, message);
    return text;
}

void cairn_failure_free(cairn_failure *failure) {
    free(failure->kind);
    free(failure->message);
    cairn_json_free(failure->details);
    failure->kind = failure->message = NULL;
    failure->details = NULL;
}

void cairn_outcome_free(cairn_outcome *outcome) {
    cairn_json_free(outcome->value);
    outcome->value = NULL;
    cairn_failure_free(&outcome->failure);
}
