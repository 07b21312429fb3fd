/*
 * Optional C versions of the two per-entry loops on every read: key digests
 * (embmemo.keys.KeyScheme.keys) and record decoding (embmemo.codec.decode_many).
 *
 * Same inputs, same outputs, same rules as the Python versions, which stay the reference
 * and the fallback; tests compare the two. Whatever would make the Python version raise
 * (a text that is neither str nor bytes) makes these return None, so the caller runs the
 * Python version and its error message.
 *
 * The record layout is described in codec.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* T_OBJECT_EX */
#include <string.h>

#ifdef EMBMEMO_OPENSSL
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_*: the low-level calls skip EVP's per-call setup */
#include <openssl/sha.h>
#define SHA256_SOURCE "OpenSSL libcrypto"
#else /* a plain C compiler suffices */
#include "_sha256.h"
#define SHA256_CTX embmemo_sha256
#define SHA256_Init embmemo_sha256_init
#define SHA256_Update embmemo_sha256_update
#define SHA256_Final embmemo_sha256_final
#define SHA256_SOURCE "built in"
#endif

#define HEADER_SIZE 80
#define CRC_SIZE 4
#define DIGEST_SIZE 32
#define FLAG_BYTES_TEXT 1

static const char HEX[] = "0123456789abcdef";

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p) {
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* "{key_prefix}{64 hex digits}" as one str; the key prefix is "{namespace}:". */
static PyObject *key_string(PyObject *key_prefix, const unsigned char *digest) {
    char hex[2 * DIGEST_SIZE];
    for (int i = 0; i < DIGEST_SIZE; i++) {
        hex[2 * i] = HEX[digest[i] >> 4];
        hex[2 * i + 1] = HEX[digest[i] & 15];
    }
    if (PyUnicode_IS_COMPACT_ASCII(key_prefix)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(key_prefix);
        PyObject *key = PyUnicode_New(n + 2 * DIGEST_SIZE, 127);
        if (key == NULL) return NULL;
        memcpy(PyUnicode_DATA(key), PyUnicode_DATA(key_prefix), (size_t)n);
        memcpy((char *)PyUnicode_DATA(key) + n, hex, sizeof hex);
        return key;
    }
    PyObject *tail = PyUnicode_FromStringAndSize(hex, sizeof hex);
    if (tail == NULL) return NULL;
    PyObject *key = PyUnicode_Concat(key_prefix, tail);
    Py_DECREF(tail);
    return key;
}

/* keys(identity_prefix: bytes, key_prefix: str, texts: list | tuple) -> (keys, digests) | None */
static PyObject *keys(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyUnicode_Check(args[1])
            || !(PyList_Check(args[2]) || PyTuple_Check(args[2]))) {
        PyErr_SetString(PyExc_TypeError, "keys(identity_prefix: bytes, key_prefix: str, texts: list)");
        return NULL;
    }
    PyObject *key_prefix = args[1], *texts = args[2];
    SHA256_CTX primed;
    SHA256_Init(&primed);
    SHA256_Update(&primed, PyBytes_AS_STRING(args[0]), (size_t)PyBytes_GET_SIZE(args[0]));

    Py_ssize_t count = PySequence_Fast_GET_SIZE(texts);
    PyObject **items = PySequence_Fast_ITEMS(texts);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!PyUnicode_Check(items[i]) && !PyBytes_Check(items[i])) Py_RETURN_NONE;
    }
    PyObject *key_list = PyList_New(count), *digest_list = PyList_New(count);
    if (key_list == NULL || digest_list == NULL) goto fail;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *text = items[i], *encoded = NULL;
        const char *content;
        Py_ssize_t size;
        unsigned char tag;
        if (PyBytes_Check(text)) {
            tag = 'b';
            content = PyBytes_AS_STRING(text);
            size = PyBytes_GET_SIZE(text);
        } else {
            tag = 's';
            if (PyUnicode_IS_COMPACT_ASCII(text)) { /* its characters are its UTF-8 */
                content = PyUnicode_DATA(text);
                size = PyUnicode_GET_LENGTH(text);
            } else {
                encoded = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
                if (encoded == NULL) goto fail;
                content = PyBytes_AS_STRING(encoded);
                size = PyBytes_GET_SIZE(encoded);
            }
        }
        unsigned char sized[9], digest[DIGEST_SIZE];
        sized[0] = tag;
        for (int b = 0; b < 8; b++) sized[1 + b] = (unsigned char)((uint64_t)size >> (56 - 8 * b));
        SHA256_CTX ctx = primed;
        SHA256_Update(&ctx, sized, sizeof sized);
        SHA256_Update(&ctx, content, (size_t)size);
        SHA256_Final(digest, &ctx);
        Py_XDECREF(encoded);

        PyObject *digest_bytes = PyBytes_FromStringAndSize((const char *)digest, DIGEST_SIZE);
        if (digest_bytes == NULL) goto fail;
        PyList_SET_ITEM(digest_list, i, digest_bytes);
        PyObject *key = key_string(key_prefix, digest);
        if (key == NULL) goto fail;
        PyList_SET_ITEM(key_list, i, key);
    }
    return Py_BuildValue("(NN)", key_list, digest_list);
