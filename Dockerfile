# scanblocker in a container. UNTESTED HERE: the machine this was written on
# has no Docker engine. Review it before you rely on it.
#
#   docker build -t scanblocker .          # BuildKit (the default since Docker 23)
#   docker run -d --name scanblocker --net=host \
#     --cap-drop ALL --cap-add NET_RAW --cap-add NET_ADMIN --cap-add SYS_NICE \
#     -e SB_DEVICE=eth0 scanblocker
#
# Stage 1 compiles the one executable (permissions from deno.json, -P).
# Stage 2 gathers libpcap, iptables-nft/nft and ipset with their libraries from the
# same Debian release as the runtime base, and gives the executable its file
# capabilities. Stage 3 is distroless: no shell, no package manager, and it
# runs as the unprivileged user nonroot (65532).
#
# Base images are pinned by digest (the tag is for the reader). The digests
# were taken from public Dockerfiles that pin the same tags, not pulled here;
# refresh them with `docker buildx imagetools inspect IMAGE:TAG`.

FROM denoland/deno:2.9.6@sha256:2014dc167ece617ef7e7ba40631ac2234c59e75ce693e7cc2dc2602b3c87859d AS build
WORKDIR /src
COPY deno.json deno.lock ./
COPY main.ts ./
COPY ffi/ ffi/
COPY src/ src/
RUN deno task compile

FROM debian:12.11-slim@sha256:b1a741487078b369e78119849663d7f1a5341ef2768798f7b7406c4240f86aef AS runtime-libs
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcap0.8 iptables ipset nftables libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
# Everything lands in /out with its final path. Libraries are copied as
# regular files under their soname into /usr/lib/<triplet>, never under /lib
# (a link to usr/lib on a merged-/usr base, which COPY must not replace with
# a directory). glibc itself is
# left out: the distroless base brings the same version. stdbuf (coreutils)
# is there because the iptables backend line-buffers iptables-restore with it.
# ipset (and libipset, found by ldd) is there because the default backend,
# iptables, holds its bans in ipset sets when ipset is usable (one rule per
# ban otherwise; src/firewall/choice.ts); the set match (libxt_set.so) is in
# the xtables directory.
RUN set -eu; \
    triplet="$(uname -m)-linux-gnu"; libdir="/usr/lib/$triplet"; \
    mkdir -p "/out/usr/sbin" "/out$libdir"; \
    cp -a /usr/sbin/xtables-nft-multi /usr/sbin/nft /usr/sbin/ipset /out/usr/sbin/; \
    for n in iptables ip6tables iptables-save ip6tables-save iptables-restore ip6tables-restore; do \
      ln -s xtables-nft-multi "/out/usr/sbin/$n"; \
    done; \
    cp -a "$libdir/xtables" "/out$libdir/"; \
    mkdir -p /out/usr/bin /out/usr/libexec/coreutils; \
    cp -a /usr/bin/stdbuf /out/usr/bin/; \
    cp -a /usr/libexec/coreutils/libstdbuf.so /out/usr/libexec/coreutils/; \
    cp -L "$libdir/libpcap.so.0.8" "/out$libdir/"; \
    ldd /usr/sbin/xtables-nft-multi /usr/sbin/nft /usr/sbin/ipset "$libdir/libpcap.so.0.8" \
      "$libdir"/xtables/*.so \
      | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u \
      | grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv)\.so|/ld-linux' \
      | while read -r lib; do cp -L "$lib" "/out$libdir/$(basename "$lib")"; done; \
    ls -l /out/usr/sbin "/out$libdir"

# The executable, as the unit's user holds them: CAP_NET_RAW (capture),
# CAP_NET_ADMIN (firewall) and CAP_SYS_NICE (SCHED_FIFO capture thread), here
# as file capabilities because Docker gives a non-root user no ambient ones.
# Permitted only (+p, no effective bit), so the file still starts when
# --cap-add grants only some of them (`bans` needs NET_ADMIN, and NET_RAW to
# list the rule matching the ipset sets); the
# program makes them effective itself and passes only CAP_NET_ADMIN on to
# iptables/nft/ipset (and CAP_NET_RAW with the ipset form of iptables, the
# default: iptables' set match opens a raw socket). Owned by root and the
# group of the user the image runs as, mode 0750: only that group may execute it, and only that
# group may make it change the firewall (src/privilege.ts). chown clears file
# capabilities, so setcap comes last; COPY keeps them (BuildKit keeps xattrs).
COPY --from=build /src/scanblocker /out/usr/local/bin/scanblocker
RUN set -eu; \
    chown 0:65532 /out/usr/local/bin/scanblocker; \
    chmod 0750 /out/usr/local/bin/scanblocker; \
    setcap cap_net_raw,cap_net_admin,cap_sys_nice+p /out/usr/local/bin/scanblocker; \
    getcap /out/usr/local/bin/scanblocker

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=runtime-libs /out/ /
# Not root: the user nonroot of the distroless base, with the file
# capabilities above; --cap-add NET_RAW --cap-add NET_ADMIN --cap-add SYS_NICE
# puts them in the container's bounding set.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/scanblocker"]
