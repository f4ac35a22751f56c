/*
 * identity_test.c -- the pure rules of a connection's identity and reports
 * (extension/identity.c), without a server.
 *
 * Checked: which value a startup option ends up with (a -c switch, the
 * --name=value form, switches grouped as getopt groups them, a switch that
 * takes the next word, "--" ending the options, an unknown switch, case and
 * '-' in names, the packet's pairs winning over the options, the last one
 * winning); application names cut at 63 bytes without splitting a UTF-8
 * character and their other bytes replaced as PostgreSQL 15 ('?') and 16
 * (\xNN) replace them; pod ids of 0, 63, 64 bytes and with a control or
 * non-ASCII byte; every value connbudget.demand may and may not take.
 */
#include <string.h>

#include "../lib/tap.h"
#include "../../extension/identity.h"

/* The value of "name" given these words and pairs (NULL-terminated). */
static const char *
value_of(const char *name, const char *const *words, const char *const *pairs)
{
	static char *argv[16];
	int			argc = 0,
				npairs = 0;

	while (words && words[argc])
	{
		argv[argc] = (char *) words[argc];
		argc++;
	}
	while (pairs && pairs[2 * npairs])
		npairs++;
	return cb_option_value(argv, argc, pairs, npairs, name);
}

static void
test_options(void)
{
	const char *v;

	v = value_of("connbudget.pod", (const char *[]) {"-c", "connbudget.pod=a", NULL}, NULL);
	is_str(v, "a", "-c name=value");
	v = value_of("connbudget.pod", (const char *[]) {"-cconnbudget.pod=b", NULL}, NULL);
	is_str(v, "b", "-cname=value in one word");
	v = value_of("connbudget.pod", (const char *[]) {"--connbudget.pod=c", NULL}, NULL);
	is_str(v, "c", "--name=value");
	v = value_of("application_name", (const char *[]) {"--application-name=d", NULL}, NULL);
	is_str(v, "d", "--a-b=x is a_b");
	v = value_of("application_name", (const char *[]) {"-c", "Application_NAME=e", NULL}, NULL);
	is_str(v, "e", "names compare case-insensitively");
	v = value_of("connbudget.pod", (const char *[]) {"-Ec", "connbudget.pod=f", NULL}, NULL);
	is_str(v, "f", "a switch without argument grouped before -c");
	v = value_of("connbudget.pod", (const char *[]) {"-B", "-c", "-c", "connbudget.pod=g", NULL}, NULL);
	is_str(v, "g", "-B takes the next word as its argument, even one that looks like a switch");
	v = value_of("connbudget.pod", (const char *[]) {"--", "-c", "connbudget.pod=h", NULL}, NULL);
	ok(v == NULL, "-- ends the options");
	v = value_of("connbudget.pod", (const char *[]) {"-x", "-c", "connbudget.pod=i", NULL}, NULL);
	is_str(v, "i", "an unknown switch ends only its own word");
	v = value_of("connbudget.pod", (const char *[]) {"-c", "connbudget.pod=j", "-c", "connbudget.pod=k", NULL},
				 NULL);
	is_str(v, "k", "the last -c wins");
	v = value_of("connbudget.pod", (const char *[]) {"-c", "connbudget.pod=l", NULL},
				 (const char *[]) {"connbudget.pod", "m", NULL});
	is_str(v, "m", "the packet's pairs win over its options");
	v = value_of("connbudget.pod", (const char *[]) {"-c", NULL}, NULL);
	ok(v == NULL, "-c at the end without an argument is nothing");
	v = value_of("connbudget.pod", (const char *[]) {"-c", "connbudget.podx=n", NULL}, NULL);
	ok(v == NULL, "a longer name is another name");
	v = value_of("connbudget.pod", NULL, NULL);
	ok(v == NULL, "nothing given: NULL");
}

