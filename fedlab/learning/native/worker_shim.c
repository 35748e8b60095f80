/* Preloaded into TFF's worker_binary by fedlab/learning/runtime.py (LD_PRELOAD); the binary calls libc's bind()
 * dynamically, so this bind() runs instead of libc's.
 *
 * FEDLAB_WORKER_LOOPBACK=1: a bind to the wildcard address becomes a bind to loopback, so the worker
 *   (which has no bind-address flag and asks for [::]:port) accepts connections from this machine only:
 *   0.0.0.0 -> 127.0.0.1; on a dual-stack IPv6 socket :: -> ::ffff:127.0.0.1 (IPv4 loopback only, the
 *   one address the client dials); on an IPv6-only socket :: -> ::1 (gRPC then binds 0.0.0.0 as well,
 *   which becomes 127.0.0.1). Every other bind is left alone.
 * FEDLAB_WORKER_PARENT=pid: the worker gets SIGKILL when the thread that started it exits (fedlab starts
 *   workers from one thread that lives as long as the process), and dies at once if that parent is gone
 *   already. Done here, after exec, instead of between fork and exec in a multi-threaded Python.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static int loopback_only;
static bind_fn real_bind;

__attribute__((constructor)) static void fedlab_worker_shim_init(void) {
    const char *loopback = getenv("FEDLAB_WORKER_LOOPBACK");
    const char *parent = getenv("FEDLAB_WORKER_PARENT");
    loopback_only = loopback != NULL && strcmp(loopback, "1") == 0;
    real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
    if (parent != NULL && *parent != '\0') {
        pid_t expected = (pid_t)atol(parent);
        unsetenv("FEDLAB_WORKER_PARENT"); /* not for the worker's own children: their parent is the worker */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != expected) /* the parent died before the line above: nobody would stop us */
            raise(SIGKILL);
    }
}

static int is_v6_only(int fd) {
    int value = 0;
    socklen_t size = sizeof value;
    return getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &value, &size) == 0 && value != 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    if (real_bind == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (loopback_only && addr != NULL) {
        if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
            struct sockaddr_in local;
            memcpy(&local, addr, sizeof local);
            if (local.sin_addr.s_addr == htonl(INADDR_ANY)) {
                local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                return real_bind(fd, (const struct sockaddr *)&local, sizeof local);
            }
        } else if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
            struct sockaddr_in6 local;
            memcpy(&local, addr, sizeof local);
            if (IN6_IS_ADDR_UNSPECIFIED(&local.sin6_addr)) {
                if (is_v6_only(fd)) {
                    local.sin6_addr = in6addr_loopback;
                } else { /* ::ffff:127.0.0.1 */
                    memset(&local.sin6_addr, 0, sizeof local.sin6_addr);
                    local.sin6_addr.s6_addr[10] = 0xff;
                    local.sin6_addr.s6_addr[11] = 0xff;
                    local.sin6_addr.s6_addr[12] = 127;
                    local.sin6_addr.s6_addr[15] = 1;
                }
                return real_bind(fd, (const struct sockaddr *)&local, sizeof local);
            }
        }
    }
    return real_bind(fd, addr, len);
}
