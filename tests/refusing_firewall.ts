/**
 * A firewall backend in a lab whose helper commands go through a wrapper
 * that, while refusing is on, fails the ones whose input holds a given text:
 * a kernel that stops taking part of what the backend installs (the speed
 * bump's repair tests of both backends).
 */
import { createFirewall } from "../src/firewall/firewall.ts";
import type { BumpConfig, Firewall } from "../src/types.ts";
import { createLab, type Lab } from "./netns.ts";

/** The speed bump's settings these tests install. */
export const TEST_BUMP: BumpConfig = {
  ports: 3,
  windowSeconds: 60,
  device: null,
  exempt4: ["127.0.0.0/8"],
  exempt6: ["::1/128"],
  openPorts: [],
};

export interface RefusingFirewall {
  fw: Firewall;
  /** The backend's onError lines. */
  errors: string[];
  /** Turns refusing on or off. */
  refuse(on: boolean): Promise<void>;
  /** Closes the backend and removes the wrapper (the lab stays). */
  close(): Promise<void>;
}

/**
 * `kind` in `lab`'s target namespace; a command line equal to one of
 * `commands` (e.g. "nft -f -") whose standard input holds `match` fails with
 * `message` on stderr while refusing is on.
 */
export async function refusingFirewall(
  lab: Lab,
  kind: "nftables" | "iptables",
  commands: string[],
  match: string,
  message: string,
): Promise<RefusingFirewall> {
  const dir = await Deno.makeTempDir({ prefix: "sb-refuse-" });
  const flag = `${dir}/refuse`, wrapper = `${dir}/wrapper`;
  await Deno.writeTextFile(
    wrapper,
    `#!/bin/sh
case "$*" in
  ${commands.map((c) => `"${c}"`).join("|")})
    if [ -e ${flag} ]; then
      input=$(cat)
      case "$input" in *"${match}"*) echo "${message}" >&2; exit 1;; esac
      printf '%s\\n' "$input" | exec "$@"
    fi;;
esac
exec "$@"
`,
  );
  await Deno.chmod(wrapper, 0o755);
  const errors: string[] = [];
  const fw = createFirewall(kind, {
    isProtected: () => false,
    onError: (m) => errors.push(m),
    maxBans: 1000,
    commandPrefix: [...lab.prefix(lab.target), wrapper],
  });
  return {
    fw,
    errors,
    refuse: (on) => on ? Deno.writeTextFile(flag, "") : Deno.remove(flag),
    close: async () => {
      await fw.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/**
 * `refusingFirewall` in a lab of its own (`tag`), for `fn`; the backend, the
 * wrapper and the lab are gone afterwards, whatever `fn` did.
 */
export async function withRefusingFirewall(
  tag: string,
  kind: "nftables" | "iptables",
  commands: string[],
  match: string,
  message: string,
  fn: (r: RefusingFirewall & { lab: Lab }) => Promise<void>,
): Promise<void> {
  const lab = await createLab(tag);
  try {
    const r = await refusingFirewall(lab, kind, commands, match, message);
    try {
      await fn({ ...r, lab });
    } finally {
      await r.close();
    }
  } finally {
    await lab.destroy();
  }
}