fail:
    Py_XDECREF(key_list);
    Py_XDECREF(digest_list);
    return NULL;
}

#define ENTRY_FIELDS 8
#define MAX_DTYPES 32

/* The context decode_many needs from codec.py, set once by configure(). */
static struct {
    PyObject *entry_type;  /* CacheEntry */
    Py_ssize_t entry_offsets[ENTRY_FIELDS]; /* where its slots are, in __init__'s order */
    PyObject *frombuffer;  /* numpy.frombuffer */
    PyObject *dtypes;      /* tuple indexed by dtype code; None where no dtype */
    uint64_t itemsizes[MAX_DTYPES]; /* each dtype's itemsize, read once by configure() */
    PyObject *crc32c;      /* google_crc32c.value */
    PyObject *loads;       /* json.loads */
    unsigned long residue; /* CRC-32C of any record with its CRC appended */
    int version;           /* FORMAT_VERSION */
} ctx;

/* The byte offsets of the entry type's object slots named in `fields`. A CacheEntry is
 * built by filling them, as its __init__ (which only assigns them) would: calling the
 * Python __init__ cost as much as everything else in decoding bar the CRC. */
static int find_slots(PyObject *entry_type, PyObject *fields, Py_ssize_t *offsets) {
    if (!PyType_Check(entry_type) || PyTuple_GET_SIZE(fields) != ENTRY_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "configure: a type and its 8 field names");
        return -1;
    }
    for (Py_ssize_t i = 0; i < ENTRY_FIELDS; i++) {
        PyObject *descr = PyObject_GetAttr(entry_type, PyTuple_GET_ITEM(fields, i));
        if (descr == NULL) return -1;
        int is_slot = Py_IS_TYPE(descr, &PyMemberDescr_Type)
            && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (is_slot) offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!is_slot) {
            PyErr_Format(PyExc_TypeError, "configure: %R is not an object slot",
                         PyTuple_GET_ITEM(fields, i));
            return -1;
        }
    }
    return 0;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *entry_type, *fields, *frombuffer, *dtypes, *crc32c, *loads;
    unsigned long residue;
    int version;
    if (!PyArg_ParseTuple(args, "OO!OO!OOki", &entry_type, &PyTuple_Type, &fields, &frombuffer,
                          &PyTuple_Type, &dtypes, &crc32c, &loads, &residue, &version))
        return NULL;
    if (find_slots(entry_type, fields, ctx.entry_offsets) < 0) return NULL;
    if (PyTuple_GET_SIZE(dtypes) > MAX_DTYPES) {
        PyErr_SetString(PyExc_ValueError, "configure: too many dtypes");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(dtypes); i++) {
        PyObject *dtype = PyTuple_GET_ITEM(dtypes, i);
        ctx.itemsizes[i] = 0;
        if (dtype == Py_None) continue;
        PyObject *itemsize = PyObject_GetAttrString(dtype, "itemsize");
        if (itemsize == NULL) return NULL;
        ctx.itemsizes[i] = PyLong_AsUnsignedLongLong(itemsize);
        Py_DECREF(itemsize);
        if (PyErr_Occurred()) return NULL;
    }
    Py_XSETREF(ctx.entry_type, Py_NewRef(entry_type));
    Py_XSETREF(ctx.frombuffer, Py_NewRef(frombuffer));
    Py_XSETREF(ctx.dtypes, Py_NewRef(dtypes));
    Py_XSETREF(ctx.crc32c, Py_NewRef(crc32c));
    Py_XSETREF(ctx.loads, Py_NewRef(loads));
    ctx.residue = residue;
    ctx.version = version;
    Py_RETURN_NONE;
}

/* A decoding failure that means "not a valid entry" (the rest propagate). */
static int swallow_invalid(void) {
    if (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_RecursionError)) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* One record: a new reference to its CacheEntry, Py_None (a miss: not valid), or NULL. */
