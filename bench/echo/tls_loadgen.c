/*
 * tls_loadgen.c - closed-loop TLS echo load generator for bench/tls_run.py.
 *
 *     tls_loadgen HOST PORT CONNS MSG_SIZE DURATION_S [WARMUP_S]
 *
 * bench/echo/loadgen.c over TLS (OpenSSL, linked with -lssl -lcrypto): the
 * same closed loop (one message in flight per connection, the echo checked
 * byte for byte), the same JSON line, exit codes and limits.  Differences:
 *   - Each connection does its TLS handshake during the connect phase,
 *     before the warmup, so handshakes are never in the measured window.
 *     The server's certificate is not verified: this is a loopback
 *     benchmark against a throwaway self-signed certificate.
 *   - I/O goes through SSL_write / SSL_read on non-blocking sockets; a
 *     WANT_WRITE arms EPOLLOUT, a WANT_READ waits for EPOLLIN.  SSL_read
 *     is called until it wants more, so records OpenSSL has buffered are
 *     never left waiting for an epoll event that will not come.
 *   - Only loopback addresses are accepted, as in loadgen.c.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_CONNS      10000
#define MAX_MSG        (4 * 1024 * 1024)
#define MAX_DURATION   600.0
#define MAX_WARMUP     60.0
#define CONNECT_S      10.0   /* all connections must be up within this */
#define SLACK_S        10     /* extra seconds before the hard kill */
#define MAX_EVENTS     512

struct conn {
    int fd;
    SSL *ssl;
    size_t sent;      /* bytes of the current message written so far */
    size_t rcvd;      /* bytes of its echo read back so far */
    int out_armed;    /* EPOLLOUT is in the interest set */
    int dead;
};

static struct conn *conns;
static int nconns, alive, ep;
static size_t msg_size;
static unsigned char *msg, *rbuf;
static long long completed;   /* round trips since the start of the warmup */
static long long errors;
static SSL_CTX *ctx;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void on_alarm(int sig)
{
    static const char m[] = "tls_loadgen: hard time limit reached, aborting\n";
    (void)sig;
    /* async-signal-safe: write + _exit only */
    ssize_t r = write(2, m, sizeof m - 1);
    (void)r;
    _exit(3);
}

static void die(const char *what)
{
    fprintf(stderr, "tls_loadgen: %s\n", what);
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: tls_loadgen HOST PORT CONNS MSG_SIZE DURATION_S [WARMUP_S]\n"
            "  HOST must be a loopback address (127.0.0.0/8, ::1, localhost)\n");
    exit(2);
}

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return 0;
}

static void set_interest(struct conn *c, int want_out)
{
    struct epoll_event ev;
    ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
    ev.data.u32 = (uint32_t)(c - conns);
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl(MOD) failed");
    c->out_armed = want_out;
}

static void kill_conn(struct conn *c, const char *why)
{
    if (c->dead)
        return;
    /* Report only the first few; 500 identical lines help nobody. */
    if (errors < 5)
        fprintf(stderr, "tls_loadgen: connection %d: %s\n", (int)(c - conns), why);
    errors++;
    c->dead = 1;
    alive--;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd);
}

