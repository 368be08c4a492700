# scanblocker in a container. UNTESTED HERE: the machine this was written on
# has no Docker engine. Review it before you rely on it.
#
#   docker build -t scanblocker .
#   docker run -d --name scanblocker --net=host \
#     --cap-drop ALL --cap-add NET_RAW --cap-add NET_ADMIN --cap-add SYS_NICE \
#     -e SB_DEVICE=eth0 scanblocker
#
# Stage 1 compiles the one executable (permissions from deno.json, -P).
# Stage 2 gathers libpcap and iptables-nft/nft with their libraries from the
# same Debian release as the runtime base. Stage 3 is distroless: no shell,
# no package manager.

FROM denoland/deno:2.9.6 AS build
WORKDIR /src
COPY deno.json deno.lock ./
COPY main.ts ./
COPY ffi/ ffi/
COPY src/ src/
RUN deno task compile

FROM debian:12-slim AS runtime-libs
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcap0.8 iptables nftables \
 && rm -rf /var/lib/apt/lists/*
# Everything lands in /out with its final path. Libraries are copied as
# regular files under their soname into /usr/lib/<triplet>, never under /lib
# (a link to usr/lib on a merged-/usr base, which COPY must not replace with
# a directory). glibc itself is
# left out: the distroless base brings the same version. stdbuf (coreutils)
# is there because the iptables backend line-buffers iptables-restore with it.
RUN set -eu; \
    triplet="$(uname -m)-linux-gnu"; libdir="/usr/lib/$triplet"; \
    mkdir -p "/out/usr/sbin" "/out$libdir"; \
    cp -a /usr/sbin/xtables-nft-multi /usr/sbin/nft /out/usr/sbin/; \
    for n in iptables ip6tables iptables-save ip6tables-save iptables-restore ip6tables-restore; do \
      ln -s xtables-nft-multi "/out/usr/sbin/$n"; \
    done; \
    cp -a "$libdir/xtables" "/out$libdir/"; \
    mkdir -p /out/usr/bin /out/usr/libexec/coreutils; \
    cp -a /usr/bin/stdbuf /out/usr/bin/; \
    cp -a /usr/libexec/coreutils/libstdbuf.so /out/usr/libexec/coreutils/; \
    cp -L "$libdir/libpcap.so.0.8" "/out$libdir/"; \
    ldd /usr/sbin/xtables-nft-multi /usr/sbin/nft "$libdir/libpcap.so.0.8" "$libdir"/xtables/*.so \
      | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u \
      | grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv)\.so|/ld-linux' \
      | while read -r lib; do cp -L "$lib" "/out$libdir/$(basename "$lib")"; done; \
    ls -l /out/usr/sbin "/out$libdir"

FROM gcr.io/distroless/cc-debian12
COPY --from=runtime-libs /out/ /
COPY --from=build /src/scanblocker /usr/local/bin/scanblocker
# Root inside the container, but only with the capabilities given by
# --cap-add (NET_RAW for capture, NET_ADMIN for the firewall).
USER 0:0
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/scanblocker"]
