package org.connbudget.hikari;

import java.net.InetAddress;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.List;

/**
 * Who a pool is, given to the server at connect time (docs/protocol.md,
 * section 1): its application, its pod and a pool session of its own.
 */
final class Identity {
    private static final SecureRandom RANDOM = new SecureRandom();

    final String application;
    final String pod;
    final String session;

    Identity(String application, String pod) {
        this.application = check("application name", application);
        this.pod = check("pod id", pod);
        this.session = newPoolSession();
    }

    /**
     * id, if it can name an application, a pod or a pool session: 1 to 63
     * bytes of printable ASCII. The server refuses any other pod or pool
     * session id at connect time (22023), and would store an application
     * name with other bytes replaced, so that it would not match its row
     * in connbudget.application_limits.
     */
    static String check(String what, String id) {
        if (id == null || id.isEmpty() || id.length() > 63) {
            throw new IllegalArgumentException("connbudget: the " + what + " "
                    + (id == null ? "is missing" : Share.quote(id) + " is not 1 to 63 bytes"));
        }
        for (int i = 0; i < id.length(); i++) {
            if (id.charAt(i) < 0x20 || id.charAt(i) > 0x7e) {
                throw new IllegalArgumentException("connbudget: the " + what + " " + Share.quote(id)
                        + " is not printable ASCII");
            }
        }
        return id;
    }

    /**
     * The pod id when none is given: the environment variable podEnv
     * names, else the host name, which is the pod's name in Kubernetes.
     */
    static String defaultPod(String podEnv) {
        if (podEnv != null && System.getenv(podEnv) != null && !System.getenv(podEnv).isEmpty()) {
            return System.getenv(podEnv);
        }
        String host = System.getenv("HOSTNAME");
        if (host == null || host.isEmpty()) {
            try {
                host = InetAddress.getLocalHost().getHostName();
            } catch (java.io.IOException e) {
                throw new IllegalArgumentException("connbudget: no pod id: none given and the host name is unknown", e);
            }
        }
        return host.length() > 63 ? host.substring(0, 63) : host;
    }

    /**
     * A random id for one pool: pools that share a pod id (several JVMs in
     * one pod, several pools in one JVM) split the pod's share instead of
     * each taking all of it.
     */
    static String newPoolSession() {
        byte[] b = new byte[8];
        RANDOM.nextBytes(b);
        StringBuilder hex = new StringBuilder();
        for (byte x : b) {
            hex.append(String.format("%02x", x & 0xff));
        }
        return hex.toString();
    }

    /** The value of the options startup parameter that names the pod and
        the pool session: -c connbudget.pod=... -c connbudget.pool_session=... */
    String startupOptions() {
        return "-c connbudget.pod=" + escape(pod) + " -c connbudget.pool_session=" + escape(session);
    }

    /** Escapes a value for the options startup parameter, which the server
        splits at spaces, a backslash taking the next byte as it is. */
    static String escape(String s) {
        return s.replace("\\", "\\\\").replace(" ", "\\ ");
    }

    /** The user's own options, if any, then this pool's. */
    String mergeOptions(String user) {
        if (user != null && user.contains("connbudget.")) {
            throw new IllegalArgumentException("connbudget: the connection's options already set connbudget settings ("
                    + Share.quote(user) + "); give the pod with ConnBudget.options().pod(...)");
        }
        return user == null || user.trim().isEmpty() ? startupOptions() : user.trim() + " " + startupOptions();
    }

    /**
     * Splits a JDBC URL into the URL without its ApplicationName and options
     * parameters (pgjdbc takes a URL's parameters over any property) and the
     * options it had, URL-decoded, or null.
     */
    static String[] withoutIdentity(String url) {
        int q = url.indexOf('?');
        if (q < 0) {
            return new String[] {url, null};
        }
        List<String> kept = new ArrayList<>();
        String options = null;
        for (String arg : url.substring(q + 1).split("&")) {
            String name = arg.contains("=") ? arg.substring(0, arg.indexOf('=')) : arg;
            if (name.equalsIgnoreCase("options")) {
                options = URLDecoder.decode(arg.substring(name.length() + (arg.contains("=") ? 1 : 0)), StandardCharsets.UTF_8);
            } else if (!name.equalsIgnoreCase("ApplicationName") && !arg.isEmpty()) {
                kept.add(arg);
            }
        }
        return new String[] {url.substring(0, q) + (kept.isEmpty() ? "" : "?" + String.join("&", kept)), options};
    }
}