static PyObject *decode_one(PyObject *value, PyObject *key, PyObject *digest,
                            PyObject *model_bytes, PyObject *model_name, PyObject *known_text,
                            int verified) {
    PyObject *text = NULL, *model = NULL, *metadata = NULL, *embedding = NULL, *entry = NULL;
    if (!PyBytes_Check(value) || !PyBytes_Check(digest) || PyBytes_GET_SIZE(digest) != DIGEST_SIZE)
        Py_RETURN_NONE;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(value);
    Py_ssize_t size = PyBytes_GET_SIZE(value);
    if (size < HEADER_SIZE + CRC_SIZE || memcmp(p, "EMBM", 4) != 0 || p[4] != ctx.version
            || memcmp(p + 48, PyBytes_AS_STRING(digest), DIGEST_SIZE) != 0)
        Py_RETURN_NONE;
    unsigned dtype_code = p[5], flags = p[6];
    PyObject *dtype = dtype_code < PyTuple_GET_SIZE(ctx.dtypes)
        ? PyTuple_GET_ITEM(ctx.dtypes, dtype_code) : Py_None;
    if (dtype == Py_None) Py_RETURN_NONE;
    uint64_t dim = le32(p + 8), text_len = le32(p + 12), model_len = le32(p + 16);
    uint64_t meta_len = le32(p + 20);
    unsigned output_hint = (unsigned)p[24] | (unsigned)p[25] << 8;
    uint64_t ttl_ms = le64(p + 32);
    double inserted_at;
    memcpy(&inserted_at, p + 40, sizeof inserted_at); /* little-endian hosts only: see setup.py */
    uint64_t text_start = HEADER_SIZE + dim * ctx.itemsizes[dtype_code];
    uint64_t model_start = text_start + text_len, meta_start = model_start + model_len;
    if (dim == 0 || meta_start + meta_len + CRC_SIZE != (uint64_t)size) Py_RETURN_NONE;

    if (!verified) { /* values the in-process tier checked when it took them are not */
        PyObject *crc = PyObject_CallOneArg(ctx.crc32c, value);
        if (crc == NULL) return NULL;
        unsigned long crc_value = PyLong_AsUnsignedLong(crc);
        Py_DECREF(crc);
        if (crc_value == (unsigned long)-1 && PyErr_Occurred()) return NULL;
        if (crc_value != ctx.residue) Py_RETURN_NONE;
    }

    const char *base = (const char *)p;
    if (model_bytes == Py_None) {
        model = PyUnicode_DecodeUTF8(base + model_start, (Py_ssize_t)model_len, "surrogatepass");
        if (model == NULL) goto invalid;
    } else if ((uint64_t)PyBytes_GET_SIZE(model_bytes) == model_len
               && memcmp(base + model_start, PyBytes_AS_STRING(model_bytes), model_len) == 0) {
        model = Py_NewRef(model_name);
    } else {
        Py_RETURN_NONE;
    }
    if (known_text != Py_None) {
        text = Py_NewRef(known_text);
    } else if (flags & FLAG_BYTES_TEXT) {
        text = PyBytes_FromStringAndSize(base + text_start, (Py_ssize_t)text_len);
        if (text == NULL) goto error;
    } else {
        text = PyUnicode_DecodeUTF8(base + text_start, (Py_ssize_t)text_len, "surrogatepass");
        if (text == NULL) goto invalid;
    }
    if (meta_len) {
        PyObject *raw = PyBytes_FromStringAndSize(base + meta_start, (Py_ssize_t)meta_len);
        if (raw == NULL) goto error;
        metadata = PyObject_CallOneArg(ctx.loads, raw);
        Py_DECREF(raw);
        if (metadata == NULL) goto invalid;
        if (!PyDict_CheckExact(metadata)) goto miss;
    } else {
        metadata = Py_NewRef(Py_None);
    }
    PyObject *count = PyLong_FromUnsignedLongLong(dim);
    PyObject *offset = PyLong_FromLong(HEADER_SIZE);
    if (count && offset) {
        PyObject *fb_args[] = {value, dtype, count, offset};
        embedding = PyObject_Vectorcall(ctx.frombuffer, fb_args, 4, NULL);
    }
    Py_XDECREF(count);
    Py_XDECREF(offset);
    if (embedding == NULL) goto error;
    PyObject *inserted = PyFloat_FromDouble(inserted_at);
    PyObject *ttl = ttl_ms ? PyFloat_FromDouble((double)ttl_ms / 1000) : Py_NewRef(Py_None);
    PyObject *hint = PyLong_FromUnsignedLong(output_hint);
    if (inserted && ttl && hint) {
        PyObject *fields[ENTRY_FIELDS] = {key, text, model, embedding, metadata, inserted, ttl,
                                          hint};
        entry = ((PyTypeObject *)ctx.entry_type)->tp_alloc((PyTypeObject *)ctx.entry_type, 0);
        for (int f = 0; entry != NULL && f < ENTRY_FIELDS; f++)
            *(PyObject **)((char *)entry + ctx.entry_offsets[f]) = Py_NewRef(fields[f]);
    }
    Py_XDECREF(inserted);
    Py_XDECREF(ttl);
    Py_XDECREF(hint);
    goto done;
invalid:
    if (!swallow_invalid()) goto error;
miss:
    entry = Py_NewRef(Py_None);
    goto done;
error:
    entry = NULL;
done:
    Py_XDECREF(text);
    Py_XDECREF(model);
    Py_XDECREF(metadata);
    Py_XDECREF(embedding);
    return entry;
}

