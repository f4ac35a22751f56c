package org.connbudget.hikari;

import java.util.HashSet;
import java.util.Set;

/**
 * One answer of the server, checked (docs/protocol.md, sections 4 and 9).
 * Every number is a complete base-10 integer within its range; anything
 * else is an {@link Invalid} answer, never a size.
 */
final class Share {
    /** The bounds of what a server may answer. */
    static final int MAX_BACKENDS = 262143;
    static final int MIN_REFRESH_MS = 10;
    static final int MAX_REFRESH_MS = 3600000;
    static final int MAX_TEXT = 4096;
    static final int MAX_PODS = 1000000;

    /** What the share says of the pool. */
    static final String OK = "ok";            // a share: sizes within [min_size, max_size]
    static final String OTHER = "other";      // not governed: a fixed size
    static final String LEFT = "left";        // handed back; a report brings it back
    static final String REFUSED = "refused";  // governed no more: sqlstate and reason say why

    /** The kinds of invalid answers, as counted in {@link ConnBudget#getErrors()}. */
    static final String BAD_SHAPE = "answer-shape";  // not one row of the expected columns
    static final String BAD_NULL = "answer-null";    // NULL where a value must be
    static final String BAD_TEXT = "answer-text";    // not words key=value, not a number, no known status
    static final String BAD_RANGE = "answer-range";  // a number out of its range
    static final String BAD_ORDER = "answer-order";  // min_size > max_size or max_size > budget

    String status;
    int maxSize;
    int minSize;
    int budget;
    int refreshMs;
    int allocation = -1;  // -1: not said
    int pods = -1;        // -1: not said
    String sqlstate = "";
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

    /**
     * Reads connbudget.share: words key=value one space apart. Words this
     * client does not know are skipped (later versions add words); a known
     * word twice, a word without a key and '=', a number that is not a
     * complete integer in its range, an unknown status, or a status "ok"
     * without max_size, min_size, budget and refresh_ms in order, is an
     * error.
     */
    static Share parse(String text) throws Invalid {
        if (text == null) {
            throw new Invalid(BAD_NULL, "connbudget.share is NULL");
        }
        if (text.length() > MAX_TEXT || text.indexOf('\0') >= 0) {
            throw new Invalid(BAD_TEXT, "connbudget.share is " + quote(text) + ", not text");
        }
        Share sh = new Share();
        Set<String> seen = new HashSet<>();
        for (String word : text.split(" ", -1)) {
            int eq = word.indexOf('=');
            if (eq <= 0) {
                throw new Invalid(BAD_TEXT, "connbudget.share is " + quote(text) + ", not words key=value");
            }
            String key = word.substring(0, eq);
            String value = word.substring(eq + 1);
            long lo = 0;
            long hi = MAX_BACKENDS;
            boolean number = true;
            switch (key) {
                case "status":
                    number = false;
                    if (!value.equals(OK) && !value.equals(OTHER) && !value.equals(LEFT) && !value.equals(REFUSED)) {
                        throw new Invalid(BAD_TEXT, "connbudget.share is " + quote(text) + ": no status this client knows");
                    }
                    sh.status = value;
                    break;
                case "protocol":
                    lo = 2;
                    hi = 1000;
                    break;
                case "sqlstate":
                    number = false;
                    if (value.matches("[0-9A-Z]{5}")) {
                        sh.sqlstate = value;
                    }
                    break;
                case "reason":
                    number = false;
                    if (value.matches("[a-z_]{1,32}")) {
                        sh.reason = value;
                    }
                    break;
                case "pods":
                    hi = MAX_PODS;
                    break;
                case "refresh_ms":
                    lo = MIN_REFRESH_MS;
                    hi = MAX_REFRESH_MS;
                    break;
                case "max_size":
                case "min_size":
                case "budget":
                case "allocation":
                    break;
                default:
                    continue;  // a later version's word
            }
            if (!seen.add(key)) {
                throw new Invalid(BAD_SHAPE, "connbudget.share is " + quote(text) + ": " + key + " twice");
            }
            if (!number) {
                continue;
            }
            String bad = check(value, lo, hi);
            if (bad != null && key.equals("protocol")) {
                throw new Invalid(BAD_TEXT, "connbudget.share is " + quote(text) + ": protocol is not a version");
            }
            if (bad != null) {
                throw new Invalid(bad, "connbudget.share is " + quote(text) + ": " + key
                        + (bad.equals(BAD_TEXT) ? " is not an integer" : " is out of range [" + lo + ", " + hi + "]"));
            }
            int v = Integer.parseInt(value);
            switch (key) {
                case "max_size": sh.maxSize = v; break;
                case "min_size": sh.minSize = v; break;
                case "budget": sh.budget = v; break;
                case "allocation": sh.allocation = v; break;
                case "pods": sh.pods = v; break;
                case "refresh_ms": sh.refreshMs = v; break;
                default: break;  // protocol: a version, checked
            }
        }
        if (sh.status == null) {
            throw new Invalid(BAD_TEXT, "connbudget.share is " + quote(text) + ": no status");
        }
        if (!sh.status.equals(OK)) {
            return sh;
        }
        if (!seen.contains("max_size") || !seen.contains("min_size") || !seen.contains("budget")
                || !seen.contains("refresh_ms")) {
            throw new Invalid(BAD_SHAPE, "connbudget.share is " + quote(text)
                    + ": a share without max_size, min_size, budget and refresh_ms");
        }
        return sh.inOrder("connbudget.share");
    }

