package org.connbudget.hikari;

import java.util.HashMap;
import java.util.Map;

/**
 * One answer of the server, connbudget.share, checked (docs/protocol.md,
 * sections 4 and 9): every number a complete base-10 integer within its
 * range; anything else is an {@link Invalid} answer, never a size.
 */
final class Share {
    static final String OK = "ok";            // a share: sizes within [min_size, max_size]
    static final String OTHER = "other";      // not governed: a fixed size
    static final String REFUSED = "refused";  // governed no more: sqlstate and reason say why

    /** The kinds of invalid answers, as counted in {@link ConnBudget#getErrors()}. */
    static final String BAD_SHAPE = "answer-shape";  // not one row, a word twice, a share without its numbers
    static final String BAD_NULL = "answer-null";
    static final String BAD_TEXT = "answer-text";    // not words key=value, not a number, no known status
    static final String BAD_RANGE = "answer-range";
    static final String BAD_ORDER = "answer-order";  // min_size > max_size or max_size > budget

    /** The most connections, of any kind, a server may have (PostgreSQL's MAX_BACKENDS). */
    static final int MAX_BACKENDS = 262143;

    String status;
    int maxSize;
    int minSize;
    int budget;
    int refreshMs;
    String sqlstate = "";  // of status refused
    String reason = "";

    /** An answer that is not one; its kind names what was wrong, so that
        each kind is logged once however often a server repeats it. */
    static final class Invalid extends Exception {
        private static final long serialVersionUID = 1L;
        final String kind;

        Invalid(String kind, String message) {
            super(message);
            this.kind = kind;
        }
    }

    private static Invalid invalid(String kind, String text, String what) {
        return new Invalid(kind, "connbudget.share is " + quote(text) + what);
    }

    /**
     * Reads words key=value one space apart: its status, and for a share
     * (status ok) max_size, min_size, budget and refresh_ms, each a
     * complete integer in its range, in order. Words this client does not
     * use are skipped (later versions add words); a word that is not
     * key=value, or a word twice, is an error.
     */
    static Share parse(String text) throws Invalid {
        if (text == null) {
            throw new Invalid(BAD_NULL, "connbudget.share is NULL");
        }
        if (text.length() > 4096 || text.indexOf('\0') >= 0) {
            throw invalid(BAD_TEXT, text, ", not text");
        }
        Map<String, String> words = new HashMap<>();
        for (String word : text.split(" ", -1)) {
            int eq = word.indexOf('=');
            if (eq <= 0) {
                throw invalid(BAD_TEXT, text, ", not words key=value");
            }
            if (words.put(word.substring(0, eq), word.substring(eq + 1)) != null) {
                throw invalid(BAD_SHAPE, text, ": " + word.substring(0, eq) + " twice");
            }
        }
        Share sh = new Share();
        sh.status = words.getOrDefault("status", "");
        if (!sh.status.matches("ok|other|left|refused")) {
            throw invalid(BAD_TEXT, text, ": no status this client knows");
        }
        sh.sqlstate = words.getOrDefault("sqlstate", "").matches("[0-9A-Z]{5}") ? words.get("sqlstate") : "";
        sh.reason = words.getOrDefault("reason", "").matches("[a-z_]{1,32}") ? words.get("reason") : "";
        if (sh.status.equals(OK)) {
            sh.maxSize = number(text, words, "max_size");
            sh.minSize = number(text, words, "min_size");
            sh.budget = number(text, words, "budget");
            sh.refreshMs = number(text, words, "refresh_ms");
            if (sh.minSize > sh.maxSize || sh.maxSize > sh.budget) {
                throw invalid(BAD_ORDER, text, ": not min_size <= max_size <= budget");
            }
        }
        return sh;
    }

    /** The number key names, from 0 to MAX_BACKENDS (refresh_ms: from 10 to 3600000). */
    private static int number(String text, Map<String, String> words, String key) throws Invalid {
        String value = words.get(key);
        long lo = key.equals("refresh_ms") ? 10 : 0;
        long hi = key.equals("refresh_ms") ? 3600000 : MAX_BACKENDS;
        String bad = value == null ? BAD_SHAPE : check(value, lo, hi);
        if (bad != null) {
            throw invalid(bad, text, ": " + key + (value == null ? " is missing" : bad.equals(BAD_TEXT)
                    ? " is not an integer" : " is out of range [" + lo + ", " + hi + "]"));
        }
        return Integer.parseInt(value);
    }

    /**
     * Is text a number as every number from a server is read: all of it
     * ASCII digits after an optional '-' (no '+', no space, no other
     * script's digits), within [lo, hi]? null if it is, else the kind.
     */
    static String check(String text, long lo, long hi) {
        if (!text.matches("-?[0-9]{1,18}")) {
            return text.matches("-?[0-9]+") ? BAD_RANGE : BAD_TEXT;
        }
        long v = Long.parseLong(text);
        return v < lo || v > hi ? BAD_RANGE : null;
    }

    /**
     * A number of ms from the context field of a refusal,
     * "connbudget: retry_ms=N lease_ms=M protocol=2": key's value, if it
     * is from 10 to 3600000, else 0.
     */
    static int contextMs(String where, String key) {
        if (where == null || !where.startsWith("connbudget: ")) {
            return 0;
        }
        for (String word : where.substring(12).split("[ \n]")) {
            if (word.startsWith(key + "=")) {
                String value = word.substring(key.length() + 1);
                return check(value, 10, 3600000) == null ? Integer.parseInt(value) : 0;
            }
        }
        return 0;
    }

    /**
     * A server's value for a log line: quoted, at most 64 characters of
     * it, anything but printable ASCII escaped, so that an answer cannot
     * forge or flood log lines.
     */
    static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (int i = 0; i < s.length() && i < 64; i++) {
            char c = s.charAt(i);
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c >= 0x20 && c < 0x7f) {
                out.append(c);
            } else {
                out.append(String.format("\\u%04x", (int) c));
            }
        }
        return out.append(s.length() > 64 ? "\"..." : "\"").toString();
    }
}
