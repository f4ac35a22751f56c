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
    }

    @Test
    void skipsWordsOfLaterVersions() throws Exception {
        Share sh = Share.parse("status=ok " + GOOD + " weight=3 zone=eu-west-1 note=" + "x".repeat(300)
                + " protocol=7");
        assertEquals(5, sh.maxSize);
    }

    @Test
    void readsTheOtherStatuses() throws Exception {
        assertEquals(Share.OTHER, Share.parse("protocol=2 status=other refresh_ms=200").status);
        Share left = Share.parse("status=left max_size=0 min_size=0 budget=40 refresh_ms=200");
        assertEquals("left", left.status);
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
        "status=ok max_size=5 min_size=1 budget=80 refresh_ms=1000 zone=a zone=b|answer-shape",
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

    /** The pace of a refusal and how long it keeps the pod's claim, from its context field. */
    @Test
    void readsTheContextOfARefusal() {
        String context = "connbudget: retry_ms=1000 lease_ms=3000 protocol=2";
        assertEquals(1000, Share.contextMs(context, "retry_ms"));
        assertEquals(3000, Share.contextMs(context, "lease_ms"));
        assertEquals(250, Share.contextMs("connbudget: lease_ms=3000 retry_ms=250\nmore context", "retry_ms"));
        for (String bad : new String[] {"connbudget: retry_ms=5 lease_ms=3000", "connbudget: retry_ms=99999999999 x",
            "connbudget: retry_ms=12x lease_ms=1", "connbudget: retry_ms=+100 lease_ms=1", "connbudget: retry_ms= 100",
            "connbudget: retry_ms=3600001 lease_ms=1", "retry_ms=100", "the connbudget: retry_ms=100", ""}) {
            assertEquals(0, Share.contextMs(bad, "retry_ms"), bad);
        }
        assertEquals(0, Share.contextMs(null, "retry_ms"));
    }
}