static void
test_names(void)
{
	char		out[CB_ID_MAX + 1];
	char		long_name[100];

	cb_clean_name("api", false, out);
	is_str(out, "api", "a plain name stays");
	cb_clean_name(NULL, false, out);
	is_str(out, "", "no name is \"\"");
	cb_clean_name("a\tb", false, out);
	is_str(out, "a?b", "a control byte is '?' on PostgreSQL 15");
	cb_clean_name("a\tb", true, out);
	is_str(out, "a\\x09b", "and \\x09 from PostgreSQL 16");
	memset(long_name, 'x', sizeof(long_name));
	long_name[99] = '\0';
	cb_clean_name(long_name, false, out);
	is_int((long) strlen(out), 63, "a long name is cut at 63 bytes");
	/* 62 x's then a two-byte character: cut before it, not in it */
	memset(long_name, 'x', 62);
	strcpy(long_name + 62, "\xc3\xa9tail");
	cb_clean_name(long_name, false, out);
	is_int((long) strlen(out), 62, "without splitting a UTF-8 character");
	cb_clean_name("\xc3\xa9", true, out);
	is_str(out, "\\xc3\\xa9", "each byte of a character escaped (PostgreSQL 16)");
}

static void
test_ids(void)
{
	char		why[160];
	char		id[80];

	ok(cb_id_is_valid("web-7f9c", why, sizeof(why)), "a pod id of printable ASCII");
	ok(!cb_id_is_valid("", why, sizeof(why)) && strstr(why, "empty"), "an empty one is not: %s", why);
	memset(id, 'p', 63);
	id[63] = '\0';
	ok(cb_id_is_valid(id, why, sizeof(why)), "63 bytes are");
	id[63] = 'p';
	id[64] = '\0';
	ok(!cb_id_is_valid(id, why, sizeof(why)) && strstr(why, "64 bytes"), "64 are not: %s", why);
	ok(!cb_id_is_valid("a\x01z", why, sizeof(why)) && strstr(why, "byte 2 is 0x01"),
	   "a control byte is not: %s", why);
	ok(!cb_id_is_valid("caf\xc3\xa9", why, sizeof(why)) && strstr(why, "byte 4 is 0xc3"),
	   "nor a byte beyond ASCII: %s", why);
	ok(!cb_id_is_valid("a\x01z", why, 8), "a short buffer for why is enough");
}

static void
test_demands(void)
{
	struct
	{
		const char *value;
		bool		valid;
		int32_t		demand;
		bool		leave;
		bool		report;
	}			cases[] = {
		{"0", true, 0, false, true},
		{"12", true, 12, false, true},
		{"1000000", true, 1000000, false, true},
		{"1000001", false, 0, false, false},
		{"99999999999", false, 0, false, false},
		{"-1", false, 0, false, false},
		{" 5", false, 0, false, false},
		{"5 ", false, 0, false, false},
		{"5x", false, 0, false, false},
		{"+5", false, 0, false, false},
		{"abc", false, 0, false, false},
		{"unbounded", true, -1, false, true},
		{"UNBOUNDED", true, -1, false, true},
		{"leave", true, -1, true, true},
		{"Leave", true, -1, true, true},
		{"leaves", false, 0, false, false},
		{"", true, -1, false, false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		int32_t		demand = 42;
		bool		leave = false,
					report = false;
		bool		valid = cb_parse_demand(cases[i].value, &demand, &leave, &report);

		ok(valid == cases[i].valid &&
		   (!valid || (demand == cases[i].demand && leave == cases[i].leave &&
					   report == cases[i].report)),
		   "connbudget.demand = '%s': %s", cases[i].value,
		   cases[i].valid ? (cases[i].leave ? "leave" : cases[i].report ? "a demand" : "no report")
		   : "refused");
	}
	{
		int32_t		demand;
		bool		leave,
					report;

		ok(cb_parse_demand(NULL, &demand, &leave, &report) && !report, "NULL reports nothing");
	}
}

int
main(void)
{
	test_options();
	test_names();
	test_ids();
	test_demands();
	return done_testing();
}