static const char *ssl_why(int e)
{
    unsigned long err = ERR_get_error();
    static char buf[256];
    if (err) {
        ERR_error_string_n(err, buf, sizeof buf);
        return buf;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return "server closed the connection (close_notify)";
    if (e == SSL_ERROR_SYSCALL)
        return errno ? strerror(errno) : "server closed the connection";
    return "TLS error";
}

/* Move the connection on as far as it goes without waiting: write the rest
 * of the current message, read echo bytes, and start the next message when
 * the echo is whole.  Returns when OpenSSL wants the socket. */
static void pump(struct conn *c)
{
    for (;;) {
        int want_out = 0;
        if (c->sent < msg_size) {
            int w = SSL_write(c->ssl, msg + c->sent, (int)(msg_size - c->sent));
            if (w > 0) {
                c->sent += (size_t)w;
            } else {
                int e = SSL_get_error(c->ssl, w);
                if (e == SSL_ERROR_WANT_WRITE)
                    want_out = 1;
                else if (e != SSL_ERROR_WANT_READ) {
                    kill_conn(c, ssl_why(e));
                    return;
                }
            }
        }
        size_t want = msg_size - c->rcvd;
        int r = SSL_read(c->ssl, rbuf, (int)want);
        if (r > 0) {
            if ((size_t)r > c->sent - c->rcvd || memcmp(rbuf, msg + c->rcvd, (size_t)r) != 0) {
                kill_conn(c, "echo does not match what was sent");
                return;
            }
            c->rcvd += (size_t)r;
            if (c->rcvd == msg_size) {
                completed++;
                c->sent = c->rcvd = 0;
            }
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE)
            want_out = 1;
        else if (e != SSL_ERROR_WANT_READ) {
            kill_conn(c, ssl_why(e));
            return;
        }
        if (want_out != c->out_armed)
            set_interest(c, want_out);
        return;
    }
}

static double parse_num(const char *s, double lo, double hi)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || v < lo || v > hi)
        usage();
    return v;
}

/* Open every connection non-blocking and wait for all of them, so the
 * deadline covers the whole set rather than each connection in turn. */
static void connect_all(const struct addrinfo *ai, const char *host, const char *port)
{
    struct epoll_event ev, evs[MAX_EVENTS];
    int pending = nconns, one = 1;
    double deadline = now() + CONNECT_S;

    for (int i = 0; i < nconns; i++) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0)
            die("socket() failed (too many connections for the fd limit?)");
        /* Small messages must leave at once; Nagle would turn a latency
         * benchmark into a measurement of the delayed-ACK timer. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            fprintf(stderr, "tls_loadgen: cannot connect to %s:%s: %s\n", host, port,
                    strerror(errno));
            exit(1);
        }
        conns[i].fd = fd;
        ev.events = EPOLLOUT;
        ev.data.u32 = (uint32_t)i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl(ADD) failed");
    }

    while (pending > 0) {
        double left = deadline - now();
        if (left <= 0) {
            fprintf(stderr, "tls_loadgen: cannot connect to %s:%s: %d of %d connections "
                    "not established within %.0f s\n", host, port, pending, nconns,
                    CONNECT_S);
            exit(1);
        }
        int n = epoll_wait(ep, evs, MAX_EVENTS, (int)(left * 1000) + 1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait failed");
        for (int k = 0; k < n; k++) {
            struct conn *c = &conns[evs[k].data.u32];
            int err = 0;
            socklen_t len = sizeof err;
            if (c->out_armed)       /* reused here as "already connected" */
                continue;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
            if (err) {
                fprintf(stderr, "tls_loadgen: cannot connect to %s:%s: %s\n", host, port,
                        strerror(err));
                exit(1);
            }
            c->out_armed = 1;
            pending--;
        }
    }
    /* The TLS handshakes, one connection after another, within the same
     * deadline; then read interest only until a write comes up short.
     * Every socket is first set to read interest only, so that the waits
     * below are not woken over and over by the others being writable. */
    for (int i = 0; i < nconns; i++)
        set_interest(&conns[i], 0);
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->ssl = SSL_new(ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
            die("SSL_new failed");
        SSL_set_tlsext_host_name(c->ssl, "localhost");
        for (;;) {
            int r = SSL_connect(c->ssl);
            if (r == 1)
                break;
            int e = SSL_get_error(c->ssl, r);
            double left = deadline - now();
            if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || left <= 0) {
                fprintf(stderr, "tls_loadgen: TLS handshake with %s:%s failed: %s\n",
                        host, port, left <= 0 ? "timed out" : ssl_why(e));
                exit(1);
            }
            struct epoll_event one_ev;
            one_ev.events = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
            one_ev.data.u32 = (uint32_t)i;
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &one_ev);
            struct epoll_event got[MAX_EVENTS];
            int n = epoll_wait(ep, got, MAX_EVENTS, (int)(left * 1000) + 1);
            if (n < 0 && errno != EINTR)
                die("epoll_wait failed");
            /* Only this socket can be ready: the others wait for reads
             * the server has no reason to send yet. */
        }
        set_interest(c, 0);
    }
}