    /**
     * Reads an answer of connbudget.pool_share() (protocol 1): max_size,
     * min_size, budget and refresh_ms, none NULL, each a complete integer
     * in its range, in order.
     */
    static Share parsePoolShare(String[] values) throws Invalid {
        String[] names = {"max_size", "min_size", "budget", "refresh_ms"};
        if (values.length != names.length) {
            throw new Invalid(BAD_SHAPE, "connbudget.pool_share() answered " + values.length + " columns, not 4");
        }
        int[] v = new int[4];
        for (int i = 0; i < 4; i++) {
            if (values[i] == null) {
                throw new Invalid(BAD_NULL, "connbudget.pool_share() answered NULL for " + names[i]);
            }
            long lo = i == 3 ? MIN_REFRESH_MS : 0;
            long hi = i == 3 ? MAX_REFRESH_MS : MAX_BACKENDS;
            String bad = check(values[i], lo, hi);
            if (bad != null) {
                throw new Invalid(bad, "connbudget.pool_share() answered " + names[i] + " " + quote(values[i])
                        + ", not an integer in [" + lo + ", " + hi + "]");
            }
            v[i] = Integer.parseInt(values[i]);
        }
        Share sh = new Share();
        sh.status = OK;
        sh.maxSize = v[0];
        sh.minSize = v[1];
        sh.budget = v[2];
        sh.refreshMs = v[3];
        return sh.inOrder("connbudget.pool_share()");
    }

    private Share inOrder(String what) throws Invalid {
        if (minSize > maxSize) {
            throw new Invalid(BAD_ORDER, what + " answered min_size " + minSize + " above max_size " + maxSize);
        }
        if (maxSize > budget) {
            throw new Invalid(BAD_ORDER, what + " answered max_size " + maxSize + " above budget " + budget);
        }
        return this;
    }

    /**
     * Is text a number as every number from a server is read: all of it
     * ASCII digits after an optional '-' (no '+', no space, no other
     * script's digits), within [lo, hi]? null if it is, else the kind.
     */
    static String check(String text, long lo, long hi) {
        int start = text.startsWith("-") ? 1 : 0;
        if (text.length() == start) {
            return BAD_TEXT;
        }
        for (int i = start; i < text.length(); i++) {
            char c = text.charAt(i);
            if (c < '0' || c > '9') {
                return BAD_TEXT;
            }
        }
        if (text.length() - start > 18) {
            return BAD_RANGE;
        }
        long v = Long.parseLong(text);
        return v < lo || v > hi ? BAD_RANGE : null;
    }

    /**
     * The number of milliseconds after lead in text, ended by tail (or,
     * with an empty tail, by a space or the end): a pace from 10 to
     * 3600000 ms; 0 when text states none. It reads the pace of a
     * refusal, "connbudget: retry_ms=N lease_ms=M protocol=2" in its
     * context field, or connbudget 1.1's hint "... every N ms ...".
     */
    static int statedMs(String text, String lead, String tail) {
        if (text == null) {
            return 0;
        }
        int at = text.indexOf(lead);
        if (at < 0) {
            return 0;
        }
        int start = at + lead.length();
        int end = start;
        while (end < text.length() && end - start <= 10 && text.charAt(end) >= '0' && text.charAt(end) <= '9') {
            end++;
        }
        if (end == start || end - start > 10) {
            return 0;
        }
        if (tail.isEmpty() ? end < text.length() && text.charAt(end) != ' ' && text.charAt(end) != '\n'
                : !text.startsWith(tail, end)) {
            return 0;
        }
        String digits = text.substring(start, end);
        return check(digits, MIN_REFRESH_MS, MAX_REFRESH_MS) == null ? Integer.parseInt(digits) : 0;
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
