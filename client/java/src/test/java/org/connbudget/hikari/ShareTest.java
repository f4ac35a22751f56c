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
        assertEquals("ok", sh.status);
        assertEquals(5, sh.maxSize);
        assertEquals(1, sh.minSize);
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
        assertEquals("other", Share.parse("protocol=2 status=other refresh_ms=200").status);
        Share left = Share.parse("status=left max_size=0 min_size=0 budget=40 refresh_ms=200");
        assertEquals("left", left.status);
        Share refused = Share.parse("status=refused sqlstate=42501 reason=pod_of_another_role");
        assertEquals("refused", refused.status);
        assertEquals(0, refused.maxSize);
        // what a refusal says is only ever logged quoted, and is not a size either
        Share odd = Share.parse("status=refused sqlstate=4250 reason=DROP\u00a0TABLE max_size=9");
        assertEquals(0, odd.maxSize);
        assertEquals("\"status=refused sqlstate=4250 reason=DROP\\u00a0TABLE max_size=9\"", Share.quote(odd.text));
    }

    @Test
    void acceptsTheBounds() throws Exception {
        Share sh = Share.parse("status=ok max_size=262143 min_size=0 budget=262143 refresh_ms=3600000");
        assertEquals(262143, sh.maxSize);
        assertEquals(10, Share.parse("status=ok max_size=0 min_size=0 budget=0 refresh_ms=10").refreshMs);
    }

    /** Hostile or broken answers: each an error that says what is wrong, never a size. */
    @ParameterizedTest(name = "[{index}] {1}: {0}")
    @CsvSource(delimiter = '|', quoteCharacter = '`', value = {
        "``|, not words key=value",
        "` `|, not words key=value",
        "status=ok|: budget is missing",
        "status=ok max_size=5 min_size=1 budget=80|: refresh_ms is missing",
        "max_size=5 min_size=1 budget=80 refresh_ms=1000|: no status this client knows",
        "status=ok max_size=+5 min_size=1 budget=80 refresh_ms=1000|: max_size is not an integer",
        "status=ok max_size=5.0 min_size=1 budget=80 refresh_ms=1000|: max_size is not an integer",
        "status=ok max_size=0x5 min_size=1 budget=80 refresh_ms=1000|: max_size is not an integer",
        "status=ok max_size=1e3 min_size=1 budget=80 refresh_ms=1000|: max_size is not an integer",
        "status=ok max_size= min_size=1 budget=80 refresh_ms=1000|: max_size is not an integer",
        "status=ok max_size=- min_size=1 budget=80 refresh_ms=1000|: max_size is not an integer",
        "status=ok max_size=\uff15 min_size=1 budget=80 refresh_ms=1000|: max_size is not an integer",
        "status=ok max_size=\u0663 min_size=1 budget=80 refresh_ms=1000|: max_size is not an integer",
        "status=ok max_size=-1 min_size=0 budget=80 refresh_ms=1000|: max_size is out of range [0, 80]",
        "status=ok max_size=99999999999999999999999 min_size=1 budget=80 refresh_ms=1000|: max_size is out of range",
        "status=ok max_size=9223372036854775808 min_size=1 budget=80 refresh_ms=1000|: max_size is out of range",
        "status=ok max_size=5 min_size=1 budget=262144 refresh_ms=1000|: budget is out of range [0, 262143]",
        "status=ok max_size=5 min_size=1 budget=80 refresh_ms=9|: refresh_ms is out of range [10, 3600000]",
        "status=ok max_size=5 min_size=1 budget=80 refresh_ms=3600001|: refresh_ms is out of range",
        "status=ok max_size=5 min_size=6 budget=80 refresh_ms=1000|: min_size is out of range [0, 5]",
        "status=ok max_size=81 min_size=1 budget=80 refresh_ms=1000|: max_size is out of range [0, 80]",
        "status=ok  max_size=5 min_size=1 budget=80 refresh_ms=1000|, not words key=value",
        "` status=ok max_size=5 min_size=1 budget=80 refresh_ms=1000`|, not words key=value",
        "`status=ok max_size=5 min_size=1 budget=80 refresh_ms=1000 `|, not words key=value",
        "status=ok max_size 5 min_size=1 budget=80 refresh_ms=1000|, not words key=value",
        "status=ok =5 max_size=5 min_size=1 budget=80 refresh_ms=1000|, not words key=value",
        "status=ok\tmax_size=5 min_size=1 budget=80 refresh_ms=1000|: no status this client knows",
        "status=ok max_size=5 max_size=6 min_size=1 budget=80 refresh_ms=1000|: max_size twice",
        "status=ok status=ok max_size=5 min_size=1 budget=80 refresh_ms=1000|: status twice",
        "status=OK max_size=5 min_size=1 budget=80 refresh_ms=1000|: no status this client knows",
        "status=bogus|: no status this client knows",
        "status=|: no status this client knows",
        "status=ok max_size=5 min_size=1 budget=80 refresh_ms=1000 zone=a zone=b|: zone twice",
    })
    void refusesWhatIsNotAnAnswer(String text, String what) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Share.parse(text));
        assertTrue(e.getMessage().startsWith("connbudget.share is \""), e.getMessage());
        assertTrue(e.getMessage().contains(what), e.getMessage());
    }

    @Test
    void refusesNulAndFloods() {
        assertTrue(assertThrows(IllegalArgumentException.class,
                () -> Share.parse("status=ok\0 " + GOOD)).getMessage().endsWith(", not text"));
        assertTrue(assertThrows(IllegalArgumentException.class,
                () -> Share.parse("status=ok " + GOOD + " x=" + "9".repeat(5000))).getMessage().endsWith(", not text"));
        assertEquals("connbudget.share is NULL",
                assertThrows(IllegalArgumentException.class, () -> Share.parse(null)).getMessage());
    }

    @Test
    void quotesWhatItLogs() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Share.parse("status=ok max_size=5\nFATAL: forged min_size=1 budget=80 refresh_ms=1000"));
        assertTrue(e.getMessage().contains("\\u000a"), e.getMessage());
        assertTrue(!e.getMessage().contains("\n"), e.getMessage());
        assertTrue(Share.quote("y".repeat(1000)).length() < 80);
    }

    /** The pace of a refusal and how long it keeps the pod's claim, from its context field. */
    @Test
    void readsTheContextOfARefusal() {
        String context = "connbudget: retry_ms=1000 lease_ms=3000 protocol=2";
        assertEquals(1000, Share.contextMs(context, "retry_ms", 0));
        assertEquals(3000, Share.contextMs(context, "lease_ms", 0));
        assertEquals(250, Share.contextMs("connbudget: lease_ms=3000 retry_ms=250\nmore context", "retry_ms", 0));
        for (String bad : new String[] {"connbudget: retry_ms=5 lease_ms=3000", "connbudget: retry_ms=99999999999 x",
            "connbudget: retry_ms=12x lease_ms=1", "connbudget: retry_ms=+100 lease_ms=1", "connbudget: retry_ms= 100",
            "connbudget: retry_ms=3600001 lease_ms=1", "retry_ms=100", "the connbudget: retry_ms=100", ""}) {
            assertEquals(7, Share.contextMs(bad, "retry_ms", 7), bad);
        }
        assertEquals(7, Share.contextMs(null, "retry_ms", 7));
    }
}