int main(int argc, char **argv)
{
    if (argc < 6 || argc > 7)
        usage();
    const char *host = argv[1], *port = argv[2];
    nconns = (int)parse_num(argv[3], 1, MAX_CONNS);
    msg_size = (size_t)parse_num(argv[4], 1, MAX_MSG);
    double duration = parse_num(argv[5], 0.01, MAX_DURATION);
    double warmup = argc == 7 ? parse_num(argv[6], 0, MAX_WARMUP) : 0.0;

    signal(SIGALRM, on_alarm);
    alarm((unsigned)(CONNECT_S + warmup + duration) + SLACK_S);
    signal(SIGPIPE, SIG_IGN);

    struct addrinfo hints = {0}, *ai;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "tls_loadgen: cannot resolve %s:%s: %s\n", host, port, gai_strerror(gai));
        return 1;
    }
    if (!is_loopback(ai->ai_addr)) {
        fprintf(stderr, "tls_loadgen: refusing non-loopback address %s\n", host);
        return 2;
    }

    /* 500+ sockets can exceed a default soft limit of 1024 minus what the
     * parent left open; take what the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    conns = calloc((size_t)nconns, sizeof *conns);
    msg = malloc(msg_size);
    rbuf = malloc(msg_size);
    if (!conns || !msg || !rbuf)
        die("out of memory");
    /* A non-repeating-looking pattern, so a server that reorders or
     * duplicates chunks fails the echo check instead of passing it. */
    for (size_t i = 0; i < msg_size; i++)
        msg[i] = (unsigned char)((i * 131u + (i >> 8) * 7u + 17u) & 0xff);

    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die("SSL_CTX_new failed");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    /* Resume no sessions: every connection is a fresh client. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1 failed");
    connect_all(ai, host, port);
    freeaddrinfo(ai);
    alive = nconns;

    double t0 = now();
    double t_measure = t0 + warmup, t_end = t_measure + duration;
    double m_start = t0;
    long long base = 0;
    int measuring = 0;
    struct epoll_event evs[MAX_EVENTS];

    for (int i = 0; i < nconns; i++)
        pump(&conns[i]);

    for (;;) {
        double t = now();
        if (!measuring && t >= t_measure) {
            measuring = 1;
            base = completed;
            m_start = t;
        }
        if (t >= t_end || alive == 0)
            break;
        /* Wake up at the next window boundary even when the server is
         * silent, so a stalled server still ends the run on time. */
        double next = measuring ? t_end : t_measure;
        int ms = (int)((next - t) * 1000) + 1;
        int n = epoll_wait(ep, evs, MAX_EVENTS, ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait failed");
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = &conns[evs[k].data.u32];
            uint32_t e = evs[k].events;
            if (c->dead)
                continue;
            (void)e;
            pump(c);            /* SSL_read reports an error or EOF itself */
        }
    }

    double m_end = now();
    long long requests = measuring ? completed - base : 0;
    double seconds = measuring ? m_end - m_start : 0.0;
    printf("{\"conns\":%d,\"size\":%zu,\"seconds\":%.4f,\"warmup\":%.3f,"
           "\"requests\":%lld,\"rps\":%.1f,\"errors\":%lld,\"alive\":%d}\n",
           nconns, msg_size, seconds, warmup, requests,
           seconds > 0 ? requests / seconds : 0.0, errors, alive);
    fflush(stdout);
    return 0;
}
