package org.connbudget.hikari;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** The answers a server may give, and the ones it may not (docs/protocol.md, sections 4 and 9). */
class ShareTest {
    private static final String GOOD = "max_size=5 min_size=1 budget=80 refresh_ms=1000";

    @Test
    void readsAShare() throws Exception {
        Share sh = Share.parse("protocol=2 status=ok max_size=5 min_size=1 allocation=10 pods=2 budget=80 "
                + "refresh_ms=1000 connections=4");
        assertEquals(Share.OK, sh.status);
        assertEquals(5, sh.maxSize);
        assertEquals(1, sh.minSize);
        assertEquals(80, sh.budget);
        assertEquals(1000, sh.refreshMs);
        assertEquals(10, sh.allocation);
        assertEquals(2, sh.pods);
    }

    @Test
    void skipsWordsOfLaterVersions() throws Exception {
        Share sh = Share.parse("status=ok " + GOOD + " weight=3 zone=eu-west-1 note=" + "x".repeat(300)
                + " protocol=7");
        assertEquals(5, sh.maxSize);
        assertEquals(-1, sh.allocation);
    }

    @Test
    void readsTheOtherStatuses() throws Exception {
        assertEquals(Share.OTHER, Share.parse("protocol=2 status=other refresh_ms=200").status);
        Share left = Share.parse("status=left max_size=0 min_size=0 budget=40 refresh_ms=200");
        assertEquals(Share.LEFT, left.status);
        Share refused = Share.parse("status=refused sqlstate=42501 reason=pod_of_another_role");
        assertEquals(Share.REFUSED, refused.status);
        assertEquals("42501", refused.sqlstate);
        assertEquals("pod_of_another_role", refused.reason);
        // a reason or sqlstate that is not one is not kept, and not a size either
        Share odd = Share.parse("status=refused sqlstate=4250 reason=DROP\u00a0TABLE");
        assertEquals("", odd.sqlstate);
        assertEquals("", odd.reason);
    }

    @Test
    void acceptsTheBounds() throws Exception {
        Share sh = Share.parse("status=ok max_size=262143 min_size=0 budget=262143 refresh_ms=3600000");
        assertEquals(262143, sh.maxSize);
        assertEquals(10, Share.parse("status=ok max_size=0 min_size=0 budget=0 refresh_ms=10").refreshMs);
    }

    /** Hostile or broken answers: each an error of its kind, never a size. */
    @ParameterizedTest(name = "[{index}] {1}: {0}")
    @CsvSource(delimiter = '|', quoteCharacter = '`', value = {
        "``|answer-text",
        "` `|answer-text",
        "status=ok|answer-shape",
        "status=ok max_size=5 min_size=1 budget=80|answer-shape",
        "max_size=5 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=ok max_size=+5 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=ok max_size=5.0 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=ok max_size=0x5 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=ok max_size=1e3 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=ok max_size= min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=ok max_size=- min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=ok max_size=\uff15 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=ok max_size=\u0663 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=ok max_size=-1 min_size=0 budget=80 refresh_ms=1000|answer-range",
        "status=ok max_size=99999999999999999999999 min_size=1 budget=80 refresh_ms=1000|answer-range",
        "status=ok max_size=9223372036854775808 min_size=1 budget=80 refresh_ms=1000|answer-range",
        "status=ok max_size=5 min_size=1 budget=262144 refresh_ms=1000|answer-range",
        "status=ok max_size=5 min_size=1 budget=80 refresh_ms=9|answer-range",
        "status=ok max_size=5 min_size=1 budget=80 refresh_ms=3600001|answer-range",
        "status=ok max_size=5 min_size=1 budget=80 refresh_ms=1000 pods=1000001|answer-range",
        "status=ok max_size=5 min_size=6 budget=80 refresh_ms=1000|answer-order",
        "status=ok max_size=81 min_size=1 budget=80 refresh_ms=1000|answer-order",
        "status=ok  max_size=5 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "` status=ok max_size=5 min_size=1 budget=80 refresh_ms=1000`|answer-text",
        "`status=ok max_size=5 min_size=1 budget=80 refresh_ms=1000 `|answer-text",
        "status=ok max_size 5 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=ok =5 max_size=5 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=ok\tmax_size=5 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=ok max_size=5 max_size=6 min_size=1 budget=80 refresh_ms=1000|answer-shape",
        "status=ok status=ok max_size=5 min_size=1 budget=80 refresh_ms=1000|answer-shape",
        "status=OK max_size=5 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "status=bogus|answer-text",
        "status=|answer-text",
        "protocol=1 status=ok max_size=5 min_size=1 budget=80 refresh_ms=1000|answer-text",
        "protocol=two status=ok max_size=5 min_size=1 budget=80 refresh_ms=1000|answer-text",
    })
    void refusesWhatIsNotAnAnswer(String text, String kind) {
        Share.Invalid e = assertThrows(Share.Invalid.class, () -> Share.parse(text));
        assertEquals(kind, e.kind, e.getMessage());
    }