/* decode_many(values, keys, digests, model_bytes, model_name, texts[, verified])
 * -> (entries, corrupt); verified: the values' CRCs were checked already. */
static PyObject *decode_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (ctx.entry_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "embmemo._speedups.configure() was not called");
        return NULL;
    }
    if (nargs != 6 && nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "decode_many takes 6 or 7 arguments");
        return NULL;
    }
    int verified = nargs == 7 ? PyObject_IsTrue(args[6]) : 0;
    if (verified < 0) return NULL;
    PyObject *seqs[4] = {NULL, NULL, NULL, NULL}, *entries = NULL;
    const char *names[4] = {"values", "keys", "digests", "texts"};
    PyObject *inputs[4] = {args[0], args[1], args[2], args[5]};
    Py_ssize_t count = -1, corrupt = 0;
    for (int s = 0; s < 4; s++) {
        if (s == 3 && inputs[s] == Py_None) continue;
        seqs[s] = PySequence_Fast(inputs[s], names[s]);
        if (seqs[s] == NULL) goto done;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seqs[s]);
        count = count < 0 || n < count ? n : count; /* zip(): the shortest */
    }
    entries = PyList_New(count);
    if (entries == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PySequence_Fast_GET_ITEM(seqs[0], i), *entry;
        if (value == Py_None) {
            entry = Py_NewRef(Py_None);
        } else {
            entry = decode_one(value, PySequence_Fast_GET_ITEM(seqs[1], i),
                               PySequence_Fast_GET_ITEM(seqs[2], i), args[3], args[4],
                               seqs[3] ? PySequence_Fast_GET_ITEM(seqs[3], i) : Py_None,
                               verified);
            if (entry == NULL) {
                Py_CLEAR(entries);
                goto done;
            }
            corrupt += entry == Py_None;
        }
        PyList_SET_ITEM(entries, i, entry);
    }
done:
    for (int s = 0; s < 4; s++) Py_XDECREF(seqs[s]);
    return entries == NULL ? NULL : Py_BuildValue("(Nn)", entries, corrupt);
}

/* due(entries, now, fraction) -> indexes of the entries whose TTL is due to slide:
 * written with a TTL, at least `fraction` of it ago. Reads the inserted_at and ttl slots
 * (the 6th and 7th of configure()'s fields); a miss (None) is skipped. */
static PyObject *due(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (ctx.entry_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "embmemo._speedups.configure() was not called");
        return NULL;
    }
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "due takes 3 arguments");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[1]), fraction = PyFloat_AsDouble(args[2]);
    if (PyErr_Occurred()) return NULL;
    PyObject *seq = PySequence_Fast(args[0], "entries");
    if (seq == NULL) return NULL;
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *entry = PySequence_Fast_GET_ITEM(seq, i);
        if (Py_TYPE(entry) != (PyTypeObject *)ctx.entry_type) continue;
        PyObject *inserted = *(PyObject **)((char *)entry + ctx.entry_offsets[5]);
        PyObject *ttl = *(PyObject **)((char *)entry + ctx.entry_offsets[6]);
        if (inserted == NULL || ttl == NULL || !PyFloat_Check(inserted) || !PyFloat_Check(ttl))
            continue;
        if (now - PyFloat_AS_DOUBLE(inserted) < PyFloat_AS_DOUBLE(ttl) * fraction) continue;
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL || PyList_Append(out, index) < 0) Py_CLEAR(out);
        Py_XDECREF(index);
    }
    Py_DECREF(seq);
    return out;
}

static PyMethodDef methods[] = {
    {"keys", (PyCFunction)(void (*)(void))keys, METH_FASTCALL,
     "keys(identity_prefix, key_prefix, texts) -> (keys, digests), or None for a text of another type"},
    {"configure", configure, METH_VARARGS,
     "configure(entry_type, fields, frombuffer, dtypes, crc32c, loads, residue, version)"},
    {"decode_many", (PyCFunction)(void (*)(void))decode_many, METH_FASTCALL,
     "decode_many(values, keys, digests, model_bytes, model_name, texts) -> (entries, corrupt)"},
    {"due", (PyCFunction)(void (*)(void))due, METH_FASTCALL,
     "due(entries, now, fraction) -> indexes of entries whose TTL is due to slide"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "embmemo._speedups",
    "C versions of embmemo's per-entry read loops (keys, decode).", -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "SHA256", SHA256_SOURCE) < 0) Py_CLEAR(m);
    return m;
}
