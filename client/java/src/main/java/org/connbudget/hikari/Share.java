package org.connbudget.hikari;

import java.util.HashMap;
import java.util.Map;

/**
 * One answer of the server, connbudget.share, checked (docs/protocol.md,
 * sections 4 and 9): every number a complete base-10 integer within its
 * range; anything else is an IllegalArgumentException whose message says
 * what is wrong with it, never a size.
 */
final class Share {
    /** The most connections, of any kind, a server may have (PostgreSQL's MAX_BACKENDS). */
    static final int MAX_BACKENDS = 262143;

    String text;
    String status;
    int maxSize;
    int minSize;
    int refreshMs;

    /**
     * Reads words key=value one space apart: its status, and for a share
     * (status ok) budget, max_size, min_size and refresh_ms, each a
     * complete integer in its range, in order. Words this client does not
     * use are skipped (later versions add words); a word that is not
     * key=value, or a word twice, is an error.
     */
    static Share parse(String text) {
        String is = "connbudget.share is " + (text == null ? "NULL" : quote(text));  // what is wrong follows
        if (text == null || text.length() > 4096 || text.indexOf('\0') >= 0) {
            throw new IllegalArgumentException(text == null ? is : is + ", not text");
        }
        Map<String, String> words = new HashMap<>();
        for (String word : text.split(" ", -1)) {
            int eq = word.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException(is + ", not words key=value");
            }
            if (words.put(word.substring(0, eq), word.substring(eq + 1)) != null) {
                throw new IllegalArgumentException(is + ": " + word.substring(0, eq) + " twice");
            }
        }
        Share sh = new Share();
        sh.text = text;
        sh.status = words.getOrDefault("status", "");
        if (!sh.status.matches("ok|other|left|refused")) {
            throw new IllegalArgumentException(is + ": no status this client knows");
        }
        if (sh.status.equals("ok")) {  // a share; other: not governed, left: handed back, refused: governed no more
            // 0 <= min_size <= max_size <= budget <= MAX_BACKENDS
            sh.maxSize = number(is, words, "max_size", 0, number(is, words, "budget", 0, MAX_BACKENDS));
            sh.minSize = number(is, words, "min_size", 0, sh.maxSize);
            sh.refreshMs = number(is, words, "refresh_ms", 10, 3600000);
        }
        return sh;
    }

    /** The number key names, within [lo, hi]. */
    private static int number(String is, Map<String, String> words, String key, int lo, int hi) {
        String value = words.get(key);
        int n = value == null ? -1 : within(value, lo, hi, -1);
        if (n < 0) {
            throw new IllegalArgumentException(is + ": " + key + (value == null ? " is missing" : value.matches("-?[0-9]+")
                    ? " is out of range [" + lo + ", " + hi + "]" : " is not an integer"));
        }
        return n;
    }

    /**
     * text as every number from a server is read: all of it ASCII digits
     * after an optional '-' (no '+', no space, no other script's digits),
     * within [lo, hi] (lo at least 0); otherwise if it is not.
     */
    static int within(String text, int lo, int hi, int otherwise) {
        long n = text.matches("-?[0-9]{1,18}") ? Long.parseLong(text) : Long.MIN_VALUE;
        return n < lo || n > hi ? otherwise : (int) n;
    }

    /**
     * A number of ms from the context field of a refusal,
     * "connbudget: retry_ms=N lease_ms=M protocol=2": key's value, if it
     * is from 10 to 3600000, else otherwise.
     */
    static int contextMs(String where, String key, int otherwise) {
        if (where != null && where.startsWith("connbudget: ")) {
            for (String word : where.substring(12).split("[ \n]")) {
                if (word.startsWith(key + "=")) {
                    return within(word.substring(key.length() + 1), 10, 3600000, otherwise);
                }
            }
        }
        return otherwise;
    }

    /**
     * A server's value for a log line: quoted, at most 64 characters of
     * it, anything but printable ASCII escaped, so that an answer cannot
     * forge or flood log lines.
     */
    static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        s.chars().limit(64).forEach(c -> out.append(c == '"' || c == '\\' ? "\\" + (char) c
                : c >= 0x20 && c < 0x7f ? String.valueOf((char) c) : String.format("\\u%04x", c)));
        return out.append(s.length() > 64 ? "\"..." : "\"").toString();
    }
}