    @Test
    void refusesNulAndFloods() {
        assertEquals(Share.BAD_TEXT, assertThrows(Share.Invalid.class,
                () -> Share.parse("status=ok\0 " + GOOD)).kind);
        assertEquals(Share.BAD_TEXT, assertThrows(Share.Invalid.class,
                () -> Share.parse("status=ok " + GOOD + " x=" + "9".repeat(5000))).kind);
        assertEquals(Share.BAD_NULL, assertThrows(Share.Invalid.class, () -> Share.parse(null)).kind);
    }

    @Test
    void quotesWhatItLogs() {
        Share.Invalid e = assertThrows(Share.Invalid.class,
                () -> Share.parse("status=ok max_size=5\nFATAL: forged min_size=1 budget=80 refresh_ms=1000"));
        assertTrue(e.getMessage().contains("\\u000a"), e.getMessage());
        assertTrue(!e.getMessage().contains("\n"), e.getMessage());
        assertTrue(Share.quote("y".repeat(1000)).length() < 80);
    }

    @Test
    void readsPoolShare() throws Exception {
        Share sh = Share.parsePoolShare(new String[] {"4", "1", "40", "200"});
        assertEquals(4, sh.maxSize);
        assertEquals(1, sh.minSize);
        assertEquals(40, sh.budget);
        assertEquals(200, sh.refreshMs);
    }

    @ParameterizedTest(name = "[{index}] {4}: {0} {1} {2} {3}")
    @CsvSource({
        "4, 1, 40, ,       answer-null",
        ", 1, 40, 200,     answer-null",
        "4, 1, 40, 5,      answer-range",
        "4, 1, 262144, 200, answer-range",
        "' 4', 1, 40, 200, answer-text",
        "4.5, 1, 40, 200,  answer-text",
        "-4, 1, 40, 200,   answer-range",
        "4, 5, 40, 200,    answer-order",
        "41, 1, 40, 200,   answer-order",
    })
    void refusesWhatIsNotAPoolShare(String max, String min, String budget, String refresh, String kind) {
        Share.Invalid e = assertThrows(Share.Invalid.class,
                () -> Share.parsePoolShare(new String[] {max, min, budget, refresh}));
        assertEquals(kind, e.kind, e.getMessage());
        assertEquals(Share.BAD_SHAPE, assertThrows(Share.Invalid.class,
                () -> Share.parsePoolShare(new String[] {"4", "1", "40"})).kind);
    }

    /** The pace of a refusal, from its context field or connbudget 1.1's hint. */
    @Test
    void readsThePaceOfARefusal() {
        String context = "connbudget: retry_ms=1000 lease_ms=3000 protocol=2";
        assertEquals(1000, Share.statedMs(context, "connbudget: retry_ms=", " "));
        assertEquals(3000, Share.statedMs(context, " lease_ms=", ""));
        assertEquals(250, Share.statedMs("Shrink the pools. Pools re-read their share every 250 ms "
                + "(connbudget.refresh_interval).", "Pools re-read their share every ", " ms"));
        for (String bad : new String[] {"connbudget: retry_ms=5 lease_ms=3000", "connbudget: retry_ms=99999999999 x",
            "connbudget: retry_ms=12x lease_ms=1", "connbudget: retry_ms=+100 lease_ms=1", "connbudget: retry_ms= 100",
            "connbudget: retry_ms=3600001 lease_ms=1", "retry_ms=100", ""}) {
            assertEquals(0, Share.statedMs(bad, "connbudget: retry_ms=", " "), bad);
        }
        assertEquals(0, Share.statedMs(null, "connbudget: retry_ms=", " "));
    }
}
