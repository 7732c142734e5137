/* `uname -m` for the FROM-scratch image, which has no shell and no coreutils: the e2e
 * docker driver bind-mounts a static build of this into each container and runs it with
 * `docker exec`, so an edge container reports the machine its process sees (under
 * qemu-user: aarch64, armv7l), not the host's. */
#include <stdio.h>
#include <sys/utsname.h>

int main(void) {
    struct utsname u;
    if (uname(&u) != 0) {
        perror("uname");
        return 1;
    }
    puts(u.machine);
    return 0;
}
